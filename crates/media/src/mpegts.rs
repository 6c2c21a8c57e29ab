//! FLV messages muxed into MPEG-TS (ISO/IEC 13818-1), for SRT destinations.
//!
//! Sans-IO: `TsMuxer::mux` turns one media message into whole 188-byte TS
//! packets. One muxer serves every SRT destination of a stream (the hub owns
//! it), so a message is muxed once and its TS bytes are shared like its FLV
//! payload. What a receiver needs to start anywhere is in the stream itself:
//! PAT and PMT before every keyframe (and twice a second without video),
//! SPS/PPS (VPS for HEVC) before every IDR, ADTS on every AAC frame, a PCR
//! on every PES of the PCR stream.
//!
//! Written here rather than taken from a crate: the TS writers on crates.io
//! (mpegts, xmpegts, libmpegts, mpeg-ts-core) are unmaintained, undocumented
//! or marked not for production, and none takes FLV/AVCC input. The layout
//! follows what ffmpeg's mpegts muxer produces (PIDs 0x1000/0x100/0x101).

use bytes::{BufMut, Bytes, BytesMut};

use crate::aac::AacConfig;
use crate::flv;
use crate::message::{MediaKind, MediaMessage};

pub const TS_PACKET_LEN: usize = 188;
/// TS packets per SRT datagram: 1316 bytes, what libsrt callers send.
pub const PACKETS_PER_DATAGRAM: usize = 7;
pub const DATAGRAM_LEN: usize = TS_PACKET_LEN * PACKETS_PER_DATAGRAM;

const PAT_PID: u16 = 0;
const PMT_PID: u16 = 0x1000;
const VIDEO_PID: u16 = 0x100;
const AUDIO_PID: u16 = 0x101;
const PROGRAM_NUMBER: u16 = 1;

const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_HEVC: u8 = 0x24;

/// DTS runs this far ahead of the PCR: the decoder buffer time of the
/// T-STD model (ffmpeg's default `muxdelay`), so a hardware decoder that
/// follows the PCR has a large keyframe whole before it must decode it.
/// Software receivers and platforms play by their own clocks; it adds no
/// latency there.
const DECODE_DELAY_90K: u64 = 700 * 90;

/// Without video, PAT and PMT are repeated this often (90 kHz ticks).
const PSI_INTERVAL_90K: u64 = 500 * 90;

/// 33-bit PTS/DTS/PCR base: timestamps wrap here, as receivers expect.
const TIMESTAMP_WRAP: u64 = 1 << 33;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VideoCodec {
    Avc,
    Hevc,
}

impl VideoCodec {
    fn stream_type(self) -> u8 {
        match self {
            VideoCodec::Avc => STREAM_TYPE_H264,
            VideoCodec::Hevc => STREAM_TYPE_HEVC,
        }
    }

    fn nal_type(self, unit: &[u8]) -> u8 {
        let first = unit.first().copied().unwrap_or(0);
        match self {
            VideoCodec::Avc => first & 0x1f,
            VideoCodec::Hevc => (first >> 1) & 0x3f,
        }
    }

    fn is_access_unit_delimiter(self, nal_type: u8) -> bool {
        match self {
            VideoCodec::Avc => nal_type == 9,
            VideoCodec::Hevc => nal_type == 35,
        }
    }

    fn is_parameter_set(self, nal_type: u8) -> bool {
        match self {
            VideoCodec::Avc => nal_type == 7 || nal_type == 8,
            VideoCodec::Hevc => (32..=34).contains(&nal_type),
        }
    }

    /// An access unit delimiter NAL unit, start code included.
    fn access_unit_delimiter(self) -> &'static [u8] {
        match self {
            VideoCodec::Avc => &[0, 0, 0, 1, 0x09, 0xf0],
            VideoCodec::Hevc => &[0, 0, 0, 1, 0x46, 0x01, 0x50],
        }
    }
}

/// What a video sequence header configured.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VideoConfig {
    codec: VideoCodec,
    /// Bytes in each NAL unit's length prefix (1, 2 or 4).
    length_size: usize,
    /// The parameter sets in Annex B form (start codes included), put
    /// before every IDR that does not carry its own.
    parameter_sets: Vec<u8>,
}

