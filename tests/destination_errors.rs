//! End to end: a destination that fails says how, as a kind an operator can
//! alert on. One stream goes to a host that does not resolve, a closed
//! port, a TLS server whose CA Prism does not know, a server that refuses
//! the publish, and one that takes the publish and then reads nothing; the
//! API (`last_error.kind`), the `destination_state` events and
//! `prism_destination_failures_total{kind}` each name the reason. (A server
//! that stops acknowledging is `ack_timeout`: tests/acks.rs.)

mod support;

use std::time::{Duration, Instant};

use support::tls::{certificates, tls_proxy};
use support::*;

const KEY: &str = "live_errors_show_7f3e";
const TOKEN: &str = "errors-admin-token-0123456789";

#[test]
fn each_failure_is_named_by_its_kind_in_the_api_and_the_metric() {
    require_ffmpeg();
    let scratch = Scratch::new("destination-errors");
    let (rtmp_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    let closed_port = free_port();
    let (_ca_pem, certificate, key) = certificates();
    let (tls_port, behind_tls) = (free_port(), free_port());
    tls_proxy(tls_port, behind_tls, certificate, key);
    let refusing = FakeDestination::refusing_rtmp("this stream key is not valid");
    let stalling = FakeDestination::stalling_rtmp();
    let destinations = [
        (
            "unresolvable",
            "rtmp://no-such-host.invalid/live/dest-key-k1-7c1".to_string(),
            "dns",
        ),
        (
            "closed",
            format!("rtmp://127.0.0.1:{closed_port}/live/dest-key-k2-7c1"),
            "connect_refused",
        ),
        (
            "unknown-ca",
            format!("rtmps://localhost:{tls_port}/live/dest-key-k3-7c1"),
            "tls",
        ),
        (
            "refusing",
            format!("rtmp://127.0.0.1:{}/live/dest-key-k4-7c1", refusing.port),
            "rejected",
        ),
        (
            "stalling",
            format!("rtmp://127.0.0.1:{}/live/dest-key-k5-7c1", stalling.port),
            "write_stall",
        ),
    ];
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         token = \"{TOKEN}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [fanout]\nconnect_timeout_s = 3\nwrite_timeout_s = 2\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 0\n"
    );
    for (id, url, _) in &destinations {
        config += &format!("\n  [[streams.destinations]]\n  id = \"{id}\"\n  url = \"{url}\"\n");
    }
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(10));
    let events = listen_to_events(admin_port, TOKEN);
    // 2 Mbit/s, so the stalling destination's socket fills within seconds.
    let _publisher = Ffmpeg::publisher_at(
        &prism.publish_url(KEY),
        40,
        Some(2000),
        scratch.file("pub.log"),
    );

    let started = Instant::now();
    let mut pending: Vec<&(&str, String, &str)> = destinations.iter().collect();
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no error of the expected kind for {:?}:\n{}",
            pending.iter().map(|d| d.0).collect::<Vec<_>>(),
            prism.log()
        );
        pending.retain(|(id, _, kind)| {
            let view = api_json(
                admin_port,
                &format!("/v1/streams/main/destinations/{id}"),
                Some(TOKEN),
            );
            let error = &view["last_error"];
            if error.is_null() {
                return true;
            }
            assert_eq!(error["kind"], *kind, "{id}: {error}");
            assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
            false
        });
        std::thread::sleep(Duration::from_millis(200));
    }

    let (_, exposition) = http_get(metrics_port, "/metrics");
    for (id, _, kind) in &destinations {
        let failures = metric(
            &exposition,
            "prism_destination_failures_total",
            &[("stream", "main"), ("destination", id), ("kind", kind)],
        );
        assert!(
            failures.is_some_and(|n| n >= 1.0),
            "{id} {kind}:\n{exposition}"
        );
    }
    // One kind per destination: no series of another kind for it.
    let other_kinds = exposition
        .lines()
        .filter(|l| l.starts_with("prism_destination_failures_total{"))
        .filter(|l| {
            !destinations.iter().any(|(id, _, kind)| {
                l.contains(&format!("destination=\"{id}\""))
                    && l.contains(&format!("kind=\"{kind}\""))
            })
        })
        .collect::<Vec<_>>();
    assert!(other_kinds.is_empty(), "{other_kinds:?}");

    let events = events.lock().unwrap().clone();
    for (id, _, kind) in &destinations {
        assert!(
            events.lines().any(|l| l.contains("\"destination_state\"")
                && l.contains(&format!("\"destination\":\"{id}\""))
                && l.contains(&format!("\"kind\":\"{kind}\""))),
            "no destination_state event with {kind} for {id}:\n{events}"
        );
    }
    prism.assert_log_free_of(&[
        KEY,
        "dest-key-k1-7c1",
        "dest-key-k2-7c1",
        "dest-key-k3-7c1",
        "dest-key-k4-7c1",
        "dest-key-k5-7c1",
    ]);
}
