//! Fragmented MP4 (ISO/IEC 14496-12), written as it goes: an init segment
//! (`ftyp` + `moov` with empty sample tables) when a file starts, then one
//! `moof` + `mdat` per fragment, each complete on its own, so a file cut
//! anywhere keeps every fragment before the cut playable. A file closed
//! cleanly ends with an `mfra` index, whose presence says it is complete.
//!
//! The boxes are mp4-atom's (a maintained ISO-BMFF reader and writer, the
//! one moq-rs builds on): Prism decides what goes in them and where the
//! samples' bytes lie; the samples themselves are never copied here, only
//! referenced in the order the `mdat` holds them.

use bytes::Bytes;
use mp4_atom::{
    Atom, Audio, Avc1, Avcc, Dinf, Dref, Encode, Esds, FourCC, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd, Mdia,
    Mfhd, Mfra, Mfro, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts,
    Tfdt, Tfhd, Tfra, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::sample::VideoCodec;

/// Every track counts time in milliseconds: the unit of RTMP's timestamps,
/// so no conversion rounds.
pub const TIMESCALE: u32 = 1000;

/// Sample flags (ISO/IEC 14496-12 8.8.3.1): a sync sample depends on no
/// other; a non-sync one depends on others and is not a sync sample.
pub(crate) const SYNC_SAMPLE: u32 = 0x0200_0000;
pub(crate) const NON_SYNC_SAMPLE: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    /// The encoder's video configuration record does not parse.
    #[error("the {codec} decoder configuration does not parse: {source}")]
    VideoConfig {
        codec: &'static str,
        source: mp4_atom::Error,
    },
    /// The encoder's AudioSpecificConfig is not one MP4 can carry.
    #[error("the AAC AudioSpecificConfig does not parse")]
    AudioConfig,
    #[error("cannot write the MP4 boxes: {0}")]
    Encode(#[from] mp4_atom::Error),
}

/// The video track of a file: its codec and decoder configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VideoTrack {
    pub codec: VideoCodec,
    /// The AVC or HEVC decoder configuration record, as the encoder sent it.
    pub record: Bytes,
}

/// The audio track of a file: AAC with its AudioSpecificConfig.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AudioTrack {
    pub config: Bytes,
}

/// The tracks a file holds, fixed for its life: a new configuration starts
/// a new file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracks {
    pub video: Option<VideoTrack>,
    pub audio: Option<AudioTrack>,
}

impl Tracks {
    pub fn video_id(&self) -> Option<u32> {
        self.video.as_ref().map(|_| 1)
    }

    /// The codecs as Media Source Extensions name them (RFC 6381):
    /// `avc1.64001f,mp4a.40.2`.
    pub fn codecs(&self) -> String {
        let mut codecs = Vec::new();
        if let Some(video) = &self.video {
            let record = video.record.as_ref();
            codecs.push(match video.codec {
                // AVCDecoderConfigurationRecord: profile, compatibility, level.
                VideoCodec::H264 => match record.get(1..4) {
                    Some(p) => format!("avc1.{:02x}{:02x}{:02x}", p[0], p[1], p[2]),
                    None => "avc1".into(),
                },
                // HEVCDecoderConfigurationRecord: profile space, tier and
                // profile in byte 1, the level in byte 12.
                VideoCodec::Hevc => match (record.get(1), record.get(12)) {
                    (Some(&b), Some(&level)) => format!(
                        "hvc1.{}.4.{}{level}.B0",
                        b & 0x1f,
                        if b & 0x20 != 0 { 'H' } else { 'L' }
                    ),
                    _ => "hvc1".into(),
                },
            });
        }
        if let Some(audio) = &self.audio {
            let object_type = audio.config.first().map_or(2, |b| b >> 3);
            codecs.push(format!("mp4a.40.{object_type}"));
        }
        codecs.join(",")
    }

    pub fn audio_id(&self) -> Option<u32> {
        self.audio
            .as_ref()
            .map(|_| if self.video.is_some() { 2 } else { 1 })
    }
}

/// One sample of a run: its bytes (where they lie is the run's business),
/// duration and composition offset in ms, and whether a decoder can start
/// at it.
#[derive(Clone, Debug)]
pub struct SampleEntry {
    pub data: Bytes,
    pub duration: u32,
    pub composition: i32,
    pub sync: bool,
}

/// The samples of one track in one fragment.
#[derive(Clone, Debug)]
pub struct TrackRun {
    pub track_id: u32,
    /// The decode time of the first sample, ms on the session's timeline.
    pub base_decode_ms: u64,
    pub samples: Vec<SampleEntry>,
}

