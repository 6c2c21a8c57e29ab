//! MP4 read back as FLV messages, a batch at a time, to play a file into a
//! stream: fragmented MP4 (a recording Prism made, ffmpeg's
//! `-movflags frag_keyframe`) fragment by fragment, and plain MP4 (what
//! cameras, OBS and ffmpeg write by default, its `moov` before or after the
//! media) by walking each track's sample tables. H.264, HEVC and AAC: the
//! decoder configuration of each track becomes its sequence header, each
//! sample a frame with its composition time, on one millisecond timeline
//! where each track's edit list places it (so audio and video stay in sync).
//!
//! Bounded: a `moof` or sample over 16 MiB, or a `moov` over 64 MiB, is an
//! error; samples are read one at a time where the tables say they lie, and
//! a table cannot declare more samples than the file has bytes.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use mp4_atom::{Atom, Codec, Decode, Moof, Moov, Stbl, StscEntry, StszSamples};

use prism_media::flv::{self, MediaKind, CODEC_AVC, SOUND_AAC};
use prism_media::MediaMessage;

/// The largest `moof` or sample read.
const MAX_BOX: u64 = 16 << 20;
/// The largest `moov`: a plain MP4's sample tables, some 25 bytes a frame,
/// fit hours of video and audio in it.
const MAX_MOOV: u64 = 64 << 20;
/// A plain MP4's frames handed out at a time (in time order, all tracks).
const BATCH_FRAMES: usize = 256;
/// Samples in one fragment: far more than minutes of video and audio; a
/// `trun` may declare four billion without a byte of data behind them.
const MAX_SAMPLES: usize = 1 << 20;
/// `sample_is_non_sync_sample`, in a sample's flags.
const NON_SYNC: u32 = 0x0001_0000;

#[derive(Debug, thiserror::Error)]
pub enum Mp4ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no moov box (a file its writer did not finish, or not MP4)")]
    NoMoov,
    #[error("a {0} over its size limit")]
    TooLarge(&'static str),
    #[error("track {0}: its sample tables do not agree")]
    BadTables(u32),
    #[error("a box that does not parse: {0}")]
    Box(String),
    #[error("no H.264, HEVC or AAC track")]
    NoTrack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    H264,
    Hevc,
    Aac,
}

#[derive(Debug)]
struct Track {
    id: u32,
    kind: Kind,
    timescale: u64,
    /// Where its edit list puts the track's media time 0, in ms on the
    /// file's timeline (after the shift that keeps every time positive).
    offset_ms: i64,
    /// The FLV sequence header its configuration makes.
    header: MediaMessage,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

impl Track {
    /// A media time (in the track's timescale) in ms on the file's timeline.
    fn ms(&self, time: i64) -> i64 {
        to_ms(i128::from(time), self.timescale)
    }

    /// A sample's decode time in ms on the file's timeline.
    fn at_ms(&self, decode: u64) -> i64 {
        to_ms(i128::from(decode), self.timescale).saturating_add(self.offset_ms)
    }
}

/// How the samples are found.
#[derive(Debug)]
enum Layout {
    /// In `moof`s, read as they come.
    Fragmented,
    /// In each track's sample tables (one cursor per track).
    Plain(Vec<SampleCursor>),
}

/// What a file holds.
#[derive(Debug)]
pub struct Mp4Reader<R> {
    input: R,
    tracks: Vec<Track>,
    layout: Layout,
    /// Where the next box starts.
    at: u64,
    len: u64,
}

impl<R: Read + Seek> Mp4Reader<R> {
    /// Reads the file's `moov` (and the boxes before it; in a plain MP4 the
    /// media may come first).
    pub fn open(mut input: R) -> Result<Self, Mp4ReadError> {
        let len = input.seek(SeekFrom::End(0))?;
        let mut reader = Self {
            input,
            tracks: Vec::new(),
            layout: Layout::Fragmented,
            at: 0,
            len,
        };
        loop {
            let Some((kind, start, size)) = reader.next_box()? else {
                return Err(Mp4ReadError::NoMoov);
            };
            match &kind {
                b"moov" => {
                    let body = reader.read_box(start, size, MAX_MOOV, "moov")?;
                    let moov = Moov::decode(&mut &pruned(&body)[..])
                        .map_err(|e| Mp4ReadError::Box(e.to_string()))?;
                    drop(body);
                    let (tracks, layout) = tracks(moov, len)?;
                    reader.tracks = tracks;
                    reader.layout = layout;
                    return Ok(reader);
                }
                b"moof" => return Err(Mp4ReadError::NoMoov),
                _ => {}
            }
        }
    }

