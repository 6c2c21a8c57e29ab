//! RTMP messages: the reassembled unit the chunk reader hands out, the
//! protocol control messages, and commands (AMF0, and the "AMF3" envelope
//! Flash-era clients use).

use bytes::Bytes;

use crate::amf0::{self, Amf0Error, Value};

/// RTMP message type ids.
pub mod type_id {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACKNOWLEDGEMENT: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
}

/// One whole message as it came off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub type_id: u8,
    /// The message stream id (0 for the connection's own messages).
    pub stream_id: u32,
    /// Milliseconds, as the peer stamped it (32 bits, wrapping).
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Chunk stream ids Prism writes on.
pub mod csid {
    /// Protocol control messages (the spec requires 2).
    pub const CONTROL: u8 = 2;
    /// Commands.
    pub const COMMAND: u8 = 3;
    /// Media and data, one chunk stream each, so a reader's view of one
    /// never waits on the other's partial chunk.
    pub const DATA: u8 = 5;
    pub const AUDIO: u8 = 6;
    pub const VIDEO: u8 = 7;
}

/// User control event types Prism reads or writes.
pub mod user_control {
    pub const STREAM_BEGIN: u16 = 0;
    pub const STREAM_EOF: u16 = 1;
    pub const SET_BUFFER_LENGTH: u16 = 3;
    pub const PING_REQUEST: u16 = 6;
    pub const PING_RESPONSE: u16 = 7;
}

/// A protocol control message, to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    SetChunkSize(u32),
    Acknowledgement(u32),
    WindowAckSize(u32),
    /// Size and limit type (2: dynamic).
    SetPeerBandwidth(u32, u8),
    StreamBegin(u32),
    PingResponse(u32),
    /// A player's buffer: message stream id and milliseconds.
    SetBufferLength(u32, u32),
}

impl Control {
    /// Type id and body.
    pub fn encode(self) -> (u8, Bytes) {
        let u32_body = |v: u32| Bytes::copy_from_slice(&v.to_be_bytes());
        let event = |event: u16, v: u32| {
            let mut body = event.to_be_bytes().to_vec();
            body.extend_from_slice(&v.to_be_bytes());
            Bytes::from(body)
        };
        match self {
            Control::SetChunkSize(size) => (type_id::SET_CHUNK_SIZE, u32_body(size & 0x7FFF_FFFF)),
            Control::Acknowledgement(n) => (type_id::ACKNOWLEDGEMENT, u32_body(n)),
            Control::WindowAckSize(n) => (type_id::WINDOW_ACK_SIZE, u32_body(n)),
            Control::SetPeerBandwidth(n, limit) => {
                let mut body = n.to_be_bytes().to_vec();
                body.push(limit);
                (type_id::SET_PEER_BANDWIDTH, Bytes::from(body))
            }
            Control::StreamBegin(id) => {
                (type_id::USER_CONTROL, event(user_control::STREAM_BEGIN, id))
            }
            Control::PingResponse(ts) => (
                type_id::USER_CONTROL,
                event(user_control::PING_RESPONSE, ts),
            ),
            Control::SetBufferLength(stream_id, ms) => {
                let mut body = event(user_control::SET_BUFFER_LENGTH, stream_id).to_vec();
                body.extend_from_slice(&ms.to_be_bytes());
                (type_id::USER_CONTROL, Bytes::from(body))
            }
        }
    }
}

/// The leading big-endian u32 of a control message body.
pub fn control_u32(payload: &[u8]) -> Option<u32> {
    payload
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// A command: `connect`, `publish`, `_result`, `onStatus`...
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    /// The command object (often null).
    pub object: Value,
    pub arguments: Vec<Value>,
}

/// Why a command could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("bad AMF0 in command: {0}")]
    Amf0(#[from] Amf0Error),
    #[error("command does not start with its name")]
    NoName,
}

impl CommandError {
    pub fn is_limit(&self) -> bool {
        matches!(self, CommandError::Amf0(e) if e.is_limit())
    }
}

impl Command {
    pub fn new(name: &str, transaction_id: f64, object: Value, arguments: Vec<Value>) -> Self {
        Self {
            name: name.to_string(),
            transaction_id,
            object,
            arguments,
        }
    }

    /// Reads a command message (type 20, or 17: AMF0 behind a zero byte).
    /// A command missing its transaction id or object gets 0 and null, as
    /// servers that send a bare `onBWDone` expect.
    pub fn decode(message_type: u8, payload: &[u8]) -> Result<Command, CommandError> {
        let body = match message_type {
            type_id::COMMAND_AMF3 => payload.strip_prefix(&[0]).unwrap_or(payload),
            _ => payload,
        };
        let mut values = amf0::decode_all(body)?.into_iter();
        let Some(Value::String(name)) = values.next() else {
            return Err(CommandError::NoName);
        };
        let transaction_id = match values.next() {
            Some(Value::Number(id)) => id,
            _ => 0.0,
        };
        let object = values.next().unwrap_or(Value::Null);
        Ok(Command {
            name,
            transaction_id,
            object,
            arguments: values.collect(),
        })
    }

    /// The AMF0 command body (type 20).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(128);
        amf0::encode(&Value::String(self.name.clone()), &mut out);
        amf0::encode(&Value::Number(self.transaction_id), &mut out);
        amf0::encode(&self.object, &mut out);
        for argument in &self.arguments {
            amf0::encode(argument, &mut out);
        }
        Bytes::from(out)
    }

    /// The status object of an `onStatus`/`_error`: the first argument, or
    /// the command object for servers that put it there.
    pub fn info(&self) -> &Value {
        self.arguments.first().unwrap_or(&self.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_commands_decode_with_defaults() {
        let body = amf0::encode_all(&[Value::string("onBWDone")]);
        let command = Command::decode(type_id::COMMAND_AMF0, &body).unwrap();
        assert_eq!(command.name, "onBWDone");
        assert_eq!(command.transaction_id, 0.0);
        assert_eq!(command.object, Value::Null);
        let body = amf0::encode_all(&[Value::Number(1.0)]);
        assert_eq!(
            Command::decode(type_id::COMMAND_AMF0, &body),
            Err(CommandError::NoName)
        );
        assert_eq!(
            Command::decode(type_id::COMMAND_AMF0, &[]),
            Err(CommandError::NoName)
        );
    }

    #[test]
    fn amf3_envelope_and_round_trip() {
        let command = Command::new(
            "publish",
            5.0,
            Value::Null,
            vec![Value::string("key"), Value::string("live")],
        );
        let body = command.encode();
        assert_eq!(
            Command::decode(type_id::COMMAND_AMF0, &body).unwrap(),
            command
        );
        let mut amf3 = vec![0];
        amf3.extend_from_slice(&body);
        assert_eq!(
            Command::decode(type_id::COMMAND_AMF3, &amf3).unwrap(),
            command
        );
    }

    /// The AMF3 variant of the daemon killer: a leading zero, then the bomb.
    #[test]
    fn the_amf3_bomb_is_a_limit_error() {
        let mut bomb = vec![0, 2, 0, 7];
        bomb.extend_from_slice(b"connect");
        bomb.push(0);
        bomb.extend_from_slice(&1f64.to_be_bytes());
        for _ in 0..100_000 {
            bomb.extend_from_slice(&[3, 0, 1, b'a']);
        }
        let error = Command::decode(type_id::COMMAND_AMF3, &bomb).unwrap_err();
        assert!(error.is_limit(), "{error}");
    }
}
