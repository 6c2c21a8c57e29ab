//! Why a destination's session failed, as a kind a caller can act on (the
//! API, the metrics, an operator's alert) and a message that says what to
//! fix. The message may carry the server's own words: it is made safe to
//! show (`remote_text`) when the failure is recorded, not here.

use std::io;

use prism_rtmp::{HandshakeError, WriteError};

/// What went wrong, coarse enough to alert on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens on the port (the connection was refused).
    ConnectRefused,
    /// No publish was accepted within `connect_timeout_s`: the connect, the
    /// TLS or the RTMP handshake hung.
    ConnectTimeout,
    /// Another connect failure (no route, network unreachable).
    Connect,
    /// TLS failed: an unknown CA, a wrong name, an unreadable `ca_file`.
    Tls,
    /// The server refused the publish, or ended it (an `onStatus` error,
    /// an SRT listener's rejection).
    Rejected,
    /// The server spoke RTMP in a way Prism cannot follow.
    Protocol,
    /// The server accepted no data for `write_timeout_s`.
    WriteStall,
    /// The server stopped acknowledging what it received (`ack_timeout_s`),
    /// or an SRT receiver stopped answering.
    AckTimeout,
    /// The server closed or reset the connection.
    ClosedByPeer,
    /// Another read or write failure.
    Io,
    /// A fault inside Prism (the destination task panicked).
    Internal,
    /// The stream is in a codec the destination's platform does not take.
    Incompatible,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Dns,
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::Connect,
        ErrorKind::Tls,
        ErrorKind::Rejected,
        ErrorKind::Protocol,
        ErrorKind::WriteStall,
        ErrorKind::AckTimeout,
        ErrorKind::ClosedByPeer,
        ErrorKind::Io,
        ErrorKind::Internal,
        ErrorKind::Incompatible,
    ];

    /// The name in the API, events and the `kind` label of metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Dns => "dns",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Protocol => "protocol",
            ErrorKind::WriteStall => "write_stall",
            ErrorKind::AckTimeout => "ack_timeout",
            ErrorKind::ClosedByPeer => "closed_by_peer",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
            ErrorKind::Incompatible => "incompatible",
        }
    }

    /// Its place in `ALL` (a counter per kind).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A destination session's failure: its kind and what to tell the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationError {
    kind: ErrorKind,
    message: String,
}

impl DestinationError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same failure with its message replaced (made safe to show).
    pub fn with_message(self, message: String) -> Self {
        Self { message, ..self }
    }

    /// The host name did not resolve.
    pub fn is_dns(&self) -> bool {
        self.kind == ErrorKind::Dns
    }

    /// No connection was made (refused, timed out, unreachable).
    pub fn is_connect(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectRefused | ErrorKind::ConnectTimeout | ErrorKind::Connect
        )
    }

    pub fn is_tls(&self) -> bool {
        self.kind == ErrorKind::Tls
    }

    /// The server said no: fixing it is up to the operator (a key, an
    /// account), not the network.
    pub fn is_rejected(&self) -> bool {
        self.kind == ErrorKind::Rejected
    }

    /// The peer went quiet: no publish, no room, or no acknowledgement in
    /// time.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::ConnectTimeout | ErrorKind::WriteStall | ErrorKind::AckTimeout
        )
    }

    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::ClosedByPeer
    }

    /// A read or write on the connection failed with `e`; `doing` says
    /// which ("read", "write").
    pub(crate) fn io(doing: &str, e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof => Self::closed(format!("{doing} failed: {e}")),
            _ => Self::new(ErrorKind::Io, format!("{doing} failed: {e}")),
        }
    }

    pub(crate) fn closed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ClosedByPeer, message)
    }

    pub(crate) fn protocol(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorKind::Protocol, message.to_string())
    }
}

impl From<WriteError> for DestinationError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Io(io) => Self::io("write", &io),
            WriteError::Closed => Self::closed(e.to_string()),
            WriteError::Stalled(_) => Self::new(ErrorKind::WriteStall, e.to_string()),
        }
    }
}

impl From<HandshakeError> for DestinationError {
    fn from(e: HandshakeError) -> Self {
        match e {
            HandshakeError::Closed => Self::closed(e.to_string()),
            HandshakeError::Io(io) => Self::io("RTMP handshake", &io),
            HandshakeError::Invalid(_) => Self::protocol(e),
        }
    }
}

impl std::fmt::Display for DestinationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DestinationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_listed_in_order_with_distinct_names() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
        let names: std::collections::HashSet<_> =
            ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), ErrorKind::ALL.len());
    }

    #[test]
    fn a_reset_or_a_broken_pipe_is_the_peer_closing() {
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(DestinationError::io("read", &reset).is_closed());
        let other = io::Error::other("disk on fire");
        assert_eq!(DestinationError::io("write", &other).kind(), ErrorKind::Io);
        let stalled =
            DestinationError::from(WriteError::Stalled(std::time::Duration::from_secs(5)));
        assert!(stalled.is_timeout());
        assert_eq!(stalled.message(), "peer accepted no data for 5 s");
    }
}
