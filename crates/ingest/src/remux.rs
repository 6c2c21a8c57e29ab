//! MPEG-TS elementary-stream frames → RTMP/FLV media messages, so an SRT
//! publish reaches destinations exactly like an RTMP one. Sans-IO.
//!
//! H.264 Annex B becomes AVCC with an AVCDecoderConfigurationRecord sequence
//! header (re-sent when the SPS/PPS change); AAC ADTS becomes raw frames with
//! an AudioSpecificConfig sequence header; PTS−DTS becomes the FLV
//! composition time; 33-bit 90 kHz timestamps are unwrapped onto one
//! millisecond timeline; onMetaData is synthesized. A frame that lost data
//! puts video on hold until the next keyframe: the broken pictures are
//! dropped, the session goes on.

use bytes::{BufMut, Bytes, BytesMut};
use prism_rtmp::amf0::{self, Value as Amf0Value};

use prism_media::flv::AMF0_SET_DATA_FRAME;
use prism_media::{MediaKind, MediaMessage};

use crate::ts::{EsCodec, EsFrame};
use prism_media::aac::{self, AacConfig};
use prism_media::{h264, hevc};

const WRAP: i64 = 1 << 33;
/// The timeline starts this far after the first frame's DTS, so a stream
/// whose other track begins slightly earlier never goes negative.
const ORIGIN_HEADROOM_90KHZ: i64 = 2 * 90_000;
/// Video frames over which the frame rate and bitrate are measured.
const MEASURE_FRAMES: u32 = 60;

/// What the remuxer dropped, for logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemuxStats {
    pub video_frames_dropped: u64,
    pub audio_frames_dropped: u64,
    /// Frames whose FLV message would not fit RTMP's 24-bit message length
    /// (a PES may hold 16 MiB): refused, never truncated. Also counted in
    /// `video_frames_dropped`; the video waits for the next keyframe.
    pub oversize_frames: u64,
}

/// RTMP's largest message: its length field has 24 bits.
pub const MAX_RTMP_MESSAGE: usize = 0xff_ffff;

#[derive(Default)]
pub struct Remuxer {
    /// Last unwrapped DTS (90 kHz), shared by every track.
    last_dts: Option<i64>,
    origin: i64,
    /// Parameter sets as last seen (VPS for HEVC only).
    vps: Option<Vec<u8>>,
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    video_codec: Option<EsCodec>,
    dimensions: Option<(u32, u32)>,
    /// No video is relayed until a keyframe (at start, and after loss).
    video_waiting: bool,
    video_started: bool,
    audio: Option<AacConfig>,
    measure: Measure,
    pub stats: RemuxStats,
}

#[derive(Default)]
struct Measure {
    first_dts: Option<i64>,
    frames: u32,
    bytes: u64,
    framerate: Option<f64>,
    video_kbps: Option<f64>,
}

impl Remuxer {
    pub fn new() -> Self {
        Self {
            video_waiting: true,
            ..Self::default()
        }
    }

    /// Remuxes one frame; appends the resulting messages to `out`.
    pub fn push(&mut self, frame: EsFrame, out: &mut Vec<MediaMessage>) {
        let dts = self.unwrap(frame.dts);
        let pts = dts + signed_33(frame.pts as i64 - frame.dts as i64);
        let timestamp = ((dts - self.origin).max(0) / 90) as u64;
        let composition_ms = ((pts - dts).max(0) / 90).min(0x7f_ffff) as u32;
        match frame.codec {
            EsCodec::H264 | EsCodec::Hevc => {
                self.push_video(&frame, timestamp, composition_ms, dts, out)
            }
            EsCodec::AacAdts => self.push_aac(&frame, timestamp, out),
        }
    }

    /// Places a 33-bit DTS on one 64-bit timeline: the candidate nearest the
    /// previous DTS, so a wrap (every 26.5 hours) continues smoothly.
    fn unwrap(&mut self, raw: u64) -> i64 {
        let raw = (raw as i64) & (WRAP - 1);
        let unwrapped = match self.last_dts {
            None => {
                self.origin = raw - ORIGIN_HEADROOM_90KHZ;
                raw
            }
            Some(last) => last + signed_33(raw - last.rem_euclid(WRAP)),
        };
        self.last_dts = Some(unwrapped);
        unwrapped
    }

