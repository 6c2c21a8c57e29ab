//! The server side of an RTMP publish, as a pure state machine: bytes from the
//! encoder go in, events come out, replies are queued on a `ChunkWriter`.
//!
//! Built on rml_rtmp's chunk parser and message codec rather than its
//! `ServerSession`, because that session reduces `onMetaData` to 11 fixed
//! fields (Prism relays the publisher's metadata whole, byte for byte) and
//! panics on a short `@setDataFrame`; the command flow a publisher needs is
//! small enough to own.

use bytes::{Bytes, BytesMut};
use rml_amf0::Amf0Value;
use rml_rtmp::messages::{
    MessagePayload, PeerBandwidthLimitType, RtmpMessage, UserControlEventType,
};

use prism_media::chunk::ChunkWriter;
use prism_media::flv::{self, AMF0_SET_DATA_FRAME};
use prism_media::rtmp::{self, object, string};
use prism_media::{MediaKind, MediaMessage};

/// The window after which we ask the encoder to acknowledge our bytes, and
/// the bandwidth we announce; both are what common servers send.
const WINDOW_ACK_SIZE: u32 = 2_500_000;

#[derive(Debug)]
pub enum IngestEvent {
    /// The encoder asks to publish `stream_key`; answer with `accept_publish`
    /// or `reject_publish`. The key is secret: never log it.
    PublishRequested { stream_key: String },
    /// A media or data message of the accepted publish.
    Media(MediaMessage),
    /// The encoder ended its publish (`FCUnpublish`, `deleteStream`).
    PublishEnded,
}

