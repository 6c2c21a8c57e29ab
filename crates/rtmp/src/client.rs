//! The publishing side of an RTMP connection to a server, as a pure state
//! machine: bytes from the server go in, events come out, and everything to
//! send is queued on a `ChunkWriter`. No sockets, no clock.
//!
//! Not rml_rtmp's `ClientSession`, which hides the stream id `createStream`
//! returned (media headers need it), sends no `releaseStream`/`FCPublish`
//! (which some platforms expect), cannot add `connect` properties, and drops
//! the server's description when it refuses a publish; the operator needs
//! that text to fix a wrong key.
//!
//! A server is not trusted either: what it sends goes through the same
//! bounded chunk reader and AMF0 decoder as an encoder's bytes, with a
//! smaller message limit (servers send only commands and small notices).

use crate::amf0::Value;
use crate::chunk_reader::{ChunkError, ReaderLimits};
use crate::chunk_writer::ChunkWriter;
use crate::connection::{queue_chunk_size, queue_command, queue_control, Inbound};
use crate::message::{type_id, Command, CommandError, Control};
use crate::server::fourcc_list;

const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE_STREAM: f64 = 2.0;
const TXN_FC_PUBLISH: f64 = 3.0;
const TXN_CREATE_STREAM: f64 = 4.0;
const TXN_FC_UNPUBLISH: f64 = 5.0;

/// The window the server is asked to acknowledge every so many bytes of
/// ours: 256 KiB is an acknowledgement every 2 s at 1 Mbit/s and several a
/// second at 6, so a server that stops processing is noticed in seconds.
pub const DESTINATION_ACK_WINDOW: u32 = 256 * 1024;

/// The largest message a server may send us.
pub const SERVER_MAX_MESSAGE: usize = 1024 * 1024;

/// Where to publish, in the terms of the `connect` and `publish` commands.
#[derive(Clone)]
pub struct PublishTarget {
    /// The application (`live2` in `rtmp://host/live2/KEY`).
    pub app: String,
    /// `rtmp://host[:port]/app`, as servers expect it in `connect`.
    pub tc_url: String,
    /// The stream name, which is the platform's stream key: secret.
    pub stream_name: String,
}

impl std::fmt::Debug for PublishTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A tcUrl may carry USER:PASSWORD@: shown without it.
        let tc_url = match self.tc_url.split_once("://") {
            Some((scheme, rest)) if rest.split('/').next().is_some_and(|a| a.contains('@')) => {
                let host = rest.split_once('@').map_or(rest, |(_, host)| host);
                format!("{scheme}://…@{host}")
            }
            _ => self.tc_url.clone(),
        };
        f.debug_struct("PublishTarget")
            .field("tc_url", &tc_url)
            .field("stream_name", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    CreatingStream,
    Publishing { stream_id: u32 },
    Live { stream_id: u32 },
    Closed,
}

