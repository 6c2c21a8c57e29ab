//! Prism's ingest: accepts RTMP and SRT publishers and feeds their media into
//! the stream hub their stream key names.

pub mod aac;
mod announce;
pub mod h264;
pub mod hevc;
pub mod remux;
pub mod rtmp;
pub mod session;
pub mod srt;
pub mod stats;
pub mod streamid;
pub mod ts;

pub use rtmp::{serve_rtmp, IngestLimits};
pub use srt::{bind_srt, serve_srt, SrtSettings};
pub use stats::{IngestStats, RejectReason};
