//! Enhanced RTMP v2 multitrack messages (the "Multitrack" packet type of
//! video and audio, with ModEx prefixes), read into their tracks. What a
//! single-track consumer gets of them is `single_track`'s.
//!
//! Sans-IO and bounded: a message is read once, front to back; a track's
//! declared size is checked against what is left; at most 256 tracks (ids
//! are one byte) are read from one message, and ModEx prefixes at most 8.

use bytes::Bytes;

use crate::flv::MediaKind;
use crate::flv::{FRAME_KEY, SOUND_EX_HEADER};

pub(crate) const VIDEO_MULTITRACK: u8 = 6;
const AUDIO_MULTITRACK: u8 = 5;
const MOD_EX: u8 = 7;
const MAX_MOD_EX: usize = 8;
/// Video packet types that carry a composition time before the frame.
pub(crate) const CODED_FRAMES: u8 = 1;

/// How the tracks of a multitrack message are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One track, no size: it runs to the end of the message.
    OneTrack,
    /// Several tracks of one codec, each with its size.
    ManyTracks,
    /// Several tracks, each with its own codec and size.
    ManyTracksManyCodecs,
}

/// One track's part of a multitrack message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    pub id: u8,
    pub fourcc: [u8; 4],
    /// The packet type of every track of the message (video: SequenceStart,
    /// CodedFrames, …; audio: SequenceStart, CodedFrames, …).
    pub packet_type: u8,
    /// What follows the track id (and size): for CodedFrames video, the
    /// composition time and the frame; otherwise the packet's body.
    pub body: Bytes,
}

/// A multitrack message, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Multitrack {
    pub kind: MediaKind,
    /// Video: the frame type (1 = keyframe); audio: 0.
    pub frame_type: u8,
    pub layout: Layout,
    pub tracks: Vec<Track>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MultitrackError {
    #[error("the message ends inside its multitrack header")]
    Truncated,
    #[error("a track declares {declared} bytes where {left} are left")]
    TrackOverrun { declared: usize, left: usize },
    #[error("multitrack layout {0} is reserved")]
    ReservedLayout(u8),
    #[error("a multitrack message nests another multitrack packet type")]
    Nested,
    #[error("more than {MAX_MOD_EX} ModEx prefixes")]
    TooManyModEx,
}

