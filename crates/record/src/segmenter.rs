//! A recording's files, decided from its messages alone: when a file starts
//! (the first keyframe, a new codec configuration, `segment_s` elapsed),
//! what each fragment holds, and when the file is closed. Sans-IO: it takes
//! the session's messages and returns the bytes to write, in order; the
//! recorder's task owns the files.

use bytes::Bytes;
use prism_media::{MediaKind, MediaMessage};

use crate::flv_file;
use crate::fmp4::{
    self, AudioTrack, FragmentStart, MuxError, SampleEntry, TrackRun, Tracks, VideoTrack,
};
use crate::sample::{self, Parsed};

/// A fragment is written at each keyframe, or once it holds this much
/// media: what a crash can lose.
pub const MAX_FRAGMENT_MS: u64 = 1000;
/// A fragment is written early past this many samples or bytes, whatever
/// their timestamps say (a peer's timestamps never make it unbounded).
const MAX_FRAGMENT_SAMPLES: usize = 4096;
const MAX_FRAGMENT_BYTES: usize = 32 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Fragmented MP4 (H.264, HEVC, AAC).
    Fmp4,
    /// FLV: every message as received, any codec.
    Flv,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Self::Fmp4 => "mp4",
            Self::Flv => "flv",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fmp4 => "fmp4",
            Self::Flv => "flv",
        }
    }
}

/// Why a file was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentReason {
    /// The recording's first file of this session.
    Start,
    /// `segment_s` elapsed.
    Length,
    /// The codec configuration changed (a failover to another resolution).
    Configuration,
}

impl SegmentReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Length => "length",
            Self::Configuration => "configuration",
        }
    }
}

/// What to do with the files, in order.
#[derive(Debug)]
pub enum Step {
    /// Start a file whose media starts at `start_ms`, writing `head` first.
    Open {
        head: Bytes,
        start_ms: u64,
        reason: SegmentReason,
    },
    /// Append `parts` to the open file, in order; its media now reaches
    /// `end_ms`.
    Append { parts: Vec<Bytes>, end_ms: u64 },
    /// Write `trailer` (if any) and close the open file: it is complete.
    Close { trailer: Option<Bytes> },
    /// A track of this codec cannot be kept in this format: it is left out.
    Unsupported(&'static str),
    /// The encoder's configuration could not be written: the track waits
    /// for a new one.
    Failed(MuxError),
}

/// One sample waiting for its fragment.
#[derive(Clone, Debug)]
struct Pending {
    message: MediaMessage,
    data: Bytes,
    composition: i32,
    sync: bool,
}

pub struct Segmenter {
    format: Format,
    segment_ms: u64,
    /// A fragment holds at most this much media (`MAX_FRAGMENT_MS` unless
    /// set: a live preview wants shorter ones).
    fragment_ms: u64,
    /// The configurations seen last.
    latest: Tracks,
    /// What the open file holds; `None` while no file is open.
    open: Option<OpenFile>,
    video: Vec<Pending>,
    audio: Vec<Pending>,
    /// FLV: every message kept for the next fragment, in arrival order.
    arrival: Vec<MediaMessage>,
    /// FLV: what a new file starts with (the last sequence header of each
    /// kind, the last metadata).
    headers: FlvHeaders,
    /// Whether the session has carried video (else audio frames are where
    /// files start).
    saw_video: bool,
    pending_bytes: usize,
    /// Codecs already reported unsupported (each is reported once).
    reported: Vec<&'static str>,
}

struct OpenFile {
    tracks: Tracks,
    start_ms: u64,
    /// Bytes written so far: where the next fragment starts.
    written: u64,
    fragments: Vec<FragmentStart>,
    sequence: u32,
    last_video_duration: u32,
    last_audio_duration: u32,
}

impl Segmenter {
    pub fn new(format: Format, segment_ms: u64) -> Self {
        Self {
            format,
            segment_ms: segment_ms.max(1000),
            fragment_ms: MAX_FRAGMENT_MS,
            latest: Tracks::default(),
            open: None,
            video: Vec::new(),
            audio: Vec::new(),
            arrival: Vec::new(),
            headers: FlvHeaders::default(),
            saw_video: false,
            pending_bytes: 0,
            reported: Vec::new(),
        }
    }

