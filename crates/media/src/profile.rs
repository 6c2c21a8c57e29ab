//! What a stream carries, track by track: codec, picture size, frame rate,
//! bitrate, keyframe interval, audio sample rate and channels. Read off the
//! messages as they go out (their sequence headers and their sizes and
//! timestamps), for the API and for checking a platform's published limits.
//!
//! Sans-IO: rates are measured on the media's own timeline (timestamps),
//! never a clock. Bounded: at most `MAX_TRACKS` tracks are followed; a
//! sequence header is parsed once, a frame costs a few additions.

use crate::aac::AacConfig;
use crate::flv::{self, MediaKind};
use crate::message::MediaMessage;
use crate::multitrack;
use crate::{h264, hevc};

/// Tracks followed; more are relayed, not described.
pub const MAX_TRACKS: usize = 16;
/// Rates are measured over windows of at least this much media.
const WINDOW_MS: u64 = 1000;
/// The keyframe interval shown is the longest of this many.
const KEYFRAME_INTERVALS: usize = 4;

/// One track, as the API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackInfo {
    pub kind: MediaKind,
    /// 0 for the default track (the one plain packets carry).
    pub id: u8,
    pub codec: Option<&'static str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    /// Payload bits per second over the last full window.
    pub bitrate_bps: u64,
    /// Video: the longest of the last keyframe intervals, or the time since
    /// the last keyframe when that is longer (a stream that stopped sending
    /// keyframes shows it at once).
    pub keyframe_interval_ms: Option<u64>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
    /// The media time it has covered so far (ms).
    pub span_ms: u64,
}

#[derive(Debug)]
struct Track {
    info: TrackInfo,
    /// The current window: where it began, and what it holds so far.
    window_start: Option<u64>,
    window_bytes: u64,
    window_frames: u32,
    last_keyframe: Option<u64>,
    first: Option<u64>,
    newest: u64,
    /// The last keyframe intervals, a ring written at `next_interval`.
    intervals: [u64; KEYFRAME_INTERVALS],
    next_interval: usize,
}

impl TrackInfo {
    /// A track of which nothing is known yet.
    pub fn new(kind: MediaKind, id: u8) -> Self {
        TrackInfo {
            kind,
            id,
            codec: None,
            width: None,
            height: None,
            fps: None,
            bitrate_bps: 0,
            keyframe_interval_ms: None,
            sample_rate: None,
            channels: None,
            span_ms: 0,
        }
    }
}

impl Track {
    fn new(kind: MediaKind, id: u8) -> Self {
        Track {
            info: TrackInfo::new(kind, id),
            window_start: None,
            window_bytes: 0,
            window_frames: 0,
            last_keyframe: None,
            first: None,
            newest: 0,
            intervals: [0; KEYFRAME_INTERVALS],
            next_interval: 0,
        }
    }
}

/// The tracks of one publish session.
#[derive(Debug, Default)]
pub struct StreamProfile {
    tracks: Vec<Track>,
}

impl StreamProfile {
    /// Follows `message` as it goes out.
    pub fn observe(&mut self, message: &MediaMessage) {
        if message.kind == MediaKind::Data {
            return;
        }
        match multitrack::read(message.kind, &message.payload) {
            Ok(None) => {
                // Named from a header, or a first frame: not from every frame.
                let codec = || match message.kind {
                    MediaKind::Video => flv::video_codec_name(&message.payload),
                    _ => flv::audio_codec_name(&message.payload),
                };
                let config = plain_configuration(message);
                self.follow(message, 0, codec, config, message.len(), message.keyframe);
            }
            Ok(Some(read)) => {
                let keyframe = read.frame_type == flv::FRAME_KEY && !message.sequence_header;
                for track in &read.tracks {
                    let codec = || flv::fourcc_codec_name(message.kind, &track.fourcc);
                    let config = message.sequence_header.then_some(&track.body[..]);
                    self.follow(message, track.id, codec, config, track.body.len(), keyframe);
                }
            }
            Err(_) => {}
        }
    }

    /// The tracks seen, video first, each kind by id.
    pub fn tracks(&self) -> Vec<TrackInfo> {
        let mut tracks: Vec<TrackInfo> = self
            .tracks
            .iter()
            .map(|track| {
                let mut info = track.info.clone();
                info.span_ms = track
                    .newest
                    .saturating_sub(track.first.unwrap_or(track.newest));
                if let Some(last) = track.last_keyframe {
                    let since = track.newest.saturating_sub(last);
                    info.keyframe_interval_ms = Some(
                        track
                            .intervals
                            .iter()
                            .copied()
                            .chain([since])
                            .max()
                            .unwrap_or(since),
                    )
                    .filter(|&ms| ms > 0);
                }
                info
            })
            .collect();
        tracks.sort_by_key(|t| (t.kind != MediaKind::Video, t.id));
        tracks
    }

