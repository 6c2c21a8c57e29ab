//! End to end: the real `prism` binary between a real ffmpeg publisher and
//! real RTMP receivers on loopback, with ffprobe and a full decode checking
//! every recording.

mod support;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::*;

const STREAM_KEY: &str = "live_e2e_8f2c1d9a";

fn config(rtmp_port: u16, destinations: &str) -> String {
    format!(
        r#"
[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[fanout]
connect_timeout_s = 3
write_timeout_s = 3

[[streams]]
id = "main"
key = "{STREAM_KEY}"
reconnect_grace_s = 0
{destinations}
"#
    )
}

/// A config with one destination: an ffmpeg receiver recording to `out.flv`.
fn one_receiver(scratch: &Scratch, rtmp_port: u16) -> (String, Ffmpeg, std::path::PathBuf) {
    let port = free_port();
    let out = scratch.file("out.flv");
    let receiver = Ffmpeg::receiver(port, "live", "k", &out);
    let cfg = config(
        rtmp_port,
        &destination("only", &format!("rtmp://127.0.0.1:{port}/live/k")),
    );
    (cfg, receiver, out)
}

fn destination(id: &str, url: &str) -> String {
    format!("\n  [[streams.destinations]]\n  id = \"{id}\"\n  url = \"{url}\"\n")
}

#[test]
fn relays_one_publish_to_three_receivers_that_decode_it() {
    require_ffmpeg();
    let scratch = Scratch::new("three");
    let rtmp_port = free_port();
    let ports = [free_port(), free_port(), free_port()];
    let keys = [
        "dest-key-one-1111",
        "dest-key-two-2222",
        "dest-key-three-3333",
    ];
    let mut destinations = String::new();
    let mut receivers = Vec::new();
    for (i, (port, key)) in ports.iter().zip(keys).enumerate() {
        destinations += &destination(
            &format!("d{i}"),
            &format!("rtmp://127.0.0.1:{port}/live/{key}"),
        );
        receivers.push(Ffmpeg::receiver(
            *port,
            "live",
            key,
            &scratch.file(&format!("d{i}.flv")),
        ));
    }
    let mut prism = Prism::start(&scratch, &config(rtmp_port, &destinations), rtmp_port);

    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 6, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "publisher: {}",
        publisher.log()
    );
    for receiver in &mut receivers {
        // Each receiver ends when Prism unpublishes and closes its session.
        receiver.wait(Duration::from_secs(15));
    }
    for i in 0..3 {
        let probe = assert_good_recording(&scratch.file(&format!("d{i}.flv")), 6.0);
        assert!(
            probe.format_tags.contains("prism_probe=relayed-whole"),
            "onMetaData lost the publisher's custom field: {}",
            probe.format_tags
        );
    }
    let (status, _) = prism.terminate();
    assert!(status.success());
    let log = prism.log();
    assert!(log.contains("publish started"), "{log}");
    assert_eq!(log.matches("destination live").count(), 3, "{log}");
    prism.assert_log_free_of(&[STREAM_KEY, keys[0], keys[1], keys[2]]);
}

#[test]
fn unknown_key_is_refused_and_the_log_names_the_address_not_the_key() {
    require_ffmpeg();
    let scratch = Scratch::new("unknown");
    let rtmp_port = free_port();
    let prism = Prism::start(&scratch, &config(rtmp_port, ""), rtmp_port);
    let wrong_key = "not_the_right_key_5150";
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(wrong_key), 2, scratch.file("pub.log"));
    let status = publisher.wait(Duration::from_secs(20));
    assert!(!status.success(), "a publish with an unknown key must fail");
    prism.wait_for_log(
        "publish refused: unknown stream key",
        Duration::from_secs(5),
    );
    let log = prism.log();
    let line = log
        .lines()
        .find(|l| l.contains("unknown stream key"))
        .unwrap();
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    prism.assert_log_free_of(&[wrong_key, STREAM_KEY]);
}

#[test]
fn a_second_publisher_on_a_live_key_is_refused_and_the_first_keeps_streaming() {
    require_ffmpeg();
    let scratch = Scratch::new("second");
    let rtmp_port = free_port();
    let (cfg, mut receiver, out) = one_receiver(&scratch, rtmp_port);
    let prism = Prism::start(&scratch, &cfg, rtmp_port);

    let mut first = Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 8, scratch.file("first.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let mut second = Ffmpeg::publisher(
        &prism.publish_url(STREAM_KEY),
        2,
        scratch.file("second.log"),
    );
    assert!(
        !second.wait(Duration::from_secs(20)).success(),
        "the second publisher must be refused"
    );
    assert!(
        first.wait(Duration::from_secs(30)).success(),
        "first publisher: {}",
        first.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 8.0);
    assert!(prism.log().contains("already live"));
    prism.assert_log_free_of(&[STREAM_KEY]);
}