/// One video message, read from its FLV tag header.
enum VideoTag<'a> {
    SequenceHeader(VideoCodec, &'a [u8]),
    /// Length-prefixed NAL units; the composition time offset in ms.
    Frame(VideoCodec, i32, &'a [u8]),
    /// A codec this muxer does not carry (named for the warning).
    Uncarried(&'static str),
    /// Anything else (end of sequence, metadata, command frames,
    /// multitrack packets).
    Other,
}

/// Enhanced RTMP packet types that name their FourCC right after the
/// header byte and carry one track: sequence start, coded frames (with and
/// without composition time), sequence end.
const SINGLE_TRACK_PACKETS: std::ops::RangeInclusive<u8> = 0..=3;
/// FLV frame type 5: a video info or command frame, no picture.
const VIDEO_COMMAND_FRAME: u8 = 5;

fn read_video_tag(payload: &[u8]) -> VideoTag<'_> {
    let Some(&first) = payload.first() else {
        return VideoTag::Other;
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: ex header, FourCC, then per packet type.
        if !SINGLE_TRACK_PACKETS.contains(&(first & 0x0f)) {
            return VideoTag::Other;
        }
        let codec = match payload.get(1..5) {
            Some(b"avc1") => VideoCodec::Avc,
            Some(b"hvc1") => VideoCodec::Hevc,
            Some(_) => return uncarried_video(payload),
            None => return VideoTag::Other,
        };
        return match first & 0x0f {
            0 => VideoTag::SequenceHeader(codec, &payload[5..]),
            1 if payload.len() >= 8 => {
                VideoTag::Frame(codec, read_i24(&payload[5..8]), &payload[8..])
            }
            3 => VideoTag::Frame(codec, 0, &payload[5..]),
            _ => VideoTag::Other,
        };
    }
    let codec = match first & 0x0f {
        flv::CODEC_AVC => VideoCodec::Avc,
        12 => VideoCodec::Hevc,
        _ if first >> 4 == VIDEO_COMMAND_FRAME => return VideoTag::Other,
        _ => return uncarried_video(payload),
    };
    if payload.len() < 5 {
        return VideoTag::Other;
    }
    match payload[1] {
        0 => VideoTag::SequenceHeader(codec, &payload[5..]),
        1 => VideoTag::Frame(codec, read_i24(&payload[2..5]), &payload[5..]),
        _ => VideoTag::Other,
    }
}

fn uncarried_video(payload: &[u8]) -> VideoTag<'_> {
    VideoTag::Uncarried(flv::video_codec_name(payload).unwrap_or("unknown"))
}

/// One audio message, read from its FLV tag header.
enum AudioTag<'a> {
    /// An AudioSpecificConfig.
    AacConfig(&'a [u8]),
    /// One raw AAC frame.
    AacFrame(&'a [u8]),
    /// A codec this muxer does not carry (named for the warning).
    Uncarried(&'static str),
    /// Anything else (sequence end, multitrack and multichannel packets).
    Other,
}

fn read_audio_tag(payload: &[u8]) -> AudioTag<'_> {
    let Some(&first) = payload.first() else {
        return AudioTag::Other;
    };
    let uncarried = || AudioTag::Uncarried(flv::audio_codec_name(payload).unwrap_or("unknown"));
    match first >> 4 {
        flv::SOUND_AAC => match payload.get(1) {
            Some(0) => AudioTag::AacConfig(&payload[2..]),
            Some(1) => AudioTag::AacFrame(&payload[2..]),
            _ => AudioTag::Other,
        },
        // Enhanced RTMP: packet type, FourCC, body.
        flv::SOUND_EX_HEADER => {
            let packet_type = first & 0x0f;
            if !SINGLE_TRACK_PACKETS.contains(&packet_type) {
                return AudioTag::Other;
            }
            match (payload.get(1..5), packet_type) {
                (Some(b"mp4a"), 0) => AudioTag::AacConfig(&payload[5..]),
                (Some(b"mp4a"), 1) => AudioTag::AacFrame(&payload[5..]),
                (Some(b"mp4a"), _) | (None, _) => AudioTag::Other,
                (Some(_), _) => uncarried(),
            }
        }
        _ => uncarried(),
    }
}

/// A codec a stream uses that MPEG-TS, as Prism muxes it, does not carry:
/// its SRT destinations get nothing of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UncarriedCodec {
    pub kind: MediaKind,
    /// As `flv::video_codec_name` and `flv::audio_codec_name` name it.
    pub codec: &'static str,
}

impl std::fmt::Display for UncarriedCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
            MediaKind::Data => "data",
        };
        write!(f, "{} {kind}", self.codec)
    }
}

fn read_i24(bytes: &[u8]) -> i32 {
    let value = (i32::from(bytes[0]) << 16) | (i32::from(bytes[1]) << 8) | i32::from(bytes[2]);
    (value << 8) >> 8
}

