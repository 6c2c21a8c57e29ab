//! End to end: destination health from the server's acknowledgements. A
//! test server acknowledges for a few seconds, then keeps reading and
//! acknowledges nothing, as an ingest hung behind a healthy TCP front end
//! would. Prism reconnects to it, and says why, while nginx-rtmp (a real
//! server that acknowledges) on the same stream records every frame. A
//! server that never acknowledges stays connected and is shown unverified.

mod support;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_acks_show_31";
const TOKEN: &str = "acks-admin-token-0123456789";

/// Accepts the publish and acknowledges (through Prism's own server
/// session, which acknowledges each window the publisher asked for) for
/// `ack_for`, then reads and discards everything without acknowledging.
struct AckThenStop<'a> {
    ack_for: Duration,
    publishing_since: Option<Instant>,
    publishes: &'a AtomicUsize,
}

impl Script for AckThenStop<'_> {
    fn publish(&mut self, _stream_name: &str) -> Answer {
        self.publishing_since = Some(Instant::now());
        self.publishes.fetch_add(1, Ordering::Relaxed);
        Answer::Accept
    }

    fn next(&mut self, _progress: Progress) -> Next {
        match self.publishing_since {
            Some(since) if since.elapsed() >= self.ack_for => Next::Discard,
            _ => Next::Read,
        }
    }
}

fn ack_then_stop(socket: &TcpStream, ack_for: Duration, publishes: &AtomicUsize) -> bool {
    let mut script = AckThenStop {
        ack_for,
        publishing_since: None,
        publishes,
    };
    serve_script(socket, &mut script).is_some()
}

fn config(rtmp_port: u16, admin_port: u16, destinations: &[(&str, String)]) -> String {
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [fanout]\nack_timeout_s = 3\n\n[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 0\n"
    );
    for (id, url) in destinations {
        config += &format!("\n  [[streams.destinations]]\n  id = \"{id}\"\n  url = \"{url}\"\n");
    }
    config
}

fn destination(admin_port: u16, id: &str) -> serde_json::Value {
    let (status, body) = http(
        admin_port,
        "GET",
        &format!("/v1/streams/main/destinations/{id}"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_server_that_stops_acknowledging_is_reconnected_while_others_lose_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("acks-stall");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let publishes = Arc::new(AtomicUsize::new(0));
    let hung = {
        let publishes = Arc::clone(&publishes);
        FakeDestination::start(move |socket| {
            ack_then_stop(socket, Duration::from_secs(3), &publishes)
        })
    };
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(
        &scratch,
        &config(
            rtmp_port,
            admin_port,
            &[
                (
                    "nginx",
                    format!("rtmp://127.0.0.1:{}/live/recorded", nginx.port),
                ),
                ("hung", format!("rtmp://127.0.0.1:{}/live/hung", hung.port)),
            ],
        ),
        rtmp_port,
    );
    // 720p at a usual bitrate: a 256 KiB window is acknowledged about every second.
    let mut publisher =
        Ffmpeg::hd_publisher(&prism.publish_url(KEY), 14, scratch.file("publisher.log"));
    let started = Instant::now();
    // Verified while it acknowledges.
    let mut verified = false;
    while started.elapsed() < Duration::from_secs(4) && !verified {
        verified = destination(admin_port, "hung")["verified"] == true;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(verified, "{}", destination(admin_port, "hung"));
    // Then it stops: within ack_timeout_s and the backoff, Prism gives up on
    // the connection (the API says why) and connects again.
    let mut reason = None;
    while publishes.load(Ordering::Relaxed) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "no reconnect:\n{}",
            prism.log()
        );
        let error = &destination(admin_port, "hung")["last_error"];
        if !error.is_null() {
            reason.get_or_insert(error.clone());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("reconnected after {:?}: {reason:?}", started.elapsed());
    let reason = reason.expect("the API showed the reason");
    assert_eq!(reason["kind"], "ack_timeout", "{reason}");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains("the server stopped acknowledging")),
        "{reason}"
    );
    assert!(destination(admin_port, "nginx")["verified"] == true);
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );

    // nginx-rtmp lost nothing: 14 s at 25 fps.
    std::thread::sleep(Duration::from_secs(2));
    let recording = nginx.dir.join("recorded.flv");
    assert_good_recording(&recording, 14.0);
    assert_eq!(video_frames(&recording), 14 * 25);
    let metrics_log = prism.log();
    assert!(
        metrics_log.contains("the server stopped acknowledging"),
        "{metrics_log}"
    );
}

#[test]
fn a_server_that_never_acknowledges_stays_connected_and_unverified() {
    require_ffmpeg();
    let scratch = Scratch::new("acks-never");
    let publishes = Arc::new(AtomicUsize::new(0));
    let silent = {
        let publishes = Arc::clone(&publishes);
        FakeDestination::start(move |socket| ack_then_stop(socket, Duration::ZERO, &publishes))
    };
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(
        &scratch,
        &config(
            rtmp_port,
            admin_port,
            &[(
                "silent",
                format!("rtmp://127.0.0.1:{}/live/silent", silent.port),
            )],
        ),
        rtmp_port,
    );
    let mut publisher =
        Ffmpeg::hd_publisher(&prism.publish_url(KEY), 8, scratch.file("publisher.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(6));
    let view = destination(admin_port, "silent");
    assert_eq!(view["state"], "live", "{view}");
    assert_eq!(view["verified"], false, "{view}");
    assert!(view["last_ack_age_ms"].is_null(), "{view}");
    assert!(publisher.wait(Duration::from_secs(30)).success());
    assert_eq!(publishes.load(Ordering::Relaxed), 1, "it was reconnected");
}
