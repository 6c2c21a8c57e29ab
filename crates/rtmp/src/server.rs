//! The server side of an RTMP publish, as a pure state machine: bytes from
//! the encoder go in, events come out, replies are queued on a `ChunkWriter`.
//!
//! Not rml_rtmp's `ServerSession`, which reduces `onMetaData` to 11 fixed
//! fields (Prism relays the publisher's metadata whole, byte for byte) and
//! panics on a short `@setDataFrame`; the command flow a publisher needs is
//! small enough to own.
//!
//! Until a publish is accepted the peer is anonymous, so it may only send
//! messages up to `PRE_PUBLISH_MAX_MESSAGE` bytes (commands are tiny); the
//! configured message limit applies from the accepted publish on. What an
//! unauthenticated connection can make Prism hold is therefore at most
//! `max_partial_messages` × 64 KiB, whatever lengths it declares.

use crate::amf0::Value;
use crate::chunk_reader::{ChunkError, ReaderLimits};
use crate::chunk_writer::ChunkWriter;
use crate::connection::{queue_chunk_size, queue_command, queue_control, Inbound};
use crate::message::{type_id, Command, CommandError, Control, Message};

/// The chunk size the server announces to encoders (it sends them only
/// small control messages); OBS uses the same.
pub const SERVER_CHUNK_SIZE: u32 = 4096;

/// The largest message an encoder may send before its publish is accepted.
pub const PRE_PUBLISH_MAX_MESSAGE: usize = 64 * 1024;

/// The window after which we ask the encoder to acknowledge our bytes, and
/// the bandwidth we announce; both are what common servers send.
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// The codecs Prism relays with enhanced RTMP (Veovera E-RTMP), as FourCCs:
/// advertised in `connect` to destinations and answered to publishers, so
/// platforms accept HEVC, AV1 and VP9 and encoders offer them.
pub const ENHANCED_FOURCC_LIST: [&str; 5] = ["hvc1", "av01", "vp09", "avc1", "Opus"];

/// `fourCcList` as an AMF0 strict array.
pub fn fourcc_list() -> Value {
    Value::StrictArray(
        ENHANCED_FOURCC_LIST
            .iter()
            .map(|c| Value::string(c))
            .collect(),
    )
}

#[derive(Debug)]
pub enum ServerEvent {
    /// The encoder asks to publish `stream_key`; answer with `accept_publish`
    /// or `reject_publish`. The key is secret: never log it. `arguments` is
    /// what followed a `?` in the stream name (`bandwidthtest=true`,
    /// `token=...`), which nginx-rtmp and SRS also take apart from the name.
    PublishRequested {
        stream_key: String,
        arguments: Option<String>,
    },
    /// An audio, video or data message of the accepted publish.
    Media(Message),
    /// The encoder ended its publish (`FCUnpublish`, `deleteStream`).
    PublishEnded,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("malformed RTMP chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed RTMP command: {0}")]
    Command(#[from] CommandError),
}

impl ServerError {
    /// Whether the encoder went past one of Prism's bounds (message size,
    /// chunk size, messages in progress, AMF0 nesting) rather than sending
    /// something that is not RTMP.
    pub fn is_limit(&self) -> bool {
        match self {
            ServerError::Chunk(e) => e.is_limit(),
            ServerError::Command(e) => e.is_limit(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    None,
    Requested { stream_id: u32 },
    Accepted { stream_id: u32 },
}

/// The message stream id the first `createStream` gets.
const FIRST_STREAM_ID: u32 = 1;

/// What one encoder connection may send.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// The largest message once publishing (RTMP's own cap is 16 MiB).
    pub max_message_len: usize,
    /// Messages in progress at once (interleaved chunk streams).
    pub max_partial_messages: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_message_len: 8 * 1024 * 1024,
            max_partial_messages: ReaderLimits::default().max_partial_messages,
        }
    }
}

pub struct ServerSession {
    inbound: Inbound,
    limits: ServerLimits,
    connected: bool,
    app: String,
    next_stream_id: u32,
    publish: Publish,
}

