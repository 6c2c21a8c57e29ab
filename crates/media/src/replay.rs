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
use crate::multitrack;

/// Over 30 s of 60 fps video with its audio, in messages.
pub const GOP_CACHE_MAX_MESSAGES: usize = 4096;
/// What the cached messages may cost (payload and overhead).
pub const GOP_CACHE_MAX_BYTES: usize = 32 * 1024 * 1024;

/// Sequence headers kept per kind: one per set of tracks (a multitrack
/// stream sends track 0's and the others' apart), the oldest dropped past it.
const MAX_HEADERS_PER_KIND: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct ReplayCache {
    metadata: Option<MediaMessage>,
    /// In arrival order: a decoder takes the last one for each track.
    video_headers: Vec<MediaMessage>,
    audio_headers: Vec<MediaMessage>,
    /// From the last video keyframe on; empty when none is cached.
    gop: Vec<MediaMessage>,
    /// A keyframe went into the cache since it was made or last emptied.
    keyframe_seen: bool,
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
                if message.keyframe && self.keyframe_seen {
                    self.clear_gop();
                }
                // Audio between a video stream's sequence header and its
                // first keyframe leads in the first GOP: a destination
                // that joins within it gets the show from its first frame.
                let lead_in =
                    !self.keyframe_seen && message.kind == MediaKind::Audio && self.has_video();
                if !message.keyframe && self.gop.is_empty() && !lead_in {
                    return false;
                }
                self.keyframe_seen |= message.keyframe;
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
        let headers = match message.kind {
            MediaKind::Data if flv::is_metadata(&message.payload) => {
                self.metadata = Some(message.clone());
                return true;
            }
            MediaKind::Video if message.sequence_header => &mut self.video_headers,
            MediaKind::Audio if message.sequence_header => &mut self.audio_headers,
            _ => return false,
        };
        // A header replaces the one for the same tracks.
        let tracks = header_tracks(message);
        headers.retain(|kept| header_tracks(kept) != tracks);
        if headers.len() == MAX_HEADERS_PER_KIND {
            headers.remove(0);
        }
        headers.push(message.clone());
        true
    }

    /// Joiners wait for the next keyframe.
    pub fn clear_gop(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
    }

    /// Whether the cached GOP holds a keyframe to start from (it may be
    /// lead-in audio alone while the first keyframe is awaited).
    pub fn has_keyframe(&self) -> bool {
        self.keyframe_seen && !self.gop.is_empty()
    }

    /// The current GOP, from its keyframe (after lead-in audio, in the
    /// first one).
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
        self.metadata.iter().chain(self.sequence_headers())
    }

    /// The video and audio sequence headers, as known.
    pub fn sequence_headers(&self) -> impl Iterator<Item = &MediaMessage> {
        self.video_headers.iter().chain(&self.audio_headers)
    }

    pub fn has_video(&self) -> bool {
        !self.video_headers.is_empty()
    }

    pub fn has_audio(&self) -> bool {
        !self.audio_headers.is_empty()
    }
}

/// The tracks a sequence header configures: track 0 for an ordinary one,
/// the ids it carries for a multitrack one.
fn header_tracks(message: &MediaMessage) -> Vec<u8> {
    match multitrack::read(message.kind, &message.payload) {
        Ok(Some(multitrack)) => multitrack.tracks.iter().map(|track| track.id).collect(),
        _ => vec![0],
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
    fn each_track_keeps_its_own_sequence_header() {
        let mut cache = ReplayCache::default();
        let plain =
            |n: u8| MediaMessage::new(MediaKind::Video, 0, Bytes::from(vec![0x17, 0, 0, 0, 0, n]));
        let track_1 = |n: u8| {
            let payload =
                crate::multitrack::tests::video(1, 0, 0, Some(b"avc1"), &[(None, 1, &[n])]);
            MediaMessage::new(MediaKind::Video, 0, payload)
        };
        for header in [plain(1), track_1(1), plain(2), track_1(2)] {
            assert!(header.sequence_header);
            cache.record(&header);
        }
        let kept: Vec<&[u8]> = cache.headers().map(|h| &h.payload[..]).collect();
        assert_eq!(kept, [&plain(2).payload[..], &track_1(2).payload[..]]);
    }

    #[test]
    fn audio_before_the_first_keyframe_leads_in_the_first_gop_only() {
        let audio =
            |ts| MediaMessage::new(MediaKind::Audio, ts, Bytes::from_static(b"\xaf\x01aac"));
        let mut cache = ReplayCache::default();
        assert!(
            !cache.record(&audio(0)),
            "no video header yet: audio-only so far"
        );
        cache.record(&MediaMessage::new(
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        ));
        assert!(cache.record(&audio(0)));
        assert!(!cache.has_keyframe());
        assert!(cache.record(&video(23, true)));
        assert!(cache.record(&audio(23)));
        assert!(cache.has_keyframe());
        let stamps: Vec<u64> = cache.gop().iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, [0, 23, 23]);
        assert!(cache.record(&video(2023, true)));
        assert_eq!(cache.gop().len(), 1, "later GOPs start at their keyframe");
        cache.clear_gop();
        assert!(!cache.record(&audio(2046)), "and never lead in again");
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