/// Reads an AVCDecoderConfigurationRecord or HEVCDecoderConfigurationRecord
/// (ISO/IEC 14496-15) into Annex B parameter sets.
fn read_configuration_record(codec: VideoCodec, record: &[u8]) -> Option<VideoConfig> {
    let mut parameter_sets = Vec::new();
    let mut push = |unit: &[u8]| {
        parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
        parameter_sets.extend_from_slice(unit);
    };
    let length_size;
    match codec {
        VideoCodec::Avc => {
            length_size = usize::from(record.get(4)? & 0x03) + 1;
            let mut at = 5;
            for _ in 0..2 {
                // SPS count (low 5 bits), then PPS count.
                let count = usize::from(*record.get(at)?) & if at == 5 { 0x1f } else { 0xff };
                at += 1;
                for _ in 0..count {
                    let len =
                        usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
                    push(record.get(at + 2..at + 2 + len)?);
                    at += 2 + len;
                }
            }
        }
        VideoCodec::Hevc => {
            length_size = usize::from(record.get(21)? & 0x03) + 1;
            let arrays = *record.get(22)?;
            let mut at = 23;
            for _ in 0..arrays {
                at += 1; // array_completeness | NAL unit type
                let count = u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]);
                at += 2;
                for _ in 0..count {
                    let len =
                        usize::from(u16::from_be_bytes([*record.get(at)?, *record.get(at + 1)?]));
                    push(record.get(at + 2..at + 2 + len)?);
                    at += 2 + len;
                }
            }
        }
    }
    if length_size == 3 {
        return None;
    }
    Some(VideoConfig {
        codec,
        length_size,
        parameter_sets,
    })
}

/// Splits length-prefixed NAL units; stops at a length that overruns.
fn length_prefixed_units(data: &[u8], length_size: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.len() < length_size {
            return None;
        }
        let len = rest[..length_size]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        let unit = rest.get(length_size..length_size + len)?;
        rest = &rest[length_size + len..];
        Some(unit)
    })
}

/// Continuity counters and the program's layout.
#[derive(Debug, Default)]
pub struct TsMuxer {
    video: Option<VideoConfig>,
    audio: Option<AacConfig>,
    /// The stream types the last PMT announced, to bump its version when
    /// they change.
    announced: Option<(Option<u8>, Option<u8>)>,
    pmt_version: u8,
    /// When PAT and PMT were last written (90 kHz, unwrapped).
    last_psi: Option<u64>,
    continuity: [u8; 4],
    /// Reused for each PES, so muxing allocates only its output.
    pes: Vec<u8>,
    /// Codecs met that TS does not carry here: each is reported once.
    uncarried: Vec<UncarriedCodec>,
    /// Those not yet taken by `take_uncarried`, oldest first.
    unreported: Vec<UncarriedCodec>,
}

/// Index of each PID's continuity counter.
fn counter_index(pid: u16) -> usize {
    match pid {
        PAT_PID => 0,
        PMT_PID => 1,
        VIDEO_PID => 2,
        _ => 3,
    }
}

