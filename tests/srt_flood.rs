//! End to end: hostile SRT traffic during a live SRT show. From hundreds of
//! UDP ports: induction floods, random datagrams (some larger than any SRT
//! packet), conclusions with random
//! and oversized (over 512 bytes) stream ids that then go silent
//! mid-handshake. Meanwhile the live show loses nothing, a real caller on
//! another key gets in within a second, Prism's memory stays bounded and
//! nothing panics.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use srt_protocol::options::{PacketCount, PacketSize, SrtVersion};
use srt_protocol::packet::{
    ControlPacket, ControlTypes, HandshakeControlInfo, HandshakeVsInfo, HsV5Info, Packet,
    SeqNumber, ShakeType, SocketId, SrtControlPacket, SrtHandshake, SrtShakeFlags, TimeStamp,
};
use tokio::net::UdpSocket;

use prism_ingest::srt_drive::{induction_datagram, COOKIE_OFFSET};
use support::*;

const SHOW_KEY: &str = "live_srt_flood_show_77aa";
const LATE_KEY: &str = "live_srt_flood_late_88bb";
const SHOW_SECONDS: u32 = 14;

/// A conclusion as libsrt sends it, with the stream id `sid`.
fn conclusion(cookie: i32, socket: u32, sid: String) -> Vec<u8> {
    let packet = Packet::Control(ControlPacket {
        timestamp: TimeStamp::from_micros(0),
        dest_sockid: SocketId(0),
        control_type: ControlTypes::Handshake(HandshakeControlInfo {
            init_seq_num: SeqNumber::new_truncate(socket),
            max_packet_size: PacketSize(1500),
            max_flow_size: PacketCount(8192),
            shake_type: ShakeType::Conclusion,
            socket_id: SocketId(socket),
            syn_cookie: cookie,
            peer_addr: Ipv4Addr::LOCALHOST.into(),
            info: HandshakeVsInfo::V5(HsV5Info {
                key_size: Default::default(),
                ext_hs: Some(SrtControlPacket::HandshakeRequest(SrtHandshake {
                    version: SrtVersion::CURRENT,
                    flags: SrtShakeFlags::SUPPORTED,
                    send_latency: Duration::from_millis(120),
                    recv_latency: Duration::from_millis(120),
                })),
                ext_km: None,
                ext_group: None,
                sid: Some(sid),
            }),
        }),
    });
    let mut bytes = Vec::new();
    packet.serialize(&mut bytes);
    bytes
}

