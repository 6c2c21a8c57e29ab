//! The "publish started" log line, written once the stream has shown what it
//! carries: codecs from the sequence headers, resolution and frame rate from
//! `onMetaData`. Looks only at the first messages of a publish.

use std::net::SocketAddr;

use prism_rtmp::amf0::{self, Value as Amf0Value};
use tracing::info;

use prism_media::standby::StandbyClip;
use prism_media::{flv, IngestProtocol, MediaKind, MediaMessage, PublishGuard};
use tracing::warn;

/// Messages to wait for a keyframe, audio and the frame rate before
/// announcing anyway (an audio-only or video-only stream, or one whose
/// metadata has no frame rate, never completes the picture).
const ANNOUNCE_AFTER_MESSAGES: u32 = 200;

pub(crate) struct PublishAnnouncer {
    protocol: IngestProtocol,
    done: bool,
    seen: u32,
    keyframe_seen: bool,
    video_codec: Option<&'static str>,
    audio_codec: Option<&'static str>,
    width: Option<f64>,
    height: Option<f64>,
    framerate: Option<f64>,
    /// The encoder's first sequence headers, compared with the standby
    /// clip's at the announcement.
    video_header: Option<MediaMessage>,
    audio_header: Option<MediaMessage>,
}

impl PublishAnnouncer {
    pub(crate) fn new(protocol: IngestProtocol) -> Self {
        Self {
            protocol,
            done: false,
            seen: 0,
            keyframe_seen: false,
            video_codec: None,
            audio_codec: None,
            width: None,
            height: None,
            framerate: None,
            video_header: None,
            audio_header: None,
        }
    }

    pub(crate) fn observe(
        &mut self,
        message: &MediaMessage,
        publish: &PublishGuard,
        remote: SocketAddr,
    ) {
        if self.done {
            return;
        }
        let hub = publish.hub();
        let stream = hub.id();
        self.seen += 1;
        if message.sequence_header {
            let slot = match message.kind {
                MediaKind::Video => &mut self.video_header,
                _ => &mut self.audio_header,
            };
            slot.get_or_insert_with(|| message.clone());
        }
        match message.kind {
            MediaKind::Video => {
                self.video_codec = self.video_codec.or(flv::video_codec_name(&message.payload));
            }
            MediaKind::Audio => {
                self.audio_codec = self.audio_codec.or(flv::audio_codec_name(&message.payload));
            }
            MediaKind::Data if flv::is_metadata(&message.payload) => {
                self.read_metadata(&message.payload)
            }
            MediaKind::Data => {}
        }
        if message.kind == MediaKind::Video && message.keyframe {
            self.keyframe_seen = true;
        }
        // Announce once both tracks have shown themselves (an SRT stream's
        // first keyframe often comes before its first audio frame) and the
        // frame rate is known: from RTMP's onMetaData at once, from the
        // metadata the MPEG-TS remuxer re-sends once it has measured it.
        if (self.keyframe_seen && self.audio_codec.is_some() && self.framerate.is_some())
            || self.seen >= ANNOUNCE_AFTER_MESSAGES
        {
            self.done = true;
            let resolution = match (self.width, self.height) {
                (Some(w), Some(h)) => format!("{w}x{h}"),
                _ => "unknown".into(),
            };
            publish.set_media_info(prism_media::MediaInfo {
                video_codec: self.video_codec,
                audio_codec: self.audio_codec,
                width: self.width.map(|w| w as u32),
                height: self.height.map(|h| h as u32),
                fps: self.framerate,
            });
            info!(
                %stream,
                %remote,
                protocol = self.protocol.as_str(),
                video = self.video_codec.unwrap_or("none"),
                audio = self.audio_codec.unwrap_or("none"),
                resolution,
                fps = self.framerate.unwrap_or(0.0),
                "publish started"
            );
            if let Some(clip) = hub.standby_clip() {
                let differences = standby_differences(
                    &clip,
                    self.video_header.as_ref(),
                    self.audio_header.as_ref(),
                );
                if !differences.is_empty() {
                    let what = differences.join("; ");
                    warn!(%stream, differences = %what, "the standby clip's codec parameters differ from the encoder's: destinations get new sequence headers at each switch, and some platforms restart their transcoder on that");
                    hub.set_standby_warning(Some(format!(
                        "the standby clip differs from the encoder: {what}; some platforms restart their transcoder at each switch"
                    )));
                } else {
                    hub.set_standby_warning(None);
                }
            }
        }
    }

    fn read_metadata(&mut self, payload: &[u8]) {
        // The bounded decoder: a publisher's metadata is untrusted input.
        let Ok(values) = amf0::decode_all(payload) else {
            return;
        };
        let Some(fields) = values
            .into_iter()
            .find(|v| matches!(v, Amf0Value::Object(_) | Amf0Value::EcmaArray(_)))
        else {
            return;
        };
        let number = |name: &str| {
            fields
                .get_number(name)
                .filter(|n| n.is_finite() && *n > 0.0)
        };
        self.width = number("width");
        self.height = number("height");
        self.framerate = number("framerate");
    }
}

/// What differs between the standby clip and the encoder: video codec,
/// resolution and H.264 profile; AAC sample rate and channels.
pub(crate) fn standby_differences(
    clip: &StandbyClip,
    video: Option<&MediaMessage>,
    audio: Option<&MediaMessage>,
) -> Vec<String> {
    let mut differences = Vec::new();
    let describe_video = |header: &MediaMessage| -> String {
        let payload = &header.payload;
        let codec = flv::video_codec_name(payload).unwrap_or("unknown");
        // Legacy AVC: 5-byte tag header, then the AVCDecoderConfigurationRecord.
        if codec == "h264" && payload.len() > 13 && payload[0] & 0x80 == 0 {
            let record = &payload[5..];
            let profile = record[1];
            let dims = prism_media::h264::record_sps(record)
                .and_then(prism_media::h264::sps_dimensions)
                .map(|(w, h)| format!("{w}x{h}"))
                .unwrap_or_else(|| "unknown size".into());
            return format!("h264 {dims} profile {profile}");
        }
        codec.to_string()
    };
    let describe_audio = |header: &MediaMessage| -> String {
        match header
            .payload
            .get(2..)
            .and_then(prism_media::aac::AacConfig::from_audio_specific_config)
        {
            Some(config) => format!("aac {} Hz {} ch", config.sample_rate(), config.channels),
            None => "aac".into(),
        }
    };
    if let (Some(ours), Some(theirs)) = (clip.video_header(), video) {
        let (ours, theirs) = (describe_video(ours), describe_video(theirs));
        if ours != theirs {
            differences.push(format!("video {theirs} (standby: {ours})"));
        }
    }
    if let (Some(ours), Some(theirs)) = (clip.audio_header(), audio) {
        let (ours, theirs) = (describe_audio(ours), describe_audio(theirs));
        if ours != theirs {
            differences.push(format!("audio {theirs} (standby: {ours})"));
        }
    }
    differences
}

/// The "publish stopped" log line: why, and after how long.
pub(crate) fn log_publish_stopped(guard: &PublishGuard, remote: SocketAddr, reason: &str) {
    let publisher = guard.publisher();
    let seconds = publisher
        .as_ref()
        .and_then(|p| p.since.elapsed().ok())
        .map_or(0, |d| d.as_secs());
    info!(
        stream = %guard.hub().id(),
        %remote,
        protocol = guard.protocol().as_str(),
        reason,
        seconds,
        "publish stopped"
    );
}
