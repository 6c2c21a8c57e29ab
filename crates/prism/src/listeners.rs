//! Listener supervision. A listener task that panics or ends while the
//! daemon runs is logged, counted and started again on a freshly bound
//! socket, with backoff; `/readyz` answers 503 while any listener is down.
//! Live connections are not the listener's: they run in their own tasks and
//! go on while it restarts (SRT's share srt-tokio's socket, so they cannot).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{error, info, warn};

use prism_media::supervise::catch_panic;

/// The first wait before a listener is bound again; doubles per failure.
const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A listener that ran this long restarts with the shortest backoff again.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);

/// The supervised listeners, by the name their logs and metrics use.
pub const LISTENERS: [&str; 4] = ["rtmp", "srt", "metrics", "admin"];

/// Whether the daemon is ready: started, and no listener down.
#[derive(Default)]
pub struct Readiness {
    started: AtomicBool,
    down: Mutex<BTreeSet<&'static str>>,
}

/// Why the daemon is not ready.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// Still loading the config and binding its listeners.
    #[error("starting")]
    Starting,
    /// These listeners are being restarted under supervision.
    #[error("listener restarting: {}", .0.join(", "))]
    Restarting(Vec<&'static str>),
}

impl Readiness {
    /// Marks the start complete: config loaded, every listener bound.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready, else what is missing (for the 503 body).
    pub fn check(&self) -> Result<(), NotReady> {
        if !self.started.load(Ordering::Relaxed) {
            return Err(NotReady::Starting);
        }
        let down = self.down.lock().expect("readiness lock");
        if down.is_empty() {
            Ok(())
        } else {
            Err(NotReady::Restarting(down.iter().copied().collect()))
        }
    }

    fn set_down(&self, listener: &'static str, down: bool) {
        let mut set = self.down.lock().expect("readiness lock");
        if down {
            set.insert(listener);
        } else {
            set.remove(listener);
        }
    }
}

/// Makes chosen listeners fail on demand, for the end-to-end test of
/// supervision: wired to SIGUSR2 only when `PRISM_TEST_HOOKS` names them.
#[derive(Clone, Default)]
pub struct FaultInjector {
    fail: Arc<Notify>,
    targets: Arc<Vec<String>>,
}

impl FaultInjector {
    /// An injector that fails the listeners named in `targets`.
    pub fn new(targets: Vec<String>) -> Self {
        Self {
            fail: Arc::default(),
            targets: Arc::new(targets),
        }
    }

    pub fn fail_listeners(&self) {
        self.fail.notify_waiters();
    }

    /// Resolves when `listener` is to fail; never, for one not targeted.
    async fn failure(&self, listener: &str) {
        let notified = self.fail.notified();
        if self.targets.iter().any(|t| t == listener) {
            notified.await
        } else {
            std::future::pending().await
        }
    }
}

/// What one supervised listener needs besides its socket.
pub struct Supervision {
    pub readiness: Arc<Readiness>,
    pub shutdown: watch::Receiver<bool>,
    pub faults: FaultInjector,
}

/// Runs `serve` on `socket` until shutdown. When `serve` returns or panics
/// before shutdown, the listener is marked down, a new socket is bound with
/// `bind` (retrying with backoff) and `serve` runs again.
pub async fn supervise<L, Bind, BindFuture, Serve, ServeFuture>(
    name: &'static str,
    mut socket: L,
    mut bind: Bind,
    mut serve: Serve,
    supervision: Supervision,
) where
    Bind: FnMut() -> BindFuture,
    BindFuture: Future<Output = Result<L, prism_ingest::error::BindError>>,
    Serve: FnMut(L) -> ServeFuture,
    ServeFuture: Future<Output = ()>,
{
    let Supervision {
        readiness,
        mut shutdown,
        faults,
    } = supervision;
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let serving = serve(socket);
        let injected = faults.failure(name);
        let outcome = catch_panic("listener", async {
            tokio::select! {
                () = serving => {}
                () = injected => panic!("listener fault injected (PRISM_TEST_HOOKS)"),
            }
        })
        .await;
        if *shutdown.borrow_and_update() {
            return;
        }
        readiness.set_down(name, true);
        metrics::counter!("prism_listener_restarts_total", "listener" => name).increment(1);
        match outcome {
            Ok(()) => error!(listener = name, "listener ended unexpectedly; restarting"),
            Err(panic) => error!(listener = name, %panic, "listener panicked; restarting"),
        }
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = RESTART_BACKOFF_MIN;
        }
        socket = loop {
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            match bind().await {
                Ok(socket) => break socket,
                Err(e) => warn!(listener = name, error = %e, "listener not bound yet; retrying"),
            }
        };
        readiness.set_down(name, false);
        info!(listener = name, "listening again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn supervision(readiness: &Arc<Readiness>) -> (Supervision, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        let supervision = Supervision {
            readiness: Arc::clone(readiness),
            shutdown,
            faults: FaultInjector::new(vec!["test".into()]),
        };
        (supervision, stop)
    }

    /// A listener whose first run panics and whose first rebind fails is
    /// down (503) until the second bind, then serves again.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_listener_is_rebound_and_served_again() {
        let readiness = Arc::new(Readiness::default());
        readiness.set_started();
        let (supervision, stop) = supervision(&readiness);
        let runs = Arc::new(AtomicUsize::new(0));
        let binds = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (runs, binds) = (Arc::clone(&runs), Arc::clone(&binds));
            let stop = stop.clone();
            supervise(
                "test",
                0usize,
                move || {
                    let attempt = binds.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        match attempt {
                            1 => Err(prism_ingest::error::BindError {
                                what: "test",
                                address: "127.0.0.1:1".parse().unwrap(),
                                source: std::io::ErrorKind::AddrInUse.into(),
                            }),
                            n => Ok(n),
                        }
                    }
                },
                move |socket| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let mut shutdown = stop.subscribe();
                    async move {
                        if socket == 0 {
                            panic!("accept loop bug");
                        }
                        let _ = shutdown.changed().await;
                    }
                },
                supervision,
            )
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(readiness.check(), Err(NotReady::Restarting(vec!["test"])));
        assert_eq!(
            readiness.check().unwrap_err().to_string(),
            "listener restarting: test"
        );
        tokio::time::sleep(RESTART_BACKOFF_MIN * 4).await;
        assert_eq!(binds.load(Ordering::SeqCst), 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(readiness.check(), Ok(()));
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("a listener that ends at shutdown is not restarted")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_injected_fault_restarts_a_listener_that_ends_normally_after() {
        let readiness = Arc::new(Readiness::default());
        readiness.set_started();
        let (supervision, stop) = supervision(&readiness);
        let faults = supervision.faults.clone();
        let runs = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let runs = Arc::clone(&runs);
            let stop = stop.clone();
            supervise(
                "test",
                (),
                || async { Ok(()) },
                move |()| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let mut shutdown = stop.subscribe();
                    async move {
                        let _ = shutdown.changed().await;
                    }
                },
                supervision,
            )
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        faults.fail_listeners();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(readiness.check().is_err());
        tokio::time::sleep(RESTART_BACKOFF_MIN).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(readiness.check(), Ok(()));
        stop.send(true).unwrap();
        task.await.unwrap();
    }

    #[test]
    fn not_ready_until_started() {
        let readiness = Readiness::default();
        assert_eq!(readiness.check(), Err(NotReady::Starting));
        readiness.set_started();
        assert_eq!(readiness.check(), Ok(()));
    }
}
