//! Prism's recordings: one more consumer of a stream, like a destination,
//! writing what the destinations get (across failovers, the standby clip
//! and encoder reconnects, on the session's one timeline) to segmented
//! files, without re-encoding.
//!
//! - `sample`: what a relayed message is to a recording (sans-IO).
//! - `fmp4`, `flv_file`: the two file formats' bytes (sans-IO).
//! - `segmenter`: when files start and close, what each fragment holds
//!   (sans-IO: messages in, bytes to write out).
//! - `files`: where recordings lie and their ids; `writer`: one file on
//!   disk, made durable fragment by fragment.
//! - `recorder`: the task that records a stream's sessions.
//! - `library`: the recordings on disk (listing, deleting, retention).
//! - `preview`: a live preview feed for the console (fMP4 for Media Source
//!   Extensions), from the same segmenter.
//! - `playback`: files (a recording, or any FLV) played back into a stream
//!   at real time: a scheduled pre-recorded show.
//!
//! Errors: `MuxError` for a configuration a file cannot hold; `WriteError`
//! (with its `ErrorKind`: disk full, read-only, permission, other I/O) for
//! a write that failed, which stops one file and never the show.

pub mod files;
pub mod flv_file;
pub mod fmp4;
pub mod library;
pub mod mp4_read;
pub mod playback;
pub mod preview;
pub mod recorder;
pub mod sample;
pub mod segmenter;
pub mod writer;

pub use files::RecordingId;
pub use recorder::{spawn_recorder, RecordSettings, RecorderHandle, RecordingEvent};
pub use segmenter::{Format, SegmentReason, Segmenter, Step};
