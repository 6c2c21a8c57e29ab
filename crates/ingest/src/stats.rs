//! Ingest-wide counters, read by the metrics endpoint; updated per connection
//! or per refused publish, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};

use prism_media::auth::Refusal;
use prism_media::{IngestProtocol, PublishError};

/// Why a publish was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    UnknownKey,
    AlreadyLive,
    /// No publish (or no handshake) before the timeout.
    Timeout,
    /// The byte stream was not RTMP the session could follow, or the SRT
    /// stream id asked for something Prism does not do.
    ProtocolError,
    /// SRT: wrong passphrase, or encryption on one side only; or the
    /// authorisation hook said no.
    Unauthorized,
    /// The stream pulls from its source and takes no publisher.
    PullOnly,
    /// The authorisation hook failed or was too busy to ask.
    AuthUnavailable,
}

impl RejectReason {
    pub const ALL: [RejectReason; 7] = [
        RejectReason::UnknownKey,
        RejectReason::AlreadyLive,
        RejectReason::Timeout,
        RejectReason::ProtocolError,
        RejectReason::Unauthorized,
        RejectReason::PullOnly,
        RejectReason::AuthUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::AlreadyLive => "already_live",
            RejectReason::Timeout => "timeout",
            RejectReason::ProtocolError => "protocol_error",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::PullOnly => "pull_only",
            RejectReason::AuthUnavailable => "auth_unavailable",
        }
    }
}

impl From<&PublishError> for RejectReason {
    fn from(error: &PublishError) -> Self {
        match error {
            PublishError::UnknownKey => RejectReason::UnknownKey,
            PublishError::AlreadyLive | PublishError::LiveElsewhere { .. } => {
                RejectReason::AlreadyLive
            }
            PublishError::PullOnly => RejectReason::PullOnly,
            PublishError::Refused(Refusal::Unauthorized | Refusal::Forbidden) => {
                RejectReason::Unauthorized
            }
            PublishError::Refused(Refusal::HookFailed | Refusal::Busy) => {
                RejectReason::AuthUnavailable
            }
        }
    }
}

/// A configured bound that a connection ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections` reached: new encoders wait in the accept queue.
    Connections,
    /// `publish_timeout_s`: no handshake or no publish in time (slowloris).
    PublishTimeout,
    /// `idle_timeout_s`: a live publisher went silent.
    IdleTimeout,
    /// A chunk size, message or AMF0 nesting over Prism's bounds.
    MessageBounds,
    /// `handshake_timeout_s`: no handshake and `connect` in time.
    HandshakeTimeout,
    /// `max_anonymous_connections` full: the least advanced anonymous
    /// connection was evicted to make room for a new one.
    AnonymousConnections,
    /// `max_anonymous_per_address` full for one source address.
    AnonymousPerAddress,
}

impl Limit {
    pub const ALL: [Limit; 7] = [
        Limit::Connections,
        Limit::PublishTimeout,
        Limit::IdleTimeout,
        Limit::MessageBounds,
        Limit::HandshakeTimeout,
        Limit::AnonymousConnections,
        Limit::AnonymousPerAddress,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Connections => "max_connections",
            Limit::PublishTimeout => "publish_timeout",
            Limit::IdleTimeout => "idle_timeout",
            Limit::MessageBounds => "message_bounds",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::AnonymousConnections => "max_anonymous_connections",
            Limit::AnonymousPerAddress => "max_anonymous_per_address",
        }
    }
}

#[derive(Debug, Default)]
pub struct IngestStats {
    /// Encoder connections open now, by `IngestProtocol`.
    open_sessions: [AtomicU64; IngestProtocol::ALL.len()],
    rejected: [AtomicU64; RejectReason::ALL.len()],
    limit_hits: [AtomicU64; Limit::ALL.len()],
}

impl IngestStats {
    pub fn open_sessions(&self, protocol: IngestProtocol) -> u64 {
        self.open_sessions[protocol as usize].load(Ordering::Relaxed)
    }

    pub(crate) fn rtmp_sessions(&self) -> &AtomicU64 {
        &self.open_sessions[IngestProtocol::Rtmp as usize]
    }

    pub(crate) fn srt_sessions(&self) -> &AtomicU64 {
        &self.open_sessions[IngestProtocol::Srt as usize]
    }

    pub fn count_rejection(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_limit(&self, limit: Limit) {
        self.limit_hits[limit as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn limit_hits(&self, limit: Limit) -> u64 {
        self.limit_hits[limit as usize].load(Ordering::Relaxed)
    }

    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }
}

/// Counts an open connection for as long as it lives.
pub(crate) struct OpenSession<'a>(&'a AtomicU64);

impl<'a> OpenSession<'a> {
    pub(crate) fn new(counter: &'a AtomicU64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for OpenSession<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
