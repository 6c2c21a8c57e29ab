//! End to end: pulled sources. ffmpeg publishes to nginx-rtmp and Prism
//! plays the stream from nginx (`pull = "rtmp://…"`); ffmpeg serves MPEG-TS
//! as an SRT listener and Prism calls it (`pull = "srt://…"`). Each show
//! reaches two RTMP receivers that decode it; the source publisher is
//! killed and restarted, and Prism resumes within 5 s of it coming back,
//! on the same destination connections. A pulled stream refuses publishers.

mod support;

use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "pull-admin-token-0123456789";
const KEY: &str = "pulled_stream_key_77";

struct Relay {
    _scratch: Scratch,
    prism: Prism,
    admin_port: u16,
    receivers: Vec<(Ffmpeg, std::path::PathBuf)>,
}

/// Prism pulling `pull` into stream `pulled`, relayed to two ffmpeg RTMP
/// receivers, with a 10 s grace for the source's restart.
fn relay(scratch: Scratch, pull: &str) -> Relay {
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [fanout]\nconnect_timeout_s = 3\n\n[[streams]]\nid = \"pulled\"\nkey = \"{KEY}\"\npull = \"{pull}\"\nreconnect_grace_s = 10\n"
    );
    let mut receivers = Vec::new();
    for n in 0..2 {
        let port = free_port();
        let out = scratch.file(&format!("out{n}.flv"));
        receivers.push((Ffmpeg::receiver(port, "live", "x", &out), out));
        config += &format!("\n  [[streams.destinations]]\n  id = \"d{n}\"\n  url = \"rtmp://127.0.0.1:{port}/live/x\"\n");
    }
    let prism = Prism::start(&scratch, &config, rtmp_port);
    Relay {
        _scratch: scratch,
        prism,
        admin_port,
        receivers,
    }
}

fn ingest_protocol(relay: &Relay) -> Option<String> {
    let (_, body) = http(
        relay.admin_port,
        "GET",
        "/v1/streams/pulled",
        Some(TOKEN),
        "",
    );
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    view["ingest"]["protocol"].as_str().map(str::to_string)
}

/// Waits for the pulled show to be relayed again after the source came back
/// (Prism logs the resumed session); returns how long that took.
fn resumed_within(relay: &Relay, since: Instant, limit: Duration) -> Duration {
    loop {
        if relay
            .prism
            .log()
            .contains("publisher resumed the session within the grace period")
        {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < limit,
            "not resumed within {limit:?}:\n{}",
            relay.prism.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The source dies mid-show and a new one comes back: measured, then both
/// receivers hold one continuous, decodable show.
fn kill_restart_and_check(
    relay: Relay,
    mut first: Ffmpeg,
    restart: impl FnOnce() -> Ffmpeg,
    protocol: &str,
) {
    let started = Instant::now();
    while ingest_protocol(&relay).as_deref() != Some(protocol) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never live:\n{}",
            relay.prism.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));
    first.kill();
    std::thread::sleep(Duration::from_secs(1));
    let back = Instant::now();
    let mut second = restart();
    let resumed = resumed_within(&relay, back, Duration::from_secs(15));
    println!("{protocol}: resumed {resumed:?} after the source came back");
    assert!(
        resumed <= Duration::from_secs(5),
        "resumed after {resumed:?}"
    );
    assert!(
        second.wait(Duration::from_secs(40)).success(),
        "{}",
        second.log()
    );
    let Relay {
        prism, receivers, ..
    } = relay;
    let mut outs = Vec::new();
    for (mut receiver, out) in receivers {
        receiver.wait(Duration::from_secs(40));
        outs.push(out);
    }
    let outs: Vec<&std::path::Path> = outs.iter().map(|o| o.as_path()).collect();
    assert_one_continuous_show_at(&prism, &outs, 12.0);
    assert!(!prism.log().contains("panicked"), "{}", prism.log());
}

#[test]
fn an_rtmp_source_on_nginx_is_pulled_relayed_and_resumed() {
    require_ffmpeg();
    let scratch = Scratch::new("pull-rtmp");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let source = format!("rtmp://127.0.0.1:{}/live/cam", nginx.port);
    let first = Ffmpeg::publisher(&source, 60, scratch.file("source1.log"));
    let second_log = scratch.file("source2.log");
    let relay = relay(scratch, &source);

    // An encoder pushing to a pulled stream is refused, with the reason.
    let mut intruder = Ffmpeg::publisher(
        &relay.prism.publish_url(KEY),
        3,
        relay._scratch.file("intruder.log"),
    );
    assert!(!intruder.wait(Duration::from_secs(20)).success());
    relay
        .prism
        .wait_for_log("takes no publisher", Duration::from_secs(5));

    let restart_url = source.clone();
    kill_restart_and_check(
        relay,
        first,
        move || Ffmpeg::publisher(&restart_url, 10, second_log),
        "rtmp-pull",
    );
}

#[test]
fn an_srt_listener_source_is_pulled_relayed_and_resumed() {
    require_ffmpeg();
    let scratch = Scratch::new("pull-srt");
    let port = free_port();
    let listener = format!("srt://127.0.0.1:{port}?mode=listener");
    let first = Ffmpeg::srt_publisher(&listener, 60, scratch.file("source1.log"));
    let second_log = scratch.file("source2.log");
    let relay = relay(scratch, &format!("srt://127.0.0.1:{port}"));
    kill_restart_and_check(
        relay,
        first,
        move || Ffmpeg::srt_publisher(&listener, 10, second_log),
        "srt-pull",
    );
}
