//! `prism`: the relay daemon. Wires the RTMP and SRT listeners, the control
//! plane (streams, destinations, admin API), the metrics endpoint and the
//! runtime from the TOML config; handles signals (SIGHUP reloads).

mod fds;
mod http;
mod import;
mod listeners;
mod telemetry;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;
use tracing::{error, info, warn};

use prism_ingest::admission::AdmissionLimits;
use prism_ingest::error::BindError;
use prism_ingest::{bind_srt, IngestLimits, IngestStats, RtmpIngest, SrtIngest, SrtSettings};

use prism_admin::streams::{shut_down, Streams};
use prism_admin::{Config, Controller, LogFormat};
use prism_cluster::Cluster;
use prism_media::KeyDirectory;

use crate::listeners::{supervise, FaultInjector, Readiness, Supervision};
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

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Cluster mode: load a TOML file's [[streams]] into Redis, replacing the
    /// cluster's streams (every node applies them within a second).
    Import {
        /// The file whose streams are loaded (a Prism config).
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The cluster's Redis (default: the file's [cluster] redis).
        #[arg(long, value_name = "URL")]
        redis: Option<String>,
        /// The cluster's key prefix (default: the file's [cluster] prefix, else "prism").
        #[arg(long)]
        prefix: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Import {
        config,
        redis,
        prefix,
    }) = args.command
    {
        return import::run(&config, redis, prefix);
    }
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
    // `--check` writes nothing (a first run's token file is only made at
    // a start).
    let parsed = match args.check {
        true => Config::check(&path, &text),
        false => Config::parse(&path, &text),
    };
    let config = match parsed {
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
    log_panics_through_tracing();
    prism_ingest::srt::observe_srt_tasks();

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
    // One stream's destinations may spread over every thread (see
    // prism_media::lanes): worker_threads - 1 fan-out threads beside the
    // runtime's workers.
    if let Err(e) = prism_media::lanes::start(config.worker_threads - 1) {
        eprintln!("cannot start the fan-out threads: {e}");
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(run(path, text, config));
    // A blocking task may still be stuck (a config read from a hung mount):
    // it must not keep the process from exiting.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Every panic is written as one log line in the configured format, its
/// message escaped, instead of the standard hook's raw text on stderr: a
/// peer's text inside a panic message cannot forge log lines. Who caught the
/// panic (a connection, a destination, a listener) logs what follows.
fn log_panics_through_tracing() {
    std::panic::set_hook(Box::new(|info| {
        let message = prism_media::supervise::panic_message(info.payload());
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        error!(
            panic = %prism_media::remote_text::remote_text(&message),
            location,
            thread = thread.name().unwrap_or("unnamed"),
            "a panic"
        );
    }));
}

/// The daemon, from its parsed config to its shutdown. Its error is what
/// stopped the start (a port taken, a bad file): `main` logs it and exits 1.
async fn run(
    path: PathBuf,
    text: String,
    mut config: Config,
) -> Result<(), Box<dyn std::error::Error>> {
    fit_the_fd_limit(&mut config);
    let streams = Arc::new(Streams::default());
    let ingest_stats = Arc::new(IngestStats::default());
    let readiness = Arc::new(Readiness::default());
    // Installed first, so destination tasks record into it from their start.
    let telemetry = match config.metrics_listen {
        Some(_) => Some(Telemetry::install(
            Arc::clone(&streams),
            Arc::clone(&ingest_stats),
            Arc::clone(&readiness),
            config.metrics_series_idle,
        )?),
        None => None,
    };

    // Bind every listener before starting anything, so a taken port fails
    // the start with a clear message.
    let rtmp_listen = config.rtmp.listen;
    let listener = bind_tcp("RTMP", rtmp_listen).await?;
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
        Some(address) => Some(bind_tcp("metrics", address).await?),
        None => None,
    };
    let admin_listener = match &config.admin {
        Some(admin) => Some(bind_tcp("the admin API", admin.listen).await?),
        None => None,
    };
    let admin_config = config.admin.clone();
    let metrics_limits = http_limits(config.metrics_max_connections);
    let limits = IngestLimits {
        max_connections: config.rtmp.max_connections,
        handshake_timeout: config.rtmp.handshake_timeout,
        publish_timeout: config.rtmp.publish_timeout,
        idle_timeout: config.rtmp.idle_timeout,
        max_message_bytes: config.rtmp.max_message_bytes,
        max_partial_messages: config.rtmp.max_partial_messages,
        admission: AdmissionLimits {
            max_anonymous: config.rtmp.max_anonymous_connections,
            max_anonymous_per_address: config.rtmp.max_anonymous_per_address,
            stall_timeout: config.rtmp.stall_timeout,
        },
    };
    for stream in &config.streams {
        info!(
            stream = %stream.id,
            key = %stream.key,
            destinations = stream.destinations.len(),
            "stream configured"
        );
    }

    let controller = match config.cluster.clone() {
        None => Controller::start(&path, &text, config, Arc::clone(&streams))?,
        Some(settings) => {
            let cluster = Cluster::new(settings).map_err(|e| format!("cluster.redis: {e}"))?;
            info!(
                node = %cluster.node_id(),
                redis = %prism_cluster::node::redacted(&cluster.settings().redis_url),
                lease_ms = cluster.settings().lease.as_millis() as u64,
                "cluster mode: streams and destinations come from Redis"
            );
            if let Some(telemetry) = &telemetry {
                telemetry.set_cluster(Arc::clone(&cluster));
            }
            Controller::start_cluster(&path, &text, config, cluster, Arc::clone(&streams))?
        }
    };

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let faults = match prism_media::supervise::listeners_to_fail_on_request() {
        Some(names) => {
            warn!(listeners = %names.join(","), "PRISM_TEST_HOOKS: SIGUSR2 makes these listeners fail (for tests only)");
            let faults = FaultInjector::new(names);
            spawn_fault_signal(faults.clone())?;
            faults
        }
        None => FaultInjector::default(),
    };
    let supervision = || Supervision {
        readiness: Arc::clone(&readiness),
        shutdown: shutdown_rx.clone(),
        faults: faults.clone(),
    };

    info!(listen = %rtmp_listen, "rtmp ingest listening");
    let rtmp = Arc::new(RtmpIngest::new(
        Arc::clone(&streams) as Arc<dyn KeyDirectory>,
        limits,
        Arc::clone(&ingest_stats),
        shutdown_rx.clone(),
    ));
    let rtmp_listener = tokio::spawn(supervise(
        "rtmp",
        listener,
        move || bind_tcp("RTMP", rtmp_listen),
        {
            let rtmp = Arc::clone(&rtmp);
            move |listener| {
                let rtmp = Arc::clone(&rtmp);
                async move { rtmp.serve(listener).await }
            }
        },
        supervision(),
    ));
    let srt_listener = match (srt_listener, srt_settings) {
        (Some((listener, incoming)), Some(settings)) => {
            info!(listen = %settings.listen, latency_ms = settings.latency.as_millis() as u64, "srt ingest listening");
            let srt = Arc::new(SrtIngest::new(
                settings,
                Arc::clone(&streams) as Arc<dyn KeyDirectory>,
                Arc::clone(&ingest_stats),
                shutdown_rx.clone(),
            ));
            let rebind = Arc::clone(&srt);
            Some(tokio::spawn(supervise(
                "srt",
                (listener, incoming),
                move || {
                    let srt = Arc::clone(&rebind);
                    async move { bind_srt(srt.settings()).await }
                },
                move |(listener, incoming)| {
                    let srt = Arc::clone(&srt);
                    async move { srt.serve(listener, incoming).await }
                },
                supervision(),
            )))
        }
        _ => None,
    };
    let metrics_server = match (metrics_listener, &telemetry) {
        (Some(listener), Some(telemetry)) => {
            let address = listener.local_addr()?;
            let limits = metrics_limits;
            info!(listen = %address, max_connections = limits.max_connections, "metrics listening");
            let app = telemetry::router(Arc::clone(telemetry));
            let shutdown = shutdown_rx.clone();
            Some(tokio::spawn(supervise(
                "metrics",
                listener,
                move || bind_tcp("metrics", address),
                move |listener| {
                    http::serve("metrics", listener, app.clone(), limits, shutdown.clone())
                },
                supervision(),
            )))
        }
        _ => None,
    };
    let admin_server = match (admin_listener, admin_config) {
        (Some(listener), Some(admin_config)) => {
            let limits = http_limits(admin_config.max_connections);
            let max_event_streams = admin_config.max_event_streams;
            let address = listener.local_addr()?;
            info!(
                listen = %address,
                auth = admin_config.token.is_some(),
                max_connections = limits.max_connections,
                max_event_streams,
                "admin API listening"
            );
            if admin_config.token_created {
                if let Some(token) = &admin_config.token {
                    // Logged once, on the run that made the token: the
                    // operator opens this link (as Jupyter prints one).
                    info!(
                        "console: open http://{address}/#token={token} (a new admin token, saved in the token file)"
                    );
                }
            }
            let app = prism_admin::router(Arc::clone(&controller), &admin_config);
            let shutdown = shutdown_rx.clone();
            Some(tokio::spawn(supervise(
                "admin",
                listener,
                move || bind_tcp("the admin API", address),
                move |listener| {
                    http::serve("admin", listener, app.clone(), limits, shutdown.clone())
                },
                supervision(),
            )))
        }
        _ => None,
    };
    readiness.set_started();

    let mut signals = Signals::install();
    'running: while let Signal::Reload = signals.next().await {
        // SIGHUPs during a reload coalesce into one more; a SIGTERM stops at
        // once (the reload's live part finishes on its own task).
        let mut again = true;
        while again {
            again = false;
            info!("SIGHUP: reloading the configuration");
            let reload = controller.reload();
            tokio::pin!(reload);
            loop {
                tokio::select! {
                    done = &mut reload => {
                        if let Err(e) = done {
                            error!("reload refused, the running configuration stays: {e}");
                        }
                        break;
                    }
                    signal = signals.next() => match signal {
                        Signal::Reload => again = true,
                        Signal::Stop => break 'running,
                    },
                }
            }
        }
    }
    info!("shutting down: closing publishers, unpublishing destinations");
    let _ = shutdown_tx.send(true);
    if let Some(server) = admin_server {
        let _ = server.await;
    }
    let _ = rtmp_listener.await;
    rtmp.drain().await;
    if let Some(server) = srt_listener {
        let _ = server.await;
    }
    if tokio::time::timeout(SHUTDOWN_GRACE, shut_down(&streams))
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

/// SIGINT or SIGTERM stop; SIGHUP reloads the config. The signal streams
/// are made once: a signal that arrives while none is being awaited (during
/// a reload) is kept for the next `next()`, never lost.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let (interrupt, terminate, hangup) = (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        );
        if interrupt.is_none() || terminate.is_none() || hangup.is_none() {
            warn!("cannot listen for SIGINT, SIGTERM or SIGHUP; they act as the system's default");
        }
        Self {
            interrupt,
            terminate,
            hangup,
        }
    }

    async fn next(&mut self) -> Signal {
        async fn on(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = on(&mut self.interrupt) => Signal::Stop,
            () = on(&mut self.terminate) => Signal::Stop,
            () = on(&mut self.hangup) => Signal::Reload,
        }
    }
}

