//! What a relayed message is to a recording: a codec configuration, a
//! sample of a track, or nothing to keep. Reads the FLV tag-body headers of
//! legacy RTMP (AVC, AAC, the de-facto HEVC id 12) and enhanced RTMP
//! (`hvc1`/`avc1` video, `mp4a` audio); the sample's bytes are a slice of
//! the message's payload, never a copy.

use bytes::Bytes;
use prism_media::flv::{CODEC_AVC, SOUND_AAC, SOUND_EX_HEADER};
use prism_media::{MediaKind, MediaMessage};

/// The legacy FLV codec id some encoders used for HEVC before enhanced RTMP.
const CODEC_HEVC_LEGACY: u8 = 12;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    H264,
    Hevc,
}

impl VideoCodec {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::Hevc => "hevc",
        }
    }
}

/// A message as a recording sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A video decoder configuration: an AVCDecoderConfigurationRecord or an
    /// HEVCDecoderConfigurationRecord.
    VideoConfig { codec: VideoCodec, record: Bytes },
    /// An AAC AudioSpecificConfig.
    AudioConfig { config: Bytes },
    /// One coded picture: length-prefixed NAL units, with its composition
    /// offset (presentation minus decode time, ms).
    Video {
        data: Bytes,
        composition_ms: i32,
        keyframe: bool,
    },
    /// One AAC frame.
    Audio { data: Bytes },
    /// Nothing a recording keeps (metadata, an end of sequence, an empty body).
    Skip,
    /// A codec the MP4 recording cannot hold (it is named, so the recorder
    /// can say which).
    Unsupported(&'static str),
}

/// Reads one relayed message.
pub fn parse(message: &MediaMessage) -> Parsed {
    match message.kind {
        MediaKind::Video => parse_video(&message.payload),
        MediaKind::Audio => parse_audio(&message.payload),
        MediaKind::Data => Parsed::Skip,
    }
}

fn parse_video(payload: &Bytes) -> Parsed {
    let Some(&first) = payload.first() else {
        return Parsed::Skip;
    };
    if first & 0x80 != 0 {
        return parse_enhanced_video(payload, first);
    }
    let keyframe = first >> 4 == 1;
    let codec = match first & 0x0f {
        CODEC_AVC => VideoCodec::H264,
        CODEC_HEVC_LEGACY => VideoCodec::Hevc,
        _ => {
            return Parsed::Unsupported(
                prism_media::flv::video_codec_name(payload).unwrap_or("unknown"),
            )
        }
    };
    // AVCPacketType (0 config, 1 NAL units, 2 end of sequence), then a
    // signed 24-bit composition time.
    let (Some(&packet_type), Some(composition)) = (payload.get(1), payload.get(2..5)) else {
        return Parsed::Skip;
    };
    match packet_type {
        0 => Parsed::VideoConfig {
            codec,
            record: payload.slice(5..),
        },
        1 if payload.len() > 5 => Parsed::Video {
            data: payload.slice(5..),
            composition_ms: signed_24(composition),
            keyframe,
        },
        _ => Parsed::Skip,
    }
}

/// Enhanced RTMP: IsExHeader | FrameType (3 bits) | PacketType (4 bits),
/// then a FourCC.
fn parse_enhanced_video(payload: &Bytes, first: u8) -> Parsed {
    let keyframe = (first >> 4) & 0x07 == 1;
    let packet_type = first & 0x0f;
    let Some(fourcc) = payload.get(1..5) else {
        return Parsed::Skip;
    };
    let codec = match fourcc {
        b"avc1" => VideoCodec::H264,
        b"hvc1" => VideoCodec::Hevc,
        _ => {
            return Parsed::Unsupported(
                prism_media::flv::video_codec_name(payload).unwrap_or("unknown"),
            )
        }
    };
    match packet_type {
        // SequenceStart
        0 => Parsed::VideoConfig {
            codec,
            record: payload.slice(5..),
        },
        // CodedFrames: a composition time, then the picture.
        1 => match payload.get(5..8) {
            Some(composition) if payload.len() > 8 => Parsed::Video {
                data: payload.slice(8..),
                composition_ms: signed_24(composition),
                keyframe,
            },
            _ => Parsed::Skip,
        },
        // CodedFramesX: the picture, composition time zero.
        3 if payload.len() > 5 => Parsed::Video {
            data: payload.slice(5..),
            composition_ms: 0,
            keyframe,
        },
        // SequenceEnd, Metadata, MPEG2TSSequenceStart, Multitrack, ModEx.
        _ => Parsed::Skip,
    }
}