    /// H.264 becomes legacy FLV AVC; HEVC becomes enhanced RTMP (`hvc1`).
    fn push_video(
        &mut self,
        frame: &EsFrame,
        timestamp: u64,
        composition_ms: u32,
        dts: i64,
        out: &mut Vec<MediaMessage>,
    ) {
        let hevc = frame.codec == EsCodec::Hevc;
        if self.video_codec.is_some_and(|c| c != frame.codec) {
            // A publisher that switches codec mid-stream starts over.
            self.vps = None;
            self.sps = None;
            self.pps = None;
            self.video_started = false;
        }
        self.video_codec = Some(frame.codec);
        if frame.damaged {
            self.video_waiting = true;
        }
        let kind_of = |unit: &[u8]| -> VideoNal {
            if hevc {
                match hevc::nal_type(unit) {
                    hevc::NAL_VPS => VideoNal::Vps,
                    hevc::NAL_SPS => VideoNal::Sps,
                    hevc::NAL_PPS => VideoNal::Pps,
                    hevc::NAL_AUD => VideoNal::Skip,
                    t if hevc::is_keyframe(t) => VideoNal::Key,
                    _ => VideoNal::Other,
                }
            } else {
                match h264::nal_type(unit) {
                    h264::NAL_SPS => VideoNal::Sps,
                    h264::NAL_PPS => VideoNal::Pps,
                    h264::NAL_AUD => VideoNal::Skip,
                    h264::NAL_IDR => VideoNal::Key,
                    _ => VideoNal::Other,
                }
            }
        };
        let mut keyframe = false;
        let mut headers_changed = false;
        let mut payload_len = 0;
        for unit in h264::nal_units(&frame.data) {
            let slot = match kind_of(unit) {
                VideoNal::Vps => &mut self.vps,
                VideoNal::Sps => &mut self.sps,
                VideoNal::Pps => &mut self.pps,
                VideoNal::Skip => continue,
                kind => {
                    keyframe |= kind == VideoNal::Key;
                    payload_len += 4 + unit.len();
                    continue;
                }
            };
            if slot.as_deref() != Some(unit) {
                *slot = Some(unit.to_vec());
                headers_changed = true;
            }
        }
        if headers_changed {
            self.dimensions = match (hevc, &self.sps) {
                (false, Some(sps)) => h264::sps_dimensions(sps),
                (true, Some(sps)) => hevc::parse_sps(sps).map(|i| (i.width, i.height)),
                _ => None,
            };
            let record = match (hevc, &self.vps, &self.sps, &self.pps) {
                (false, _, Some(sps), Some(pps)) => h264::decoder_configuration_record(sps, pps),
                (true, Some(vps), Some(sps), Some(pps)) => {
                    hevc::decoder_configuration_record(vps, sps, pps)
                }
                _ => None,
            };
            if let Some(record) = record {
                self.push_metadata(timestamp, out);
                let mut body = BytesMut::with_capacity(5 + record.len());
                if hevc {
                    // IsExHeader | keyframe | SequenceStart, FourCC.
                    body.put_u8(0x90);
                    body.put_slice(hevc::FOURCC);
                } else {
                    body.put_slice(&[0x17, 0x00, 0, 0, 0]);
                }
                body.put_slice(&record);
                out.push(MediaMessage::new(
                    MediaKind::Video,
                    timestamp,
                    body.freeze(),
                ));
                self.video_started = true;
            }
        }
        if payload_len == 0 {
            return;
        }
        if !self.video_started || (self.video_waiting && !keyframe) {
            self.stats.video_frames_dropped += 1;
            return;
        }
        // The FLV video header (5 bytes, 8 for enhanced) plus the payload.
        if 8 + payload_len > MAX_RTMP_MESSAGE {
            self.stats.oversize_frames += 1;
            self.stats.video_frames_dropped += 1;
            self.video_waiting = true;
            return;
        }
        self.video_waiting = false;
        let mut body = BytesMut::with_capacity(8 + payload_len);
        let frame_type: u8 = if keyframe { 1 } else { 2 };
        if hevc {
            // IsExHeader | frame type | CodedFrames (with composition time), FourCC.
            body.put_u8(0x80 | (frame_type << 4) | 1);
            body.put_slice(hevc::FOURCC);
        } else {
            body.put_u8((frame_type << 4) | 7);
            body.put_u8(1); // AVC NALU
        }
        body.put_slice(&composition_ms.to_be_bytes()[1..]);
        for unit in h264::nal_units(&frame.data) {
            if matches!(kind_of(unit), VideoNal::Key | VideoNal::Other) {
                body.put_u32(unit.len() as u32);
                body.put_slice(unit);
            }
        }
        self.measure_video(dts, body.len(), timestamp, out);
        out.push(MediaMessage::new(
            MediaKind::Video,
            timestamp,
            body.freeze(),
        ));
    }

