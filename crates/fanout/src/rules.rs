//! A platform's published limits (`config/platforms.toml`), checked against
//! what the stream carries: the "green but not live" failures (no audio to
//! YouTube, a keyframe every 10 s, a bitrate over Facebook's), said before
//! the platform silently refuses. An incompatible video codec is more than
//! a warning: the destination refuses to send it (see `destination`).
//!
//! Sans-IO: the stream's tracks in, warnings out.

use serde::{Deserialize, Serialize};

use prism_media::profile::TrackInfo;
use prism_media::single_track::Tracks;
use prism_media::MediaKind;

/// What a platform takes. Each field absent means "not limited".
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatformLimits {
    /// Video codecs it takes (`h264`, `hevc`, `av1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_codecs: Option<Vec<String>>,
    /// Video bitrate, as platforms publish it (audio comes on top).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate_kbps: Option<u64>,
    /// The larger side and the smaller side of the picture, so a portrait
    /// stream is held to the same limits turned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keyframe_interval_s: Option<f64>,
    /// A stream without audio does not go live there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audio_required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_codecs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_sample_rates: Option<Vec<u32>>,
    /// It takes `rtmps://` only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rtmps_required: bool,
}

/// A destination's platform: its name, for messages, and its limits.
#[derive(Clone, Debug, PartialEq)]
pub struct PlatformRules {
    pub name: String,
    pub limits: PlatformLimits,
}

/// A rule the stream breaks for one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// One of `WARNING_CODES`.
    pub code: &'static str,
    pub message: String,
}

/// Every warning code, for the metrics.
pub const WARNING_CODES: [&str; 10] = [
    "codec",
    "bitrate",
    "resolution",
    "frame_rate",
    "keyframe_interval",
    "no_audio",
    "audio_codec",
    "sample_rate",
    "rtmps",
    "delay_buffer",
];

/// Video longer than this with no audio track: the stream has none.
const AUDIO_EXPECTED_WITHIN_MS: u64 = 3000;
/// A bitrate over the limit by less than this is an encoder's overshoot,
/// and a keyframe interval longer by less than this is timestamp rounding.
const TOLERANCE: f64 = 1.05;

/// The rules `tracks` breaks for a destination that takes `taken` of them
/// over `rtmps` or not; `platform` names the platform in the messages.
pub fn check(
    platform: &str,
    limits: &PlatformLimits,
    tracks: &[TrackInfo],
    taken: Tracks,
    rtmps: bool,
) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let mut warn = |code: &'static str, message: String| warnings.push(Warning { code, message });
    let sent: Vec<&TrackInfo> = tracks
        .iter()
        .filter(|t| taken == Tracks::All || t.id == 0)
        .collect();
    let video = sent
        .iter()
        .find(|t| t.kind == MediaKind::Video && t.id == 0);
    let audio = sent.iter().find(|t| t.kind == MediaKind::Audio);
    if limits.rtmps_required && !rtmps {
        warn(
            "rtmps",
            format!("{platform} takes rtmps:// only; this destination's URL is not"),
        );
    }
    if let Some(warning) = incompatible_codec(platform, limits, tracks) {
        warn(warning.code, warning.message);
    }
    if let Some(video) = video {
        if let (Some(max), Some(interval)) =
            (limits.max_keyframe_interval_s, video.keyframe_interval_ms)
        {
            if interval as f64 > max * 1000.0 * TOLERANCE {
                warn(
                    "keyframe_interval",
                    format!(
                        "a keyframe every {:.1} s; {platform} wants one at least every {max} s (set the encoder's keyframe interval to 2 s)",
                        interval as f64 / 1000.0
                    ),
                );
            }
        }
        if let (Some(w), Some(h)) = (video.width, video.height) {
            let (long, short) = (w.max(h), w.min(h));
            if let (Some(max_w), Some(max_h)) = (limits.max_width, limits.max_height) {
                if long > max_w.max(max_h) || short > max_w.min(max_h) {
                    warn(
                        "resolution",
                        format!("{w}x{h} is over {platform}'s {max_w}x{max_h}"),
                    );
                }
            }
        }
        if let (Some(max), Some(fps)) = (limits.max_fps, video.fps) {
            if fps > max + 0.5 {
                warn(
                    "frame_rate",
                    format!("{fps} fps is over {platform}'s {max} fps"),
                );
            }
        }
        if limits.audio_required && audio.is_none() && video.span_ms >= AUDIO_EXPECTED_WITHIN_MS {
            warn(
                "no_audio",
                format!("the stream has no audio; {platform} does not go live without it"),
            );
        }
    }
    if let Some(max) = limits.max_bitrate_kbps {
        let kbps = sent
            .iter()
            .filter(|t| t.kind == MediaKind::Video)
            .map(|t| t.bitrate_bps)
            .sum::<u64>()
            / 1000;
        if kbps as f64 > max as f64 * TOLERANCE {
            warn(
                "bitrate",
                format!("video at {kbps} kbit/s is over {platform}'s {max} kbit/s"),
            );
        }
    }
    if let Some(audio) = audio {
        if let (Some(codecs), Some(codec)) = (&limits.audio_codecs, audio.codec) {
            if !codecs.iter().any(|c| c == codec) {
                warn(
                    "audio_codec",
                    format!(
                        "{platform} takes {} audio, not {codec}",
                        codecs.join(" or ")
                    ),
                );
            }
        }
        if let (Some(rates), Some(rate)) = (&limits.audio_sample_rates, audio.sample_rate) {
            if !rates.contains(&rate) {
                let rates: Vec<String> = rates
                    .iter()
                    .map(|r| format!("{} kHz", *r as f64 / 1000.0))
                    .collect();
                warn(
                    "sample_rate",
                    format!(
                        "audio at {} kHz; {platform} takes {}",
                        rate as f64 / 1000.0,
                        rates.join(" or ")
                    ),
                );
            }
        }
    }
    warnings
}

