//! Prism's ingest: accepts publishers and feeds their media into the stream
//! hub their stream key names.

mod announce;
pub mod rtmp;
pub mod session;
pub mod stats;

pub use rtmp::{serve_rtmp, IngestLimits};
pub use stats::{IngestStats, RejectReason};