/// `ftyp` + `moov`: what a player reads before any fragment.
pub fn init_segment(tracks: &Tracks) -> Result<Vec<u8>, MuxError> {
    let mut traks = Vec::new();
    let mut trex = Vec::new();
    if let (Some(video), Some(id)) = (&tracks.video, tracks.video_id()) {
        traks.push(video_trak(video, id)?);
        trex.push(default_trex(id));
    }
    if let (Some(audio), Some(id)) = (&tracks.audio, tracks.audio_id()) {
        traks.push(audio_trak(audio, id)?);
        trex.push(default_trex(id));
    }
    let moov = Moov {
        mvhd: Mvhd {
            timescale: TIMESCALE,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: traks.len() as u32 + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak: traks,
        ..Default::default()
    };
    let ftyp = Ftyp {
        major_brand: FourCC::new(b"iso6"),
        minor_version: 0,
        compatible_brands: vec![
            FourCC::new(b"iso6"),
            FourCC::new(b"mp41"),
            FourCC::new(b"dash"),
        ],
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(out)
}

fn default_trex(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        default_sample_duration: 0,
        default_sample_size: 0,
        default_sample_flags: 0,
    }
}

fn track(id: u32, handler: &[u8; 4], name: &str, minf: Minf, tkhd: Tkhd) -> Trak {
    Trak {
        tkhd: Tkhd {
            track_id: id,
            enabled: true,
            in_movie: true,
            ..tkhd
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale: TIMESCALE,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: FourCC::new(handler),
                name: name.into(),
            },
            minf,
        },
        ..Default::default()
    }
}

fn empty_tables(codec: mp4_atom::Codec) -> Stbl {
    Stbl {
        stsd: Stsd {
            codecs: vec![codec],
        },
        stts: Stts::default(),
        stsc: Stsc::default(),
        stsz: Stsz::default(),
        stco: Some(Stco::default()),
        ..Default::default()
    }
}

fn data_information() -> Dinf {
    Dinf {
        dref: Dref {
            entries: vec![Url::default().into()],
        },
    }
}

fn video_trak(video: &VideoTrack, id: u32) -> Result<Trak, MuxError> {
    let bad = |source| MuxError::VideoConfig {
        codec: video.codec.as_str(),
        source,
    };
    let (codec, (width, height)) = match video.codec {
        VideoCodec::H264 => {
            let avcc = Avcc::decode_body(&mut video.record.as_ref()).map_err(bad)?;
            let size = avcc
                .sequence_parameter_sets
                .first()
                .and_then(|sps| prism_media::h264::sps_dimensions(sps))
                .unwrap_or((0, 0));
            let visual = visual(size);
            let codec = Avc1 {
                visual,
                avcc,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            };
            (codec.into(), size)
        }
        VideoCodec::Hevc => {
            let hvcc = Hvcc::decode_body(&mut video.record.as_ref()).map_err(bad)?;
            let size = hvcc
                .arrays
                .iter()
                .filter(|array| array.nal_unit_type == 33)
                .flat_map(|array| array.nalus.first())
                .find_map(|sps| prism_media::hevc::parse_sps(sps))
                .map_or((0, 0), |info| (info.width, info.height));
            let codec = Hvc1 {
                visual: visual(size),
                hvcc,
                lhvc: None,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                ccst: None,
                spatial: None,
            };
            (codec.into(), size)
        }
    };
    let minf = Minf {
        vmhd: Some(Vmhd::default()),
        dinf: data_information(),
        stbl: empty_tables(codec),
        ..Default::default()
    };
    let tkhd = Tkhd {
        width: (width.min(u16::MAX as u32) as u16).into(),
        height: (height.min(u16::MAX as u32) as u16).into(),
        ..Default::default()
    };
    Ok(track(id, b"vide", "Prism video", minf, tkhd))
}

fn visual((width, height): (u32, u32)) -> Visual {
    Visual {
        data_reference_index: 1,
        width: width.min(u16::MAX as u32) as u16,
        height: height.min(u16::MAX as u32) as u16,
        ..Default::default()
    }
}