/// The stream's default video track is in a codec the platform does not
/// take: the destination refuses to send it.
pub fn incompatible_codec(
    platform: &str,
    limits: &PlatformLimits,
    tracks: &[TrackInfo],
) -> Option<Warning> {
    let codecs = limits.video_codecs.as_ref()?;
    let codec = tracks
        .iter()
        .find(|t| t.kind == MediaKind::Video && t.id == 0)?
        .codec?;
    if codecs.iter().any(|c| c == codec) {
        return None;
    }
    Some(Warning {
        code: "codec",
        message: format!(
            "{platform} takes {} video, not {codec}: not sent",
            codecs.join(" or ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(kind: MediaKind, codec: &'static str) -> TrackInfo {
        TrackInfo {
            codec: Some(codec),
            span_ms: 10_000,
            ..TrackInfo::new(kind, 0)
        }
    }

    fn youtube() -> PlatformLimits {
        PlatformLimits {
            video_codecs: Some(vec!["h264".into(), "hevc".into(), "av1".into()]),
            max_bitrate_kbps: Some(6000),
            max_width: Some(1920),
            max_height: Some(1080),
            max_fps: Some(60.0),
            max_keyframe_interval_s: Some(4.0),
            audio_required: true,
            audio_codecs: Some(vec!["aac".into()]),
            audio_sample_rates: Some(vec![44100, 48000]),
            rtmps_required: true,
        }
    }

    fn codes(warnings: &[Warning]) -> Vec<&'static str> {
        warnings.iter().map(|w| w.code).collect()
    }

    #[test]
    fn a_stream_within_the_limits_breaks_none() {
        let video = TrackInfo {
            width: Some(1080),
            height: Some(1920),
            fps: Some(30.0),
            bitrate_bps: 4_000_000,
            keyframe_interval_ms: Some(2000),
            ..track(MediaKind::Video, "h264")
        };
        let audio = TrackInfo {
            sample_rate: Some(48000),
            bitrate_bps: 128_000,
            ..track(MediaKind::Audio, "aac")
        };
        assert!(check(
            "YouTube",
            &youtube(),
            &[video, audio],
            Tracks::Default,
            true
        )
        .is_empty());
    }

    #[test]
    fn each_rule_broken_is_named() {
        let video = TrackInfo {
            width: Some(3840),
            height: Some(2160),
            fps: Some(120.0),
            bitrate_bps: 9_000_000,
            keyframe_interval_ms: Some(10_000),
            ..track(MediaKind::Video, "h264")
        };
        let warnings = check(
            "YouTube",
            &youtube(),
            std::slice::from_ref(&video),
            Tracks::Default,
            false,
        );
        assert_eq!(
            codes(&warnings),
            [
                "rtmps",
                "keyframe_interval",
                "resolution",
                "frame_rate",
                "no_audio",
                "bitrate"
            ]
        );
        assert!(warnings[1].message.contains("every 10.0 s"), "{warnings:?}");
        let audio = TrackInfo {
            sample_rate: Some(32000),
            ..track(MediaKind::Audio, "mp3")
        };
        let hevc = TrackInfo {
            codec: Some("vp9"),
            ..video
        };
        let warnings = check("YouTube", &youtube(), &[hevc, audio], Tracks::Default, true);
        assert_eq!(
            codes(&warnings),
            [
                "codec",
                "keyframe_interval",
                "resolution",
                "frame_rate",
                "bitrate",
                "audio_codec",
                "sample_rate"
            ]
        );
    }

    #[test]
    fn only_the_tracks_a_destination_takes_count() {
        let base = TrackInfo {
            bitrate_bps: 4_000_000,
            ..track(MediaKind::Video, "h264")
        };
        let second = TrackInfo {
            id: 1,
            ..base.clone()
        };
        let limits = PlatformLimits {
            max_bitrate_kbps: Some(6000),
            ..PlatformLimits::default()
        };
        let tracks = [base, second];
        assert!(check("Kick", &limits, &tracks, Tracks::Default, true).is_empty());
        assert_eq!(
            codes(&check("Kick", &limits, &tracks, Tracks::All, true)),
            ["bitrate"]
        );
    }
}
