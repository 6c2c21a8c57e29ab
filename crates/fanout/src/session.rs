//! What every kind of destination session (RTMP, SRT) shares: the
//! destination's settings, the control its owner sends, how a session ends,
//! and the moments every session goes through.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use prism_media::single_track::Tracks;
use prism_media::StreamHub;

use crate::rules::PlatformRules;

use crate::error::DestinationError;
use crate::status::{DestinationState, DestinationStatus};
use crate::url::DestinationUrl;

/// How many queued messages one write batch takes at most.
pub(crate) const BATCH_MESSAGES: usize = 256;

/// A destination's settings, as the control plane gives them.
#[derive(Clone, Debug)]
pub struct DestinationConfig {
    /// Public name used in logs, metrics and the API.
    pub id: String,
    pub url: DestinationUrl,
    pub enabled: bool,
    /// Bytes the queue may hold before it drops to the next keyframe.
    pub queue_budget_bytes: usize,
    /// TCP connect plus RTMP handshake, connect and publish.
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long ends the session.
    pub write_timeout: Duration,
    /// SO_SNDBUF for the destination socket.
    pub socket_send_buffer_bytes: u32,
    /// The RTMP chunk size announced to the server and used for media.
    pub chunk_size: u32,
    /// For `rtmps://`: trust only the CA certificates in this PEM file
    /// instead of the built-in roots (private servers).
    pub ca_file: Option<std::path::PathBuf>,
    /// A server that acknowledged before and then acknowledges nothing for
    /// this long, while Prism keeps sending, is treated as failed.
    pub ack_timeout: Duration,
    /// The latency budget within which queued messages are held and sent in
    /// one vectored write (RTMP only); zero writes each message at once,
    /// straight from the hub's push while the socket keeps up.
    pub max_delay: Duration,
    /// Which tracks of a multitrack stream it takes (RTMP; SRT carries the
    /// default ones).
    pub tracks: Tracks,
    /// Its platform's published limits, when it names a platform that
    /// has them.
    pub rules: Option<Arc<PlatformRules>>,
}

/// What the task's owner tells it: whether to push, or to stop for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) enabled: bool,
    pub(crate) shutdown: bool,
    /// The stream is in a codec the platform does not take (`rules`).
    pub(crate) refused: bool,
}

impl Control {
    /// Whether a live session must end now.
    pub(crate) fn stops(&self) -> bool {
        self.shutdown || !self.enabled || self.refused
    }
}

/// How a session ended.
pub(crate) enum SessionEnd {
    /// The publisher stopped; the destination was unpublished cleanly.
    PublisherEnded,
    /// Disabled or shut down; unpublished cleanly.
    Stopped,
    Failed(DestinationError),
}

/// Shows, counts and logs a destination that is now relaying.
pub(crate) fn went_live(
    hub: &StreamHub,
    config: &DestinationConfig,
    status: &DestinationStatus,
    connect_started: Instant,
) {
    status.set_state(DestinationState::Live);
    status.set_error(None);
    let connect_seconds = connect_started.elapsed().as_secs_f64();
    metrics::histogram!(
        "prism_destination_connect_seconds",
        "stream" => hub.id().to_string(),
        "destination" => config.id.clone()
    )
    .record(connect_seconds);
    info!(
        stream = %hub.id(),
        destination = %config.id,
        url = %config.url,
        connect_ms = (connect_seconds * 1000.0) as u64,
        "destination live"
    );
}

/// Resolves when the destination is disabled or shut down.
pub(crate) async fn stop_requested(control: &mut watch::Receiver<Control>) {
    loop {
        if control.changed().await.is_err() {
            return;
        }
        let c = *control.borrow_and_update();
        if c.shutdown || !c.enabled {
            return;
        }
    }
}
