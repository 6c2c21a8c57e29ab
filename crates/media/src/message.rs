//! The unit that travels the pipeline: one RTMP/FLV message, payload shared.

use std::time::Instant;

use bytes::Bytes;

use crate::flv;
pub use crate::flv::MediaKind;
use crate::multitrack;

/// One media message as received at ingest. The payload is the FLV tag body
/// exactly as the publisher sent it; every destination shares the same
/// `Bytes` (cloning it bumps a reference count, it never copies).
///
/// See [`MediaMessage::cost`].
#[derive(Clone, Debug)]
pub struct MediaMessage {
    pub kind: MediaKind,
    /// Milliseconds on the publish's 64-bit timeline: the publisher's
    /// stamps unwrapped at ingest (see `timeline`), so it never wraps.
    pub timestamp: u64,
    pub payload: Bytes,
    /// A video frame a decoder can start from. For a multitrack message:
    /// a keyframe of track 0, the track every consumer can take.
    pub keyframe: bool,
    /// A decoder configuration record (AVC/HEVC/AV1 sequence start, AAC
    /// AudioSpecificConfig): never dropped, replayed to every late joiner.
    pub sequence_header: bool,
    /// When ingest finished receiving it: the start of the relay latency
    /// each destination measures.
    pub received_at: Instant,
}

impl MediaMessage {
    /// Builds a message and classifies it from its FLV tag header.
    pub fn new(kind: MediaKind, timestamp: u64, payload: Bytes) -> Self {
        let (keyframe, sequence_header) = match multitrack::classify(kind, &payload) {
            Some(flags) => flags,
            None => match kind {
                MediaKind::Video => {
                    let info = flv::inspect_video(&payload);
                    (info.keyframe, info.sequence_header)
                }
                MediaKind::Audio => (false, flv::is_audio_sequence_header(&payload)),
                MediaKind::Data => (false, false),
            },
        };
        Self {
            kind,
            timestamp,
            payload,
            keyframe,
            sequence_header,
            received_at: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.payload.len()
    }

    /// What holding this message costs in memory, for budgets: the payload
    /// plus the message and its share of the payload's allocation. Budgets
    /// counted payload only, so a publisher of tiny messages made memory
    /// grow a hundred times past them.
    pub fn cost(&self) -> usize {
        self.payload.len() + MESSAGE_OVERHEAD
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    /// Whether a queue that is over budget may drop this message. Sequence
    /// headers and metadata are tiny and every frame after them depends on them.
    pub fn droppable(&self) -> bool {
        !self.sequence_header && self.kind != MediaKind::Data
    }
}

/// Bytes a queued message costs beyond its payload: the message itself (in
/// a queue slot) and the payload allocation's header and rounding.
pub const MESSAGE_OVERHEAD: usize = 128;
