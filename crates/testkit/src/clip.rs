//! Synthetic media that ffmpeg encodes from its own test sources (lavfi), as
//! the tests publish and the load harness relays: one description, whether
//! it becomes a file or a live publish.

use std::path::Path;
use std::process::Command;

/// A clip to encode: a video source, an audio source, how long, and how.
#[derive(Clone, Debug)]
pub struct Clip {
    video: String,
    audio: Option<String>,
    seconds: String,
    realtime: bool,
    codec: String,
    gop: u32,
    b_frames: Option<u32>,
    /// Constant video bitrate and its buffer, in kbit/s.
    cbr: Option<(u32, u32)>,
    audio_kbps: u32,
    /// Output options, placed before the output.
    extra: Vec<String>,
}

impl Clip {
    /// `video` is a lavfi source (`testsrc=size=160x120:rate=25`). By
    /// default: a sine tone, 4 s, H.264 (x264, ultrafast, yuv420p) with a
    /// keyframe every 25 frames, AAC at 64 kbit/s.
    pub fn new(video: &str) -> Self {
        Self {
            video: video.to_string(),
            audio: Some("sine".to_string()),
            seconds: "4".to_string(),
            realtime: false,
            codec: "libx264".to_string(),
            gop: 25,
            b_frames: None,
            cbr: None,
            audio_kbps: 64,
            extra: Vec::new(),
        }
    }

    /// The audio's lavfi source (`sine=frequency=440:sample_rate=48000`).
    pub fn audio(mut self, source: &str) -> Self {
        self.audio = Some(source.to_string());
        self
    }

    /// No audio at all.
    pub fn silent(mut self) -> Self {
        self.audio = None;
        self
    }

    pub fn seconds(mut self, seconds: impl ToString) -> Self {
        self.seconds = seconds.to_string();
        self
    }

    /// Read the video at its own pace (`-re`), as a live encoder sends.
    pub fn realtime(mut self) -> Self {
        self.realtime = true;
        self
    }

    /// The video encoder: `libx264` or `libx265`.
    pub fn codec(mut self, encoder: &str) -> Self {
        self.codec = encoder.to_string();
        self
    }

    /// A keyframe every `frames` frames.
    pub fn gop(mut self, frames: u32) -> Self {
        self.gop = frames;
        self
    }

    pub fn b_frames(mut self, frames: u32) -> Self {
        self.b_frames = Some(frames);
        self
    }

    /// Constant video bitrate (`kbps`, with a rate-control buffer of
    /// `buffer_kbps`), so the stream has real volume on the wire.
    pub fn cbr(mut self, kbps: u32, buffer_kbps: u32) -> Self {
        self.cbr = Some((kbps, buffer_kbps));
        self
    }

    pub fn audio_kbps(mut self, kbps: u32) -> Self {
        self.audio_kbps = kbps;
        self
    }

    /// Output options, placed before the output (`-tune zerolatency`,
    /// `-output_ts_offset 95442.2`).
    pub fn args_before_output<S: AsRef<str>>(mut self, options: &[S]) -> Self {
        self.extra
            .extend(options.iter().map(|o| o.as_ref().to_string()));
        self
    }

    /// ffmpeg's arguments up to the output: inputs, codecs, options.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        // `-re` paces the video input; ffmpeg interleaves the audio with
        // it (pacing both made it send in bursts of several frames).
        if self.realtime {
            args.push("-re".into());
        }
        args.extend(["-f", "lavfi", "-i", &self.video].map(String::from));
        if let Some(audio) = &self.audio {
            args.extend(["-f", "lavfi", "-i", audio].map(String::from));
        }
        let mut push = |values: &[&str]| args.extend(values.iter().map(|v| v.to_string()));
        push(&["-t", &self.seconds]);
        push(&["-c:v", &self.codec, "-preset", "ultrafast"]);
        push(&["-pix_fmt", "yuv420p", "-g", &self.gop.to_string()]);
        if self.codec == "libx265" {
            push(&["-x265-params", "log-level=error"]);
        }
        if let Some(frames) = self.b_frames {
            push(&["-bf", &frames.to_string()]);
        }
        if let Some((kbps, buffer)) = self.cbr {
            let rate = format!("{kbps}k");
            push(&["-b:v", &rate, "-minrate", &rate, "-maxrate", &rate]);
            push(&["-bufsize", &format!("{buffer}k")]);
            if self.codec == "libx264" {
                push(&["-x264-params", "nal-hrd=cbr"]);
            }
        }
        if self.audio.is_some() {
            push(&["-c:a", "aac", "-b:a", &format!("{}k", self.audio_kbps)]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }

    /// Encodes the clip into `path` as `format` (`flv`, `mpegts`, `mp4`).
    pub fn encode(&self, format: &str, path: &Path) -> Result<(), String> {
        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-nostdin", "-y"])
            .args(self.args())
            .args(["-f", format])
            .arg(path)
            .output()
            .map_err(|e| format!("ffmpeg is needed (apt-get install -y ffmpeg): {e}"))?;
        if !output.status.success() {
            let _ = std::fs::remove_file(path);
            return Err(format!(
                "ffmpeg could not encode {}: {}",
                path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_clip_is_paced_by_its_video_and_keeps_its_options_last() {
        let args = Clip::new("testsrc=size=320x240:rate=25")
            .realtime()
            .cbr(2000, 1000)
            .args_before_output(&["-tune", "zerolatency"])
            .args();
        let joined = args.join(" ");
        assert!(joined.starts_with("-re -f lavfi -i testsrc=size=320x240:rate=25 -f lavfi -i sine"));
        assert!(joined.contains(
            "-b:v 2000k -minrate 2000k -maxrate 2000k -bufsize 1000k -x264-params nal-hrd=cbr"
        ));
        assert!(joined.ends_with("-tune zerolatency"));
    }
}
