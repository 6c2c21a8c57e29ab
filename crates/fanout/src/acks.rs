//! A destination's health from the server's own acknowledgements. Prism
//! announces a window (`prism_rtmp::DESTINATION_ACK_WINDOW`); a server that
//! processes what it receives acknowledges every window of bytes. A socket
//! that takes bytes proves only that a TCP stack is there: a server whose
//! ingest hung behind a load balancer or a stuck process keeps reading and
//! stops acknowledging. Sans-IO: fed the server's acknowledgements, the
//! bytes sent and the clock.

use std::time::{Duration, Instant};

/// What the acknowledgements say about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckVerdict {
    /// The server has not acknowledged yet (some never do): not proven
    /// live, not failed either.
    Unverified,
    /// It acknowledges as it should.
    Verified,
    /// It acknowledged before, and has acknowledged nothing for `silent`
    /// while `unacked` bytes (more than a window) were sent.
    Stalled { silent: Duration, unacked: u64 },
}

/// One connection's acknowledgements.
#[derive(Debug)]
pub struct AckTracker {
    window: u64,
    /// The last sequence number seen (the server's byte count, mod 2^32).
    last_raw: Option<u32>,
    /// Bytes acknowledged, unwrapped across the 32-bit sequence number.
    acked: u64,
    last_ack_at: Option<Instant>,
}

impl AckTracker {
    pub fn new(window: u32) -> Self {
        Self {
            window: u64::from(window),
            last_raw: None,
            acked: 0,
            last_ack_at: None,
        }
    }

    /// Takes the server's latest acknowledgement (`None` while it has sent
    /// none); a new one moves the count on, across the 32-bit wrap.
    pub fn observe(&mut self, acknowledged: Option<u32>, now: Instant) {
        let Some(raw) = acknowledged else { return };
        if self.last_raw == Some(raw) {
            return;
        }
        self.acked += u64::from(raw.wrapping_sub(self.last_raw.unwrap_or(0)));
        self.last_raw = Some(raw);
        self.last_ack_at = Some(now);
    }

    /// Bytes the server has acknowledged on this connection.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// When the last acknowledgement came.
    pub fn last_ack_at(&self) -> Option<Instant> {
        self.last_ack_at
    }

    /// Bytes sent and not acknowledged yet.
    pub fn unacked(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.acked)
    }

    /// The verdict at `now`, with `sent` bytes written on the connection.
    pub fn verdict(&self, sent: u64, now: Instant, timeout: Duration) -> AckVerdict {
        let Some(last) = self.last_ack_at else {
            return AckVerdict::Unverified;
        };
        let silent = now.saturating_duration_since(last);
        let unacked = self.unacked(sent);
        // A server owes an acknowledgement only once a whole window more
        // has reached it; a quiet stream owes none.
        if silent >= timeout && unacked > self.window * 2 {
            AckVerdict::Stalled { silent, unacked }
        } else {
            AckVerdict::Verified
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u32 = 256 * 1024;

    #[test]
    fn a_server_that_never_acknowledges_is_unverified_not_failed() {
        let tracker = AckTracker::new(WINDOW);
        let now = Instant::now();
        let later = now + Duration::from_secs(600);
        assert_eq!(
            tracker.verdict(1 << 30, later, Duration::from_secs(10)),
            AckVerdict::Unverified
        );
    }

    #[test]
    fn acknowledgements_count_across_the_32_bit_wrap() {
        let mut tracker = AckTracker::new(WINDOW);
        let now = Instant::now();
        tracker.observe(Some(u32::MAX - 99), now);
        tracker.observe(Some(u32::MAX - 99), now + Duration::from_secs(1));
        assert_eq!(tracker.last_ack_at(), Some(now));
        tracker.observe(Some(100), now + Duration::from_secs(2));
        assert_eq!(tracker.acked(), u64::from(u32::MAX) + 101);
        assert_eq!(tracker.unacked(u64::from(u32::MAX) + 1101), 1000);
    }

    #[test]
    fn a_server_that_stops_acknowledging_while_bytes_flow_has_stalled() {
        let mut tracker = AckTracker::new(WINDOW);
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        tracker.observe(Some(1_000_000), start);
        // Silent, but nothing more was sent: not stalled.
        assert_eq!(
            tracker.verdict(1_100_000, start + Duration::from_secs(30), timeout),
            AckVerdict::Verified
        );
        // Silent for less than the timeout: not yet.
        assert_eq!(
            tracker.verdict(9_000_000, start + Duration::from_secs(9), timeout),
            AckVerdict::Verified
        );
        let stalled = tracker.verdict(9_000_000, start + Duration::from_secs(11), timeout);
        assert_eq!(
            stalled,
            AckVerdict::Stalled {
                silent: Duration::from_secs(11),
                unacked: 8_000_000
            }
        );
        // It acknowledges again: fine again.
        tracker.observe(Some(8_900_000), start + Duration::from_secs(12));
        assert_eq!(
            tracker.verdict(9_000_000, start + Duration::from_secs(12), timeout),
            AckVerdict::Verified
        );
    }
}
