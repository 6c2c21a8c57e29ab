//! Playback of fragmented MP4 that Prism did not write: ffmpeg's own
//! (`-movflags frag_keyframe+empty_moov`, its track timescales, its `trun`
//! layout), read back whole: every video and audio frame, at the times and
//! with the keyframes ffmpeg's own demuxer (ffprobe) reads in it.

use std::io::BufReader;
use std::process::Command;

use prism_media::MediaKind;
use prism_record::fmp4_read::Fmp4Reader;

#[test]
fn ffmpegs_fragmented_mp4_reads_back_frame_for_frame() {
    let dir = std::env::temp_dir().join(format!("prism-ffmpeg-fmp4-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frag.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
        ])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", "3"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-c:a",
            "aac",
        ])
        .args(["-movflags", "frag_keyframe+empty_moov"])
        .arg(&path)
        .status()
        .expect("ffmpeg is installed (scripts/test.sh installs it)");
    assert!(made.success());
    let mut reader = Fmp4Reader::open(BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    assert_eq!(reader.codecs(), (Some("h264"), Some("aac")));
    let mut frames = Vec::new();
    while let Some(fragment) = reader.next_fragment(true).unwrap() {
        frames.extend(fragment);
    }
    // As ffmpeg's own demuxer reads the file: each stream's frames, their
    // times (ms) and keyframes.
    for (kind, stream) in [(MediaKind::Video, "v"), (MediaKind::Audio, "a")] {
        let probe = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", stream])
            .args(["-show_entries", "packet=dts_time,flags", "-of", "csv=p=0"])
            .arg(&path)
            .output()
            .unwrap();
        let want: Vec<(u64, bool)> = String::from_utf8_lossy(&probe.stdout)
            .lines()
            .map(|line| {
                let (time, flags) = line.split_once(',').unwrap();
                let ms = (time.parse::<f64>().unwrap() * 1000.0 + 1e-6).floor() as u64;
                (ms, flags.starts_with('K'))
            })
            .collect();
        let got: Vec<(u64, bool)> = frames
            .iter()
            .filter(|f| f.kind == kind)
            .map(|f| (f.timestamp, f.keyframe || kind == MediaKind::Audio))
            .collect();
        assert!(want.len() > 70, "{stream}: {} frames", want.len());
        assert_eq!(got, want, "{stream}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
