//! End to end: two encoders, one show. A primary at 1280x720 and a backup
//! (`?backup=1`) at 640x360 publish together to one stream whose only
//! destination, an ffmpeg receiver, accepts exactly one connection: a
//! reconnect would show as a second file. The primary dies (killed, or
//! frozen with its socket open); the backup takes over; a new primary comes
//! back and, after the hold-off, takes over again. The recording decodes
//! whole, its timestamps only grow, no video gap reaches 1 s, and its
//! picture widths run 1280 → 640 → 1280.

mod support;

use std::time::Duration;

use support::*;

const KEY: &str = "live_failover_5e4d3c2b";

struct Show {
    scratch: Scratch,
    prism: Prism,
    receiver: Ffmpeg,
    out: std::path::PathBuf,
    srt_port: u16,
}

fn start(name: &str) -> Show {
    start_with(name, "failback_after_s = 3\n", "")
}

/// A show with more lines for the stream (`stream_extra`) and for the top
/// of the config (`top_extra`).
fn start_with(name: &str, stream_extra: &str, top_extra: &str) -> Show {
    require_ffmpeg();
    let scratch = Scratch::new(name);
    let (rtmp_port, srt_port, sink_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("show.flv");
    let receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "{top_extra}[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 2\n{stream_extra}\n\
         [[streams.destinations]]\nid = \"only\"\nurl = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    Show {
        scratch,
        prism,
        receiver,
        out,
        srt_port,
    }
}

/// The backup encoder: the same synthetic show at 640x360, over RTMP or SRT.
fn backup(show: &Show, srt: bool, seconds: u32) -> Ffmpeg {
    let log = show.scratch.file("backup.log");
    if srt {
        let url = format!("srt://127.0.0.1:{}?streamid={KEY}?backup=1", show.srt_port);
        return Ffmpeg::srt_publisher_with_output_options(&url, seconds, &["-s", "640x360"], log);
    }
    let url = format!("{}?backup=1", show.prism.publish_url(KEY));
    Ffmpeg::publisher_with_output_options(&url, seconds, &["-s", "640x360"], log)
}

fn primary(show: &Show, name: &str, seconds: u32) -> Ffmpeg {
    let log = show.scratch.file(&format!("{name}.log"));
    Ffmpeg::hd_publisher(&show.prism.publish_url(KEY), seconds, log)
}

/// Waits until the log says the stream switched to `source` `n` times.
fn wait_for_switches(show: &Show, source: &str, n: usize, within: Duration) -> Duration {
    let needle = format!("destinations continue from the {source}");
    show.prism.wait_for_log_count(&needle, n, within)
}

/// The primary dies (`freeze`: SIGSTOP, its socket left open; otherwise
/// killed), the backup carries the show, a new primary takes it back; then
/// both end and the receiver's one recording is checked.
fn fail_over_and_back(name: &str, srt_backup: bool, freeze: bool) {
    let mut show = start(name);
    let mut first = primary(&show, "first", 60);
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    let mut backup = backup(&show, srt_backup, 60);
    show.prism
        .wait_for_log("ready to take over", Duration::from_secs(10));
    // Another picture takes over all the same; the operator is told.
    show.prism.wait_for_log(
        "the backup differs from the primary: resolution 1280x720 vs 640x360",
        Duration::from_secs(10),
    );
    std::thread::sleep(Duration::from_secs(4));

    if freeze {
        first.signal("STOP");
    } else {
        first.kill();
    }
    let failover = wait_for_switches(&show, "backup", 1, Duration::from_secs(5));
    println!("on the backup {failover:?} after the primary died");
    if freeze {
        assert!(failover <= Duration::from_secs(2), "{failover:?}");
    }
    std::thread::sleep(Duration::from_secs(4));
    if freeze {
        first.kill();
    }

    let mut second = primary(&show, "second", 8);
    let failback = wait_for_switches(&show, "primary", 1, Duration::from_secs(15));
    println!("back on the primary {failback:?} after it returned");
    // The backup leaves first: the show ends with the primary on air.
    backup.kill();
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    show.receiver.wait(Duration::from_secs(20));

    let log = show.prism.log();
    assert_eq!(
        log.matches("destination live").count(),
        1,
        "the destination reconnected:\n{log}"
    );
    let duration = probe_duration(&show.out);
    assert_good_recording(&show.out, duration);
    let widths = width_sequence(&show.out);
    assert_eq!(widths, [1280, 640, 1280], "{log}");
    let gap = max_video_gap(&show.out);
    println!("largest video gap at the destination: {gap:?}");
    assert!(gap < Duration::from_secs(1), "a {gap:?} video gap");
    show.prism.assert_log_free_of(&[KEY]);
}

#[test]
fn a_killed_primary_hands_the_show_to_the_backup_and_takes_it_back() {
    fail_over_and_back("failover-kill", false, false);
}