impl ServerSession {
    pub fn new(limits: ServerLimits) -> Self {
        let reader_limits = ReaderLimits {
            max_message_len: PRE_PUBLISH_MAX_MESSAGE.min(limits.max_message_len),
            max_partial_messages: limits.max_partial_messages,
            // A chunk larger than the largest message serves no purpose.
            max_chunk_size: limits.max_message_len.max(128),
            ..ReaderLimits::default()
        };
        Self {
            inbound: Inbound::new(reader_limits),
            limits,
            connected: false,
            app: String::new(),
            next_stream_id: FIRST_STREAM_ID,
            publish: Publish::None,
        }
    }

    /// The application the encoder's `connect` named (`live` in
    /// `rtmp://host/live/KEY`).
    pub fn app(&self) -> &str {
        &self.app
    }

    /// Whether the encoder's `connect` has been answered (admission moves
    /// such a connection past the handshake deadline).
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether a `createStream` has been answered (the publish comes next).
    pub fn is_stream_created(&self) -> bool {
        self.next_stream_id > FIRST_STREAM_ID
    }

    /// Bytes this session holds for the peer (unparsed input and messages
    /// in progress).
    pub fn buffered_bytes(&self) -> usize {
        self.inbound.reader().buffered_bytes()
    }

    /// Feeds bytes read from the encoder (after the handshake); appends
    /// events to `events` and queues replies on `out`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        out: &mut ChunkWriter,
        events: &mut Vec<ServerEvent>,
    ) -> Result<(), ServerError> {
        self.inbound.feed(bytes);
        while let Some(message) = self.inbound.next(out)? {
            self.handle_message(message, out, events)?;
        }
        Ok(())
    }

    fn handle_message(
        &mut self,
        message: Message,
        out: &mut ChunkWriter,
        events: &mut Vec<ServerEvent>,
    ) -> Result<(), ServerError> {
        match message.type_id {
            // Media takes the fast path: no decoding, the payload moves as is.
            type_id::AUDIO | type_id::VIDEO | type_id::DATA_AMF0 => {
                let publishing = self.publish
                    == Publish::Accepted {
                        stream_id: message.stream_id,
                    };
                if publishing && !message.payload.is_empty() {
                    events.push(ServerEvent::Media(message));
                }
            }
            type_id::COMMAND_AMF0 | type_id::COMMAND_AMF3 => {
                let command = Command::decode(message.type_id, &message.payload)?;
                self.handle_command(command, message.stream_id, out, events);
            }
            // AMF3 data, aborts handled below us, bandwidth notices: nothing
            // to answer.
            _ => {}
        }
        Ok(())
    }

    fn handle_command(
        &mut self,
        command: Command,
        message_stream_id: u32,
        out: &mut ChunkWriter,
        events: &mut Vec<ServerEvent>,
    ) {
        let transaction_id = command.transaction_id;
        match command.name.as_str() {
            "connect" if !self.connected => {
                self.connected = true;
                // Told to the authorisation hook; bounded like any name.
                self.app = command
                    .object
                    .get("app")
                    .and_then(Value::as_str)
                    .map(|app| app.chars().take(256).collect())
                    .unwrap_or_default();
                // Enhanced RTMP: a publisher that lists FourCCs learns which
                // of them Prism relays (all of them pass through untouched).
                let enhanced = command.object.get("fourCcList").is_some();
                queue_control(out, Control::WindowAckSize(WINDOW_ACK_SIZE));
                queue_control(out, Control::SetPeerBandwidth(WINDOW_ACK_SIZE, 2));
                queue_chunk_size(out, SERVER_CHUNK_SIZE);
                let mut properties = vec![
                    ("fmsVer".to_string(), Value::string("FMS/3,0,1,123")),
                    ("capabilities".to_string(), Value::Number(31.0)),
                ];
                if enhanced {
                    properties.push(("fourCcList".to_string(), fourcc_list()));
                }
                queue_command(
                    out,
                    0,
                    &Command::new(
                        "_result",
                        transaction_id,
                        Value::Object(properties),
                        vec![Value::object([
                            ("level", Value::string("status")),
                            ("code", Value::string("NetConnection.Connect.Success")),
                            ("description", Value::string("Connection succeeded.")),
                            ("objectEncoding", Value::Number(0.0)),
                        ])],
                    ),
                );
            }
            "createStream" => {
                let stream_id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.saturating_add(1);
                queue_command(
                    out,
                    0,
                    &Command::new(
                        "_result",
                        transaction_id,
                        Value::Null,
                        vec![Value::Number(stream_id as f64)],
                    ),
                );
            }
            "publish" if self.publish == Publish::None => {
                let name = command
                    .arguments
                    .first()
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let (stream_key, arguments) = match name.split_once('?') {
                    Some((key, arguments)) => (key.to_string(), Some(arguments.to_string())),
                    None => (name.to_string(), None),
                };
                self.publish = Publish::Requested {
                    stream_id: message_stream_id,
                };
                events.push(ServerEvent::PublishRequested {
                    stream_key,
                    arguments,
                });
            }
            "publish" => queue_status(
                out,
                message_stream_id,
                "error",
                "NetStream.Publish.BadName",
                "this connection is already publishing",
            ),
            "play" => queue_status(
                out,
                message_stream_id,
                "error",
                "NetStream.Play.Failed",
                "Prism relays published streams; it does not serve playback",
            ),
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if matches!(self.publish, Publish::Accepted { .. }) {
                    self.publish = Publish::None;
                    events.push(ServerEvent::PublishEnded);
                }
            }
            // releaseStream, FCPublish, getStreamLength and the like: a plain
            // result keeps clients that wait for one moving.
            _ if transaction_id != 0.0 => queue_command(
                out,
                0,
                &Command::new("_result", transaction_id, Value::Null, vec![]),
            ),
            _ => {}
        }
    }

    /// Accepts the pending publish request: media flows from now on, and
    /// the configured message size applies.
    pub fn accept_publish(&mut self, out: &mut ChunkWriter) {
        let Publish::Requested { stream_id } = self.publish else {
            return;
        };
        self.publish = Publish::Accepted { stream_id };
        self.inbound
            .reader_mut()
            .set_max_message_len(self.limits.max_message_len);
        queue_control(out, Control::StreamBegin(stream_id));
        queue_status(
            out,
            stream_id,
            "status",
            "NetStream.Publish.Start",
            "Publishing.",
        );
    }

    /// Ends an accepted publish from the server's side (another encoder took
    /// the stream over, or the stream was removed), telling the encoder
    /// why with `NetStream.Publish.BadName`, as a refused publish is told.
    pub fn end_publish(&mut self, out: &mut ChunkWriter, description: &str) {
        let Publish::Accepted { stream_id } = self.publish else {
            return;
        };
        self.publish = Publish::None;
        queue_bad_name(out, stream_id, description);
    }

    /// Refuses the pending publish request with the encoder-visible reason.
    pub fn reject_publish(&mut self, out: &mut ChunkWriter, description: &str) {
        self.reject_publish_as(out, "NetStream.Publish.BadName", description);
    }

    /// Refuses the requested publish with a status `code` of its own
    /// (`NetStream.Publish.Unauthorized` when an authorisation said no).
    pub fn reject_publish_as(&mut self, out: &mut ChunkWriter, code: &str, description: &str) {
        let Publish::Requested { stream_id } = self.publish else {
            return;
        };
        self.publish = Publish::None;
        queue_status(out, stream_id, "error", code, description);
    }
}