    fn follow(
        &mut self,
        message: &MediaMessage,
        id: u8,
        codec: impl FnOnce() -> Option<&'static str>,
        configuration: Option<&[u8]>,
        bytes: usize,
        keyframe: bool,
    ) {
        let at = self
            .tracks
            .iter()
            .position(|t| t.info.kind == message.kind && t.info.id == id);
        let track = match at {
            Some(at) => &mut self.tracks[at],
            None if self.tracks.len() < MAX_TRACKS => {
                self.tracks.push(Track::new(message.kind, id));
                self.tracks.last_mut().expect("just pushed")
            }
            None => return,
        };
        // A new codec comes with its sequence header.
        if message.sequence_header || track.info.codec.is_none() {
            let codec = codec();
            if codec.is_some_and(|c| c != "unknown") || track.info.codec.is_none() {
                track.info.codec = codec.or(track.info.codec);
            }
        }
        if message.sequence_header {
            if let Some(configuration) = configuration {
                describe(&mut track.info, configuration);
            }
            return;
        }
        let now = message.timestamp;
        track.newest = track.newest.max(now);
        track.first.get_or_insert(now);
        if keyframe && message.kind == MediaKind::Video {
            if let Some(last) = track.last_keyframe.filter(|&last| now > last) {
                track.intervals[track.next_interval] = now - last;
                track.next_interval = (track.next_interval + 1) % KEYFRAME_INTERVALS;
            }
            track.last_keyframe = Some(now);
        }
        let start = *track.window_start.get_or_insert(now);
        let span = now.saturating_sub(start);
        if span >= WINDOW_MS {
            track.info.bitrate_bps = track.window_bytes * 8 * 1000 / span;
            if message.kind == MediaKind::Video {
                let fps = f64::from(track.window_frames) * 1000.0 / span as f64;
                track.info.fps = Some((fps * 100.0).round() / 100.0);
            }
            track.window_start = Some(now);
            track.window_bytes = 0;
            track.window_frames = 0;
        } else if now < start {
            // A timeline that went back (a new source): start again.
            track.window_start = Some(now);
            track.window_bytes = 0;
            track.window_frames = 0;
        }
        track.window_bytes += bytes as u64;
        track.window_frames += 1;
    }
}

/// The decoder configuration a plain sequence header carries: the record
/// after the legacy AVC/AAC tag header, or after an enhanced one's FourCC.
fn plain_configuration(message: &MediaMessage) -> Option<&[u8]> {
    if !message.sequence_header {
        return None;
    }
    let payload = &message.payload[..];
    let enhanced = match message.kind {
        MediaKind::Video => payload.first()? & 0x80 != 0,
        _ => payload.first()? >> 4 == flv::SOUND_EX_HEADER,
    };
    match (message.kind, enhanced) {
        (_, true) => payload.get(5..),
        (MediaKind::Video, false) => payload.get(5..),
        (_, false) => payload.get(2..),
    }
}

/// Fills in what a codec configuration record says: picture size for
/// H.264 and HEVC, sample rate and channels for AAC.
fn describe(info: &mut TrackInfo, configuration: &[u8]) {
    match info.codec {
        Some("h264") => {
            if let Some((w, h)) = h264::record_sps(configuration).and_then(h264::sps_dimensions) {
                (info.width, info.height) = (Some(w), Some(h));
            }
        }
        Some("hevc") => {
            if let Some(sps) = hevc::record_sps(configuration).and_then(hevc::parse_sps) {
                (info.width, info.height) = (Some(sps.width), Some(sps.height));
            }
        }
        Some("aac") => {
            if let Some(config) = AacConfig::from_audio_specific_config(configuration) {
                info.sample_rate = Some(config.sample_rate());
                info.channels = Some(config.channels);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn frame(ts: u64, key: bool, len: usize) -> MediaMessage {
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.resize(len, 0xab);
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(body))
    }

    #[test]
    fn rates_and_keyframe_interval_are_measured_on_the_timeline() {
        let mut profile = StreamProfile::default();
        // 25 fps, 5000 bytes a frame (1 Mbit/s), a keyframe every 2 s.
        for n in 0..=150u64 {
            profile.observe(&frame(n * 40, n % 50 == 0, 5000));
        }
        let tracks = profile.tracks();
        assert_eq!(tracks.len(), 1);
        let video = &tracks[0];
        assert_eq!(
            (video.kind, video.id, video.codec),
            (MediaKind::Video, 0, Some("h264"))
        );
        assert_eq!(video.fps, Some(25.0));
        assert_eq!(video.bitrate_bps, 1_000_000);
        assert_eq!(video.keyframe_interval_ms, Some(2000));
        // Shorter intervals since: the longest of the last few shows.
        let mut at = 150;
        for interval in [1, 1, 1, 1, 1] {
            for _ in 0..interval * 25 {
                at += 1;
                profile.observe(&frame(at * 40, at % 25 == 0, 5000));
            }
        }
        assert_eq!(profile.tracks()[0].keyframe_interval_ms, Some(1000));
        // No keyframe for 5 s: the interval shown grows with it.
        for n in at + 1..=at + 125 {
            profile.observe(&frame(n * 40, false, 5000));
        }
        assert_eq!(profile.tracks()[0].keyframe_interval_ms, Some(5000));
    }

    #[test]
    fn sequence_headers_give_size_and_sample_rate_and_multitrack_its_tracks() {
        let mut profile = StreamProfile::default();
        let aac = MediaMessage::new(MediaKind::Audio, 0, Bytes::from_static(b"\xaf\x00\x12\x10"));
        profile.observe(&aac);
        let track_1 = crate::multitrack::tests::video(
            1,
            0,
            1,
            Some(b"hvc1"),
            &[(None, 1, b"\x00\x00\x00frame")],
        );
        profile.observe(&MediaMessage::new(MediaKind::Video, 0, track_1));
        let tracks = profile.tracks();
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].id, tracks[0].codec), (1, Some("hevc")));
        assert_eq!(tracks[1].codec, Some("aac"));
        assert_eq!(
            (tracks[1].sample_rate, tracks[1].channels),
            (Some(44100), Some(2))
        );
    }
}