    /// A segmenter that starts over (a new file at the next keyframe)
    /// knowing the configurations seen so far: after a failed write, the
    /// encoder's headers do not come again.
    pub fn restart(&self) -> Self {
        Self {
            latest: self.latest.clone(),
            headers: self.headers.clone(),
            saw_video: self.saw_video,
            reported: self.reported.clone(),
            fragment_ms: self.fragment_ms,
            ..Self::new(self.format, self.segment_ms)
        }
    }

    /// Fragments of at most `ms` of media (at least 40 ms).
    pub fn with_fragments_of(mut self, ms: u64) -> Self {
        self.fragment_ms = ms.max(40);
        self
    }

    /// The tracks of the open file.
    pub fn open_tracks(&self) -> Option<&Tracks> {
        self.open.as_ref().map(|open| &open.tracks)
    }

    /// Whether a file is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one message of the session.
    pub fn push(&mut self, message: &MediaMessage, steps: &mut Vec<Step>) {
        self.headers.remember(message);
        self.saw_video |= message.kind == MediaKind::Video;
        match sample::parse(message) {
            Parsed::VideoConfig { codec, record } => {
                let track = VideoTrack { codec, record };
                if self.latest.video.as_ref() != Some(&track) {
                    self.latest.video = Some(track);
                    self.flush(None, steps);
                }
            }
            Parsed::AudioConfig { config } => {
                let track = AudioTrack { config };
                if self.latest.audio.as_ref() != Some(&track) {
                    self.latest.audio = Some(track);
                    self.flush(None, steps);
                }
            }
            Parsed::Video {
                data,
                composition_ms,
                keyframe,
            } => {
                if self.latest.video.is_none() {
                    return;
                }
                if keyframe {
                    self.at_sync_point(message.timestamp, true, steps);
                } else if self.due_for_fragment(message.timestamp) {
                    self.flush(Some(message.timestamp), steps);
                }
                if self.open.is_some() {
                    self.keep(message);
                    self.video.push(Pending {
                        message: message.clone(),
                        data,
                        composition: composition_ms,
                        sync: keyframe,
                    });
                }
            }
            Parsed::Audio { data } => {
                if self.latest.audio.is_none() {
                    return;
                }
                if !self.saw_video {
                    // Audio alone: every frame is a place to start.
                    self.at_sync_point(message.timestamp, false, steps);
                } else if self.due_for_fragment(message.timestamp) {
                    self.flush(None, steps);
                }
                if self.open.is_some() {
                    self.keep(message);
                    self.audio.push(Pending {
                        message: message.clone(),
                        data,
                        composition: 0,
                        sync: true,
                    });
                }
            }
            Parsed::Skip => {
                if self.open.is_some() {
                    self.keep(message);
                }
            }
            Parsed::Unsupported(codec) => {
                if self.format == Format::Flv {
                    // FLV keeps every codec as it came; files start at its
                    // keyframes like any other.
                    let audio_alone = message.kind == MediaKind::Audio && !self.saw_video;
                    if message.keyframe || audio_alone {
                        self.at_sync_point(message.timestamp, message.keyframe, steps);
                    }
                    if self.open.is_some() {
                        self.keep(message);
                    }
                } else if !self.reported.contains(&codec) {
                    self.reported.push(codec);
                    steps.push(Step::Unsupported(codec));
                }
            }
        }
    }

    /// The session ended: the open file is completed and closed.
    pub fn finish(&mut self, steps: &mut Vec<Step>) {
        self.flush(None, steps);
        self.close(steps);
    }

    /// FLV: keeps `message` for the next fragment.
    fn keep(&mut self, message: &MediaMessage) {
        if self.format == Format::Flv {
            self.pending_bytes += message.payload.len();
            self.arrival.push(message.clone());
        } else if message.kind != MediaKind::Data {
            self.pending_bytes += message.payload.len();
        }
    }