#[test]
fn dead_and_stalled_destinations_do_not_hurt_the_others() {
    require_ffmpeg();
    let scratch = Scratch::new("faults");
    let rtmp_port = free_port();
    let good = [free_port(), free_port()];
    let closed_port = free_port(); // nothing listens here
    let black_hole = FakeDestination::black_hole();
    let stalling = FakeDestination::stalling_rtmp();

    let mut destinations = String::new();
    destinations += &destination(
        "closed",
        &format!("rtmp://127.0.0.1:{closed_port}/live/x-closed"),
    );
    destinations += &destination(
        "blackhole",
        &format!("rtmp://127.0.0.1:{}/live/x-hole", black_hole.port),
    );
    destinations += &destination(
        "stalled",
        &format!("rtmp://127.0.0.1:{}/live/x-stall", stalling.port),
    );
    let mut receivers = Vec::new();
    for (i, port) in good.iter().enumerate() {
        destinations += &destination(
            &format!("good{i}"),
            &format!("rtmp://127.0.0.1:{port}/live/g{i}"),
        );
        receivers.push(Ffmpeg::receiver(
            *port,
            "live",
            &format!("g{i}"),
            &scratch.file(&format!("g{i}.flv")),
        ));
    }
    // A small queue budget so the stalled destination goes over it quickly.
    let cfg =
        config(rtmp_port, &destinations).replace("[fanout]", "[fanout]\nqueue_budget_kib = 256");
    let mut prism = Prism::start(&scratch, &cfg, rtmp_port);

    // 2 Mbit/s, so the stalled destination fills its socket and queue within seconds.
    let mut publisher = Ffmpeg::publisher_at(
        &prism.publish_url(STREAM_KEY),
        12,
        Some(2000),
        scratch.file("pub.log"),
    );
    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "publisher: {}",
        publisher.log()
    );
    for receiver in &mut receivers {
        receiver.wait(Duration::from_secs(15));
    }
    let log = prism.log();
    for i in 0..2 {
        let recording = scratch.file(&format!("g{i}.flv"));
        assert_good_recording(&recording, 12.0);
        // The healthy destinations lost nothing: 12 s at 25 fps.
        let frames = video_frames(&recording);
        assert!(
            frames >= 299,
            "g{i} lost frames next to the faulty ones: {frames} of 300"
        );
    }
    // The stalled destination was held to its queue budget: frames dropped
    // (to keyframes), memory bounded, then a reconnect.
    let stalled_drops = log
        .lines()
        .filter(|l| l.contains("destination=stalled") && l.contains("accepted no data"))
        .any(|l| !l.contains("dropped_frames=0"));
    assert!(
        stalled_drops,
        "the stalled destination never dropped frames:\n{log}"
    );
    let rss_mib = prism.rss_kib() / 1024;
    assert!(
        rss_mib < 100,
        "prism holds {rss_mib} MiB: the stalled queue is not bounded"
    );
    assert!(
        black_hole.accepted.load(Ordering::Relaxed) >= 1,
        "the black hole was never tried"
    );
    assert!(
        stalling.accepted.load(Ordering::Relaxed) >= 1,
        "the stalling sink never got a publish"
    );
    for (id, why) in [
        ("closed", "connect to 127.0.0.1"),
        ("blackhole", "did not accept the publish"),
        ("stalled", "accepted no data"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("destination={id}")) && l.contains(why)),
            "no retry line for {id} saying {why:?}:\n{log}"
        );
    }
    let (status, took) = prism.terminate();
    assert!(
        status.success() && took < Duration::from_secs(5),
        "{status:?} after {took:?}"
    );
    prism.assert_log_free_of(&[STREAM_KEY, "x-closed", "x-hole", "x-stall"]);
}