/// What an encoder is told when its publish is refused or ended.
fn queue_bad_name(out: &mut ChunkWriter, stream_id: u32, description: &str) {
    queue_status(
        out,
        stream_id,
        "error",
        "NetStream.Publish.BadName",
        description,
    );
}

fn queue_status(out: &mut ChunkWriter, stream_id: u32, level: &str, code: &str, description: &str) {
    queue_command(
        out,
        stream_id,
        &Command::new(
            "onStatus",
            0.0,
            Value::Null,
            vec![Value::object([
                ("level", Value::string(level)),
                ("code", Value::string(code)),
                ("description", Value::string(description)),
            ])],
        ),
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunk_reader::ChunkReader;
    use crate::chunk_writer::MessageHeader;
    use crate::connection::read_messages;
    use bytes::Bytes;

    /// Serializes what an encoder would send.
    fn encoder_sends(commands: Vec<(Command, u32)>) -> Vec<u8> {
        let mut writer = ChunkWriter::new(128);
        for (command, stream_id) in commands {
            queue_command(&mut writer, stream_id, &command);
        }
        writer.to_vec()
    }

    pub(crate) fn replies(out: &mut ChunkWriter, reader: &mut ChunkReader) -> Vec<Command> {
        let messages = read_messages(reader, &out.to_vec()).unwrap();
        out.clear();
        messages
            .into_iter()
            .filter(|m| m.type_id == type_id::COMMAND_AMF0)
            .map(|m| Command::decode(m.type_id, &m.payload).unwrap())
            .collect()
    }

    fn status_code(command: &Command) -> Option<&str> {
        (command.name == "onStatus").then(|| command.info().get_str("code"))?
    }

    fn publish_flow(
        session: &mut ServerSession,
        out: &mut ChunkWriter,
        name: &str,
    ) -> Vec<ServerEvent> {
        let mut events = Vec::new();
        let input = encoder_sends(vec![
            (
                Command::new(
                    "connect",
                    1.0,
                    Value::object([("app", Value::string("live"))]),
                    vec![],
                ),
                0,
            ),
            (
                Command::new("releaseStream", 2.0, Value::Null, vec![Value::string("k")]),
                0,
            ),
            (Command::new("createStream", 3.0, Value::Null, vec![]), 0),
            (
                Command::new(
                    "publish",
                    0.0,
                    Value::Null,
                    vec![Value::string(name), Value::string("live")],
                ),
                1,
            ),
        ]);
        session.handle_input(&input, out, &mut events).unwrap();
        events
    }

    fn media(type_id: u8, payload: Bytes, ts: u32) -> Vec<u8> {
        let mut writer = ChunkWriter::new(128);
        writer.push(
            MessageHeader {
                chunk_stream_id: 4,
                type_id,
                message_stream_id: 1,
                timestamp: ts,
            },
            &payload,
        );
        writer.to_vec()
    }

    #[test]
    fn accepted_publish_relays_media_whole() {
        let mut session = ServerSession::new(ServerLimits::default());
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkReader::new(ReaderLimits::default());
        let events = publish_flow(&mut session, &mut out, "live_key");
        assert!(matches!(
            &events[..],
            [ServerEvent::PublishRequested { stream_key, arguments: None }] if stream_key == "live_key"
        ));
        let connect_replies = replies(&mut out, &mut encoder);
        assert!(connect_replies
            .iter()
            .any(|c| c.name == "_result" && c.arguments == vec![Value::Number(1.0)]));

        session.accept_publish(&mut out);
        let accepted = replies(&mut out, &mut encoder);
        assert_eq!(
            status_code(accepted.last().unwrap()),
            Some("NetStream.Publish.Start")
        );

        let video = Bytes::from_static(&[0x17, 0x01, 0, 0, 0, 0xaa, 0xbb]);
        let mut events = Vec::new();
        session
            .handle_input(&media(9, video.clone(), 40), &mut out, &mut events)
            .unwrap();
        match &events[..] {
            [ServerEvent::Media(m)] => {
                assert_eq!((m.type_id, m.timestamp, &m.payload), (9, 40, &video));
            }
            other => panic!("unexpected events {other:?}"),
        }

        let mut events = Vec::new();
        let end = encoder_sends(vec![(
            Command::new("FCUnpublish", 5.0, Value::Null, vec![Value::string("k")]),
            0,
        )]);
        session.handle_input(&end, &mut out, &mut events).unwrap();
        assert!(matches!(&events[..], [ServerEvent::PublishEnded]));
    }

    #[test]
    fn a_query_string_after_the_key_is_taken_apart() {
        let mut session = ServerSession::new(ServerLimits::default());
        let mut out = ChunkWriter::new(128);
        let events = publish_flow(&mut session, &mut out, "KEY?bandwidthtest=true");
        assert!(matches!(
            &events[..],
            [ServerEvent::PublishRequested { stream_key, arguments: Some(a) }]
                if stream_key == "KEY" && a == "bandwidthtest=true"
        ));
    }

    #[test]
    fn an_enhanced_publisher_is_told_the_fourccs_prism_relays() {
        let mut session = ServerSession::new(ServerLimits::default());
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkReader::new(ReaderLimits::default());
        let mut events = Vec::new();
        let connect = Value::object([
            ("app", Value::string("live")),
            (
                "fourCcList",
                Value::StrictArray(vec![Value::string("hvc1"), Value::string("av01")]),
            ),
        ]);
        let input = encoder_sends(vec![(Command::new("connect", 1.0, connect, vec![]), 0)]);
        session.handle_input(&input, &mut out, &mut events).unwrap();
        let result = replies(&mut out, &mut encoder)
            .into_iter()
            .find(|c| c.name == "_result")
            .unwrap();
        assert_eq!(result.object.get("fourCcList"), Some(&fourcc_list()));
    }

    #[test]
    fn rejected_publish_gets_an_error_status_and_no_media() {
        let mut session = ServerSession::new(ServerLimits::default());
        let mut out = ChunkWriter::new(128);
        let mut encoder = ChunkReader::new(ReaderLimits::default());
        publish_flow(&mut session, &mut out, "k");
        replies(&mut out, &mut encoder);
        session.reject_publish(&mut out, "unknown stream key");
        let rejected = replies(&mut out, &mut encoder);
        assert_eq!(status_code(&rejected[0]), Some("NetStream.Publish.BadName"));
        let mut events = Vec::new();
        session
            .handle_input(
                &media(9, Bytes::from_static(&[0x17, 1, 0, 0, 0]), 0),
                &mut out,
                &mut events,
            )
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn message_limits_before_and_after_the_publish() {
        let limits = ServerLimits {
            max_message_len: 100_000,
            ..ServerLimits::default()
        };
        // Anonymous: a 70,000-byte message is refused at its header.
        let mut session = ServerSession::new(limits);
        let mut out = ChunkWriter::new(128);
        let mut events = Vec::new();
        let error = session
            .handle_input(
                &media(9, Bytes::from(vec![0x27; 70_000]), 0),
                &mut out,
                &mut events,
            )
            .unwrap_err();
        assert!(error.is_limit(), "{error}");
        // Publishing: it is a frame like any other, up to the configured limit.
        let mut session = ServerSession::new(limits);
        publish_flow(&mut session, &mut out, "k");
        session.accept_publish(&mut out);
        session
            .handle_input(
                &media(9, Bytes::from(vec![0x27; 70_000]), 0),
                &mut out,
                &mut events,
            )
            .unwrap();
        assert_eq!(events.len(), 1);
        let error = session
            .handle_input(
                &media(9, Bytes::from(vec![0x27; 100_001]), 0),
                &mut out,
                &mut events,
            )
            .unwrap_err();
        assert!(
            error.is_limit() && error.to_string().contains("100001-byte"),
            "{error}"
        );
    }
}

#[cfg(test)]
mod no_panics {
    use super::*;
    use crate::chunk_writer::MessageHeader;
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever an encoder sends after the handshake, the session returns
        /// an error or carries on; it never panics.
        #[test]
        fn arbitrary_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8)) {
            let mut session = ServerSession::new(ServerLimits::default());
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
            let mut session = ServerSession::new(ServerLimits::default());
            let mut out = ChunkWriter::new(128);
            let mut events = Vec::new();
            let mut wire = ChunkWriter::new(128);
            for (stream, type_id, body) in messages {
                wire.push(
                    MessageHeader { chunk_stream_id: 3 + stream, type_id, message_stream_id: 1, timestamp: 0 },
                    &Bytes::from(body),
                );
            }
            let _ = session.handle_input(&wire.to_vec(), &mut out, &mut events);
        }
    }
}
