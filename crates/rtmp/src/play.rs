//! The playing side of an RTMP connection to a server (a pulled source), as
//! a pure state machine: `connect`, `createStream`, `play`, then the media
//! the server sends, handed out as messages. No sockets, no clock.
//!
//! A server keeps a play session open across its publisher's restarts
//! (nginx-rtmp sends User Control StreamEOF when its publisher leaves, then
//! StreamBegin and new sequence headers when one publishes again), so the
//! session reports those as events rather than ending.

use crate::amf0::Value;
use crate::chunk_reader::ReaderLimits;
use crate::chunk_writer::ChunkWriter;
use crate::client::{created_stream_id, refusal, ClientError, PublishTarget};
use crate::connection::{queue_chunk_size, queue_command, queue_control, Inbound};
use crate::message::{type_id, Command, Control, Message};
use crate::server::ServerLimits;

const TXN_CONNECT: f64 = 1.0;
const TXN_CREATE_STREAM: f64 = 2.0;

/// The window the server is asked to acknowledge (we send little: commands).
const PLAY_ACK_WINDOW: u32 = 2_500_000;
/// What the player asks the server to buffer (ms), as ffmpeg does.
const BUFFER_LENGTH_MS: u32 = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connecting,
    CreatingStream,
    Playing,
    Closed,
}

/// What the server did.
#[derive(Debug, PartialEq)]
pub enum PlayEvent {
    /// `NetStream.Play.Start`: the play request was accepted.
    Started,
    /// Audio, video or AMF0 data of the stream, as the server stamped it.
    Media(Message),
    /// The server's publisher stopped (User Control StreamEOF,
    /// `NetStream.Play.UnpublishNotify`, `NetStream.Play.Stop`); the session
    /// stays open for the next one.
    SourceStopped,
    /// The server refused `connect` or `play`, or closed the session.
    Rejected { code: String, reason: String },
}

pub struct PlayClient {
    target: PublishTarget,
    state: State,
    inbound: Inbound,
}

impl PlayClient {
    /// `limits`: what the source's messages may take, the same bounds a
    /// publishing encoder has.
    pub fn new(target: PublishTarget, limits: ServerLimits) -> Self {
        Self {
            target,
            state: State::Connecting,
            inbound: Inbound::new(ReaderLimits {
                max_message_len: limits.max_message_len,
                max_partial_messages: limits.max_partial_messages,
                max_chunk_size: limits.max_message_len.max(128),
                ..ReaderLimits::default()
            }),
        }
    }

    /// Queues the opening messages (after the handshake).
    pub fn start(&mut self, out: &mut ChunkWriter) {
        queue_chunk_size(out, 4096);
        let object = Value::object([
            ("app", Value::string(&self.target.app)),
            ("flashVer", Value::string("LNX 9,0,124,2")),
            ("tcUrl", Value::string(&self.target.tc_url)),
            ("fpad", Value::Boolean(false)),
            ("capabilities", Value::Number(15.0)),
            ("audioCodecs", Value::Number(4071.0)),
            ("videoCodecs", Value::Number(252.0)),
            ("videoFunction", Value::Number(1.0)),
        ]);
        queue_command(
            out,
            0,
            &Command::new("connect", TXN_CONNECT, object, vec![]),
        );
    }

    /// Feeds bytes read from the server; queues any replies on `out`.
    pub fn handle_input(
        &mut self,
        bytes: &[u8],
        out: &mut ChunkWriter,
    ) -> Result<Vec<PlayEvent>, ClientError> {
        let mut events = Vec::new();
        self.inbound.feed(bytes);
        loop {
            let next = self.inbound.next(out)?;
            if self.inbound.take_stream_eof() && self.state == State::Playing {
                events.push(PlayEvent::SourceStopped);
            }
            let Some(message) = next else { break };
            match message.type_id {
                type_id::COMMAND_AMF0 | type_id::COMMAND_AMF3 => {
                    let command = Command::decode(message.type_id, &message.payload)?;
                    self.handle_command(&command, out, &mut events)?;
                }
                type_id::AUDIO | type_id::VIDEO | type_id::DATA_AMF0
                    if self.state == State::Playing =>
                {
                    events.push(PlayEvent::Media(message));
                }
                _ => {}
            }
        }
        Ok(events)
    }

