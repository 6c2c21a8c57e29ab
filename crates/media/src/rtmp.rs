//! RTMP message helpers shared by the ingest (server) and destination
//! (client) sessions: queueing protocol messages on a `ChunkWriter`, reading
//! AMF0 command fields, and the chunk stream ids Prism writes on.
//!
//! rml_rtmp does the handshake, chunk parsing and AMF0 encoding; the command
//! flows are Prism's own (see `prism-ingest::session` and
//! `prism-fanout::client` for why).

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::chunk_io::ChunkDeserializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::{MessagePayload, RtmpMessage, UserControlEventType};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::chunk::{ChunkWriter, MessageHeader};
use crate::message::MediaKind;

/// Chunk stream for protocol control messages (the spec requires 2).
pub const CSID_CONTROL: u8 = 2;
/// Chunk stream for AMF0 commands.
pub const CSID_COMMAND: u8 = 3;
/// Chunk streams for media and data messages, one each so a slow reader's
/// view of one never waits on the other's partial chunk.
pub const CSID_DATA: u8 = 5;
pub const CSID_AUDIO: u8 = 6;
pub const CSID_VIDEO: u8 = 7;

/// The chunk size Prism's ingest announces to encoders (it sends them only
/// small control messages); OBS uses the same.
pub const OUTBOUND_CHUNK_SIZE: u32 = 4096;

/// The chunk size Prism announces to destinations unless `[fanout]
/// chunk_size` says otherwise. Every chunk is one more iovec, and the kernel
/// pays per iovec: measured at 100 destinations, 4096 cost Prism 3-16 %
/// more CPU than this across runs. 60000 is what SRS and node-media-server send with;
/// SRS documents 128 to 65536 as the valid range and warns outside it.
pub const DEFAULT_PUBLISH_CHUNK_SIZE: u32 = 60000;

/// The largest chunk size Prism accepts from a peer by default. The protocol
/// allows up to 2^31-1; a peer asking for more is refused. (A chunk larger
/// than the largest message serves no purpose, so ingest ties this bound to
/// its message-size limit.)
pub const MAX_INBOUND_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

/// The codecs Prism relays with enhanced RTMP (Veovera E-RTMP), as FourCCs:
/// advertised in `connect` to destinations and answered to publishers, so
/// platforms accept HEVC, AV1 and VP9 and encoders offer them.
pub const ENHANCED_FOURCC_LIST: [&str; 5] = ["hvc1", "av01", "vp09", "avc1", "Opus"];

/// `fourCcList` as an AMF0 strict array.
pub fn fourcc_list() -> Amf0Value {
    Amf0Value::StrictArray(ENHANCED_FOURCC_LIST.iter().map(|c| string(c)).collect())
}

#[derive(Debug, thiserror::Error)]
#[error("could not encode RTMP message: {0}")]
pub struct EncodeError(String);

/// Encodes a protocol or command message and queues it, with a full header,
/// on the chunk stream its kind uses.
pub fn queue(
    writer: &mut ChunkWriter,
    message: RtmpMessage,
    message_stream_id: u32,
) -> Result<(), EncodeError> {
    let chunk_stream_id = match &message {
        RtmpMessage::Amf0Command { .. } => CSID_COMMAND,
        RtmpMessage::Amf0Data { .. } => CSID_DATA,
        _ => CSID_CONTROL,
    };
    let payload = message
        .into_message_payload(RtmpTimestamp::new(0), message_stream_id)
        .map_err(|e| EncodeError(e.to_string()))?;
    writer.push(
        MessageHeader {
            chunk_stream_id,
            type_id: payload.type_id,
            message_stream_id,
            timestamp: 0,
        },
        &payload.data,
    );
    Ok(())
}

/// Announces an outbound chunk size and switches the writer to it; the
/// peer reads the announcement before anything queued after it.
pub fn queue_outbound_chunk_size(writer: &mut ChunkWriter, size: u32) -> Result<(), EncodeError> {
    queue(writer, RtmpMessage::SetChunkSize { size }, 0)?;
    writer.set_chunk_size(size as usize);
    Ok(())
}

/// Queues an AMF0 command.
pub fn queue_command(
    writer: &mut ChunkWriter,
    message_stream_id: u32,
    name: &str,
    transaction_id: f64,
    command_object: Amf0Value,
    arguments: Vec<Amf0Value>,
) -> Result<(), EncodeError> {
    queue(
        writer,
        RtmpMessage::Amf0Command {
            command_name: name.to_string(),
            transaction_id,
            command_object,
            additional_arguments: arguments,
        },
        message_stream_id,
    )
}

