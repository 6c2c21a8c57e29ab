//! The RTMP chunk reader: bytes from a peer in, whole messages out.
//!
//! Written for Prism instead of using rml_rtmp's `ChunkDeserializer`, which
//! keeps one reassembly buffer for all chunk streams (so a legal sender that
//! interleaves the chunks of an audio message with those of a video message
//! loses sync), computes `length - chunk_size` without checking (a remote
//! panic), and reserves a message's declared length before any limit applies.
//!
//! Here each chunk stream id has its own header state and its own partial
//! message, as the spec describes (formats 0-3, extended timestamps including
//! on type-3 chunks, Abort Message, Set Chunk Size). Memory is bounded by
//! `ReaderLimits` whatever the peer sends: at most `max_chunk_streams` header
//! states, at most `max_partial_messages` messages in progress, each at most
//! `max_message_len` bytes, plus less than one chunk header of unparsed input.
//! Payload bytes move into their message as they arrive, so the reader never
//! waits for (or buffers) a whole chunk.

use bytes::{Buf, BytesMut};

use crate::message::{control_u32, type_id, Message};

/// The chunk size every RTMP connection starts with.
pub const DEFAULT_CHUNK_SIZE: usize = 128;
/// The inline timestamp value that says an extended timestamp follows.
const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;
/// Basic header (up to 3) + type-0 message header (11) + extended timestamp (4).
const MAX_CHUNK_HEADER: usize = 18;

/// What one connection's reader may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderLimits {
    /// The largest message a peer may declare (RTMP's own cap is 2^24 - 1).
    pub max_message_len: usize,
    /// Messages in progress at once, over all chunk streams. Interleaving
    /// senders need one per chunk stream they use (audio, video, data,
    /// commands: real encoders use three or four).
    pub max_partial_messages: usize,
    /// Chunk stream ids with header state. The protocol allows 65,599; real
    /// encoders use a handful, and nginx-rtmp refuses ids from 32 up.
    pub max_chunk_streams: usize,
    /// The largest chunk size a peer may set.
    pub max_chunk_size: usize,
}

impl Default for ReaderLimits {
    fn default() -> Self {
        Self {
            max_message_len: crate::MAX_MESSAGE_LEN,
            max_partial_messages: 8,
            max_chunk_streams: 64,
            max_chunk_size: crate::MAX_MESSAGE_LEN,
        }
    }
}

/// Why a byte stream is not RTMP, or asks for more than the limits allow.
/// The reader is unusable after one; the connection should end.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk type {fmt} on chunk stream {csid} before any type-0 header")]
    NoPriorHeader { fmt: u8, csid: u32 },
    #[error("a type-{fmt} header on chunk stream {csid} interrupts an unfinished message")]
    InterruptedMessage { fmt: u8, csid: u32 },
    #[error("the peer set chunk size {size}; the limit is 1 to {max}")]
    ChunkSize { size: u32, max: usize },
    #[error("a {len}-byte message on chunk stream {csid} is over the limit of {max} bytes")]
    MessageTooLarge { len: usize, csid: u32, max: usize },
    #[error("more than {max} messages in progress at once")]
    TooManyPartialMessages { max: usize },
    #[error("more than {max} chunk streams in use")]
    TooManyChunkStreams { max: usize },
    #[error("a {len}-byte {what} message is too short")]
    ShortControl { what: &'static str, len: usize },
}

impl ChunkError {
    /// Whether the peer went past one of Prism's bounds (as opposed to
    /// sending something that is not RTMP).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            ChunkError::ChunkSize { .. }
                | ChunkError::MessageTooLarge { .. }
                | ChunkError::TooManyPartialMessages { .. }
                | ChunkError::TooManyChunkStreams { .. }
        )
    }
}

/// One chunk stream's state: the header fields later chunks inherit, and
/// the message in progress.
#[derive(Debug)]
struct ChunkStream {
    csid: u32,
    /// Of the latest message started on this chunk stream.
    timestamp: u32,
    /// What a type-3 chunk that starts a new message adds to `timestamp`:
    /// the delta of the last type-1/2 header, 0 after a type-0 header (as
    /// nginx-rtmp and librtmp read it).
    delta: u32,
    length: usize,
    type_id: u8,
    stream_id: u32,
    /// The last type-0/1/2 header carried an extended timestamp, so every
    /// type-3 chunk after it carries one too.
    extended: bool,
    /// The message in progress, with `length - partial.len()` bytes to go.
    partial: Option<BytesMut>,
}

