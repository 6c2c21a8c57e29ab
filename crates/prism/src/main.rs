//! `prism`: the relay daemon. Wires the ingest listener, the stream hubs and
//! the destination tasks from the TOML config; handles signals.

mod config;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info, warn};

use prism_fanout::{spawn_destination, DestinationConfig, DestinationHandle};
use prism_ingest::{serve_rtmp, IngestLimits};
use prism_media::{HubDirectory, StreamHub};

use crate::config::Config;

/// The config used when `--config` is not given.
const DEFAULT_CONFIG: &str = "config/prism.toml";
/// How long shutdown waits for destinations to unpublish cleanly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Prism: relays one live RTMP publish per stream key to many RTMP destinations.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The TOML config file (default: config/prism.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Validate the config and exit: 0 when valid, else FILE:LINE:COL: message.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path = args.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if !path.exists() {
        eprintln!(
            "{}: config file not found (pass --config FILE; an example is in config/prism.toml)",
            path.display()
        );
        return ExitCode::from(2);
    }
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!(
            "{}: ok ({} streams, {} destinations)",
            path.display(),
            config.streams.len(),
            config
                .streams
                .iter()
                .map(|s| s.destinations.len())
                .sum::<usize>()
        );
        return ExitCode::SUCCESS;
    }

    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(config.rtmp.listen)
        .await
        .map_err(|e| format!("cannot listen for RTMP on {}: {e}", config.rtmp.listen))?;

    let directory = Arc::new(HubDirectory::default());
    let mut destinations: Vec<DestinationHandle> = Vec::new();
    for stream in &config.streams {
        let hub = StreamHub::new(stream.id.clone());
        directory.insert(&stream.key, Arc::clone(&hub));
        for entry in &stream.destinations {
            destinations.push(spawn_destination(
                Arc::clone(&hub),
                DestinationConfig {
                    id: entry.id.clone(),
                    url: entry.url.clone(),
                    enabled: entry.enabled,
                    queue_budget_bytes: config.fanout.queue_budget_bytes,
                    connect_timeout: config.fanout.connect_timeout,
                    write_timeout: config.fanout.write_timeout,
                    socket_send_buffer_bytes: config.fanout.socket_send_buffer_bytes,
                },
            ));
        }
        info!(
            stream = %stream.id,
            key = %stream.key,
            destinations = stream.destinations.len(),
            "stream configured"
        );
    }

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let limits = IngestLimits {
        max_connections: config.rtmp.max_connections,
        publish_timeout: config.rtmp.publish_timeout,
        idle_timeout: config.rtmp.idle_timeout,
    };
    info!(listen = %config.rtmp.listen, "rtmp ingest listening");
    let ingest = tokio::spawn(serve_rtmp(listener, directory, limits, shutdown_rx));

    wait_for_signal().await;
    info!("shutting down: closing publishers, unpublishing destinations");
    let _ = shutdown_tx.send(true);
    let _ = ingest.await;
    let stop_all = futures_join_all(destinations);
    if tokio::time::timeout(SHUTDOWN_GRACE, stop_all)
        .await
        .is_err()
    {
        warn!(
            "some destinations did not close within {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    info!("stopped");
    Ok(())
}

/// Shuts every destination down concurrently.
async fn futures_join_all(destinations: Vec<DestinationHandle>) {
    let mut set = tokio::task::JoinSet::new();
    for destination in destinations {
        set.spawn(destination.shutdown());
    }
    while set.join_next().await.is_some() {}
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
