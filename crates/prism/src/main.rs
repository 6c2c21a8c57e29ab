//! `prism`: the relay daemon. Wires the ingest listener, the stream hubs and
//! the destination tasks from the TOML config; handles signals.

mod config;
mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info, warn};

use prism_fanout::{spawn_destination, DestinationConfig, Registry, StreamEntry};
use prism_ingest::{serve_rtmp, IngestLimits, IngestStats};
use prism_media::{HubDirectory, StreamHub};

use crate::config::{Config, LogFormat};
use crate::telemetry::Telemetry;

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

    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        );
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

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
    let registry = Arc::new(Registry::default());
    let ingest_stats = Arc::new(IngestStats::default());
    // Installed first, so destination tasks record into it from their start.
    let telemetry = match config.metrics_listen {
        Some(_) => Some(Telemetry::install(
            Arc::clone(&registry),
            Arc::clone(&ingest_stats),
        )?),
        None => None,
    };

    let listener = tokio::net::TcpListener::bind(config.rtmp.listen)
        .await
        .map_err(|e| format!("cannot listen for RTMP on {}: {e}", config.rtmp.listen))?;
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(telemetry::bind(address).await?),
        None => None,
    };

    let directory = Arc::new(HubDirectory::default());
    for stream in &config.streams {
        let hub = StreamHub::new(stream.id.clone());
        directory.insert(&stream.key, Arc::clone(&hub));
        let destinations = stream
            .destinations
            .iter()
            .map(|entry| {
                Arc::new(spawn_destination(
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
                ))
            })
            .collect();
        registry.add_stream(StreamEntry {
            id: stream.id.clone(),
            hub,
            destinations: RwLock::new(destinations),
        });
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
    let ingest = tokio::spawn(serve_rtmp(
        listener,
        directory,
        limits,
        ingest_stats,
        shutdown_rx.clone(),
    ));
    let metrics_server = match (metrics_listener, &telemetry) {
        (Some(listener), Some(telemetry)) => {
            info!(listen = %listener.local_addr().map_err(|e| e.to_string())?, "metrics listening");
            let mut stop = shutdown_rx.clone();
            Some(tokio::spawn(telemetry::serve(
                listener,
                Arc::clone(telemetry),
                async move {
                    let _ = stop.changed().await;
                },
            )))
        }
        _ => None,
    };
    if let Some(telemetry) = &telemetry {
        telemetry.set_ready();
    }

    wait_for_signal().await;
    info!("shutting down: closing publishers, unpublishing destinations");
    let _ = shutdown_tx.send(true);
    let _ = ingest.await;
    if tokio::time::timeout(SHUTDOWN_GRACE, registry.shutdown())
        .await
        .is_err()
    {
        warn!(
            "some destinations did not close within {} s",
            SHUTDOWN_GRACE.as_secs()
        );
    }
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    info!("stopped");
    Ok(())
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