    /// The video and audio codecs it holds (`h264`, `hevc`, `aac`).
    pub fn codecs(&self) -> (Option<&'static str>, Option<&'static str>) {
        let video = self.tracks.iter().find_map(|t| match t.kind {
            Kind::H264 => Some("h264"),
            Kind::Hevc => Some("hevc"),
            Kind::Aac => None,
        });
        let audio = self
            .tracks
            .iter()
            .any(|t| t.kind == Kind::Aac)
            .then_some("aac");
        (video, audio)
    }

    /// Each track's sequence header, to send before its frames.
    pub fn headers(&self) -> Vec<MediaMessage> {
        self.tracks.iter().map(|t| t.header.clone()).collect()
    }

    /// The next frames in decode order (a fragment's, or a batch of a plain
    /// file's); `None` at the end. With `data` false only their times are
    /// read (the payloads are empty).
    pub fn next_fragment(&mut self, data: bool) -> Result<Option<Vec<MediaMessage>>, Mp4ReadError> {
        match self.layout {
            Layout::Fragmented => self.next_moof(data),
            Layout::Plain(_) => self.next_batch(data),
        }
    }

    fn next_moof(&mut self, data: bool) -> Result<Option<Vec<MediaMessage>>, Mp4ReadError> {
        loop {
            let Some((kind, start, size)) = self.next_box()? else {
                return Ok(None);
            };
            if &kind != b"moof" {
                continue;
            }
            let body = self.read_box(start, size, MAX_BOX, "moof")?;
            let moof = Moof::decode(&mut &pruned(&body)[..])
                .map_err(|e| Mp4ReadError::Box(e.to_string()))?;
            let mut frames = Vec::new();
            for traf in &moof.traf {
                let Some(index) = self.tracks.iter().position(|t| t.id == traf.tfhd.track_id)
                else {
                    continue;
                };
                let track = &self.tracks[index];
                let base = traf.tfhd.base_data_offset.unwrap_or(start);
                let mut decode = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                let mut samples = Vec::new();
                for trun in &traf.trun {
                    if frames.len() + samples.len() + trun.samples.len() > MAX_SAMPLES {
                        return Err(Mp4ReadError::TooLarge("trun"));
                    }
                    let mut at =
                        base.saturating_add_signed(i64::from(trun.data_offset.unwrap_or(0)));
                    for (index, entry) in trun.samples.iter().enumerate() {
                        let size = entry
                            .size
                            .or(traf.tfhd.default_sample_size)
                            .unwrap_or(track.default_size);
                        let duration = entry
                            .duration
                            .or(traf.tfhd.default_sample_duration)
                            .unwrap_or(track.default_duration);
                        let first_flags = if index == 0 { entry.flags } else { None };
                        let flags = entry
                            .flags
                            .or(first_flags)
                            .or(traf.tfhd.default_sample_flags)
                            .unwrap_or(track.default_flags);
                        samples.push(Sample {
                            offset: at,
                            size,
                            decode,
                            composition: entry.cts.unwrap_or(0),
                            sync: flags & NON_SYNC == 0,
                        });
                        at = at.saturating_add(u64::from(size));
                        decode = decode.saturating_add(u64::from(duration));
                    }
                }
                for sample in samples {
                    match self.frame_of(index, &sample, data)? {
                        Some(frame) => frames.push(frame),
                        // Cut short (a crash mid-fragment): the file ends
                        // with the last whole sample.
                        None => {
                            self.at = self.len;
                            break;
                        }
                    }
                }
            }
            // Video before audio at the same time, as FLV files have it.
            frames.sort_by_key(|f| (f.timestamp, f.kind != MediaKind::Video));
            return Ok(Some(frames));
        }
    }

