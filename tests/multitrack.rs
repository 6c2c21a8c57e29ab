//! End to end: a multitrack publish (enhanced RTMP v2) by a real modern
//! muxer, FFmpeg 8's FLV muxer and RTMP client through PyAV: two H.264
//! tracks and AAC. A destination with the default tracks (nginx-rtmp,
//! recording) and Prism's own recording get one plain H.264 track that
//! Debian's ffmpeg decodes whole, with no phantom stream; a `tracks = "all"`
//! destination, FFmpeg 8's own RTMP server, gets both tracks, every packet.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_multi_7c8d9e0f";
const TOKEN: &str = "multitrack-token-2b3c4d5e6f";
const SECONDS: u32 = 8;

/// The PyAV helpers, beside this suite's support code.
fn helper(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support/pyav")
        .join(name)
}

/// PyAV with FFmpeg 8's libraries (`python3 -m pip install av`; scripts/test.sh
/// installs it).
fn require_pyav() {
    let check = Command::new("python3")
        .args(["-c", "import av; assert int(av.ffmpeg_version_info.lstrip('n').split('.')[0]) >= 8, av.ffmpeg_version_info"])
        .output()
        .expect("python3 is installed");
    assert!(
        check.status.success(),
        "PyAV with FFmpeg 8 is missing (python3 -m pip install av): {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Waits until a socket listens on `port`, read off /proc/net/tcp: FFmpeg's
/// RTMP server takes one connection only, so a probe that connects would be
/// the one it serves.
fn wait_for_listening(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    let local = format!(":{port:04X} ");
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        // local_address, rem_address, st: 0A is LISTEN.
        if table.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && format!("{} ", fields[1]).ends_with(&local) && fields[3] == "0A"
        }) {
            return;
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `codec_name,codec_type,width,height` of each stream ffprobe finds.
fn streams_of(path: &Path) -> Vec<String> {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "ffprobe failed on {}",
        path.display()
    );
    String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(|line| line.trim_end_matches(',').to_string())
        .collect()
}

fn json_of(output: std::process::Output, what: &str) -> serde_json::Value {
    let text = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[test]
fn a_multitrack_publish_reaches_single_track_destinations_as_track_0_and_all_track_ones_whole() {
    require_ffmpeg();
    require_pyav();
    let scratch = Scratch::new("multitrack");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port, listen_port) = (free_port(), free_port(), free_port());
    let listener = Command::new("python3")
        .arg(helper("rtmp_listen.py"))
        .arg(format!("rtmp://127.0.0.1:{listen_port}/live/all"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_listening(listen_port, Duration::from_secs(20));
    let config = format!(
        r#"[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[record]
path = "rec"

[[streams]]
id = "main"
key = "{KEY}"
record = true

  [[streams.destinations]]
  id = "plain"
  url = "rtmp://127.0.0.1:{nginx}/live/plain"

  [[streams.destinations]]
  id = "every-track"
  url = "rtmp://127.0.0.1:{listen_port}/live/all"
  tracks = "all"
"#,
        nginx = nginx.port
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let publisher = Command::new("python3")
        .arg(helper("multitrack_publish.py"))
        .arg(prism.publish_url(KEY))
        .arg(SECONDS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Mid-show, the API lists both video tracks and the audio.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tracks = loop {
        let (_, text) = http(admin_port, "GET", "/v1/streams/main", Some(TOKEN), "");
        let stream: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let tracks = stream["tracks"].as_array().cloned().unwrap_or_default();
        if tracks.len() == 3 && tracks.iter().all(|t| t["bitrate_kbps"].as_u64() > Some(0)) {
            break tracks;
        }
        assert!(
            Instant::now() < deadline,
            "the tracks never showed: {stream}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let described: Vec<(String, u64, String, u64, u64)> = tracks
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["id"].as_u64().unwrap(),
                t["codec"].as_str().unwrap_or("?").to_string(),
                t["width"].as_u64().unwrap_or(0),
                t["height"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        described,
        [
            ("video".into(), 0, "h264".into(), 640, 360),
            ("video".into(), 1, "h264".into(), 320, 180),
            ("audio".into(), 0, "aac".into(), 0, 0),
        ],
        "{tracks:?}"
    );

    let sent = json_of(publisher.wait_with_output().unwrap(), "the publisher");
    let received = json_of(
        listener.wait_with_output().unwrap(),
        "FFmpeg 8's RTMP server",
    );

    // Every track, every packet, to the destination that takes them all.
    let received = received.as_array().unwrap();
    let shape: Vec<(String, u64, u64, u64)> = received
        .iter()
        .map(|s| {
            (
                s["type"].as_str().unwrap().to_string(),
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
                s["packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("video".into(), 640, 360, sent["video"][0].as_u64().unwrap()),
            ("video".into(), 320, 180, sent["video"][1].as_u64().unwrap()),
            ("audio".into(), 0, 0, sent["audio"].as_u64().unwrap()),
        ],
        "sent {sent}"
    );

    // Track 0 alone, as plain H.264, to the destination with the default
    // tracks and to the recording: no phantom stream, a clean decode.
    let one_track = ["h264,video,640,360".to_string(), "aac,audio".to_string()];
    let plain = nginx.dir.join("plain.flv");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !plain.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(streams_of(&plain), one_track);
    assert_decodes(&plain, &[]);
    assert!(probe_duration(&plain) > f64::from(SECONDS) - 1.5);
    let deadline = Instant::now() + Duration::from_secs(15);
    let recording = loop {
        let (_, text) = http(
            admin_port,
            "GET",
            "/v1/recordings?stream=main",
            Some(TOKEN),
            "",
        );
        let listed: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        if let Some(done) = listed
            .as_array()
            .and_then(|l| l.iter().find(|r| r["complete"] == true))
        {
            break scratch
                .path
                .join("rec")
                .join(done["file"].as_str().unwrap());
        }
        assert!(Instant::now() < deadline, "no complete recording: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(streams_of(&recording), one_track);
    assert_decodes(&recording, &[]);
}