/// Queues a media or data message with the given (already rebased) timestamp.
pub fn queue_media(
    writer: &mut ChunkWriter,
    kind: MediaKind,
    message_stream_id: u32,
    timestamp: u32,
    payload: &Bytes,
) {
    writer.push(media_header(kind, message_stream_id, timestamp), payload);
}

/// The chunk header fields of a media message: each kind on its own chunk stream.
pub fn media_header(kind: MediaKind, message_stream_id: u32, timestamp: u32) -> MessageHeader {
    let chunk_stream_id = match kind {
        MediaKind::Audio => CSID_AUDIO,
        MediaKind::Video => CSID_VIDEO,
        MediaKind::Data => CSID_DATA,
    };
    MessageHeader {
        chunk_stream_id,
        type_id: kind.type_id(),
        message_stream_id,
        timestamp,
    }
}

/// Builds an AMF0 object from string keys.
pub fn object<const N: usize>(fields: [(&str, Amf0Value); N]) -> Amf0Value {
    Amf0Value::Object(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<HashMap<_, _>>(),
    )
}

pub fn string(value: &str) -> Amf0Value {
    Amf0Value::Utf8String(value.to_string())
}

/// A string field of an AMF0 object, if present.
pub fn object_string<'a>(value: &'a Amf0Value, field: &str) -> Option<&'a str> {
    match value {
        Amf0Value::Object(fields) => match fields.get(field) {
            Some(Amf0Value::Utf8String(s)) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The receiving half both RTMP roles share: the chunk parser, the peer's
/// chunk size and acknowledgement window, and answers to pings. Protocol
/// control messages are handled here; everything else is handed out.
pub struct Inbound {
    parser: ChunkDeserializer,
    max_chunk_size: u32,
    /// The first message parsed by `feed`, not yet handed out.
    pending: Option<MessagePayload>,
    ack_window: Option<u32>,
    bytes_received: u64,
    bytes_acked: u64,
}

/// A byte stream that is not RTMP, or asks for more than Prism allows.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct InboundError {
    pub message: String,
    /// The peer went past one of Prism's bounds (as opposed to sending garbage).
    pub limit: bool,
}

impl InboundError {
    fn malformed(message: String) -> Self {
        Self {
            message,
            limit: false,
        }
    }
}

impl From<EncodeError> for InboundError {
    fn from(e: EncodeError) -> Self {
        InboundError::malformed(e.to_string())
    }
}

/// How a decode error over `MAX_AMF0_DEPTH` starts.
pub const AMF0_DEPTH_ERROR: &str = "AMF0 nested deeper than";

impl Default for Inbound {
    fn default() -> Self {
        Self::new()
    }
}

impl Inbound {
    pub fn new() -> Self {
        Self::with_max_chunk_size(MAX_INBOUND_CHUNK_SIZE)
    }

    /// Refuses peers that ask for chunks larger than `max_chunk_size`.
    pub fn with_max_chunk_size(max_chunk_size: u32) -> Self {
        Self {
            parser: ChunkDeserializer::new(),
            max_chunk_size,
            pending: None,
            ack_window: None,
            bytes_received: 0,
            bytes_acked: 0,
        }
    }

    /// Takes bytes read from the peer; then call `next` until it is `None`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), InboundError> {
        debug_assert!(self.pending.is_none(), "drain `next` before feeding more");
        self.bytes_received += bytes.len() as u64;
        self.pending = self
            .parser
            .get_next_message(bytes)
            .map_err(|e| InboundError::malformed(format!("malformed RTMP chunk: {e}")))?;
        Ok(())
    }

    /// The next complete message that is not protocol control. Control
    /// messages are applied (chunk size, acknowledgement window) or answered
    /// (pings) on the way, and an acknowledgement is queued when one is due.
    pub fn next(&mut self, out: &mut ChunkWriter) -> Result<Option<MessagePayload>, InboundError> {
        loop {
            let payload = match self.pending.take() {
                Some(payload) => payload,
                None => match self.parser.get_next_message(&[]) {
                    Ok(Some(payload)) => payload,
                    Ok(None) => {
                        self.queue_ack_if_due(out)?;
                        return Ok(None);
                    }
                    Err(e) => {
                        return Err(InboundError::malformed(format!(
                            "malformed RTMP chunk: {e}"
                        )))
                    }
                },
            };
            if !matches!(payload.type_id, 1 | 4 | 5) {
                return Ok(Some(payload));
            }
            match decode_message(&payload).map_err(InboundError::malformed)? {
                RtmpMessage::SetChunkSize { size } => {
                    if size == 0 || size > self.max_chunk_size {
                        return Err(InboundError {
                            message: format!(
                                "peer asked for chunk size {size}, over the limit of {}",
                                self.max_chunk_size
                            ),
                            limit: true,
                        });
                    }
                    self.parser
                        .set_max_chunk_size(size as usize)
                        .map_err(|e| InboundError::malformed(e.to_string()))?;
                }
                RtmpMessage::WindowAcknowledgement { size } => self.ack_window = Some(size.max(1)),
                RtmpMessage::UserControl {
                    event_type: UserControlEventType::PingRequest,
                    timestamp,
                    ..
                } => queue(
                    out,
                    RtmpMessage::UserControl {
                        event_type: UserControlEventType::PingResponse,
                        timestamp,
                        stream_id: None,
                        buffer_length: None,
                    },
                    0,
                )?,
                _ => {}
            }
        }
    }

    fn queue_ack_if_due(&mut self, out: &mut ChunkWriter) -> Result<(), EncodeError> {
        if let Some(window) = self.ack_window {
            if self.bytes_received - self.bytes_acked >= u64::from(window) {
                self.bytes_acked = self.bytes_received;
                queue(
                    out,
                    RtmpMessage::Acknowledgement {
                        // The sequence number is the byte count so far, mod 2^32.
                        sequence_number: self.bytes_received as u32,
                    },
                    0,
                )?;
            }
        }
        Ok(())
    }
}

