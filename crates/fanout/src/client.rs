//! The publishing side of an RTMP connection to a destination, as a pure state
//! machine: bytes from the server go in, events come out, and everything to
//! send is queued on a `ChunkWriter`. No sockets, no clock.
//!
//! Written on rml_rtmp's chunk parser and message codec rather than its
//! `ClientSession`, because that session hides the stream id `createStream`
//! returned (media headers need it), sends no `releaseStream`/`FCPublish`
//! (which some platforms expect), cannot add `connect` properties, and drops
//! the server's description when it refuses a publish; the operator needs
//! that text to fix a wrong key.

use rml_amf0::Amf0Value;
use rml_rtmp::messages::RtmpMessage;

use prism_media::chunk::ChunkWriter;
use prism_media::rtmp::{self, object, object_string, string};

use crate::url::DestinationUrl;

const TXN_CONNECT: f64 = 1.0;
const TXN_RELEASE_STREAM: f64 = 2.0;
const TXN_FC_PUBLISH: f64 = 3.0;
const TXN_CREATE_STREAM: f64 = 4.0;
const TXN_FC_UNPUBLISH: f64 = 5.0;

/// The window we ask the server to acknowledge within; we send little.
const WINDOW_ACK_SIZE: u32 = 2_500_000;

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
    Protocol(String),
    #[error(transparent)]
    Encode(#[from] rtmp::EncodeError),
    #[error(transparent)]
    Inbound(#[from] rtmp::InboundError),
}

pub struct PublishClient {
    url: DestinationUrl,
    chunk_size: u32,
    state: State,
    inbound: rtmp::Inbound,
}

impl PublishClient {
    /// `chunk_size`: what this side announces and chunks media with.
    pub fn new(url: DestinationUrl, chunk_size: u32) -> Self {
        Self {
            url,
            chunk_size,
            state: State::Connecting,
            inbound: rtmp::Inbound::new(),
        }
    }

    /// Queues the opening messages (after the handshake): our chunk size, then
    /// `connect`. The writer switches to the new chunk size here.
    pub fn start(&mut self, out: &mut ChunkWriter) -> Result<(), ClientError> {
        rtmp::queue_outbound_chunk_size(out, self.chunk_size)?;
        let command = object([
            ("app", string(&self.url.app)),
            ("type", string("nonprivate")),
            ("flashVer", string("FMLE/3.0 (compatible; Prism)")),
            ("tcUrl", string(&self.url.tc_url)),
            // Enhanced RTMP: the codecs this session may send beyond H.264/AAC.
            ("fourCcList", rtmp::fourcc_list()),
        ]);
        rtmp::queue_command(out, 0, "connect", TXN_CONNECT, command, vec![])?;
        Ok(())
    }

    /// The message stream id media must be sent on, once publishing started.
    pub fn stream_id(&self) -> Option<u32> {
        match self.state {
            State::Live { stream_id } => Some(stream_id),
            _ => None,
        }
    }

    /// Feeds bytes read from the server; queues any replies on `out`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<Vec<ClientEvent>, ClientError> {
        let mut events = Vec::new();
        self.inbound.feed(bytes)?;
        while let Some(payload) = self.inbound.next(out)? {
            // Servers send commands, and sometimes data (onMetaData echoes,
            // bandwidth probes) that a publisher has no use for.
            if let RtmpMessage::Amf0Command {
                command_name,
                transaction_id,
                command_object,
                additional_arguments,
            } = rtmp::decode_message(&payload).map_err(ClientError::Protocol)?
            {
                self.handle_command(
                    &command_name,
                    transaction_id,
                    &command_object,
                    &additional_arguments,
                    out,
                    &mut events,
                )?;
            }
        }
        Ok(events)
    }

    fn handle_command(
        &mut self,
        name: &str,
        transaction_id: f64,
        command_object: &Amf0Value,
        arguments: &[Amf0Value],
        out: &mut ChunkWriter,
        events: &mut Vec<ClientEvent>,
    ) -> Result<(), ClientError> {
        let info = arguments.first().unwrap_or(command_object);
        match (name, self.state) {
            ("_result", State::Connecting) if transaction_id == TXN_CONNECT => {
                rtmp::queue(
                    out,
                    RtmpMessage::WindowAcknowledgement {
                        size: WINDOW_ACK_SIZE,
                    },
                    0,
                )?;
                let name = string(self.url.stream_name.expose());
                rtmp::queue_command(
                    out,
                    0,
                    "releaseStream",
                    TXN_RELEASE_STREAM,
                    Amf0Value::Null,
                    vec![name.clone()],
                )?;
                rtmp::queue_command(
                    out,
                    0,
                    "FCPublish",
                    TXN_FC_PUBLISH,
                    Amf0Value::Null,
                    vec![name],
                )?;
                rtmp::queue_command(
                    out,
                    0,
                    "createStream",
                    TXN_CREATE_STREAM,
                    Amf0Value::Null,
                    vec![],
                )?;
                self.state = State::CreatingStream;
            }
            ("_result", State::CreatingStream) if transaction_id == TXN_CREATE_STREAM => {
                let stream_id = match arguments.first() {
                    Some(Amf0Value::Number(n)) if *n >= 0.0 && *n < u32::MAX as f64 => *n as u32,
                    _ => {
                        return Err(ClientError::Protocol(
                            "createStream result carried no stream id".into(),
                        ))
                    }
                };
                rtmp::queue_command(
                    out,
                    stream_id,
                    "publish",
                    0.0,
                    Amf0Value::Null,
                    vec![string(self.url.stream_name.expose()), string("live")],
                )?;
                self.state = State::Publishing { stream_id };
            }
            ("_error", _) => {
                events.push(rejection(info, "the server answered _error"));
                self.state = State::Closed;
            }
            ("onStatus", _) => {
                let code = object_string(info, "code").unwrap_or_default();
                let level = object_string(info, "level").unwrap_or_default();
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
    pub fn unpublish(&mut self, out: &mut ChunkWriter) -> Result<(), ClientError> {
        if let State::Live { stream_id } | State::Publishing { stream_id } = self.state {
            let name = string(self.url.stream_name.expose());
            rtmp::queue_command(
                out,
                0,
                "FCUnpublish",
                TXN_FC_UNPUBLISH,
                Amf0Value::Null,
                vec![name],
            )?;
            rtmp::queue_command(
                out,
                stream_id,
                "deleteStream",
                0.0,
                Amf0Value::Null,
                vec![Amf0Value::Number(stream_id as f64)],
            )?;
        }
        self.state = State::Closed;
        Ok(())
    }
}

fn rejection(info: &Amf0Value, fallback: &str) -> ClientEvent {
    let code = object_string(info, "code").unwrap_or("unknown").to_string();
    let reason = object_string(info, "description")
        .filter(|d| !d.is_empty())
        .unwrap_or(fallback)
        .to_string();
    ClientEvent::Rejected { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_media::chunk::ChunkWriter;
    use rml_rtmp::chunk_io::ChunkDeserializer;
    use rml_rtmp::messages::UserControlEventType;

    /// Parses what the client queued, as a server would.
    fn sent(out: &mut ChunkWriter, parser: &mut ChunkDeserializer) -> Vec<RtmpMessage> {
        let messages = rtmp::read_messages(parser, &out.to_vec()).unwrap();
        out.clear();
        messages
    }

    fn command_names(messages: &[RtmpMessage]) -> Vec<String> {
        messages
            .iter()
            .filter_map(|m| match m {
                RtmpMessage::Amf0Command { command_name, .. } => Some(command_name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Serializes a server reply.
    fn reply(message: RtmpMessage, stream_id: u32) -> Vec<u8> {
        let mut writer = ChunkWriter::new(128);
        rtmp::queue(&mut writer, message, stream_id).unwrap();
        writer.to_vec()
    }

    fn command(name: &str, txn: f64, args: Vec<Amf0Value>) -> RtmpMessage {
        RtmpMessage::Amf0Command {
            command_name: name.into(),
            transaction_id: txn,
            command_object: Amf0Value::Null,
            additional_arguments: args,
        }
    }

    fn status(code: &str, level: &str, description: &str) -> RtmpMessage {
        command(
            "onStatus",
            0.0,
            vec![object([
                ("level", string(level)),
                ("code", string(code)),
                ("description", string(description)),
            ])],
        )
    }

    fn client() -> PublishClient {
        PublishClient::new(
            DestinationUrl::parse("rtmp://h/live2", Some("secret-key")).unwrap(),
            rtmp::DEFAULT_PUBLISH_CHUNK_SIZE,
        )
    }

    #[test]
    fn full_publish_flow() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        let mut server = ChunkDeserializer::new();
        client.start(&mut out).unwrap();
        let first = sent(&mut out, &mut server);
        assert!(matches!(
            first[0],
            RtmpMessage::SetChunkSize {
                size: rtmp::DEFAULT_PUBLISH_CHUNK_SIZE
            }
        ));
        match &first[1] {
            RtmpMessage::Amf0Command {
                command_name,
                command_object,
                ..
            } => {
                assert_eq!(command_name, "connect");
                assert_eq!(object_string(command_object, "app"), Some("live2"));
                assert_eq!(
                    object_string(command_object, "tcUrl"),
                    Some("rtmp://h/live2")
                );
            }
            other => panic!("expected connect, got {other:?}"),
        }

        let events = client
            .handle_input(&reply(command("_result", 1.0, vec![]), 0), &mut out)
            .unwrap();
        assert!(events.is_empty());
        assert_eq!(
            command_names(&sent(&mut out, &mut server)),
            ["releaseStream", "FCPublish", "createStream"]
        );

        client
            .handle_input(
                &reply(command("_result", 4.0, vec![Amf0Value::Number(7.0)]), 0),
                &mut out,
            )
            .unwrap();
        let publish = sent(&mut out, &mut server);
        match &publish[0] {
            RtmpMessage::Amf0Command {
                command_name,
                additional_arguments,
                ..
            } => {
                assert_eq!(command_name, "publish");
                assert_eq!(additional_arguments[0], string("secret-key"));
            }
            other => panic!("expected publish, got {other:?}"),
        }
        assert_eq!(client.stream_id(), None);
        let events = client
            .handle_input(
                &reply(status("NetStream.Publish.Start", "status", ""), 7),
                &mut out,
            )
            .unwrap();
        assert_eq!(events, vec![ClientEvent::PublishStarted { stream_id: 7 }]);
        assert_eq!(client.stream_id(), Some(7));

        client.unpublish(&mut out).unwrap();
        assert_eq!(
            command_names(&sent(&mut out, &mut server)),
            ["FCUnpublish", "deleteStream"]
        );
    }

    #[test]
    fn a_refused_publish_reports_the_servers_reason() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        client.start(&mut out).unwrap();
        client
            .handle_input(&reply(command("_result", 1.0, vec![]), 0), &mut out)
            .unwrap();
        client
            .handle_input(
                &reply(command("_result", 4.0, vec![Amf0Value::Number(1.0)]), 0),
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
    fn answers_pings_and_garbage_is_an_error_not_a_panic() {
        let mut client = client();
        let mut out = ChunkWriter::new(128);
        let ping = RtmpMessage::UserControl {
            event_type: UserControlEventType::PingRequest,
            timestamp: Some(rml_rtmp::time::RtmpTimestamp::new(42)),
            stream_id: None,
            buffer_length: None,
        };
        client.handle_input(&reply(ping, 0), &mut out).unwrap();
        let mut server = ChunkDeserializer::new();
        assert!(matches!(
            sent(&mut out, &mut server)[0],
            RtmpMessage::UserControl {
                event_type: UserControlEventType::PingResponse,
                ..
            }
        ));
        // A chunk header announcing a message type with a nonsense body.
        let garbage = [
            0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(client.handle_input(&garbage, &mut out).is_err());
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
                DestinationUrl::parse("rtmp://h/app", Some("k")).unwrap(),
                rtmp::DEFAULT_PUBLISH_CHUNK_SIZE,
            );
            let mut out = ChunkWriter::new(128);
            client.start(&mut out).unwrap();
            for chunk in chunks {
                if client.handle_input(&chunk, &mut out).is_err() {
                    break;
                }
            }
        }
    }
}