impl TsMuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// The TS packets for `message`: empty for messages that configure the
    /// muxer (sequence headers) or that TS does not carry (metadata, codecs
    /// other than H.264, HEVC and AAC, frames before their sequence header).
    pub fn mux(&mut self, message: &MediaMessage) -> Bytes {
        match message.kind {
            MediaKind::Video => self.mux_video(message),
            MediaKind::Audio => self.mux_audio(message),
            MediaKind::Data => Bytes::new(),
        }
    }

    /// A codec met since the last call that TS does not carry here, the
    /// first time it is met: for a warning that SRT destinations lack it.
    pub fn take_uncarried(&mut self) -> Option<UncarriedCodec> {
        (!self.unreported.is_empty()).then(|| self.unreported.remove(0))
    }

    fn note_uncarried(&mut self, kind: MediaKind, codec: &'static str) {
        let found = UncarriedCodec { kind, codec };
        if !self.uncarried.contains(&found) {
            self.uncarried.push(found);
            self.unreported.push(found);
        }
    }

    fn mux_video(&mut self, message: &MediaMessage) -> Bytes {
        let (codec, composition, data) = match read_video_tag(&message.payload) {
            VideoTag::SequenceHeader(codec, record) => {
                if let Some(config) = read_configuration_record(codec, record) {
                    self.video = Some(config);
                }
                return Bytes::new();
            }
            VideoTag::Frame(codec, composition, data) => (codec, composition, data),
            VideoTag::Uncarried(codec) => {
                self.note_uncarried(MediaKind::Video, codec);
                return Bytes::new();
            }
            VideoTag::Other => return Bytes::new(),
        };
        let Some(config) = self.video.as_ref().filter(|c| c.codec == codec) else {
            return Bytes::new();
        };
        let dts = message.timestamp * 90 + DECODE_DELAY_90K;
        let pts = dts.saturating_add_signed(i64::from(composition) * 90);
        let mut pes = std::mem::take(&mut self.pes);
        pes.clear();
        write_pes_header(&mut pes, 0xe0, 0, pts, Some(dts));
        let units = || length_prefixed_units(data, config.length_size);
        let first_type = units().next().map(|u| codec.nal_type(u));
        if !first_type.is_some_and(|t| codec.is_access_unit_delimiter(t)) {
            pes.extend_from_slice(codec.access_unit_delimiter());
        }
        let carries_parameter_sets = units().any(|u| codec.is_parameter_set(codec.nal_type(u)));
        let mut parameter_sets_written = !message.keyframe || carries_parameter_sets;
        for unit in units() {
            let nal_type = codec.nal_type(unit);
            if !parameter_sets_written && !codec.is_access_unit_delimiter(nal_type) {
                pes.extend_from_slice(&config.parameter_sets);
                parameter_sets_written = true;
            }
            pes.extend_from_slice(&[0, 0, 0, 1]);
            pes.extend_from_slice(unit);
        }
        let mut out = BytesMut::with_capacity(estimate(pes.len()) + 2 * TS_PACKET_LEN);
        if message.keyframe || self.psi_due(dts) {
            self.write_psi(&mut out, dts);
        }
        let pcr = Some(dts - DECODE_DELAY_90K);
        self.write_packets(&mut out, VIDEO_PID, &pes, pcr, message.keyframe);
        self.pes = pes;
        out.freeze()
    }

    fn mux_audio(&mut self, message: &MediaMessage) -> Bytes {
        let frame = match read_audio_tag(&message.payload) {
            AudioTag::AacFrame(frame) => frame,
            AudioTag::AacConfig(config) => {
                if let Some(config) = AacConfig::from_audio_specific_config(config) {
                    self.audio = Some(config);
                }
                return Bytes::new();
            }
            AudioTag::Uncarried(codec) => {
                self.note_uncarried(MediaKind::Audio, codec);
                return Bytes::new();
            }
            AudioTag::Other => return Bytes::new(),
        };
        let Some(header) = self.audio.and_then(|c| c.adts_header(frame.len())) else {
            return Bytes::new();
        };
        let pts = message.timestamp * 90 + DECODE_DELAY_90K;
        let mut pes = std::mem::take(&mut self.pes);
        pes.clear();
        let es_len = header.len() + frame.len();
        write_pes_header(&mut pes, 0xc0, es_len, pts, None);
        pes.extend_from_slice(&header);
        pes.extend_from_slice(frame);
        let mut out = BytesMut::with_capacity(estimate(pes.len()) + 2 * TS_PACKET_LEN);
        if self.psi_due(pts) {
            self.write_psi(&mut out, pts);
        }
        // Without video, the audio stream carries the PCR.
        let pcr = self.video.is_none().then(|| pts - DECODE_DELAY_90K);
        self.write_packets(&mut out, AUDIO_PID, &pes, pcr, false);
        self.pes = pes;
        out.freeze()
    }

    /// PAT and PMT are due: never written, the program changed, or (for a
    /// stream without video, whose receivers have no keyframe to start on)
    /// `PSI_INTERVAL_90K` has passed.
    fn psi_due(&self, now: u64) -> bool {
        let Some(last) = self.last_psi else {
            return true;
        };
        self.announced != Some(self.stream_types())
            || (self.video.is_none() && now.abs_diff(last) >= PSI_INTERVAL_90K)
    }

    fn stream_types(&self) -> (Option<u8>, Option<u8>) {
        (
            self.video.as_ref().map(|v| v.codec.stream_type()),
            self.audio.map(|_| STREAM_TYPE_AAC_ADTS),
        )
    }

    fn write_psi(&mut self, out: &mut BytesMut, now: u64) {
        let types = self.stream_types();
        if self.announced.is_some_and(|a| a != types) {
            self.pmt_version = (self.pmt_version + 1) & 0x1f;
        }
        self.announced = Some(types);
        self.last_psi = Some(now);

        // PAT: one program.
        let mut section = Vec::with_capacity(16);
        section.extend_from_slice(&[0x00, 0xb0, 0x00, 0x00, 0x01, 0xc1, 0x00, 0x00]);
        section.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        section.extend_from_slice(&(0xe000 | PMT_PID).to_be_bytes());
        finish_section(&mut section);
        self.write_section(out, PAT_PID, &section);

        // PMT: the program's elementary streams.
        let pcr_pid = if types.0.is_some() {
            VIDEO_PID
        } else {
            AUDIO_PID
        };
        let mut section = Vec::with_capacity(32);
        section.extend_from_slice(&[0x02, 0xb0, 0x00]);
        section.extend_from_slice(&PROGRAM_NUMBER.to_be_bytes());
        section.push(0xc1 | (self.pmt_version << 1));
        section.extend_from_slice(&[0x00, 0x00]);
        section.extend_from_slice(&(0xe000 | pcr_pid).to_be_bytes());
        section.extend_from_slice(&[0xf0, 0x00]); // no program descriptors
        let streams = [(types.0, VIDEO_PID), (types.1, AUDIO_PID)];
        for (stream_type, pid) in streams {
            if let Some(stream_type) = stream_type {
                section.push(stream_type);
                section.extend_from_slice(&(0xe000 | pid).to_be_bytes());
                section.extend_from_slice(&[0xf0, 0x00]);
            }
        }
        finish_section(&mut section);
        self.write_section(out, PMT_PID, &section);
    }

    /// One PSI section in one packet (pointer field 0, 0xff stuffing).
    fn write_section(&mut self, out: &mut BytesMut, pid: u16, section: &[u8]) {
        let counter = self.next_counter(pid);
        out.put_u8(0x47);
        out.put_u16(0x4000 | pid);
        out.put_u8(0x10 | counter);
        out.put_u8(0);
        out.put_slice(section);
        out.put_bytes(0xff, TS_PACKET_LEN - 5 - section.len());
    }

    fn next_counter(&mut self, pid: u16) -> u8 {
        let counter = &mut self.continuity[counter_index(pid)];
        let value = *counter;
        *counter = (value + 1) & 0x0f;
        value
    }

    /// Cuts one PES into packets: the first starts the unit and carries the
    /// PCR (and the random access flag on a keyframe); the last is filled
    /// with adaptation-field stuffing.
    fn write_packets(
        &mut self,
        out: &mut BytesMut,
        pid: u16,
        pes: &[u8],
        pcr: Option<u64>,
        random_access: bool,
    ) {
        let mut rest = pes;
        let mut first = true;
        while !rest.is_empty() {
            let pcr = pcr.filter(|_| first);
            let random_access = random_access && first;
            let fixed_field = if pcr.is_some() {
                8
            } else if random_access {
                2
            } else {
                0
            };
            let take = rest.len().min(TS_PACKET_LEN - 4 - fixed_field);
            let field = TS_PACKET_LEN - 4 - take;
            let counter = self.next_counter(pid);
            out.put_u8(0x47);
            out.put_u16(if first { 0x4000 } else { 0 } | pid);
            let control = if field > 0 { 0x30 } else { 0x10 };
            out.put_u8(control | counter);
            if field > 0 {
                out.put_u8((field - 1) as u8);
                if field > 1 {
                    let flags =
                        if random_access { 0x40 } else { 0 } | if pcr.is_some() { 0x10 } else { 0 };
                    out.put_u8(flags);
                    let mut written = 2;
                    if let Some(pcr) = pcr {
                        put_pcr(out, pcr);
                        written += 6;
                    }
                    out.put_bytes(0xff, field - written);
                }
            }
            out.put_slice(&rest[..take]);
            rest = &rest[take..];
            first = false;
        }
    }
}

