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
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::time::RtmpTimestamp;

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

/// The chunk size Prism announces: large enough that a typical video frame
/// is a few chunks, small enough for every server seen in practice (OBS uses
/// the same).
pub const OUTBOUND_CHUNK_SIZE: u32 = 4096;

/// The largest chunk size Prism accepts from a peer. The protocol allows up
/// to 2^31-1; a peer asking for more than this is refused.
pub const MAX_INBOUND_CHUNK_SIZE: u32 = 16 * 1024 * 1024;

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
    let chunk_stream_id = match kind {
        MediaKind::Audio => CSID_AUDIO,
        MediaKind::Video => CSID_VIDEO,
        MediaKind::Data => CSID_DATA,
    };
    writer.push(
        MessageHeader {
            chunk_stream_id,
            type_id: kind.type_id(),
            message_stream_id,
            timestamp,
        },
        payload,
    );
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