/// Parses every complete message in `bytes` (then whatever the parser held
/// back from earlier calls), following SetChunkSize as it goes. For tools and
/// tests that read a peer's replies whole.
pub fn read_messages(
    parser: &mut ChunkDeserializer,
    bytes: &[u8],
) -> Result<Vec<RtmpMessage>, String> {
    let mut messages = Vec::new();
    let mut input = bytes;
    while let Some(payload) = parser.get_next_message(input).map_err(|e| e.to_string())? {
        input = &[];
        let message = decode_message(&payload)?;
        if let RtmpMessage::SetChunkSize { size } = message {
            parser
                .set_max_chunk_size(size as usize)
                .map_err(|e| e.to_string())?;
        }
        messages.push(message);
    }
    Ok(messages)
}

/// Runs the RTMP handshake on `socket` as `peer` (a client speaks first);
/// returns the bytes the peer sent past the handshake.
pub async fn handshake<S>(socket: &mut S, peer: PeerType) -> Result<Vec<u8>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let is_client = peer == PeerType::Client;
    let mut handshake = Handshake::new(peer);
    if is_client {
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| format!("handshake: {e:?}"))?;
        socket
            .write_all(&c0c1)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .read(&mut buf)
            .await
            .map_err(|e| format!("read failed: {e}"))?;
        if n == 0 {
            return Err("connection closed during the RTMP handshake".into());
        }
        let (response, leftover) = match handshake.process_bytes(&buf[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => (response_bytes, None),
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => (response_bytes, Some(remaining_bytes)),
            Err(e) => return Err(format!("bad RTMP handshake: {e:?}")),
        };
        socket
            .write_all(&response)
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        if let Some(leftover) = leftover {
            return Ok(leftover);
        }
    }
}

/// How deep AMF0 objects and arrays may nest. rml_amf0 decodes recursively,
/// so a message of a million nested objects (an "AMF0 bomb") would overflow
/// the stack and abort the whole process; real commands nest two or three deep.
pub const MAX_AMF0_DEPTH: usize = 32;