    /// The next frames of a plain MP4, all tracks merged in time order.
    fn next_batch(&mut self, data: bool) -> Result<Option<Vec<MediaMessage>>, Mp4ReadError> {
        let mut frames = Vec::new();
        while frames.len() < BATCH_FRAMES {
            let Layout::Plain(cursors) = &mut self.layout else {
                unreachable!("a plain file's batch");
            };
            // The earliest next sample (video first at one time).
            let tracks = &self.tracks;
            let Some(index) = (0..cursors.len())
                .filter_map(|i| {
                    let sample = cursors[i].peek()?;
                    let track = &tracks[cursors[i].track];
                    let at = track.at_ms(sample.decode);
                    Some((at, track.kind == Kind::Aac, i))
                })
                .min()
                .map(|(_, _, i)| i)
            else {
                break;
            };
            let cursor = &mut cursors[index];
            let track = cursor.track;
            let sample = cursor
                .next()
                .map_err(|()| Mp4ReadError::BadTables(self.tracks[track].id))?;
            match self.frame_of(track, &sample, data)? {
                Some(frame) => frames.push(frame),
                // A sample past the end: a file cut short ends here.
                None => {
                    self.layout = Layout::Plain(Vec::new());
                    break;
                }
            }
        }
        Ok((!frames.is_empty()).then_some(frames))
    }

    /// A sample of `track` as a message; `None` when it lies past the end.
    fn frame_of(
        &mut self,
        track: usize,
        sample: &Sample,
        data: bool,
    ) -> Result<Option<MediaMessage>, Mp4ReadError> {
        if sample.offset.saturating_add(u64::from(sample.size)) > self.len {
            return Ok(None);
        }
        let payload = if data {
            if u64::from(sample.size) > MAX_BOX {
                return Err(Mp4ReadError::TooLarge("sample"));
            }
            let mut payload = vec![0u8; sample.size as usize];
            self.input.seek(SeekFrom::Start(sample.offset))?;
            self.input.read_exact(&mut payload)?;
            payload
        } else {
            Vec::new()
        };
        let track = &self.tracks[track];
        let timestamp = track.at_ms(sample.decode).max(0) as u64;
        let composition = track.ms(sample.composition) as i32;
        Ok(Some(frame(
            track,
            timestamp,
            composition,
            sample.sync,
            &payload,
        )))
    }

    /// The next box's type, start and size, and moves past it.
    fn next_box(&mut self) -> Result<Option<([u8; 4], u64, u64)>, Mp4ReadError> {
        if self.at + 8 > self.len {
            return Ok(None);
        }
        self.input.seek(SeekFrom::Start(self.at))?;
        let mut header = [0u8; 16];
        self.input.read_exact(&mut header[..8])?;
        let kind = [header[4], header[5], header[6], header[7]];
        let size = match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
            0 => self.len - self.at,
            1 => {
                self.input.read_exact(&mut header[8..])?;
                u64::from_be_bytes(header[8..].try_into().expect("8 bytes"))
            }
            size => u64::from(size),
        };
        if size < 8 || self.at + size > self.len {
            // A file cut short: what came before it is played.
            return Ok(None);
        }
        let start = self.at;
        self.at += size;
        Ok(Some((kind, start, size)))
    }