/// TS bytes for a PES of `len` bytes (an upper bound).
fn estimate(len: usize) -> usize {
    (len / 176 + 1) * TS_PACKET_LEN
}

/// Writes a PES header. `es_len` 0 leaves the length unbounded (video).
fn write_pes_header(pes: &mut Vec<u8>, stream_id: u8, es_len: usize, pts: u64, dts: Option<u64>) {
    let header_data = if dts.is_some() { 10 } else { 5 };
    let packet_len = if es_len == 0 {
        0
    } else {
        es_len + 3 + header_data
    };
    let packet_len = if packet_len > usize::from(u16::MAX) {
        0
    } else {
        packet_len
    };
    pes.extend_from_slice(&[0, 0, 1, stream_id]);
    pes.extend_from_slice(&(packet_len as u16).to_be_bytes());
    pes.push(0x80); // marker bits, nothing scrambled
    pes.push(if dts.is_some() { 0xc0 } else { 0x80 });
    pes.push(header_data as u8);
    match dts {
        Some(dts) => {
            put_timestamp(pes, 0x3, pts);
            put_timestamp(pes, 0x1, dts);
        }
        None => put_timestamp(pes, 0x2, pts),
    }
}

fn put_timestamp(pes: &mut Vec<u8>, prefix: u8, ticks: u64) {
    let t = ticks % TIMESTAMP_WRAP;
    pes.extend_from_slice(&[
        (prefix << 4) | (((t >> 30) as u8 & 0x07) << 1) | 1,
        (t >> 22) as u8,
        (((t >> 15) as u8 & 0x7f) << 1) | 1,
        (t >> 7) as u8,
        ((t as u8 & 0x7f) << 1) | 1,
    ]);
}

