//! FLV tag-body inspection: is this video frame a keyframe, is this message a
//! sequence header. Understands legacy FLV headers and enhanced RTMP (`ex`
//! headers carrying a FourCC), so HEVC/AV1/VP9 pass through correctly.
//! Also the tags themselves: read one (`tag_at`, `file_tags`), write one
//! (`write_tag`).
//!
//! Pure functions over the first bytes of a payload; nothing is copied.

/// Legacy FLV video codec id for H.264/AVC.
pub const CODEC_AVC: u8 = 7;
/// Legacy FLV sound format for AAC.
pub const SOUND_AAC: u8 = 10;
/// Enhanced RTMP: `SoundFormat` value announcing an ex audio header.
pub const SOUND_EX_HEADER: u8 = 9;

/// What an RTMP message (an FLV tag) carries; the values are the RTMP
/// message type ids, which are the FLV tag types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio = 8,
    Video = 9,
    /// AMF0 data (`@setDataFrame`/`onMetaData`, cue points, captions).
    Data = 18,
}

impl MediaKind {
    pub fn type_id(self) -> u8 {
        self as u8
    }

    /// The kind of an RTMP message type id, `None` for types that carry no
    /// media (commands, protocol control, AMF3 data).
    pub fn from_type_id(type_id: u8) -> Option<MediaKind> {
        match type_id {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            18 => Some(MediaKind::Data),
            _ => None,
        }
    }
}

/// Frame type 1: a keyframe (seekable frame).
pub const FRAME_KEY: u8 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VideoTagInfo {
    pub keyframe: bool,
    pub sequence_header: bool,
    /// Legacy codec id, or `None` for an enhanced header (see `fourcc`).
    pub codec_id: Option<u8>,
    /// FourCC of an enhanced RTMP header (`hvc1`, `av01`, `vp09`, `avc1`).
    pub fourcc: Option<[u8; 4]>,
}

/// Reads a video tag body's header. An empty or truncated payload reads as a
/// plain inter frame: the message is still relayed, just never started from.
pub fn inspect_video(payload: &[u8]) -> VideoTagInfo {
    let Some(&first) = payload.first() else {
        return VideoTagInfo::default();
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader | FrameType(3 bits) | PacketType(4 bits) | FourCC.
        let frame_type = (first >> 4) & 0x07;
        let packet_type = first & 0x0f;
        let fourcc = payload.get(1..5).map(|b| [b[0], b[1], b[2], b[3]]);
        // PacketType 0 = SequenceStart, 5 = MPEG2TSSequenceStart.
        let sequence_header = packet_type == 0 || packet_type == 5;
        // A command frame (frame type 5) carries no picture.
        return VideoTagInfo {
            keyframe: frame_type == FRAME_KEY && !sequence_header,
            sequence_header,
            codec_id: None,
            fourcc,
        };
    }
    let frame_type = first >> 4;
    let codec_id = first & 0x0f;
    // AVC (and the de-facto HEVC id 12 some encoders used before enhanced RTMP)
    // carry an AVCPacketType byte: 0 = sequence header.
    let sequence_header =
        (codec_id == CODEC_AVC || codec_id == 12) && payload.get(1).copied() == Some(0);
    VideoTagInfo {
        keyframe: frame_type == FRAME_KEY && !sequence_header,
        sequence_header,
        codec_id: Some(codec_id),
        fourcc: None,
    }
}

/// Whether an audio tag body is a decoder configuration (AAC AudioSpecificConfig,
/// or an enhanced-audio SequenceStart).
pub fn is_audio_sequence_header(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    match first >> 4 {
        SOUND_AAC => payload.get(1).copied() == Some(0),
        // Enhanced audio: SoundFormat 9 | AudioPacketType (0 = SequenceStart).
        SOUND_EX_HEADER => first & 0x0f == 0,
        _ => false,
    }
}