/// Whether AMF0 `data` nests no deeper than `MAX_AMF0_DEPTH`. An iterative
/// scan; anything it cannot follow is left to the decoder's own errors.
pub fn amf0_depth_ok(data: &[u8]) -> bool {
    // Each open container: object-like (properties until 00 00 09) or a
    // strict array (a count of values).
    enum Open {
        Properties,
        Values(u32),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Option<()> {
        if *at + n > data.len() {
            return None;
        }
        *at += n;
        Some(())
    };
    let u16_at = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    loop {
        // Inside an object: a property name first, or the end marker.
        match stack.last_mut() {
            Some(Open::Properties) => {
                let Some(len) = u16_at(at) else { return true };
                if len == 0 && data.get(at + 2) == Some(&9) {
                    at += 3;
                    stack.pop();
                    continue;
                }
                if take(&mut at, 2 + len).is_none() {
                    return true;
                }
            }
            Some(Open::Values(0)) => {
                stack.pop();
                continue;
            }
            Some(Open::Values(n)) => *n -= 1,
            None => {}
        }
        let Some(&marker) = data.get(at) else {
            return true;
        };
        at += 1;
        let step = match marker {
            0 => take(&mut at, 8),
            1 => take(&mut at, 1),
            2 => u16_at(at).and_then(|n| take(&mut at, 2 + n)),
            3 | 8 => {
                if marker == 8 && take(&mut at, 4).is_none() {
                    return true;
                }
                stack.push(Open::Properties);
                Some(())
            }
            5 | 6 => Some(()),
            10 => {
                let Some(count) = u32_at(at) else { return true };
                at += 4;
                stack.push(Open::Values(count));
                Some(())
            }
            11 => take(&mut at, 10),
            12 => u32_at(at).and_then(|n| take(&mut at, 4 + n as usize)),
            _ => return true,
        };
        if step.is_none() {
            return true;
        }
        if stack.len() > MAX_AMF0_DEPTH {
            return false;
        }
    }
}

/// Decodes a non-media message. AMF0 (and "AMF3") commands are decoded here
/// rather than by rml_rtmp, whose command decoder panics on a command of
/// fewer than three values (servers send such `onBWDone`/`_result` messages); a command missing
/// its transaction id or object gets 0 and null, as other servers read it.
pub fn decode_message(payload: &MessagePayload) -> Result<RtmpMessage, String> {
    if matches!(payload.type_id, 15 | 17 | 18 | 20) && !amf0_depth_ok(&payload.data) {
        return Err(format!("{AMF0_DEPTH_ERROR} {MAX_AMF0_DEPTH} levels"));
    }
    let body: &[u8] = match payload.type_id {
        20 => &payload.data,
        // "AMF3" commands from Flash-era clients: AMF0 behind a zero byte.
        17 => payload.data.strip_prefix(&[0]).unwrap_or(&payload.data),
        _ => return payload.to_rtmp_message().map_err(|e| e.to_string()),
    };
    let mut cursor = std::io::Cursor::new(body);
    let mut values = rml_amf0::deserialize(&mut cursor)
        .map_err(|e| format!("bad AMF0 command: {e}"))?
        .into_iter();
    let command_name = match values.next() {
        Some(Amf0Value::Utf8String(name)) => name,
        _ => return Err("AMF0 command does not start with its name".into()),
    };
    let transaction_id = match values.next() {
        Some(Amf0Value::Number(id)) => id,
        _ => 0.0,
    };
    let command_object = values.next().unwrap_or(Amf0Value::Null);
    Ok(RtmpMessage::Amf0Command {
        command_name,
        transaction_id,
        command_object,
        additional_arguments: values.collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command_payload(values: Vec<Amf0Value>) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 20,
            message_stream_id: 0,
            data: Bytes::from(rml_amf0::serialize(&values).unwrap()),
        }
    }

    #[test]
    fn amf0_bombs_are_refused_before_decoding() {
        // A million nested objects: the recursive decoder would overflow the stack.
        let mut bomb = vec![2, 0, 4, b'c', b'o', b'n', b'n', 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for _ in 0..1_000_000 {
            bomb.extend_from_slice(&[3, 0, 1, b'a']);
        }
        assert!(!amf0_depth_ok(&bomb));
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(0),
            type_id: 20,
            message_stream_id: 0,
            data: Bytes::from(bomb),
        };
        assert!(decode_message(&payload)
            .unwrap_err()
            .contains("nested deeper"));
        // Strict arrays nest too.
        let mut arrays = Vec::new();
        for _ in 0..100 {
            arrays.extend_from_slice(&[10, 0, 0, 0, 1]);
        }
        assert!(!amf0_depth_ok(&arrays));
    }

    #[test]
    fn real_commands_pass_the_depth_check() {
        let values = vec![
            string("connect"),
            Amf0Value::Number(1.0),
            object([
                ("app", string("live")),
                (
                    "nested",
                    object([("deeper", object([("x", Amf0Value::Null)]))]),
                ),
            ]),
            Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), string("a")]),
        ];
        assert!(amf0_depth_ok(&rml_amf0::serialize(&values).unwrap()));
        assert!(amf0_depth_ok(&[]));
        assert!(amf0_depth_ok(&[0xff, 1, 2]));
    }

    #[test]
    fn short_commands_decode_instead_of_panicking() {
        let message = decode_message(&command_payload(vec![string("onBWDone")])).unwrap();
        assert!(matches!(
            message,
            RtmpMessage::Amf0Command { ref command_name, transaction_id, command_object: Amf0Value::Null, .. }
                if command_name == "onBWDone" && transaction_id == 0.0
        ));
        assert!(decode_message(&command_payload(vec![Amf0Value::Number(1.0)])).is_err());
        assert!(decode_message(&command_payload(vec![])).is_err());
    }

    #[test]
    fn full_commands_keep_their_arguments() {
        let message = decode_message(&command_payload(vec![
            string("publish"),
            Amf0Value::Number(5.0),
            Amf0Value::Null,
            string("key"),
            string("live"),
        ]))
        .unwrap();
        match message {
            RtmpMessage::Amf0Command {
                additional_arguments,
                ..
            } => {
                assert_eq!(additional_arguments, vec![string("key"), string("live")])
            }
            other => panic!("{other:?}"),
        }
    }
}
