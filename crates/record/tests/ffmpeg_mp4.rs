//! Playback of MP4 that Prism did not write, read back whole and checked
//! against ffmpeg's own demuxer (ffprobe): every video and audio frame, at
//! the same decode and presentation times (one shift for the whole file,
//! so audio and video stay in sync), with the same keyframes. Three layouts
//! ffmpeg writes: fragmented (`frag_keyframe+empty_moov`), plain with the
//! `moov` at the end (its default, and OBS's), and plain with the `moov`
//! first (`+faststart`) and B-frames (composition offsets, edit lists).

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::Command;

use prism_media::{MediaKind, MediaMessage};
use prism_record::mp4_read::Mp4Reader;

/// Three seconds of 25 fps H.264 and 48 kHz AAC in `name`, made with
/// `options` (x264's preset and the muxer's flags).
fn encode(dir: &Path, name: &str, options: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=320x240:rate=25")
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3"])
        .args(["-c:v", "libx264", "-g", "25", "-c:a", "aac"])
        .args(options)
        .arg(&path)
        .status()
        .expect("ffmpeg is installed (scripts/test.sh installs it)");
    assert!(made.success());
    path
}

/// ffprobe's packets of one stream: (dts ms, pts ms, keyframe).
fn probe(path: &Path, stream: &str) -> Vec<(i64, i64, bool)> {
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", stream])
        .args(["-show_entries", "packet=dts_time,pts_time,flags"])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let ms = |time: &str| (time.parse::<f64>().unwrap() * 1000.0).round() as i64;
    String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            // pts, dts, flags (and, for some packets, side data after them)
            assert!(fields.len() >= 3, "ffprobe said {line:?}");
            (ms(fields[1]), ms(fields[0]), fields[2].starts_with('K'))
        })
        .collect()
}

fn read_all(path: &Path) -> Vec<MediaMessage> {
    let mut reader = Mp4Reader::open(BufReader::new(std::fs::File::open(path).unwrap())).unwrap();
    assert_eq!(reader.codecs(), (Some("h264"), Some("aac")));
    let mut frames = Vec::new();
    while let Some(fragment) = reader.next_fragment(true).unwrap() {
        frames.extend(fragment);
    }
    frames
}

/// A frame's presentation time: its timestamp plus its composition offset.
fn presentation(frame: &MediaMessage) -> i64 {
    let mut time = frame.timestamp as i64;
    if frame.kind == MediaKind::Video {
        let p = &frame.payload;
        time += i64::from(i32::from_be_bytes([0, p[2], p[3], p[4]]) << 8 >> 8);
    }
    time
}

fn assert_reads_as_ffprobe(path: &Path) {
    let frames = read_all(path);
    let mut shift = None;
    for (kind, stream) in [(MediaKind::Video, "v"), (MediaKind::Audio, "a")] {
        let want = probe(path, stream);
        let got: Vec<(i64, i64, bool)> = frames
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| {
                let key = f.keyframe || kind == MediaKind::Audio;
                (f.timestamp as i64, presentation(f), key)
            })
            .collect();
        assert!(want.len() > 70, "{stream}: {} frames", want.len());
        assert_eq!(got.len(), want.len(), "{}: {stream} frames", path.display());
        // One shift (making the earliest time 0) for both streams.
        let shift = *shift.get_or_insert(got[0].0 - want[0].0);
        for (index, (got, want)) in got.iter().zip(&want).enumerate() {
            let close = |a: i64, b: i64| (a - shift - b).abs() <= 1;
            assert!(
                close(got.0, want.0) && close(got.1, want.1) && got.2 == want.2,
                "{} {stream} frame {index}: read {got:?}, ffprobe {want:?} (shift {shift})",
                path.display()
            );
        }
    }
    // In decode order across the streams, as a player sends them.
    assert!(frames.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
}

#[test]
fn ffmpegs_mp4_reads_back_frame_for_frame() {
    let dir = std::env::temp_dir().join(format!("prism-ffmpeg-mp4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fragmented = encode(
        &dir,
        "frag.mp4",
        &[
            "-preset",
            "ultrafast",
            "-movflags",
            "frag_keyframe+empty_moov",
        ],
    );
    let moov_last = encode(&dir, "plain.mp4", &["-preset", "ultrafast"]);
    let b_frames = encode(
        &dir,
        "faststart.mp4",
        &["-preset", "veryfast", "-bf", "3", "-movflags", "+faststart"],
    );
    for path in [&fragmented, &moov_last, &b_frames] {
        assert_reads_as_ffprobe(path);
    }
    // The B-frame file really has composition offsets to get right.
    assert!(read_all(&b_frames)
        .iter()
        .any(|f| f.kind == MediaKind::Video && presentation(f) != f.timestamp as i64));
    std::fs::remove_dir_all(&dir).ok();
}
