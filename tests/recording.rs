//! End to end: recordings of what the destinations get, made while a real
//! ffmpeg publishes through the real daemon, read back with ffprobe and a
//! full ffmpeg decode: segments that decode and continue one another, the
//! record switch through the API, and a crash mid-segment.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_record_5e6f7a8b";
const TOKEN: &str = "record-token-1a2b3c4d5e";

fn config(rtmp_port: u16, admin_port: u16, record: &str, stream: &str) -> String {
    format!(
        r#"[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[record]
path = "rec"
{record}

[[streams]]
id = "main"
key = "{KEY}"
{stream}
"#
    )
}

fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(port, method, path, Some(TOKEN), body);
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

fn recordings(port: u16) -> Vec<serde_json::Value> {
    let (status, json) = api(port, "GET", "/v1/recordings?stream=main", "");
    assert_eq!(status, 200, "{json}");
    json.as_array().unwrap().clone()
}

fn wait_until_live(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, stream) = api(port, "GET", "/v1/streams/main", "");
        if stream["live"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "never live: {stream}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the stream's recorder writes nothing (the session ended or
/// recording was switched off).
fn wait_until_not_writing(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (_, stream) = api(port, "GET", "/v1/streams/main", "");
        if stream["recording"]["current"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "still recording: {stream}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn file_of(scratch: &Scratch, recording: &serde_json::Value) -> PathBuf {
    scratch
        .path
        .join("rec")
        .join(recording["file"].as_str().unwrap())
}

#[test]
fn a_show_is_recorded_in_segments_that_decode_and_continue_while_a_destination_gets_it_all() {
    require_ffmpeg();
    let scratch = Scratch::new("recording");
    let (rtmp_port, admin_port, dest_port) = (free_port(), free_port(), free_port());
    let text = config(
        rtmp_port,
        admin_port,
        "segment_s = 8",
        &format!(
            "record = true\n\n  [[streams.destinations]]\n  id = \"dest\"\n  url = \"rtmp://127.0.0.1:{dest_port}/live/copy\"\n"
        ),
    );
    let destination_file = scratch.file("destination.flv");
    let mut receiver = Ffmpeg::receiver(dest_port, "live", "copy", &destination_file);
    let prism = Prism::start(&scratch, &text, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(KEY), 20, scratch.file("publisher.log"));
    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    wait_until_not_writing(admin_port, Duration::from_secs(15));
    receiver.wait(Duration::from_secs(15));

    // The destination got the whole show meanwhile.
    assert_good_recording(&destination_file, 20.0);

    let listed = recordings(admin_port);
    assert!(listed.len() >= 2, "{listed:?}");
    let mut total = 0.0;
    let mut previous_end: Option<f64> = None;
    for recording in &listed {
        assert_eq!(recording["stream"], "main");
        assert_eq!(recording["format"], "fmp4");
        assert_eq!(recording["complete"], true, "{recording}");
        let path = file_of(&scratch, recording);
        assert!(
            path.starts_with(scratch.path.join("rec/main")),
            "{}",
            path.display()
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            recording["bytes"].as_u64().unwrap()
        );
        assert_decodes(&path, &[]);
        let (start, duration) = packet_span(&path);
        total += duration;
        // The API's length is the file's.
        let listed_duration = recording["duration_s"].as_f64().unwrap();
        assert!(
            (listed_duration - duration).abs() < 0.5,
            "{listed_duration} vs {duration}"
        );
        // Each segment starts where the last ended: one timeline.
        if let Some(end) = previous_end {
            assert!(
                (start - end).abs() < 0.1,
                "a segment starts at {start} s, the last ended at {end} s"
            );
        }
        previous_end = Some(start + duration);
    }
    assert!(
        (total - 20.0).abs() <= 2.0,
        "the segments hold {total} s of a 20 s show"
    );

    // A download, whole and resumed from the middle, is the file.
    let first = &listed[0];
    let id = first["id"].as_str().unwrap();
    let bytes = std::fs::read(file_of(&scratch, first)).unwrap();
    let whole = download(admin_port, id, None);
    assert_eq!(whole.status, 200);
    assert_eq!(whole.body, bytes);
    let half = bytes.len() / 2;
    let rest = download(admin_port, id, Some(&format!("bytes={half}-")));
    assert_eq!(rest.status, 206);
    assert_eq!(
        rest.content_range.as_deref(),
        Some(format!("bytes {half}-{}/{}", bytes.len() - 1, bytes.len()).as_str())
    );
    assert_eq!(rest.body, bytes[half..]);
    let past = download(admin_port, id, Some(&format!("bytes={}-", bytes.len())));
    assert_eq!(past.status, 416);
    assert_eq!(
        download(admin_port, "main-20200101-000000", None).status,
        404
    );
    assert_eq!(download(admin_port, "..%2Fprism.toml", None).status, 404);

    // Deleted, it is gone from the list and the disk.
    let (status, json) = api(admin_port, "DELETE", &format!("/v1/recordings/{id}"), "");
    assert_eq!(status, 200, "{json}");
    assert!(!file_of(&scratch, first).exists());
    assert_eq!(recordings(admin_port).len(), listed.len() - 1);
}

#[test]
fn recording_switched_on_and_off_through_the_api_makes_one_recording_of_that_span() {
    require_ffmpeg();
    let scratch = Scratch::new("record-switch");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(&scratch, &config(rtmp_port, admin_port, "", ""), rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(KEY), 16, scratch.file("publisher.log"));
    wait_until_live(admin_port, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    let (status, stream) = api(
        admin_port,
        "PUT",
        "/v1/streams/main/record",
        r#"{"on": true}"#,
    );
    assert_eq!(status, 200, "{stream}");
    assert_eq!(stream["record"], true);
    // The window on the media's own clock: an encoder that fell behind real
    // time and caught up sends more than 8 s of media in 8 s.
    let switched_on = stream["newest_timestamp_ms"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let (status, stream) = api(
        admin_port,
        "PUT",
        "/v1/streams/main/record",
        r#"{"on": false}"#,
    );
    assert_eq!(status, 200, "{stream}");
    assert!(stream["recording"].is_null(), "{stream}");
    let switched_off = stream["newest_timestamp_ms"].as_u64().unwrap();
    let window = (switched_off - switched_on) as f64 / 1000.0;
    // The switch is persisted like every change.
    let file = std::fs::read_to_string(scratch.file("prism.toml")).unwrap();
    assert!(file.contains("record = false"), "{file}");
    let (status, json) = api(
        admin_port,
        "PUT",
        "/v1/streams/main/record",
        r#"{"on": "yes"}"#,
    );
    assert_eq!(status, 400, "{json}");

    let listed = recordings(admin_port);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let recording = &listed[0];
    assert_eq!(recording["complete"], true);
    let path = file_of(&scratch, recording);
    assert_decodes(&path, &[]);
    // From the keyframe of the GOP in progress at the switch (the recorder
    // is primed with it, as a destination is; GOPs of 1 s) to the stop.
    let (_, duration) = packet_span(&path);
    assert!(
        (window - 0.5..=window + 1.1).contains(&duration),
        "{duration} s recorded of {window} s of media switched on"
    );
    assert!(publisher.wait(Duration::from_secs(20)).success());
}

#[test]
fn a_crash_mid_segment_leaves_a_file_that_plays_up_to_its_last_fragment() {
    require_ffmpeg();
    let scratch = Scratch::new("record-crash");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(
        &scratch,
        &config(rtmp_port, admin_port, "segment_s = 600", "record = true"),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    let _publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 30, scratch.file("publisher.log"));
    prism.wait_for_log("recording to a new file", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(7));
    let listed = recordings(admin_port);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["complete"], false, "being written");
    let path = file_of(&scratch, &listed[0]);
    let status = Command::new("kill")
        .args(["-KILL", &prism.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300));

    assert_decodes(&path, &[]);
    let (_, duration) = packet_span(&path);
    assert!(
        duration >= 4.0,
        "{duration} s survived a crash 7 s into the segment"
    );
    assert!(duration <= 8.0, "{duration} s");
}

struct Download {
    status: u16,
    content_range: Option<String>,
    body: Vec<u8>,
}

/// `GET /v1/recordings/{id}` with the token and an optional `Range`.
fn download(port: u16, id: &str, range: Option<&str>) -> Download {
    fetch(port, &format!("/v1/recordings/{id}"), Some(TOKEN), range)
}

/// `GET path`, as raw bytes.
fn fetch(port: u16, path: &str, token: Option<&str>, range: Option<&str>) -> Download {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}{range}\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_range = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-range")
            .then(|| value.trim().to_string())
    });
    Download {
        status,
        content_range,
        body: response[split + 4..].to_vec(),
    }
}