    /// The box at `start`, whole; one over `limit` is refused, named `what`.
    fn read_box(
        &mut self,
        start: u64,
        size: u64,
        limit: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Mp4ReadError> {
        if size > limit {
            return Err(Mp4ReadError::TooLarge(what));
        }
        let mut body = vec![0u8; size as usize];
        self.input.seek(SeekFrom::Start(start))?;
        self.input.read_exact(&mut body)?;
        Ok(body)
    }
}

/// Boxes holding the boxes below.
const CONTAINERS: [&[u8; 4]; 9] = [
    b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf",
];
/// The boxes the reader uses, kept whole.
const USED: [&[u8; 4]; 22] = [
    b"mvhd", b"tkhd", b"elst", b"mdhd", b"hdlr", b"vmhd", b"smhd", b"dinf", b"stsd", b"stts",
    b"ctts", b"stss", b"stsc", b"stsz", b"stco", b"co64", b"mehd", b"trex", b"mfhd", b"tfhd",
    b"tfdt", b"trun",
];

/// `moov` or `moof` (a whole box) with only the boxes the reader uses.
/// What else a file holds is never parsed: some boxes (sample groups, for
/// one) declare billions of empty entries that a parser would build one by
/// one.
fn pruned(container: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(container.len());
    let Some((kind, _, body)) = split_box(container) else {
        return out;
    };
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&kind);
    let mut rest = body;
    while let Some((child, _, _)) = split_box(rest) {
        let size = box_len(rest);
        let whole = &rest[..size];
        if CONTAINERS.contains(&&child) {
            out.extend_from_slice(&pruned(whole));
        } else if USED.contains(&&child) {
            out.extend_from_slice(whole);
        }
        rest = &rest[size..];
    }
    // At most MAX_MOOV: the size fits 32 bits.
    let size = out.len() as u32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    out
}

/// A box's type, header length and body; `None` past the end or for a box
/// whose size does not fit what is left.
fn split_box(bytes: &[u8]) -> Option<([u8; 4], usize, &[u8])> {
    if bytes.len() < 8 {
        return None;
    }
    let kind: [u8; 4] = bytes[4..8].try_into().expect("4 bytes");
    let size = box_len(bytes);
    let header = if u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) == 1 {
        16
    } else {
        8
    };
    (size >= header && size <= bytes.len()).then(|| (kind, header, &bytes[header..size]))
}

/// The length of the box `bytes` starts with (0 means "to the end"); a
/// length that cannot be is 0, which ends the walk.
fn box_len(bytes: &[u8]) -> usize {
    match u32::from_be_bytes(bytes[..4].try_into().expect("4 bytes")) {
        0 => bytes.len(),
        1 if bytes.len() >= 16 => {
            let size = u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes"));
            usize::try_from(size).unwrap_or(0)
        }
        1 => 0,
        size => size as usize,
    }
}

/// One sample: where it lies and its times in its track's timescale.
#[derive(Clone, Copy, Debug)]
struct Sample {
    offset: u64,
    size: u32,
    decode: u64,
    composition: i64,
    sync: bool,
}

/// A run-length table (`stts`, `ctts`) read one sample at a time.
#[derive(Debug, Default)]
struct Runs<T> {
    entries: Vec<(u32, T)>,
    at: usize,
    left: u32,
}

impl<T: Copy> Runs<T> {
    fn next(&mut self) -> Option<T> {
        while self.left == 0 {
            let (count, _) = *self.entries.get(self.at)?;
            self.left = count;
            self.at += 1;
        }
        self.left -= 1;
        Some(self.entries[self.at - 1].1)
    }
}

/// A plain MP4 track's samples in decode order, read lazily from its sample
/// tables (so memory is the tables themselves, whatever the file's length).
#[derive(Debug)]
struct SampleCursor {
    /// Its index among the reader's tracks.
    track: usize,
    count: u32,
    sizes: StszSamples,
    durations: Runs<u32>,
    compositions: Runs<i64>,
    /// The sync samples (1-based, ascending); `None`: every sample is one.
    syncs: Option<Vec<u32>>,
    sync_at: usize,
    chunk_offsets: Vec<u64>,
    chunk_runs: Vec<StscEntry>,
    run_at: usize,
    /// The chunk being read (0-based) and the samples left in it.
    chunk: Option<usize>,
    left_in_chunk: u32,
    /// The next sample's number (0-based), place and decode time.
    number: u32,
    offset: u64,
    decode: u64,
    peeked: Option<Sample>,
}