#[test]
fn a_frozen_primary_gives_way_to_the_backup_within_2_s() {
    fail_over_and_back("failover-freeze", false, true);
}

#[test]
fn an_srt_backup_carries_an_rtmp_primarys_show() {
    fail_over_and_back("failover-srt", true, false);
}

const TOKEN: &str = "failover-token-0123456789";

/// What the API says of the stream: the source on air, the operator's
/// choice, and each connected source's role and whether it is on air.
fn sources(admin_port: u16) -> (String, String, Vec<(String, bool)>) {
    let view = api_json(admin_port, "/v1/streams/main", Some(TOKEN));
    let sources = view["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["role"].as_str().unwrap().to_string(),
                s["on_air"].as_bool().unwrap(),
            )
        })
        .collect();
    (
        view["active_source"].to_string(),
        view["source_choice"].as_str().unwrap().to_string(),
        sources,
    )
}

fn set_source(admin_port: u16, source: &str) -> (u16, String) {
    http(
        admin_port,
        "PUT",
        "/v1/streams/main/source",
        Some(TOKEN),
        &format!("{{\"source\": \"{source}\"}}"),
    )
}

/// The backup alone goes on air; with `failback = false` a primary that
/// joins does not take over by itself, until an operator forces it through
/// the API; the API, the events' metrics and the log say which is on air.
#[test]
fn the_backup_alone_goes_on_air_and_the_api_forces_a_source() {
    let (admin_port, metrics_port) = (free_port(), free_port());
    let mut show = start_with(
        "failover-api",
        "failback = false\nfailback_after_s = 1\n",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n"
        ),
    );
    let mut backup = backup(&show, false, 30);
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    assert_eq!(
        sources(admin_port),
        (
            "\"backup\"".into(),
            "auto".into(),
            vec![("backup".into(), true)]
        )
    );

    let mut first = primary(&show, "first", 30);
    show.prism
        .wait_for_log("ready to take over", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        sources(admin_port).2,
        [("primary".into(), false), ("backup".into(), true)],
        "failback = false: the backup stays"
    );

    let (status, body) = set_source(admin_port, "sideways");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, body) = set_source(admin_port, "primary");
    assert_eq!(status, 200, "{body}");
    wait_for_switches(&show, "primary", 1, Duration::from_secs(5));
    assert_eq!(
        sources(admin_port),
        (
            "\"primary\"".into(),
            "primary".into(),
            vec![("primary".into(), true), ("backup".into(), false)]
        )
    );
    let (status, _) = set_source(admin_port, "auto");
    assert_eq!(status, 200);

    first.kill();
    wait_for_switches(&show, "backup", 1, Duration::from_secs(5));
    let (_, text) = http_get(metrics_port, "/metrics");
    let switches = |reason| {
        metric(
            &text,
            "prism_stream_source_switches_total",
            &[("stream", "main"), ("reason", reason)],
        )
    };
    assert_eq!(switches("forced"), Some(1.0), "{text}");
    assert_eq!(switches("disconnect"), Some(1.0), "{text}");
    assert_eq!(
        metric(
            &text,
            "prism_stream_active_source",
            &[("stream", "main"), ("source", "backup")]
        ),
        Some(1.0),
        "{text}"
    );
    backup.kill();
    show.receiver.wait(Duration::from_secs(20));
    let widths = width_sequence(&show.out);
    assert_eq!(widths, [640, 1280, 640]);
    assert_good_recording(&show.out, probe_duration(&show.out));
}

/// A pushed primary with a pulled backup (`backup_pull`, from nginx-rtmp):
/// the pull stays off air while the primary streams, and carries the show
/// when the primary dies.
#[test]
fn a_pulled_backup_carries_a_pushed_primarys_show() {
    require_ffmpeg();
    let scratch = Scratch::new("failover-pull");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let origin = format!("rtmp://127.0.0.1:{}/live/cam", nginx.port);
    let mut show = start_with(
        "failover-pull-relay",
        &format!("backup_pull = \"{origin}\"\n"),
        "",
    );
    let mut first = primary(&show, "first", 60);
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    // The backup's encoder starts after the primary: nginx-rtmp serves the
    // pull from then on, and the pulled backup waits off air.
    let mut source = Ffmpeg::publisher_with_output_options(
        &origin,
        60,
        &["-s", "640x360"],
        scratch.file("origin.log"),
    );
    show.prism
        .wait_for_log("ready to take over", Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(3));
    first.kill();
    wait_for_switches(&show, "backup", 1, Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(3));
    source.kill();
    show.receiver.wait(Duration::from_secs(30));
    let widths = width_sequence(&show.out);
    assert_eq!(widths, [1280, 640], "{}", show.prism.log());
    assert_good_recording(&show.out, probe_duration(&show.out));
    assert!(max_video_gap(&show.out) < Duration::from_secs(1));
}