fn http_limits(max_connections: usize) -> http::HttpLimits {
    http::HttpLimits {
        max_connections,
        header_read_timeout: http::HEADER_READ_TIMEOUT,
        write_stall_timeout: http::WRITE_STALL_TIMEOUT,
    }
}

/// Raises the open-files limit and keeps anonymous RTMP connections and the
/// HTTP listeners' connections within it, less a reserve (see `fds`).
fn fit_the_fd_limit(config: &mut Config) {
    let limit = match fds::raise_limit() {
        Ok(limit) => limit,
        Err(e) => {
            warn!(error = %e, "cannot read or raise the open-files limit");
            return;
        }
    };
    info!(
        soft_at_start = limit.was,
        soft = limit.soft,
        hard = limit.hard,
        "open-files limit (RLIMIT_NOFILE)"
    );
    let http = config
        .metrics_listen
        .map_or(0, |_| config.metrics_max_connections)
        + config.admin.as_ref().map_or(0, |a| a.max_connections);
    let budget = fds::anonymous_rtmp_budget(limit.soft, http);
    let rtmp = &mut config.rtmp;
    if rtmp.max_anonymous_connections > budget {
        warn!(
            configured = rtmp.max_anonymous_connections,
            allowed = budget,
            fd_limit = limit.soft,
            reserve = fds::FD_RESERVE,
            "rtmp.max_anonymous_connections lowered to fit the open-files limit; raise LimitNOFILE to allow more"
        );
        rtmp.max_anonymous_connections = budget;
        rtmp.max_anonymous_per_address = rtmp.max_anonymous_per_address.min(budget);
    }
}

/// Binds a TCP listener, with an error that says what it is for and where.
async fn bind_tcp(
    what: &'static str,
    address: SocketAddr,
) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| BindError {
            what,
            address,
            source,
        })
}

/// SIGUSR2 makes the listeners named in `PRISM_TEST_HOOKS` fail, so tests
/// can watch supervision work.
fn spawn_fault_signal(faults: FaultInjector) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr2 = signal(SignalKind::user_defined2())?;
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            warn!("SIGUSR2: failing the listeners PRISM_TEST_HOOKS names");
            faults.fail_listeners();
        }
    });
    Ok(())
}
