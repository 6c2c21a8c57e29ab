//! End to end: garbage on every listener during a live show. A thousand
//! junk connections on the RTMP port (raw noise, noise after a valid
//! handshake, an AMF0 bomb, absurd chunk sizes), junk datagrams on the SRT
//! port, malformed requests on the admin port: each ends its own
//! connection; the daemon and the show carry on and the sinks lose nothing.

mod support;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use prism_rtmp::{ChunkWriter, MessageHeader};

use support::*;

const STREAM_KEY: &str = "live_faults_7b6a5c4d";
const TOKEN: &str = "faults-token-0123456789";

/// A tiny deterministic noise source, so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % max;
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn message(type_id: u8, body: Vec<u8>) -> Vec<u8> {
    let mut writer = ChunkWriter::new(128);
    writer.push(
        MessageHeader {
            chunk_stream_id: 3,
            type_id,
            message_stream_id: 0,
            timestamp: 0,
        },
        &Bytes::from(body),
    );
    writer.to_vec()
}

/// One junk RTMP connection of the kind `n` picks.
fn junk_rtmp(port: u16, n: usize, noise: &mut Noise) {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    match n % 5 {
        // Pure noise instead of a handshake.
        0 => {
            let _ = stream.write_all(&noise.bytes(3000));
        }
        // A truncated handshake.
        1 => {
            let _ = stream.write_all(&[3; 700]);
        }
        // Noise after a valid handshake: into the chunk parser.
        2 => {
            if client_handshake(&mut stream).is_some() {
                let _ = stream.write_all(&noise.bytes(5000));
            }
        }
        // An AMF0 bomb: a command nested five thousand objects deep (20 KB,
        // under the 64 KiB an anonymous peer may send in one message).
        3 => {
            if client_handshake(&mut stream).is_some() {
                let mut bomb = vec![2, 0, 7];
                bomb.extend_from_slice(b"connect");
                bomb.extend_from_slice(&[0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
                for _ in 0..5_000 {
                    bomb.extend_from_slice(&[3, 0, 1, b'a']);
                }
                let _ = stream.write_all(&message(20, bomb));
            }
        }
        // An absurd chunk size, then a message claiming to be 16 MiB.
        _ => {
            if client_handshake(&mut stream).is_some() {
                let _ = stream.write_all(&message(1, vec![0x7f, 0xff, 0xff, 0xff]));
                let _ = stream.write_all(&[0x03, 0, 0, 0, 0xff, 0xff, 0xff, 9, 0, 0, 0, 0]);
            }
        }
    }
    // Read whatever comes back until the server closes (or a short while).
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[test]
fn garbage_on_every_listener_costs_the_show_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("faults");
    let (rtmp_port, srt_port, admin_port, sink_port) =
        (free_port(), free_port(), free_port(), free_port());
    let metrics_port = free_port();
    let out = scratch.file("show.flv");
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\npublish_timeout_s = 2\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 0\n\n  [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 12, scratch.file("pub.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));

    // Slowloris: connections that never finish the handshake.
    let idle: Vec<TcpStream> = (0..5)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", rtmp_port)).ok())
        .collect();
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut noise = Noise(noise.next() | 1);
            std::thread::spawn(move || {
                for n in 0..250 {
                    junk_rtmp(rtmp_port, n * 4 + w, &mut noise);
                }
            })
        })
        .collect();
    // Junk datagrams on the SRT port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..1000 {
        let _ = udp.send_to(&noise.bytes(1400), ("127.0.0.1", srt_port));
    }
    // Malformed requests and bodies on the admin port.
    for n in 0..200 {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", admin_port)) {
            let request = match n % 3 {
                0 => noise.bytes(2000),
                1 => format!("POST /v1/streams/main/destinations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 5000000\r\n\r\n{{\"key\":").into_bytes(),
                _ => format!("PATCH /v1/streams/main/destinations/only HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 8\r\n\r\n\x00\x01\x02]]]]").into_bytes(),
            };
            let _ = stream.write_all(&request);
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let mut sink = [0u8; 512];
            let _ = stream.read(&mut sink);
        }
    }
    for worker in workers {
        worker.join().unwrap();
    }

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 12.0);
    // 12 s at 25 fps: every video frame arrived.
    let frames = video_frames(&out);
    assert!(frames >= 299, "the show lost frames: {frames} of 300");
    assert_eq!(http(admin_port, "GET", "/healthz", None, "").0, 200);
    // Every bound that was hit is counted.
    let exposition = http_get(metrics_port, "/metrics").1;
    for limit in ["handshake_timeout", "message_bounds"] {
        let hits = metric(
            &exposition,
            "prism_ingest_limit_hits_total",
            &[("limit", limit)],
        )
        .unwrap_or(0.0);
        assert!(hits >= 1.0, "{limit} hits not counted:\n{exposition}");
    }
    drop(idle);
    let (status, _) = prism.terminate();
    assert!(
        status.success(),
        "prism did not exit cleanly after the junk"
    );
    let log = prism.log();
    assert!(!log.contains("panicked"), "a task panicked:\n{log}");
    assert!(
        log.contains("nested deeper than"),
        "no AMF0 bomb was refused"
    );
    prism.assert_log_free_of(&[STREAM_KEY, TOKEN]);
}

