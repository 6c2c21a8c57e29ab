//! What a destination reports: its state, its last failure, its counters,
//! readable at any time without touching its task.

use crate::rules::Warning;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{DestinationError, ErrorKind};
use crate::queue::QueueStats;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DestinationState {
    /// Enabled, waiting for the publisher.
    Idle = 0,
    Connecting = 1,
    Live = 2,
    /// The last attempt failed; waiting out the backoff.
    Retrying = 3,
    Disabled = 4,
    /// The stream is in a codec its platform does not take: nothing is
    /// sent until it is in one it does (see `rules`).
    Refused = 5,
}

impl DestinationState {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Idle => "idle",
            DestinationState::Connecting => "connecting",
            DestinationState::Live => "live",
            DestinationState::Retrying => "retrying",
            DestinationState::Disabled => "disabled",
            DestinationState::Refused => "refused",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => DestinationState::Connecting,
            2 => DestinationState::Live,
            3 => DestinationState::Retrying,
            4 => DestinationState::Disabled,
            5 => DestinationState::Refused,
            _ => DestinationState::Idle,
        }
    }
}

/// What a destination reports, readable at any time without touching its task.
#[derive(Debug)]
pub struct DestinationStatus {
    state: AtomicU8,
    last_error: Mutex<Option<DestinationError>>,
    /// Sessions that failed, by kind (`ErrorKind::index`).
    failures: [AtomicU64; ErrorKind::ALL.len()],
    /// Bumped on every state or error change, for event streams.
    changes: watch::Sender<()>,
    pub bytes_sent: AtomicU64,
    pub reconnects: AtomicU64,
    /// Bytes the server acknowledged, over every connection.
    pub acked_bytes: AtomicU64,
    /// Bytes sent on this connection that the server has not acknowledged.
    pub ack_lag_bytes: AtomicU64,
    /// When the last acknowledgement came (ms since `status_epoch()`; 0 never).
    last_ack_ms: AtomicU64,
    /// The server acknowledges on this connection.
    verified: std::sync::atomic::AtomicBool,
    /// Connections ended because the server stopped acknowledging.
    pub ack_timeouts: AtomicU64,
    /// When the current session went live (ms since the Unix epoch; 0 when
    /// not live).
    live_since_ms: AtomicU64,
    /// The counters of the destination's queue.
    queue_stats: Arc<QueueStats>,
    /// The platform's rules the stream breaks now (see `rules`).
    warnings: Mutex<Vec<Warning>>,
    /// Test hook: the task panics at its next turn (see `inject_panic`).
    #[cfg(feature = "test-hooks")]
    pub(crate) panic_requested: std::sync::atomic::AtomicBool,
}

impl DestinationStatus {
    /// A destination not yet started, whose queue keeps `queue_stats`.
    pub fn new(queue_stats: Arc<QueueStats>) -> Self {
        Self {
            state: AtomicU8::new(DestinationState::Idle as u8),
            last_error: Mutex::new(None),
            failures: Default::default(),
            changes: watch::Sender::new(()),
            bytes_sent: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            acked_bytes: AtomicU64::new(0),
            ack_lag_bytes: AtomicU64::new(0),
            last_ack_ms: AtomicU64::new(0),
            verified: std::sync::atomic::AtomicBool::new(false),
            ack_timeouts: AtomicU64::new(0),
            live_since_ms: AtomicU64::new(0),
            queue_stats,
            warnings: Mutex::new(Vec::new()),
            #[cfg(feature = "test-hooks")]
            panic_requested: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn queue_stats(&self) -> &QueueStats {
        &self.queue_stats
    }

    pub fn state(&self) -> DestinationState {
        DestinationState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Sessions that failed with `kind` since the destination started.
    pub fn failures(&self, kind: ErrorKind) -> u64 {
        self.failures[kind.index()].load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<DestinationError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn dropped_frames(&self) -> u64 {
        self.queue_stats.dropped_frames.load(Ordering::Relaxed)
    }

    /// Whether the server acknowledges on the current connection (a
    /// server that never does stays unverified, not failed).
    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// How long ago the server last acknowledged, if it ever did.
    pub fn last_ack_age(&self) -> Option<Duration> {
        match self.last_ack_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(
                status_epoch()
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms)),
            ),
        }
    }

    pub(crate) fn set_verified(&self, verified: bool) {
        if self.verified.swap(verified, Ordering::Relaxed) != verified {
            self.changes.send_replace(());
        }
    }

    /// Resolves on each state or error change; ends (with `Err`) when the
    /// destination is gone.
    pub fn watch_changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    pub(crate) fn set_state(&self, state: DestinationState) {
        if self.state.swap(state as u8, Ordering::Relaxed) != state as u8 {
            let since = if state == DestinationState::Live {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_millis() as u64)
            } else {
                0
            };
            self.live_since_ms.store(since, Ordering::Relaxed);
            self.changes.send_replace(());
        }
    }

    /// When the current session went live; `None` when it is not live.
    pub fn live_since(&self) -> Option<std::time::SystemTime> {
        match self.live_since_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::UNIX_EPOCH + Duration::from_millis(ms)),
        }
    }

    /// Records a failed session: its error is shown and counted by kind.
    pub(crate) fn record_failure(&self, error: DestinationError) {
        self.failures[error.kind().index()].fetch_add(1, Ordering::Relaxed);
        self.set_error(Some(error));
    }

    /// When the server last acknowledged (ms since `status_epoch()`).
    pub(crate) fn set_last_ack_ms(&self, ms: u64) {
        self.last_ack_ms.store(ms, Ordering::Relaxed);
    }

    /// The platform's rules the stream breaks now.
    pub fn warnings(&self) -> Vec<Warning> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_warnings(&self, warnings: Vec<Warning>) {
        let mut now = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if *now != warnings {
            *now = warnings;
            drop(now);
            self.changes.send_replace(());
        }
    }

    pub(crate) fn set_error(&self, error: Option<DestinationError>) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if *last != error {
            *last = error;
            drop(last);
            self.changes.send_replace(());
        }
    }
}

/// The instant acknowledgement times are counted from.
pub(crate) fn status_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(|| Instant::now() - Duration::from_millis(1))
}
