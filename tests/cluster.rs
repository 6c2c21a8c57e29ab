//! Cluster mode end to end: a real `redis-server` (Debian's package) on a
//! free port, three `prism` nodes on loopback sharing its streams, real
//! ffmpeg publishers (RTMP and SRT) and receivers, nginx-rtmp as a pulled
//! source.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

const KEY: &str = "live_cluster_7d41c0e9";
const LEASE_MS: u64 = 3000;

/// One node: its own directory (config, cache, log) and ports.
struct Node {
    id: &'static str,
    /// Kept for the node's life (removed with it).
    _scratch: Scratch,
    prism: Prism,
    admin: u16,
    metrics: u16,
    srt: u16,
}

impl Node {
    fn start(id: &'static str, redis: &RedisServer) -> Self {
        let scratch = Scratch::new(&format!("cluster-{id}"));
        let (rtmp, admin, metrics, srt) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            "[rtmp]\nlisten = \"127.0.0.1:{rtmp}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt}\"\n\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\ninsecure_no_auth = true\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n\
             [cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nlease_ms = {LEASE_MS}\n",
            redis.url()
        );
        let prism = Prism::start(&scratch, &config, rtmp);
        // The RTMP listener is bound first: the admin API a moment later.
        wait_for_port(admin, Duration::from_secs(5));
        Self {
            id,
            _scratch: scratch,
            prism,
            admin,
            metrics,
            srt,
        }
    }

    /// The SRT caller URL an OBS user would paste (stream id: the key).
    fn srt_url(&self) -> String {
        format!("srt://127.0.0.1:{}?streamid={KEY}", self.srt)
    }

    fn publish_url(&self) -> String {
        self.prism.publish_url(KEY)
    }

    fn api(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, body) = http(self.admin, method, path, None, body);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn stream(&self, id: &str) -> Value {
        let (status, view) = self.api("GET", &format!("/v1/streams/{id}"), "");
        assert_eq!(status, 200, "{}: {view}", self.id);
        view
    }

    /// Waits until `check` holds for this node's view of `stream`; returns
    /// how long that took.
    fn wait_for(
        &self,
        stream: &str,
        within: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let (status, view) = self.api("GET", &format!("/v1/streams/{stream}"), "");
            if status == 200 && check(&view) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "{}: {what} never happened within {within:?}; last view: {view}\n{}",
                self.id,
                self.prism.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn redis_up(&self) -> bool {
        self.api("GET", "/v1/cluster", "").1["redis_up"] == Value::Bool(true)
    }
}