/// The AVCDecoderConfigurationRecord (ISO/IEC 14496-15) for one SPS and
/// PPS: the body of an H.264 sequence header after its 5-byte tag header.
pub fn avc_decoder_configuration_record(sps: &[u8], pps: &[u8]) -> Option<Vec<u8>> {
    if sps.len() < 4
        || pps.is_empty()
        || sps.len() > u16::MAX as usize
        || pps.len() > u16::MAX as usize
    {
        return None;
    }
    let mut record = Vec::with_capacity(11 + sps.len() + pps.len());
    record.push(1); // configurationVersion
    record.extend_from_slice(&sps[1..4]); // profile, compatibility, level
    record.push(0xff); // 4-byte NAL lengths
    record.push(0xe1); // one SPS
    record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    record.extend_from_slice(sps);
    record.push(1); // one PPS
    record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    record.extend_from_slice(pps);
    Some(record)
}

/// The two-byte AudioSpecificConfig (ISO/IEC 14496-3): the body of an AAC
/// sequence header after its 2-byte tag header.
pub fn aac_audio_specific_config(object_type: u8, sample_rate_index: u8, channels: u8) -> [u8; 2] {
    let bits: u16 = (u16::from(object_type) << 11)
        | (u16::from(sample_rate_index) << 7)
        | (u16::from(channels) << 3);
    bits.to_be_bytes()
}

/// One FLV tag at the start of a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    /// 8 audio, 9 video, 18 script data (the filter bits masked off).
    pub type_id: u8,
    pub timestamp: u32,
    /// Where its body lies in the buffer.
    pub body: std::ops::Range<usize>,
}

impl Tag {
    /// Where the next tag starts: past the body and its PreviousTagSize.
    pub fn next(&self) -> usize {
        self.body.end + 4
    }
}

/// The tag at the start of `buf`, once its header and body are all there
/// (the PreviousTagSize after it may not be).
pub fn tag_at(buf: &[u8]) -> Option<Tag> {
    let header = buf.get(..11)?;
    let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    let body = 11..11 + size;
    (body.end <= buf.len()).then(|| Tag {
        type_id: header[0] & 0x1f,
        timestamp: u32::from_be_bytes([header[7], header[4], header[5], header[6]]),
        body,
    })
}

/// An FLV file's header (version 1, audio and video) and the first
/// PreviousTagSize, 0: what a file written with `write_tag` starts with.
pub const FILE_HEADER: &[u8; 13] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";

/// Appends one tag and its PreviousTagSize to `out`.
pub fn write_tag(out: &mut Vec<u8>, type_id: u8, timestamp: u32, body: &[u8]) {
    out.extend_from_slice(&tag_header(type_id, body.len(), timestamp));
    out.extend_from_slice(body);
    out.extend_from_slice(&previous_tag_size(body.len()));
}

/// The 11-byte header of a tag of `body_len` bytes (lengths are 24-bit:
/// a longer body is not a tag). The timestamp's top byte goes last.
pub fn tag_header(type_id: u8, body_len: usize, timestamp: u32) -> [u8; 11] {
    let len = (body_len as u32).to_be_bytes();
    let ts = timestamp.to_be_bytes();
    [
        type_id, len[1], len[2], len[3], ts[1], ts[2], ts[3], ts[0], 0, 0, 0,
    ]
}

/// The PreviousTagSize that follows a tag of `body_len` bytes.
pub fn previous_tag_size(body_len: usize) -> [u8; 4] {
    (body_len as u32 + 11).to_be_bytes()
}

