//! What a consumer that takes one track of each kind gets of a stream that
//! may carry several (enhanced RTMP v2 multitrack): track 0, re-framed as an
//! ordinary message of its codec, with its own sequence header. YouTube,
//! Kick and older servers take only that; so do SRT destinations (MPEG-TS),
//! recordings and the preview. A destination with `tracks = "all"` gets
//! every message as received.

use bytes::{BufMut, BytesMut};

use crate::flv::{CODEC_AVC, SOUND_AAC, SOUND_EX_HEADER};
use crate::message::{MediaKind, MediaMessage};
use crate::multitrack::{read, CODED_FRAMES};

/// Which tracks a consumer of the stream takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tracks {
    /// Track 0 of each kind, as plain single-track messages.
    #[default]
    Default,
    /// Every track, as received.
    All,
}

impl Tracks {
    pub fn as_str(self) -> &'static str {
        match self {
            Tracks::Default => "default",
            Tracks::All => "all",
        }
    }
}

/// What a single-track consumer gets of a message.
#[derive(Clone, Debug)]
pub enum DefaultTrack {
    /// Not a multitrack message: as it is.
    Unchanged,
    /// Track 0, re-framed as an ordinary message of its codec.
    Track(MediaMessage),
    /// A message with no track 0 (or one that does not read): nothing.
    Nothing,
}

/// Track 0 of `message` as an ordinary message: H.264 and AAC as legacy FLV
/// packets (what every server takes), other codecs as single-track enhanced
/// packets with their FourCC. The new payload is one small copy, made once
/// for every consumer that takes the default track.
pub fn default_track(message: &MediaMessage) -> DefaultTrack {
    let multitrack = match read(message.kind, &message.payload) {
        Ok(Some(multitrack)) => multitrack,
        Ok(None) => return DefaultTrack::Unchanged,
        Err(_) => return DefaultTrack::Nothing,
    };
    let Some(track) = multitrack.tracks.iter().find(|t| t.id == 0) else {
        return DefaultTrack::Nothing;
    };
    let mut out = BytesMut::with_capacity(track.body.len() + 8);
    match (message.kind, &track.fourcc) {
        (MediaKind::Video, b"avc1") => {
            // FrameType | CodecID 7, AVCPacketType, composition time.
            let frame = multitrack.frame_type.clamp(1, 5);
            let (avc_type, composition): (u8, &[u8]) = match track.packet_type {
                0 => (0, &[0, 0, 0]),
                CODED_FRAMES => (1, &[]),
                3 => (1, &[0, 0, 0]),
                2 => (2, &[0, 0, 0]),
                _ => return DefaultTrack::Nothing,
            };
            out.put_u8((frame << 4) | CODEC_AVC);
            out.put_u8(avc_type);
            out.put_slice(composition);
        }
        (MediaKind::Audio, b"mp4a") => {
            // SoundFormat 10 (AAC), 44 kHz, 16-bit, stereo: the flags every
            // AAC tag carries, whatever the stream is.
            let aac_type = match track.packet_type {
                0 => 0,
                1 => 1,
                _ => return DefaultTrack::Nothing,
            };
            out.put_u8((SOUND_AAC << 4) | 0x0f);
            out.put_u8(aac_type);
        }
        (MediaKind::Video, fourcc) => {
            out.put_u8(0x80 | (multitrack.frame_type << 4) | track.packet_type);
            out.put_slice(fourcc);
        }
        (_, fourcc) => {
            out.put_u8((SOUND_EX_HEADER << 4) | track.packet_type);
            out.put_slice(fourcc);
        }
    }
    out.put_slice(&track.body);
    let mut single = MediaMessage::new(message.kind, message.timestamp, out.freeze());
    single.received_at = message.received_at;
    DefaultTrack::Track(single)
}