/// Where the reader is inside the byte stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// At a chunk boundary: the next bytes are a chunk header.
    Header,
    /// Inside a chunk's payload: `remaining` bytes of it go to the message
    /// on chunk stream `stream` (an index into `streams`).
    Payload { stream: usize, remaining: usize },
}

/// Reassembles messages from one peer's chunks.
#[derive(Debug)]
pub struct ChunkReader {
    limits: ReaderLimits,
    /// Input not parsed yet: after `next` returns `None`, less than one
    /// chunk header.
    input: BytesMut,
    chunk_size: usize,
    streams: Vec<ChunkStream>,
    partials: usize,
    position: Position,
    bytes_received: u64,
    failed: Option<ChunkError>,
}

impl ChunkReader {
    pub fn new(limits: ReaderLimits) -> Self {
        Self {
            limits,
            input: BytesMut::new(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            streams: Vec::new(),
            partials: 0,
            position: Position::Header,
            bytes_received: 0,
            failed: None,
        }
    }

    /// Changes the largest message accepted from now on (a server raises it
    /// once a publish is authenticated).
    pub fn set_max_message_len(&mut self, max_message_len: usize) {
        self.limits.max_message_len = max_message_len;
    }

    pub fn limits(&self) -> ReaderLimits {
        self.limits
    }

    /// The chunk size the peer currently sends with.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Every byte fed so far (what RTMP acknowledgements count).
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Bytes held: unparsed input plus every partial message so far.
    pub fn buffered_bytes(&self) -> usize {
        self.input.len()
            + self
                .streams
                .iter()
                .filter_map(|s| s.partial.as_ref())
                .map(|p| p.capacity())
                .sum::<usize>()
    }

    /// Takes bytes read from the peer; then call `next_message` until it returns
    /// `Ok(None)` before feeding more.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.bytes_received += bytes.len() as u64;
        self.input.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more input is needed.
    /// Set Chunk Size and Abort Message are applied here and not returned:
    /// they belong to the chunk layer.
    pub fn next_message(&mut self) -> Result<Option<Message>, ChunkError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.read_message() {
            Err(error) => {
                self.failed = Some(error.clone());
                Err(error)
            }
            ok => ok,
        }
    }