impl SampleCursor {
    fn new(track: usize, stbl: Stbl, file_len: u64) -> Result<Self, ()> {
        let count = match &stbl.stsz.samples {
            StszSamples::Different { sizes } => sizes.len() as u32,
            // More samples than the file has bytes cannot all be in it (a
            // size of 0 is read as a table of sizes, never as this).
            StszSamples::Identical { count, size } => {
                (*count).min((file_len / u64::from((*size).max(1))) as u32)
            }
        };
        let chunk_offsets = match (stbl.co64, stbl.stco) {
            (Some(co64), _) => co64.entries,
            (None, Some(stco)) => stco.entries.into_iter().map(u64::from).collect(),
            (None, None) => Vec::new(),
        };
        let mut cursor = Self {
            track,
            count,
            sizes: stbl.stsz.samples,
            durations: Runs {
                entries: stbl
                    .stts
                    .entries
                    .iter()
                    .map(|e| (e.sample_count, e.sample_delta))
                    .collect(),
                ..Runs::default()
            },
            compositions: Runs {
                entries: stbl.ctts.map_or_else(Vec::new, |ctts| {
                    ctts.entries
                        .iter()
                        .map(|e| (e.sample_count, e.sample_offset))
                        .collect()
                }),
                ..Runs::default()
            },
            syncs: stbl.stss.map(|stss| stss.entries),
            sync_at: 0,
            chunk_offsets,
            chunk_runs: stbl.stsc.entries,
            run_at: 0,
            chunk: None,
            left_in_chunk: 0,
            number: 0,
            offset: 0,
            decode: 0,
            peeked: None,
        };
        cursor.peeked = cursor.read()?;
        Ok(cursor)
    }

    fn peek(&self) -> Option<&Sample> {
        self.peeked.as_ref()
    }

    /// Takes the peeked sample and reads the one after; `Err` when the
    /// tables do not agree.
    fn next(&mut self) -> Result<Sample, ()> {
        let sample = self.peeked.take().ok_or(())?;
        self.peeked = self.read()?;
        Ok(sample)
    }

    fn read(&mut self) -> Result<Option<Sample>, ()> {
        if self.number >= self.count {
            return Ok(None);
        }
        while self.left_in_chunk == 0 {
            let chunk = self.chunk.map_or(0, |c| c + 1);
            let Some(&offset) = self.chunk_offsets.get(chunk) else {
                return Err(());
            };
            // `first_chunk` is 1-based: the run in force is the last one
            // that starts at or before this chunk.
            while self
                .chunk_runs
                .get(self.run_at + 1)
                .is_some_and(|run| run.first_chunk as usize <= chunk + 1)
            {
                self.run_at += 1;
            }
            let run = self.chunk_runs.get(self.run_at).ok_or(())?;
            self.chunk = Some(chunk);
            self.left_in_chunk = run.samples_per_chunk;
            self.offset = offset;
        }
        let size = match &self.sizes {
            StszSamples::Identical { size, .. } => *size,
            StszSamples::Different { sizes } => sizes[self.number as usize],
        };
        let sync = match &self.syncs {
            None => true,
            Some(syncs) => {
                while syncs.get(self.sync_at).is_some_and(|&s| s <= self.number) {
                    self.sync_at += 1;
                }
                syncs.get(self.sync_at) == Some(&(self.number + 1))
            }
        };
        let sample = Sample {
            offset: self.offset,
            size,
            decode: self.decode,
            composition: self.compositions.next().unwrap_or(0),
            sync,
        };
        self.offset = self.offset.saturating_add(u64::from(size));
        self.decode = self
            .decode
            .saturating_add(u64::from(self.durations.next().unwrap_or(0)));
        self.left_in_chunk -= 1;
        self.number += 1;
        Ok(Some(sample))
    }
}