/// A primary at 1280x720 dies and its backup at 640x360 carries the show:
/// the recording continues on one timeline, in a new file where the codec
/// parameters change, each file decoding whole at its own resolution.
#[test]
fn a_recording_across_a_failover_continues_in_a_new_file_at_the_new_resolution() {
    require_ffmpeg();
    let scratch = Scratch::new("record-failover");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(
        &scratch,
        &config(
            rtmp_port,
            admin_port,
            "",
            "record = true\nreconnect_grace_s = 2",
        ),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut primary =
        Ffmpeg::hd_publisher(&prism.publish_url(KEY), 60, scratch.file("primary.log"));
    prism.wait_for_log("recording to a new file", Duration::from_secs(10));
    let backup_url = format!("{}?backup=1", prism.publish_url(KEY));
    let mut backup = Ffmpeg::publisher_with_output_options(
        &backup_url,
        8,
        &["-s", "640x360"],
        scratch.file("backup.log"),
    );
    prism.wait_for_log("ready to take over", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    primary.kill();
    prism.wait_for_log(
        "destinations continue from the backup",
        Duration::from_secs(5),
    );
    assert!(
        backup.wait(Duration::from_secs(20)).success(),
        "{}",
        backup.log()
    );
    wait_until_not_writing(admin_port, Duration::from_secs(15));

    let listed = recordings(admin_port);
    assert_eq!(listed.len(), 2, "{listed:?}");
    let mut previous_end = None;
    for (recording, width) in listed.iter().zip([1280, 640]) {
        assert_eq!(recording["complete"], true, "{recording}");
        let path = file_of(&scratch, recording);
        assert_decodes(&path, &[]);
        assert_eq!(width_sequence(&path), [width], "{}", path.display());
        let (start, duration) = packet_span(&path);
        if let Some(end) = previous_end {
            // The backup's first keyframe after the switch: no overlap, and
            // no more than the failover's own gap.
            assert!(start >= end - 0.05 && start - end < 2.0, "{end} → {start}");
        }
        previous_end = Some(start + duration);
    }
}

/// Mounts a tmpfs of `mib` MiB on `path` (the test runs as root, as CI
/// does) and unmounts it when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(path: &Path, mib: u32) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("mount is installed");
        assert!(
            status.success(),
            "mounting a {mib} MiB tmpfs on {} failed: the disk-full test runs as root (as CI does)",
            path.display()
        );
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn recorder_state(port: u16) -> serde_json::Value {
    api(port, "GET", "/v1/streams/main", "").1["recording"].clone()
}

fn wait_for_recorder(
    port: u16,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_until(
        "the recorder's state",
        within,
        || recorder_state(port),
        done,
    )
}

/// The disk fills mid-show: the destination loses nothing, the recording
/// reports the error (API, metrics), and it resumes by itself once space
/// is freed.
#[test]
fn a_full_disk_stops_the_recording_not_the_show_and_recording_resumes_when_space_is_freed() {
    require_ffmpeg();
    let scratch = Scratch::new("record-disk-full");
    let (rtmp_port, admin_port, dest_port, metrics_port) =
        (free_port(), free_port(), free_port(), free_port());
    let disk = SmallDisk::mount(&scratch.path.join("rec"), 2);
    let text = config(
        rtmp_port,
        admin_port,
        "",
        &format!(
            "record = true\n\n  [[streams.destinations]]\n  id = \"dest\"\n  url = \"rtmp://127.0.0.1:{dest_port}/live/copy\"\n"
        ),
    )
    .replace("[record]", &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n[record]"));
    let destination_file = scratch.file("destination.flv");
    let mut receiver = Ffmpeg::receiver(dest_port, "live", "copy", &destination_file);
    let prism = Prism::start(&scratch, &text, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher =
        Ffmpeg::hd_publisher(&prism.publish_url(KEY), 24, scratch.file("publisher.log"));

    let failed = wait_for_recorder(admin_port, Duration::from_secs(15), |r| {
        r["state"] == "failed"
    });
    assert_eq!(failed["last_error"]["kind"], "disk_full", "{failed}");
    let (_, metrics) = http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("prism_recording_errors_total{stream=\"main\",kind=\"disk_full\"}"),
        "{metrics}"
    );
    // The operator frees the space.
    for recording in recordings(admin_port) {
        let (status, json) = api(
            admin_port,
            "DELETE",
            &format!("/v1/recordings/{}", recording["id"].as_str().unwrap()),
            "",
        );
        assert_eq!(status, 200, "{json}");
    }
    let resumed = wait_for_recorder(admin_port, Duration::from_secs(15), |r| {
        r["state"] == "recording" && r["current"]["bytes"].as_u64().unwrap_or(0) > 0
    });
    assert!(resumed["dropped_frames"].as_u64().unwrap() > 0, "{resumed}");

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    // The show lost nothing.
    assert_good_recording(&destination_file, 24.0);
    drop(prism);
    drop(disk);
}

/// With `max_gib` small, completed files past the size go, the oldest
/// first, as soon as each new file completes; the newest stay.
#[test]
fn retention_deletes_the_oldest_recordings_first_to_stay_within_max_gib() {
    require_ffmpeg();
    let scratch = Scratch::new("record-retention");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let max_bytes = 2 * 1024 * 1024;
    let prism = Prism::start(
        &scratch,
        &config(
            rtmp_port,
            admin_port,
            "segment_s = 2\nmax_gib = 0.001953125",
            "record = true",
        ),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher =
        Ffmpeg::hd_publisher(&prism.publish_url(KEY), 16, scratch.file("publisher.log"));
    let mut seen = std::collections::BTreeSet::new();
    while publisher.is_running() {
        for recording in recordings(admin_port) {
            seen.insert(recording["id"].as_str().unwrap().to_string());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        publisher.wait(Duration::from_secs(5)).success(),
        "{}",
        publisher.log()
    );
    wait_until_not_writing(admin_port, Duration::from_secs(15));
    for recording in recordings(admin_port) {
        seen.insert(recording["id"].as_str().unwrap().to_string());
    }
    // The last file's completion wakes the sweep: give it a moment.
    std::thread::sleep(Duration::from_secs(1));
    let kept: Vec<String> = recordings(admin_port)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let kept_bytes: u64 = recordings(admin_port)
        .iter()
        .map(|r| r["bytes"].as_u64().unwrap())
        .sum();
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(kept.len() < seen.len(), "nothing was deleted: {kept:?}");
    assert!(
        kept_bytes <= max_bytes,
        "{kept_bytes} bytes kept of at most {max_bytes}"
    );
    let newest: Vec<String> = seen.iter().rev().take(kept.len()).rev().cloned().collect();
    assert_eq!(kept, newest, "the oldest go first");
    for id in seen.iter().filter(|id| !kept.contains(id)) {
        assert!(!scratch
            .path
            .join("rec/main")
            .join(format!("{id}.mp4"))
            .exists());
    }
    prism.wait_for_log("recording deleted by retention", Duration::from_secs(1));
}