    fn due_for_fragment(&self, timestamp: u64) -> bool {
        let first = self
            .video
            .first()
            .or(self.audio.first())
            .map(|p| p.message.timestamp);
        first.is_some_and(|first| timestamp.saturating_sub(first) >= self.fragment_ms)
            || self.video.len() + self.audio.len() + self.arrival.len() >= MAX_FRAGMENT_SAMPLES
            || self.pending_bytes >= MAX_FRAGMENT_BYTES
    }

    /// A place a file may start: writes what is pending and starts a new
    /// file when one is due.
    fn at_sync_point(&mut self, timestamp: u64, keyframe: bool, steps: &mut Vec<Step>) {
        let reason = match &self.open {
            None => Some(SegmentReason::Start),
            Some(open) if open.tracks != self.latest => Some(SegmentReason::Configuration),
            Some(open) if timestamp.saturating_sub(open.start_ms) >= self.segment_ms => {
                Some(SegmentReason::Length)
            }
            Some(_) => None,
        };
        let next_video = keyframe.then_some(timestamp);
        match reason {
            None => {
                if keyframe || self.due_for_fragment(timestamp) {
                    self.flush(next_video, steps);
                }
            }
            Some(reason) => {
                self.flush(next_video, steps);
                self.close(steps);
                self.start(timestamp, reason, steps);
            }
        }
    }

    fn start(&mut self, start_ms: u64, reason: SegmentReason, steps: &mut Vec<Step>) {
        let tracks = self.latest.clone();
        let head = match self.format {
            Format::Fmp4 => match fmp4::init_segment(&tracks) {
                Ok(head) => head,
                Err(e) => {
                    // The configuration cannot be written: wait for another.
                    self.latest = Tracks::default();
                    steps.push(Step::Failed(e));
                    return;
                }
            },
            Format::Flv => flv_file::head(
                self.headers.all(),
                self.headers.audio.is_some(),
                self.headers.video.is_some() || self.saw_video,
                start_ms,
            ),
        };
        self.open = Some(OpenFile {
            tracks,
            start_ms,
            written: head.len() as u64,
            fragments: Vec::new(),
            sequence: 0,
            last_video_duration: 33,
            last_audio_duration: 21,
        });
        steps.push(Step::Open {
            head: Bytes::from(head),
            start_ms,
            reason,
        });
    }

    fn close(&mut self, steps: &mut Vec<Step>) {
        let Some(open) = self.open.take() else {
            return;
        };
        let trailer = match self.format {
            Format::Fmp4 => {
                let track = open
                    .tracks
                    .video_id()
                    .or(open.tracks.audio_id())
                    .unwrap_or(1);
                fmp4::random_access_index(track, &open.fragments)
                    .ok()
                    .map(Bytes::from)
            }
            Format::Flv => None,
        };
        steps.push(Step::Close { trailer });
    }

