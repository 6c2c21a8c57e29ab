//! The standby clip ("be right back") and its player. The clip is an FLV
//! file read once into shared `Bytes` messages; the player loops it onto a
//! stream's session timeline, in real time, without re-encoding. Sans-IO:
//! the caller passes the clock and delivers what the player says is due.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::flv;
use crate::message::{MediaKind, MediaMessage};

/// A standby clip, validated: sequence headers, then frames from a video
/// keyframe on, stamped from 0.
#[derive(Debug)]
pub struct StandbyClip {
    /// Video and audio sequence headers (and metadata), sent at each start.
    pub headers: Vec<MediaMessage>,
    /// The frames, timestamps relative to the first (a keyframe) at 0.
    pub frames: Vec<MediaMessage>,
    /// One loop: the last video frame's timestamp plus one frame interval.
    pub duration_ms: u64,
}

/// Why a file cannot be a standby clip, in words an operator acts on.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandbyError {
    #[error("neither an FLV nor an MP4 file")]
    NotFlv,
    #[error("MP4: {0}")]
    Mp4(String),
    #[error("no video sequence header: the video must be H.264 or HEVC")]
    NoVideo,
    #[error("no AAC sequence header: the audio must be AAC")]
    NoAudio,
    #[error("unsupported video codec {0}: use H.264 or HEVC")]
    VideoCodec(&'static str),
    #[error("unsupported audio codec {0}: use AAC")]
    AudioCodec(&'static str),
    #[error("the first video frame is not a keyframe")]
    NoKeyframeFirst,
    #[error("only {0} ms long: a standby clip must be at least 1 s")]
    TooShort(u64),
}

/// The shortest clip accepted.
pub const MIN_CLIP_MS: u64 = 1000;

impl StandbyClip {
    /// Reads an FLV or MP4 file into a clip.
    pub fn from_file(file: &Bytes) -> Result<Self, StandbyError> {
        if file.get(4..8) == Some(b"ftyp") {
            let flv = mp4_to_flv(file)?;
            return Self::from_flv(&flv);
        }
        Self::from_flv(file)
    }

    /// Reads an FLV file's tags into a clip, checking what a destination
    /// needs: H.264 or HEVC video with AAC audio, a keyframe first, 1 s.
    pub fn from_flv(file: &Bytes) -> Result<Self, StandbyError> {
        if file.len() < 9 || &file[..3] != b"FLV" {
            return Err(StandbyError::NotFlv);
        }
        let mut headers: Vec<MediaMessage> = Vec::new();
        let mut frames: Vec<MediaMessage> = Vec::new();
        let (mut has_video_header, mut has_audio_header) = (false, false);
        for message in flv::file_tags(file) {
            let kind = message.kind;
            if kind == MediaKind::Video && is_sequence_end(&message.payload) {
                // ffmpeg ends a file with one; looped, it would reset the
                // destination's decoder every time round.
                continue;
            }
            match kind {
                MediaKind::Video => {
                    let codec = flv::video_codec_name(&message.payload).unwrap_or("unknown");
                    if !matches!(codec, "h264" | "hevc") {
                        return Err(StandbyError::VideoCodec(codec));
                    }
                }
                MediaKind::Audio => {
                    let codec = flv::audio_codec_name(&message.payload).unwrap_or("unknown");
                    if codec != "aac" {
                        return Err(StandbyError::AudioCodec(codec));
                    }
                }
                MediaKind::Data => {}
            }
            if !message.droppable() {
                has_video_header |= message.kind == MediaKind::Video;
                has_audio_header |= message.kind == MediaKind::Audio;
                // Only the first of each; the metadata only if it is one.
                let duplicate = headers.iter().any(|h| {
                    h.kind == message.kind && h.sequence_header == message.sequence_header
                });
                let useful = message.kind != MediaKind::Data || flv::is_metadata(&message.payload);
                if !duplicate && useful {
                    headers.push(message);
                }
                continue;
            }
            if frames.is_empty() {
                if message.kind == MediaKind::Audio {
                    // Audio before the first keyframe has nothing to go with.
                    continue;
                }
                if !message.keyframe {
                    return Err(StandbyError::NoKeyframeFirst);
                }
            }
            frames.push(message);
        }
        if !has_video_header {
            return Err(StandbyError::NoVideo);
        }
        if !has_audio_header {
            return Err(StandbyError::NoAudio);
        }
        let Some(first) = frames.first().map(|f| f.timestamp) else {
            return Err(StandbyError::TooShort(0));
        };
        for frame in &mut frames {
            frame.timestamp = frame.timestamp.saturating_sub(first);
        }
        let last = frames.iter().map(|f| f.timestamp).max().unwrap_or(0);
        let last_video = frames
            .iter()
            .filter(|f| f.kind == MediaKind::Video)
            .map(|f| f.timestamp)
            .max()
            .unwrap_or(0);
        let interval = video_interval(&frames).unwrap_or(40);
        // The next loop's keyframe comes one frame after the last one, and
        // after any audio that trails it.
        let duration_ms = (last_video + interval).max(last + 1);
        if duration_ms < MIN_CLIP_MS {
            return Err(StandbyError::TooShort(duration_ms));
        }
        Ok(Self {
            headers,
            frames,
            duration_ms,
        })
    }

    /// The clip's video sequence header, for comparing with an encoder's.
    pub fn video_header(&self) -> Option<&MediaMessage> {
        self.headers
            .iter()
            .find(|h| h.kind == MediaKind::Video && h.sequence_header)
    }

    /// The clip's audio sequence header.
    pub fn audio_header(&self) -> Option<&MediaMessage> {
        self.headers
            .iter()
            .find(|h| h.kind == MediaKind::Audio && h.sequence_header)
    }
}

/// An MP4 file (H.264 and AAC tracks) as the FLV tags of the same media:
/// the sequence headers from its `avcC` and `esds`, then every sample in
/// time order. The samples are already length-prefixed NAL units, as FLV
/// carries them. HEVC in MP4 is not read (the MP4 crate does not expose
/// `hvcC`).
fn mp4_to_flv(file: &Bytes) -> Result<Bytes, StandbyError> {
    // The MP4 crate is given an operator's file, not a peer's bytes, but a
    // corrupt file must still be an error, not a panic of the config load.
    std::panic::catch_unwind(|| mp4_to_flv_inner(file))
        .unwrap_or_else(|_| Err(StandbyError::Mp4("the file could not be parsed".into())))
}

fn mp4_to_flv_inner(file: &Bytes) -> Result<Bytes, StandbyError> {
    use mp4::{MediaType, TrackType};
    let fail = |e: mp4::Error| StandbyError::Mp4(e.to_string());
    let mut reader =
        mp4::Mp4Reader::read_header(std::io::Cursor::new(file.clone()), file.len() as u64)
            .map_err(fail)?;
    let mut video = None;
    let mut audio = None;
    for (id, track) in reader.tracks() {
        match (track.track_type(), track.media_type()) {
            (Ok(TrackType::Video), Ok(MediaType::H264)) => video = Some(*id),
            (Ok(TrackType::Video), Ok(other)) => {
                return Err(StandbyError::Mp4(format!(
                    "video is {other}: only H.264 is read from MP4 (an HEVC clip must be FLV)"
                )))
            }
            (Ok(TrackType::Audio), Ok(MediaType::AAC)) => audio = Some(*id),
            (Ok(TrackType::Audio), Ok(_)) => return Err(StandbyError::AudioCodec("not AAC")),
            _ => {}
        }
    }
    let video = video.ok_or(StandbyError::NoVideo)?;
    let audio = audio.ok_or(StandbyError::NoAudio)?;
    let mut tags: Vec<(u64, u8, Vec<u8>)> = Vec::new();
    {
        let track = &reader.tracks()[&video];
        let sps = track.sequence_parameter_set().map_err(fail)?;
        let pps = track.picture_parameter_set().map_err(fail)?;
        let record = flv::avc_decoder_configuration_record(sps, pps)
            .ok_or_else(|| StandbyError::Mp4("the H.264 SPS or PPS is truncated".into()))?;
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&record);
        tags.push((0, 9, body));
        let track = &reader.tracks()[&audio];
        let config = flv::aac_audio_specific_config(
            track.audio_profile().map_err(fail)? as u8,
            track.sample_freq_index().map_err(fail)? as u8,
            track.channel_config().map_err(fail)? as u8,
        );
        let mut body = vec![0xaf, 0];
        body.extend_from_slice(&config);
        tags.push((0, 8, body));
    }
    for (track_id, tag_type) in [(video, 9u8), (audio, 8u8)] {
        let timescale = u64::from(reader.tracks()[&track_id].timescale().max(1));
        let count = reader.sample_count(track_id).map_err(fail)?;
        for sample_id in 1..=count {
            let Some(sample) = reader.read_sample(track_id, sample_id).map_err(fail)? else {
                continue;
            };
            let ms = sample.start_time * 1000 / timescale;
            let body = if tag_type == 9 {
                let cts = (i64::from(sample.rendering_offset) * 1000 / timescale as i64) as i32;
                let mut body = vec![if sample.is_sync { 0x17 } else { 0x27 }, 1];
                body.extend_from_slice(&cts.to_be_bytes()[1..]);
                body.extend_from_slice(&sample.bytes);
                body
            } else {
                let mut body = vec![0xaf, 1];
                body.extend_from_slice(&sample.bytes);
                body
            };
            tags.push((ms, tag_type, body));
        }
    }
    // Headers first, then by time (video before audio at the same time).
    tags[2..].sort_by_key(|(ms, tag_type, _)| (*ms, std::cmp::Reverse(*tag_type)));
    let mut flv = flv::FILE_HEADER.to_vec();
    for (ms, tag_type, body) in tags {
        flv::write_tag(&mut flv, tag_type, ms as u32, &body);
    }
    Ok(Bytes::from(flv))
}

