//! Types shared by Prism's ingest and fan-out: the media message that travels the
//! pipeline, FLV tag inspection, redacted secrets, and the per-stream hub that hands
//! every message to every destination queue without copying its payload.

pub mod aac;
pub mod accept;
pub mod arbiter;
pub mod auth;
pub mod config_file;
pub mod delay;
pub mod flv;
pub mod gate;
pub mod h264;
pub mod hevc;
pub mod hub;
pub mod lanes;
pub mod message;
pub mod mpegts;
pub mod multitrack;
pub mod profile;
pub mod remote_text;
pub mod replay;
pub mod secret;
pub mod session_timeline;
pub mod single_track;
pub mod standby;
pub mod streams;
pub mod subscriber;
pub mod supervise;
pub mod timeline;

pub use gate::PublishGate;
pub use hub::{
    HubStats, IngestProtocol, LiveState, MediaInfo, PublishError, PublishGuard, PublisherInfo,
    StreamHub,
};
pub use message::{MediaKind, MediaMessage};
pub use secret::StreamKey;
pub use streams::{EventKey, KeyDirectory, Stream, Streams};
pub use subscriber::Subscriber;
