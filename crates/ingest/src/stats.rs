//! Ingest-wide counters, read by the metrics endpoint; updated per connection
//! or per refused publish, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    UnknownKey,
    AlreadyLive,
    /// No publish (or no handshake) before the timeout.
    Timeout,
    /// The byte stream was not RTMP the session could follow.
    ProtocolError,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::UnknownKey,
        RejectReason::AlreadyLive,
        RejectReason::Timeout,
        RejectReason::ProtocolError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::AlreadyLive => "already_live",
            RejectReason::Timeout => "timeout",
            RejectReason::ProtocolError => "protocol_error",
        }
    }
}

#[derive(Debug, Default)]
pub struct IngestStats {
    /// Encoder connections open now.
    pub open_sessions: AtomicU64,
    rejected: [AtomicU64; 4],
}

impl IngestStats {
    pub fn count_rejection(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }
}

/// Counts an open connection for as long as it lives.
pub(crate) struct OpenSession<'a>(&'a IngestStats);

impl<'a> OpenSession<'a> {
    pub(crate) fn new(stats: &'a IngestStats) -> Self {
        stats.open_sessions.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.open_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}