/// Prism with one stream (a 5 s reconnect grace) and one destination, an
/// ffmpeg receiver recording to `out`. ffmpeg in listen mode takes exactly
/// one connection: one file means the destination was never reconnected.
fn relay_to_one_receiver(scratch: &Scratch, out: &std::path::Path) -> (Prism, Ffmpeg) {
    let (rtmp_port, sink_port) = (free_port(), free_port());
    let receiver = Ffmpeg::receiver(sink_port, "live", "show", out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 5\n\n\
         [[streams.destinations]]\nid = \"only\"\nurl = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    (Prism::start(scratch, &config, rtmp_port), receiver)
}

#[test]
fn a_publisher_back_within_the_grace_keeps_one_continuous_show() {
    require_ffmpeg();
    let scratch = Scratch::new("grace");
    let out = scratch.file("show.flv");
    let (mut prism, mut receiver) = relay_to_one_receiver(&scratch, &out);
    let mut first = Ffmpeg::publisher(
        &prism.publish_url(STREAM_KEY),
        30,
        scratch.file("first.log"),
    );
    prism.wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    first.kill(); // the encoder crashes: no unpublish, just a dead socket
    prism.wait_for_log("publisher gone", Duration::from_secs(5));

    let mut second = Ffmpeg::publisher(
        &prism.publish_url(STREAM_KEY),
        5,
        scratch.file("second.log"),
    );
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    receiver.wait(Duration::from_secs(20));

    // One file, both publishers in it, timestamps monotonic throughout.
    assert_one_continuous_show(&prism, &out, 8.0);
    prism.terminate();
    prism.assert_log_free_of(&[STREAM_KEY]);
}

/// An encoder frozen with its connection open (SIGSTOP: a hung machine
/// sends no close) gives way after 1 s of silence to another with the same
/// key, which continues the show. The frozen one, once it wakes, is told
/// and let go rather than left sending into nothing.
#[test]
fn a_displaced_publisher_is_told_and_let_go() {
    require_ffmpeg();
    let scratch = Scratch::new("displaced");
    let out = scratch.file("show.flv");
    let (mut prism, mut receiver) = relay_to_one_receiver(&scratch, &out);
    let mut frozen = Ffmpeg::publisher(
        &prism.publish_url(STREAM_KEY),
        60,
        scratch.file("frozen.log"),
    );
    prism.wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    frozen.signal("STOP");
    std::thread::sleep(Duration::from_millis(1500));

    let mut second = Ffmpeg::publisher(
        &prism.publish_url(STREAM_KEY),
        5,
        scratch.file("second.log"),
    );
    prism.wait_for_log(
        "publish ended: another encoder took over the stream",
        Duration::from_secs(10),
    );
    frozen.signal("CONT");
    let woken = std::time::Instant::now();
    let status = frozen.wait(Duration::from_secs(15));
    println!(
        "the woken encoder ended {:?} after waking: {status}\n{}",
        woken.elapsed(),
        frozen.log()
    );
    assert!(!status.success(), "{}", frozen.log());
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    receiver.wait(Duration::from_secs(20));
    assert_one_continuous_show(&prism, &out, 7.0);
    prism.terminate();
    prism.assert_log_free_of(&[STREAM_KEY]);
}

#[test]
fn a_destination_that_dies_and_comes_back_is_live_again_within_5_s() {
    require_ffmpeg();
    let scratch = Scratch::new("flaky");
    let (rtmp_port, good_port, flaky_port) = (free_port(), free_port(), free_port());
    let good = scratch.file("good.flv");
    let mut good_receiver = Ffmpeg::receiver(good_port, "live", "good", &good);
    let mut flaky_receiver =
        Ffmpeg::receiver(flaky_port, "live", "flaky", &scratch.file("flaky1.flv"));
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[fanout]\nconnect_timeout_s = 3\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 0\n\n\
         [[streams.destinations]]\nid = \"good\"\nurl = \"rtmp://127.0.0.1:{good_port}/live/good\"\n\n\
         [[streams.destinations]]\nid = \"flaky\"\nurl = \"rtmp://127.0.0.1:{flaky_port}/live/flaky\"\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 14, scratch.file("pub.log"));
    prism.wait_for_log("destination=flaky", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));

    flaky_receiver.kill();
    prism.wait_for_log(
        "destination failed; retrying stream=main destination=flaky",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(2));
    let flaky2 = scratch.file("flaky2.flv");
    let mut back = Ffmpeg::receiver(flaky_port, "live", "flaky", &flaky2);
    let restarted = std::time::Instant::now();
    let live_lines = |log: &str| {
        log.lines()
            .filter(|l| l.contains("destination live") && l.contains("destination=flaky"))
            .count()
    };
    while live_lines(&prism.log()) < 2 {
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "flaky was not live again within 5 s:\n{}",
            prism.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert!(publisher.wait(Duration::from_secs(40)).success());
    good_receiver.wait(Duration::from_secs(15));
    back.wait(Duration::from_secs(15));
    // The other destination lost nothing: 14 s at 25 fps.
    assert_good_recording(&good, 14.0);
    let frames = video_frames(&good);
    assert!(
        frames >= 349,
        "good lost frames while flaky was down: {frames} of 350"
    );
    // The returning destination starts cleanly on a keyframe.
    assert_good_recording(&flaky2, probe_duration(&flaky2));
    prism.terminate();
}

#[test]
fn kill_9_during_admin_changes_never_leaves_a_broken_config() {
    let scratch = Scratch::new("kill9");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "# operator's note\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\n"
    );
    std::fs::write(scratch.file("prism.toml"), config).unwrap();
    for round in 0..5u32 {
        let prism = Prism::start_on_file(&scratch, rtmp_port);
        wait_for_port(admin_port, Duration::from_secs(5));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("r{round}-d{n}");
                    let body = format!("{{\"id\": \"{id}\", \"url\": \"rtmp://127.0.0.1:9/live\", \"key\": \"k-{n}\", \"enabled\": false}}");
                    let _ = std::panic::catch_unwind(|| {
                        http(
                            admin_port,
                            "POST",
                            "/v1/streams/main/destinations",
                            Some(TOKEN),
                            &body,
                        )
                    });
                    if n % 3 == 2 {
                        let _ = std::panic::catch_unwind(|| {
                            http(
                                admin_port,
                                "DELETE",
                                &format!("/v1/streams/main/destinations/{id}"),
                                Some(TOKEN),
                                "",
                            )
                        });
                    }
                    n += 1;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300 + 170 * round as u64));
        prism.signal("KILL");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = writer.join();
        drop(prism);

        // Whatever moment the kill hit, the file is whole and valid.
        let check = check_config(&scratch.file("prism.toml"));
        assert!(
            check.status.success(),
            "round {round}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        let text = std::fs::read_to_string(scratch.file("prism.toml")).unwrap();
        assert!(
            text.starts_with("# operator's note\n"),
            "round {round}: {text}"
        );
    }
}

