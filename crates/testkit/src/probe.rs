//! What came out, checked by ffprobe and a full ffmpeg decode: the
//! recording probe every end-to-end test ends with.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A full ffmpeg decode of `path` (read with `input` options, such as
/// `-f flv`, if given) reports no error at all.
pub fn assert_decodes(path: &Path, input: &[&str]) {
    let decode = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin"])
        .args(input)
        .arg("-i")
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg is installed (scripts/test.sh installs it)");
    let errors = String::from_utf8_lossy(&decode.stderr);
    assert!(
        decode.status.success() && errors.trim().is_empty(),
        "{}: decoding reported errors: {errors}",
        path.display()
    );
}

/// What ffprobe and a full ffmpeg decode say about a recorded file.
#[derive(Debug)]
pub struct Probe {
    pub codecs: Vec<String>,
    pub duration: f64,
    pub format_tags: String,
}

/// Checks that `path` holds H.264 + AAC that decodes without a single error,
/// lasting `expected_secs` within 10 %, with strictly increasing timestamps
/// per stream.
pub fn assert_good_recording(path: &Path, expected_secs: f64) -> Probe {
    assert!(
        path.exists(),
        "{} was never written; its receiver's log: {}",
        path.display(),
        std::fs::read_to_string(path.with_extension("log")).unwrap_or_default()
    );
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name:format=duration:format_tags",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffprobe failed on {}",
        path.display()
    );
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let codecs: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("codec_name="))
        .map(str::to_string)
        .collect();
    let duration: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0);
    let mut sorted = codecs.clone();
    sorted.sort();
    // MPEG-TS lists each stream under its program too.
    sorted.dedup();
    assert_eq!(sorted, ["aac", "h264"], "{}: {text}", path.display());
    assert!(
        (duration - expected_secs).abs() <= expected_secs * 0.10,
        "{}: duration {duration} s, expected {expected_secs} s ± 10 %",
        path.display()
    );

    let packets = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,dts",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    let mut last: [Option<i64>; 2] = [None, None];
    let mut counts = [0usize; 2];
    for line in String::from_utf8_lossy(&packets.stdout).lines() {
        // A packet that carries new extradata (a sequence header change,
        // e.g. at a standby switch) is followed by its side data's line.
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = line.split(',');
        let stream: usize = fields.next().unwrap().parse().unwrap();
        let dts: i64 = fields.next().unwrap().parse().unwrap();
        if let Some(previous) = last[stream] {
            assert!(
                dts > previous,
                "{}: stream {stream} dts {dts} after {previous}",
                path.display()
            );
        }
        last[stream] = Some(dts);
        counts[stream] += 1;
    }
    assert!(
        counts.iter().all(|&c| c > 10),
        "{}: too few packets {counts:?}",
        path.display()
    );

    assert_decodes(path, &[]);
    Probe {
        codecs,
        duration,
        format_tags: text,
    }
}

/// One value ffprobe prints for `entries` (`-show_entries`), as CSV.
fn ffprobe_value(path: &Path, select: &[&str], entries: &str) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(select)
        .args(["-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The duration ffprobe reports, for recordings whose length the test does
/// not control.
pub fn probe_duration(path: &Path) -> f64 {
    ffprobe_value(path, &[], "format=duration")
        .parse()
        .unwrap_or(0.0)
}

/// Video frames ffprobe counts in a recording.
pub fn video_frames(path: &Path) -> u32 {
    ffprobe_value(
        path,
        &["-select_streams", "v", "-count_packets"],
        "stream=nb_read_packets",
    )
    .parse()
    .unwrap_or(0)
}

/// One `-show_entries` value of every video frame or packet of a
/// recording (`frame=width`, `packet=pts_time`), parsed, in order.
fn video_entries<T: std::str::FromStr>(path: &Path, entry: &str) -> Vec<T> {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            entry,
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

/// Widths of the recorded video frames, in order.
pub fn frame_widths(path: &Path) -> Vec<u32> {
    video_entries(path, "frame=width")
}

/// The widths a recording's picture ran through, in order (each run of
/// equal widths once).
pub fn width_sequence(path: &Path) -> Vec<u32> {
    runs(&frame_widths(path))
        .into_iter()
        .map(|(width, _)| width)
        .collect()
}

/// The runs of equal widths: (width, frames).
pub fn runs(widths: &[u32]) -> Vec<(u32, usize)> {
    let mut runs: Vec<(u32, usize)> = Vec::new();
    for &w in widths {
        match runs.last_mut() {
            Some((last, n)) if *last == w => *n += 1,
            _ => runs.push((w, 1)),
        }
    }
    runs
}

/// The longest interval between consecutive video frames of a recording,
/// by their timestamps: a destination's gap at a source switch.
pub fn max_video_gap(path: &Path) -> Duration {
    let times: Vec<f64> = video_entries(path, "packet=pts_time");
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    Duration::from_secs_f64(gap.max(0.0))
}

/// Where a file's media starts and how long it lasts, from its packets as
/// ffprobe reads them: the first presentation time, and the last packet's
/// end after it. (A fragmented MP4 whose timestamps continue a show has no
/// duration of its own in its header; its packets tell.)
pub fn packet_span(path: &Path) -> (f64, f64) {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time,duration_time",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let (mut start, mut end) = (f64::MAX, f64::MIN);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split(',').map(|f| f.trim().parse::<f64>());
        let (Some(Ok(pts)), Some(Ok(duration))) = (fields.next(), fields.next()) else {
            continue;
        };
        start = start.min(pts);
        end = end.max(pts + duration);
    }
    assert!(start <= end, "{}: no packets", path.display());
    (start, end - start)
}
