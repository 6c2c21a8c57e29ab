//! End to end: ffmpeg publishes MPEG-TS over SRT (the plain stream-id form,
//! the access-control form, with a passphrase); RTMP receivers get streams
//! that decode. Wrong passphrases and unknown keys are refused while another
//! show keeps running.

mod support;

use std::time::Duration;

use support::*;

const PLAIN_KEY: &str = "live_srt_plain_1a2b3c";
const SECURE_KEY: &str = "live_srt_secure_4d5e6f";
const PASSPHRASE: &str = "correct-horse-battery-staple";

struct Setup {
    scratch: Scratch,
    prism: Prism,
    srt_port: u16,
    receivers: Vec<(Ffmpeg, std::path::PathBuf)>,
}

/// Two streams, each with two ffmpeg RTMP receivers; the second stream
/// needs a passphrase.
fn start(name: &str) -> Setup {
    start_with(name, "")
}

/// As `start`, with more lines for the `[srt]` section.
fn start_with(name: &str, srt_extra: &str) -> Setup {
    start_streams(
        name,
        &[
            ("plain", PLAIN_KEY, None),
            ("secure", SECURE_KEY, Some(PASSPHRASE)),
        ],
        srt_extra,
        0,
    )
}

/// Prism with one stream per (id, key, passphrase), each with two ffmpeg
/// RTMP receivers (`receivers[2 * n]` and `[2 * n + 1]` for stream n).
fn start_streams(
    name: &str,
    streams: &[(&str, &str, Option<&str>)],
    srt_extra: &str,
    reconnect_grace_s: u32,
) -> Setup {
    require_ffmpeg();
    let scratch = Scratch::new(name);
    let (rtmp_port, srt_port) = (free_port(), free_port());
    let mut receivers = Vec::new();
    let mut config_streams = String::new();
    for (stream, key, passphrase) in streams {
        let extra = passphrase
            .map(|p| format!("srt_passphrase = \"{p}\"\n"))
            .unwrap_or_default();
        config_streams += &format!(
            "\n[[streams]]\nid = \"{stream}\"\nkey = \"{key}\"\nreconnect_grace_s = {reconnect_grace_s}\n{extra}"
        );
        for n in 0..2 {
            let port = free_port();
            let out = scratch.file(&format!("{stream}{n}.flv"));
            receivers.push((
                Ffmpeg::receiver(port, "live", &format!("{stream}{n}"), &out),
                out,
            ));
            config_streams += &format!(
                "\n  [[streams.destinations]]\n  id = \"d{n}\"\n  url = \"rtmp://127.0.0.1:{port}/live/{stream}{n}\"\n"
            );
        }
    }
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\nlatency_ms = 80\n{srt_extra}\n[fanout]\nconnect_timeout_s = 3\n{config_streams}"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    Setup {
        scratch,
        prism,
        srt_port,
        receivers,
    }
}

/// A caller URL as an OBS or ffmpeg user writes it: with a passphrase and
/// no `pbkeylen` (libsrt's default, and what OBS sends).
fn srt_url(port: u16, stream_id: &str, passphrase: Option<&str>) -> String {
    let mut url = format!("srt://127.0.0.1:{port}?streamid={stream_id}");
    if let Some(passphrase) = passphrase {
        url += &format!("&passphrase={passphrase}");
    }
    url
}

#[test]
fn srt_publishes_reach_rtmp_destinations_in_both_stream_id_forms() {
    let mut setup = start("srt-forms");
    let port = setup.srt_port;
    let mut plain = Ffmpeg::srt_publisher(
        &srt_url(port, PLAIN_KEY, None),
        8,
        setup.scratch.file("plain.log"),
    );
    let secure_id = format!("#!::r=live/{SECURE_KEY},m=publish,u=alice");
    let mut secure = Ffmpeg::srt_publisher(
        &srt_url(port, &secure_id, Some(PASSPHRASE)),
        8,
        setup.scratch.file("secure.log"),
    );
    assert!(
        plain.wait(Duration::from_secs(30)).success(),
        "{}",
        plain.log()
    );
    assert!(
        secure.wait(Duration::from_secs(30)).success(),
        "{}",
        secure.log()
    );
    for (receiver, out) in &mut setup.receivers {
        receiver.wait(Duration::from_secs(15));
        assert_good_recording(out, 8.0);
    }
    let log = setup.prism.log();
    assert_eq!(
        log.matches("protocol=\"srt\" video=\"h264\"").count(),
        2,
        "{log}"
    );
    setup.prism.terminate();
    setup
        .prism
        .assert_log_free_of(&[PLAIN_KEY, SECURE_KEY, PASSPHRASE]);
}