    /// Writes what is pending as one fragment. `next_video` is the decode
    /// time of the video sample after the last pending one, when known.
    fn flush(&mut self, next_video: Option<u64>, steps: &mut Vec<Step>) {
        let video = std::mem::take(&mut self.video);
        let audio = std::mem::take(&mut self.audio);
        let arrival = std::mem::take(&mut self.arrival);
        self.pending_bytes = 0;
        let Some(open) = self.open.as_mut() else {
            return;
        };
        if video.is_empty() && audio.is_empty() && arrival.is_empty() {
            return;
        }
        let end_ms = [&video, &audio]
            .iter()
            .filter_map(|run| run.last().map(|p| p.message.timestamp))
            .chain(arrival.iter().map(|m| m.timestamp))
            .max()
            .unwrap_or(open.start_ms);
        let parts = match self.format {
            Format::Fmp4 => match fmp4_fragment(open, &video, &audio, next_video) {
                Ok(parts) => parts,
                Err(e) => {
                    steps.push(Step::Failed(e));
                    return;
                }
            },
            Format::Flv => flv_file::tags(&arrival),
        };
        open.written += parts.iter().map(|p| p.len() as u64).sum::<u64>();
        steps.push(Step::Append { parts, end_ms });
    }
}

fn fmp4_fragment(
    open: &mut OpenFile,
    video: &[Pending],
    audio: &[Pending],
    next_video: Option<u64>,
) -> Result<Vec<Bytes>, MuxError> {
    let mut runs = Vec::with_capacity(2);
    if let (Some(id), false) = (open.tracks.video_id(), video.is_empty()) {
        let (samples, last) = entries(video, next_video, open.last_video_duration);
        open.last_video_duration = last;
        runs.push(TrackRun {
            track_id: id,
            base_decode_ms: video[0].message.timestamp,
            samples,
        });
    }
    if let (Some(id), false) = (open.tracks.audio_id(), audio.is_empty()) {
        let (samples, last) = entries(audio, None, open.last_audio_duration);
        open.last_audio_duration = last;
        runs.push(TrackRun {
            track_id: id,
            base_decode_ms: audio[0].message.timestamp,
            samples,
        });
    }
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    open.sequence += 1;
    open.fragments.push(FragmentStart {
        decode_ms: runs[0].base_decode_ms,
        offset: open.written,
    });
    let header = fmp4::fragment(open.sequence, &runs)?;
    let mut parts = Vec::with_capacity(1 + video.len() + audio.len());
    parts.push(Bytes::from(header));
    for run in &runs {
        parts.extend(run.samples.iter().map(|s| s.data.clone()));
    }
    Ok(parts)
}

/// A run's samples with their durations: each lasts until the next one's
/// decode time; the last until `next` when known, else as long as the one
/// before it. Returns the last duration, for the next run.
fn entries(run: &[Pending], next: Option<u64>, previous: u32) -> (Vec<SampleEntry>, u32) {
    let mut out = Vec::with_capacity(run.len());
    let mut last = previous;
    for (i, sample) in run.iter().enumerate() {
        let following = run.get(i + 1).map(|p| p.message.timestamp).or(next);
        let duration = match following {
            Some(t) => {
                u32::try_from(t.saturating_sub(sample.message.timestamp)).unwrap_or(u32::MAX)
            }
            None => last,
        };
        last = duration;
        out.push(SampleEntry {
            data: sample.data.clone(),
            duration,
            composition: sample.composition,
            sync: sample.sync,
        });
    }
    (out, last)
}

/// FLV: what a file starts with so that it plays on its own.
#[derive(Clone, Default)]
struct FlvHeaders {
    video: Option<MediaMessage>,
    audio: Option<MediaMessage>,
    metadata: Option<MediaMessage>,
}

impl FlvHeaders {
    fn remember(&mut self, message: &MediaMessage) {
        let slot = match message.kind {
            MediaKind::Video if message.sequence_header => &mut self.video,
            MediaKind::Audio if message.sequence_header => &mut self.audio,
            MediaKind::Data if prism_media::flv::is_metadata(&message.payload) => {
                &mut self.metadata
            }
            _ => return,
        };
        *slot = Some(message.clone());
    }

    fn all(&self) -> impl Iterator<Item = &MediaMessage> {
        [&self.metadata, &self.video, &self.audio]
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fmp4::{NON_SYNC_SAMPLE, SYNC_SAMPLE};
    use mp4_atom::{Decode, Encode, Moof, Moov};

    /// The SPS and PPS of a 640x360 picture, as x264 (baseline) wrote them.
    pub(crate) const SPS: &[u8] = b"\x67\x42\xc0\x1e\xd9\x00\xa0\x2f\xf9\x70\x11\x00\x00\x03\x00\x01\x00\x00\x03\x00\x32\x0f\x16\x2e\x48";
    pub(crate) const PPS: &[u8] = b"\x68\xcb\x83\xcb\x20";
    /// The SPS of a 1280x720 picture (x264's, from mp4-atom's test file).
    const SPS_720P: &[u8] = b"gB\xc0\x1f\xda\x01@\x16\xec\x04@\0\0\x03\0@\0\0\x0c#\xc6\x0c\xa8";

    pub(crate) fn video_header(ts: u64) -> MediaMessage {
        let record = prism_media::flv::avc_decoder_configuration_record(SPS, PPS).unwrap();
        let mut body = vec![0x17, 0, 0, 0, 0];
        body.extend_from_slice(&record);
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(body))
    }