#[test]
fn a_destination_that_refuses_the_key_is_reported_and_retried_with_backoff() {
    require_ffmpeg();
    let scratch = Scratch::new("badname");
    let rtmp_port = free_port();
    let refusing = FakeDestination::refusing_rtmp("Invalid stream key");
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 0\n\n\
         [[streams.destinations]]\nid = \"wrong-key\"\nurl = \"rtmp://127.0.0.1:{}/live2/not-the-key-0000\"\n",
        refusing.port
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 8, scratch.file("pub.log"));
    assert!(publisher.wait(Duration::from_secs(30)).success());
    let log = prism.log();
    assert!(
        log.contains("server refused the stream: NetStream.Publish.BadName: Invalid stream key"),
        "the server's reason is not in the log:\n{log}"
    );
    // 8 s of show with backoff 1, 2, 4 s: a handful of attempts, not hundreds.
    let attempts = refusing.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        (2..=6).contains(&attempts),
        "{attempts} publish attempts in 8 s"
    );
    prism.terminate();
    prism.assert_log_free_of(&[STREAM_KEY, "not-the-key-0000"]);
}

/// The RTMP and SRT listener tasks made to fail (SIGUSR2 with
/// `PRISM_TEST_HOOKS`) during a live RTMP show: each is counted, `/readyz`
/// answers 503 until both listen again, a new SRT caller and a new RTMP
/// handshake are then served, and the show itself loses nothing.
#[test]
fn failed_listeners_are_restarted_while_the_show_goes_on() {
    require_ffmpeg();
    let scratch = Scratch::new("listener_restart");
    let (rtmp_port, srt_port, metrics_port) = (free_port(), free_port(), free_port());
    let (show_port, srt_sink_port) = (free_port(), free_port());
    let show_out = scratch.file("show.flv");
    let srt_out = scratch.file("after.flv");
    let mut show_receiver = Ffmpeg::receiver(show_port, "live", "show", &show_out);
    let mut srt_receiver = Ffmpeg::receiver(srt_sink_port, "live", "after", &srt_out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 0\n\n  [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{show_port}/live/show\"\n\n\
         [[streams]]\nid = \"after\"\nkey = \"live_after_restart_42\"\nreconnect_grace_s = 0\n\n  [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{srt_sink_port}/live/after\"\n"
    );
    let mut prism = Prism::start_with_env(
        &scratch,
        &config,
        rtmp_port,
        &[("PRISM_TEST_HOOKS", "rtmp,srt")],
    );
    let mut show = Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 12, scratch.file("pub.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    assert_eq!(http_get(metrics_port, "/readyz").0, 200);

    prism.signal("USR2");
    let (mut saw_down, deadline) = (None, std::time::Instant::now() + Duration::from_secs(10));
    loop {
        let (status, body) = http_get(metrics_port, "/readyz");
        if status == 503 {
            saw_down = Some(body);
        } else if status == 200 && saw_down.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never went 503 and back to 200 (last 503: {saw_down:?}):\n{}",
            prism.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let down = saw_down.unwrap();
    assert!(down.contains("listener restarting"), "{down}");

    // Both listeners serve again: a new RTMP handshake, a new SRT publish.
    let mut rtmp = TcpStream::connect(("127.0.0.1", rtmp_port)).unwrap();
    assert!(
        client_handshake(&mut rtmp).is_some(),
        "no RTMP handshake after the restart"
    );
    drop(rtmp);
    let mut after = Ffmpeg::srt_publisher(
        &format!("srt://127.0.0.1:{srt_port}?streamid=live_after_restart_42"),
        4,
        scratch.file("after.log"),
    );
    assert!(
        after.wait(Duration::from_secs(30)).success(),
        "{}",
        after.log()
    );
    srt_receiver.wait(Duration::from_secs(15));
    assert_good_recording(&srt_out, 4.0);

    // The show never noticed: one connection, every frame.
    assert!(
        show.wait(Duration::from_secs(40)).success(),
        "{}",
        show.log()
    );
    show_receiver.wait(Duration::from_secs(15));
    assert_good_recording(&show_out, 12.0);
    let frames = video_frames(&show_out);
    assert!(frames >= 299, "the show lost frames: {frames} of 300");

    let exposition = http_get(metrics_port, "/metrics").1;
    for listener in ["rtmp", "srt"] {
        let restarts = metric(
            &exposition,
            "prism_listener_restarts_total",
            &[("listener", listener)],
        );
        assert_eq!(restarts, Some(1.0), "{listener} restarts:\n{exposition}");
    }
    let panics = metric(
        &exposition,
        "prism_task_panics_total",
        &[("task", "listener")],
    );
    assert_eq!(panics, Some(2.0), "{exposition}");
    let log = prism.log();
    assert_eq!(log.matches("listening again").count(), 2, "{log}");
    assert_eq!(
        log.matches("destination live").count(),
        2,
        "a destination reconnected:\n{log}"
    );
    let (status, _) = prism.terminate();
    assert!(status.success());
}

/// A SIGTERM that arrives while a reload is still running stops the daemon
/// within 5 s; it used to be lost. The reload is made slow the way a config
/// on a hung network mount would be: the file is a FIFO nobody writes.
#[test]
fn sigterm_during_a_slow_reload_stops_the_daemon() {
    require_ffmpeg();
    let scratch = Scratch::new("faults-term-reload");
    let (rtmp_port, sink_port) = (free_port(), free_port());
    let out = scratch.file("show.flv");
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[[streams]]\nid = \"main\"\nkey = \"live_term_reload_77\"\nreconnect_grace_s = 0\n\n  \
         [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher = Ffmpeg::publisher(
        &prism.publish_url("live_term_reload_77"),
        60,
        scratch.file("publisher.log"),
    );
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let path = scratch.file("prism.toml");
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    prism.signal("HUP");
    prism.wait_for_log(
        "SIGHUP: reloading the configuration",
        Duration::from_secs(5),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(!prism.log().contains("configuration reloaded"));
    let (status, took) = prism.terminate();
    println!("exit {took:?} after SIGTERM during the reload");
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    // The show was unpublished cleanly on the way out.
    publisher.kill();
    receiver.wait(Duration::from_secs(10));
    assert_good_recording(&out, probe_duration(&out));
}
