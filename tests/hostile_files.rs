//! End to end: files that configuration names, and the cluster's version,
//! as whoever can write the TOML, call the API or write Redis would set
//! them. A FIFO (an open that never returns), `/dev/zero` (endless bytes)
//! and a file over `max_standby_mib` as a stream's standby clip, through the
//! API, a reload, `--check` and a cluster's shared document, are refused
//! with an error that names the file and what it is; every answer comes
//! within seconds, `/healthz` keeps answering and memory stays flat. A
//! version of 2^64-1 in Redis is refused and reported, `prism import` says
//! what to do, and the node never writes it back once it is repaired.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const TOKEN: &str = "hostile-files-token-0123456789";
const KEY: &str = "live_hostile_files_1b2c";

/// A FIFO, made with mkfifo(1).
fn fifo(scratch: &Scratch) -> PathBuf {
    let path = scratch.file("clip.fifo");
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    path
}

/// A sparse regular file of `mib` MiB (no disk is used).
fn huge_file(scratch: &Scratch, mib: u64) -> PathBuf {
    let path = scratch.file("huge.mp4");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(mib << 20)
        .unwrap();
    path
}

/// An API call that must be refused with `status` and a message holding
/// `said`, within a few seconds.
fn refused(port: u16, method: &str, path: &str, body: &str, status: u16, said: &str) {
    let asked = Instant::now();
    let (got, answer) = http(port, method, path, Some(TOKEN), body);
    let took = asked.elapsed();
    println!("{method} {path} {body}: {got} in {took:?}: {answer}");
    assert_eq!(got, status, "{answer}");
    assert!(answer.contains(said), "{said:?} not in {answer}");
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}

fn standby_patch(file: &Path) -> String {
    serde_json::json!({ "standby_file": file }).to_string()
}

#[test]
fn fifos_devices_and_huge_files_are_refused_as_standby_clips_without_blocking() {
    let scratch = Scratch::new("hostile-files");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "max_standby_mib = 8\n\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{KEY}\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let fifo = fifo(&scratch);
    let huge = huge_file(&scratch, 9);
    let rss_before = prism.rss_kib();

    let patch = "/v1/streams/show";
    refused(
        admin_port,
        "PATCH",
        patch,
        &standby_patch(&fifo),
        422,
        "is a FIFO, not a regular file",
    );
    for _ in 0..5 {
        refused(
            admin_port,
            "PATCH",
            patch,
            &standby_patch(Path::new("/dev/zero")),
            422,
            "/dev/zero is a character device, not a regular file",
        );
    }
    refused(
        admin_port,
        "PATCH",
        patch,
        &standby_patch(&huge),
        422,
        "over the limit of 8388608 bytes (max_standby_mib)",
    );
    let rss_after = prism.rss_kib();
    println!("RSS {rss_before} KiB before, {rss_after} KiB after");
    assert!(
        rss_after < rss_before + 32 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The same names in the file: a reload refuses it and keeps running;
    // --check names the file and the line.
    let with_fifo = config.replace(
        &format!("key = \"{KEY}\"\n"),
        &format!("key = \"{KEY}\"\nstandby_file = \"{}\"\n", fifo.display()),
    );
    std::fs::write(scratch.file("prism.toml"), &with_fifo).unwrap();
    refused(admin_port, "POST", "/v1/reload", "", 422, "is a FIFO");
    prism.signal("HUP");
    prism.wait_for_log("is a FIFO, not a regular file", Duration::from_secs(5));
    let checked = check_config(&scratch.file("prism.toml"));
    let said = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(2), "{said}");
    assert!(
        said.contains("prism.toml:") && said.contains("is a FIFO"),
        "{said}"
    );

    let (status, _) = http(admin_port, "GET", "/healthz", None, "");
    assert_eq!(status, 200);
    let (status, view) = http(admin_port, "GET", "/v1/streams/show", Some(TOKEN), "");
    assert_eq!(status, 200, "{view}");
}

fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (Debian's redis-tools, which redis-server brings)");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn a_hostile_cluster_document_and_an_absurd_version_are_refused_and_reported() {
    let scratch = Scratch::new("hostile-cluster");
    let redis = RedisServer::start(&scratch.file("redis"));
    let (rtmp_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [cluster]\nredis = \"{}\"\nnode_id = \"n1\"\n",
        redis.url()
    );
    // The streams are imported as an operator would.
    let streams = scratch.file("streams.toml");
    std::fs::write(
        &streams,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:1\"\n\n[[streams]]\nid = \"show\"\nkey = \"{KEY}\"\n"
        ),
    )
    .unwrap();
    let import = |file: &Path| {
        Command::new(env!("CARGO_BIN_EXE_prism"))
            .args(["import", "--config"])
            .arg(file)
            .args(["--redis", &redis.url()])
            .output()
            .unwrap()
    };
    assert!(import(&streams).status.success());
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let stream_listed = || {
        let (status, body) = http(admin_port, "GET", "/v1/streams", Some(TOKEN), "");
        status == 200 && body.contains("\"show\"")
    };
    let started = Instant::now();
    while !stream_listed() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            prism.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Whoever can write Redis names a FIFO and /dev/zero as clips.
    let fifo = fifo(&scratch);
    for clip in [fifo.display().to_string(), "/dev/zero".to_string()] {
        let document =
            format!("[[streams]]\nid = \"show\"\nkey = \"{KEY}\"\nstandby_file = \"{clip}\"\n");
        redis_cli(&redis, &["SET", "prism:streams", &document]);
        let version = redis_cli(&redis, &["INCR", "prism:streams:version"]);
        redis_cli(&redis, &["PUBLISH", "prism:streams:changes", &version]);
    }
    prism.wait_for_log("is a FIFO, not a regular file", Duration::from_secs(5));
    prism.wait_for_log(
        "is a character device, not a regular file",
        Duration::from_secs(5),
    );
    let asked = Instant::now();
    let (status, _) = http(metrics_port, "GET", "/healthz", None, "");
    assert_eq!(status, 200);
    assert!(asked.elapsed() < Duration::from_secs(1));

    // A version of 2^64-1: refused, reported, never adopted.
    let repaired = redis_cli(&redis, &["GET", "prism:streams:version"]);
    redis_cli(
        &redis,
        &["SET", "prism:streams:version", "18446744073709551615"],
    );
    redis_cli(
        &redis,
        &["PUBLISH", "prism:streams:changes", "18446744073709551615"],
    );
    std::thread::sleep(Duration::from_secs(2));
    let cluster = api_json(admin_port, "/v1/cluster", Some(TOKEN));
    assert!(
        cluster["redis_error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a version"),
        "{cluster}"
    );
    let (status, body) = http(
        admin_port,
        "POST",
        "/v1/streams",
        Some(TOKEN),
        r#"{"id": "other", "key": "live_other_key_0123"}"#,
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("not a version") && !body.contains("unreachable"),
        "{body}"
    );
    let imported = import(&streams);
    let said = String::from_utf8_lossy(&imported.stderr).to_string()
        + &String::from_utf8_lossy(&imported.stdout);
    assert!(!imported.status.success(), "{said}");
    assert!(
        said.contains("nothing was imported") && said.contains("not a version"),
        "{said}"
    );

    // The operator sets it back: the node never writes 2^64-1 again.
    redis_cli(&redis, &["SET", "prism:streams:version", &repaired]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        redis_cli(&redis, &["GET", "prism:streams:version"]),
        repaired
    );
    assert!(import(&streams).status.success());
    let log = prism.log();
    assert!(
        log.contains("refusing the shared configuration's version"),
        "{log}"
    );
    assert!(!log.contains("panic"), "{log}");
}