    fn push_aac(&mut self, frame: &EsFrame, timestamp: u64, out: &mut Vec<MediaMessage>) {
        if frame.damaged {
            // Audio frames stand alone: lose this PES, keep the next.
            self.stats.audio_frames_dropped += 1;
            return;
        }
        for (i, adts) in aac::adts_frames(&frame.data).enumerate() {
            if self.audio != Some(adts.config) {
                self.audio = Some(adts.config);
                self.push_metadata(timestamp, out);
                let config = adts.config.audio_specific_config();
                out.push(MediaMessage::new(
                    MediaKind::Audio,
                    timestamp,
                    Bytes::copy_from_slice(&[0xaf, 0x00, config[0], config[1]]),
                ));
            }
            // 1024 samples per AAC frame.
            let offset = i as u64 * 1024 * 1000 / adts.config.sample_rate() as u64;
            let mut body = BytesMut::with_capacity(2 + adts.payload.len());
            body.put_slice(&[0xaf, 0x01]);
            body.put_slice(adts.payload);
            out.push(MediaMessage::new(
                MediaKind::Audio,
                timestamp + offset,
                body.freeze(),
            ));
        }
    }

    /// Frame rate and video bitrate, measured once over the first frames;
    /// the metadata is re-sent when they are known.
    fn measure_video(&mut self, dts: i64, len: usize, timestamp: u64, out: &mut Vec<MediaMessage>) {
        let measure = &mut self.measure;
        if measure.framerate.is_some() {
            return;
        }
        let first = *measure.first_dts.get_or_insert(dts);
        measure.frames += 1;
        measure.bytes += len as u64;
        if measure.frames > MEASURE_FRAMES && dts > first {
            let seconds = (dts - first) as f64 / 90_000.0;
            measure.framerate =
                Some(((measure.frames - 1) as f64 / seconds * 100.0).round() / 100.0);
            measure.video_kbps = Some((measure.bytes as f64 * 8.0 / seconds / 1000.0).round());
            self.push_metadata(timestamp, out);
        }
    }

