//! Why an encoder's connection ended before it stopped on its own, as one
//! type for the log and for callers that must tell the cases apart (a
//! refusal from a timeout from a peer that speaks no RTMP).

use std::time::Duration;

use prism_media::PublishError;
use prism_rtmp::{ClientError, HandshakeError, ServerError, WriteError};

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

/// Why a pull's connection to its source ended (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("no answer from {address} within {} s", .within.as_secs())]
    NoAnswer { address: String, within: Duration },
    #[error("connect to {address} failed: {error}")]
    Connect {
        address: String,
        error: std::io::Error,
    },
    #[error("RTMP handshake timed out")]
    HandshakeTimeout,
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The server spoke RTMP in a way the player cannot follow.
    #[error(transparent)]
    Protocol(#[from] ClientError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The server refused to play the stream (its status code and words).
    #[error("the server refused to play the stream: {code}: {reason}")]
    Refused { code: String, reason: String },
    #[error("the source sent nothing for {} s", .0.as_secs())]
    Silent(Duration),
    #[error("the source closed the connection")]
    Closed,
    #[error("read failed: {0}")]
    Read(std::io::Error),
    #[error("the SRT passphrase or pbkeylen is out of range")]
    BadPassphrase,
    /// The stream would not take the pulled source (another source is on
    /// the air, or this node does not hold the stream).
    #[error("the stream refused the pulled source: {0}")]
    Admit(PublishError),
}

/// A listener that could not be bound: what it is for, where, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for {what} on {address}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub address: std::net::SocketAddr,
    pub source: std::io::Error,
}
