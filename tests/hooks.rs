//! Publish authorisation by an HTTP endpoint (`[auth]`), end to end: real
//! ffmpeg publishers over RTMP and SRT, an authorisation service that
//! admits `?token=good`, one that hangs, and a burst of made-up keys.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prism_rtmp::handmade::{self, type0};
use prism_rtmp::{Command, Value};
use support::hook_server::{HookAnswer, HookRequest, HookServer};
use support::*;

const KEY: &str = "live_hooks_4f2a9c1e";
const TOKEN: &str = "hooks-test-admin-token-01";

/// Admits a publish whose arguments hold `token=good` (a key Prism does not
/// know onto stream `main`); refuses others 403.
fn token_check(request: &HookRequest) -> HookAnswer {
    let question = request.json();
    match (
        question["args"]["token"] == "good",
        question["stream"].is_null(),
    ) {
        (false, _) => HookAnswer::status(403),
        (true, false) => HookAnswer::status(200),
        (true, true) => HookAnswer {
            status: 200,
            body: r#"{"stream": "main"}"#.into(),
            delay: Duration::ZERO,
        },
    }
}

/// Stream `main` (key `KEY`) to nginx-rtmp's `dest`, with `auth` as its
/// `[auth]` section and `rtmp` settings added to `[rtmp]`.
fn config(ports: &Ports, nginx: u16, auth: &str, rtmp: &str) -> String {
    format!(
        "[rtmp]\nlisten = \"127.0.0.1:{}\"\n{rtmp}\n\n[srt]\nlisten = \"127.0.0.1:{}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{}\"\n\n{auth}\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 0\n\n  \
         [[streams.destinations]]\n  id = \"dest\"\n  url = \"rtmp://127.0.0.1:{nginx}/live/dest\"\n",
        ports.rtmp, ports.srt, ports.admin, ports.metrics
    )
}

struct Ports {
    rtmp: u16,
    srt: u16,
    admin: u16,
    metrics: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            rtmp: free_port(),
            srt: free_port(),
            admin: free_port(),
            metrics: free_port(),
        }
    }
}

fn metrics(ports: &Ports) -> String {
    http_get(ports.metrics, "/metrics").1
}

