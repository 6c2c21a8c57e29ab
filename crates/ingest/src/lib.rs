//! Prism's ingest: accepts publishers and feeds their media into the stream
//! hub their stream key names.

pub mod rtmp;
pub mod session;

pub use rtmp::{serve_rtmp, IngestLimits};
