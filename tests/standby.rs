//! End to end: the standby clip. Each destination is an ffmpeg receiver that
//! accepts exactly one connection, so one recording means the platform
//! would have seen one broadcast. The clip (160x120, made by ffmpeg from a
//! colour and silence) is told apart from the encoder's picture (320x240)
//! by its size.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_standby_show_42";
const TOKEN: &str = "standby-admin-token-0123";

/// A 3 s standby clip as docs/operations.md tells operators to make one (FLV or,
/// by the file's extension, MP4).
fn make_clip(path: &Path) {
    let format = if path.extension().is_some_and(|e| e == "mp4") {
        "mp4"
    } else {
        "flv"
    };
    Clip::new("color=c=red:size=160x120:rate=25")
        .audio("anullsrc=r=44100:cl=stereo")
        .seconds(3)
        .encode(format, path)
        .unwrap();
}

struct Show {
    scratch: Scratch,
    prism: Prism,
    admin_port: u16,
    receiver: Ffmpeg,
    out: std::path::PathBuf,
}

fn start(name: &str, stream_extra: &str) -> Show {
    start_with_clip(name, stream_extra, "brb.flv")
}

fn start_with_clip(name: &str, stream_extra: &str, clip: &str) -> Show {
    require_ffmpeg();
    let scratch = Scratch::new(name);
    make_clip(&scratch.file(clip));
    let (rtmp_port, admin_port, sink_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("show.flv");
    let receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 1\nstandby_file = \"{clip}\"\n{stream_extra}\n\
         [[streams.destinations]]\nid = \"only\"\nurl = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    Show {
        scratch,
        prism,
        admin_port,
        receiver,
        out,
    }
}

#[test]
fn an_encoder_gone_for_20_s_is_bridged_by_the_standby_clip() {
    let mut show = start("standby-auto", "");
    let url = show.prism.publish_url(KEY);
    let mut first = Ffmpeg::publisher(&url, 60, show.scratch.file("first.log"));
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(8));
    // Killed: no FCUnpublish, the connection just drops.
    first.kill();
    show.prism.wait_for_log(
        "standby: destinations get the standby clip",
        Duration::from_secs(5),
    );
    let (status, body) = http(show.admin_port, "GET", "/v1/streams/main", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(
        body.contains("\"standby\":true") && body.contains("\"standby_reason\":\"auto\""),
        "{body}"
    );
    // The clip is 160x120, the encoder 320x240: the API says so.
    assert!(
        body.contains("the standby clip differs from the encoder: video h264 320x240"),
        "{body}"
    );
    std::thread::sleep(Duration::from_secs(20));
    // The second encoder ends cleanly (FCUnpublish): the show is over, and
    // after reconnect_grace_s the destination is unpublished.
    let mut second = Ffmpeg::publisher(&url, 8, show.scratch.file("second.log"));
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    show.receiver.wait(Duration::from_secs(20));

    let duration = probe_duration(&show.out);
    assert_good_recording(&show.out, 36.0);
    let runs = runs(&frame_widths(&show.out));
    println!("{duration:.1} s recorded; frame sizes in order: {runs:?}");
    let sizes: Vec<u32> = runs.iter().map(|r| r.0).collect();
    assert_eq!(sizes, vec![320, 160, 320], "encoder, standby, encoder");
    // About 20 s of standby at 25 fps.
    assert!((400..=600).contains(&runs[1].1), "{runs:?}");
    let log = show.prism.log();
    assert_eq!(log.matches("destination live").count(), 1, "{log}");
    assert!(log.contains("the encoder is back"), "{log}");
    show.prism.terminate();
}

/// With an MP4 clip, as ffmpeg writes one; the stream is recorded, and the
/// recording follows what the destination got: a new file where the clip's
/// picture starts and another where the encoder's returns, one timeline.
#[test]
fn standby_on_request_during_a_live_publish() {
    let mut show = start_with_clip("standby-manual", "record = true", "brb.mp4");
    let url = show.prism.publish_url(KEY);
    let mut encoder = Ffmpeg::publisher(&url, 20, show.scratch.file("encoder.log"));
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(5));
    let put = |on: bool| {
        http(
            show.admin_port,
            "PUT",
            "/v1/streams/main/standby",
            Some(TOKEN),
            &format!("{{\"on\":{on}}}"),
        )
    };
    let (status, body) = put(true);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"standby_reason\":\"manual\""), "{body}");
    std::thread::sleep(Duration::from_secs(6));
    let (status, body) = put(false);
    assert_eq!(status, 200, "{body}");
    assert!(
        encoder.wait(Duration::from_secs(30)).success(),
        "{}",
        encoder.log()
    );
    show.receiver.wait(Duration::from_secs(20));

    assert_good_recording(&show.out, 20.0);
    let runs = runs(&frame_widths(&show.out));
    println!("frame sizes in order: {runs:?}");
    let sizes: Vec<u32> = runs.iter().map(|r| r.0).collect();
    assert_eq!(sizes, vec![320, 160, 320], "encoder, standby, encoder");
    assert!(
        (125..=200).contains(&runs[1].1),
        "about 6 s of standby: {runs:?}"
    );
    // The recording: encoder, clip, encoder, each file whole at its own
    // picture size, each starting where the last ended.
    show.prism
        .wait_for_log_count("recording to a new file", 3, Duration::from_secs(10));
    let folder = show.scratch.file("recordings/main");
    let deadline = Instant::now() + Duration::from_secs(10);
    let files = loop {
        let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        // Complete: each ends with its index (`mfro`).
        let complete = files.iter().all(|f| {
            std::fs::read(f)
                .unwrap()
                .windows(4)
                .rev()
                .take(16)
                .any(|w| w == b"mfro")
        });
        if complete || Instant::now() > deadline {
            break files;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(files.len(), 3, "{files:?}");
    let mut previous_end = None;
    for (file, width) in files.iter().zip([320, 160, 320]) {
        assert_decodes(file, &[]);
        assert_eq!(width_sequence(file), [width], "{}", file.display());
        let (start, duration) = packet_span(file);
        if let Some(end) = previous_end {
            assert!(
                (start - end) >= -0.05 && start - end < 0.5,
                "{end} → {start}"
            );
        }
        previous_end = Some(start + duration);
    }
    // Refusals say what is wrong.
    let (status, body) = http(
        show.admin_port,
        "PUT",
        "/v1/streams/main/standby",
        Some(TOKEN),
        "{\"on\":true}",
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("not live"), "{body}");
    let (status, _) = http(
        show.admin_port,
        "PUT",
        "/v1/streams/main/standby",
        Some(TOKEN),
        "{\"on\":1}",
    );
    assert_eq!(status, 400);
    show.prism.terminate();
}

#[test]
fn standby_max_ends_the_destination_session_cleanly() {
    let mut show = start("standby-max", "standby_max_s = 3\n");
    let mut encoder = Ffmpeg::publisher(
        &show.prism.publish_url(KEY),
        60,
        show.scratch.file("encoder.log"),
    );
    show.prism
        .wait_for_log("destination live", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(4));
    encoder.kill();
    let killed = Instant::now();
    show.prism
        .wait_for_log("standby played for standby_max_s", Duration::from_secs(10));
    show.receiver.wait(Duration::from_secs(15));
    let ended_after = killed.elapsed();
    assert!(ended_after < Duration::from_secs(10), "{ended_after:?}");
    assert_good_recording(&show.out, probe_duration(&show.out));
    let runs = runs(&frame_widths(&show.out));
    assert_eq!(runs.last().unwrap().0, 160, "{runs:?}");
    show.prism.terminate();
}