    /// `@setDataFrame`/`onMetaData` with what is known so far.
    fn push_metadata(&self, timestamp: u64, out: &mut Vec<MediaMessage>) {
        let mut fields = Vec::new();
        let mut set = |name: &str, value: Amf0Value| {
            fields.push((name.to_string(), value));
        };
        if let Some((width, height)) = self.dimensions {
            set("width", Amf0Value::Number(width as f64));
            set("height", Amf0Value::Number(height as f64));
        }
        match self.video_codec {
            Some(EsCodec::H264) => set("videocodecid", Amf0Value::Number(7.0)),
            // Enhanced RTMP: the FourCC, as a number.
            Some(EsCodec::Hevc) => set(
                "videocodecid",
                Amf0Value::Number(u32::from_be_bytes(*hevc::FOURCC) as f64),
            ),
            _ => {}
        }
        if let Some(framerate) = self.measure.framerate {
            set("framerate", Amf0Value::Number(framerate));
        }
        if let Some(kbps) = self.measure.video_kbps {
            set("videodatarate", Amf0Value::Number(kbps));
        }
        if let Some(audio) = self.audio {
            set("audiocodecid", Amf0Value::Number(10.0));
            set(
                "audiosamplerate",
                Amf0Value::Number(audio.sample_rate() as f64),
            );
            set("audiochannels", Amf0Value::Number(audio.channels as f64));
            set("stereo", Amf0Value::Boolean(audio.channels >= 2));
        }
        set("encoder", Amf0Value::string("Prism (from MPEG-TS)"));
        let encoded =
            amf0::encode_all(&[Amf0Value::string("onMetaData"), Amf0Value::Object(fields)]);
        let mut body = BytesMut::with_capacity(AMF0_SET_DATA_FRAME.len() + encoded.len());
        body.put_slice(AMF0_SET_DATA_FRAME);
        body.put_slice(&encoded);
        out.push(MediaMessage::new(MediaKind::Data, timestamp, body.freeze()));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VideoNal {
    Vps,
    Sps,
    Pps,
    /// Access unit delimiters: FLV frames are access units already.
    Skip,
    Key,
    Other,
}

/// A 33-bit difference as the nearest signed value.
fn signed_33(diff: i64) -> i64 {
    let d = diff.rem_euclid(WRAP);
    if d >= WRAP / 2 {
        d - WRAP
    } else {
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dts_unwraps_across_the_33_bit_boundary() {
        let mut remuxer = Remuxer::new();
        let near_end = WRAP as u64 - 90_000;
        let a = remuxer.unwrap(near_end);
        let b = remuxer.unwrap(near_end + 45_000);
        let c = remuxer.unwrap(10_000); // wrapped
        assert_eq!(b - a, 45_000);
        assert_eq!(c - a, 100_000);
        // A slightly earlier DTS (the other track) is not a wrap.
        assert_eq!(remuxer.unwrap(5_000) - a, 95_000);
    }

    /// An Annex B access unit: start codes before each NAL unit.
    fn access_unit(units: &[&[u8]]) -> Bytes {
        let mut data = Vec::new();
        for unit in units {
            data.extend_from_slice(&[0, 0, 0, 1]);
            data.extend_from_slice(unit);
        }
        Bytes::from(data)
    }

    fn h264(dts: u64, data: Bytes) -> EsFrame {
        EsFrame {
            codec: EsCodec::H264,
            pts: dts,
            dts,
            data,
            damaged: false,
        }
    }

    #[test]
    fn a_frame_too_large_for_an_rtmp_message_is_refused_not_truncated() {
        let (sps, pps) = (
            &[0x67, 0x42, 0xc0, 0x1e, 0xda][..],
            &[0x68, 0xce, 0x3c, 0x80][..],
        );
        let mut remuxer = Remuxer::new();
        let mut out = Vec::new();
        remuxer.push(
            h264(9000, access_unit(&[sps, pps, &[0x65, 0x88, 1]])),
            &mut out,
        );
        let sent = out.len();
        assert!(
            out.iter().any(|m| m.keyframe),
            "the first keyframe goes out"
        );
        // A PES may carry up to 16 MiB: with its headers, one over the limit.
        let mut huge = vec![0x41u8; MAX_RTMP_MESSAGE];
        huge[1] = 0x9a;
        remuxer.push(h264(12_600, access_unit(&[&huge])), &mut out);
        assert_eq!(out.len(), sent, "nothing of the oversize frame went out");
        assert_eq!(remuxer.stats.oversize_frames, 1);
        // The video waits for the next keyframe, which goes out whole.
        remuxer.push(h264(16_200, access_unit(&[&[0x41, 0x9a, 2]])), &mut out);
        assert_eq!(out.len(), sent);
        remuxer.push(h264(19_800, access_unit(&[&[0x65, 0x88, 3]])), &mut out);
        let last = out.last().unwrap();
        assert!(last.keyframe && last.payload.len() <= MAX_RTMP_MESSAGE);
    }

    #[test]
    fn signed_differences() {
        assert_eq!(signed_33(3000), 3000);
        assert_eq!(signed_33(-3000), -3000);
        assert_eq!(signed_33(WRAP - 10), -10);
    }
}