#[test]
fn the_auth_hook_admits_good_tokens_and_refuses_bad_ones_over_rtmp_and_srt() {
    require_ffmpeg();
    let scratch = Scratch::new("hooks-auth");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let hook = HookServer::start(token_check);
    let ports = Ports::new();
    let auth = format!(
        "[auth]\nurl = \"{}\"\nunknown_keys = true",
        hook.url("/auth?secret=hook-query-9d3e")
    );
    let prism = Prism::start(&scratch, &config(&ports, nginx.port, &auth, ""), ports.rtmp);
    wait_for_port(ports.admin, Duration::from_secs(5));

    // RTMP, the token in the stream name's query, as OBS users paste it.
    let mut bad = Ffmpeg::publisher(
        &format!("{}?token=bad", prism.publish_url(KEY)),
        5,
        scratch.file("bad.log"),
    );
    assert!(
        !bad.wait(Duration::from_secs(15)).success(),
        "a bad token published"
    );
    let mut good = Ffmpeg::publisher(
        &format!("{}?token=good", prism.publish_url(KEY)),
        8,
        scratch.file("good.log"),
    );
    assert!(
        good.wait(Duration::from_secs(30)).success(),
        "{}",
        good.log()
    );
    let recorded = nginx.dir.join("dest.flv");
    assert_good_recording(&recorded, 8.0);

    let asked = hook.requests();
    assert_eq!(asked.len(), 2, "one question per publish");
    for (request, token) in asked.iter().zip(["bad", "good"]) {
        let question = request.json();
        assert_eq!(request.path, "/auth?secret=hook-query-9d3e");
        assert_eq!(question["stream"], "main", "{question}");
        assert_eq!(question["key"], KEY);
        assert_eq!(question["protocol"], "rtmp");
        assert_eq!(question["app"], "live");
        assert_eq!(question["args"], serde_json::json!({ "token": token }));
        assert!(question["remote"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"));
    }

    // SRT: the token after the key in the stream id, as typed and as a
    // URL-encoding tool writes it.
    let srt = |token: &str| format!("srt://127.0.0.1:{}?streamid={KEY}?token={token}", ports.srt);
    let encoded = format!("srt://127.0.0.1:{}?streamid={KEY}%3Ftoken%3Dbad", ports.srt);
    let mut bad = Ffmpeg::srt_publisher(&encoded, 5, scratch.file("srt-bad.log"));
    assert!(
        !bad.wait(Duration::from_secs(15)).success(),
        "a bad token published over SRT"
    );
    let mut good = Ffmpeg::srt_publisher(&srt("good"), 6, scratch.file("srt-good.log"));
    assert!(
        good.wait(Duration::from_secs(30)).success(),
        "{}\n{}",
        good.log(),
        prism.log()
    );
    let asked = hook.requests();
    assert_eq!(asked.len(), 4);
    for (request, token) in asked[2..].iter().zip(["bad", "good"]) {
        let question = request.json();
        assert_eq!(question["protocol"], "srt");
        assert_eq!(question["stream"], "main");
        assert_eq!(question["args"], serde_json::json!({ "token": token }));
    }

    // A key Prism does not know (a per-user key kept elsewhere): the hook
    // places it on stream `main`.
    let mut personal = Ffmpeg::publisher(
        &format!("{}?token=good", prism.publish_url("alice-personal-key")),
        4,
        scratch.file("personal.log"),
    );
    assert!(
        personal.wait(Duration::from_secs(30)).success(),
        "{}",
        personal.log()
    );
    let question = hook.requests()[4].json();
    assert_eq!(question["stream"], serde_json::Value::Null);
    assert_eq!(question["key"], "alice-personal-key");
    assert_good_recording(&recorded, 4.0);

    let exposition = metrics(&ports);
    assert_eq!(
        metric(
            &exposition,
            "prism_auth_requests_total",
            &[("result", "admitted")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &exposition,
            "prism_auth_requests_total",
            &[("result", "refused")]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&exposition, "prism_auth_latency_seconds_count", &[]),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &exposition,
            "prism_ingest_publish_rejected_total",
            &[("reason", "unauthorized")]
        ),
        Some(2.0)
    );
    prism.assert_log_free_of(&[KEY, "alice-personal-key", "hook-query-9d3e"]);
}

#[test]
fn a_hanging_auth_hook_denies_within_its_timeout_or_allows_as_configured() {
    require_ffmpeg();
    let scratch = Scratch::new("hooks-hang");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let hook = HookServer::start(|_| HookAnswer {
        status: 200,
        body: String::new(),
        delay: Duration::from_secs(30),
    });
    let ports = Ports::new();
    let auth = |on_error: &str| {
        format!(
            "[auth]\nurl = \"{}\"\ntimeout_ms = 1000\non_error = \"{on_error}\"",
            hook.url("/auth")
        )
    };
    let config_path = scratch.file("prism.toml");
    let prism = Prism::start(
        &scratch,
        &config(&ports, nginx.port, &auth("deny"), ""),
        ports.rtmp,
    );
    wait_for_port(ports.admin, Duration::from_secs(5));

    let started = Instant::now();
    let mut denied = Ffmpeg::publisher(&prism.publish_url(KEY), 5, scratch.file("denied.log"));
    // While the hook hangs, the API answers.
    let (status, _) = http(ports.admin, "GET", "/v1/streams", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(!denied.wait(Duration::from_secs(15)).success());
    prism.wait_for_log(
        "authorisation hook failed or did not answer",
        Duration::from_secs(1),
    );
    eprintln!(
        "refused {:?} after ffmpeg started (hook timeout 1 s)",
        started.elapsed()
    );
    assert_eq!(
        metric(
            &metrics(&ports),
            "prism_auth_requests_total",
            &[("result", "error")]
        ),
        Some(1.0)
    );

    // The same hook, with on_error = "allow" (a reload): admitted.
    std::fs::write(&config_path, config(&ports, nginx.port, &auth("allow"), "")).unwrap();
    prism.signal("HUP");
    prism.wait_for_log("configuration reloaded", Duration::from_secs(5));
    let mut allowed = Ffmpeg::publisher(&prism.publish_url(KEY), 6, scratch.file("allowed.log"));
    assert!(
        allowed.wait(Duration::from_secs(30)).success(),
        "{}",
        allowed.log()
    );
    assert_good_recording(&nginx.dir.join("dest.flv"), 6.0);
}

/// Connects, handshakes and asks to publish `name`; returns how long the
/// answer took from the publish command being sent, and whether it was
/// `NetStream.Publish.Start`.
fn publish_by_hand(port: u16, name: &str) -> (Duration, bool) {
    let mut started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (started.elapsed(), false);
    };
    if client_handshake(&mut stream).is_none() {
        return (started.elapsed(), false);
    }
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let command = |csid: u32, msid: u32, name: &str, txn: f64, object: Value, args| {
        let body = Command::new(name, txn, object, args).encode();
        handmade::whole(type0(csid, 0, body.len(), 20, msid), csid, &body, 128)
    };
    let mut wire = command(
        3,
        0,
        "connect",
        1.0,
        Value::object([("app", Value::string("live"))]),
        vec![],
    );
    wire.extend(command(3, 0, "createStream", 2.0, Value::Null, vec![]));
    wire.extend(command(
        8,
        1,
        "publish",
        0.0,
        Value::Null,
        vec![Value::string(name), Value::string("live")],
    ));
    started = Instant::now();
    if stream.write_all(&wire).is_err() {
        return (started.elapsed(), false);
    }
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return (started.elapsed(), false),
        }
        let has = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
        if has(b"NetStream.Publish.Start") {
            return (started.elapsed(), true);
        }
        if has(b"NetStream.Publish.BadName") || has(b"NetStream.Publish.Unauthorized") {
            return (started.elapsed(), false);
        }
    }
}