/// What a single-track consumer gets of `message`, as a message of its own
/// (the message itself when it is not multitrack): for replays, which are
/// rare, where `default_track`'s borrow would be in the way.
pub fn single_track(message: &MediaMessage) -> Option<MediaMessage> {
    match default_track(message) {
        DefaultTrack::Unchanged => Some(message.clone()),
        DefaultTrack::Track(single) => Some(single),
        DefaultTrack::Nothing => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::multitrack::tests::video;
    use crate::multitrack::{Layout, CODED_FRAMES};

    fn message(kind: MediaKind, payload: Bytes) -> MediaMessage {
        MediaMessage::new(kind, 40, payload)
    }

    #[test]
    fn many_tracks_are_read_and_track_0_becomes_a_legacy_avc_frame() {
        // Two H.264 tracks, CodedFrames: composition time, then the frame.
        let payload = video(
            1,
            1,
            CODED_FRAMES,
            Some(b"avc1"),
            &[
                (None, 1, b"\x00\x00\x00hi-res"),
                (None, 0, b"\x00\x00\x28lo"),
            ],
        );
        let read = read(MediaKind::Video, &payload).unwrap().unwrap();
        assert_eq!(read.layout, Layout::ManyTracks);
        assert_eq!(read.tracks.len(), 2);
        assert_eq!(read.tracks[1].id, 0);
        let DefaultTrack::Track(single) = default_track(&message(MediaKind::Video, payload)) else {
            panic!("track 0 expected");
        };
        // A legacy keyframe: 0x17, NALU packet, composition 40 ms, the frame.
        assert_eq!(&single.payload[..], b"\x17\x01\x00\x00\x28lo");
        assert!(single.keyframe && !single.sequence_header);
        assert_eq!(single.timestamp, 40);
    }

    #[test]
    fn a_sequence_start_of_track_0_is_a_legacy_sequence_header() {
        let payload = video(
            1,
            1,
            0,
            Some(b"avc1"),
            &[(None, 0, b"\x01\x64\x00\x1f"), (None, 1, b"\x01\x4d")],
        );
        let DefaultTrack::Track(single) = default_track(&message(MediaKind::Video, payload)) else {
            panic!("track 0 expected");
        };
        assert_eq!(&single.payload[..], b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f");
        assert!(single.sequence_header);
    }

    #[test]
    fn many_codecs_one_track_each_and_hevc_stays_enhanced() {
        let payload = video(
            2,
            2,
            3,
            None,
            &[
                (Some(b"hvc1"), 0, b"frame-h"),
                (Some(b"av01"), 1, b"frame-a"),
            ],
        );
        let read = read(MediaKind::Video, &payload).unwrap().unwrap();
        assert_eq!(read.tracks[0].fourcc, *b"hvc1");
        assert_eq!(read.tracks[1].fourcc, *b"av01");
        let DefaultTrack::Track(single) = default_track(&message(MediaKind::Video, payload)) else {
            panic!("track 0 expected");
        };
        assert_eq!(&single.payload[..], b"\xa3hvc1frame-h");
    }

    #[test]
    fn one_track_runs_to_the_end_and_a_message_without_track_0_gives_nothing() {
        let one = video(
            1,
            0,
            CODED_FRAMES,
            Some(b"avc1"),
            &[(None, 2, b"\x00\x00\x00x")],
        );
        let read = read(MediaKind::Video, &one).unwrap().unwrap();
        assert_eq!(read.layout, Layout::OneTrack);
        assert_eq!(&read.tracks[0].body[..], b"\x00\x00\x00x");
        assert!(matches!(
            default_track(&message(MediaKind::Video, one)),
            DefaultTrack::Nothing
        ));
    }

    #[test]
    fn audio_multitrack_track_0_becomes_legacy_aac() {
        // SoundFormat 9 | Multitrack, ManyTracks | CodedFrames, mp4a.
        let mut payload = vec![0x95, 0x11];
        payload.extend_from_slice(b"mp4a");
        for (id, frame) in [(0u8, &b"aac-0"[..]), (1, b"aac-1")] {
            payload.push(id);
            payload.extend_from_slice(&(frame.len() as u32).to_be_bytes()[1..]);
            payload.extend_from_slice(frame);
        }
        let DefaultTrack::Track(single) =
            default_track(&message(MediaKind::Audio, Bytes::from(payload)))
        else {
            panic!("track 0 expected");
        };
        assert_eq!(&single.payload[..], b"\xaf\x01aac-0");
    }
}
