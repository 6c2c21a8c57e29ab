//! Prism's ingest: accepts RTMP and SRT publishers and feeds their media into
//! the stream hub their stream key names.
//!
//! Errors: why a connection or a pull ended is an `IngestError` or a
//! `PullError` (with `is_timeout()`, `is_refused()`); a refusal carries the
//! `PublishError` that each protocol answers in its own words; a listener
//! that cannot be bound is a `BindError`. Panics inside a connection are
//! caught, logged and counted (`prism_media::supervise`), never spread.

pub mod admission;
mod announce;
pub mod error;
pub mod pull;
pub mod remux;
pub mod rtmp;
pub mod srt;
pub mod srt_drive;
pub mod stats;
pub mod streamid;
pub mod ts;

pub use error::{IngestError, PullError};
pub use rtmp::{IngestLimits, RtmpIngest};
pub use srt::{bind_srt, SrtIngest, SrtSettings};
pub use stats::{IngestStats, RejectReason};
