//! FLV files: the header, then every message as a tag, as received. A file
//! starts with the stream's sequence headers and metadata so that it plays
//! on its own.

use bytes::Bytes;
use prism_media::flv::{previous_tag_size, tag_header, write_tag};
use prism_media::MediaMessage;

/// `FLV`, version 1, flags (audio 0x04 | video 0x01), header length 9, then
/// the first PreviousTagSize (0).
fn file_header(audio: bool, video: bool) -> [u8; 13] {
    let flags = (u8::from(audio) << 2) | u8::from(video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// The start of a file: its header and `headers` (sequence headers,
/// metadata), each stamped `start_ms`.
pub fn head<'a>(
    headers: impl IntoIterator<Item = &'a MediaMessage>,
    has_audio: bool,
    has_video: bool,
    start_ms: u64,
) -> Vec<u8> {
    let mut out = file_header(has_audio, has_video).to_vec();
    for message in headers {
        write_tag(
            &mut out,
            message.kind.type_id(),
            start_ms as u32,
            &message.payload,
        );
    }
    out
}

/// The tags of `messages`, in order: each a header, the payload (shared,
/// not copied) and its PreviousTagSize.
pub fn tags(messages: &[MediaMessage]) -> Vec<Bytes> {
    let mut parts = Vec::with_capacity(messages.len() * 3);
    for message in messages {
        let len = message.payload.len();
        parts.push(Bytes::copy_from_slice(&tag_header(
            message.kind.type_id(),
            len,
            message.timestamp as u32,
        )));
        parts.push(message.payload.clone());
        parts.push(Bytes::copy_from_slice(&previous_tag_size(len)));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_media::MediaKind;

    #[test]
    fn tags_read_back_with_the_media_crates_reader() {
        let messages = vec![
            MediaMessage::new(
                MediaKind::Video,
                0x0123_4567,
                Bytes::from_static(b"\x17\x01\x00\x00\x00abc"),
            ),
            MediaMessage::new(MediaKind::Audio, 40, Bytes::from_static(b"\xaf\x01xy")),
        ];
        let mut file = head([], true, true, 0);
        for part in tags(&messages) {
            file.extend_from_slice(&part);
        }
        let file = Bytes::from(file);
        let read: Vec<MediaMessage> = prism_media::flv::file_tags(&file).collect();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].timestamp, 0x0123_4567);
        assert_eq!(read[0].payload, messages[0].payload);
        assert_eq!(read[1].kind, MediaKind::Audio);
        assert_eq!(read[1].payload, messages[1].payload);
    }
}