/// The usual interval between video frames (the most common one), in ms.
fn video_interval(frames: &[MediaMessage]) -> Option<u64> {
    let video: Vec<u64> = frames
        .iter()
        .filter(|f| f.kind == MediaKind::Video)
        .map(|f| f.timestamp)
        .collect();
    let mut counts = std::collections::HashMap::new();
    for pair in video.windows(2) {
        let interval = pair[1].saturating_sub(pair[0]);
        if (1..=1000).contains(&interval) {
            *counts.entry(interval).or_insert(0u32) += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(interval, count)| (count, std::cmp::Reverse(interval)))
        .map(|(interval, _)| interval)
}

/// An AVC end-of-sequence tag (legacy packet type 2, or enhanced
/// `SequenceEnd`).
fn is_sequence_end(payload: &[u8]) -> bool {
    match payload.first() {
        Some(first) if first & 0x80 != 0 => first & 0x0f == 2,
        Some(_) => payload.get(1) == Some(&2),
        None => false,
    }
}

/// Plays a clip in a loop onto a session timeline, from `base` ms (where
/// the stream's last frame left it) and the wall-clock instant it started.
#[derive(Debug)]
pub struct StandbyPlayer {
    base: u64,
    started: Instant,
    /// The next frame, and how many loops came before it.
    index: usize,
    loops: u64,
}

impl StandbyPlayer {
    /// Starts at `base`; returns the player and the clip's headers stamped
    /// there, which go out first.
    pub fn start(clip: &StandbyClip, base: u64, now: Instant) -> (Self, Vec<MediaMessage>) {
        let headers = clip.headers.iter().map(|h| stamped(h, base, now)).collect();
        (
            Self {
                base,
                started: now,
                index: 0,
                loops: 0,
            },
            headers,
        )
    }

    /// Appends to `out` every frame due by `now`, stamped on the session
    /// timeline; at the end of the clip it starts over one frame interval
    /// after its last frame.
    pub fn due(&mut self, clip: &StandbyClip, now: Instant, out: &mut Vec<MediaMessage>) {
        let played_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        loop {
            let frame = &clip.frames[self.index];
            let at = self.loops * clip.duration_ms + frame.timestamp;
            if at > played_ms {
                return;
            }
            out.push(stamped(frame, self.base + at, now));
            self.index += 1;
            if self.index == clip.frames.len() {
                self.index = 0;
                self.loops += 1;
            }
        }
    }

    /// When the next frame is due.
    pub fn next_due(&self, clip: &StandbyClip) -> Instant {
        let frame = &clip.frames[self.index];
        self.started + Duration::from_millis(self.loops * clip.duration_ms + frame.timestamp)
    }
}

fn stamped(message: &MediaMessage, timestamp: u64, now: Instant) -> MediaMessage {
    MediaMessage {
        timestamp,
        received_at: now,
        ..message.clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An FLV file of `seconds` at 25 fps video with AAC audio every 23 ms.
    pub(crate) fn flv_clip(seconds: u64, first_is_key: bool) -> Bytes {
        let mut file = crate::flv::FILE_HEADER.to_vec();
        let mut tag = |kind: u8, ts: u64, body: &[u8]| {
            crate::flv::write_tag(&mut file, kind, ts as u32, body);
        };
        tag(9, 0, &[0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1e]);
        tag(8, 0, &[0xaf, 0, 0x12, 0x10]);
        for frame in 0..seconds * 25 {
            let key = frame % 25 == 0 && (first_is_key || frame > 0);
            tag(
                9,
                frame * 40,
                &[if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 7],
            );
            tag(8, frame * 40 + 3, &[0xaf, 1, 9]);
        }
        Bytes::from(file)
    }

    #[test]
    fn a_clip_reads_with_its_headers_and_frames_from_zero() {
        let clip = StandbyClip::from_flv(&flv_clip(2, true)).unwrap();
        assert_eq!(clip.headers.len(), 2);
        assert!(clip.frames[0].keyframe);
        assert_eq!(clip.frames[0].timestamp, 0);
        assert_eq!(clip.duration_ms, 2000);
        assert!(clip.video_header().is_some() && clip.audio_header().is_some());
    }

    #[test]
    fn bad_clips_say_what_is_wrong() {
        assert_eq!(
            StandbyClip::from_flv(&Bytes::from_static(b"\x00\x00\x00 ftypisom")).unwrap_err(),
            StandbyError::NotFlv
        );
        assert_eq!(
            StandbyClip::from_flv(&flv_clip(2, false)).unwrap_err(),
            StandbyError::NoKeyframeFirst
        );
        let short = flv_clip(2, true).slice(..200);
        assert!(matches!(
            StandbyClip::from_flv(&short),
            Err(StandbyError::TooShort(_))
        ));
    }

    #[test]
    fn the_player_loops_on_the_session_timeline_in_real_time() {
        let clip = StandbyClip::from_flv(&flv_clip(2, true)).unwrap();
        let start = Instant::now();
        let (mut player, headers) = StandbyPlayer::start(&clip, 90_000, start);
        assert!(headers
            .iter()
            .all(|h| h.timestamp == 90_000 && !h.droppable()));
        let mut out = Vec::new();
        player.due(&clip, start, &mut out);
        assert_eq!(out.len(), 1, "the keyframe at once");
        assert!(out[0].keyframe && out[0].timestamp == 90_000);
        // 5 s later: two and a half loops, every timestamp after the last.
        player.due(&clip, start + Duration::from_millis(5000), &mut out);
        let stamps: Vec<u64> = out.iter().map(|m| m.timestamp).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        assert_eq!(*stamps.last().unwrap(), 95_000);
        // The second loop starts one frame interval after the first's end.
        assert!(stamps.contains(&(90_000 + 1960)) && stamps.contains(&(92_000)));
        assert!(player.next_due(&clip) > start + Duration::from_millis(5000));
    }
}