/// Reads `payload` as a multitrack message; `Ok(None)` when it is not one
/// (a legacy or single-track enhanced message).
pub fn read(kind: MediaKind, payload: &Bytes) -> Result<Option<Multitrack>, MultitrackError> {
    let Some(&first) = payload.first() else {
        return Ok(None);
    };
    let (frame_type, multitrack_type) = match kind {
        MediaKind::Video if first & 0x80 != 0 => ((first >> 4) & 0x07, VIDEO_MULTITRACK),
        MediaKind::Audio if first >> 4 == SOUND_EX_HEADER => (0, AUDIO_MULTITRACK),
        _ => return Ok(None),
    };
    let mut at = 1;
    let mut packet_type = first & 0x0f;
    let mut prefixes = 0;
    while packet_type == MOD_EX {
        prefixes += 1;
        if prefixes > MAX_MOD_EX {
            return Err(MultitrackError::TooManyModEx);
        }
        let mut size = usize::from(*payload.get(at).ok_or(MultitrackError::Truncated)?) + 1;
        at += 1;
        if size == 256 {
            let wide = payload.get(at..at + 2).ok_or(MultitrackError::Truncated)?;
            size = usize::from(u16::from_be_bytes([wide[0], wide[1]])) + 1;
            at += 2;
        }
        at += size;
        // ModExType (4 bits) | the next packet type.
        packet_type = payload.get(at).ok_or(MultitrackError::Truncated)? & 0x0f;
        at += 1;
    }
    if packet_type != multitrack_type {
        return Ok(None);
    }
    let byte = *payload.get(at).ok_or(MultitrackError::Truncated)?;
    at += 1;
    let layout = match byte >> 4 {
        0 => Layout::OneTrack,
        1 => Layout::ManyTracks,
        2 => Layout::ManyTracksManyCodecs,
        other => return Err(MultitrackError::ReservedLayout(other)),
    };
    let packet_type = byte & 0x0f;
    if packet_type == multitrack_type || packet_type == MOD_EX {
        return Err(MultitrackError::Nested);
    }
    let fourcc_at = |at: usize| -> Result<[u8; 4], MultitrackError> {
        let bytes = payload.get(at..at + 4).ok_or(MultitrackError::Truncated)?;
        Ok([bytes[0], bytes[1], bytes[2], bytes[3]])
    };
    let mut shared_fourcc = None;
    if layout != Layout::ManyTracksManyCodecs {
        shared_fourcc = Some(fourcc_at(at)?);
        at += 4;
    }
    let mut tracks = Vec::new();
    while at < payload.len() && tracks.len() < 256 {
        let fourcc = match shared_fourcc {
            Some(fourcc) => fourcc,
            None => {
                let fourcc = fourcc_at(at)?;
                at += 4;
                fourcc
            }
        };
        let id = *payload.get(at).ok_or(MultitrackError::Truncated)?;
        at += 1;
        let end = match layout {
            Layout::OneTrack => payload.len(),
            _ => {
                let size = payload.get(at..at + 3).ok_or(MultitrackError::Truncated)?;
                at += 3;
                let declared = (usize::from(size[0]) << 16)
                    | (usize::from(size[1]) << 8)
                    | usize::from(size[2]);
                let left = payload.len() - at;
                if declared > left {
                    return Err(MultitrackError::TrackOverrun { declared, left });
                }
                at + declared
            }
        };
        tracks.push(Track {
            id,
            fourcc,
            packet_type,
            body: payload.slice(at..end),
        });
        at = end;
        if layout == Layout::OneTrack {
            break;
        }
    }
    Ok(Some(Multitrack {
        kind,
        frame_type,
        layout,
        tracks,
    }))
}

