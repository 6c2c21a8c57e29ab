//! The SRT connection state machine (patched srt-protocol's
//! `DuplexConnection`) after its handshake, driven as srt-tokio's session
//! task drives it, on a clock the input moves.
//!
//! The input is a series of records, each starting with an op byte:
//! - `0x00..=0x3f`: a datagram from the peer, its length the next byte × 8.
//!   Its destination socket id is set to the connection's own, so mutated
//!   packets reach the state machine instead of stopping at that check.
//! - `0x40..=0x7f`: the clock moves on `(op & 0x3f) × 10` ms; timers run.
//! - `0x80..=0xbf`: `(op & 0x3f) + 1` messages of 1316 bytes to send.
//! - `0xc0..=0xff`: the local input closes (a publish ends), or with an odd
//!   op the socket fails.
//!
//! Everything the connection asks to send or release is taken at once, as
//! srt-tokio does; the time one input takes is the work a peer's datagrams
//! cost, which the fuzzer's time budget bounds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use srt_protocol::connection::{Connection, ConnectionSettings, DuplexConnection};
use srt_protocol::options::{PacketCount, PacketSize};
use srt_protocol::packet::{ControlTypes, Packet, ReceivePacketError, SeqNumber, SocketId};
use srt_protocol::protocol::handshake::Handshake;

/// What the connection does before the input: as a sender, it has sent
/// the first 100 packets of a 6 Mbit/s show (the input sends more), so the peer's ACKs, NAKs and drop requests
/// name packets it holds; as a receiver, it waits for the peer's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sender,
    Receiver,
}

pub const LOCAL_SOCKET_ID: u32 = 0x0102_0304;
pub const REMOTE_SOCKET_ID: u32 = 0x0a0b_0c0d;
/// Where the destination socket id sits in every SRT packet's header.
const DEST_SOCKET_ID_OFFSET: usize = 12;
/// The size of the messages a Prism sender writes (seven TS packets).
const MESSAGE_LEN: usize = 1316;
/// Messages sent before the input, for the sender: enough for NAKs and
/// drop requests to name held packets, few enough to keep runs fast.
const PRELUDE_MESSAGES: u32 = 100;

fn remote() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}

/// The settings of a connection as Prism makes them (live mode, 120 ms
/// latency, srt-tokio's buffer sizes), starting at sequence number 0.
fn settings(start: Instant) -> ConnectionSettings {
    ConnectionSettings {
        remote: remote(),
        remote_sockid: SocketId(REMOTE_SOCKET_ID),
        local_sockid: SocketId(LOCAL_SOCKET_ID),
        socket_start_time: start,
        rtt: Duration::from_millis(10),
        init_seq_num: SeqNumber::new_truncate(0),
        max_packet_size: PacketSize(1500),
        max_flow_size: PacketCount(8192),
        send_tsbpd_latency: Duration::from_millis(120),
        recv_tsbpd_latency: Duration::from_millis(120),
        too_late_packet_drop: true,
        peer_idle_timeout: Duration::from_secs(5),
        recv_buffer_size: PacketCount(8192),
        send_buffer_size: PacketCount(8192),
        cipher: None,
        stream_id: None,
        bandwidth: Default::default(),
        statistics_interval: Duration::from_secs(1),
    }
}

fn libsrt_conclusion() -> ControlTypes {
    use prism_ingest::srt_drive::{from_hex, LIBSRT_CONCLUSIONS};
    let bytes = from_hex(LIBSRT_CONCLUSIONS[0].1);
    match Packet::parse(&mut &bytes[..], false) {
        Ok(Packet::Control(control)) => control.control_type,
        other => panic!("libsrt's conclusion does not parse: {other:?}"),
    }
}

/// One connection and its clock.
struct Rig {
    connection: DuplexConnection,
    now: Instant,
    /// Packets sent and data released so far.
    sent: u64,
    released: u64,
}

impl Rig {
    fn new(role: Role) -> Self {
        Self::with_send_buffer(role, PacketCount(8192))
    }

    fn with_send_buffer(role: Role, send_buffer: PacketCount) -> Self {
        let start = Instant::now();
        let handshake = match role {
            Role::Sender => Handshake::Connector,
            // A listener answers a repeated conclusion with its response:
            // here libsrt's own conclusion stands in for it.
            Role::Receiver => Handshake::Listener(libsrt_conclusion()),
        };
        let connection = DuplexConnection::new(Connection {
            settings: ConnectionSettings {
                send_buffer_size: send_buffer,
                ..settings(start)
            },
            handshake,
        });
        Self {
            connection,
            now: start,
            sent: 0,
            released: 0,
        }
    }

    /// Takes everything the connection has to send or release, then runs
    /// its timers: one turn of srt-tokio's session loop.
    fn turn(&mut self) {
        if self.connection.should_update_statistics(self.now) {
            let _ = self.connection.statistics();
        }
        while self.connection.next_packet(self.now).is_some() {
            self.sent += 1;
        }
        while self.connection.next_data(self.now).is_some() {
            self.released += 1;
        }
        self.connection.check_timers(self.now);
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.turn();
    }

    fn send(&mut self, messages: u32) {
        for _ in 0..messages {
            let payload = Bytes::from_static(&[0x47; MESSAGE_LEN]);
            self.connection
                .handle_data_input(self.now, Some((self.now, payload)));
            self.turn();
        }
    }

