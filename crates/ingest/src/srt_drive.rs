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
use srt_protocol::options::{PacketCount, PacketSize};
use srt_protocol::packet::{
    ControlPacket, ControlTypes, HandshakeControlInfo, HandshakeVsInfo, Packet, ReceivePacketError,
    SeqNumber, ServerRejectReason, ShakeType, SocketId, SocketType, TimeStamp,
};
use srt_protocol::protocol::pending_connection::{AccessControlRequest, AccessControlResponse};
use srt_protocol::settings::{ConnInitSettings, KeySettings};

/// The passphrase of stream id "secure" (and of callers with none).
pub const PASSPHRASE: &str = "correct-horse-battery-staple";

/// Where the SYN cookie sits in a handshake datagram: after the 16-byte
/// header, version, encryption/extension fields, ISN, MSS, flow window,
/// handshake type and socket id.
pub const COOKIE_OFFSET: usize = 16 + 28;

/// HSv5 conclusion packets sent by libsrt (the reference implementation),
/// as captured by srt-rs's authors for their parser tests: plain, with a
/// stream id (`abcdefgh` reversed in 32-bit words), and with key material
/// (AES-128, wrapped with a passphrase nobody here knows).
pub const LIBSRT_CONCLUSIONS: [(&str, &str); 3] = [
    ("plain", "8000000000000000000F9EC400000000000000050000000144BEA60D000005DC00002000FFFFFFFF3D6936B6E3E405DD0100007F00000000000000000000000000010003000103010000002F00780000"),
    ("stream_id", "800000000000000000000b1400000000000000050000000563444b2e000005dc00002000ffffffff37eb0ee52154fbd60100007f0000000000000000000000000001000300010401000000bf0014001400050003646362616867666500006a69"),
    ("key_material", "800000000000000000175E8A0000000000000005000000036FEFB8D8000005DC00002000FFFFFFFF35E790ED5D16CCEA0100007F00000000000000000000000000010003000103010000002F01F401F40003000E122029010000000002000200000004049D75B0AC924C6E4C9EC40FEB4FE973DB1D215D426C18A2871EBF77E2646D9BAB15DBD7689AEF60EC"),
];

/// The bytes of a hex capture.
pub fn from_hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A caller's first datagram, an induction, in the HSv4 form libsrt sends.
pub fn induction_datagram(socket_id: u32) -> Vec<u8> {
    let packet = Packet::Control(ControlPacket {
        timestamp: TimeStamp::from_micros(0),
        dest_sockid: SocketId(0),
        control_type: ControlTypes::Handshake(HandshakeControlInfo {
            init_seq_num: SeqNumber::new_truncate(socket_id),
            max_packet_size: PacketSize(1500),
            max_flow_size: PacketCount(8192),
            shake_type: ShakeType::Induction,
            socket_id: SocketId(socket_id),
            syn_cookie: 0,
            peer_addr: std::net::Ipv4Addr::LOCALHOST.into(),
            info: HandshakeVsInfo::V4(SocketType::Datagram),
        }),
    });
    let mut bytes = Vec::new();
    packet.serialize(&mut bytes);
    bytes
}

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