impl IngestError {
    /// Whether the connection ran into one of Prism's bounds (chunk size,
    /// AMF0 nesting) rather than plain garbage.
    pub fn is_limit(&self) -> bool {
        match self {
            IngestError::Inbound(e) => e.limit,
            IngestError::Protocol(message) => message.starts_with(rtmp::AMF0_DEPTH_ERROR),
            IngestError::MessageTooLarge { .. } => true,
            IngestError::Encode(_) => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed RTMP: {0}")]
    Protocol(String),
    #[error(transparent)]
    Inbound(#[from] rtmp::InboundError),
    #[error("a {size}-byte message is over the limit of {max} bytes")]
    MessageTooLarge { size: usize, max: usize },
    #[error(transparent)]
    Encode(#[from] rtmp::EncodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    None,
    Requested { stream_id: u32 },
    Accepted { stream_id: u32 },
}

/// Messages larger than this end the connection unless the caller sets
/// another bound: 8 MiB holds a 4K keyframe at a high bitrate.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

pub struct IngestSession {
    inbound: rtmp::Inbound,
    max_message_bytes: usize,
    connected: bool,
    next_stream_id: u32,
    publish: Publish,
}

impl Default for IngestSession {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestSession {
    pub fn new() -> Self {
        Self::with_max_message_bytes(DEFAULT_MAX_MESSAGE_BYTES)
    }

    /// A session that refuses messages over `max_message_bytes` (RTMP itself
    /// caps them at 16 MiB).
    pub fn with_max_message_bytes(max_message_bytes: usize) -> Self {
        Self {
            inbound: rtmp::Inbound::with_max_chunk_size(
                max_message_bytes.min(u32::MAX as usize) as u32
            ),
            max_message_bytes,
            connected: false,
            next_stream_id: 1,
            publish: Publish::None,
        }
    }

    /// Feeds bytes read from the encoder (after the handshake); appends
    /// events to `events` and queues replies on `out`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        out: &mut ChunkWriter,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        self.inbound.feed(bytes)?;
        while let Some(payload) = self.inbound.next(out)? {
            self.handle_payload(payload, out, events)?;
        }
        Ok(())
    }

    fn handle_payload(
        &mut self,
        payload: MessagePayload,
        out: &mut ChunkWriter,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        if payload.data.len() > self.max_message_bytes {
            return Err(IngestError::MessageTooLarge {
                size: payload.data.len(),
                max: self.max_message_bytes,
            });
        }
        // Media takes the fast path: no AMF decoding, the payload moves as is.
        let kind = match payload.type_id {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            18 => Some(MediaKind::Data),
            _ => None,
        };
        if let Some(kind) = kind {
            if self.publish
                == (Publish::Accepted {
                    stream_id: payload.message_stream_id,
                })
                && !payload.data.is_empty()
            {
                let data = match kind {
                    MediaKind::Data => normalize_data(payload.data),
                    _ => Some(payload.data),
                };
                if let Some(data) = data {
                    events.push(IngestEvent::Media(MediaMessage::new(
                        kind,
                        payload.timestamp.value,
                        data,
                    )));
                }
            }
            return Ok(());
        }
        // Anything else (AMF3 commands, aborts, bandwidth notices) needs no answer.
        if let RtmpMessage::Amf0Command {
            command_name,
            transaction_id,
            command_object,
            additional_arguments,
        } = rtmp::decode_message(&payload).map_err(IngestError::Protocol)?
        {
            self.handle_command(
                &command_name,
                transaction_id,
                &command_object,
                &additional_arguments,
                payload.message_stream_id,
                out,
                events,
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_command(
        &mut self,
        name: &str,
        transaction_id: f64,
        command_object: &Amf0Value,
        arguments: &[Amf0Value],
        message_stream_id: u32,
        out: &mut ChunkWriter,
        events: &mut Vec<IngestEvent>,
    ) -> Result<(), IngestError> {
        match name {
            "connect" if !self.connected => {
                self.connected = true;
                // Enhanced RTMP: a publisher that lists FourCCs learns which
                // of them Prism relays (all of them pass through untouched).
                let enhanced = matches!(command_object, Amf0Value::Object(fields) if fields.contains_key("fourCcList"));
                rtmp::queue(
                    out,
                    RtmpMessage::WindowAcknowledgement {
                        size: WINDOW_ACK_SIZE,
                    },
                    0,
                )?;
                rtmp::queue(
                    out,
                    RtmpMessage::SetPeerBandwidth {
                        size: WINDOW_ACK_SIZE,
                        limit_type: PeerBandwidthLimitType::Dynamic,
                    },
                    0,
                )?;
                rtmp::queue_outbound_chunk_size(out, rtmp::OUTBOUND_CHUNK_SIZE)?;
                rtmp::queue_command(
                    out,
                    0,
                    "_result",
                    transaction_id,
                    if enhanced {
                        object([
                            ("fmsVer", string("FMS/3,0,1,123")),
                            ("capabilities", Amf0Value::Number(31.0)),
                            ("fourCcList", rtmp::fourcc_list()),
                        ])
                    } else {
                        object([
                            ("fmsVer", string("FMS/3,0,1,123")),
                            ("capabilities", Amf0Value::Number(31.0)),
                        ])
                    },
                    vec![object([
                        ("level", string("status")),
                        ("code", string("NetConnection.Connect.Success")),
                        ("description", string("Connection succeeded.")),
                        ("objectEncoding", Amf0Value::Number(0.0)),
                    ])],
                )?;
            }
            "createStream" => {
                let stream_id = self.next_stream_id;
                self.next_stream_id += 1;
                rtmp::queue_command(
                    out,
                    0,
                    "_result",
                    transaction_id,
                    Amf0Value::Null,
                    vec![Amf0Value::Number(stream_id as f64)],
                )?;
            }
            "publish" if self.publish == Publish::None => {
                let stream_key = match arguments.first() {
                    Some(Amf0Value::Utf8String(key)) => key.clone(),
                    _ => String::new(),
                };
                self.publish = Publish::Requested {
                    stream_id: message_stream_id,
                };
                events.push(IngestEvent::PublishRequested { stream_key });
            }
            "publish" => {
                self.queue_status(
                    out,
                    message_stream_id,
                    "error",
                    "NetStream.Publish.BadName",
                    "this connection is already publishing",
                )?;
            }
            "play" => {
                self.queue_status(
                    out,
                    message_stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "Prism relays published streams; it does not serve playback",
                )?;
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if matches!(self.publish, Publish::Accepted { .. }) {
                    self.publish = Publish::None;
                    events.push(IngestEvent::PublishEnded);
                }
            }
            // releaseStream, FCPublish, getStreamLength and the like: a plain
            // result keeps clients that wait for one moving.
            _ if transaction_id != 0.0 => {
                rtmp::queue_command(out, 0, "_result", transaction_id, Amf0Value::Null, vec![])?;
            }
            _ => {}
        }
        Ok(())
    }

    fn queue_status(
        &self,
        out: &mut ChunkWriter,
        stream_id: u32,
        level: &str,
        code: &str,
        description: &str,
    ) -> Result<(), IngestError> {
        rtmp::queue_command(
            out,
            stream_id,
            "onStatus",
            0.0,
            Amf0Value::Null,
            vec![object([
                ("level", string(level)),
                ("code", string(code)),
                ("description", string(description)),
            ])],
        )?;
        Ok(())
    }

    /// Accepts the pending publish request: media flows from now on.
    pub fn accept_publish(&mut self, out: &mut ChunkWriter) -> Result<(), IngestError> {
        let Publish::Requested { stream_id } = self.publish else {
            return Ok(());
        };
        self.publish = Publish::Accepted { stream_id };
        rtmp::queue(
            out,
            RtmpMessage::UserControl {
                event_type: UserControlEventType::StreamBegin,
                stream_id: Some(stream_id),
                buffer_length: None,
                timestamp: None,
            },
            0,
        )?;
        self.queue_status(
            out,
            stream_id,
            "status",
            "NetStream.Publish.Start",
            "Publishing.",
        )
    }

    /// Refuses the pending publish request with the encoder-visible reason.
    pub fn reject_publish(
        &mut self,
        out: &mut ChunkWriter,
        description: &str,
    ) -> Result<(), IngestError> {
        let Publish::Requested { stream_id } = self.publish else {
            return Ok(());
        };
        self.publish = Publish::None;
        self.queue_status(
            out,
            stream_id,
            "error",
            "NetStream.Publish.BadName",
            description,
        )
    }
}

/// Data messages go out as publishers send them, except that bare
/// `onMetaData` gains the `@setDataFrame` prefix destinations expect, and
/// `@clearDataFrame` (which only makes sense to the server it was sent to)
/// is dropped.
fn normalize_data(data: Bytes) -> Option<Bytes> {
    if data.starts_with(b"\x02\x00\x0f@clearDataFrame") {
        return None;
    }
    if flv::is_metadata(&data) && !data.starts_with(AMF0_SET_DATA_FRAME) {
        let mut prefixed = BytesMut::with_capacity(AMF0_SET_DATA_FRAME.len() + data.len());
        prefixed.extend_from_slice(AMF0_SET_DATA_FRAME);
        prefixed.extend_from_slice(&data);
        return Some(prefixed.freeze());
    }
    Some(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_media::chunk::MessageHeader;
    use prism_media::rtmp::object_string;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    /// Serializes what an encoder would send.
    fn encoder_sends(messages: Vec<(RtmpMessage, u32)>) -> Vec<u8> {
        let mut writer = ChunkWriter::new(128);
        for (message, stream_id) in messages {
            rtmp::queue(&mut writer, message, stream_id).unwrap();
        }
        writer.to_vec()
    }

    fn command(name: &str, txn: f64, obj: Amf0Value, args: Vec<Amf0Value>) -> RtmpMessage {
        RtmpMessage::Amf0Command {
            command_name: name.into(),
            transaction_id: txn,
            command_object: obj,
            additional_arguments: args,
        }
    }

    fn replies(out: &mut ChunkWriter, parser: &mut ChunkDeserializer) -> Vec<RtmpMessage> {
        let messages = rtmp::read_messages(parser, &out.to_vec()).unwrap();
        out.clear();
        messages
    }

    fn status_code(message: &RtmpMessage) -> Option<String> {
        match message {
            RtmpMessage::Amf0Command {
                command_name,
                additional_arguments,
                ..
            } if command_name == "onStatus" => {
                object_string(&additional_arguments[0], "code").map(str::to_string)
            }
            _ => None,
        }
    }

    fn publish_flow(session: &mut IngestSession, out: &mut ChunkWriter) -> Vec<IngestEvent> {
        let mut events = Vec::new();
        let input = encoder_sends(vec![
            (
                command("connect", 1.0, object([("app", string("live"))]), vec![]),
                0,
            ),
            (
                command("releaseStream", 2.0, Amf0Value::Null, vec![string("k")]),
                0,
            ),
            (command("createStream", 3.0, Amf0Value::Null, vec![]), 0),
            (
                command(
                    "publish",
                    0.0,
                    Amf0Value::Null,
                    vec![string("live_key"), string("live")],
                ),
                1,
            ),
        ]);
        session.handle_input(&input, out, &mut events).unwrap();
        events
    }

    #[test]
    fn accepted_publish_relays_media_and_metadata_whole() {
        let mut session = IngestSession::new();
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkDeserializer::new();
        let events = publish_flow(&mut session, &mut out);
        assert!(
            matches!(&events[..], [IngestEvent::PublishRequested { stream_key }] if stream_key == "live_key")
        );
        let connect_replies = replies(&mut out, &mut encoder);
        assert!(connect_replies.iter().any(|m| matches!(
            m,
            RtmpMessage::Amf0Command { command_name, additional_arguments, .. }
                if command_name == "_result" && additional_arguments == &vec![Amf0Value::Number(1.0)]
        )));

        session.accept_publish(&mut out).unwrap();
        let accepted = replies(&mut out, &mut encoder);
        assert_eq!(
            status_code(accepted.last().unwrap()).as_deref(),
            Some("NetStream.Publish.Start")
        );

        // Bare onMetaData with an ECMA array carrying a custom field.
        let mut meta =
            b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x01\x00\x06custom\x02\x00\x01x\x00\x00\x09"
                .to_vec();
        let raw_meta = meta.clone();
        let video = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0xaa, 0xbb]);
        let mut writer = ChunkWriter::new(128);
        for (type_id, body) in [
            (18u8, Bytes::from(std::mem::take(&mut meta))),
            (9, video.clone()),
        ] {
            writer.push(
                MessageHeader {
                    chunk_stream_id: 4,
                    type_id,
                    message_stream_id: 1,
                    timestamp: 40,
                },
                &body,
            );
        }
        let mut events = Vec::new();
        session
            .handle_input(&writer.to_vec(), &mut out, &mut events)
            .unwrap();
        match &events[..] {
            [IngestEvent::Media(m), IngestEvent::Media(v)] => {
                assert_eq!(m.kind, MediaKind::Data);
                assert!(m.payload.starts_with(AMF0_SET_DATA_FRAME));
                assert_eq!(&m.payload[AMF0_SET_DATA_FRAME.len()..], &raw_meta[..]);
                assert_eq!(v.payload, video);
                assert!(v.keyframe);
                assert_eq!(v.timestamp, 40);
            }
            other => panic!("unexpected events {other:?}"),
        }

        let mut events = Vec::new();
        let end = encoder_sends(vec![(
            command("FCUnpublish", 5.0, Amf0Value::Null, vec![string("k")]),
            0,
        )]);
        session.handle_input(&end, &mut out, &mut events).unwrap();
        assert!(matches!(&events[..], [IngestEvent::PublishEnded]));
    }

    #[test]
    fn an_enhanced_publisher_is_told_the_fourccs_prism_relays() {
        let mut session = IngestSession::new();
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkDeserializer::new();
        let mut events = Vec::new();
        let connect = object([
            ("app", string("live")),
            (
                "fourCcList",
                Amf0Value::StrictArray(vec![string("hvc1"), string("av01")]),
            ),
        ]);
        let input = encoder_sends(vec![(command("connect", 1.0, connect, vec![]), 0)]);
        session.handle_input(&input, &mut out, &mut events).unwrap();
        let result = replies(&mut out, &mut encoder)
            .into_iter()
            .find_map(|m| match m {
                RtmpMessage::Amf0Command {
                    command_name,
                    command_object,
                    ..
                } if command_name == "_result" => Some(command_object),
                _ => None,
            })
            .unwrap();
        match result {
            Amf0Value::Object(fields) => {
                assert_eq!(fields.get("fourCcList"), Some(&rtmp::fourcc_list()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejected_publish_gets_an_error_status_and_no_media() {
        let mut session = IngestSession::new();
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkDeserializer::new();
        publish_flow(&mut session, &mut out);
        replies(&mut out, &mut encoder);
        session
            .reject_publish(&mut out, "unknown stream key")
            .unwrap();
        let rejected = replies(&mut out, &mut encoder);
        assert_eq!(
            status_code(&rejected[0]).as_deref(),
            Some("NetStream.Publish.BadName")
        );

        let mut writer = ChunkWriter::new(4096);
        writer.push(
            MessageHeader {
                chunk_stream_id: 4,
                type_id: 9,
                message_stream_id: 1,
                timestamp: 0,
            },
            &Bytes::from_static(&[0x17, 1, 0, 0, 0]),
        );
        let mut events = Vec::new();
        session
            .handle_input(&writer.to_vec(), &mut out, &mut events)
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn messages_over_the_size_limit_end_the_session() {
        let mut session = IngestSession::with_max_message_bytes(1000);
        let mut out = ChunkWriter::new(128);
        let mut events = Vec::new();
        let mut writer = ChunkWriter::new(128);
        let header = MessageHeader {
            chunk_stream_id: 4,
            type_id: 9,
            message_stream_id: 1,
            timestamp: 0,
        };
        writer.push(header, &Bytes::from(vec![0x27; 1000]));
        session
            .handle_input(&writer.to_vec(), &mut out, &mut events)
            .unwrap();
        writer.clear();
        writer.push(header, &Bytes::from(vec![0x27; 1001]));
        let error = session
            .handle_input(&writer.to_vec(), &mut out, &mut events)
            .unwrap_err();
        assert!(
            error.is_limit() && error.to_string().contains("1001-byte message"),
            "{error}"
        );
    }

    #[test]
    fn absurd_chunk_size_and_garbage_end_the_session_with_an_error() {
        let mut session = IngestSession::new();
        let mut out = ChunkWriter::new(128);
        let mut events = Vec::new();
        let big = encoder_sends(vec![(RtmpMessage::SetChunkSize { size: 0x7fff_ffff }, 0)]);
        let error = session
            .handle_input(&big, &mut out, &mut events)
            .unwrap_err();
        assert!(
            error.to_string().contains("chunk size 2147483647"),
            "{error}"
        );
        let mut session = IngestSession::new();
        let garbage = [
            0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(session
            .handle_input(&garbage, &mut out, &mut events)
            .is_err());
    }
}

#[cfg(test)]
mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever an encoder sends after the handshake, the session returns
        /// an error or carries on; it never panics.
        #[test]
        fn arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8)) {
            let mut session = IngestSession::new();
            let mut out = ChunkWriter::new(128);
            let mut events = Vec::new();
            for chunk in chunks {
                if session.handle_input(&chunk, &mut out, &mut events).is_err() {
                    break;
                }
            }
        }

        /// Plausible chunk headers (small chunk stream ids, message types that
        /// reach the command decoder) with random bodies.
        #[test]
        fn plausible_chunks(messages in proptest::collection::vec((0u8..4, 1u8..23, proptest::collection::vec(any::<u8>(), 0..300)), 1..12)) {
            let mut session = IngestSession::new();
            let mut out = ChunkWriter::new(128);
            let mut events = Vec::new();
            let mut wire = ChunkWriter::new(128);
            for (stream, type_id, body) in messages {
                wire.push(
                    prism_media::chunk::MessageHeader { chunk_stream_id: 3 + stream, type_id, message_stream_id: 1, timestamp: 0 },
                    &Bytes::from(body),
                );
            }
            let _ = session.handle_input(&wire.to_vec(), &mut out, &mut events);
        }
    }
}