/// The H.264, HEVC and AAC tracks of a `moov`, and where their samples are.
fn tracks(moov: Moov, file_len: u64) -> Result<(Vec<Track>, Layout), Mp4ReadError> {
    let bad = |e: mp4_atom::Error| Mp4ReadError::Box(e.to_string());
    let movie_timescale = u64::from(moov.mvhd.timescale.max(1));
    let trex = moov.mvex.as_ref().map(|mvex| mvex.trex.clone());
    let mut tracks = Vec::new();
    let mut tables = Vec::new();
    for trak in moov.trak {
        let id = trak.tkhd.track_id;
        let Some(codec) = trak.mdia.minf.stbl.stsd.codecs.first() else {
            continue;
        };
        let mut record = Vec::new();
        let (kind, header) = match codec {
            Codec::Avc1(avc1) => {
                avc1.avcc.encode_body(&mut record).map_err(bad)?;
                let mut body = vec![0x10 | CODEC_AVC, 0, 0, 0, 0];
                body.extend_from_slice(&record);
                (Kind::H264, (MediaKind::Video, body))
            }
            Codec::Hvc1(hvc1) => {
                hvc1.hvcc.encode_body(&mut record).map_err(bad)?;
                // Enhanced RTMP: keyframe | SequenceStart, then the FourCC.
                let mut body = vec![0x90];
                body.extend_from_slice(b"hvc1");
                body.extend_from_slice(&record);
                (Kind::Hevc, (MediaKind::Video, body))
            }
            Codec::Mp4a(mp4a) => {
                let Some(specific) = mp4a.esds.es_desc.dec_config.dec_specific.as_ref() else {
                    continue;
                };
                let config = if specific.raw.is_empty() {
                    flv::aac_audio_specific_config(
                        specific.profile,
                        specific.freq_index,
                        specific.chan_conf,
                    )
                    .to_vec()
                } else {
                    specific.raw.clone()
                };
                let mut body = vec![(SOUND_AAC << 4) | 0x0f, 0];
                body.extend_from_slice(&config);
                (Kind::Aac, (MediaKind::Audio, body))
            }
            _ => continue,
        };
        let timescale = u64::from(trak.mdia.mdhd.timescale.max(1));
        let trex = trex
            .as_ref()
            .and_then(|trex| trex.iter().find(|t| t.track_id == id));
        tracks.push(Track {
            id,
            kind,
            timescale,
            offset_ms: edit_offset_ms(trak.edts.as_ref(), movie_timescale, timescale),
            header: MediaMessage::new(header.0, 0, Bytes::from(header.1)),
            default_duration: trex.map_or(0, |t| t.default_sample_duration),
            default_size: trex.map_or(0, |t| t.default_sample_size),
            default_flags: trex.map_or(0, |t| t.default_sample_flags),
        });
        tables.push(trak.mdia.minf.stbl);
    }
    if tracks.is_empty() {
        return Err(Mp4ReadError::NoTrack);
    }
    // One shift for every track keeps the earliest time at 0 or more.
    let shift = tracks.iter().map(|t| t.offset_ms).min().unwrap_or(0).min(0);
    for track in &mut tracks {
        track.offset_ms -= shift;
    }
    if trex.is_some() {
        return Ok((tracks, Layout::Fragmented));
    }
    let cursors = tables
        .into_iter()
        .enumerate()
        .map(|(index, stbl)| {
            SampleCursor::new(index, stbl, file_len)
                .map_err(|()| Mp4ReadError::BadTables(tracks[index].id))
        })
        .collect::<Result<_, _>>()?;
    Ok((tracks, Layout::Plain(cursors)))
}

/// Where a track's edit list puts its media time 0 on the movie's timeline,
/// in ms: empty edits delay it, the first media edit's start is skipped.
fn edit_offset_ms(edts: Option<&mp4_atom::Edts>, movie_timescale: u64, timescale: u64) -> i64 {
    let Some(elst) = edts.and_then(|edts| edts.elst.as_ref()) else {
        return 0;
    };
    let mut delay_ms = 0i64;
    for entry in &elst.entries {
        let ms = |time: u64, scale: u64| to_ms(i128::from(time), scale);
        match entry.media_time {
            None => delay_ms = delay_ms.saturating_add(ms(entry.segment_duration, movie_timescale)),
            Some(start) => return delay_ms.saturating_sub(ms(start, timescale)),
        }
    }
    delay_ms
}