/// The cookie in an induction answer, if it is one.
fn cookie_of(answer: &[u8]) -> Option<i32> {
    answer
        .get(COOKIE_OFFSET..COOKIE_OFFSET + 4)
        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

impl Flood {
    /// `ports` tasks of each kind, each on its own UDP port.
    fn start(runtime: &tokio::runtime::Runtime, target: SocketAddr, ports: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        for n in 0..ports {
            for kind in 0..3 {
                let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
                runtime.spawn(async move {
                    let mut seed = 0x9e37_79b9_u32.wrapping_mul(n * 3 + kind + 1);
                    let mut random = move || {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        seed
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                            return;
                        };
                        for _ in 0..20 {
                            let packet = match kind {
                                0 => induction_datagram(random()),
                                // Random bytes, up to twice the largest SRT
                                // datagram.
                                1 => (0..random() % 3000).map(|_| random() as u8).collect(),
                                _ => {
                                    // Induction, then a conclusion with a
                                    // random or oversized stream id; then
                                    // silence, mid-handshake.
                                    let _ =
                                        socket.send_to(&induction_datagram(random()), target).await;
                                    let mut answer = [0u8; 1500];
                                    let Ok(Ok((len, _))) = tokio::time::timeout(
                                        Duration::from_millis(200),
                                        socket.recv_from(&mut answer),
                                    )
                                    .await
                                    else {
                                        continue;
                                    };
                                    let Some(cookie) = cookie_of(&answer[..len]) else {
                                        continue;
                                    };
                                    let sid_len = (random() % 1200) as usize;
                                    let sid: String = (0..sid_len)
                                        .map(|_| (b'a' + (random() % 26) as u8) as char)
                                        .collect();
                                    conclusion(cookie, random(), sid)
                                }
                            };
                            let _ = socket.send_to(&packet, target).await;
                            sent.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                });
            }
        }
        Self { stop, sent }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sent.load(Ordering::Relaxed)
    }
}

fn srt_sessions(metrics_port: u16) -> f64 {
    metric(
        &http_get(metrics_port, "/metrics").1,
        "prism_ingest_sessions",
        &[("protocol", "srt")],
    )
    .unwrap_or(0.0)
}

/// From spawning an SRT caller on `key` to Prism counting its session.
fn time_to_connect(
    scratch: &Scratch,
    srt_port: u16,
    metrics_port: u16,
    key: &str,
) -> (Duration, Ffmpeg) {
    let before = srt_sessions(metrics_port);
    let started = Instant::now();
    let caller = Ffmpeg::srt_publisher(
        &format!("srt://127.0.0.1:{srt_port}?streamid={key}"),
        2,
        scratch.file(&format!("{key}.log")),
    );
    while srt_sessions(metrics_port) <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the caller never got in"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (started.elapsed(), caller)
}

#[test]
fn hostile_srt_traffic_leaves_the_show_and_new_callers_alone() {
    require_ffmpeg();
    let scratch = Scratch::new("srt-flood");
    let (rtmp_port, srt_port, metrics_port) = (free_port(), free_port(), free_port());
    let mut receivers = Vec::new();
    let mut destinations = String::new();
    for n in 0..2 {
        let port = free_port();
        let out = scratch.file(&format!("show{n}.flv"));
        receivers.push((
            Ffmpeg::receiver(port, "live", &format!("show{n}"), &out),
            out,
        ));
        destinations += &format!(
            "\n  [[streams.destinations]]\n  id = \"d{n}\"\n  url = \"rtmp://127.0.0.1:{port}/live/show{n}\"\n"
        );
    }
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{SHOW_KEY}\"\nreconnect_grace_s = 0\n{destinations}\n\
         [[streams]]\nid = \"late\"\nkey = \"{LATE_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    wait_for_port(metrics_port, Duration::from_secs(5));

    // A real caller's connect time with nothing else going on.
    let (quiet, mut caller) = time_to_connect(&scratch, srt_port, metrics_port, LATE_KEY);
    assert!(
        caller.wait(Duration::from_secs(20)).success(),
        "{}",
        caller.log()
    );

    let mut show = Ffmpeg::srt_publisher(
        &format!("srt://127.0.0.1:{srt_port}?streamid={SHOW_KEY}"),
        SHOW_SECONDS,
        scratch.file("show.log"),
    );
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let rss_before = prism.rss_kib();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood = Flood::start(&runtime, SocketAddr::from(([127, 0, 0, 1], srt_port)), 100);
    std::thread::sleep(Duration::from_secs(2));
    let (flooded, mut caller) = time_to_connect(&scratch, srt_port, metrics_port, LATE_KEY);
    println!("an SRT caller got in after {flooded:?} under the flood ({quiet:?} without)");
    assert!(
        flooded < quiet + Duration::from_secs(1),
        "the flood delayed a caller to {flooded:?} ({quiet:?} without)"
    );
    assert!(
        caller.wait(Duration::from_secs(20)).success(),
        "{}",
        caller.log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let rss_flooded = prism.peak_rss_kib();
    let sent = flood.stop();
    runtime.shutdown_timeout(Duration::from_secs(1));
    println!(
        "{sent} hostile datagrams; resident memory {rss_before} KiB before, peak {rss_flooded} KiB"
    );
    assert!(
        rss_flooded < rss_before + 64 * 1024,
        "memory grew from {rss_before} to {rss_flooded} KiB"
    );

    assert!(
        show.wait(Duration::from_secs(40)).success(),
        "{}",
        show.log()
    );
    for (receiver, out) in &mut receivers {
        receiver.wait(Duration::from_secs(20));
        assert_good_recording(out, SHOW_SECONDS as f64);
    }
    let log = prism.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("listener ended unexpectedly"), "{log}");
}

/// A datagram too large for any SRT packet is dropped, and costs nothing to
/// the caller whose handshake arrives just behind it (a listener that read
/// datagrams in batches and dropped one must not shift the rest).
#[test]
fn a_datagram_too_large_for_srt_leaves_the_next_one_whole() {
    const CALLERS: usize = 50;
    let scratch = Scratch::new("srt-oversize");
    let (rtmp_port, srt_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{SHOW_KEY}\"\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, srt_port));
    let mut answered = 0;
    for n in 0..CALLERS {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        // Back to back, as one burst.
        socket.send_to(&[0x5a; 2000], target).unwrap();
        socket
            .send_to(&induction_datagram(n as u32 + 1), target)
            .unwrap();
        let mut answer = [0u8; 1500];
        if let Ok((len, _)) = socket.recv_from(&mut answer) {
            answered += usize::from(cookie_of(&answer[..len]).is_some());
        }
    }
    assert_eq!(answered, CALLERS, "{}", prism.log());
    assert!(!prism.log().contains("panicked"), "{}", prism.log());
    prism.terminate();
}