    pub(crate) fn audio_header(ts: u64) -> MediaMessage {
        // AAC LC, 44.1 kHz, stereo.
        MediaMessage::new(
            MediaKind::Audio,
            ts,
            Bytes::from_static(b"\xaf\x00\x12\x10"),
        )
    }

    pub(crate) fn picture(ts: u64, key: bool) -> MediaMessage {
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        // One NAL unit, length-prefixed.
        body.extend_from_slice(&[0, 0, 0, 3, if key { 0x65 } else { 0x41 }, 0x88, ts as u8]);
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(body))
    }

    pub(crate) fn aac(ts: u64) -> MediaMessage {
        MediaMessage::new(
            MediaKind::Audio,
            ts,
            Bytes::from(vec![0xaf, 1, 0x21, ts as u8]),
        )
    }

    /// A show: headers, then `seconds` of 25 fps video with a keyframe
    /// every `gop_ms` and 43 AAC frames a second.
    pub(crate) fn show(seconds: u64, gop_ms: u64) -> Vec<MediaMessage> {
        let mut out = vec![video_header(0), audio_header(0)];
        let mut audio_ts = 0;
        for n in 0..seconds * 25 {
            let ts = n * 40;
            while audio_ts <= ts {
                out.push(aac(audio_ts));
                audio_ts += 23;
            }
            out.push(picture(ts, ts % gop_ms == 0));
        }
        out
    }

    pub(crate) fn run(segmenter: &mut Segmenter, messages: &[MediaMessage]) -> Vec<Step> {
        let mut steps = Vec::new();
        for message in messages {
            segmenter.push(message, &mut steps);
        }
        steps
    }

    /// The files the steps make, each as its bytes.
    pub(crate) fn files(steps: &[Step]) -> Vec<Vec<u8>> {
        let mut files: Vec<Vec<u8>> = Vec::new();
        for step in steps {
            match step {
                Step::Open { head, .. } => files.push(head.to_vec()),
                Step::Append { parts, .. } => {
                    for part in parts {
                        files.last_mut().unwrap().extend_from_slice(part);
                    }
                }
                Step::Close { trailer } => {
                    if let Some(trailer) = trailer {
                        files.last_mut().unwrap().extend_from_slice(trailer);
                    }
                }
                Step::Unsupported(_) | Step::Failed(_) => {}
            }
        }
        files
    }

    /// Every top-level box of a file, decoded: the init segment, then per
    /// fragment its moof with the samples' bytes from its mdat.
    pub(crate) struct Decoded {
        pub moov: Moov,
        pub fragments: Vec<(Moof, Vec<u8>)>,
        pub indexed: bool,
    }

    pub(crate) fn decode(file: &[u8]) -> Decoded {
        let mut at = 0usize;
        let mut moov = None;
        let mut fragments = Vec::new();
        let mut indexed = false;
        while at < file.len() {
            let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            let kind = &file[at + 4..at + 8];
            let body = &file[at..at + size];
            match kind {
                b"moov" => moov = Some(Moov::decode(&mut &body[..]).unwrap()),
                b"moof" => fragments.push((Moof::decode(&mut &body[..]).unwrap(), Vec::new())),
                b"mdat" => fragments.last_mut().unwrap().1 = body[8..].to_vec(),
                b"mfra" => indexed = at + size == file.len(),
                _ => {}
            }
            at += size;
        }
        Decoded {
            moov: moov.expect("a moov"),
            fragments,
            indexed,
        }
    }