    fn datagram(&mut self, bytes: &[u8]) {
        let mut bytes = bytes.to_vec();
        if let Some(field) = bytes.get_mut(DEST_SOCKET_ID_OFFSET..DEST_SOCKET_ID_OFFSET + 4) {
            field.copy_from_slice(&LOCAL_SOCKET_ID.to_be_bytes());
        }
        let packet = Packet::parse(&mut &bytes[..], false)
            .map(|packet| (packet, remote()))
            .map_err(ReceivePacketError::Parse);
        self.connection.handle_packet_input(self.now, packet);
        self.turn();
    }
}

/// Runs `data` (see the module's documentation) through one connection.
pub fn drive(role: Role, data: &[u8]) {
    let mut rig = Rig::new(role);
    if role == Role::Sender {
        for _ in 0..PRELUDE_MESSAGES {
            rig.send(1);
            rig.advance(Duration::from_micros(1750));
        }
    }
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        if !rig.connection.is_open() {
            break;
        }
        rest = tail;
        match op {
            0x00..=0x3f => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let (datagram, after) = tail.split_at((usize::from(len) * 8).min(tail.len()));
                rest = after;
                rig.datagram(datagram);
            }
            0x40..=0x7f => rig.advance(Duration::from_millis(u64::from(op & 0x3f) * 10)),
            0x80..=0xbf => rig.send(u32::from(op & 0x3f) + 1),
            _ if op % 2 == 0 => {
                rig.connection.handle_data_input(rig.now, None);
                rig.turn();
            }
            _ => {
                let closed = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
                rig.connection
                    .handle_packet_input(rig.now, Err(ReceivePacketError::Io(closed)));
                rig.turn();
            }
        }
    }
    // The rest of the session's life: its timers run out.
    for _ in 0..20 {
        if !rig.connection.is_open() {
            break;
        }
        rig.advance(Duration::from_millis(500));
    }
    assert!(
        rig.sent < 1 << 24 && rig.released < 1 << 24,
        "{} packets sent, {} released",
        rig.sent,
        rig.released
    );
}

/// Raw SRT packets for the seeds: what a peer's datagrams look like.
pub mod wire {
    use super::LOCAL_SOCKET_ID;

    /// A control packet: type, subtype, type-specific word, then payload.
    pub fn control(control_type: u16, type_specific: u32, payload: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + payload.len() * 4);
        out.extend_from_slice(&(0x8000_0000 | u32::from(control_type) << 16).to_be_bytes());
        out.extend_from_slice(&type_specific.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes()); // timestamp
        out.extend_from_slice(&LOCAL_SOCKET_ID.to_be_bytes());
        for word in payload {
            out.extend_from_slice(&word.to_be_bytes());
        }
        out
    }

    /// A data packet carrying a whole message.
    pub fn data(seq: u32, message_number: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + payload.len());
        out.extend_from_slice(&(seq & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(&(0xc000_0000 | (message_number & 0x03ff_ffff)).to_be_bytes());
        out.extend_from_slice(&seq.wrapping_mul(1000).to_be_bytes()); // timestamp, µs
        out.extend_from_slice(&LOCAL_SOCKET_ID.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    pub const KEEPALIVE: u16 = 1;
    pub const ACK: u16 = 2;
    pub const NAK: u16 = 3;
    pub const CONGESTION_WARNING: u16 = 4;
    pub const SHUTDOWN: u16 = 5;
    pub const ACK2: u16 = 6;
    pub const DROP_REQUEST: u16 = 7;
    pub const PEER_ERROR: u16 = 8;

    /// A full ACK of everything before `seq`: RTT, its variance, buffer,
    /// receive rate, link capacity, receive rate in bytes.
    pub fn ack(number: u32, seq: u32) -> Vec<u8> {
        control(
            ACK,
            number,
            &[seq, 10_000, 5_000, 8192, 600, 100_000, 800_000],
        )
    }

    /// A NAK: a range starts with its top bit set.
    pub fn nak(loss_list: &[u32]) -> Vec<u8> {
        control(NAK, 0, loss_list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst larger than the send buffer, before any of it was sent (a
    /// keyframe larger than the buffer): the oldest packets are dropped and
    /// the rest are sent. The patched srt-protocol's sender once kept
    /// waiting for the first dropped packet and sent nothing more.
    #[test]
    fn a_burst_past_the_send_buffer_drops_the_oldest_and_sends_the_rest() {
        let mut rig = Rig::with_send_buffer(Role::Sender, PacketCount(32));
        let payload = Bytes::from_static(&[0x47; MESSAGE_LEN]);
        for _ in 0..100 {
            rig.connection
                .handle_data_input(rig.now, Some((rig.now, payload.clone())));
        }
        for _ in 0..50 {
            rig.advance(Duration::from_millis(1));
        }
        let statistics = rig.connection.statistics().clone();
        assert_eq!(statistics.tx_dropped_data, 68);
        assert_eq!(statistics.tx_unique_data, 32);
        // And what comes next is sent too.
        rig.send(10);
        for _ in 0..50 {
            rig.advance(Duration::from_millis(1));
        }
        assert_eq!(rig.connection.statistics().tx_unique_data, 42);
    }
}
