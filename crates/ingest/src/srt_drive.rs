//! srt-tokio's listener I/O loop without the I/O: drives srt-protocol's
//! sans-IO `MultiplexListener` with datagrams and a clock, answers every
//! action as done, and decides access the way Prism's SRT access control
//! does. For the property tests and the fuzz target of the SRT handshake
//! (patched/srt-protocol), so both exercise the listener as it runs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use srt_protocol::listener::{Action, Input, MultiplexListener, NextInputContext, SessionId};
use srt_protocol::options::{KeySize, Passphrase};
use srt_protocol::packet::{
    ControlPacket, ControlTypes, Packet, ReceivePacketError, ServerRejectReason,
};
use srt_protocol::protocol::pending_connection::{AccessControlRequest, AccessControlResponse};
use srt_protocol::settings::{ConnInitSettings, KeySettings};

/// The passphrase of stream id "secure" (and of callers with none).
pub const PASSPHRASE: &str = "correct-horse-battery-staple";

/// Where the SYN cookie sits in a handshake datagram: after the 16-byte
/// header, version, encryption/extension fields, ISN, MSS, flow window,
/// handshake type and socket id.
pub const COOKIE_OFFSET: usize = 16 + 28;

/// Accepts stream id "plain" unencrypted, and "secure" or none with
/// `PASSPHRASE` at the caller's key length (so key material reaches the key
/// negotiation); refuses the rest as an unknown key, as Prism does.
pub fn decide(request: &AccessControlRequest) -> AccessControlResponse {
    let stream_id = request.stream_id.as_ref().map(|s| s.to_string());
    match stream_id.as_deref() {
        Some("plain") => AccessControlResponse::Accepted(None),
        Some("secure") | None => AccessControlResponse::Accepted(Some(KeySettings {
            key_size: match request.key_size {
                KeySize::Unspecified => KeySize::AES128,
                size => size,
            },
            passphrase: Passphrase::try_from(PASSPHRASE.to_string()).expect("a valid passphrase"),
        })),
        _ => AccessControlResponse::Rejected(ServerRejectReason::Notfound.into()),
    }
}

/// The listener and what it did.
pub struct ListenerRig {
    pub listener: MultiplexListener,
    pub now: Instant,
    /// Every datagram it sent, in order.
    pub sent: Vec<(Packet, SocketAddr)>,
    /// Connections it opened.
    pub opened: usize,
    decisions: VecDeque<(SessionId, AccessControlResponse)>,
}

impl Default for ListenerRig {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenerRig {
    pub fn new() -> Self {
        let now = Instant::now();
        Self {
            listener: MultiplexListener::new(
                now,
                SocketAddr::from(([127, 0, 0, 1], 9000)),
                ConnInitSettings::default(),
            ),
            now,
            sent: Vec::new(),
            opened: 0,
            decisions: VecDeque::new(),
        }
    }

    /// Runs one input and every action it leads to, as the I/O loop does.
    /// Panics if the listener does not settle (a livelock).
    pub fn run(&mut self, mut input: Input) {
        for _ in 0..64 {
            let action = self.listener.handle_input(self.now, input);
            let next = NextInputContext::for_action(&action);
            let done = || next.input_from(Ok::<(), ()>(()));
            input = match action {
                Action::SendPacket(packet) => {
                    self.sent.push(packet);
                    done()
                }
                Action::RequestAccess(id, request) => {
                    self.decisions.push_back((id, decide(&request)));
                    done()
                }
                Action::OpenConnection(_, opened) => {
                    self.opened += 1;
                    self.sent.extend(opened.0);
                    done()
                }
                Action::RejectConnection(_, answer) => {
                    self.sent.extend(answer);
                    done()
                }
                Action::DelegatePacket(..)
                | Action::DropConnection(..)
                | Action::UpdateStatistics(..) => done(),
                Action::WaitForInput => match self.decisions.pop_front() {
                    Some(decision) => Input::AccessResponse(Some(decision)),
                    None => return,
                },
                Action::Close => return,
            };
        }
        panic!("the SRT listener did not settle within 64 steps");
    }

    /// One datagram from `from`, parsed as the socket layer parses it.
    pub fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let input = match Packet::parse(&mut &bytes[..], false) {
            Ok(packet) => Input::Packet(Ok((packet, from))),
            Err(e) => Input::Packet(Err(ReceivePacketError::Parse(e))),
        };
        self.run(input);
    }

    /// Time passes; the listener's timer fires.
    pub fn tick(&mut self, by: Duration) {
        self.now += by;
        self.run(Input::Timer);
    }

    /// The cookie of the last handshake answer sent to `to`, if any.
    pub fn cookie_sent_to(&self, to: SocketAddr) -> Option<i32> {
        self.sent
            .iter()
            .rev()
            .find_map(|(packet, address)| match packet {
                Packet::Control(ControlPacket {
                    control_type: ControlTypes::Handshake(shake),
                    ..
                }) if *address == to => Some(shake.syn_cookie),
                _ => None,
            })
    }
}