    fn read_message(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some(message) = self.next_any()? else {
                return Ok(None);
            };
            match message.type_id {
                type_id::SET_CHUNK_SIZE => {
                    let size = control_body(&message.payload, "Set Chunk Size")? & 0x7FFF_FFFF;
                    if size == 0 || size as usize > self.limits.max_chunk_size {
                        return Err(ChunkError::ChunkSize {
                            size,
                            max: self.limits.max_chunk_size,
                        });
                    }
                    self.chunk_size = size as usize;
                }
                type_id::ABORT => {
                    let csid = control_body(&message.payload, "Abort Message")?;
                    if let Some(stream) = self.streams.iter_mut().find(|s| s.csid == csid) {
                        if stream.partial.take().is_some() {
                            self.partials -= 1;
                        }
                    }
                }
                _ => return Ok(Some(message)),
            }
        }
    }

    /// The next complete message of any type.
    fn next_any(&mut self) -> Result<Option<Message>, ChunkError> {
        loop {
            match self.position {
                Position::Header => {
                    let Some(started) = self.read_header()? else {
                        return Ok(None);
                    };
                    if let Some(message) = started {
                        return Ok(Some(message));
                    }
                }
                Position::Payload { stream, remaining } => {
                    if self.input.is_empty() {
                        return Ok(None);
                    }
                    let take = remaining.min(self.input.len());
                    let state = &mut self.streams[stream];
                    let partial = state
                        .partial
                        .as_mut()
                        .expect("a chunk payload always has its message");
                    partial.extend_from_slice(&self.input[..take]);
                    self.input.advance(take);
                    if take < remaining {
                        self.position = Position::Payload {
                            stream,
                            remaining: remaining - take,
                        };
                        return Ok(None);
                    }
                    self.position = Position::Header;
                    if partial.len() == state.length {
                        return Ok(Some(self.complete(stream)));
                    }
                }
            }
        }
    }

    /// Parses one chunk header if the input holds all of it. `Ok(None)`:
    /// wait for more input. `Ok(Some(Some(message)))`: the header started a
    /// message of length 0, complete at once.
    #[allow(clippy::option_option)]
    fn read_header(&mut self) -> Result<Option<Option<Message>>, ChunkError> {
        let input = &self.input[..];
        let Some(&first) = input.first() else {
            return Ok(None);
        };
        let fmt = first >> 6;
        let (csid, mut at) = match first & 0x3F {
            0 => match input.get(1) {
                Some(&b) => (64 + b as u32, 2),
                None => return Ok(None),
            },
            1 => match input.get(1..3) {
                Some(b) => (64 + b[0] as u32 + 256 * b[1] as u32, 3),
                None => return Ok(None),
            },
            id => (id as u32, 1),
        };
        let header_len = match fmt {
            0 => 11,
            1 => 7,
            2 => 3,
            _ => 0,
        };
        let Some(fields) = input.get(at..at + header_len) else {
            return Ok(None);
        };
        at += header_len;
        let u24 = |b: &[u8]| u32::from_be_bytes([0, b[0], b[1], b[2]]);
        let timestamp_field = (fmt < 3).then(|| u24(fields));

        let index = match self.streams.iter().position(|s| s.csid == csid) {
            Some(index) => index,
            None if fmt != 0 => return Err(ChunkError::NoPriorHeader { fmt, csid }),
            None if self.streams.len() >= self.limits.max_chunk_streams => {
                return Err(ChunkError::TooManyChunkStreams {
                    max: self.limits.max_chunk_streams,
                })
            }
            None => {
                self.streams.push(ChunkStream {
                    csid,
                    timestamp: 0,
                    delta: 0,
                    length: 0,
                    type_id: 0,
                    stream_id: 0,
                    extended: false,
                    partial: None,
                });
                self.streams.len() - 1
            }
        };
        let stream = &self.streams[index];
        let extended = match timestamp_field {
            Some(field) => field == EXTENDED_TIMESTAMP,
            None => stream.extended,
        };
        let extended_value = if extended {
            let Some(b) = input.get(at..at + 4) else {
                return Ok(None);
            };
            at += 4;
            Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        } else {
            None
        };
        debug_assert!(at <= MAX_CHUNK_HEADER);

        // The whole header is here: apply it.
        let stream = &mut self.streams[index];
        let continuation = stream.partial.is_some();
        if continuation && fmt != 3 {
            return Err(ChunkError::InterruptedMessage { fmt, csid });
        }
        if !continuation {
            let timestamp_field = extended_value.or(timestamp_field);
            match fmt {
                0 => {
                    stream.timestamp = timestamp_field.unwrap_or_default();
                    stream.delta = 0;
                }
                1 | 2 => {
                    stream.delta = timestamp_field.unwrap_or_default();
                    stream.timestamp = stream.timestamp.wrapping_add(stream.delta);
                }
                _ => stream.timestamp = stream.timestamp.wrapping_add(stream.delta),
            }
            if fmt < 3 {
                stream.extended = extended;
            }
            if fmt <= 1 {
                stream.length = u24(&fields[3..6]) as usize;
                stream.type_id = fields[6];
            }
            if fmt == 0 {
                stream.stream_id =
                    u32::from_le_bytes([fields[7], fields[8], fields[9], fields[10]]);
            }
            if stream.length > self.limits.max_message_len {
                return Err(ChunkError::MessageTooLarge {
                    len: stream.length,
                    csid,
                    max: self.limits.max_message_len,
                });
            }
            if self.partials >= self.limits.max_partial_messages {
                return Err(ChunkError::TooManyPartialMessages {
                    max: self.limits.max_partial_messages,
                });
            }
            // Exactly the declared length, which the limit above bounds.
            stream.partial = Some(BytesMut::with_capacity(stream.length));
            self.partials += 1;
        }
        self.input.advance(at);
        let stream = &self.streams[index];
        let done = stream.partial.as_ref().map_or(0, BytesMut::len);
        let remaining = (stream.length - done).min(self.chunk_size);
        if remaining == 0 {
            return Ok(Some(Some(self.complete(index))));
        }
        self.position = Position::Payload {
            stream: index,
            remaining,
        };
        Ok(Some(None))
    }

    fn complete(&mut self, index: usize) -> Message {
        let stream = &mut self.streams[index];
        let payload = stream
            .partial
            .take()
            .expect("only a message in progress completes")
            .freeze();
        self.partials -= 1;
        Message {
            type_id: stream.type_id,
            stream_id: stream.stream_id,
            timestamp: stream.timestamp,
            payload,
        }
    }
}

