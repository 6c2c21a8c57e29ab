//! End to end: hostile SRT loss lists. A NAK is the one control packet any
//! SRT peer sends: a destination, a pulled source or a publisher with a valid
//! key. Here a relay between Prism and a real SRT peer (libsrt's
//! `srt-live-transmit` or ffmpeg) passes the session through and adds NAKs of
//! its own, from the address Prism knows as the peer's, to the socket id
//! Prism uses: first one NAK of ten ranges `[0, 0x7FFFFFFF]`, then 200 NAKs a
//! second of ranges that together cover every sequence number twice.
//! Meanwhile a control show on another stream (ffmpeg → Prism → ffmpeg over
//! RTMP) must lose nothing, `/healthz` must answer every probe within a
//! second, and Prism's CPU must be back to idle a second after the NAKs stop.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const CONTROL_KEY: &str = "nak_control_show_5e1f";
const ATTACKED_KEY: &str = "nak_attacked_show_9c2d";
const SHOW_SECONDS: u32 = 22;

/// Which end of the relayed session Prism is.
#[derive(Clone, Copy, PartialEq)]
enum PrismIs {
    /// Prism calls the relay (an SRT destination or a pulled source).
    Caller,
    /// The relay calls Prism (an SRT publisher).
    Listener,
}

/// A UDP relay between an SRT caller (on `port`) and a listener at
/// `backend`, which can send NAKs to Prism's end of the session.
struct NakRelay {
    port: u16,
    stop: Arc<AtomicBool>,
    /// NAKs per second to send; 0 sends none.
    rate: Arc<AtomicU32>,
    sent: Arc<AtomicU64>,
}

impl NakRelay {
    fn start(backend: SocketAddr, prism_is: PrismIs) -> Self {
        let port = free_port();
        let front = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(backend).unwrap();
        for socket in [&front, &back] {
            socket
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let rate = Arc::new(AtomicU32::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let caller: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        // Prism's socket id: the destination id of datagrams sent to Prism.
        let prism_socket = Arc::new(AtomicU32::new(0));
        let learn = |datagram: &[u8], towards_prism: bool, id: &AtomicU32| {
            if towards_prism && datagram.len() >= 16 {
                let dest = u32::from_be_bytes(datagram[12..16].try_into().unwrap());
                if dest != 0 {
                    id.store(dest, Ordering::Relaxed);
                }
            }
        };
        {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (stop, caller, id) = (stop.clone(), caller.clone(), prism_socket.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((len, from)) = front.recv_from(&mut buf) {
                        *caller.lock().unwrap() = Some(from);
                        learn(&buf[..len], prism_is == PrismIs::Listener, &id);
                        let _ = back.send(&buf[..len]);
                    }
                }
            });
        }
        {
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (stop, caller, id) = (stop.clone(), caller.clone(), prism_socket.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(len) = back.recv(&mut buf) {
                        learn(&buf[..len], prism_is == PrismIs::Caller, &id);
                        if let Some(to) = *caller.lock().unwrap() {
                            let _ = front.send_to(&buf[..len], to);
                        }
                    }
                }
            });
        }
        {
            let (stop, rate, sent) = (stop.clone(), rate.clone(), sent.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let per_second = rate.load(Ordering::Relaxed);
                    let id = prism_socket.load(Ordering::Relaxed);
                    let to = *caller.lock().unwrap();
                    if per_second == 0 || id == 0 || to.is_none() {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    let nak = hostile_nak(id, n);
                    let _ = match prism_is {
                        PrismIs::Caller => front.send_to(&nak, to.unwrap()),
                        PrismIs::Listener => back.send(&nak),
                    };
                    n += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_secs(1) / per_second);
                }
            });
        }
        Self {
            port,
            stop,
            rate,
            sent,
        }
    }

    /// Sends one NAK and waits until it has left.
    fn send_one(&self) {
        let before = self.sent.load(Ordering::Relaxed);
        self.rate.store(1, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sent.load(Ordering::Relaxed) == before {
            assert!(Instant::now() < deadline, "the session never came up");
            thread::sleep(Duration::from_millis(5));
        }
        self.rate.store(0, Ordering::Relaxed);
    }
}

