//! What a source needs to be joined at any moment: its metadata, its
//! sequence headers and its current GOP, from its last keyframe. A late
//! destination is primed with it; a source going on air (failover, the end
//! of the standby clip) starts from it, so nobody waits for a keyframe.
//!
//! Bounded: a GOP over `GOP_CACHE_MAX_BYTES` or `GOP_CACHE_MAX_MESSAGES`
//! (a 30 s keyframe interval at a high bitrate, or a flood of tiny
//! messages) is dropped, and joiners wait for the next keyframe instead.
//! Sans-IO; the messages' payloads are shared, never copied.

use crate::flv;
use crate::message::{MediaKind, MediaMessage};

/// Over 30 s of 60 fps video with its audio, in messages.
pub const GOP_CACHE_MAX_MESSAGES: usize = 4096;
/// What the cached messages may cost (payload and overhead).
pub const GOP_CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct ReplayCache {
    metadata: Option<MediaMessage>,
    video_header: Option<MediaMessage>,
    audio_header: Option<MediaMessage>,
    /// From the last video keyframe on; empty when none is cached.
    gop: Vec<MediaMessage>,
    gop_bytes: usize,
}

impl ReplayCache {
    /// Keeps what `message` adds; true when it went into the GOP.
    pub fn record(&mut self, message: &MediaMessage) -> bool {
        if self.record_headers(message) {
            return false;
        }
        match message.kind {
            MediaKind::Video | MediaKind::Audio => {
                if message.keyframe {
                    self.clear_gop();
                }
                if !message.keyframe && self.gop.is_empty() {
                    return false;
                }
                if self.gop_bytes + message.cost() > GOP_CACHE_MAX_BYTES
                    || self.gop.len() >= GOP_CACHE_MAX_MESSAGES
                {
                    self.clear_gop();
                    return false;
                }
                self.gop_bytes += message.cost();
                self.gop.push(message.clone());
                true
            }
            MediaKind::Data => false,
        }
    }

    /// Keeps `message` if it is metadata or a sequence header (all that a
    /// source on air needs kept of its own: the session's cache holds its
    /// GOP); true when it was one.
    pub fn record_headers(&mut self, message: &MediaMessage) -> bool {
        let slot = match message.kind {
            MediaKind::Data if flv::is_metadata(&message.payload) => &mut self.metadata,
            MediaKind::Video if message.sequence_header => &mut self.video_header,
            MediaKind::Audio if message.sequence_header => &mut self.audio_header,
            _ => return false,
        };
        *slot = Some(message.clone());
        true
    }

    /// Joiners wait for the next keyframe.
    pub fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
    }

    /// The current GOP, from its keyframe.
    pub fn gop(&self) -> &[MediaMessage] {
        &self.gop
    }

    /// The current GOP, leaving the cache waiting for the next keyframe.
    pub fn take_gop(&mut self) -> Vec<MediaMessage> {
        self.gop_bytes = 0;
        std::mem::take(&mut self.gop)
    }

    /// Metadata, then the video and audio sequence headers, as known.
    pub fn headers(&self) -> impl Iterator<Item = &MediaMessage> {
        [&self.metadata, &self.video_header, &self.audio_header]
            .into_iter()
            .flatten()
    }

    /// The video and audio sequence headers, as known.
    pub fn sequence_headers(&self) -> impl Iterator<Item = &MediaMessage> {
        [&self.video_header, &self.audio_header]
            .into_iter()
            .flatten()
    }

    pub fn has_video(&self) -> bool {
        self.video_header.is_some()
    }

    pub fn has_audio(&self) -> bool {
        self.audio_header.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn video(timestamp: u64, keyframe: bool) -> MediaMessage {
        let first = if keyframe { 0x17 } else { 0x27 };
        MediaMessage::new(
            MediaKind::Video,
            timestamp,
            Bytes::from(vec![first, 1, 0, 0, 0]),
        )
    }

    #[test]
    fn keeps_the_headers_and_the_gop_from_the_last_keyframe() {
        let mut cache = ReplayCache::default();
        assert!(!cache.record(&video(0, false)), "no keyframe yet");
        let header =
            MediaMessage::new(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        cache.record(&header);
        assert!(cache.record(&video(40, true)));
        assert!(cache.record(&video(80, false)));
        assert!(cache.record(&video(120, true)));
        let stamps: Vec<u64> = cache.gop().iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, [120]);
        assert_eq!(cache.headers().count(), 1);
        assert_eq!(cache.take_gop().len(), 1);
        assert!(
            !cache.record(&video(160, false)),
            "waits for the next keyframe"
        );
    }

    #[test]
    fn a_gop_over_its_bound_is_dropped() {
        let mut cache = ReplayCache::default();
        cache.record(&video(0, true));
        for n in 1..GOP_CACHE_MAX_MESSAGES as u64 {
            cache.record(&video(n, false));
        }
        assert_eq!(cache.gop().len(), GOP_CACHE_MAX_MESSAGES);
        assert!(!cache.record(&video(99_999, false)));
        assert!(cache.gop().is_empty());
    }
}