#[test]
fn a_burst_of_unknown_keys_makes_at_most_max_concurrent_calls_and_does_not_hold_up_a_publisher() {
    let scratch = Scratch::new("hooks-burst");
    let latency = Duration::from_millis(300);
    let hook = HookServer::start(move |request| {
        let question = request.json();
        // Unknown keys are for nobody; the real publisher's token is good.
        let status = if question["stream"].is_null() {
            404
        } else {
            200
        };
        HookAnswer {
            status,
            body: String::new(),
            delay: latency,
        }
    });
    let ports = Ports::new();
    let auth = format!(
        "[auth]\nurl = \"{}\"\nunknown_keys = true\nmax_concurrent = 4",
        hook.url("/auth")
    );
    // Prism's own admission limits wide open: the hook's bound is what is
    // shown here.
    let rtmp = "max_connections = 2000\nmax_anonymous_connections = 1000\nmax_anonymous_per_address = 1000";
    let prism = Prism::start(
        &scratch,
        &config(&ports, free_port(), &auth, rtmp),
        ports.rtmp,
    );
    wait_for_port(ports.admin, Duration::from_secs(5));

    let burst: Vec<_> = (0..50)
        .map(|thread| {
            let port = ports.rtmp;
            std::thread::spawn(move || {
                (0..10)
                    .map(|n| publish_by_hand(port, &format!("made-up-{thread}-{n}")).1)
                    .filter(|admitted| *admitted)
                    .count()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (took, admitted) = publish_by_hand(ports.rtmp, &format!("{KEY}?token=good"));
    let made_up_admitted: usize = burst.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted, "the real publisher was refused:\n{}", prism.log());
    assert_eq!(made_up_admitted, 0);
    let asked = hook.requests().len();
    eprintln!(
        "500 made-up keys: {asked} hook calls, at most {} at once (max_concurrent 4); \
         the real publisher's publish was answered {took:?} after it asked (hook latency {latency:?})",
        hook.most_in_flight()
    );
    assert!(
        hook.most_in_flight() <= 4,
        "{} calls at once",
        hook.most_in_flight()
    );
    // Its call waits for one in flight to end (a hook latency at most),
    // then takes its own: never behind the made-up keys' queue.
    assert!(
        took < latency * 2 + Duration::from_millis(500),
        "the real publisher waited {took:?} behind made-up keys"
    );
    let exposition = metrics(&ports);
    let busy = metric(
        &exposition,
        "prism_auth_requests_total",
        &[("result", "busy")],
    )
    .unwrap_or(0.0);
    assert!(
        busy > 0.0 && busy as usize + asked >= 501,
        "busy {busy}, asked {asked}"
    );
}

/// The few lines of Python docs/hooks.md gives a receiver to check a
/// webhook's signature, run on `body`: true when it verifies.
fn python_verifies(secret: &str, body: &[u8], header: &str) -> bool {
    let script = "import hmac, hashlib, sys\n\
                  secret, header = sys.argv[1].encode(), sys.argv[2]\n\
                  body = sys.stdin.buffer.read()\n\
                  expected = 'sha256=' + hmac.new(secret, body, hashlib.sha256).hexdigest()\n\
                  sys.exit(0 if hmac.compare_digest(expected, header) else 1)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, header])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

#[test]
fn webhooks_are_signed_retried_with_the_same_id_in_order_and_kept_across_a_restart() {
    require_ffmpeg();
    let scratch = Scratch::new("hooks-webhooks");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let secret = "webhook-secret-7c1d2e3f";
    let refused_once = std::sync::atomic::AtomicBool::new(false);
    let receiver = HookServer::start(move |request| {
        let first_stop = request.json()["type"] == "publish_stop"
            && !refused_once.swap(true, std::sync::atomic::Ordering::SeqCst);
        HookAnswer::status(if first_stop { 500 } else { 200 })
    });
    let ports = Ports::new();
    let webhooks =
        |url: &str| format!("[[webhooks]]\nid = \"ops\"\nurl = \"{url}\"\nsecret = \"{secret}\"");
    let mut prism = Prism::start(
        &scratch,
        &config(
            &ports,
            nginx.port,
            &webhooks(&receiver.url("/prism-events")),
            "",
        ),
        ports.rtmp,
    );
    wait_for_port(ports.admin, Duration::from_secs(5));
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 3, scratch.file("pub.log"));
    assert!(publisher.wait(Duration::from_secs(20)).success());

    let stops = |requests: &[HookRequest]| {
        requests
            .iter()
            .filter(|r| r.json()["type"] == "publish_stop")
            .count()
    };
    let requests = poll_until(
        "publish_stop delivered again after its 500",
        Duration::from_secs(15),
        || receiver.requests(),
        |r| stops(r) >= 2,
    );
    let bodies: Vec<serde_json::Value> = requests.iter().map(HookRequest::json).collect();
    let kinds: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    eprintln!("delivered: {kinds:?}");
    for request in &requests {
        let header = request.header("x-prism-signature").expect("signed");
        assert!(
            python_verifies(secret, &request.body, header),
            "{}",
            String::from_utf8_lossy(&request.body)
        );
        assert!(!python_verifies(
            "another-secret-000000",
            &request.body,
            header
        ));
        let body = request.json();
        assert_eq!(request.header("x-prism-id"), body["id"].as_str());
        assert!(
            body["time"].is_string() && body["sent_at"].is_string(),
            "{body}"
        );
    }
    // In order: the stop that failed is sent again before anything after it.
    let failed = kinds.iter().position(|k| *k == "publish_stop").unwrap();
    assert_eq!(
        bodies[failed + 1]["id"],
        bodies[failed]["id"],
        "the retry came first, with the same id"
    );
    assert_eq!(kinds[0], "publish_start", "{kinds:?}");
    let times: Vec<&str> = bodies.iter().map(|b| b["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(kinds.contains(&"destination_state"));
    let exposition = metrics(&ports);
    assert_eq!(
        metric(
            &exposition,
            "prism_webhook_deliveries_total",
            &[("webhook", "ops"), ("result", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&exposition, "prism_webhook_queue", &[("webhook", "ops")]),
        Some(0.0)
    );

    // Its endpoint is down while events happen; Prism is restarted; they
    // are delivered when the endpoint is back.
    let down = free_port();
    std::fs::write(
        scratch.file("prism.toml"),
        config(
            &ports,
            nginx.port,
            &webhooks(&format!("http://127.0.0.1:{down}/prism-events")),
            "",
        ),
    )
    .unwrap();
    prism.signal("HUP");
    prism.wait_for_log("configuration reloaded", Duration::from_secs(5));
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 2, scratch.file("pub2.log"));
    assert!(publisher.wait(Duration::from_secs(20)).success());
    prism.wait_for_log("webhook delivery failed", Duration::from_secs(5));
    let (status, _) = prism.terminate();
    assert!(status.success());
    let back = HookServer::start(|_| HookAnswer::status(200));
    std::fs::write(
        scratch.file("prism.toml"),
        config(
            &ports,
            nginx.port,
            &webhooks(&back.url("/prism-events")),
            "",
        ),
    )
    .unwrap();
    let prism = Prism::start_on_file(&scratch, ports.rtmp);
    let after = poll_until(
        "the queued events delivered after the restart",
        Duration::from_secs(15),
        || back.requests(),
        |r| stops(r) >= 1,
    );
    let kinds: Vec<String> = after
        .iter()
        .map(|r| r.json()["type"].as_str().unwrap().to_string())
        .collect();
    prism.assert_log_free_of(&[secret]);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("config_changed"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "publish_start"), "{kinds:?}");
}

/// An `https://` hook is verified: with its private CA as `ca_file` it is
/// asked and admits; without it (the host's store does not know that CA)
/// the TLS handshake fails, and `on_error = "deny"` refuses the publish.
#[test]
fn an_https_hook_is_verified_against_its_ca_file() {
    let scratch = Scratch::new("hooks-https");
    let hook = HookServer::start(token_check);
    let (ca_pem, certificate, key) = support::tls::certificates();
    let tls_port = free_port();
    support::tls::tls_proxy(tls_port, hook.port, certificate, key);
    std::fs::write(scratch.file("hook-ca.pem"), ca_pem).unwrap();
    let ports = Ports::new();
    let auth = |ca: &str| {
        format!("[auth]\nurl = \"https://localhost:{tls_port}/auth\"\ntimeout_ms = 2000\n{ca}")
    };
    let mut prism = Prism::start(
        &scratch,
        &config(&ports, free_port(), &auth("ca_file = \"hook-ca.pem\""), ""),
        ports.rtmp,
    );
    wait_for_port(ports.admin, Duration::from_secs(5));
    let (_, admitted) = publish_by_hand(ports.rtmp, &format!("{KEY}?token=good"));
    assert!(admitted, "{}", prism.log());
    assert_eq!(hook.requests().len(), 1);
    prism.terminate();

    let prism = Prism::start(
        &scratch,
        &config(&ports, free_port(), &auth(""), ""),
        ports.rtmp,
    );
    wait_for_port(ports.admin, Duration::from_secs(5));
    let (_, admitted) = publish_by_hand(ports.rtmp, &format!("{KEY}?token=good"));
    assert!(!admitted);
    prism.wait_for_log("TLS", Duration::from_secs(1));
    assert_eq!(
        hook.requests().len(),
        1,
        "an unverified hook was sent the question"
    );
}