    #[test]
    fn a_file_starts_at_the_first_keyframe_with_a_fragment_per_gop() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut messages = vec![video_header(0), audio_header(0), picture(0, false), aac(10)];
        messages.extend(show(4, 1000).into_iter().skip(2).map(|mut m| {
            m.timestamp += 40;
            m
        }));
        let mut steps = run(&mut segmenter, &messages);
        segmenter.finish(&mut steps);
        assert!(matches!(
            steps[0],
            Step::Open {
                start_ms: 40,
                reason: SegmentReason::Start,
                ..
            }
        ));
        let files = files(&steps);
        assert_eq!(files.len(), 1);
        let decoded = decode(&files[0]);
        assert!(decoded.indexed, "closed with its index");
        assert_eq!(decoded.moov.trak.len(), 2);
        let (width, height) = prism_media::h264::sps_dimensions(SPS).unwrap();
        assert_eq!((width, height), (640, 360));
        assert_eq!(decoded.moov.trak[0].tkhd.width.integer(), 640);
        // One fragment per GOP (4 GOPs).
        assert_eq!(decoded.fragments.len(), 4);
        let mut next_video = 40;
        for (moof, mdat) in &decoded.fragments {
            let video = &moof.traf[0];
            assert_eq!(
                video.tfdt.as_ref().unwrap().base_media_decode_time,
                next_video
            );
            let entries: Vec<_> = video.trun[0].samples.iter().collect();
            assert_eq!(entries.len(), 25);
            assert_eq!(entries[0].flags, Some(SYNC_SAMPLE));
            assert!(entries[1..]
                .iter()
                .all(|e| e.flags == Some(NON_SYNC_SAMPLE)));
            assert!(entries.iter().all(|e| e.duration == Some(40)));
            next_video += 1000;
            // The data offset points at the first sample in the mdat: a
            // keyframe NAL unit.
            let moof_len = {
                let mut out = Vec::new();
                moof.encode(&mut out).unwrap();
                out.len()
            };
            let offset = video.trun[0].data_offset.unwrap() as usize - moof_len - 8;
            assert_eq!(&mdat[offset..offset + 5], &[0, 0, 0, 3, 0x65]);
            // Audio follows, continuous.
            let audio = &moof.traf[1];
            assert!(audio.trun[0].samples.iter().all(|e| e.duration == Some(23)));
        }
    }

    #[test]
    fn a_new_file_at_the_first_keyframe_after_the_segment_length() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 3000);
        let mut steps = run(&mut segmenter, &show(10, 2000));
        segmenter.finish(&mut steps);
        let opens: Vec<(u64, SegmentReason)> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Open {
                    start_ms, reason, ..
                } => Some((*start_ms, *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            opens,
            [
                (0, SegmentReason::Start),
                (4000, SegmentReason::Length),
                (8000, SegmentReason::Length)
            ]
        );
        // Timestamps continue across files: each starts where the last ended.
        let files = files(&steps);
        let second = decode(&files[1]);
        let first = decode(&files[0]);
        let (last_moof, _) = first.fragments.last().unwrap();
        let run = &last_moof.traf[0];
        let end = run.tfdt.as_ref().unwrap().base_media_decode_time
            + run.trun[0]
                .samples
                .iter()
                .map(|e| u64::from(e.duration.unwrap()))
                .sum::<u64>();
        let start = second.fragments[0].0.traf[0]
            .tfdt
            .as_ref()
            .unwrap()
            .base_media_decode_time;
        assert_eq!(end, start);
    }

    #[test]
    fn a_new_configuration_starts_a_file_and_a_repeated_one_does_not() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut messages = show(2, 1000);
        // The same headers again (an encoder reconnecting).
        messages.push(video_header(2000));
        messages.push(audio_header(2000));
        messages.extend((50..75).map(|n| picture(n * 40, n == 50)));
        // Another resolution (a failover to the backup).
        let mut other = prism_media::flv::avc_decoder_configuration_record(SPS_720P, PPS).unwrap();
        other.splice(0..0, [0x17, 0, 0, 0, 0]);
        messages.push(MediaMessage::new(
            MediaKind::Video,
            3000,
            Bytes::from(other),
        ));
        messages.extend((75..100).map(|n| picture(n * 40, n == 75)));
        let mut steps = run(&mut segmenter, &messages);
        segmenter.finish(&mut steps);
        let reasons: Vec<SegmentReason> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Open { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect();
        assert_eq!(
            reasons,
            [SegmentReason::Start, SegmentReason::Configuration]
        );
        let files = files(&steps);
        assert_ne!(
            decode(&files[0]).moov.trak[0].tkhd.width,
            decode(&files[1]).moov.trak[0].tkhd.width
        );
    }

    #[test]
    fn a_long_gop_is_written_a_second_at_a_time() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut steps = run(&mut segmenter, &show(5, 10_000));
        // Before the end: every second of media is out already.
        let written: u64 = steps
            .iter()
            .filter_map(|s| match s {
                Step::Append { end_ms, .. } => Some(*end_ms),
                _ => None,
            })
            .max()
            .unwrap();
        assert!(written >= 3900, "{written}");
        segmenter.finish(&mut steps);
        let decoded = decode(&files(&steps)[0]);
        assert!(decoded.fragments.len() >= 5);
        let samples: usize = decoded
            .fragments
            .iter()
            .map(|(moof, _)| moof.traf[0].trun[0].samples.len())
            .sum();
        assert_eq!(samples, 125);
    }

    #[test]
    fn an_audio_only_stream_records_from_its_first_frame() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut messages = vec![audio_header(0)];
        messages.extend((0..100).map(|n| aac(n * 23)));
        let mut steps = run(&mut segmenter, &messages);
        segmenter.finish(&mut steps);
        let decoded = decode(&files(&steps)[0]);
        assert_eq!(decoded.moov.trak.len(), 1);
        let samples: usize = decoded
            .fragments
            .iter()
            .map(|(moof, _)| moof.traf[0].trun[0].samples.len())
            .sum();
        assert_eq!(samples, 100);
    }

    #[test]
    fn flv_files_hold_every_message_and_start_with_the_headers() {
        let mut segmenter = Segmenter::new(Format::Flv, 2000);
        let messages = show(4, 1000);
        let mut steps = run(&mut segmenter, &messages);
        segmenter.finish(&mut steps);
        let files = files(&steps);
        assert_eq!(files.len(), 2);
        let mut read = Vec::new();
        for file in &files {
            let file = Bytes::from(file.clone());
            let tags: Vec<MediaMessage> = prism_media::flv::file_tags(&file).collect();
            assert!(tags[0].sequence_header && tags[1].sequence_header);
            read.extend(tags.into_iter().filter(|m| !m.sequence_header));
        }
        // What came from the first keyframe on (a file starts there).
        let first_key = messages.iter().position(|m| m.keyframe).unwrap();
        let sent: Vec<&MediaMessage> = messages[first_key..]
            .iter()
            .filter(|m| !m.sequence_header)
            .collect();
        assert_eq!(read.len(), sent.len());
        for (got, sent) in read.iter().zip(sent) {
            assert_eq!(
                (got.timestamp, &got.payload),
                (sent.timestamp, &sent.payload)
            );
        }
    }

    #[test]
    fn a_codec_mp4_cannot_hold_is_reported_once() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let opus = |ts| {
            MediaMessage::new(
                MediaKind::Audio,
                ts,
                Bytes::from_static(b"\x91Opus\x01\x02"),
            )
        };
        let mut messages = show(1, 1000);
        messages.push(opus(1000));
        messages.push(opus(1020));
        let steps = run(&mut segmenter, &messages);
        let reported: Vec<_> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Unsupported(codec) => Some(*codec),
                _ => None,
            })
            .collect();
        assert_eq!(reported, ["opus"]);
    }
}