/// The audio, video and data tags of an FLV file, as messages sharing the
/// file's bytes; stops at the first truncated tag. The caller checks the
/// `FLV` signature.
pub fn file_tags(file: &bytes::Bytes) -> impl Iterator<Item = crate::MediaMessage> + '_ {
    let header_len = file
        .get(5..9)
        .map_or(9, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let mut at = header_len.saturating_add(4);
    std::iter::from_fn(move || loop {
        let tag = tag_at(file.get(at..)?)?;
        let body = at + tag.body.start..at + tag.body.end;
        at += tag.next();
        let Some(kind) = MediaKind::from_type_id(tag.type_id) else {
            continue;
        };
        return Some(crate::MediaMessage::new(
            kind,
            u64::from(tag.timestamp),
            file.slice(body),
        ));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc_keyframe_and_sequence_header() {
        assert_eq!(
            inspect_video(&[0x17, 0x00, 0, 0, 0]),
            VideoTagInfo {
                keyframe: false,
                sequence_header: true,
                codec_id: Some(7),
                fourcc: None
            }
        );
        let key = inspect_video(&[0x17, 0x01, 0, 0, 0, 0xaa]);
        assert!(key.keyframe && !key.sequence_header);
        let inter = inspect_video(&[0x27, 0x01, 0, 0, 0, 0xaa]);
        assert!(!inter.keyframe && !inter.sequence_header);
    }

    #[test]
    fn enhanced_hevc_headers() {
        // IsExHeader | keyframe (1<<4) | SequenceStart (0), FourCC hvc1.
        let seq = inspect_video(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]);
        assert!(seq.sequence_header && !seq.keyframe);
        assert_eq!(seq.fourcc, Some(*b"hvc1"));
        // keyframe, CodedFramesX (3).
        let key = inspect_video(&[0x93, b'h', b'v', b'c', b'1', 9]);
        assert!(key.keyframe && !key.sequence_header);
        // inter frame (2<<4), CodedFrames (1).
        let inter = inspect_video(&[0xa1, b'a', b'v', b'0', b'1', 0, 0, 0]);
        assert!(!inter.keyframe && !inter.sequence_header);
    }

    #[test]
    fn truncated_payloads_are_plain_frames() {
        assert_eq!(inspect_video(&[]), VideoTagInfo::default());
        assert!(!inspect_video(&[0x17]).sequence_header);
        assert!(!is_audio_sequence_header(&[]));
        assert!(!is_audio_sequence_header(&[0xaf]));
    }

    /// An AAC frame tag as the FLV spec lays it out, written out by hand:
    /// type 8, size 4, timestamp 0x12_34_56 with extension byte 0x7f.
    const AUDIO_TAG: [u8; 19] = [
        8, 0, 0, 4, 0x12, 0x34, 0x56, 0x7f, 0, 0, 0, 0xaf, 1, 0xde, 0xad, 0, 0, 0, 15,
    ];

    #[test]
    fn a_tag_is_read_once_its_body_is_there() {
        for cut in 0..15 {
            assert!(tag_at(&AUDIO_TAG[..cut]).is_none(), "cut at {cut}");
        }
        let tag = tag_at(&AUDIO_TAG[..15]).expect("header and body");
        assert_eq!(tag.type_id, 8);
        assert_eq!(tag.timestamp, 0x7f12_3456);
        assert_eq!(&AUDIO_TAG[tag.body.clone()], &[0xaf, 1, 0xde, 0xad]);
        assert_eq!(tag.next(), AUDIO_TAG.len());
    }

    #[test]
    fn a_tag_is_written_as_the_spec_lays_it_out() {
        let mut out = Vec::new();
        write_tag(&mut out, 8, 0x7f12_3456, &[0xaf, 1, 0xde, 0xad]);
        assert_eq!(out, AUDIO_TAG);
    }

    #[test]
    fn aac_sequence_header() {
        assert!(is_audio_sequence_header(&[0xaf, 0x00, 0x12, 0x10]));
        assert!(!is_audio_sequence_header(&[0xaf, 0x01, 0x21]));
        // MP3 has no sequence header.
        assert!(!is_audio_sequence_header(&[0x2f, 0x00]));
        assert!(is_audio_sequence_header(&[0x90, b'O', b'p', b'u', b's']));
    }
}

/// AMF0 encoding of the string `@setDataFrame`: type marker, u16 length, bytes.
pub const AMF0_SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
const AMF0_ON_METADATA: &[u8] = b"\x02\x00\x0aonMetaData";

/// Whether an AMF0 data message is the stream's metadata, in either the form
/// publishers send (`@setDataFrame`, `onMetaData`, object) or the bare form
/// (`onMetaData`, object).
pub fn is_metadata(payload: &[u8]) -> bool {
    payload.starts_with(AMF0_ON_METADATA)
        || payload
            .strip_prefix(AMF0_SET_DATA_FRAME)
            .is_some_and(|rest| rest.starts_with(AMF0_ON_METADATA))
}

#[cfg(test)]
mod metadata_tests {
    use super::*;

    #[test]
    fn recognises_both_metadata_forms() {
        let mut full = AMF0_SET_DATA_FRAME.to_vec();
        full.extend_from_slice(AMF0_ON_METADATA);
        full.push(0x08);
        assert!(is_metadata(&full));
        assert!(is_metadata(&full[AMF0_SET_DATA_FRAME.len()..]));
        assert!(!is_metadata(b"\x02\x00\x0aonCuePoint"));
        assert!(!is_metadata(AMF0_SET_DATA_FRAME));
    }
}

/// A short codec name for logs and the API, from a video sequence header
/// or frame.
pub fn video_codec_name(payload: &[u8]) -> Option<&'static str> {
    let info = inspect_video(payload);
    if let Some(fourcc) = info.fourcc {
        return fourcc_codec_name(MediaKind::Video, &fourcc);
    }
    Some(match info.codec_id? {
        2 => "sorenson-h263",
        4 | 5 => "vp6",
        CODEC_AVC => "h264",
        12 => "hevc",
        _ => "unknown",
    })
}

