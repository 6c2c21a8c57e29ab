//! Fragmented MP4 read back as FLV messages, fragment by fragment: a
//! recording Prism made (or any fMP4 of H.264, HEVC and AAC, such as
//! ffmpeg's `-movflags frag_keyframe`) played back into a stream. The
//! decoder configuration of each track becomes its sequence header, each
//! sample a frame with its composition time, on a millisecond timeline.
//!
//! Bounded: a `moov` or `moof` over 16 MiB, or a sample over 16 MiB, is an
//! error; samples are read one at a time where the `trun` says they lie.

use std::io::{Read, Seek, SeekFrom};

use bytes::Bytes;
use mp4_atom::{Atom, Codec, Decode, Moof, Moov};

use prism_media::flv::{self, MediaKind, CODEC_AVC, SOUND_AAC};
use prism_media::MediaMessage;

/// The largest `moov`, `moof` or sample read.
const MAX_BOX: u64 = 16 << 20;
/// Samples in one fragment: far more than minutes of video and audio; a
/// `trun` may declare four billion without a byte of data behind them.
const MAX_SAMPLES: usize = 1 << 20;
/// `sample_is_non_sync_sample`, in a sample's flags.
const NON_SYNC: u32 = 0x0001_0000;

#[derive(Debug, thiserror::Error)]
pub enum Fmp4ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("an MP4 file without fragments (remux it with ffmpeg -c copy -movflags frag_keyframe+empty_moov, or record as FLV)")]
    NotFragmented,
    #[error("no moov box before the first fragment")]
    NoMoov,
    #[error("a {0} box over 16 MiB")]
    TooLarge(&'static str),
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
    /// The FLV sequence header its configuration makes.
    header: MediaMessage,
    default_duration: u32,
    default_size: u32,
    default_flags: u32,
}

/// What a file holds.
#[derive(Debug)]
pub struct Fmp4Reader<R> {
    input: R,
    tracks: Vec<Track>,
    /// Where the next box starts.
    at: u64,
    len: u64,
}