#[test]
fn sigterm_mid_show_unpublishes_cleanly_and_exits_zero() {
    require_ffmpeg();
    let scratch = Scratch::new("sigterm");
    let rtmp_port = free_port();
    let (cfg, mut receiver, out) = one_receiver(&scratch, rtmp_port);
    let mut prism = Prism::start(&scratch, &cfg, rtmp_port);
    let _publisher = Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 30, scratch.file("pub.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));

    let (status, took) = prism.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    // The receiver ends because Prism unpublished and closed, not because it was killed.
    let started = Instant::now();
    receiver.wait(Duration::from_secs(10));
    assert!(started.elapsed() < Duration::from_secs(10));
    // What arrived before the shutdown is a whole, decodable recording.
    let probe = assert_good_recording(&out, probe_duration(&out));
    assert!(probe.duration >= 3.0, "{probe:?}");
}

#[test]
fn check_validates_and_reports_file_line_column() {
    let scratch = Scratch::new("check");
    let good = scratch.file("good.toml");
    std::fs::write(&good, config(1935, &destination("a", "rtmp://h/app/key"))).unwrap();
    let ok = check_config(&good);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let bad = scratch.file("bad.toml");
    let text = config(1935, &destination("a", "rtmp://h/app/key")).replace("url =", "uri =");
    std::fs::write(&bad, text).unwrap();
    let failed = check_config(&bad);
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    let expected = format!("{}:16:3: unknown field `uri`", bad.display());
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn a_destination_that_comes_up_late_joins_on_a_keyframe_with_headers() {
    require_ffmpeg();
    let scratch = Scratch::new("late");
    let rtmp_port = free_port();
    let port = free_port();
    let cfg = config(
        rtmp_port,
        &destination("late", &format!("rtmp://127.0.0.1:{port}/live/k")),
    );
    let prism = Prism::start(&scratch, &cfg, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 10, scratch.file("pub.log"));
    // Nothing listens yet: the destination fails and backs off.
    prism.wait_for_log("destination=late", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let out = scratch.file("late.flv");
    let mut receiver = Ffmpeg::receiver(port, "live", "k", &out);
    assert!(publisher.wait(Duration::from_secs(30)).success());
    receiver.wait(Duration::from_secs(15));

    // It joined mid-stream, so it got less than the whole show, but what it got
    // starts on a keyframe after the sequence headers: it decodes cleanly.
    let got = probe_duration(&out);
    assert!(got > 2.0 && got < 9.5, "late joiner recorded {got} s");
    assert_good_recording(&out, got);
    let first_video = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=flags",
        ])
        .args(["-read_intervals", "%+#1", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    let flags = String::from_utf8_lossy(&first_video.stdout);
    assert!(
        flags.trim_start().starts_with('K'),
        "first video packet flags {flags:?}"
    );
    assert!(prism.log().contains("destination live"));
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let scratch = Scratch::new("json");
    let rtmp_port = free_port();
    let cfg = format!("log_format = \"json\"\n{}", config(rtmp_port, ""));
    let mut prism = Prism::start(&scratch, &cfg, rtmp_port);
    prism.wait_for_log("rtmp ingest listening", Duration::from_secs(5));
    prism.terminate();
    let log = prism.log();
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        assert!(
            line.starts_with('{') && line.ends_with('}') && line.contains("\"level\":\"INFO\""),
            "not a JSON log line: {line}"
        );
    }
    assert!(log.contains("\"message\":\"stream configured\""), "{log}");
    prism.assert_log_free_of(&[STREAM_KEY]);
}

/// Forwards one connection from `listen` to `upstream` and records when each
/// read from Prism arrived and how big it was.
fn timing_proxy(
    listen: u16,
    upstream: u16,
) -> std::sync::Arc<std::sync::Mutex<Vec<(Instant, usize)>>> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = std::sync::Arc::clone(&arrivals);
    let listener = TcpListener::bind(("127.0.0.1", listen)).unwrap();
    std::thread::spawn(move || {
        let Ok((mut from_prism, _)) = listener.accept() else {
            return;
        };
        let Ok(mut to_receiver) = TcpStream::connect(("127.0.0.1", upstream)) else {
            return;
        };
        let (mut back_from, mut back_to) = (
            to_receiver.try_clone().unwrap(),
            from_prism.try_clone().unwrap(),
        );
        std::thread::spawn(move || std::io::copy(&mut back_from, &mut back_to));
        let mut buf = vec![0u8; 1 << 20];
        while let Ok(n) = from_prism.read(&mut buf) {
            if n == 0 || to_receiver.write_all(&buf[..n]).is_err() {
                break;
            }
            record.lock().unwrap().push((Instant::now(), n));
        }
        let _ = to_receiver.shutdown(std::net::Shutdown::Write);
    });
    arrivals
}

/// Bursts of arrivals (reads less than 30 ms apart belong to one), between
/// `skip` after the first and the last arrival; returns (bursts per second,
/// the longest gap between bursts).
fn bursts(arrivals: &[(Instant, usize)], skip: Duration) -> (f64, Duration) {
    let start = arrivals[0].0 + skip;
    let times: Vec<Instant> = arrivals
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at >= start)
        .collect();
    let mut count = 1;
    let mut longest = Duration::ZERO;
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        if gap >= Duration::from_millis(30) {
            count += 1;
            longest = longest.max(gap);
        }
    }
    let span = (*times.last().unwrap() - times[0]).as_secs_f64();
    (count as f64 / span, longest)
}