fn parse_audio(payload: &Bytes) -> Parsed {
    let Some(&first) = payload.first() else {
        return Parsed::Skip;
    };
    match first >> 4 {
        SOUND_AAC => match payload.get(1) {
            Some(0) if payload.len() > 2 => Parsed::AudioConfig {
                config: payload.slice(2..),
            },
            Some(1) if payload.len() > 2 => Parsed::Audio {
                data: payload.slice(2..),
            },
            _ => Parsed::Skip,
        },
        // Enhanced audio: SoundFormat 9 | AudioPacketType, then a FourCC.
        SOUND_EX_HEADER => match (payload.get(1..5), first & 0x0f) {
            (Some(b"mp4a"), 0) if payload.len() > 5 => Parsed::AudioConfig {
                config: payload.slice(5..),
            },
            (Some(b"mp4a"), 1) if payload.len() > 5 => Parsed::Audio {
                data: payload.slice(5..),
            },
            (Some(b"mp4a"), _) => Parsed::Skip,
            _ => Parsed::Unsupported(
                prism_media::flv::audio_codec_name(payload).unwrap_or("unknown"),
            ),
        },
        _ => Parsed::Unsupported(prism_media::flv::audio_codec_name(payload).unwrap_or("unknown")),
    }
}

fn signed_24(bytes: &[u8]) -> i32 {
    let value = (i32::from(bytes[0]) << 16) | (i32::from(bytes[1]) << 8) | i32::from(bytes[2]);
    (value << 8) >> 8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: MediaKind, body: &'static [u8]) -> MediaMessage {
        MediaMessage::new(kind, 0, Bytes::from_static(body))
    }

    #[test]
    fn legacy_avc_config_and_pictures_with_negative_composition() {
        let config = parse(&message(MediaKind::Video, b"\x17\x00\x00\x00\x00\x01\x64"));
        assert_eq!(
            config,
            Parsed::VideoConfig {
                codec: VideoCodec::H264,
                record: Bytes::from_static(b"\x01\x64")
            }
        );
        let picture = parse(&message(
            MediaKind::Video,
            b"\x27\x01\xff\xff\xf6\x00\x00\x00\x01\x41",
        ));
        assert_eq!(
            picture,
            Parsed::Video {
                data: Bytes::from_static(b"\x00\x00\x00\x01\x41"),
                composition_ms: -10,
                keyframe: false
            }
        );
        assert_eq!(
            parse(&message(MediaKind::Video, b"\x17\x02\x00\x00\x00")),
            Parsed::Skip
        );
    }

    #[test]
    fn enhanced_hevc_coded_frames_with_and_without_composition() {
        let with = parse(&message(
            MediaKind::Video,
            b"\x91hvc1\x00\x00\x28\x00\x00\x00\x01\x26",
        ));
        assert_eq!(
            with,
            Parsed::Video {
                data: Bytes::from_static(b"\x00\x00\x00\x01\x26"),
                composition_ms: 40,
                keyframe: true
            }
        );
        let without = parse(&message(MediaKind::Video, b"\xa3hvc1\x00\x00\x00\x01\x02"));
        assert!(matches!(
            without,
            Parsed::Video {
                composition_ms: 0,
                keyframe: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&message(MediaKind::Video, b"\x90hvc1\x01\x02")),
            Parsed::VideoConfig {
                codec: VideoCodec::Hevc,
                ..
            }
        ));
        assert_eq!(
            parse(&message(MediaKind::Video, b"\x90av01\x01\x02")),
            Parsed::Unsupported("av1")
        );
    }

    #[test]
    fn aac_legacy_and_enhanced() {
        assert_eq!(
            parse(&message(MediaKind::Audio, b"\xaf\x00\x12\x10")),
            Parsed::AudioConfig {
                config: Bytes::from_static(b"\x12\x10")
            }
        );
        assert_eq!(
            parse(&message(MediaKind::Audio, b"\xaf\x01\x21\x00")),
            Parsed::Audio {
                data: Bytes::from_static(b"\x21\x00")
            }
        );
        assert!(matches!(
            parse(&message(MediaKind::Audio, b"\x90mp4a\x12\x10")),
            Parsed::AudioConfig { .. }
        ));
        assert_eq!(
            parse(&message(MediaKind::Audio, b"\x2f\xff")),
            Parsed::Unsupported("mp3")
        );
        assert_eq!(
            parse(&message(MediaKind::Audio, b"\x90Opus\x01")),
            Parsed::Unsupported("opus")
        );
    }

    #[test]
    fn truncated_bodies_are_skipped() {
        for body in [
            &b""[..],
            b"\x17",
            b"\x17\x01\x00",
            b"\x91hvc",
            b"\xaf",
            b"\xaf\x01",
        ] {
            let parsed = parse(&MediaMessage::new(
                MediaKind::Video,
                0,
                Bytes::from_static(body),
            ));
            assert!(
                matches!(parsed, Parsed::Skip | Parsed::Unsupported(_)),
                "{body:?}"
            );
        }
    }
}
