//! What both RTMP roles share once the handshake is done: the receiving
//! half (chunk reader, the peer's acknowledgement window, answers to pings)
//! and the helpers that queue messages on a `ChunkWriter`.

use bytes::Bytes;

use crate::chunk_reader::{ChunkError, ChunkReader, ReaderLimits};
use crate::chunk_writer::{ChunkWriter, MessageHeader};
use crate::message::{control_u32, csid, type_id, user_control, Command, Control, Message};

/// The receiving half of a connection. Protocol control messages are
/// applied or answered here; everything else is handed out.
#[derive(Debug)]
pub struct Inbound {
    reader: ChunkReader,
    /// The peer's window: acknowledge each time this many bytes arrived.
    ack_window: Option<u32>,
    bytes_acked: u64,
    /// The latest sequence number the peer acknowledged (bytes it received
    /// from us, mod 2^32).
    peer_acknowledged: Option<u32>,
    /// The peer sent User Control StreamEOF (a server whose publisher left).
    stream_eof: bool,
}

impl Inbound {
    pub fn new(limits: ReaderLimits) -> Self {
        Self {
            reader: ChunkReader::new(limits),
            ack_window: None,
            bytes_acked: 0,
            peer_acknowledged: None,
            stream_eof: false,
        }
    }

    pub fn reader(&self) -> &ChunkReader {
        &self.reader
    }

    pub fn reader_mut(&mut self) -> &mut ChunkReader {
        &mut self.reader
    }

    /// The latest byte count the peer acknowledged, mod 2^32.
    pub fn peer_acknowledged(&self) -> Option<u32> {
        self.peer_acknowledged
    }

    /// Whether a StreamEOF arrived since the last call.
    pub fn take_stream_eof(&mut self) -> bool {
        std::mem::take(&mut self.stream_eof)
    }

    /// Takes bytes read from the peer; then call `next` until it is `None`.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.reader.feed(bytes);
    }

    /// The next message that is not protocol control. Control messages are
    /// applied (window) or answered (pings) on the way, and an
    /// acknowledgement is queued on `out` when one is due.
    pub fn next(&mut self, out: &mut ChunkWriter) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some(message) = self.reader.next_message()? else {
                self.queue_ack_if_due(out);
                return Ok(None);
            };
            match message.type_id {
                type_id::WINDOW_ACK_SIZE => {
                    if let Some(size) = control_u32(&message.payload) {
                        self.ack_window = Some(size.max(1));
                    }
                }
                type_id::ACKNOWLEDGEMENT => {
                    self.peer_acknowledged = control_u32(&message.payload);
                }
                type_id::USER_CONTROL => {
                    let event = message
                        .payload
                        .get(..2)
                        .map(|b| u16::from_be_bytes([b[0], b[1]]));
                    self.stream_eof |= event == Some(user_control::STREAM_EOF);
                    if event == Some(user_control::PING_REQUEST) {
                        if let Some(ts) = control_u32(message.payload.get(2..).unwrap_or_default())
                        {
                            queue_control(out, Control::PingResponse(ts));
                        }
                    }
                }
                type_id::SET_PEER_BANDWIDTH => {}
                _ => return Ok(Some(message)),
            }
        }
    }

    fn queue_ack_if_due(&mut self, out: &mut ChunkWriter) {
        let Some(window) = self.ack_window else {
            return;
        };
        let received = self.reader.bytes_received();
        if received - self.bytes_acked >= u64::from(window) {
            self.bytes_acked = received;
            // The sequence number is the byte count so far, mod 2^32.
            queue_control(out, Control::Acknowledgement(received as u32));
        }
    }
}

/// Queues a protocol control message on chunk stream 2.
pub fn queue_control(out: &mut ChunkWriter, control: Control) {
    let (type_id, body) = control.encode();
    out.push(
        MessageHeader {
            chunk_stream_id: csid::CONTROL,
            type_id,
            message_stream_id: 0,
            timestamp: 0,
        },
        &body,
    );
}

/// Announces an outbound chunk size and switches the writer to it; the
/// peer reads the announcement before anything queued after it.
pub fn queue_chunk_size(out: &mut ChunkWriter, size: u32) {
    queue_control(out, Control::SetChunkSize(size));
    out.set_chunk_size(size as usize);
}

/// Queues an AMF0 command on message stream `stream_id`.
pub fn queue_command(out: &mut ChunkWriter, stream_id: u32, command: &Command) {
    out.push(
        MessageHeader {
            chunk_stream_id: csid::COMMAND,
            type_id: type_id::COMMAND_AMF0,
            message_stream_id: stream_id,
            timestamp: 0,
        },
        &command.encode(),
    );
}

/// The chunk header fields of a media or data message: each type on its
/// own chunk stream.
pub fn media_header(type_id: u8, stream_id: u32, timestamp: u32) -> MessageHeader {
    let chunk_stream_id = match type_id {
        type_id::AUDIO => csid::AUDIO,
        type_id::VIDEO => csid::VIDEO,
        _ => csid::DATA,
    };
    MessageHeader {
        chunk_stream_id,
        type_id,
        message_stream_id: stream_id,
        timestamp,
    }
}

/// Queues a media or data message.
pub fn queue_media(
    out: &mut ChunkWriter,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &Bytes,
) {
    out.push(media_header(type_id, stream_id, timestamp), payload);
}

/// Parses every complete message in `bytes` and what earlier calls left,
/// control messages included; for tools and tests that read a peer's
/// replies whole.
pub fn read_messages(reader: &mut ChunkReader, bytes: &[u8]) -> Result<Vec<Message>, ChunkError> {
    reader.feed(bytes);
    let mut messages = Vec::new();
    while let Some(message) = reader.next_message()? {
        messages.push(message);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_are_answered_and_windows_acknowledged() {
        let mut peer = ChunkWriter::new(128);
        queue_control(&mut peer, Control::WindowAckSize(100));
        let mut ping = user_control::PING_REQUEST.to_be_bytes().to_vec();
        ping.extend_from_slice(&42u32.to_be_bytes());
        peer.push(
            MessageHeader {
                chunk_stream_id: 2,
                type_id: type_id::USER_CONTROL,
                message_stream_id: 0,
                timestamp: 0,
            },
            &Bytes::from(ping),
        );
        queue_media(
            &mut peer,
            type_id::VIDEO,
            1,
            0,
            &Bytes::from(vec![0u8; 150]),
        );
        let mut inbound = Inbound::new(ReaderLimits::default());
        let mut out = ChunkWriter::new(128);
        inbound.feed(&peer.to_vec());
        let media = inbound.next(&mut out).unwrap().unwrap();
        assert_eq!(media.type_id, type_id::VIDEO);
        assert!(inbound.next(&mut out).unwrap().is_none());
        let mut reader = ChunkReader::new(ReaderLimits::default());
        let replies = read_messages(&mut reader, &out.to_vec()).unwrap();
        let types: Vec<u8> = replies.iter().map(|m| m.type_id).collect();
        assert_eq!(types, [type_id::USER_CONTROL, type_id::ACKNOWLEDGEMENT]);
        assert_eq!(&replies[0].payload[..], &[0, 7, 0, 0, 0, 42]);
        assert_eq!(
            control_u32(&replies[1].payload),
            Some(peer.pending_bytes() as u32)
        );
    }
}
