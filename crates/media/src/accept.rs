//! What every accept loop shares: a failed `accept` (EMFILE when the
//! process is out of file descriptors, ENFILE, ENOBUFS) backs off instead of
//! spinning, and a condition that repeats is logged once per interval with
//! how often it happened, not once per attempt.

use std::io;
use std::time::Duration;

use tokio::time::Instant;
use tracing::warn;

/// How often a repeating condition is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Decides when a repeating event is logged: the first time, then at most
/// once per `interval`, with the number of occurrences since the last line.
/// Sans-IO: the caller passes the clock.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last_logged: None,
            unlogged: 0,
        }
    }

    /// Records one occurrence at `now`. `Some(n)` means: log now, this line
    /// stands for `n` occurrences (this one and those not logged before).
    pub fn occurred(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        let due = self
            .last_logged
            .is_none_or(|last| now.saturating_duration_since(last) >= self.interval);
        if !due {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The first and the largest wait after a failed accept.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Back-off for one listener's accept loop; `listener` names it in the
/// log line and in `prism_accept_errors_total{listener}`.
#[derive(Debug)]
pub struct AcceptBackoff {
    listener: &'static str,
    delay: Duration,
    log: Throttle,
}

impl AcceptBackoff {
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            delay: FIRST_BACKOFF,
            log: Throttle::new(LOG_INTERVAL),
        }
    }

    /// Counts and (throttled) logs a failed accept, then waits: 50 ms,
    /// doubling to 1 s while the failures go on. Connections already open
    /// keep being served meanwhile; the pending ones wait in the kernel.
    pub async fn failed(&mut self, error: &io::Error) {
        metrics::counter!("prism_accept_errors_total", "listener" => self.listener).increment(1);
        if let Some(failures) = self.log.occurred(Instant::now()) {
            let out_of_fds = matches!(error.raw_os_error(), Some(EMFILE | ENFILE));
            warn!(
                listener = self.listener,
                error = %error,
                failures,
                retry_in_ms = self.delay.as_millis() as u64,
                hint = if out_of_fds {
                    "out of file descriptors: raise LimitNOFILE, or lower the connection limits"
                } else {
                    ""
                },
                "accept failed; backing off (logged once per {} s)",
                LOG_INTERVAL.as_secs()
            );
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
    }

    /// A successful accept ends the back-off.
    pub fn succeeded(&mut self) {
        self.delay = FIRST_BACKOFF;
    }
}

/// errno values for "too many open files" (process, system); the same on
/// every Linux architecture.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_event_is_logged_once_per_interval_with_its_count() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.occurred(start), Some(1));
        for ms in [1, 100, 5_000, 9_999] {
            assert_eq!(throttle.occurred(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.occurred(start + Duration::from_secs(10)), Some(5));
        assert_eq!(throttle.occurred(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.occurred(start + Duration::from_secs(60)), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_doubling_to_a_second_and_reset_on_success() {
        let mut backoff = AcceptBackoff::new("test");
        let error = io::Error::from_raw_os_error(EMFILE);
        let mut waits = Vec::new();
        for _ in 0..7 {
            let before = Instant::now();
            backoff.failed(&error).await;
            waits.push(before.elapsed().as_millis());
        }
        assert_eq!(waits, [50, 100, 200, 400, 800, 1000, 1000]);
        backoff.succeeded();
        let before = Instant::now();
        backoff.failed(&error).await;
        assert_eq!(before.elapsed().as_millis(), 50);
    }
}