#[test]
fn wrong_passphrase_and_unknown_keys_are_refused_while_a_show_runs() {
    let mut setup = start("srt-refusals");
    let port = setup.srt_port;
    let mut show = Ffmpeg::srt_publisher(
        &srt_url(port, PLAIN_KEY, None),
        10,
        setup.scratch.file("show.log"),
    );
    setup
        .prism
        .wait_for_log("publish started", Duration::from_secs(10));

    let attempts = [
        (
            "wrong passphrase",
            srt_url(port, SECURE_KEY, Some("not-the-passphrase")),
        ),
        ("no passphrase", srt_url(port, SECURE_KEY, None)),
        ("unknown key", srt_url(port, "live_nobody_here_999", None)),
        (
            "play mode",
            srt_url(port, &format!("#!::r={PLAIN_KEY},m=request"), None),
        ),
        ("second publisher", srt_url(port, PLAIN_KEY, None)),
    ];
    for (what, url) in &attempts {
        let mut refused = Ffmpeg::srt_publisher(url, 2, setup.scratch.file("refused.log"));
        assert!(
            !refused.wait(Duration::from_secs(20)).success(),
            "{what} was accepted"
        );
    }
    assert!(
        show.wait(Duration::from_secs(30)).success(),
        "{}",
        show.log()
    );
    for (receiver, out) in setup.receivers.iter_mut().take(2) {
        receiver.wait(Duration::from_secs(15));
        assert_good_recording(out, 10.0);
    }
    let log = setup.prism.log();
    for why in [
        "wrong passphrase, or encryption on one side only",
        "unknown stream key",
        "Prism accepts publishers only",
        "already live",
    ] {
        assert!(log.contains(why), "no refusal saying {why:?}:\n{log}");
    }
    let (status, _) = setup.prism.terminate();
    assert!(status.success());
    setup.prism.assert_log_free_of(&[
        PLAIN_KEY,
        SECURE_KEY,
        PASSPHRASE,
        "not-the-passphrase",
        "live_nobody_here_999",
    ]);
}

#[test]
fn srt_publishers_over_the_connection_limit_are_refused() {
    let mut setup = start_with("srt-limit", "max_connections = 1\n");
    let port = setup.srt_port;
    let mut first = Ffmpeg::srt_publisher(
        &srt_url(port, PLAIN_KEY, None),
        6,
        setup.scratch.file("first.log"),
    );
    setup
        .prism
        .wait_for_log("publish started", Duration::from_secs(10));
    let mut second = Ffmpeg::srt_publisher(
        &srt_url(port, SECURE_KEY, Some(PASSPHRASE)),
        2,
        setup.scratch.file("second.log"),
    );
    assert!(
        !second.wait(Duration::from_secs(20)).success(),
        "the second SRT publisher was let in"
    );
    assert!(first.wait(Duration::from_secs(30)).success());
    setup
        .prism
        .wait_for_log("SRT connection limit reached", Duration::from_secs(5));
    setup.prism.terminate();
}

