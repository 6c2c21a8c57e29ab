//! `prism`: the relay daemon. Wires the RTMP and SRT listeners, the control
//! plane (streams, destinations, admin API), the metrics endpoint and the
//! runtime from the TOML config; handles signals (SIGHUP reloads).

mod telemetry;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info, warn};

use prism_fanout::Registry;
use prism_ingest::{bind_srt, serve_rtmp, serve_srt, IngestLimits, IngestStats, SrtSettings};
use prism_media::HubDirectory;

use prism_admin::{Config, Controller, LogFormat};

use crate::telemetry::Telemetry;

/// The config used when `--config` is not given.
const DEFAULT_CONFIG: &str = "config/prism.toml";
/// How long shutdown waits for destinations to unpublish cleanly.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Prism: relays one live publish (RTMP or SRT) per stream key to many RTMP/RTMPS destinations.
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
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}:1:1: cannot read the config file: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let config = match Config::parse(&path, &text) {
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
        .worker_threads(config.worker_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(path, text, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(path: PathBuf, text: String, config: Config) -> Result<(), String> {
    let registry = Arc::new(Registry::default());
    let ingest_stats = Arc::new(IngestStats::default());
    // Installed first, so destination tasks record into it from their start.
    let telemetry = match config.metrics_listen {
        Some(_) => Some(Telemetry::install(
            Arc::clone(&registry),
            Arc::clone(&ingest_stats),
            config.metrics_series_idle,
        )?),
        None => None,
    };

    // Bind every listener before starting anything, so a taken port fails
    // the start with a clear message.
    let rtmp_listen = config.rtmp.listen;
    let listener = tokio::net::TcpListener::bind(rtmp_listen)
        .await
        .map_err(|e| format!("cannot listen for RTMP on {rtmp_listen}: {e}"))?;
    let srt_settings = config.srt.as_ref().map(|srt| SrtSettings {
        listen: srt.listen,
        latency: srt.latency,
        passphrase: srt.passphrase.clone(),
        idle_timeout: config.rtmp.idle_timeout,
        max_connections: srt.max_connections,
    });
    let srt_listener = match &srt_settings {
        Some(settings) => Some(bind_srt(settings).await?),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(telemetry::bind(address).await?),
        None => None,
    };
    let admin_listener =
        match &config.admin {
            Some(admin) => Some(tokio::net::TcpListener::bind(admin.listen).await.map_err(
                |e| format!("cannot listen for the admin API on {}: {e}", admin.listen),
            )?),
            None => None,
        };
    let admin_token = config.admin.as_ref().and_then(|a| a.token.clone());
    let limits = IngestLimits {
        max_connections: config.rtmp.max_connections,
        publish_timeout: config.rtmp.publish_timeout,
        idle_timeout: config.rtmp.idle_timeout,
        max_message_bytes: config.rtmp.max_message_bytes,
    };
    for stream in &config.streams {
        info!(
            stream = %stream.id,
            key = %stream.key,
            destinations = stream.destinations.len(),
            "stream configured"
        );
    }

    let directory = Arc::new(HubDirectory::default());
    let controller = Controller::start(
        &path,
        &text,
        config,
        Arc::clone(&registry),
        Arc::clone(&directory),
    )?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    info!(listen = %rtmp_listen, "rtmp ingest listening");
    let ingest = tokio::spawn(serve_rtmp(
        listener,
        Arc::clone(&directory),
        limits,
        Arc::clone(&ingest_stats),
        shutdown_rx.clone(),
    ));
    let srt_server = match (srt_listener, srt_settings) {
        (Some((listener, incoming)), Some(settings)) => {
            info!(listen = %settings.listen, latency_ms = settings.latency.as_millis() as u64, "srt ingest listening");
            Some(tokio::spawn(serve_srt(
                listener,
                incoming,
                settings,
                Arc::clone(&directory),
                Arc::clone(&ingest_stats),
                shutdown_rx.clone(),
            )))
        }
        _ => None,
    };
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
    let admin_server = admin_listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            info!(listen = %address, auth = admin_token.is_some(), "admin API listening");
        }
        let app = prism_admin::router(Arc::clone(&controller), admin_token);
        tokio::spawn(async move { axum::serve(listener, app).await })
    });
    if let Some(telemetry) = &telemetry {
        telemetry.set_ready();
    }

    while let Signal::Reload = wait_for_signal().await {
        if let Err(e) = controller.reload().await {
            error!(
                "reload refused, the running configuration stays: {}",
                e.message
            );
        }
    }
    info!("shutting down: closing publishers, unpublishing destinations");
    let _ = shutdown_tx.send(true);
    // Event streams never end on their own: the admin server is stopped, not drained.
    if let Some(server) = admin_server {
        server.abort();
    }
    let _ = ingest.await;
    if let Some(server) = srt_server {
        let _ = server.await;
    }
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

enum Signal {
    Reload,
    Stop,
}

/// SIGINT or SIGTERM stop; SIGHUP reloads the config.
async fn wait_for_signal() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot listen for SIGTERM/SIGHUP; only Ctrl-C stops the daemon");
        let _ = tokio::signal::ctrl_c().await;
        return Signal::Stop;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Signal::Stop,
        _ = terminate.recv() => Signal::Stop,
        _ = hangup.recv() => Signal::Reload,
    }
}