fn audio_trak(audio: &AudioTrack, id: u32) -> Result<Trak, MuxError> {
    let aac = prism_media::aac::AacConfig::from_audio_specific_config(&audio.config)
        .ok_or(MuxError::AudioConfig)?;
    let esds = Esds {
        es_desc: mp4_atom::esds::EsDescriptor {
            es_id: id as u16,
            depends_on_es_id: None,
            url: None,
            ocr_es_id: None,
            stream_priority: 0,
            dec_config: mp4_atom::esds::DecoderConfig {
                // MPEG-4 audio, an audio stream.
                object_type_indication: 0x40,
                stream_type: 5,
                dec_specific: Some(mp4_atom::esds::DecoderSpecific {
                    profile: aac.object_type,
                    freq_index: aac.sample_rate_index,
                    chan_conf: aac.channels,
                    raw: audio.config.to_vec(),
                }),
                ..Default::default()
            },
            sl_config: mp4_atom::esds::SLConfig {},
        },
    };
    let codec = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(aac.channels.max(1)),
            sample_size: 16,
            sample_rate: (aac.sample_rate().min(u16::MAX as u32) as u16).into(),
        },
        esds,
        btrt: None,
        taic: None,
    };
    let minf = Minf {
        smhd: Some(Smhd::default()),
        dinf: data_information(),
        stbl: empty_tables(codec.into()),
        ..Default::default()
    };
    let tkhd = Tkhd {
        alternate_group: 1,
        volume: 1.into(),
        ..Default::default()
    };
    Ok(track(id, b"soun", "Prism audio", minf, tkhd))
}

/// `moof` and the `mdat` header of one fragment; the `mdat`'s body is the
/// runs' samples, in order, which the caller writes after it.
pub fn fragment(sequence: u32, runs: &[TrackRun]) -> Result<Vec<u8>, MuxError> {
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: runs.iter().map(traf).collect(),
    };
    // The data offsets depend on the moof's own size, which does not depend
    // on their values: write once to measure, then with the offsets.
    let mut out = Vec::with_capacity(256);
    moof.encode(&mut out)?;
    let mut offset = out.len() as u64 + 8;
    for (traf, run) in moof.traf.iter_mut().zip(runs) {
        for trun in &mut traf.trun {
            trun.data_offset = Some(i32::try_from(offset).unwrap_or(i32::MAX));
        }
        offset += run.samples.iter().map(|s| s.data.len() as u64).sum::<u64>();
    }
    out.clear();
    moof.encode(&mut out)?;
    let mdat_len = offset - out.len() as u64;
    let mdat_len =
        u32::try_from(mdat_len).map_err(|_| mp4_atom::Error::TooLarge(FourCC::new(b"mdat")))?;
    out.extend_from_slice(&mdat_len.to_be_bytes());
    out.extend_from_slice(b"mdat");
    Ok(out)
}

fn traf(run: &TrackRun) -> Traf {
    let entries = run
        .samples
        .iter()
        .map(|sample| TrunEntry {
            duration: Some(sample.duration),
            size: Some(sample.data.len() as u32),
            flags: Some(if sample.sync {
                SYNC_SAMPLE
            } else {
                NON_SYNC_SAMPLE
            }),
            cts: Some(i64::from(sample.composition)),
        })
        .collect();
    Traf {
        tfhd: Tfhd {
            track_id: run.track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: run.base_decode_ms,
        }),
        trun: vec![Trun {
            data_offset: Some(0),
            samples: TrunSamples::Explicit(entries),
        }],
        ..Default::default()
    }
}

/// Where a fragment starts, for the closing index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentStart {
    pub decode_ms: u64,
    pub offset: u64,
}

/// The `mfra` that closes a complete file: where each fragment of
/// `track_id` starts, so a player seeks without reading them all.
pub fn random_access_index(
    track_id: u32,
    fragments: &[FragmentStart],
) -> Result<Vec<u8>, MuxError> {
    let mut mfra = Mfra {
        tfra: vec![Tfra {
            track_id,
            entries: fragments
                .iter()
                .map(|f| mp4_atom::FragmentInfo {
                    time: f.decode_ms,
                    moof_offset: f.offset,
                    traf_number: 1,
                    trun_number: 1,
                    sample_delta: 1,
                })
                .collect(),
        }],
        mfro: Mfro { parent_size: 0 },
    };
    let mut out = Vec::new();
    mfra.encode(&mut out)?;
    mfra.mfro.parent_size = out.len() as u32;
    out.clear();
    mfra.encode(&mut out)?;
    Ok(out)
}

/// Whether a file's last bytes are an `mfro` box that points back at an
/// `mfra` ending there: a file closed cleanly.
pub fn ends_with_index(tail: &[u8], file_len: u64) -> bool {
    let Some(mfro) = tail.len().checked_sub(16).map(|at| &tail[at..]) else {
        return false;
    };
    let size = u32::from_be_bytes([mfro[0], mfro[1], mfro[2], mfro[3]]);
    let parent = u32::from_be_bytes([mfro[12], mfro[13], mfro[14], mfro[15]]);
    size == 16 && &mfro[4..8] == b"mfro" && u64::from(parent) <= file_len && parent >= 16
}