/// Each real caller publishes to its own stream, all with the same
/// passphrase: ffmpeg (libsrt) with no `pbkeylen` and with 16, 24 and 32,
/// and libsrt's own `srt-live-transmit` with its defaults. Every stream's
/// two RTMP destinations record a show that decodes.
#[test]
fn every_caller_publishes_with_a_passphrase_whatever_its_key_length() {
    const SECONDS: u32 = 5;
    let callers: [(&str, &str, Option<u32>); 5] = [
        ("default", "live_srt_keylen_default_11", None),
        ("aes128", "live_srt_keylen_16_22", Some(16)),
        ("aes192", "live_srt_keylen_24_33", Some(24)),
        ("aes256", "live_srt_keylen_32_44", Some(32)),
        ("slt", "live_srt_live_transmit_55", None),
    ];
    let streams: Vec<(&str, &str, Option<&str>)> = callers
        .iter()
        .map(|(id, key, _)| (*id, *key, Some(PASSPHRASE)))
        .collect();
    let mut setup = start_streams("srt-interop", &streams, "", 0);
    let port = setup.srt_port;
    let mut publishers: Vec<(&str, Ffmpeg)> = callers
        .iter()
        .map(|(id, key, pbkeylen)| {
            let mut url = srt_url(port, key, Some(PASSPHRASE));
            if let Some(bytes) = pbkeylen {
                url += &format!("&pbkeylen={bytes}");
            }
            let log = setup.scratch.file(&format!("{id}.log"));
            let publisher = if *id == "slt" {
                Ffmpeg::srt_live_transmit_publisher(&url, SECONDS, log)
            } else {
                Ffmpeg::srt_publisher(&url, SECONDS, log)
            };
            (*id, publisher)
        })
        .collect();
    for (id, publisher) in &mut publishers {
        assert!(
            publisher.wait(Duration::from_secs(40)).success(),
            "{id}: {}\n{}",
            publisher.log(),
            setup.prism.log()
        );
    }
    // Every caller's publish first: a recording missing because its caller
    // never got in should say so, with Prism's log.
    let log = setup.prism.log();
    assert_eq!(log.matches("panicked").count(), 0, "{log}");
    assert_eq!(
        log.matches("protocol=\"srt\" video=\"h264\"").count(),
        callers.len(),
        "{log}"
    );
    for (receiver, out) in &mut setup.receivers {
        receiver.wait(Duration::from_secs(15));
        let probe = assert_good_recording(out, SECONDS as f64);
        println!("{}: {probe:?}", out.display());
    }
    // The frame rate is measured from the stream (25 fps), as RTMP's
    // metadata gives it.
    assert_eq!(log.matches("fps=25.0").count(), callers.len(), "{log}");
    setup.prism.terminate();
    setup.prism.assert_log_free_of(&[PASSPHRASE]);
}

/// An SRT encoder killed (it sends no close: Prism only sees it go silent)
/// and replaced within the grace period continues the show: each of the two
/// destinations, which accept exactly one connection, records one
/// continuous file with both parts.
#[test]
fn an_srt_encoder_replaced_within_the_grace_period_continues_the_show() {
    let mut setup = start_streams(
        "srt-grace",
        &[("show", SECURE_KEY, Some(PASSPHRASE))],
        "",
        10,
    );
    let url = srt_url(setup.srt_port, SECURE_KEY, Some(PASSPHRASE));
    let mut first = Ffmpeg::srt_publisher(&url, 60, setup.scratch.file("first.log"));
    setup
        .prism
        .wait_for_log("publish started", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    first.kill();
    let killed = std::time::Instant::now();
    // An OBS user's reconnect comes a second or more later.
    std::thread::sleep(Duration::from_millis(1200));
    let mut second = Ffmpeg::srt_publisher(&url, 5, setup.scratch.file("second.log"));
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "the returning encoder was refused: {}\n{}",
        second.log(),
        setup.prism.log()
    );
    println!("replaced {:?} after the kill", killed.elapsed());
    for (receiver, _) in &mut setup.receivers {
        receiver.wait(Duration::from_secs(25));
    }
    let outs: Vec<&std::path::Path> = setup
        .receivers
        .iter()
        .map(|(_, out)| out.as_path())
        .collect();
    assert_one_continuous_show_at(&setup.prism, &outs, 4.0 + 5.0 - 1.0);
    setup.prism.terminate();
}