/// A short codec name for logs and the API, from an audio tag body.
pub fn audio_codec_name(payload: &[u8]) -> Option<&'static str> {
    let first = *payload.first()?;
    Some(match first >> 4 {
        SOUND_AAC => "aac",
        2 | 14 => "mp3",
        11 => "speex",
        SOUND_EX_HEADER => {
            let fourcc = payload.get(1..5)?;
            return fourcc_codec_name(
                MediaKind::Audio,
                &[fourcc[0], fourcc[1], fourcc[2], fourcc[3]],
            );
        }
        _ => "other",
    })
}

/// A short codec name for an enhanced RTMP FourCC.
pub fn fourcc_codec_name(kind: MediaKind, fourcc: &[u8; 4]) -> Option<&'static str> {
    Some(match (kind, fourcc) {
        (MediaKind::Video, b"avc1") => "h264",
        (MediaKind::Video, b"hvc1") => "hevc",
        (MediaKind::Video, b"av01") => "av1",
        (MediaKind::Video, b"vp09") => "vp9",
        (MediaKind::Video, b"vp08") => "vp8",
        (MediaKind::Audio, b"Opus") => "opus",
        (MediaKind::Audio, b"mp4a") => "aac",
        (MediaKind::Audio, b"ac-3") => "ac3",
        (MediaKind::Audio, b"ec-3") => "eac3",
        (MediaKind::Audio, b"fLaC") => "flac",
        (MediaKind::Audio, b".mp3") => "mp3",
        _ => "unknown",
    })
}

#[cfg(test)]
mod codec_name_tests {
    use super::*;

    #[test]
    fn names_legacy_and_enhanced_codecs() {
        assert_eq!(video_codec_name(&[0x17, 0]), Some("h264"));
        assert_eq!(
            video_codec_name(&[0x90, b'h', b'v', b'c', b'1']),
            Some("hevc")
        );
        assert_eq!(
            video_codec_name(&[0x90, b'a', b'v', b'0', b'1']),
            Some("av1")
        );
        assert_eq!(video_codec_name(&[]), None);
        assert_eq!(audio_codec_name(&[0xaf, 0]), Some("aac"));
        assert_eq!(
            audio_codec_name(&[0x90, b'O', b'p', b'u', b's']),
            Some("opus")
        );
        assert_eq!(audio_codec_name(&[0x2f]), Some("mp3"));
    }
}