/// What the server told us.
#[derive(Debug, PartialEq)]
pub enum ClientEvent {
    /// `NetStream.Publish.Start`: media may flow on this message stream.
    PublishStarted { stream_id: u32 },
    /// The server refused `connect` or `publish`; `reason` is its own text.
    Rejected { code: String, reason: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("malformed RTMP from server: {0}")]
    Chunk(#[from] ChunkError),
    #[error("malformed RTMP command from server: {0}")]
    Command(#[from] CommandError),
    #[error("createStream result carried no stream id")]
    NoStreamId,
}

pub struct PublishClient {
    target: PublishTarget,
    chunk_size: u32,
    state: State,
    inbound: Inbound,
}

impl PublishClient {
    /// `chunk_size`: what this side announces and chunks media with.
    pub fn new(target: PublishTarget, chunk_size: u32) -> Self {
        Self {
            target,
            chunk_size,
            state: State::Connecting,
            inbound: Inbound::new(ReaderLimits {
                max_message_len: SERVER_MAX_MESSAGE,
                max_chunk_size: SERVER_MAX_MESSAGE,
                ..ReaderLimits::default()
            }),
        }
    }

    /// Queues the opening messages (after the handshake): our chunk size, then
    /// `connect`. The writer switches to the new chunk size here.
    pub fn start(&mut self, out: &mut ChunkWriter) {
        queue_chunk_size(out, self.chunk_size);
        let object = Value::object([
            ("app", Value::string(&self.target.app)),
            ("type", Value::string("nonprivate")),
            ("flashVer", Value::string("FMLE/3.0 (compatible; Prism)")),
            ("tcUrl", Value::string(&self.target.tc_url)),
            // Enhanced RTMP: the codecs this session may send beyond H.264/AAC.
            ("fourCcList", fourcc_list()),
        ]);
        queue_command(
            out,
            0,
            &Command::new("connect", TXN_CONNECT, object, vec![]),
        );
    }

    /// The message stream id media must be sent on, once publishing started.
    pub fn stream_id(&self) -> Option<u32> {
        match self.state {
            State::Live { stream_id } => Some(stream_id),
            _ => None,
        }
    }

    /// The latest byte count the server acknowledged, mod 2^32.
    pub fn acknowledged(&self) -> Option<u32> {
        self.inbound.peer_acknowledged()
    }

    /// Feeds bytes read from the server; queues any replies on `out`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<Vec<ClientEvent>, ClientError> {
        let mut events = Vec::new();
        self.inbound.feed(bytes);
        while let Some(message) = self.inbound.next(out)? {
            // Servers send commands, and sometimes data (onMetaData echoes,
            // bandwidth probes) that a publisher has no use for.
            if matches!(
                message.type_id,
                type_id::COMMAND_AMF0 | type_id::COMMAND_AMF3
            ) {
                let command = Command::decode(message.type_id, &message.payload)?;
                self.handle_command(&command, out, &mut events)?;
            }
        }
        Ok(events)
    }

    fn handle_command(
        &mut self,
        command: &Command,
        out: &mut ChunkWriter,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), ClientError> {
        let info = command.info();
        let name = || Value::string(&self.target.stream_name);
        match (command.name.as_str(), self.state) {
            ("_result", State::Connecting) if command.transaction_id == TXN_CONNECT => {
                queue_control(out, Control::WindowAckSize(DESTINATION_ACK_WINDOW));
                queue_command(
                    out,
                    0,
                    &Command::new(
                        "releaseStream",
                        TXN_RELEASE_STREAM,
                        Value::Null,
                        vec![name()],
                    ),
                );
                queue_command(
                    out,
                    0,
                    &Command::new("FCPublish", TXN_FC_PUBLISH, Value::Null, vec![name()]),
                );
                queue_command(
                    out,
                    0,
                    &Command::new("createStream", TXN_CREATE_STREAM, Value::Null, vec![]),
                );
                self.state = State::CreatingStream;
            }
            ("_result", State::CreatingStream) if command.transaction_id == TXN_CREATE_STREAM => {
                let stream_id = created_stream_id(command)?;
                queue_command(
                    out,
                    stream_id,
                    &Command::new(
                        "publish",
                        0.0,
                        Value::Null,
                        vec![name(), Value::string("live")],
                    ),
                );
                self.state = State::Publishing { stream_id };
            }
            ("_error", _) => {
                events.push(rejection(info, "the server answered _error"));
                self.state = State::Closed;
            }
            // A server ending the session its own way (nginx-rtmp's `drop`,
            // some platforms on a stream-key change).
            ("close", _) => {
                events.push(ClientEvent::Rejected {
                    code: "close".into(),
                    reason: info
                        .get_str("description")
                        .unwrap_or("the server sent close")
                        .to_string(),
                });
                self.state = State::Closed;
            }
            ("onStatus", _) => {
                let code = info.get_str("code").unwrap_or_default();
                let level = info.get_str("level").unwrap_or_default();
                match self.state {
                    State::Publishing { stream_id } if code == "NetStream.Publish.Start" => {
                        self.state = State::Live { stream_id };
                        events.push(ClientEvent::PublishStarted { stream_id });
                    }
                    _ if level == "error"
                        || code.ends_with(".BadName")
                        || code.ends_with(".Failed")
                        || code.ends_with(".Rejected") =>
                    {
                        events.push(rejection(info, "the server refused the stream"));
                        self.state = State::Closed;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Queues the clean end of a publish: `FCUnpublish` then `deleteStream`.
    pub fn unpublish(&mut self, out: &mut ChunkWriter) {
        if let State::Live { stream_id } | State::Publishing { stream_id } = self.state {
            let name = Value::string(&self.target.stream_name);
            queue_command(
                out,
                0,
                &Command::new("FCUnpublish", TXN_FC_UNPUBLISH, Value::Null, vec![name]),
            );
            queue_command(
                out,
                stream_id,
                &Command::new(
                    "deleteStream",
                    0.0,
                    Value::Null,
                    vec![Value::Number(stream_id as f64)],
                ),
            );
        }
        self.state = State::Closed;
    }
}

fn rejection(info: &Value, fallback: &str) -> ClientEvent {
    let (code, reason) = refusal(info, fallback);
    ClientEvent::Rejected { code, reason }
}

/// A server's refusal in its own words: the status code and description.
pub(crate) fn refusal(info: &Value, fallback: &str) -> (String, String) {
    let code = info.get_str("code").unwrap_or("unknown").to_string();
    let reason = info
        .get_str("description")
        .filter(|d| !d.is_empty())
        .unwrap_or(fallback)
        .to_string();
    (code, reason)
}

/// The message stream id a `createStream` result carries.
pub(crate) fn created_stream_id(result: &Command) -> Result<u32, ClientError> {
    match result.arguments.first() {
        Some(Value::Number(n)) if *n >= 0.0 && *n < u32::MAX as f64 => Ok(*n as u32),
        _ => Err(ClientError::NoStreamId),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::chunk_reader::ChunkReader;
    use crate::connection::read_messages;
    use crate::message::{control_u32, user_control};
    use crate::server::ServerSession;
    use bytes::Bytes;

    const CHUNK_SIZE: u32 = 60000;

    /// Parses what the client queued, as a server would.
    fn sent(out: &mut ChunkWriter, reader: &mut ChunkReader) -> Vec<crate::Message> {
        let messages = read_messages(reader, &out.to_vec()).unwrap();
        out.clear();
        messages
    }

    fn command_names(messages: &[crate::Message]) -> Vec<String> {
        messages
            .iter()
            .filter(|m| m.type_id == type_id::COMMAND_AMF0)
            .map(|m| Command::decode(m.type_id, &m.payload).unwrap().name)
            .collect()
    }

    /// Serializes a server reply.
    pub(crate) fn reply(command: Command, stream_id: u32) -> Vec<u8> {
        let mut writer = ChunkWriter::new(128);
        queue_command(&mut writer, stream_id, &command);
        writer.to_vec()
    }

    pub(crate) fn status(code: &str, level: &str, description: &str) -> Command {
        Command::new(
            "onStatus",
            0.0,
            Value::Null,
            vec![Value::object([
                ("level", Value::string(level)),
                ("code", Value::string(code)),
                ("description", Value::string(description)),
            ])],
        )
    }

    fn client() -> PublishClient {
        PublishClient::new(
            PublishTarget {
                app: "live2".into(),
                tc_url: "rtmp://h/live2".into(),
                stream_name: "secret-key".into(),
            },
            CHUNK_SIZE,
        )
    }

    #[test]
    fn full_publish_flow() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        let mut server = ChunkReader::new(ReaderLimits::default());
        client.start(&mut out);
        let first = sent(&mut out, &mut server);
        // The Set Chunk Size was applied by the reader, so the connect that
        // follows it arrived at the new size.
        assert_eq!(server.chunk_size(), CHUNK_SIZE as usize);
        let connect = Command::decode(first[0].type_id, &first[0].payload).unwrap();
        assert_eq!(connect.name, "connect");
        assert_eq!(connect.object.get_str("app"), Some("live2"));
        assert_eq!(connect.object.get_str("tcUrl"), Some("rtmp://h/live2"));

        let events = client
            .handle_input(
                &reply(Command::new("_result", 1.0, Value::Null, vec![]), 0),
                &mut out,
            )
            .unwrap();
        assert!(events.is_empty());
        assert_eq!(
            command_names(&sent(&mut out, &mut server)),
            ["releaseStream", "FCPublish", "createStream"]
        );

        client
            .handle_input(
                &reply(
                    Command::new("_result", 4.0, Value::Null, vec![Value::Number(7.0)]),
                    0,
                ),
                &mut out,
            )
            .unwrap();
        let publish = sent(&mut out, &mut server);
        let publish = Command::decode(publish[0].type_id, &publish[0].payload).unwrap();
        assert_eq!(publish.name, "publish");
        assert_eq!(publish.arguments[0], Value::string("secret-key"));
        assert_eq!(client.stream_id(), None);
        let events = client
            .handle_input(
                &reply(status("NetStream.Publish.Start", "status", ""), 7),
                &mut out,
            )
            .unwrap();
        assert_eq!(events, vec![ClientEvent::PublishStarted { stream_id: 7 }]);
        assert_eq!(client.stream_id(), Some(7));

        client.unpublish(&mut out);
        assert_eq!(
            command_names(&sent(&mut out, &mut server)),
            ["FCUnpublish", "deleteStream"]
        );
    }

    /// The client and Prism's own server session talk each other through
    /// a publish.
    #[test]
    fn publishes_to_the_server_session() {
        let mut client = client();
        let mut server = ServerSession::new(Default::default());
        let (mut to_server, mut to_client) = (ChunkWriter::new(128), ChunkWriter::new(128));
        client.start(&mut to_server);
        let mut started = None;
        for _ in 0..10 {
            let mut events = Vec::new();
            server
                .handle_input(&to_server.to_vec(), &mut to_client, &mut events)
                .unwrap();
            to_server.clear();
            if events
                .iter()
                .any(|e| matches!(e, crate::ServerEvent::PublishRequested { .. }))
            {
                server.accept_publish(&mut to_client);
            }
            for event in client
                .handle_input(&to_client.to_vec(), &mut to_server)
                .unwrap()
            {
                started = Some(event);
            }
            to_client.clear();
        }
        assert_eq!(started, Some(ClientEvent::PublishStarted { stream_id: 1 }));
    }

    #[test]
    fn a_refused_publish_reports_the_servers_reason() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        client.start(&mut out);
        client
            .handle_input(
                &reply(Command::new("_result", 1.0, Value::Null, vec![]), 0),
                &mut out,
            )
            .unwrap();
        client
            .handle_input(
                &reply(
                    Command::new("_result", 4.0, Value::Null, vec![Value::Number(1.0)]),
                    0,
                ),
                &mut out,
            )
            .unwrap();
        let events = client
            .handle_input(
                &reply(
                    status("NetStream.Publish.BadName", "error", "invalid stream key"),
                    1,
                ),
                &mut out,
            )
            .unwrap();
        assert_eq!(
            events,
            vec![ClientEvent::Rejected {
                code: "NetStream.Publish.BadName".into(),
                reason: "invalid stream key".into()
            }]
        );
    }

    #[test]
    fn a_server_sent_close_mid_publish_ends_it_with_a_reason() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        client.start(&mut out);
        for (command, stream) in [
            (Command::new("_result", 1.0, Value::Null, vec![]), 0),
            (
                Command::new("_result", 4.0, Value::Null, vec![Value::Number(1.0)]),
                0,
            ),
            (status("NetStream.Publish.Start", "status", "Publishing"), 1),
        ] {
            client
                .handle_input(&reply(command, stream), &mut out)
                .unwrap();
        }
        assert_eq!(client.stream_id(), Some(1));
        let events = client
            .handle_input(
                &reply(Command::new("close", 0.0, Value::Null, vec![]), 0),
                &mut out,
            )
            .unwrap();
        assert_eq!(
            events,
            vec![ClientEvent::Rejected {
                code: "close".into(),
                reason: "the server sent close".into()
            }]
        );
    }

    #[test]
    fn answers_pings_and_garbage_is_an_error_not_a_panic() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        let mut ping = user_control::PING_REQUEST.to_be_bytes().to_vec();
        ping.extend_from_slice(&42u32.to_be_bytes());
        let mut writer = ChunkWriter::new(128);
        writer.push(
            crate::MessageHeader {
                chunk_stream_id: 2,
                type_id: type_id::USER_CONTROL,
                message_stream_id: 0,
                timestamp: 0,
            },
            &Bytes::from(ping),
        );
        client.handle_input(&writer.to_vec(), &mut out).unwrap();
        let mut server = ChunkReader::new(ReaderLimits::default());
        let replies = sent(&mut out, &mut server);
        assert_eq!(replies[0].type_id, type_id::USER_CONTROL);
        assert_eq!(control_u32(&replies[0].payload[2..]), Some(42));
        // A chunk header announcing a command with a nonsense body.
        let garbage = [
            0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(client.handle_input(&garbage, &mut out).is_err());
    }

    /// A server that answers `connect` with the AMF0 bomb gets an error.
    #[test]
    fn a_server_answering_with_the_nesting_bomb_is_an_error() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        client.start(&mut out);
        let mut body = Command::new("_result", 1.0, Value::Null, vec![])
            .encode()
            .to_vec();
        body.truncate(body.len() - 1);
        for _ in 0..50_000 {
            body.extend_from_slice(&[3, 0, 1, b'a']);
        }
        let mut writer = ChunkWriter::new(128);
        writer.push(
            crate::MessageHeader {
                chunk_stream_id: 3,
                type_id: type_id::COMMAND_AMF0,
                message_stream_id: 0,
                timestamp: 0,
            },
            &Bytes::from(body),
        );
        let error = client.handle_input(&writer.to_vec(), &mut out).unwrap_err();
        assert!(
            matches!(error, ClientError::Command(ref e) if e.is_limit()),
            "{error}"
        );
    }
}

#[cfg(test)]
mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever a destination server answers, the client returns an error
        /// or carries on; it never panics.
        #[test]
        fn arbitrary_server_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..8)) {
            let mut client = PublishClient::new(
                PublishTarget { app: "app".into(), tc_url: "rtmp://h/app".into(), stream_name: "k".into() },
                60000,
            );
            let mut out = ChunkWriter::new(128);
            client.start(&mut out);
            for chunk in chunks {
                if client.handle_input(&chunk, &mut out).is_err() {
                    break;
                }
            }
        }
    }
}
