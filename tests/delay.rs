//! End to end: a destination that goes out `delay_s` behind the others. A
//! real ffmpeg publishes a 20 s show to two destinations on nginx-rtmp, one
//! of them 10 s late: 14 s in, the late one has about 4 s; at the end it has
//! the whole show, monotonic, with no gap. The delay ring meanwhile holds
//! about the stream's bitrate × the delay.

mod support;

use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_delay_3a4b5c6d";
const TOKEN: &str = "delay-token-9f8e7d6c";
const SHOW_S: u32 = 20;
const DELAY_S: u64 = 10;

/// A stream with two destinations on nginx-rtmp: `now`, and `later`, which
/// goes out `delay_s` behind it.
fn config(
    rtmp_port: u16,
    admin_port: u16,
    sections: &str,
    grace_s: u64,
    nginx_port: u16,
    delay_s: u64,
) -> String {
    format!(
        r#"[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

{sections}
[[streams]]
id = "main"
key = "{KEY}"
reconnect_grace_s = {grace_s}

  [[streams.destinations]]
  id = "now"
  url = "rtmp://127.0.0.1:{nginx_port}/live/now"

  [[streams.destinations]]
  id = "later"
  url = "rtmp://127.0.0.1:{nginx_port}/live/later"
  delay_s = {delay_s}
"#
    )
}

/// The delayed destination, as the API shows it.
fn later(admin_port: u16) -> serde_json::Value {
    let path = "/v1/streams/main/destinations/later";
    let (_, text) = http(admin_port, "GET", path, Some(TOKEN), "");
    serde_json::from_str(&text).unwrap_or_default()
}

#[test]
fn a_delayed_destination_gets_the_whole_show_that_much_later() {
    require_ffmpeg();
    let scratch = Scratch::new("delay");
    let (rtmp_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    // nginx-rtmp writes what it receives as it comes.
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (live_file, late_file) = (nginx.dir.join("now.flv"), nginx.dir.join("later.flv"));
    let config = config(
        rtmp_port,
        admin_port,
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
        0,
        nginx.port,
        DELAY_S,
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher = Ffmpeg::publisher(
        &prism.publish_url(KEY),
        SHOW_S,
        scratch.file("publisher.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let started = loop {
        let (_, text) = http(admin_port, "GET", "/v1/streams/main", Some(TOKEN), "");
        let stream: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if stream["live"] == true {
            assert_eq!(stream["destinations"][1]["delay_s"], DELAY_S, "{stream}");
            break Instant::now();
        }
        assert!(Instant::now() < deadline, "never live: {stream}");
        std::thread::sleep(Duration::from_millis(50));
    };

    // 14 s in: the late destination has about 4 s of the show.
    std::thread::sleep(
        (started + Duration::from_secs(14)).saturating_duration_since(Instant::now()),
    );
    let (start, end) = packet_span(&late_file);
    let received = end - start;
    assert!(
        (2.5..=5.5).contains(&received),
        "14 s into the show, the 10 s late destination has {received:.2} s"
    );
    let (live_start, live_end) = packet_span(&live_file);
    assert!(
        live_end - live_start > 12.0,
        "the live one has {:.2} s",
        live_end - live_start
    );

    // The ring holds about bitrate × delay: the media, and what each held
    // message costs beside it (`MediaMessage::cost`, 128 bytes).
    let (_, text) = http(admin_port, "GET", "/v1/streams/main", Some(TOKEN), "");
    let stream: serde_json::Value = serde_json::from_str(&text).unwrap();
    let bitrate_bps = stream["ingest"]["bitrate_kbps"].as_f64().unwrap() * 1000.0;
    let tracks = stream["tracks"].as_array().unwrap();
    let messages_per_s: f64 = tracks
        .iter()
        .map(|t| match t["kind"].as_str() {
            Some("video") => t["fps"].as_f64().unwrap_or(0.0),
            _ => t["sample_rate"].as_f64().unwrap_or(0.0) / 1024.0,
        })
        .sum();
    let (_, metrics) = http_get(metrics_port, "/metrics");
    let held = metric(&metrics, "prism_delay_buffer_bytes", &[("stream", "main")])
        .expect("prism_delay_buffer_bytes is exported");
    let media = bitrate_bps / 8.0 * DELAY_S as f64;
    let expected = media + messages_per_s * 128.0 * DELAY_S as f64;
    let ratio = held / expected;
    println!(
        "delay ring: {held:.0} bytes held; bitrate × delay = {media:.0}, with the messages' cost {expected:.0} ({ratio:.2} ×)"
    );
    assert!(
        (0.8..=1.2).contains(&ratio),
        "the ring holds {held:.0} bytes for {expected:.0} of stream ({tracks:?})"
    );

    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    // The delayed destination ends its session the delay after the show.
    poll_until(
        "the delayed destination's end",
        Duration::from_secs(DELAY_S + 15),
        || later(admin_port),
        |view| view["state"] != "live",
    );
    let show = f64::from(SHOW_S);
    assert_good_recording(&live_file, show);
    assert_good_recording(&late_file, show);
    let gap = max_video_gap(&late_file);
    assert!(
        gap < Duration::from_millis(200),
        "a {gap:?} gap in the delayed show"
    );
}

/// The encoder drops and comes back within the grace period: the delayed
/// destination rides it out as the live one does, that much later: one
/// connection, one file, one timeline with no gap.
#[test]
fn a_delayed_destination_rides_out_an_encoder_reconnect_like_a_live_one() {
    require_ffmpeg();
    let scratch = Scratch::new("delay-reconnect");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let nginx = Nginx::start(&scratch.file("nginx"));
    let config = config(rtmp_port, admin_port, "", 5, nginx.port, 6);
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    for part in ["first", "second"] {
        let mut publisher = Ffmpeg::publisher(
            &prism.publish_url(KEY),
            8,
            scratch.file(&format!("{part}.log")),
        );
        assert!(
            publisher.wait(Duration::from_secs(30)).success(),
            "{}",
            publisher.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    // Both end once the grace is over; the delayed one 6 s later.
    let later = poll_until(
        "the delayed destination's end",
        Duration::from_secs(30),
        || later(admin_port),
        |view| view["state"] == "idle" && view["bytes_sent"].as_u64() > Some(0),
    );
    assert_eq!(later["reconnects"], 0, "one connection throughout: {later}");
    let (live_file, late_file) = (nginx.dir.join("now.flv"), nginx.dir.join("later.flv"));
    let live = assert_good_recording(&live_file, 16.0);
    let late = assert_good_recording(&late_file, 16.0);
    assert!(
        (live.duration - late.duration).abs() < 1.0,
        "live {:.2} s, delayed {:.2} s",
        live.duration,
        late.duration
    );
    for file in [&live_file, &late_file] {
        let gap = max_video_gap(file);
        assert!(
            gap < Duration::from_millis(200),
            "{}: a {gap:?} gap",
            file.display()
        );
    }
}