impl<R: Read + Seek> Fmp4Reader<R> {
    /// Reads the file's `moov` (and the boxes before it).
    pub fn open(mut input: R) -> Result<Self, Fmp4ReadError> {
        let len = input.seek(SeekFrom::End(0))?;
        let mut reader = Self {
            input,
            tracks: Vec::new(),
            at: 0,
            len,
        };
        loop {
            let Some((kind, start, size)) = reader.next_box()? else {
                return Err(Fmp4ReadError::NoMoov);
            };
            match &kind {
                b"moov" => {
                    let body = reader.read_box(start, size, "moov")?;
                    let moov = Moov::decode(&mut &body[..])
                        .map_err(|e| Fmp4ReadError::Box(e.to_string()))?;
                    reader.tracks = tracks(&moov)?;
                    return Ok(reader);
                }
                b"moof" | b"mdat" => return Err(Fmp4ReadError::NoMoov),
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

    /// The next fragment's frames in decode order; `None` at the end. With
    /// `data` false only their times are read (the payloads are empty).
    pub fn next_fragment(
        &mut self,
        data: bool,
    ) -> Result<Option<Vec<MediaMessage>>, Fmp4ReadError> {
        loop {
            let Some((kind, start, size)) = self.next_box()? else {
                return Ok(None);
            };
            if &kind != b"moof" {
                continue;
            }
            let body = self.read_box(start, size, "moof")?;
            let moof =
                Moof::decode(&mut &body[..]).map_err(|e| Fmp4ReadError::Box(e.to_string()))?;
            let mut frames = Vec::new();
            for traf in &moof.traf {
                let Some(track) = self.tracks.iter().find(|t| t.id == traf.tfhd.track_id) else {
                    continue;
                };
                let base = traf.tfhd.base_data_offset.unwrap_or(start);
                let mut decode = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                for trun in &traf.trun {
                    if frames.len() + trun.samples.len() > MAX_SAMPLES {
                        return Err(Fmp4ReadError::TooLarge("trun"));
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
                        if at + u64::from(size) > self.len {
                            // Cut short (a crash mid-fragment): the file
                            // ends with the last whole sample.
                            self.at = self.len;
                            break;
                        }
                        let payload = if data {
                            if u64::from(size) > MAX_BOX {
                                return Err(Fmp4ReadError::TooLarge("sample"));
                            }
                            let mut sample = vec![0u8; size as usize];
                            self.input.seek(SeekFrom::Start(at))?;
                            self.input.read_exact(&mut sample)?;
                            sample
                        } else {
                            Vec::new()
                        };
                        let ms = |t: i64| t * 1000 / track.timescale as i64;
                        let timestamp = ms(decode as i64).max(0) as u64;
                        let composition = ms(entry.cts.unwrap_or(0)) as i32;
                        frames.push(frame(
                            track,
                            timestamp,
                            composition,
                            flags & NON_SYNC == 0,
                            &payload,
                        ));
                        at += u64::from(size);
                        decode += u64::from(duration);
                    }
                }
            }
            // Video before audio at the same time, as FLV files have it.
            frames.sort_by_key(|f| (f.timestamp, f.kind != MediaKind::Video));
            return Ok(Some(frames));
        }
    }

    /// The next box's type, start and size, and moves past it.
    fn next_box(&mut self) -> Result<Option<([u8; 4], u64, u64)>, Fmp4ReadError> {
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

    fn read_box(
        &mut self,
        start: u64,
        size: u64,
        what: &'static str,
    ) -> Result<Vec<u8>, Fmp4ReadError> {
        if size > MAX_BOX {
            return Err(Fmp4ReadError::TooLarge(what));
        }
        let mut body = vec![0u8; size as usize];
        self.input.seek(SeekFrom::Start(start))?;
        self.input.read_exact(&mut body)?;
        Ok(body)
    }
}

/// The H.264, HEVC and AAC tracks of a fragmented `moov`.
fn tracks(moov: &Moov) -> Result<Vec<Track>, Fmp4ReadError> {
    let mvex = moov.mvex.as_ref().ok_or(Fmp4ReadError::NotFragmented)?;
    let bad = |e: mp4_atom::Error| Fmp4ReadError::Box(e.to_string());
    let mut tracks = Vec::new();
    for trak in &moov.trak {
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
        let trex = mvex.trex.iter().find(|t| t.track_id == id);
        tracks.push(Track {
            id,
            kind,
            timescale: u64::from(trak.mdia.mdhd.timescale.max(1)),
            header: MediaMessage::new(header.0, 0, Bytes::from(header.1)),
            default_duration: trex.map_or(0, |t| t.default_sample_duration),
            default_size: trex.map_or(0, |t| t.default_sample_size),
            default_flags: trex.map_or(0, |t| t.default_sample_flags),
        });
    }
    if tracks.is_empty() {
        return Err(Fmp4ReadError::NoTrack);
    }
    Ok(tracks)
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
        let mut reader = Fmp4Reader::open(Cursor::new(file)).unwrap();
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
        let mut reader = Fmp4Reader::open(Cursor::new(file.clone())).unwrap();
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
        reader = Fmp4Reader::open(Cursor::new(hostile)).unwrap();
        assert!(matches!(
            reader.next_fragment(false),
            Err(Fmp4ReadError::TooLarge("trun"))
        ));
    }

    #[test]
    fn files_it_cannot_play_are_named() {
        let plain = b"\x00\x00\x00\x10ftypisom\x00\x00\x00\x00\x00\x00\x00\x08free".to_vec();
        assert!(matches!(
            Fmp4Reader::open(Cursor::new(plain)),
            Err(Fmp4ReadError::NoMoov)
        ));
        let mut segmenter = Segmenter::new(Format::Fmp4, 600_000);
        let steps = run(&mut segmenter, &show(3, 1000));
        let mut file = files(&steps).remove(0);
        // Cut inside its last fragment: what came before still reads.
        file.truncate(file.len() - 10);
        let mut reader = Fmp4Reader::open(Cursor::new(file)).unwrap();
        let mut frames = 0;
        while let Some(fragment) = reader.next_fragment(true).unwrap() {
            frames += fragment.len();
        }
        assert!(frames > 25, "{frames} frames before the cut");
    }
}
