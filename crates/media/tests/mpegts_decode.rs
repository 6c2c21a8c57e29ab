//! The TS muxer's output, from an FLV file ffmpeg wrote (H.264 with
//! B-frames, AAC), decoded whole by ffmpeg: no error, every frame, the
//! duration kept.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use prism_media::flv;
use prism_media::mpegts::{TsMuxer, TS_PACKET_LEN};

fn ffmpeg(args: &[&str]) -> std::process::Output {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg is installed (scripts/test.sh installs it)");
    assert!(
        output.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn probe(file: &Path, entries: &str, extra: &[&str]) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(extra)
        .args(["-show_entries", entries, "-of", "csv=p=0"])
        .arg(file)
        .output()
        .expect("ffprobe");
    // The streams are listed once under the program and once alone.
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    lines[lines.len() / 2..].join("\n")
}

#[test]
fn an_ffmpeg_flv_muxed_to_ts_decodes_whole() {
    let dir = std::env::temp_dir().join(format!("prism-mpegts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let flv_path = dir.join("in.flv");
    let ts_path = dir.join("out.ts");
    ffmpeg(
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "60",
            "-c:a",
            "aac",
            "-f",
            "flv",
        ]
        .iter()
        .copied()
        .chain([flv_path.to_str().unwrap()])
        .collect::<Vec<_>>(),
    );
    let file = Bytes::from(std::fs::read(&flv_path).unwrap());
    let mut muxer = TsMuxer::new();
    let mut ts = Vec::new();
    let mut b_frames = 0;
    for message in flv::file_tags(&file) {
        // Composition offsets (B-frames) are what make PTS differ from DTS.
        if message
            .payload
            .get(2..5)
            .is_some_and(|cts| cts != [0, 0, 0])
        {
            b_frames += 1;
        }
        ts.extend_from_slice(&muxer.mux(&message));
    }
    assert!(b_frames > 0, "the input has B-frames");
    assert_eq!(ts.len() % TS_PACKET_LEN, 0);
    std::fs::write(&ts_path, &ts).unwrap();

    // A full decode: ffmpeg reports any error (corrupt packets, continuity,
    // missing parameter sets) on stderr.
    let decode = ffmpeg(&[
        "-v",
        "error",
        "-i",
        ts_path.to_str().unwrap(),
        "-f",
        "null",
        "-",
    ]);
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(errors.trim().is_empty(), "decode errors: {errors}");

    let frames = probe(
        &ts_path,
        "stream=nb_read_frames",
        &["-count_frames", "-select_streams", "v:0"],
    );
    assert_eq!(frames, "180", "every video frame");
    let streams = probe(&ts_path, "stream=codec_name", &[]);
    assert_eq!(streams.lines().collect::<Vec<_>>(), ["h264", "aac"]);
    let duration: f64 = probe(&ts_path, "format=duration", &[]).parse().unwrap();
    assert!((duration - 6.0).abs() < 0.6, "duration {duration}");
    let _ = std::fs::remove_dir_all(&dir);
}