/// The 4-byte body of a Set Chunk Size or Abort Message.
fn control_body(payload: &[u8], what: &'static str) -> Result<u32, ChunkError> {
    control_u32(payload).ok_or(ChunkError::ShortControl {
        what,
        len: payload.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handmade::{basic, type0};
    use bytes::Bytes;

    fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Vec<Message> {
        crate::connection::read_messages(reader, bytes).unwrap()
    }

    fn payload(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    /// The refused publisher: the chunks of an audio message (csid 4)
    /// between the chunks of a video message (csid 6), 128-byte chunks.
    #[test]
    fn interleaved_chunk_streams_reassemble_separately() {
        let video = payload(1000, 0x55);
        let audio = payload(300, 0xAA);
        let mut wire = type0(6, 40, video.len(), 9, 1);
        let mut v = video.chunks(128);
        let mut a = audio.chunks(128);
        wire.extend_from_slice(v.next().unwrap());
        wire.extend(type0(4, 41, audio.len(), 8, 1));
        wire.extend_from_slice(a.next().unwrap());
        loop {
            let (nv, na) = (v.next(), a.next());
            if nv.is_none() && na.is_none() {
                break;
            }
            if let Some(c) = nv {
                wire.push(0xC0 | 6);
                wire.extend_from_slice(c);
            }
            if let Some(c) = na {
                wire.push(0xC0 | 4);
                wire.extend_from_slice(c);
            }
        }
        // Fed one byte at a time and all at once, the result is the same.
        for step in [1, 7, wire.len()] {
            let mut reader = ChunkReader::new(ReaderLimits::default());
            let mut messages = Vec::new();
            for piece in wire.chunks(step) {
                messages.extend(read_all(&mut reader, piece));
            }
            assert_eq!(messages.len(), 2, "step {step}");
            let audio_msg = messages.iter().find(|m| m.type_id == 8).unwrap();
            let video_msg = messages.iter().find(|m| m.type_id == 9).unwrap();
            assert_eq!(&audio_msg.payload[..], &audio[..]);
            assert_eq!(audio_msg.timestamp, 41);
            assert_eq!(&video_msg.payload[..], &video[..]);
            assert_eq!(video_msg.timestamp, 40);
            assert_eq!(video_msg.stream_id, 1);
            assert!(reader.buffered_bytes() == 0);
        }
    }

    /// The remote panic: an unfinished message on csid 3, a 10-byte
    /// message on csid 4, then type-3 chunks on csid 4.
    #[test]
    fn the_short_message_after_an_unfinished_one_does_not_panic() {
        let mut wire = type0(3, 0, 1000, 20, 0);
        wire.extend(payload(128, 1));
        wire.extend(type0(4, 0, 10, 9, 1));
        wire.extend(payload(10, 2));
        for _ in 0..4 {
            wire.push(0xC0 | 4);
            wire.extend(payload(10, 3));
        }
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let messages = read_all(&mut reader, &wire);
        // Each type-3 chunk on csid 4 starts a new 10-byte message.
        assert_eq!(messages.len(), 5);
        assert!(messages.iter().all(|m| m.payload.len() == 10));
    }

    #[test]
    fn timestamps_follow_types_one_two_and_three() {
        let mut wire = type0(4, 1000, 2, 8, 1);
        wire.extend([1, 2]);
        // Type 2: delta 20.
        wire.extend(basic(2, 4));
        wire.extend([0, 0, 20]);
        wire.extend([3, 4]);
        // Type 3 new message: the same delta again.
        wire.extend(basic(3, 4));
        wire.extend([5, 6]);
        // Type 1: delta 5, a new length and type.
        wire.extend(basic(1, 4));
        wire.extend([0, 0, 5, 0, 0, 1, 18]);
        wire.push(7);
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let messages = read_all(&mut reader, &wire);
        let stamps: Vec<_> = messages.iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, [1000, 1020, 1040, 1045]);
        assert_eq!(messages[3].type_id, 18);
        assert_eq!(&messages[3].payload[..], &[7]);
        // A type-3 message right after a type-0 one repeats its timestamp.
        let mut wire = type0(5, 77, 1, 8, 1);
        wire.push(1);
        wire.extend(basic(3, 5));
        wire.push(2);
        let messages = read_all(&mut ChunkReader::new(ReaderLimits::default()), &wire);
        assert_eq!(messages[1].timestamp, 77);
    }

    #[test]
    fn extended_timestamps_repeat_on_type_three_chunks() {
        let body = payload(300, 9);
        let ts = 0x0123_4567;
        let mut wire = type0(6, ts, body.len(), 9, 1);
        wire.extend_from_slice(&body[..128]);
        for part in body[128..].chunks(128) {
            wire.push(0xC6);
            wire.extend_from_slice(&ts.to_be_bytes());
            wire.extend_from_slice(part);
        }
        // A type-2 header with an extended delta, then a type-3 message
        // that repeats it.
        wire.extend(basic(2, 6));
        wire.extend([0xff, 0xff, 0xff]);
        wire.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        wire.extend_from_slice(&body[..128]);
        for part in body[128..].chunks(128) {
            wire.push(0xC6);
            wire.extend_from_slice(&0x0100_0000u32.to_be_bytes());
            wire.extend_from_slice(part);
        }
        wire.push(0xC6);
        wire.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        wire.extend_from_slice(&body[..128]);
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let messages = read_all(&mut reader, &wire);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].timestamp, ts);
        assert_eq!(&messages[0].payload[..], &body[..]);
        assert_eq!(messages[1].timestamp, ts + 0x0100_0000);
        assert_eq!(&messages[1].payload[..], &body[..]);
        // The third message is still in progress.
        assert_eq!(reader.partials, 1);
    }

    #[test]
    fn two_and_three_byte_chunk_stream_ids() {
        for csid in [64, 319, 320, 65_599] {
            let mut wire = type0(csid, 5, 200, 9, 1);
            wire.extend(payload(128, 0));
            wire.extend(basic(3, csid));
            wire.extend(payload(72, 0));
            let messages = read_all(&mut ChunkReader::new(ReaderLimits::default()), &wire);
            assert_eq!(messages.len(), 1, "csid {csid}");
            assert_eq!(messages[0].payload.len(), 200);
        }
    }

    #[test]
    fn set_chunk_size_and_abort_apply_mid_stream() {
        let mut wire = type0(2, 0, 4, 1, 0);
        wire.extend(4096u32.to_be_bytes());
        // A 3000-byte message in one chunk, at the new size.
        wire.extend(type0(6, 0, 3000, 9, 1));
        wire.extend(payload(3000, 1));
        // An unfinished message on csid 7, aborted, then a new one there.
        wire.extend(type0(7, 0, 5000, 9, 1));
        wire.extend(payload(100, 2));
        // The abort arrives mid-chunk? No: chunk boundaries are fixed, so the
        // sender finishes this chunk first at 4096, then aborts.
        wire.extend(payload(3996, 2));
        wire.extend(type0(2, 0, 4, 2, 0));
        wire.extend(7u32.to_be_bytes());
        wire.extend(type0(7, 10, 3, 8, 1));
        wire.extend([1, 2, 3]);
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let messages = read_all(&mut reader, &wire);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].payload.len(), 3000);
        assert_eq!(&messages[1].payload[..], &[1, 2, 3]);
        assert_eq!(reader.chunk_size(), 4096);
        assert_eq!(reader.partials, 0);
    }

    #[test]
    fn a_chunk_size_change_between_chunks_of_a_message() {
        // 200 bytes on csid 6: the first chunk at 128, then the peer raises
        // the chunk size and the rest comes in one bigger chunk.
        let body = payload(200, 4);
        let mut wire = type0(6, 0, 200, 9, 1);
        wire.extend_from_slice(&body[..128]);
        wire.extend(type0(2, 0, 4, 1, 0));
        wire.extend(1000u32.to_be_bytes());
        wire.push(0xC6);
        wire.extend_from_slice(&body[128..]);
        let messages = read_all(&mut ChunkReader::new(ReaderLimits::default()), &wire);
        assert_eq!(messages.len(), 1);
        assert_eq!(&messages[0].payload[..], &body[..]);
    }

    #[test]
    fn limits_are_errors_not_allocations() {
        let limits = ReaderLimits {
            max_message_len: 65_536,
            max_partial_messages: 2,
            max_chunk_streams: 3,
            max_chunk_size: 65_536,
        };
        // A 16 MiB declaration is refused at its header; nothing is reserved.
        let mut reader = ChunkReader::new(limits);
        reader.feed(&type0(3, 0, 0xFF_FFFF, 9, 1));
        let error = reader.next_message().unwrap_err();
        assert!(error.is_limit(), "{error}");
        assert!(reader.buffered_bytes() < MAX_CHUNK_HEADER);
        // So is a third message in progress.
        let mut reader = ChunkReader::new(limits);
        let mut wire = Vec::new();
        for csid in 3..6 {
            wire.extend(type0(csid, 0, 1000, 9, 1));
            wire.extend(payload(128, 0));
        }
        reader.feed(&wire);
        assert_eq!(
            reader.next_message().unwrap_err(),
            ChunkError::TooManyPartialMessages { max: 2 }
        );
        // And a fourth chunk stream id, even with no message in progress.
        let mut reader = ChunkReader::new(limits);
        let wire: Vec<u8> = (3..7).flat_map(|csid| type0(csid, 0, 0, 9, 1)).collect();
        reader.feed(&wire);
        for _ in 0..3 {
            assert!(reader.next_message().unwrap().is_some());
        }
        assert_eq!(
            reader.next_message().unwrap_err(),
            ChunkError::TooManyChunkStreams { max: 3 }
        );
        // A chunk size beyond the limit, and zero.
        for size in [0u32, 65_537] {
            let mut wire = type0(2, 0, 4, 1, 0);
            wire.extend(size.to_be_bytes());
            let mut reader = ChunkReader::new(limits);
            reader.feed(&wire);
            assert!(matches!(
                reader.next_message(),
                Err(ChunkError::ChunkSize { .. })
            ));
        }
    }

    #[test]
    fn malformed_sequences_are_errors() {
        let mut reader = ChunkReader::new(ReaderLimits::default());
        reader.feed(&[0xC3, 1, 2, 3]);
        assert_eq!(
            reader.next_message().unwrap_err(),
            ChunkError::NoPriorHeader { fmt: 3, csid: 3 }
        );
        // The reader stays failed.
        assert!(reader.next_message().is_err());
        let mut wire = type0(3, 0, 1000, 20, 0);
        wire.extend(payload(128, 0));
        wire.extend(type0(3, 0, 10, 20, 0));
        let mut reader = ChunkReader::new(ReaderLimits::default());
        reader.feed(&wire);
        assert!(matches!(
            reader.next_message().unwrap_err(),
            ChunkError::InterruptedMessage { fmt: 0, csid: 3 }
        ));
    }

    /// Messages rml_rtmp's serializer writes (an independent writer, with
    /// header compression Prism's own writer never uses) read back whole.
    #[test]
    fn reads_what_rml_rtmp_writes() {
        use rml_rtmp::chunk_io::ChunkSerializer;
        use rml_rtmp::messages::MessagePayload;
        use rml_rtmp::time::RtmpTimestamp;
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for i in 0..50u32 {
            let data = Bytes::from(payload(100 + (i as usize % 3) * 150, i as u8));
            let (type_id, ts) = if i % 2 == 0 { (9, i * 33) } else { (8, i * 21) };
            let message = MessagePayload {
                timestamp: RtmpTimestamp::new(ts),
                type_id,
                message_stream_id: 1,
                data: data.clone(),
            };
            let packet = serializer.serialize(&message, false, false).unwrap();
            wire.extend_from_slice(&packet.bytes);
            expected.push((type_id, ts, data));
        }
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let mut got = Vec::new();
        for piece in wire.chunks(333) {
            got.extend(read_all(&mut reader, piece));
        }
        assert_eq!(got.len(), expected.len());
        for (m, (type_id, ts, data)) in got.iter().zip(&expected) {
            assert_eq!((m.type_id, m.timestamp, &m.payload), (*type_id, *ts, data));
        }
    }
}