/// An SRT caller that connects and then sends nothing (its keepalives keep
/// the SRT session up: libsrt's `srt-live-transmit` reading a stdin nobody
/// writes to) holds its stream only for `idle_timeout_s`. An ffmpeg publish
/// that follows runs longer than that timeout and is not cut short.
#[test]
fn a_silent_srt_caller_is_let_go_after_the_idle_timeout_and_a_live_one_is_not() {
    require_ffmpeg();
    const IDLE: &str = "reason=\"no data before the idle timeout\"";
    let scratch = Scratch::new("srt-idle");
    let (rtmp_port, srt_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\nidle_timeout_s = 2\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n[[streams]]\nid = \"plain\"\nkey = \"{PLAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));

    let started = std::time::Instant::now();
    let mut silent = std::process::Command::new("srt-live-transmit")
        .args([
            "-a",
            "no",
            "file://con",
            &srt_url(srt_port, PLAIN_KEY, None),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start srt-live-transmit");
    prism.wait_for_log(IDLE, Duration::from_secs(10));
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(2),
        "let go after {after:?}, before the 2 s idle timeout:\n{}",
        prism.log()
    );
    let _ = silent.kill();
    let _ = silent.wait();

    let mut publisher = Ffmpeg::srt_publisher(
        &srt_url(srt_port, PLAIN_KEY, None),
        5,
        scratch.file("publisher.log"),
    );
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    prism.wait_for_log(
        "reason=\"the encoder disconnected\"",
        Duration::from_secs(10),
    );
    let log = prism.log();
    assert_eq!(log.matches(IDLE).count(), 1, "{log}");
    assert_eq!(log.matches("panicked").count(), 0, "{log}");
    prism.terminate();
}

/// A stream removed through the admin API while an SRT encoder publishes
/// to it ends that publish, and says why.
#[test]
fn removing_a_stream_ends_its_live_srt_publish() {
    const TOKEN: &str = "srt-admin-token-0123456789";
    require_ffmpeg();
    let scratch = Scratch::new("srt-removed");
    let (rtmp_port, srt_port, admin_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"plain\"\nkey = \"{PLAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    let _publisher = Ffmpeg::srt_publisher(
        &srt_url(srt_port, PLAIN_KEY, None),
        30,
        scratch.file("publisher.log"),
    );
    prism.wait_for_log("publish started", Duration::from_secs(10));
    let (status, body) = http(admin_port, "DELETE", "/v1/streams/plain", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    prism.wait_for_log("the stream was removed", Duration::from_secs(5));
    let log = prism.log();
    assert_eq!(log.matches("publish stopped").count(), 1, "{log}");
    assert_eq!(log.matches("panicked").count(), 0, "{log}");
}

/// The SRT listener's one UDP socket takes every publisher's datagrams, so
/// it asks for libsrt's receive buffer (8192 packets of 1500 bytes); the
/// kernel grants up to `net.core.rmem_max`, and when that is less the log
/// says which sysctl to raise.
#[test]
fn the_srt_listener_asks_libsrts_receive_buffer_and_says_when_the_kernel_caps_it() {
    const ASKED: u64 = 8192 * 1500;
    const CAPPED: &str = "raise net.core.rmem_max";
    let scratch = Scratch::new("srt-rcvbuf");
    let (rtmp_port, srt_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n[[streams]]\nid = \"plain\"\nkey = \"{PLAIN_KEY}\"\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("read net.core.rmem_max")
        .trim()
        .parse()
        .unwrap();
    // What the kernel granted, as `ss` reports it (`rb`, twice the grant:
    // Linux counts its overhead in).
    let ss = std::process::Command::new("ss")
        .args(["-u", "-l", "-n", "-m", &format!("sport = :{srt_port}")])
        .output()
        .expect("run ss (Debian: iproute2)");
    let ss = String::from_utf8_lossy(&ss.stdout).into_owned();
    let granted: u64 = ss
        .split("rb")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no receive buffer for port {srt_port} in: {ss}"));
    assert_eq!(granted, 2 * ASKED.min(rmem_max), "{ss}");
    if rmem_max < ASKED {
        prism.wait_for_log(CAPPED, Duration::from_secs(5));
    } else {
        assert!(!prism.log().contains(CAPPED), "{}", prism.log());
    }
    prism.terminate();
}
