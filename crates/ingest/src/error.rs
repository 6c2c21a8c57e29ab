//! Why an encoder's connection ended before it stopped on its own, as one
//! type for the log and for callers that must tell the cases apart (a
//! refusal from a timeout from a peer that speaks no RTMP).

use std::time::Duration;

use prism_media::PublishError;
use prism_rtmp::{HandshakeError, ServerError, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// `handshake_timeout_s`: no handshake and `connect` in time.
    #[error("no handshake and connect within {} s", .0.as_secs())]
    HandshakeTimeout(Duration),
    /// `publish_timeout_s`: connected, but no publish in time.
    #[error("no publish before the timeout")]
    PublishTimeout,
    /// `idle_timeout_s`: a live publisher sent nothing.
    #[error("no data for {} s", .0.as_secs())]
    Idle(Duration),
    /// The anonymous pool was full and this connection had made the least
    /// progress.
    #[error(
        "evicted: the anonymous connection limit is full and this one had made the least progress"
    )]
    Evicted,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The byte stream was not RTMP the session could follow, or broke one
    /// of Prism's bounds.
    #[error(transparent)]
    Protocol(#[from] ServerError),
    /// The publish was refused; the encoder was told why
    /// (`NetStream.Publish.BadName` with this description).
    #[error("publish refused: {0}")]
    Refused(PublishError),
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl IngestError {
    /// A timeout of Prism's (handshake, publish, idle), not the peer's error.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            IngestError::HandshakeTimeout(_) | IngestError::PublishTimeout | IngestError::Idle(_)
        )
    }

    pub fn is_refused(&self) -> bool {
        matches!(self, IngestError::Refused(_))
    }
}