fn destination_state(view: &Value, destination: &str) -> String {
    view["destinations"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["id"] == destination))
        .map(|d| d["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Writes a single-node config with `streams` (and a `[cluster]` section)
/// and loads its streams into Redis with `prism import`.
fn import(scratch: &Scratch, redis: &RedisServer, streams: &str) -> String {
    let path = scratch.file("streams.toml");
    std::fs::write(
        &path,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[cluster]\nredis = \"{}\"\nnode_id = \"importer\"\n\n{streams}",
            redis.url()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_prism"))
        .args(["import", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "prism import failed: {said}");
    said
}

fn wait_until(within: Duration, what: &str, check: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < within,
            "{what} never happened within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn three_nodes_share_streams_and_a_redis_restart_costs_the_show_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("cluster-shared");
    let mut redis = RedisServer::start(&scratch.file("redis"));
    let (alpha_port, beta_port) = (free_port(), free_port());
    let said = import(
        &scratch,
        &redis,
        &format!(
            "[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n\n  [[streams.destinations]]\n  id = \"alpha\"\n  \
             url = \"rtmp://127.0.0.1:{alpha_port}/live/alpha\"\n"
        ),
    );
    assert!(said.contains("imported 1 streams"), "{said}");
    assert!(!said.contains(KEY), "the import printed the key: {said}");
    let (a, b, c) = (
        Node::start("node-a", &redis),
        Node::start("node-b", &redis),
        Node::start("node-c", &redis),
    );
    for node in [&a, &b, &c] {
        node.wait_for("main", Duration::from_secs(5), "the imported stream", |v| {
            v["id"] == "main"
        });
    }

    let alpha_out = scratch.file("alpha.flv");
    let beta_out = scratch.file("beta.flv");
    let mut alpha = Ffmpeg::receiver(alpha_port, "live", "alpha", &alpha_out);
    let mut beta = Ffmpeg::receiver(beta_port, "live", "beta", &beta_out);
    let show_secs = 24;
    let mut publisher = Ffmpeg::publisher(&a.publish_url(), show_secs, scratch.file("pub.log"));
    a.wait_for(
        "main",
        Duration::from_secs(10),
        "alpha live on node A",
        |v| destination_state(v, "alpha") == "live",
    );

    // A destination added through node B's API starts on node A's show.
    let body = format!(
        "{{\"id\":\"beta\",\"url\":\"rtmp://127.0.0.1:{beta_port}/live\",\"key\":\"beta\"}}"
    );
    let (status, answer) = b.api("POST", "/v1/streams/main/destinations", &body);
    assert_eq!(status, 201, "{answer}");
    let reached = a.wait_for("main", Duration::from_secs(1), "beta on node A", |v| {
        !destination_state(v, "beta").is_empty()
    });
    eprintln!("a destination added on node B reached node A in {reached:?}");
    a.wait_for(
        "main",
        Duration::from_secs(10),
        "beta live on node A",
        |v| destination_state(v, "beta") == "live",
    );
    // Every node shows the stream and where it is live.
    for node in [&a, &b, &c] {
        let view = node.stream("main");
        assert_eq!(view["live_on"], "node-a", "{}: {view}", node.id);
    }
    assert_eq!(destination_state(&b.stream("main"), "beta"), "idle");

    // A second publisher on node C is refused, naming node A.
    let mut second = Ffmpeg::publisher(&c.publish_url(), 5, scratch.file("second.log"));
    assert!(
        !second.wait(Duration::from_secs(15)).success(),
        "a second publisher of a live key was accepted"
    );
    let log = c.prism.log();
    assert!(log.contains("already live on node \"node-a\""), "{log}");
    // And over SRT (libsrt's caller through ffmpeg, its defaults).
    let mut second = Ffmpeg::srt_publisher(&c.srt_url(), 5, scratch.file("second-srt.log"));
    assert!(
        !second.wait(Duration::from_secs(15)).success(),
        "a second SRT publisher of a live key was accepted"
    );
    let log = c.prism.log();
    assert!(
        log.lines().any(
            |l| l.contains("already live on node \"node-a\"") && l.contains("protocol=\"srt\"")
        ),
        "{log}"
    );

    // Redis stops mid-show: API writes answer 503, the show goes on.
    redis.stop();
    let (status, answer) = c.api("POST", "/v1/streams", "{\"id\":\"spare\"}");
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Redis is unreachable"), "{answer}");
    wait_until(
        Duration::from_secs(3),
        "node A noticing Redis is gone",
        || !a.redis_up(),
    );
    let (_, metrics) = http_get(a.metrics, "/metrics");
    assert_eq!(
        metric(&metrics, "prism_cluster_redis_up", &[("node", "node-a")]),
        Some(0.0),
        "{metrics}"
    );
    std::thread::sleep(Duration::from_secs(3));
    redis.restart();
    wait_until(
        Duration::from_secs(10),
        "node C reaching Redis again",
        || c.redis_up(),
    );
    let (status, answer) = c.api("POST", "/v1/streams", "{\"id\":\"spare\"}");
    assert_eq!(status, 201, "{answer}");
    let reached = a.wait_for(
        "spare",
        Duration::from_secs(1),
        "the new stream on node A",
        |_| true,
    );
    eprintln!("after the Redis restart, a stream added on node C reached node A in {reached:?}");
    let (_, metrics) = http_get(a.metrics, "/metrics");
    assert_eq!(
        metric(&metrics, "prism_cluster_redis_up", &[("node", "node-a")]),
        Some(1.0)
    );
    assert!(
        metric(
            &metrics,
            "prism_cluster_redis_losses_total",
            &[("node", "node-a")]
        ) >= Some(1.0)
    );
    // Every node runs the same version: nothing applied twice or lost.
    let versions: Vec<Value> = [&a, &b, &c]
        .iter()
        .map(|n| n.api("GET", "/v1/cluster", "").1["version"].clone())
        .collect();
    assert!(versions.iter().all(|v| *v == versions[0]), "{versions:?}");
    assert_eq!(versions[0], 3, "import, beta, spare: {versions:?}");

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    alpha.wait(Duration::from_secs(15));
    beta.wait(Duration::from_secs(15));
    assert_good_recording(&alpha_out, f64::from(show_secs));
    let frames = video_frames(&alpha_out);
    let expected = show_secs * 25;
    assert!(
        frames + 1 >= expected,
        "the show lost frames: {frames} of {expected}"
    );
    let beta_secs = probe_duration(&beta_out);
    assert!(beta_secs > 10.0, "beta got {beta_secs} s");
    assert_good_recording(&beta_out, beta_secs);
    assert_eq!(
        a.prism.log().matches("destination live").count(),
        2,
        "a destination reconnected:\n{}",
        a.prism.log()
    );
    for node in [&a, &b, &c] {
        node.prism.assert_log_free_of(&[KEY]);
        assert!(
            !node.prism.log().contains("panicked"),
            "{}",
            node.prism.log()
        );
    }
}

#[test]
fn an_encoder_moves_to_another_node_when_its_node_dies_or_it_reconnects_elsewhere() {
    require_ffmpeg();
    let scratch = Scratch::new("cluster-failover");
    let redis = RedisServer::start(&scratch.file("redis"));
    let port = free_port();
    import(
        &scratch,
        &redis,
        &format!(
            "[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 10\n\n  [[streams.destinations]]\n  \
             id = \"alpha\"\n  url = \"rtmp://127.0.0.1:{port}/live/alpha\"\n"
        ),
    );
    let (a, b, c) = (
        Node::start("node-a", &redis),
        Node::start("node-b", &redis),
        Node::start("node-c", &redis),
    );
    for node in [&a, &b, &c] {
        node.wait_for(
            "main",
            Duration::from_secs(5),
            "the imported stream",
            |_| true,
        );
    }
    let first_out = scratch.file("on-a.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "alpha", &first_out);
    let mut on_a = Ffmpeg::publisher(&a.publish_url(), 30, scratch.file("on-a.log"));
    a.wait_for(
        "main",
        Duration::from_secs(10),
        "alpha live on node A",
        |v| destination_state(v, "alpha") == "live",
    );
    std::thread::sleep(Duration::from_secs(3));

    // Node A dies mid-show; the encoder publishes again, to node B.
    a.prism.signal("KILL");
    let killed = Instant::now();
    on_a.kill();
    receiver.wait(Duration::from_secs(10));
    let second_out = scratch.file("on-b.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "alpha", &second_out);
    let mut on_b = Ffmpeg::publisher(&b.publish_url(), 30, scratch.file("on-b.log"));
    b.wait_for(
        "main",
        Duration::from_secs(10),
        "the publish on node B",
        |v| !v["ingest"].is_null(),
    );
    let accepted = killed.elapsed();
    eprintln!("node A killed; node B took the encoder's new publish {accepted:?} later (lease {LEASE_MS} ms)");
    assert!(
        accepted < Duration::from_millis(LEASE_MS + 1500),
        "node B took {accepted:?} to take the publish"
    );
    b.wait_for(
        "main",
        Duration::from_secs(10),
        "alpha live on node B",
        |v| destination_state(v, "alpha") == "live",
    );
    assert_eq!(c.stream("main")["live_on"], "node-b");
    std::thread::sleep(Duration::from_secs(4));

    // The encoder drops and reconnects through the load balancer to node C
    // (over SRT) while node B waits out its grace: node B hands the stream over at
    // once instead of refusing it for 10 s.
    on_b.kill();
    let moved = Instant::now();
    // Over SRT this time: any node takes either protocol.
    let mut on_c = Ffmpeg::srt_publisher(&c.srt_url(), 6, scratch.file("on-c.log"));
    c.wait_for(
        "main",
        Duration::from_secs(5),
        "the SRT publish on node C",
        |v| v["ingest"]["protocol"] == "srt",
    );
    let taken = moved.elapsed();
    eprintln!("the encoder moved to node C during node B's grace; node C took it {taken:?} later");
    b.prism
        .wait_for_log("handing the stream over", Duration::from_secs(1));
    receiver.wait(Duration::from_secs(10));
    let third_out = scratch.file("on-c.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "alpha", &third_out);
    assert!(
        on_c.wait(Duration::from_secs(20)).success(),
        "{}",
        on_c.log()
    );
    receiver.wait(Duration::from_secs(20));

    for (out, at_least) in [(&first_out, 3.0), (&second_out, 4.0), (&third_out, 3.0)] {
        let secs = probe_duration(out);
        assert!(secs > at_least, "{}: {secs} s", out.display());
        assert_good_recording(out, secs);
    }
    for node in [&a, &b, &c] {
        node.prism.assert_log_free_of(&[KEY]);
    }
}

#[test]
fn a_pulled_stream_is_pulled_by_one_node_and_by_another_when_that_one_dies() {
    require_ffmpeg();
    let scratch = Scratch::new("cluster-pull");
    let redis = RedisServer::start(&scratch.file("redis"));
    let origin = Nginx::start(&scratch.file("nginx"));
    let mut source = Ffmpeg::publisher(
        &format!("rtmp://127.0.0.1:{}/live/cam", origin.port),
        40,
        scratch.file("source.log"),
    );
    let port = free_port();
    import(
        &scratch,
        &redis,
        &format!(
            "[[streams]]\nid = \"cam\"\npull = \"rtmp://127.0.0.1:{}/live/cam\"\n\n  [[streams.destinations]]\n  \
             id = \"alpha\"\n  url = \"rtmp://127.0.0.1:{port}/live/alpha\"\n",
            origin.port
        ),
    );
    let first_out = scratch.file("first.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "alpha", &first_out);
    let nodes = [Node::start("node-a", &redis), Node::start("node-b", &redis)];
    let pulling = |node: &Node| node.stream("cam")["ingest"]["protocol"] == "rtmp-pull";
    wait_until(Duration::from_secs(15), "a node pulling the source", || {
        nodes.iter().any(pulling)
    });
    std::thread::sleep(Duration::from_secs(4));
    let puller = nodes.iter().position(pulling).expect("a node pulls");
    let (puller, other) = (&nodes[puller], &nodes[1 - puller]);
    // One node pulls; the other waits (one connection to the origin).
    assert!(!pulling(other), "both nodes pull the source");
    assert_eq!(other.stream("cam")["live_on"], puller.id);
    other.wait_for("cam", Duration::from_secs(1), "the other node idle", |v| {
        v["ingest"].is_null() && destination_state(v, "alpha") == "idle"
    });

    puller.prism.signal("KILL");
    let killed = Instant::now();
    receiver.wait(Duration::from_secs(10));
    let second_out = scratch.file("second.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "alpha", &second_out);
    other.wait_for(
        "cam",
        Duration::from_secs(10),
        "the other node pulling",
        |v| v["ingest"]["protocol"] == "rtmp-pull",
    );
    let taken = killed.elapsed();
    eprintln!(
        "the pulling node was killed; {} pulled the source {taken:?} later (lease {LEASE_MS} ms)",
        other.id
    );
    assert!(taken < Duration::from_millis(LEASE_MS + 3000), "{taken:?}");
    other.wait_for(
        "cam",
        Duration::from_secs(10),
        "alpha live on the other node",
        |v| destination_state(v, "alpha") == "live",
    );
    std::thread::sleep(Duration::from_secs(5));
    source.kill();
    receiver.wait(Duration::from_secs(20));
    for out in [&first_out, &second_out] {
        let secs = probe_duration(out);
        assert!(secs > 3.0, "{}: {secs} s", out.display());
        assert_good_recording(out, secs);
    }
}

/// A stream's two sources meet on the node that holds its lease: a backup
/// (`?backup=1`) sent to that node stands by beside the primary; one sent
/// to another node is refused there, naming the node, and the primary
/// stays on air.
#[test]
fn a_backup_joins_the_primary_on_the_node_holding_the_stream() {
    require_ffmpeg();
    let scratch = Scratch::new("cluster-backup");
    let redis = RedisServer::start(&scratch.file("redis"));
    let port = free_port();
    import(
        &scratch,
        &redis,
        &format!(
            "[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n\n  [[streams.destinations]]\n  \
             id = \"alpha\"\n  url = \"rtmp://127.0.0.1:{port}/live/alpha\"\n"
        ),
    );
    let (a, b) = (Node::start("node-a", &redis), Node::start("node-b", &redis));
    for node in [&a, &b] {
        node.wait_for(
            "main",
            Duration::from_secs(5),
            "the imported stream",
            |_| true,
        );
    }
    let _receiver = Ffmpeg::receiver(port, "live", "alpha", &scratch.file("out.flv"));
    let _primary = Ffmpeg::publisher(&a.publish_url(), 30, scratch.file("primary.log"));
    a.wait_for("main", Duration::from_secs(10), "the primary on air", |v| {
        v["active_source"] == "primary"
    });

    // To the other node: refused there, with the holding node named.
    let backup_url = |node: &Node| format!("{}?backup=1", node.publish_url());
    let mut elsewhere = Ffmpeg::publisher(&backup_url(&b), 30, scratch.file("elsewhere.log"));
    assert!(!elsewhere.wait(Duration::from_secs(15)).success());
    b.prism
        .wait_for_log("already live on node \"node-a\"", Duration::from_secs(1));

    // To the holding node: it stands by beside the primary.
    let _backup = Ffmpeg::publisher(&backup_url(&a), 30, scratch.file("backup.log"));
    a.wait_for(
        "main",
        Duration::from_secs(10),
        "the backup standing by",
        |v| {
            let roles: Vec<&str> = v["sources"]
                .as_array()
                .map(|all| all.iter().filter_map(|s| s["role"].as_str()).collect())
                .unwrap_or_default();
            roles == ["primary", "backup"] && v["active_source"] == "primary"
        },
    );
    assert_eq!(b.stream("main")["live_on"], "node-a");
    for node in [&a, &b] {
        node.prism.assert_log_free_of(&[KEY]);
    }
}

/// The schedule is the cluster's: an entry booked on one node is listed on
/// every node, an overlapping booking on another node is refused naming
/// it, and a show (a file played into the stream) plays on exactly one
/// node; when that node dies, another takes the show over within the lease
/// time and the entry completes there.
#[test]
fn a_show_booked_on_one_node_plays_on_one_and_another_takes_it_over() {
    require_ffmpeg();
    let scratch = Scratch::new("cluster-schedule");
    let redis = RedisServer::start(&scratch.file("redis"));
    let clip = scratch.file("show.flv");
    Clip::new("testsrc=size=320x240:rate=25")
        .seconds(60)
        .encode("flv", &clip)
        .unwrap();
    let nginx = Nginx::start(&scratch.file("nginx"));
    import(
        &scratch,
        &redis,
        &format!(
            "[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n\n  [[streams.destinations]]\n  \
             id = \"dest\"\n  url = \"rtmp://127.0.0.1:{}/live/dest\"\n",
            nginx.port
        ),
    );
    let nodes = [Node::start("node-a", &redis), Node::start("node-b", &redis)];
    let book = |node: &Node, from: u64, to: u64| {
        let base = std::time::SystemTime::now();
        let at = |s: u64| {
            let at = base + Duration::from_secs(s);
            humantime::format_rfc3339_seconds(at).to_string()
        };
        node.api(
            "POST",
            "/v1/schedule",
            &format!(
                r#"{{"stream": "main", "title": "show {from}", "source": {{"file": {:?}}}, "starts_at": "{}", "ends_at": "{}"}}"#,
                clip.display().to_string(),
                at(from),
                at(to)
            ),
        )
    };
    let entry = |node: &Node, id: &str| node.api("GET", &format!("/v1/schedule/{id}"), "").1;

    let (status, first) = book(&nodes[0], 4, 14);
    assert_eq!(status, 201, "{first}");
    let first = first["id"].as_str().unwrap().to_string();
    // Listed on the other node at once; a clash booked there is refused.
    assert_eq!(entry(&nodes[1], &first)["status"], "upcoming");
    let (status, clash) = book(&nodes[1], 10, 20);
    assert_eq!(status, 409, "{clash}");
    assert!(clash.to_string().contains(&first), "{clash}");

    let over = poll_until(
        "the first show ending",
        Duration::from_secs(30),
        || entry(&nodes[1], &first),
        |e| e["status"] == "completed" || e["status"] == "failed",
    );
    assert_eq!(over["status"], "completed", "{over}");
    let played = |node: &Node| {
        node.prism
            .log()
            .matches("the show plays on this node")
            .count()
    };
    // The lines saying `id`'s show started playing on `node`.
    let plays = |node: &Node, id: &str| {
        node.prism
            .log()
            .lines()
            .filter(|l| l.contains("the show plays on this node") && l.contains(&format!("{id} ")))
            .count()
    };
    assert_eq!(
        nodes.iter().map(played).sum::<usize>(),
        1,
        "the show played on exactly one node"
    );
    let recorded = nginx.dir.join("dest.flv");
    let probe = assert_good_recording(&recorded, 10.0);
    assert!(
        (8.5..=11.5).contains(&probe.duration),
        "{:.2} s of the show",
        probe.duration
    );
    let sent = &over["outcome"][0];
    assert_eq!(sent["destination"], "dest");
    assert!(sent["bytes"].as_u64().unwrap() > 100_000, "{over}");

    // The next show: its node dies mid-show, the other takes it over.
    let (status, second) = book(&nodes[1], 2, 22);
    assert_eq!(status, 201, "{second}");
    let second = second["id"].as_str().unwrap().to_string();
    let runner = poll_until(
        "a node playing the second show",
        Duration::from_secs(10),
        || nodes.iter().position(|n| plays(n, &second) > 0),
        |at| at.is_some(),
    )
    .unwrap();
    let (runner, other) = (&nodes[runner], &nodes[1 - runner]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(plays(other, &second), 0, "the show played on both nodes");
    runner.prism.signal("KILL");
    let killed = Instant::now();
    wait_until(
        Duration::from_millis(LEASE_MS + 4000),
        "the other node taking the show over",
        || plays(other, &second) > 0,
    );
    eprintln!(
        "the show's node was killed; {} took the show over {:?} later (lease {LEASE_MS} ms)",
        other.id,
        killed.elapsed()
    );
    other.wait_for("main", Duration::from_secs(5), "dest live again", |v| {
        destination_state(v, "dest") == "live"
    });
    let over = poll_until(
        "the second show ending",
        Duration::from_secs(30),
        || entry(other, &second),
        |e| e["status"] != "in-progress",
    );
    assert_eq!(over["status"], "completed", "{over}");
}