fn put_pcr(out: &mut BytesMut, ticks: u64) {
    let base = ticks % TIMESTAMP_WRAP;
    out.put_slice(&[
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        ((base as u8 & 1) << 7) | 0x7e,
        0,
    ]);
}

/// Fills in a PSI section's length and appends its CRC.
fn finish_section(section: &mut Vec<u8>) {
    let len = section.len() - 3 + 4;
    section[1] = 0xb0 | ((len >> 8) as u8 & 0x0f);
    section[2] = len as u8;
    let crc = crc32_mpeg2(section);
    section.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32/MPEG-2: polynomial 0x04c11db7, not reflected, no final xor.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = (i as u32) << 24;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 0x8000_0000 != 0 {
                    (crc << 1) ^ 0x04c1_1db7
                } else {
                    crc << 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    data.iter().fold(0xffff_ffff, |crc, &b| {
        (crc << 8) ^ TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: MediaKind, timestamp: u64, payload: &[u8]) -> MediaMessage {
        MediaMessage::new(kind, timestamp, Bytes::copy_from_slice(payload))
    }

    fn avc_sequence_header() -> Vec<u8> {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend(flv::avc_decoder_configuration_record(&sps, &pps).unwrap());
        tag
    }

    fn avc_frame(keyframe: bool, nal: &[u8]) -> Vec<u8> {
        let mut tag = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0x28];
        tag.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        tag.extend_from_slice(nal);
        tag
    }

    /// The payload bytes of every packet of `pid`, each unit from its start.
    fn packets_of(ts: &[u8], pid: u16) -> Vec<&[u8]> {
        ts.chunks(TS_PACKET_LEN)
            .filter(|p| (u16::from(p[1] & 0x1f) << 8 | u16::from(p[2])) == pid)
            .collect()
    }

    #[test]
    fn the_crc_is_mpeg2s() {
        // The CRC of a section with its CRC appended is 0.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
        let mut section = vec![0x00, 0xb0, 0, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0];
        finish_section(&mut section);
        assert_eq!(crc32_mpeg2(&section), 0);
    }

    #[test]
    fn a_keyframe_starts_with_tables_and_carries_its_parameter_sets() {
        let mut muxer = TsMuxer::new();
        assert!(muxer
            .mux(&message(MediaKind::Video, 0, &avc_sequence_header()))
            .is_empty());
        let ts = muxer.mux(&message(
            MediaKind::Video,
            40,
            &avc_frame(true, &[0x65, 1, 2, 3]),
        ));
        assert_eq!(ts.len() % TS_PACKET_LEN, 0);
        assert!(ts.chunks(TS_PACKET_LEN).all(|p| p[0] == 0x47));
        let pat = packets_of(&ts, PAT_PID);
        let pmt = packets_of(&ts, PMT_PID);
        assert_eq!((pat.len(), pmt.len()), (1, 1));
        assert_eq!(&ts[..TS_PACKET_LEN], pat[0], "PAT first");
        let video = packets_of(&ts, VIDEO_PID);
        // Random access and PCR flags on the unit's first packet.
        assert_eq!(video[0][3] & 0x30, 0x30);
        assert_eq!(video[0][5] & 0x50, 0x50);
        let payload: Vec<u8> = video[0][4 + 1 + usize::from(video[0][4])..].to_vec();
        // The PES: header, AUD, SPS, PPS, then the IDR slice.
        assert_eq!(&payload[..4], &[0, 0, 1, 0xe0]);
        let es = &payload[9 + usize::from(payload[8])..];
        let expected: Vec<u8> = [
            &[0, 0, 0, 1, 0x09, 0xf0][..],
            &[0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02],
            &[0, 0, 0, 1, 0x68, 0xce, 0x3c, 0x80],
            &[0, 0, 0, 1, 0x65, 1, 2, 3],
        ]
        .concat();
        assert_eq!(es, expected);
        // An inter frame: no tables, no parameter sets, counters advance.
        let ts = muxer.mux(&message(
            MediaKind::Video,
            80,
            &avc_frame(false, &[0x41, 9]),
        ));
        assert_eq!(ts.len(), TS_PACKET_LEN);
        assert_eq!(ts[3] & 0x0f, 1);
    }

    #[test]
    fn timestamps_carry_composition_offsets_and_wrap_at_33_bits() {
        let mut muxer = TsMuxer::new();
        muxer.mux(&message(MediaKind::Video, 0, &avc_sequence_header()));
        // 2^33 / 90 ms is about 26.5 hours; a show longer than that wraps.
        let ms = (1u64 << 33) / 90 + 10;
        let ts = muxer.mux(&message(MediaKind::Video, ms, &avc_frame(true, &[0x65, 0])));
        let video = packets_of(&ts, VIDEO_PID)[0];
        let pes = &video[4 + 1 + usize::from(video[4])..];
        let read = |b: &[u8]| {
            (u64::from(b[0] >> 1 & 7) << 30)
                | (u64::from(b[1]) << 22)
                | (u64::from(b[2] >> 1) << 15)
                | (u64::from(b[3]) << 7)
                | u64::from(b[4] >> 1)
        };
        let (pts, dts) = (read(&pes[9..14]), read(&pes[14..19]));
        let expected_dts = (ms * 90 + DECODE_DELAY_90K) % TIMESTAMP_WRAP;
        assert_eq!(dts, expected_dts);
        assert_eq!(pts, (expected_dts + 40 * 90) % TIMESTAMP_WRAP);
    }

    #[test]
    fn aac_gets_adts_and_audio_alone_repeats_the_tables() {
        let mut muxer = TsMuxer::new();
        let asc = flv::aac_audio_specific_config(2, 4, 2);
        assert!(muxer
            .mux(&message(MediaKind::Audio, 0, &[0xaf, 0, asc[0], asc[1]]))
            .is_empty());
        let first = muxer.mux(&message(MediaKind::Audio, 0, &[0xaf, 1, 0xde, 0xad]));
        assert_eq!(packets_of(&first, PMT_PID).len(), 1);
        let audio = packets_of(&first, AUDIO_PID)[0];
        let pes = &audio[4 + 1 + usize::from(audio[4])..];
        let adts = &pes[14..];
        assert_eq!(&adts[..2], &[0xff, 0xf1]);
        assert_eq!(&adts[7..], &[0xde, 0xad]);
        let soon = muxer.mux(&message(MediaKind::Audio, 100, &[0xaf, 1, 0]));
        assert!(packets_of(&soon, PMT_PID).is_empty());
        let later = muxer.mux(&message(MediaKind::Audio, 600, &[0xaf, 1, 0]));
        assert_eq!(packets_of(&later, PMT_PID).len(), 1);
    }

    /// Enhanced RTMP's `mp4a` is AAC: the same ADTS frames as the legacy tag.
    #[test]
    fn enhanced_aac_is_muxed_as_legacy_aac_is() {
        let asc = flv::aac_audio_specific_config(2, 4, 2);
        let mut legacy = TsMuxer::new();
        legacy.mux(&message(MediaKind::Audio, 0, &[0xaf, 0, asc[0], asc[1]]));
        let expected = legacy.mux(&message(MediaKind::Audio, 20, &[0xaf, 1, 0xde, 0xad]));
        let mut enhanced = TsMuxer::new();
        let start = [0x90, b'm', b'p', b'4', b'a', asc[0], asc[1]];
        assert!(enhanced
            .mux(&message(MediaKind::Audio, 0, &start))
            .is_empty());
        let frame = [0x91, b'm', b'p', b'4', b'a', 0xde, 0xad];
        assert_eq!(
            enhanced.mux(&message(MediaKind::Audio, 20, &frame)),
            expected
        );
        assert_eq!(enhanced.take_uncarried(), None);
    }

    /// MP3 audio, Sorenson or VP6 video, enhanced Opus: nothing muxed, and
    /// each codec reported once; command frames and multitrack packets are
    /// not codecs.
    #[test]
    fn codecs_ts_does_not_carry_are_reported_once() {
        let mut muxer = TsMuxer::new();
        let mp3 = [0x2f, 0xff, 0xfb, 0x90, 0x64];
        assert!(muxer.mux(&message(MediaKind::Audio, 0, &mp3)).is_empty());
        assert_eq!(
            muxer.take_uncarried(),
            Some(UncarriedCodec {
                kind: MediaKind::Audio,
                codec: "mp3"
            })
        );
        muxer.mux(&message(MediaKind::Audio, 26, &mp3));
        assert_eq!(muxer.take_uncarried(), None);
        let sorenson = [0x12, 0, 0, 0x84, 0];
        assert!(muxer
            .mux(&message(MediaKind::Video, 0, &sorenson))
            .is_empty());
        let found = muxer.take_uncarried().unwrap();
        assert_eq!(found.to_string(), "sorenson-h263 video");
        muxer.mux(&message(MediaKind::Video, 0, &[0x14, 0, 0]));
        assert_eq!(muxer.take_uncarried().unwrap().codec, "vp6");
        let opus = [0x91, b'O', b'p', b'u', b's', 0xfc];
        muxer.mux(&message(MediaKind::Audio, 0, &opus));
        assert_eq!(muxer.take_uncarried().unwrap().codec, "opus");
        // Two met before anyone asks: both are told, in order.
        let mut fresh = TsMuxer::new();
        fresh.mux(&message(MediaKind::Audio, 0, &mp3));
        fresh.mux(&message(MediaKind::Video, 0, &sorenson));
        assert_eq!(fresh.take_uncarried().unwrap().codec, "mp3");
        assert_eq!(fresh.take_uncarried().unwrap().codec, "sorenson-h263");
        assert_eq!(fresh.take_uncarried(), None);
        // A video command frame, a multitrack packet: nothing to report.
        muxer.mux(&message(MediaKind::Video, 0, &[0x52, 0]));
        muxer.mux(&message(
            MediaKind::Video,
            0,
            &[0x96, 0x00, b'a', b'v', b'c', b'1'],
        ));
        muxer.mux(&message(
            MediaKind::Audio,
            0,
            &[0x95, 0x00, b'm', b'p', b'4', b'a'],
        ));
        assert_eq!(muxer.take_uncarried(), None);
    }

    #[test]
    fn frames_before_a_sequence_header_and_hostile_lengths_are_skipped() {
        let mut muxer = TsMuxer::new();
        assert!(muxer
            .mux(&message(MediaKind::Video, 0, &avc_frame(true, &[0x65])))
            .is_empty());
        muxer.mux(&message(MediaKind::Video, 0, &avc_sequence_header()));
        // A length prefix past the end: the units before it are kept.
        let mut tag = vec![0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 1];
        tag.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x41]);
        let ts = muxer.mux(&message(MediaKind::Video, 40, &tag));
        let video = packets_of(&ts, VIDEO_PID);
        assert_eq!(video.len(), 1);
        assert!(video[0].ends_with(&[0, 0, 0, 1, 0x41, 1]));
        // Truncated sequence headers configure nothing.
        let header = avc_sequence_header();
        for len in 0..header.len() {
            let mut fresh = TsMuxer::new();
            fresh.mux(&message(MediaKind::Video, 0, &header[..len]));
            let frame = fresh.mux(&message(MediaKind::Video, 0, &avc_frame(true, &[0x65])));
            assert!(frame.is_empty(), "{len}");
        }
    }

    #[test]
    fn enhanced_hevc_frames_are_muxed() {
        let vps = [0x40, 0x01, 0x0c];
        let sps = [0x42, 0x01, 0x01];
        let pps = [0x44, 0x01, 0xc1];
        let mut record = vec![1u8; 21];
        record.push(0x0f); // 4-byte lengths
        record.push(3);
        for (nal_type, unit) in [(32u8, &vps[..]), (33, &sps[..]), (34, &pps[..])] {
            record.push(nal_type);
            record.extend_from_slice(&1u16.to_be_bytes());
            record.extend_from_slice(&(unit.len() as u16).to_be_bytes());
            record.extend_from_slice(unit);
        }
        let mut header = vec![0x90, b'h', b'v', b'c', b'1'];
        header.extend(record);
        let mut muxer = TsMuxer::new();
        muxer.mux(&message(MediaKind::Video, 0, &header));
        // A keyframe as CodedFramesX: IDR_W_RADL (type 19).
        let mut frame = vec![0x93, b'h', b'v', b'c', b'1', 0, 0, 0, 3, 0x26, 0x01, 0xaf];
        let ts = muxer.mux(&message(MediaKind::Video, 0, &frame));
        let pmt = packets_of(&ts, PMT_PID)[0];
        assert!(pmt.windows(3).any(|w| w == [STREAM_TYPE_HEVC, 0xe1, 0x00]));
        let video = packets_of(&ts, VIDEO_PID)[0];
        assert!(
            video.windows(4).any(|w| w == [0, 1, 0x40, 0x01]),
            "VPS before the IDR"
        );
        frame[0] = 0xa3;
        assert_eq!(
            muxer.mux(&message(MediaKind::Video, 40, &frame)).len(),
            TS_PACKET_LEN
        );
    }
}