    fn handle_command(
        &mut self,
        command: &Command,
        out: &mut ChunkWriter,
        events: &mut Vec<PlayEvent>,
    ) -> Result<(), ClientError> {
        let info = command.info();
        match (command.name.as_str(), self.state) {
            ("_result", State::Connecting) if command.transaction_id == TXN_CONNECT => {
                queue_control(out, Control::WindowAckSize(PLAY_ACK_WINDOW));
                queue_command(
                    out,
                    0,
                    &Command::new("createStream", TXN_CREATE_STREAM, Value::Null, vec![]),
                );
                self.state = State::CreatingStream;
            }
            ("_result", State::CreatingStream) if command.transaction_id == TXN_CREATE_STREAM => {
                let stream_id = created_stream_id(command)?;
                // play(name, start = -2000: live, or recorded if not live).
                queue_command(
                    out,
                    stream_id,
                    &Command::new(
                        "play",
                        0.0,
                        Value::Null,
                        vec![
                            Value::string(&self.target.stream_name),
                            Value::Number(-2000.0),
                        ],
                    ),
                );
                queue_control(out, Control::SetBufferLength(stream_id, BUFFER_LENGTH_MS));
                self.state = State::Playing;
            }
            ("_error", _) => {
                events.push(rejection(info, "the server answered _error"));
                self.state = State::Closed;
            }
            ("close", _) => {
                events.push(rejection(info, "the server sent close"));
                self.state = State::Closed;
            }
            ("onStatus", _) => {
                let code = info.get_str("code").unwrap_or_default();
                let level = info.get_str("level").unwrap_or_default();
                match code {
                    "NetStream.Play.Start" => events.push(PlayEvent::Started),
                    "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" => {
                        events.push(PlayEvent::SourceStopped)
                    }
                    _ if level == "error"
                        || code.ends_with(".StreamNotFound")
                        || code.ends_with(".Failed")
                        || code.ends_with(".Rejected") =>
                    {
                        events.push(rejection(info, "the server refused to play the stream"));
                        self.state = State::Closed;
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn rejection(info: &Value, fallback: &str) -> PlayEvent {
    let (code, reason) = refusal(info, fallback);
    PlayEvent::Rejected { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk_reader::ChunkReader;
    use crate::connection::queue_media;
    use bytes::Bytes;

    use crate::client::tests::{reply, status};

    use crate::server::tests::replies as sent_commands;

    #[test]
    fn plays_and_hands_out_media_across_a_publisher_restart() {
        let mut client = PlayClient::new(
            PublishTarget {
                app: "live".into(),
                tc_url: "rtmp://h/live".into(),
                stream_name: "cam1".into(),
            },
            ServerLimits {
                max_message_len: 1 << 20,
                ..ServerLimits::default()
            },
        );
        let (mut out, mut server) = (
            ChunkWriter::new(128),
            ChunkReader::new(ReaderLimits::default()),
        );
        client.start(&mut out);
        let connect = &sent_commands(&mut out, &mut server)[0];
        assert_eq!(
            (connect.name.as_str(), connect.object.get_str("app")),
            ("connect", Some("live"))
        );

        client
            .handle_input(
                &reply(Command::new("_result", 1.0, Value::Null, vec![]), 0),
                &mut out,
            )
            .unwrap();
        assert_eq!(sent_commands(&mut out, &mut server)[0].name, "createStream");
        let result = Command::new("_result", 2.0, Value::Null, vec![Value::Number(1.0)]);
        client.handle_input(&reply(result, 0), &mut out).unwrap();
        let play = &sent_commands(&mut out, &mut server)[0];
        assert_eq!(play.name, "play");
        assert_eq!(play.arguments[0], Value::string("cam1"));

        let events = client
            .handle_input(
                &reply(
                    status("NetStream.Play.Start", "status", "as the server says"),
                    1,
                ),
                &mut out,
            )
            .unwrap();
        assert_eq!(events, [PlayEvent::Started]);

        // A message of several chunks comes out whole.
        let mut media = ChunkWriter::new(128);
        let video = Bytes::from(vec![0x17; 300]);
        queue_media(&mut media, type_id::VIDEO, 1, 40, &video);
        let events = client.handle_input(&media.to_vec(), &mut out).unwrap();
        let [PlayEvent::Media(message)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!((message.timestamp, &message.payload), (40, &video));

        let events = client
            .handle_input(
                &reply(
                    status(
                        "NetStream.Play.UnpublishNotify",
                        "status",
                        "as the server says",
                    ),
                    1,
                ),
                &mut out,
            )
            .unwrap();
        assert_eq!(events, [PlayEvent::SourceStopped]);
        // What nginx-rtmp sends by default: StreamEOF.
        let mut eof = ChunkWriter::new(128);
        let body = [0, 1, 0, 0, 0, 1];
        eof.push(
            crate::chunk_writer::MessageHeader {
                chunk_stream_id: 2,
                type_id: type_id::USER_CONTROL,
                message_stream_id: 0,
                timestamp: 0,
            },
            &Bytes::copy_from_slice(&body),
        );
        let events = client.handle_input(&eof.to_vec(), &mut out).unwrap();
        assert_eq!(events, [PlayEvent::SourceStopped]);
    }

    #[test]
    fn a_missing_stream_is_a_rejection_with_the_servers_words() {
        let mut client = PlayClient::new(
            PublishTarget {
                app: "live".into(),
                tc_url: "rtmp://h/live".into(),
                stream_name: "nope".into(),
            },
            ServerLimits {
                max_message_len: 1 << 20,
                ..ServerLimits::default()
            },
        );
        let mut out = ChunkWriter::new(128);
        client.start(&mut out);
        let events = client
            .handle_input(
                &reply(
                    status(
                        "NetStream.Play.StreamNotFound",
                        "error",
                        "as the server says",
                    ),
                    1,
                ),
                &mut out,
            )
            .unwrap();
        assert_eq!(
            events,
            [PlayEvent::Rejected {
                code: "NetStream.Play.StreamNotFound".into(),
                reason: "as the server says".into()
            }]
        );
    }

    /// A pulled source is held to the bounds of a publisher: no more
    /// messages in progress, and none larger, than `[rtmp]` allows.
    #[test]
    fn a_source_is_held_to_the_publishers_bounds() {
        let limits = ServerLimits {
            max_message_len: 64 * 1024,
            max_partial_messages: 3,
        };
        let target = PublishTarget {
            app: "live".into(),
            tc_url: "rtmp://h/live".into(),
            stream_name: "cam1".into(),
        };
        // The first 128-byte chunk of a 1000-byte video message on each of
        // chunk streams 4, 5, ...: every one stays in progress.
        let first_chunk = |csid: u8| {
            let mut writer = ChunkWriter::new(128);
            writer.push(
                crate::chunk_writer::MessageHeader {
                    chunk_stream_id: csid,
                    type_id: type_id::VIDEO,
                    message_stream_id: 1,
                    timestamp: 0,
                },
                &Bytes::from(vec![0x17; 1000]),
            );
            writer.to_vec()[..1 + 11 + 128].to_vec()
        };
        let mut client = PlayClient::new(target.clone(), limits);
        let mut out = ChunkWriter::new(128);
        for csid in 4..7 {
            client.handle_input(&first_chunk(csid), &mut out).unwrap();
        }
        let error = client.handle_input(&first_chunk(7), &mut out).unwrap_err();
        assert!(error.to_string().contains("in progress"), "{error}");

        let mut client = PlayClient::new(target, limits);
        let mut huge = ChunkWriter::new(128);
        queue_media(
            &mut huge,
            type_id::VIDEO,
            1,
            0,
            &Bytes::from(vec![0; 64 * 1024 + 1]),
        );
        let error = client.handle_input(&huge.to_vec(), &mut out).unwrap_err();
        assert!(error.to_string().contains("65537"), "{error}");
    }
}