impl Drop for NakRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The `n`th hostile NAK to `socket`: the first is the one of the report
/// (ten ranges `[0, 0x7FFFFFFF]`); the others alternate between it and 160
/// ranges of 2^30 numbers each, starting every 2^26, which cover every
/// sequence number (and so whatever Prism holds) over and over.
fn hostile_nak(socket: u32, n: u64) -> Vec<u8> {
    let mut words = vec![0x8003_0000u32, 0, n as u32, socket];
    if n.is_multiple_of(2) {
        for _ in 0..10 {
            words.extend([0x8000_0000, 0x7FFF_FFFF]);
        }
    } else {
        for i in 0..160u32 {
            let start = (i << 26) & 0x7FFF_FFFF;
            let end = (start + (1 << 30) - 1) & 0x7FFF_FFFF;
            words.extend([0x8000_0000 | start, end]);
        }
    }
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// CPU seconds the process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Probes `/healthz` every 100 ms until stopped; the slowest answer.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    worst: Arc<Mutex<Duration>>,
}

impl HealthProbe {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let worst = Arc::new(Mutex::new(Duration::ZERO));
        let (s, w) = (stop.clone(), worst.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let asked = Instant::now();
                // A probe that fails or times out (10 s) counts as the
                // longest wait there is.
                let answer = std::panic::catch_unwind(|| http_get(port, "/healthz"));
                let took = match answer {
                    Ok((200, _)) => asked.elapsed(),
                    _ => Duration::MAX,
                };
                let mut worst = w.lock().unwrap();
                *worst = (*worst).max(took);
                drop(worst);
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, worst }
    }

    fn worst(&self) -> Duration {
        *self.worst.lock().unwrap()
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the control show and the attacked stream (`attacked_stream` is its
/// `[[streams]]` table's body), attacks through `relay`, and checks.
fn survive_the_naks(
    scratch: Scratch,
    srt_port: u16,
    attacked_stream: &str,
    relay: &NakRelay,
    start_attacked: impl FnOnce(&Prism) -> Option<Ffmpeg>,
) {
    require_ffmpeg();
    let (rtmp_port, metrics_port, receiver_port) = (free_port(), free_port(), free_port());
    let control_out = scratch.file("control.flv");
    let mut receiver = Ffmpeg::receiver(receiver_port, "live", "x", &control_out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[fanout]\nconnect_timeout_s = 3\n\n\
         [[streams]]\nid = \"control\"\nkey = \"{CONTROL_KEY}\"\n\
           [[streams.destinations]]\n  id = \"out\"\n  url = \"rtmp://127.0.0.1:{receiver_port}/live/x\"\n\n\
         [[streams]]\nid = \"attacked\"\nkey = \"{ATTACKED_KEY}\"\n{attacked_stream}"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(metrics_port, Duration::from_secs(5));
    let mut control = Ffmpeg::publisher(
        &prism.publish_url(CONTROL_KEY),
        SHOW_SECONDS,
        scratch.file("control.log"),
    );
    let _attacked_source = start_attacked(&prism);
    let probe = HealthProbe::start(metrics_port);
    thread::sleep(Duration::from_secs(4));

    let idle_before = {
        let cpu = cpu_seconds(prism.pid());
        thread::sleep(Duration::from_secs(1));
        cpu_seconds(prism.pid()) - cpu
    };
    relay.send_one();
    thread::sleep(Duration::from_secs(2));
    let after_one = probe.worst();

    let cpu = cpu_seconds(prism.pid());
    relay.rate.store(200, Ordering::Relaxed);
    thread::sleep(Duration::from_secs(8));
    relay.rate.store(0, Ordering::Relaxed);
    let during = (cpu_seconds(prism.pid()) - cpu) / 8.0;
    thread::sleep(Duration::from_secs(1));
    let cpu = cpu_seconds(prism.pid());
    thread::sleep(Duration::from_secs(1));
    let after = cpu_seconds(prism.pid()) - cpu;
    let sent = relay.sent.load(Ordering::Relaxed);
    println!(
        "{sent} NAKs; CPU: {idle_before:.2} s/s before, {during:.2} s/s under 200 NAK/s, \
         {after:.2} s/s a second after; slowest /healthz {:?} (after one NAK {after_one:?})",
        probe.worst()
    );
    assert!(sent >= 1000, "only {sent} NAKs reached Prism's session");
    assert!(
        probe.worst() <= Duration::from_secs(1),
        "/healthz waited {:?}",
        probe.worst()
    );
    // The report's freeze held a core for 30 s; a second after the flood the
    // process is back to what a relay of two small shows costs.
    assert!(
        after <= idle_before + 0.15,
        "CPU {after:.2} s/s a second after the NAKs (before: {idle_before:.2})"
    );

    assert!(
        control.wait(Duration::from_secs(40)).success(),
        "{}",
        control.log()
    );
    receiver.wait(Duration::from_secs(15));
    drop(probe);
    // The control show lost nothing: one connection to its destination, the
    // whole show decoded, every frame there (25 frames a second).
    let log = prism.log();
    let sessions = log
        .lines()
        .filter(|l| l.contains("destination live") && l.contains("destination=out"))
        .count();
    assert_eq!(sessions, 1, "the control destination reconnected:\n{log}");
    assert_good_recording(&control_out, f64::from(SHOW_SECONDS));
    let frames = video_frames(&control_out);
    assert!(
        frames >= SHOW_SECONDS * 25 - 2,
        "the control show has {frames} frames of {}",
        SHOW_SECONDS * 25
    );
    assert!(!log.contains("panic"), "{log}");
}

#[test]
fn naks_from_a_hostile_srt_destination_cost_other_streams_nothing() {
    let scratch = Scratch::new("nak-destination");
    let backend_port = free_port();
    let _receiver =
        Ffmpeg::srt_live_transmit_receiver(backend_port, None, &scratch.file("srt-destination.ts"));
    let relay = NakRelay::start(([127, 0, 0, 1], backend_port).into(), PrismIs::Caller);
    let destination = format!(
        "  [[streams.destinations]]\n  id = \"hostile\"\n  url = \"srt://127.0.0.1:{}\"\n",
        relay.port
    );
    survive_the_naks(scratch, free_port(), &destination, &relay, |prism| {
        Some(Ffmpeg::publisher(
            &prism.publish_url(ATTACKED_KEY),
            SHOW_SECONDS,
            prism.log_path.with_file_name("attacked.log"),
        ))
    });
}

#[test]
fn naks_from_an_srt_publisher_with_a_valid_key_cost_other_streams_nothing() {
    let scratch = Scratch::new("nak-publisher");
    let srt_port = free_port();
    let relay = NakRelay::start(([127, 0, 0, 1], srt_port).into(), PrismIs::Listener);
    let url = format!("srt://127.0.0.1:{}?streamid={ATTACKED_KEY}", relay.port);
    survive_the_naks(scratch, srt_port, "", &relay, |prism| {
        Some(Ffmpeg::srt_publisher(
            &url,
            SHOW_SECONDS,
            prism.log_path.with_file_name("attacked.log"),
        ))
    });
}

#[test]
fn naks_from_a_pulled_srt_source_cost_other_streams_nothing() {
    let scratch = Scratch::new("nak-pull");
    let source_port = free_port();
    let _source = Ffmpeg::srt_publisher(
        &format!("srt://127.0.0.1:{source_port}?mode=listener"),
        SHOW_SECONDS + 10,
        scratch.file("source.log"),
    );
    let relay = NakRelay::start(([127, 0, 0, 1], source_port).into(), PrismIs::Caller);
    let pull = format!("pull = \"srt://127.0.0.1:{}\"\n", relay.port);
    survive_the_naks(scratch, free_port(), &pull, &relay, |_| None);
}
