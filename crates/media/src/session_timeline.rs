//! One monotonic timeline for a publish session, across every change of
//! source: a publisher that reconnects within the grace period, the other
//! source taking over, the standby clip and back. Each source's timestamps
//! are shifted onto it, starting one frame after the last frame sent, so no
//! destination sees time jump back or stall, and players, which place
//! frames on the frame grid, never see two frames in one slot.
//!
//! Sans-IO: it only follows the messages it is shown.

use crate::message::{MediaKind, MediaMessage};

#[derive(Debug, Default)]
pub struct SessionTimeline {
    /// The next message is a new source's first: it sets the offset.
    rebase_pending: bool,
    /// Added to the current source's timestamps (timelines stay far below
    /// 2^63 ms, so the arithmetic is plain signed).
    offset: i64,
    /// The latest timestamp delivered.
    last: Option<u64>,
    /// The last video frame delivered, and the interval between its last
    /// two (ms).
    last_video: Option<u64>,
    video_interval: u64,
    /// The last audio frame delivered.
    last_audio: Option<u64>,
}

impl SessionTimeline {
    /// The next message comes from a new source: it is placed at
    /// `next_slot`, and the source's later messages keep their spacing.
    pub fn new_source(&mut self) {
        self.rebase_pending = true;
    }

    /// Where a new source starts: after the last message delivered, and one
    /// frame interval after the last video frame. `None` before anything
    /// was delivered.
    pub fn next_slot(&self) -> Option<u64> {
        let last = self.last?;
        let after_video = self
            .last_video
            .map_or(0, |video| video + self.video_interval.max(1));
        Some((last + 1).max(after_video))
    }

    /// Shifts the current source's message onto the timeline.
    pub fn rebase(&mut self, message: &mut MediaMessage) {
        if self.rebase_pending {
            self.rebase_pending = false;
            if let Some(next) = self.next_slot() {
                self.offset = next as i64 - message.timestamp as i64;
            }
        }
        message.timestamp = (message.timestamp as i64 + self.offset).max(0) as u64;
    }

    /// Whether an audio frame, rebased, would not come after the last one
    /// delivered: audio a new source (an MPEG-TS one especially) stamped
    /// before its first keyframe, around a switch. Such frames are dropped,
    /// so every destination's audio timestamps only grow.
    pub fn goes_back(&self, message: &MediaMessage) -> bool {
        message.kind == MediaKind::Audio
            && !message.sequence_header
            && self
                .last_audio
                .is_some_and(|last| message.timestamp <= last)
    }

    /// Follows a message delivered.
    pub fn record(&mut self, message: &MediaMessage) {
        if !message.sequence_header {
            match message.kind {
                MediaKind::Video => {
                    if let Some(previous) = self.last_video {
                        let interval = message.timestamp.saturating_sub(previous);
                        if (1..=1000).contains(&interval) {
                            self.video_interval = interval;
                        }
                    }
                    self.last_video = Some(message.timestamp);
                }
                MediaKind::Audio => self.last_audio = Some(message.timestamp),
                MediaKind::Data => {}
            }
        }
        if self.last.is_none_or(|last| message.timestamp > last) {
            self.last = Some(message.timestamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn frame(kind: MediaKind, timestamp: u64) -> MediaMessage {
        MediaMessage::new(kind, timestamp, Bytes::from_static(&[0x27, 1, 0, 0, 0]))
    }

    /// Delivers `message` from the current source; its rebased timestamp,
    /// or `None` when it is dropped.
    fn deliver(timeline: &mut SessionTimeline, mut message: MediaMessage) -> Option<u64> {
        timeline.rebase(&mut message);
        if timeline.goes_back(&message) {
            return None;
        }
        timeline.record(&message);
        Some(message.timestamp)
    }

    #[test]
    fn each_new_source_starts_one_frame_after_the_last_and_keeps_its_spacing() {
        let mut timeline = SessionTimeline::default();
        assert_eq!(timeline.next_slot(), None);
        for ts in [0, 40, 80] {
            assert_eq!(
                deliver(&mut timeline, frame(MediaKind::Video, ts)),
                Some(ts)
            );
        }
        deliver(&mut timeline, frame(MediaKind::Audio, 90));
        // A source whose clock is far ahead, then one back at zero.
        timeline.new_source();
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Video, 900_000)),
            Some(120)
        );
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Video, 900_040)),
            Some(160)
        );
        timeline.new_source();
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Video, 0)),
            Some(200)
        );
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Video, 40)),
            Some(240)
        );
    }

    #[test]
    fn audio_stamped_before_a_new_sources_keyframe_never_goes_back() {
        let mut timeline = SessionTimeline::default();
        deliver(&mut timeline, frame(MediaKind::Video, 960));
        deliver(&mut timeline, frame(MediaKind::Video, 1000));
        deliver(&mut timeline, frame(MediaKind::Audio, 1030));
        timeline.new_source();
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Video, 5000)),
            Some(1040)
        );
        // 4990 lands at 1030: not after the last audio frame.
        assert_eq!(deliver(&mut timeline, frame(MediaKind::Audio, 4990)), None);
        assert_eq!(
            deliver(&mut timeline, frame(MediaKind::Audio, 5013)),
            Some(1053)
        );
    }
}