/// `time` in `timescale` units as ms, clamped to what an `i64` holds.
fn to_ms(time: i128, timescale: u64) -> i64 {
    (time * 1000 / i128::from(timescale.max(1))).clamp(i128::from(i64::MIN), i128::from(i64::MAX))
        as i64
}

/// One sample as an FLV message of its track's codec.
fn frame(track: &Track, timestamp: u64, composition: i32, sync: bool, data: &[u8]) -> MediaMessage {
    let cts = composition.to_be_bytes();
    let mut body = Vec::with_capacity(data.len() + 8);
    let kind = match track.kind {
        Kind::H264 => {
            body.extend_from_slice(&[if sync { 0x17 } else { 0x27 }, 1, cts[1], cts[2], cts[3]]);
            MediaKind::Video
        }
        Kind::Hevc => {
            // Enhanced RTMP: frame type | CodedFrames, FourCC, composition time.
            body.push(0x80 | if sync { 0x10 } else { 0x20 } | 1);
            body.extend_from_slice(b"hvc1");
            body.extend_from_slice(&cts[1..]);
            MediaKind::Video
        }
        Kind::Aac => {
            body.extend_from_slice(&[(SOUND_AAC << 4) | 0x0f, 1]);
            MediaKind::Audio
        }
    };
    body.extend_from_slice(data);
    MediaMessage::new(kind, timestamp, Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::segmenter::tests::{files, run, show};
    use crate::segmenter::{Format, Segmenter};

    #[test]
    fn a_recording_reads_back_as_the_frames_that_were_recorded() {
        let sent = show(4, 2000);
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut steps = run(&mut segmenter, &sent);
        segmenter.finish(&mut steps);
        let file = files(&steps).remove(0);
        let mut reader = Mp4Reader::open(Cursor::new(file)).unwrap();
        assert_eq!(reader.codecs(), (Some("h264"), Some("aac")));
        let headers = reader.headers();
        assert_eq!(headers.len(), 2);
        assert!(headers.iter().all(|h| h.sequence_header));
        assert_eq!(
            &headers[0].payload[..],
            &sent[0].payload[..],
            "the same AVC record"
        );
        assert_eq!(
            &headers[1].payload[..],
            &sent[1].payload[..],
            "the same AudioSpecificConfig"
        );
        let mut read = Vec::new();
        while let Some(fragment) = reader.next_fragment(true).unwrap() {
            read.extend(fragment);
        }
        // The recording starts at the first keyframe; at one timestamp, the
        // reader puts video first (as FLV files do).
        let first_key = sent.iter().position(|m| m.keyframe).unwrap();
        let mut frames: Vec<&MediaMessage> = sent[first_key..]
            .iter()
            .filter(|m| !m.sequence_header)
            .collect();
        frames.sort_by_key(|m| (m.timestamp, m.kind != MediaKind::Video));
        assert_eq!(read.len(), frames.len());
        for (got, want) in read.iter().zip(&frames) {
            assert_eq!(
                (got.kind, got.timestamp, got.keyframe),
                (want.kind, want.timestamp, want.keyframe)
            );
            assert_eq!(&got.payload[..], &want.payload[..]);
        }
    }

    #[test]
    fn a_run_of_four_billion_empty_samples_is_refused_not_read() {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let mut steps = run(&mut segmenter, &show(3, 1000));
        segmenter.finish(&mut steps);
        let file = files(&steps).remove(0);
        let mut reader = Mp4Reader::open(Cursor::new(file.clone())).unwrap();
        let moov_end = reader.at as usize;
        let mut hostile = file[..moov_end].to_vec();
        let moof = Moof {
            mfhd: mp4_atom::Mfhd { sequence_number: 1 },
            traf: vec![mp4_atom::Traf {
                tfhd: mp4_atom::Tfhd {
                    track_id: 1,
                    default_sample_size: Some(0),
                    ..Default::default()
                },
                trun: vec![mp4_atom::Trun {
                    data_offset: None,
                    samples: mp4_atom::TrunSamples::Inherited {
                        count: u32::MAX,
                        first_flags: None,
                    },
                }],
                ..Default::default()
            }],
        };
        mp4_atom::Encode::encode(&moof, &mut hostile).unwrap();
        reader = Mp4Reader::open(Cursor::new(hostile)).unwrap();
        assert!(matches!(
            reader.next_fragment(false),
            Err(Mp4ReadError::TooLarge("trun"))
        ));
    }

    /// A plain MP4 (no `mvex`) whose first track's sample sizes are `sizes`
    /// and chunk offsets `chunks`: a recording's `moov`, re-tabled.
    fn plain_file(sizes: StszSamples, chunks: Vec<u32>) -> Vec<u8> {
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let steps = run(&mut segmenter, &show(2, 1000));
        let file = files(&steps).remove(0);
        let reader = Mp4Reader::open(Cursor::new(file.clone())).unwrap();
        let moov_start = file.windows(4).position(|w| w == b"moov").unwrap() - 4;
        let mut moov = Moov::decode(&mut &file[moov_start..reader.at as usize]).unwrap();
        moov.mvex = None;
        moov.trak.truncate(1);
        let stbl = &mut moov.trak[0].mdia.minf.stbl;
        stbl.stsz.samples = sizes;
        stbl.stts.entries = vec![mp4_atom::SttsEntry {
            sample_count: u32::MAX,
            sample_delta: 40,
        }];
        stbl.stsc.entries = vec![StscEntry {
            first_chunk: 1,
            samples_per_chunk: u32::MAX,
            sample_description_index: 1,
        }];
        stbl.stco = Some(mp4_atom::Stco { entries: chunks });
        let mut plain = file[..moov_start].to_vec();
        mp4_atom::Encode::encode(&moov, &mut plain).unwrap();
        plain.extend_from_slice(&[0u8; 64]);
        plain
    }

    #[test]
    fn plain_sample_tables_that_claim_more_than_the_file_holds_are_bounded() {
        // Four billion one-byte samples: no more are read than the file has
        // bytes, and those past its end end the file.
        let many = plain_file(
            StszSamples::Identical {
                count: u32::MAX,
                size: 1,
            },
            vec![0],
        );
        let len = many.len();
        let mut reader = Mp4Reader::open(Cursor::new(many)).unwrap();
        let mut frames = 0;
        while let Some(batch) = reader.next_fragment(false).unwrap() {
            assert!(batch.len() <= BATCH_FRAMES);
            frames += batch.len();
        }
        assert_eq!(frames, len, "one frame per byte of the file");
        // Samples but no chunk to hold them.
        let unplaced = plain_file(StszSamples::Different { sizes: vec![10; 5] }, vec![]);
        assert!(matches!(
            Mp4Reader::open(Cursor::new(unplaced)),
            Err(Mp4ReadError::BadTables(_))
        ));
    }

    #[test]
    fn files_it_cannot_play_are_named() {
        let plain = b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00\x00\x00\x00\x08free".to_vec();
        assert!(matches!(
            Mp4Reader::open(Cursor::new(plain)),
            Err(Mp4ReadError::NoMoov)
        ));
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let steps = run(&mut segmenter, &show(3, 1000));
        let mut file = files(&steps).remove(0);
        // Cut inside its last fragment: what came before still reads.
        file.truncate(file.len() - 10);
        let mut reader = Mp4Reader::open(Cursor::new(file)).unwrap();
        let mut frames = 0;
        while let Some(fragment) = reader.next_fragment(true).unwrap() {
            frames += fragment.len();
        }
        assert!(frames > 25, "{frames} frames before the cut");
    }
}
