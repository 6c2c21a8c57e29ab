//! End to end: `/metrics`, `/healthz` and `/readyz` while a real ffmpeg
//! publishes to two destinations, one of which dies mid-show.

mod support;

use std::time::{Duration, Instant};

use support::*;

const STREAM_KEY: &str = "live_metrics_5e6f7a8b";

/// Polls the exposition until `check` holds, or fails with the last scrape.
fn wait_for_metrics(
    port: u16,
    what: &str,
    within: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = http_get(port, "/metrics");
        assert_eq!(status, 200);
        if check(&body) {
            return body;
        }
        if Instant::now() > deadline {
            panic!("metrics never showed {what}:\n{body}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn state(text: &str, destination: &str, state: &str) -> f64 {
    metric(
        text,
        "prism_destination_state",
        &[("destination", destination), ("state", state)],
    )
    .unwrap_or(-1.0)
}

#[test]
fn metrics_follow_a_live_show_and_a_destination_that_dies() {
    require_ffmpeg();
    let scratch = Scratch::new("metrics");
    let (rtmp_port, metrics_port, port_a, port_b) =
        (free_port(), free_port(), free_port(), free_port());
    let (key_a, key_b) = ("dest-a-secret-1234", "dest-b-secret-5678");
    let mut receiver_a = Ffmpeg::receiver(port_a, "live", key_a, &scratch.file("a.flv"));
    let mut receiver_b = Ffmpeg::receiver(port_b, "live", key_b, &scratch.file("b.flv"));
    let config = format!(
        r#"
[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[metrics]
listen = "127.0.0.1:{metrics_port}"

[fanout]
connect_timeout_s = 2
write_timeout_s = 2

[[streams]]
id = "main"
key = "{STREAM_KEY}"
reconnect_grace_s = 0

  [[streams.destinations]]
  id = "a"
  url = "rtmp://127.0.0.1:{port_a}/live/{key_a}"

  [[streams.destinations]]
  id = "b"
  url = "rtmp://127.0.0.1:{port_b}/live/{key_b}"
"#
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(metrics_port, Duration::from_secs(5));
    assert_eq!(http_get(metrics_port, "/healthz").0, 200);
    assert_eq!(http_get(metrics_port, "/readyz").0, 200);

    let idle = http_get(metrics_port, "/metrics").1;
    assert_eq!(
        metric(&idle, "prism_stream_live", &[("stream", "main")]),
        Some(0.0)
    );
    assert_eq!(state(&idle, "a", "idle"), 1.0);

    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 14, scratch.file("pub.log"));
    let first = wait_for_metrics(
        metrics_port,
        "both destinations live",
        Duration::from_secs(10),
        |m| state(m, "a", "live") == 1.0 && state(m, "b", "live") == 1.0,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let second = http_get(metrics_port, "/metrics").1;
    let grew = |name: &str, labels: &[(&str, &str)]| {
        let before = metric(&first, name, labels).unwrap_or(0.0);
        let after = metric(&second, name, labels).unwrap_or(0.0);
        assert!(
            after > before,
            "{name}{labels:?} did not grow: {before} -> {after}"
        );
    };
    grew(
        "prism_ingest_bytes_total",
        &[("stream", "main"), ("protocol", "rtmp")],
    );
    grew(
        "prism_ingest_frames_total",
        &[("stream", "main"), ("kind", "video")],
    );
    grew(
        "prism_destination_bytes_sent_total",
        &[("destination", "a")],
    );
    grew(
        "prism_destination_bytes_sent_total",
        &[("destination", "b")],
    );
    assert_eq!(
        metric(&second, "prism_stream_live", &[("stream", "main")]),
        Some(1.0)
    );
    assert_eq!(
        metric(&second, "prism_ingest_sessions", &[("protocol", "rtmp")]),
        Some(1.0)
    );
    assert!(
        metric(
            &second,
            "prism_stream_bitrate_bits_per_second",
            &[("stream", "main")]
        )
        .unwrap()
            > 10_000.0
    );
    assert!(
        metric(
            &second,
            "prism_relay_latency_seconds_count",
            &[("stream", "main")]
        )
        .unwrap()
            > 10.0
    );
    assert!(
        metric(
            &second,
            "prism_destination_connect_seconds_count",
            &[("destination", "a")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(metric(&second, "process_resident_memory_bytes", &[]).unwrap() > 0.0);

    // The exposition is valid Prometheus text. The one lint promtool raises is
    // about `prism_stream_bitrate_bits_per_second`, a name fixed by the
    // metrics contract (promtool prefers bytes as the base unit).
    let problems: Vec<String> = promtool_problems(&second)
        .into_iter()
        .filter(|p| !p.starts_with("prism_stream_bitrate_bits_per_second use base unit \"bytes\""))
        .collect();
    assert!(problems.is_empty(), "promtool: {problems:?}");

    receiver_b.kill();
    let after_kill = wait_for_metrics(
        metrics_port,
        "b retrying with reconnects",
        Duration::from_secs(10),
        |m| {
            state(m, "b", "retrying") == 1.0
                && metric(
                    m,
                    "prism_destination_reconnects_total",
                    &[("destination", "b")],
                )
                .unwrap_or(0.0)
                    >= 1.0
        },
    );
    assert_eq!(state(&after_kill, "a", "live"), 1.0, "{after_kill}");
    assert_eq!(
        metric(
            &after_kill,
            "prism_destination_reconnects_total",
            &[("destination", "a")]
        ),
        Some(0.0)
    );
    grew_between(&second, &after_kill, "a");

    assert!(publisher.wait(Duration::from_secs(30)).success());
    receiver_a.wait(Duration::from_secs(15));
    assert_good_recording(&scratch.file("a.flv"), 14.0);
    let last = http_get(metrics_port, "/metrics").1;
    prism.terminate();

    // No key or secret anywhere: not in the log, not in any label.
    for secret in [STREAM_KEY, key_a, key_b] {
        assert!(
            !last.contains(secret) && !second.contains(secret),
            "{secret} in /metrics"
        );
    }
    prism.assert_log_free_of(&[STREAM_KEY, key_a, key_b]);
}

fn grew_between(before: &str, after: &str, destination: &str) {
    let labels = [("destination", destination)];
    let b = metric(before, "prism_destination_bytes_sent_total", &labels).unwrap();
    let a = metric(after, "prism_destination_bytes_sent_total", &labels).unwrap();
    assert!(
        a > b,
        "destination {destination} stopped sending: {b} -> {a}"
    );
}

#[test]
fn series_of_a_removed_destination_disappear() {
    let scratch = Scratch::new("metrics-removal");
    let (rtmp_port, metrics_port, admin_port) = (free_port(), free_port(), free_port());
    let token = "metrics-admin-token-0000";
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\nseries_idle_s = 2\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{token}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\n\n  [[streams.destinations]]\n  id = \"keep\"\n  url = \"rtmp://127.0.0.1:9/live/a-key-1111\"\n  enabled = false\n\n\
           [[streams.destinations]]\n  id = \"gone\"\n  url = \"rtmp://127.0.0.1:9/live/b-key-2222\"\n  enabled = false\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(metrics_port, Duration::from_secs(5));
    let before = http_get(metrics_port, "/metrics").1;
    assert_eq!(state(&before, "gone", "disabled"), 1.0, "{before}");
    let (status, _) = http(
        admin_port,
        "DELETE",
        "/v1/streams/main/destinations/gone",
        Some(token),
        "",
    );
    assert_eq!(status, 200);
    // Scrapes keep refreshing what exists; the removed destination's series
    // age out after series_idle_s.
    let after = wait_for_metrics(
        metrics_port,
        "the removed destination gone",
        Duration::from_secs(10),
        |m| !m.contains("destination=\"gone\""),
    );
    assert_eq!(state(&after, "keep", "disabled"), 1.0, "{after}");
    drop(prism);
}