/// How a multitrack message counts for the pipeline, as
/// `(keyframe, sequence_header)`; `None` when `payload` is not multitrack.
/// A keyframe is one of track 0, where every consumer (single-track ones
/// too) can start; a message that does not read is neither, so it is
/// relayed but never started from nor kept as a header.
pub fn classify(kind: MediaKind, payload: &Bytes) -> Option<(bool, bool)> {
    let multitrack = match read(kind, payload) {
        Ok(None) => return None,
        Ok(Some(multitrack)) => multitrack,
        Err(_) => return Some((false, false)),
    };
    let packet_type = multitrack.tracks.first().map(|track| track.packet_type);
    let sequence_header = match kind {
        // SequenceStart, MPEG2TSSequenceStart.
        MediaKind::Video => matches!(packet_type, Some(0 | 5)),
        // SequenceStart, MultichannelConfig.
        _ => matches!(packet_type, Some(0 | 4)),
    };
    let keyframe = kind == MediaKind::Video
        && multitrack.frame_type == FRAME_KEY
        && !sequence_header
        && multitrack.tracks.iter().any(|track| track.id == 0);
    Some((keyframe, sequence_header))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A track as a test writes it: its own FourCC (ManyTracksManyCodecs
    /// only), its id and its body.
    pub(crate) type TrackSpec<'a> = (Option<&'a [u8; 4]>, u8, &'a [u8]);

    /// A video multitrack message as the specification lays it out.
    pub(crate) fn video(
        frame_type: u8,
        layout: u8,
        packet_type: u8,
        shared: Option<&[u8; 4]>,
        tracks: &[TrackSpec<'_>],
    ) -> Bytes {
        let mut out = vec![
            0x80 | (frame_type << 4) | VIDEO_MULTITRACK,
            (layout << 4) | packet_type,
        ];
        if let Some(fourcc) = shared {
            out.extend_from_slice(fourcc);
        }
        for (fourcc, id, body) in tracks {
            if let Some(fourcc) = fourcc {
                out.extend_from_slice(*fourcc);
            }
            out.push(*id);
            if layout != 0 {
                out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            }
            out.extend_from_slice(body);
        }
        Bytes::from(out)
    }

    #[test]
    fn a_multitrack_keyframe_is_one_of_track_0_and_sequence_starts_are_headers() {
        let with_0 = video(
            1,
            1,
            CODED_FRAMES,
            Some(b"avc1"),
            &[(None, 1, b"a"), (None, 0, b"b")],
        );
        assert_eq!(classify(MediaKind::Video, &with_0), Some((true, false)));
        let without_0 = video(1, 0, CODED_FRAMES, Some(b"avc1"), &[(None, 1, b"a")]);
        assert_eq!(classify(MediaKind::Video, &without_0), Some((false, false)));
        let header = video(1, 0, 0, Some(b"avc1"), &[(None, 1, b"\x01")]);
        assert_eq!(classify(MediaKind::Video, &header), Some((false, true)));
        let audio_header = Bytes::from_static(b"\x95\x00mp4a\x01\x12\x10");
        assert_eq!(
            classify(MediaKind::Audio, &audio_header),
            Some((false, true))
        );
        let cut = Bytes::from_static(b"\x96\x11av");
        assert_eq!(classify(MediaKind::Video, &cut), Some((false, false)));
        let plain = Bytes::from_static(b"\x17\x01\x00\x00\x00x");
        assert_eq!(classify(MediaKind::Video, &plain), None);
    }

    #[test]
    fn mod_ex_prefixes_are_skipped() {
        // ModEx (size 3, TimestampOffsetNano) then Multitrack.
        let mut payload = vec![0x80 | 0x10 | MOD_EX, 2, 0, 0, 5, VIDEO_MULTITRACK];
        // OneTrack layout (0) | CodedFrames.
        payload.push(CODED_FRAMES);
        payload.extend_from_slice(b"avc1");
        payload.extend_from_slice(b"\x00\x00\x00\x00z");
        let read = read(MediaKind::Video, &Bytes::from(payload))
            .unwrap()
            .unwrap();
        assert_eq!(read.tracks.len(), 1);
        assert_eq!(&read.tracks[0].body[..], b"\x00\x00\x00z");
    }

    #[test]
    fn plain_messages_are_not_multitrack_and_bad_ones_are_errors() {
        let plain = [
            &b"\x17\x01\x00\x00\x00x"[..],
            b"\x91hvc1\x00\x00\x00x",
            b"\xaf\x01x",
            b"",
        ];
        for payload in plain {
            let payload = Bytes::from_static(payload);
            assert_eq!(read(MediaKind::Video, &payload), Ok(None), "{payload:?}");
        }
        let overrun = video(1, 1, CODED_FRAMES, Some(b"avc1"), &[(None, 0, b"abc")]);
        let cut = overrun.slice(..overrun.len() - 1);
        assert!(matches!(
            read(MediaKind::Video, &cut),
            Err(MultitrackError::TrackOverrun { .. })
        ));
        let reserved = Bytes::from_static(b"\x96\x31avc1");
        assert_eq!(
            read(MediaKind::Video, &reserved),
            Err(MultitrackError::ReservedLayout(3))
        );
        let nested = Bytes::from_static(b"\x96\x16avc1");
        assert_eq!(
            read(MediaKind::Video, &nested),
            Err(MultitrackError::Nested)
        );
        let modex: Vec<u8> = std::iter::once(0x97)
            .chain([0u8, 0, 0x07].repeat(9))
            .collect();
        assert_eq!(
            read(MediaKind::Video, &Bytes::from(modex)),
            Err(MultitrackError::TooManyModEx)
        );
    }
}
