//! The SRT listener's handshake state machine (srt-protocol's
//! `MultiplexListener`, patched: see patched/srt-protocol/README.md), driven
//! without sockets the way srt-tokio drives it, with hostile input: random
//! datagrams, libsrt's own conclusion packets mutated, floods of inductions
//! and of unfinished handshakes. Nothing may panic, and the state kept for
//! unfinished handshakes stays bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use srt_protocol::listener::{MAX_PENDING_PER_IP, MAX_PENDING_SESSIONS, PENDING_TIMEOUT};
use srt_protocol::packet::{ControlPacket, ControlTypes, Packet};

use prism_ingest::srt_drive::{
    from_hex, induction_datagram, ListenerRig as Rig, COOKIE_OFFSET, LIBSRT_CONCLUSIONS,
};

/// Sends an induction from `from`; the cookie of the answer.
fn induction(rig: &mut Rig, from: SocketAddr) -> i32 {
    let bytes = induction_datagram(1234);
    let sent_before = rig.sent.len();
    rig.datagram(&bytes, from);
    assert_eq!(rig.sent.len(), sent_before + 1, "an induction is answered");
    rig.cookie_sent_to(from).expect("a handshake answer")
}

/// Conclusion `n` of `LIBSRT_CONCLUSIONS`, with `cookie` put in.
fn conclusion_with_cookie(n: usize, cookie: i32) -> Vec<u8> {
    let mut bytes = from_hex(LIBSRT_CONCLUSIONS[n].1);
    bytes[COOKIE_OFFSET..COOKIE_OFFSET + 4].copy_from_slice(&cookie.to_be_bytes());
    bytes
}

fn address(n: u32) -> SocketAddr {
    let ip = Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8);
    SocketAddr::new(IpAddr::V4(ip), 1024 + (n % 50_000) as u16)
}

#[test]
fn libsrt_conclusions_after_an_induction_reach_access_control() {
    let mut rig = Rig::new();
    for n in 0..LIBSRT_CONCLUSIONS.len() {
        let from = address(n as u32);
        let cookie = induction(&mut rig, from);
        let sent_before = rig.sent.len();
        rig.datagram(&conclusion_with_cookie(n, cookie), from);
        // Each is answered (refused: their stream ids are not known here,
        // or their key material is wrapped with another passphrase).
        let answer = &rig.sent[sent_before..];
        assert_eq!(answer.len(), 1, "{n}: {answer:?}");
    }
    // A wrong cookie gets nothing and leaves nothing behind.
    let stranger = address(99);
    rig.datagram(&conclusion_with_cookie(0, 42), stranger);
    assert_eq!(rig.listener.session_count(), 0);
}

#[test]
fn an_induction_flood_from_many_ports_keeps_no_state() {
    let mut rig = Rig::new();
    for port in 0..20_000u32 {
        let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 1024 + port as u16);
        induction(&mut rig, from);
    }
    assert_eq!(rig.sent.len(), 20_000);
    assert_eq!(rig.listener.session_count(), 0);
}

#[test]
fn unfinished_handshakes_are_capped_per_address_and_in_all_and_expire() {
    let mut rig = Rig::new();
    // Conclusions with a valid cookie but a protocol version the listener
    // does not take stay unfinished.
    let stuck = |rig: &mut Rig, from: SocketAddr| {
        let cookie = induction(rig, from);
        let mut bytes = conclusion_with_cookie(0, cookie);
        bytes[16..20].copy_from_slice(&5u32.to_be_bytes());
        bytes[20 + 2..20 + 4].copy_from_slice(&0u16.to_be_bytes());
        rig.datagram(&bytes, from);
    };
    for port in 0..1_000u16 {
        stuck(
            &mut rig,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 2000 + port),
        );
    }
    assert!(rig.listener.session_count() <= MAX_PENDING_PER_IP);
    for n in 0..5_000u32 {
        stuck(&mut rig, address(n));
    }
    assert!(rig.listener.session_count() <= MAX_PENDING_SESSIONS);
    rig.tick(PENDING_TIMEOUT + Duration::from_millis(100));
    assert_eq!(rig.listener.session_count(), 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_datagrams_never_panic_nor_keep_state(
        datagrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..600), 0u32..64),
            1..40,
        )
    ) {
        let mut rig = Rig::new();
        for (bytes, from) in &datagrams {
            rig.datagram(bytes, address(*from));
        }
        // Random bytes never carry a valid cookie: no session is opened.
        prop_assert_eq!(rig.listener.session_count(), 0);
    }

    #[test]
    fn mutated_libsrt_conclusions_never_panic(
        capture in 0usize..LIBSRT_CONCLUSIONS.len(),
        flips in proptest::collection::vec((COOKIE_OFFSET + 4..400usize, any::<u8>()), 0..12),
        cut in 0usize..400,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        stream_id in "[a-z]{0,8}|secure|plain",
        key_size in prop_oneof![Just(0u8), Just(2), Just(3), Just(4), any::<u8>()],
    ) {
        let mut rig = Rig::new();
        let from = address(7);
        let cookie = induction(&mut rig, from);
        let mut bytes = conclusion_with_cookie(capture, cookie);
        // The encryption field (key length / 8) the caller announces.
        bytes[16 + 4 + 1] = key_size;
        if !stream_id.is_empty() && capture == 1 {
            // Replace the captured stream id's bytes (last extension).
            let id = stream_id.as_bytes();
            let start = bytes.len() - 8;
            for (i, byte) in bytes[start..].iter_mut().enumerate() {
                *byte = id.get(i).copied().unwrap_or(0);
            }
        }
        for (at, value) in &flips {
            if *at < bytes.len() {
                bytes[*at] ^= value;
            }
        }
        bytes.truncate(cut.max(COOKIE_OFFSET + 4));
        bytes.extend_from_slice(&tail);
        rig.datagram(&bytes, from);
        // The caller retransmits its conclusion; then time passes.
        rig.datagram(&bytes, from);
        rig.tick(PENDING_TIMEOUT + Duration::from_millis(100));
        prop_assert!(rig.listener.session_count() <= rig.opened);
    }
}

/// Inputs the fuzzer and the code review found panicking srt-protocol's
/// parser (see patched/srt-protocol/README.md).
#[test]
fn short_and_unusual_extensions_are_errors_or_ignored_not_panics() {
    use srt_protocol::packet::SrtControlPacket;
    // Group extensions shorter than their 4 bytes.
    for len in 0..4 {
        let bytes = vec![1u8; len];
        assert!(SrtControlPacket::parse(8, &mut &bytes[..]).is_err());
    }
    // An empty stream id, congestion or filter extension.
    for packet_type in [5, 6, 7] {
        let _ = SrtControlPacket::parse(packet_type, &mut &[][..]);
    }
    // A peer's loss list whose range never ends, or ends before it starts:
    // each is read as its one number (it panicked, or counted through u32).
    for (list, expected) in [
        (vec![0x8000_0005u32], 1),
        (vec![0x8000_0010, 3], 1),
        (vec![0x8000_0001, 3], 3),
    ] {
        let mut nak = vec![0x80, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for word in list {
            nak.extend(word.to_be_bytes());
        }
        let Ok(Packet::Control(ControlPacket {
            control_type: ControlTypes::Nak(losses),
            ..
        })) = Packet::parse(&mut &nak[..], false)
        else {
            panic!("not a NAK");
        };
        assert_eq!(losses.into_iter_decompressed().take(10).count(), expected);
    }
}