#[test]
fn a_latency_budget_sends_a_destination_its_messages_in_bursts_that_decode() {
    require_ffmpeg();
    let scratch = Scratch::new("max-delay");
    let rtmp_port = free_port();
    // "prompt" writes each message at once; "batched" holds up to 250 ms.
    let mut destinations = String::new();
    let mut receivers = Vec::new();
    let mut arrivals = Vec::new();
    for (id, budget) in [("prompt", Some(0)), ("batched", Some(250))] {
        let (proxy_port, receiver_port) = (free_port(), free_port());
        receivers.push(Ffmpeg::receiver(
            receiver_port,
            "live",
            id,
            &scratch.file(&format!("{id}.flv")),
        ));
        arrivals.push(timing_proxy(proxy_port, receiver_port));
        destinations += &destination(id, &format!("rtmp://127.0.0.1:{proxy_port}/live/{id}"));
        if let Some(ms) = budget {
            destinations += &format!("  max_delay_ms = {ms}\n");
        }
    }
    let mut prism = Prism::start(&scratch, &config(rtmp_port, &destinations), rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 8, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "publisher: {}",
        publisher.log()
    );
    for receiver in &mut receivers {
        receiver.wait(Duration::from_secs(15));
    }
    for id in ["prompt", "batched"] {
        assert_good_recording(&scratch.file(&format!("{id}.flv")), 8.0);
    }
    // Past the replayed GOP and the first second: steady state.
    let (prompt_rate, _) = bursts(&arrivals[0].lock().unwrap(), Duration::from_secs(2));
    let (batched_rate, longest) = bursts(&arrivals[1].lock().unwrap(), Duration::from_secs(2));
    eprintln!(
        "bursts per second: prompt {prompt_rate:.1}, batched {batched_rate:.1} (longest gap {} ms)",
        longest.as_millis()
    );
    // The publisher sends 25 video and ~43 audio messages a second.
    assert!(
        prompt_rate > 15.0,
        "prompt destination: {prompt_rate:.1} bursts/s"
    );
    assert!(
        batched_rate <= 5.5,
        "a 250 ms budget should write at most about 4 times a second: {batched_rate:.1} bursts/s"
    );
    assert!(
        longest < Duration::from_millis(600),
        "messages were held past their budget: a {} ms gap",
        longest.as_millis()
    );
    let (status, _) = prism.terminate();
    assert!(status.success());
}

/// Time on a CPU, in ns, of each thread of process `pid` whose name
/// starts with `prefix`: from `schedstat` (exact), or where the kernel has
/// none from `stat`'s user + system clock ticks (10 ms each, so a thread
/// that worked less than that reads as 0).
fn thread_cpu_ns(pid: u32, prefix: &str) -> Vec<u64> {
    let mut cpu_ns = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).ok();
        if let Some(ns) = schedstat
            .as_deref()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|f| f.parse::<u64>().ok())
        {
            cpu_ns.push(ns);
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map_or("", |(_, rest)| rest)
            .split_whitespace()
            .collect();
        let field = |n: usize| {
            fields
                .get(n)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // USER_HZ is 100 on every Linux architecture Prism targets.
        cpu_ns.push((field(11) + field(12)) * 10_000_000);
    }
    cpu_ns
}

#[test]
fn with_two_threads_a_stream_of_32_destinations_is_spread_over_both_and_all_decode() {
    require_ffmpeg();
    let scratch = Scratch::new("spread");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let rtmp_port = free_port();
    let mut destinations = String::new();
    for d in 0..32 {
        destinations += &destination(
            &format!("d{d}"),
            &format!("rtmp://127.0.0.1:{}/live/d{d}", nginx.port),
        );
    }
    let config = config(rtmp_port, &destinations) + "\n[runtime]\nworker_threads = 2\n";
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::hd_publisher(&prism.publish_url(STREAM_KEY), 8, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "publisher: {}",
        publisher.log()
    );
    let fanout_threads = thread_cpu_ns(prism.pid(), "prism-fanout");
    eprintln!("fan-out thread CPU: {fanout_threads:?} ns");
    assert_eq!(
        fanout_threads.len(),
        1,
        "worker_threads = 2 starts one fan-out thread"
    );
    // A fan-out thread that only waited for jobs ran 0.05 ms here (8
    // destinations, none spread); pushing 16 destinations' share of the
    // stream, 13 ms. Clock ticks (10 ms) could not tell them apart.
    assert!(
        fanout_threads[0] >= 2_000_000,
        "the fan-out thread did no work: the stream was not spread"
    );
    let (status, _) = prism.terminate();
    assert!(status.success());
    // nginx closes each recording when its publish ends.
    std::thread::sleep(Duration::from_secs(1));
    for d in 0..32 {
        assert_good_recording(&nginx.dir.join(format!("d{d}.flv")), 8.0);
    }
}
