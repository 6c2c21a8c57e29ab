//! The stream hub: one per configured stream. Ingest pushes each message once;
//! the hub keeps what a late joiner needs (metadata, sequence headers, the
//! current GOP) and hands a reference-counted clone of the message to every
//! destination queue. The hub never waits on a destination.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::arbiter::{
    ArbiterConfig, SourceArbiter, SourceChoice, SourceRole, Switch, SwitchReason,
};
use crate::gate::PublishGate;
use crate::lanes::{self, Lane};
use crate::message::{MediaKind, MediaMessage};
use crate::mpegts::{TsMuxer, UncarriedCodec};
use crate::profile::{StreamProfile, TrackInfo};
use crate::replay::ReplayCache;
use crate::session_timeline::SessionTimeline;
use crate::single_track::{default_track, single_track, DefaultTrack, Tracks};
use crate::standby::{StandbyClip, StandbyPlayer};
use crate::subscriber::{push_to_all, same_subscriber, Subscriber, Subscription};

/// Whether a publisher is live, and which publish session this is, so a
/// destination can tell a new publish from the one it already served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveState {
    pub live: bool,
    pub session: u64,
}

/// Why a publish is refused, whatever its protocol: ingest answers each in
/// its protocol's words (an RTMP status, an SRT reject reason).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No stream has the key.
    #[error("unknown stream key")]
    UnknownKey,
    #[error("a publisher is already live on this stream")]
    AlreadyLive,
    #[error("this stream pulls from its source (`pull`) and takes no publisher")]
    PullOnly,
    /// Cluster mode: another node holds the stream's lease.
    #[error("the stream is already live on node {node:?}")]
    LiveElsewhere { node: String },
    /// The authorisation hook (`[auth]`) said no, or could not be asked.
    #[error("{}", refusal_text(*.0))]
    Refused(Refusal),
}

/// Why the authoriser (`crate::auth`) refused a publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The hook answered 401.
    Unauthorized,
    /// The hook answered another 4xx.
    Forbidden,
    /// The hook failed (timed out, 5xx, unreachable) and is set to deny then.
    HookFailed,
    /// Too many calls in flight already, for a key Prism does not know.
    Busy,
}

fn refusal_text(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Unauthorized => "the authorisation hook refused the publish (401)",
        Refusal::Forbidden => "the authorisation hook refused the publish",
        Refusal::HookFailed => {
            "the authorisation hook failed or did not answer in time, and [auth] on_error is \"deny\""
        }
        Refusal::Busy => "too many publish authorisations in flight for unknown keys; try again",
    }
}

#[derive(Default)]
struct HubState {
    /// The connection publishing now (a token held by its `PublishGuard`).
    publisher: Option<u64>,
    /// The publish session destinations serve. It outlives a publisher that
    /// drops, for the grace period, so a quick reconnect continues it.
    session: Option<u64>,
    next_session: u64,
    /// The grace period ends then, unless a publisher resumes the session
    /// (on the runtime's clock, which tests can pause and advance).
    grace_until: Option<tokio::time::Instant>,
    /// Every source's timestamps shifted onto one timeline: no jump back
    /// to 0 for any destination.
    timeline: SessionTimeline,
    /// What a late destination is primed with: the session's metadata,
    /// sequence headers and current GOP, whatever their source.
    replay: ReplayCache,
    /// The destination queues by lane (see `lanes`), each copied on change
    /// (rare), so `publish` can take a snapshot and push outside the hub
    /// lock: pushes may write to sockets.
    subscribers: Arc<Vec<Lane>>,
    /// The stream muxed to MPEG-TS, while an SRT destination subscribes.
    ts: Option<TsFeed>,
    /// The standby clip playing now, if it is.
    standby: Option<Standby>,
    /// The connected sources, by `SourceRole`: the one on air is
    /// `publisher`; the other is kept ready to take over.
    sources: [Option<SourceSlot>; 2],
    /// Which source is on air, and when the other takes over.
    arbiter: SourceArbiter,
    /// The last publisher ended its publish itself (it unpublished): the
    /// show is over, so no standby clip; the usual grace applies.
    clean_stop: bool,
    /// What the session's messages carry, track by track.
    profile: StreamProfile,
}

/// A connected source of the stream: its primary or its backup encoder.
struct SourceSlot {
    token: u64,
    info: PublisherInfo,
    /// When its last message arrived (or it began publishing).
    last_received: Instant,
    /// Its own metadata and headers, and while it is off air its GOP: sent
    /// first whenever it goes on air (after the standby clip, or the other
    /// source), so destinations see no frozen picture while its next
    /// keyframe is awaited. On air, the session's cache holds its GOP.
    replay: ReplayCache,
    /// Its payload bitrate over its last full second.
    bitrate_bps: u64,
}

impl SourceSlot {
    /// Whether it has sent nothing for `at_least` at `now`.
    fn silent(&self, at_least: Duration, now: Instant) -> bool {
        now.saturating_duration_since(self.last_received) >= at_least
    }
}

/// The stream as MPEG-TS: muxed once, under the hub lock and in delivery
/// order (the muxer's continuity counters are the stream's), and shared by
/// every SRT destination. Each TS message is the twin of an FLV message:
/// same kind, timestamp and flags, its payload the TS packets, so queues
/// budget and drop it by the same rules.
#[derive(Default)]
struct TsFeed {
    muxer: TsMuxer,
    subscribers: Lane,
    /// The TS twins of `HubState::gop`, for late joiners.
    gop: Vec<MediaMessage>,
}

impl TsFeed {
    /// Muxes `message`; `cached` says whether it went into the GOP cache
    /// (and `gop_empty` whether that cache is empty now), which the TS GOP
    /// follows. `None` for messages with no TS form (headers, metadata).
    fn mux(
        &mut self,
        message: &MediaMessage,
        cached: bool,
        gop_empty: bool,
    ) -> Option<MediaMessage> {
        let payload = self.muxer.mux(message);
        if gop_empty || (cached && message.keyframe) {
            self.gop.clear();
        }
        if payload.is_empty() {
            return None;
        }
        let twin = MediaMessage {
            payload,
            ..message.clone()
        };
        if cached {
            self.gop.push(twin.clone());
        }
        Some(twin)
    }
}

/// What the API tells an operator about the current publish.
#[derive(Default)]
struct Warnings {
    standby: Option<String>,
    /// The primary and the backup carry different pictures or codecs.
    sources: Option<String>,
    /// One per codec SRT destinations cannot get.
    uncarried: Vec<String>,
}

/// A connected source, for the API.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    pub role: SourceRole,
    pub publisher: PublisherInfo,
    /// Connected and sending (media within `failover_after`).
    pub healthy: bool,
    /// Its media is what the destinations get.
    pub on_air: bool,
    pub bitrate_bps: u64,
}

/// The last change of the source on air: which one is on air now (none
/// between sources), and why it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceSwitched {
    pub to: Option<SourceRole>,
    pub reason: Option<SwitchReason>,
}

/// Why the standby clip is playing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyReason {
    /// The encoder is gone, or sent nothing for `standby_after`.
    Auto,
    /// An operator asked for it (the encoder may still publish).
    Manual,
}

impl StandbyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StandbyReason::Auto => "auto",
            StandbyReason::Manual => "manual",
        }
    }
}

/// A stream's standby settings.
#[derive(Clone, Debug)]
pub struct StandbyConfig {
    pub clip: Arc<StandbyClip>,
    /// A connected encoder silent this long is replaced by the clip.
    pub after: Duration,
    /// The clip plays at most this long; then the session ends.
    pub max: Duration,
}

#[derive(Debug)]
struct Standby {
    player: StandbyPlayer,
    clip: Arc<StandbyClip>,
    reason: StandbyReason,
    since: Instant,
    /// The publisher takes over at its next keyframe.
    switch_back: bool,
}

/// Why a manual standby request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandbyRequestError {
    #[error("the stream has no standby_file")]
    NoClip,
    #[error("the stream is not live")]
    NotLive,
}

/// How often the standby logic looks at the clock while a session is live.
const STANDBY_TICK: Duration = Duration::from_millis(20);

/// A publisher silent this long gives way to a new one with the stream's
/// key: a live encoder sends audio or video many times a second.
pub const SILENT_PUBLISHER: std::time::Duration = std::time::Duration::from_secs(1);

pub struct StreamHub {
    id: String,
    /// How long destinations stay connected after the publisher drops.
    reconnect_grace_ms: AtomicU64,
    state: Mutex<HubState>,
    live: watch::Sender<LiveState>,
    /// Follows source switches (for events, logs and metrics).
    source_watch: watch::Sender<SourceSwitched>,
    /// Who holds the stream: how a publishing connection learns, without
    /// polling, that it no longer does.
    holder: watch::Sender<Holder>,
    stats: HubStats,
    publisher: Mutex<Option<PublisherInfo>>,
    standby_config: Mutex<Option<StandbyConfig>>,
    /// What the API should tell an operator about the current publish.
    warnings: Mutex<Warnings>,
    /// Follows standby starts and stops (for events and logs).
    standby_watch: watch::Sender<Option<StandbyReason>>,
    /// The stream has a `pull` source: publishers are refused.
    pull_only: std::sync::atomic::AtomicBool,
    /// Cluster mode: asked before a new publisher is taken.
    gate: RwLock<Option<Arc<dyn PublishGate>>>,
    /// Wakes the stream's driver when its next deadline may have moved.
    wake: Arc<tokio::sync::Notify>,
}

impl Drop for StreamHub {
    fn drop(&mut self) {
        // The driver holds no reference: woken, it finds the hub gone.
        self.wake.notify_one();
    }
}

/// The stream's driver: the one task that owns its timers (the grace
/// period, the standby clip's pacing). It asks the hub when it is next due
/// (`poll_timeout`), sleeps until then or until woken, and runs what is due
/// (`handle_timeout`). It ends with the hub. A panic in one turn is logged
/// and counted, and the next turn runs.
async fn drive(hub: std::sync::Weak<StreamHub>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let due = {
            let Some(hub) = hub.upgrade() else { return };
            // A panic here would leave the stream without its timers: it
            // counts, and the driver looks again a tick later.
            let now = tokio::time::Instant::now();
            hub.supervised(|hub| hub.poll_timeout(now))
                .unwrap_or(Some(now + STANDBY_TICK))
        };
        match due {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => continue,
                }
            }
            None => {
                wake.notified().await;
                continue;
            }
        }
        let Some(hub) = hub.upgrade() else { return };
        hub.supervised(|hub| hub.handle_timeout(tokio::time::Instant::now()));
    }
}

impl StreamHub {
    /// Runs one step of the stream's driver; a panic in it is logged and
    /// counted (the hub's lock survives poisoning), and `None` comes back.
    fn supervised<T>(self: &Arc<Self>, step: impl FnOnce(&Arc<Self>) -> T) -> Option<T> {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self)));
        result
            .map_err(|payload| {
                crate::supervise::count_panic("stream_driver");
                let panic = crate::supervise::panic_message(payload.as_ref());
                tracing::error!(stream = %self.id, %panic, "the stream's driver panicked; it runs again at its next deadline");
            })
            .ok()
    }
}

/// How a publisher reached Prism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestProtocol {
    Rtmp = 0,
    Srt = 1,
    /// Prism plays the stream from an RTMP server (`pull = "rtmp://…"`).
    RtmpPull = 2,
    /// Prism calls an SRT listener for the stream (`pull = "srt://…"`).
    SrtPull = 3,
    /// Prism plays a file into the stream (a scheduled pre-recorded show).
    File = 4,
}

impl IngestProtocol {
    pub const ALL: [IngestProtocol; 5] = [
        IngestProtocol::Rtmp,
        IngestProtocol::Srt,
        IngestProtocol::RtmpPull,
        IngestProtocol::SrtPull,
        IngestProtocol::File,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IngestProtocol::Rtmp => "rtmp",
            IngestProtocol::Srt => "srt",
            IngestProtocol::RtmpPull => "rtmp-pull",
            IngestProtocol::SrtPull => "srt-pull",
            IngestProtocol::File => "file",
        }
    }

    /// Whether Prism fetched the stream (from a server, or a file) rather
    /// than an encoder pushing it.
    pub fn is_pull(self) -> bool {
        matches!(
            self,
            IngestProtocol::RtmpPull | IngestProtocol::SrtPull | IngestProtocol::File
        )
    }
}

/// Who is publishing, for the API and logs.
#[derive(Clone, Debug)]
pub struct PublisherInfo {
    pub protocol: IngestProtocol,
    pub remote: SocketAddr,
    pub since: SystemTime,
    /// What the stream carries, once ingest has seen it.
    pub media: Option<MediaInfo>,
}

/// The codecs and picture of a publish, as ingest announced them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MediaInfo {
    pub video_codec: Option<&'static str>,
    pub audio_codec: Option<&'static str>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
}

/// Ingest counters of one stream, updated by the publishing connection
/// (relaxed atomics: one writer, read at scrape time).
#[derive(Debug, Default)]
pub struct HubStats {
    /// Payload bytes received, by `IngestProtocol`.
    bytes: [AtomicU64; IngestProtocol::ALL.len()],
    pub video_frames: AtomicU64,
    pub audio_frames: AtomicU64,
    pub data_messages: AtomicU64,
    /// Payload bits per second over the last full second (of the source
    /// on air).
    pub bitrate_bps: AtomicU64,
    /// Source switches, by `SwitchReason`.
    pub source_switches: [AtomicU64; SwitchReason::ALL.len()],
    /// The timestamp (ms, on the session timeline) of the newest message
    /// that went out: where a live preview's picture is measured against.
    pub newest_timestamp_ms: AtomicU64,
}

impl HubStats {
    pub fn bytes(&self, protocol: IngestProtocol) -> u64 {
        self.bytes[protocol as usize].load(Ordering::Relaxed)
    }
}

impl StreamHub {
    /// A stream's hub; inside a runtime, its driver starts with it.
    pub fn new(id: impl Into<String>) -> Arc<Self> {
        let hub = Arc::new(Self {
            id: id.into(),
            reconnect_grace_ms: AtomicU64::new(0),
            state: Mutex::new(HubState::default()),
            live: watch::Sender::new(LiveState::default()),
            holder: watch::Sender::new(Holder::default()),
            source_watch: watch::Sender::new(SourceSwitched::default()),
            stats: HubStats::default(),
            standby_config: Mutex::new(None),
            warnings: Mutex::new(Warnings::default()),
            standby_watch: watch::Sender::new(None),
            publisher: Mutex::new(None),
            pull_only: std::sync::atomic::AtomicBool::new(false),
            gate: RwLock::new(None),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drive(Arc::downgrade(&hub), Arc::clone(&hub.wake)));
        }
        hub
    }

    /// Cluster mode: `gate` decides whether this node may take a publisher
    /// (see `admit`).
    pub fn set_gate(&self, gate: Arc<dyn PublishGate>) {
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = Some(gate);
    }

    /// The checks every publish of this stream goes through before it is
    /// taken, in one order, whatever the protocol: a stream that pulls its
    /// primary takes only a backup pushed to it; the source's slot must be
    /// free (its holder gone, or silent: it gives way); in cluster mode this
    /// node must hold the stream (the gate, waiting up to `patience` for
    /// another node to give it up). `try_publish_as` checks the first two
    /// again as it takes the slot, since time passes in between.
    pub async fn admit(
        &self,
        protocol: IngestProtocol,
        role: SourceRole,
        patience: Duration,
    ) -> Result<(), PublishError> {
        if self.refuses_pushed(protocol, role) {
            return Err(PublishError::PullOnly);
        }
        if self.has_active_source(role) {
            return Err(PublishError::AlreadyLive);
        }
        self.claim_lease(patience).await
    }

    /// Cluster mode: takes the stream's lease for this node (or finds it
    /// already here), as a publish does; a scheduled show asks it before it
    /// takes the stream, so no two nodes ever push it. Alone, always yes.
    pub async fn claim_lease(&self, patience: Duration) -> Result<(), PublishError> {
        let gate = self.gate.read().unwrap_or_else(|e| e.into_inner()).clone();
        match gate {
            None => Ok(()),
            Some(gate) => gate.admit(self.id(), patience).await.map_err(|elsewhere| {
                PublishError::LiveElsewhere {
                    node: elsewhere.node,
                }
            }),
        }
    }

    /// Sets how long destinations stay connected after the publisher drops,
    /// waiting for it (or another) to resume the session.
    pub fn set_reconnect_grace(&self, grace: std::time::Duration) {
        self.reconnect_grace_ms
            .store(grace.as_millis() as u64, Ordering::Relaxed);
    }

    fn reconnect_grace(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.reconnect_grace_ms.load(Ordering::Relaxed))
    }

    /// Whether the stream takes its media from a `pull` source only.
    pub fn set_pull_only(&self, pull_only: bool) {
        self.pull_only.store(pull_only, Ordering::Relaxed);
    }

    pub fn is_pull_only(&self) -> bool {
        self.pull_only.load(Ordering::Relaxed)
    }

    /// A pulled primary refuses pushed primaries; its backup may be pushed.
    fn refuses_pushed(&self, protocol: IngestProtocol, role: SourceRole) -> bool {
        self.is_pull_only() && !protocol.is_pull() && role == SourceRole::Primary
    }

    /// The stream's public id (never its key).
    pub fn id(&self) -> &str {
        &self.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    /// Records what a source carries (for the API).
    fn set_media_info(&self, token: u64, media: MediaInfo) {
        let mut state = self.lock();
        let on_air = state.publisher == Some(token);
        let Some(slot) = slot_of(&mut state, token) else {
            return;
        };
        slot.info.media = Some(media);
        if on_air {
            *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot.info.clone());
        }
        let media = |role: SourceRole| {
            state.sources[role.index()]
                .as_ref()
                .and_then(|slot| slot.info.media.clone())
        };
        let (Some(primary), Some(backup)) = (media(SourceRole::Primary), media(SourceRole::Backup))
        else {
            return;
        };
        drop(state);
        let differences = media_differences(&primary, &backup);
        let warning = (!differences.is_empty()).then(|| {
            format!(
                "the backup differs from the primary: {}; destinations get new sequence headers at each switch, and some platforms restart their transcoder on that",
                differences.join("; ")
            )
        });
        if let Some(warning) = &warning {
            tracing::warn!(stream = %self.id, "{warning}");
        }
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sources = warning;
    }

    /// The live publisher, if any.
    pub fn publisher(&self) -> Option<PublisherInfo> {
        self.publisher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Claims the stream for its primary encoder: `try_publish_as` with
    /// `SourceRole::Primary`.
    pub fn try_publish(
        self: &Arc<Self>,
        protocol: IngestProtocol,
        remote: SocketAddr,
    ) -> Result<PublishGuard, PublishError> {
        self.try_publish_as(protocol, remote, SourceRole::Primary)
    }

    /// Claims one of the stream's two sources for a publisher. A second
    /// publisher for a source that streams is refused; one that has sent
    /// nothing for `SILENT_PUBLISHER` gives way, as if it had disconnected
    /// (an SRT encoder that died, or a host that lost power, sends no close,
    /// and the encoder replacing it should not wait for the dead connection
    /// to time out: the grace period then continues the session). With
    /// nothing on air the source goes on air at once; otherwise it is kept
    /// ready, its last GOP cached, until the arbiter puts it on air.
    pub fn try_publish_as(
        self: &Arc<Self>,
        protocol: IngestProtocol,
        remote: SocketAddr,
        role: SourceRole,
    ) -> Result<PublishGuard, PublishError> {
        self.claim(protocol, remote, role, false)
    }

    /// Claims the primary source whoever holds it: a scheduled show's file
    /// takes the stream from a live encoder, which is told it was displaced.
    pub fn take_over(
        self: &Arc<Self>,
        protocol: IngestProtocol,
        remote: SocketAddr,
    ) -> Result<PublishGuard, PublishError> {
        self.claim(protocol, remote, SourceRole::Primary, true)
    }

    fn claim(
        self: &Arc<Self>,
        protocol: IngestProtocol,
        remote: SocketAddr,
        role: SourceRole,
        displace: bool,
    ) -> Result<PublishGuard, PublishError> {
        if self.refuses_pushed(protocol, role) {
            return Err(PublishError::PullOnly);
        }
        let mut state = self.lock();
        if let Some(slot) = &state.sources[role.index()] {
            let current = slot.token;
            let silent = slot.silent(SILENT_PUBLISHER, Instant::now());
            if !silent && !displace {
                return Err(PublishError::AlreadyLive);
            }
            drop(state);
            if silent {
                tracing::info!(stream = %self.id, %remote, source = role.as_str(), silent_ms = SILENT_PUBLISHER.as_millis() as u64, "the live publisher has sent nothing for a while; a new one takes over");
            } else {
                tracing::info!(stream = %self.id, source = role.as_str(), protocol = protocol.as_str(), "a scheduled source takes the stream from the live publisher");
            }
            // Recorded before the token changes, so its connection, woken
            // by the change, always reads why.
            self.holder.send_modify(|holder| holder.displaced = current);
            self.publisher_left(current);
            state = self.lock();
            if state.sources[role.index()].is_some() {
                return Err(PublishError::AlreadyLive);
            }
        }
        let now = Instant::now();
        state.next_session += 1;
        let token = state.next_session;
        let info = PublisherInfo {
            protocol,
            remote,
            since: SystemTime::now(),
            media: None,
        };
        state.sources[role.index()] = Some(SourceSlot {
            token,
            info: info.clone(),
            last_received: now,
            replay: ReplayCache::default(),
            bitrate_bps: 0,
        });
        state.arbiter.connected(role, now);
        self.holder
            .send_modify(|holder| holder.tokens[role.index()] = token);
        let guard = PublishGuard {
            hub: Arc::clone(self),
            token,
            protocol,
            window: BitrateWindow {
                started: now,
                bytes: 0,
            },
        };
        if state.publisher.is_some() {
            let on_air = state.arbiter.on_air().map_or("none", SourceRole::as_str);
            drop(state);
            tracing::info!(stream = %self.id, %remote, source = role.as_str(), on_air, "source connected; ready to take over");
            return Ok(guard);
        }
        state.arbiter.switched(role);
        state.clean_stop = false;
        state.publisher = Some(token);
        let resumed = state.session.is_some();
        let session = *state.session.get_or_insert(token);
        if let Some(standby) = &mut state.standby {
            // The clip plays on until the new encoder's first keyframe.
            if standby.reason == StandbyReason::Auto {
                standby.switch_back = true;
            }
            state.grace_until = None;
        } else if resumed {
            // Within the grace period: same session, same destination
            // connections. What was cached belongs to the old publisher, and
            // every destination restarts on the new one's first keyframe.
            state.grace_until = None;
            state.timeline.new_source();
            clear_gop(&mut state);
            for queue in all_subscribers(&state) {
                queue.await_keyframe();
            }
        }
        drop(state);
        // A live session: the standby logic runs.
        self.wake.notify_one();
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        if resumed {
            tracing::info!(stream = %self.id, %remote, source = role.as_str(), "publisher resumed the session within the grace period");
        } else {
            self.live.send_replace(LiveState {
                live: true,
                session,
            });
        }
        Ok(guard)
    }

    /// What the session carries, track by track (empty when not live).
    pub fn tracks(&self) -> Vec<TrackInfo> {
        self.lock().profile.tracks()
    }

    /// The source on air (`None` between sources, in the grace period).
    pub fn active_source(&self) -> Option<SourceRole> {
        let state = self.lock();
        state.publisher.and(state.arbiter.on_air())
    }

    /// The connected sources, primary first.
    pub fn sources(&self) -> Vec<SourceInfo> {
        let state = self.lock();
        let now = Instant::now();
        [SourceRole::Primary, SourceRole::Backup]
            .into_iter()
            .filter_map(|role| {
                let slot = state.sources[role.index()].as_ref()?;
                Some(SourceInfo {
                    role,
                    publisher: slot.info.clone(),
                    healthy: state.arbiter.is_healthy(role, now),
                    on_air: state.publisher == Some(slot.token),
                    bitrate_bps: slot.bitrate_bps,
                })
            })
            .collect()
    }

    /// An operator's choice of source (`PUT /v1/streams/{id}/source`): a
    /// forced source goes on air at its next keyframe while it is healthy;
    /// `Auto` returns to the rules.
    pub fn force_source(&self, choice: SourceChoice) {
        let mut state = self.lock();
        state.arbiter.force(choice);
        tracing::info!(stream = %self.id, choice = ?choice, "source choice set by the API");
    }

    pub fn source_choice(&self) -> SourceChoice {
        self.lock().arbiter.choice()
    }

    /// Sets the failover rules (`failover_after_ms`, `failback`,
    /// `failback_after_s`).
    pub fn set_failover(&self, config: ArbiterConfig) {
        self.lock().arbiter.set_config(config);
    }

    /// Whether `role` is held by a publisher that streams, one that
    /// `try_publish_as` would not let a newcomer replace.
    pub fn has_active_source(&self, role: SourceRole) -> bool {
        self.lock().sources[role.index()]
            .as_ref()
            .is_some_and(|slot| !slot.silent(SILENT_PUBLISHER, Instant::now()))
    }

    /// Whether a publisher holds the stream now, one that `try_publish`
    /// would not let a newcomer replace. False during the reconnect grace
    /// period, when the stream is live and waiting for its encoder.
    pub fn has_active_publisher(&self) -> bool {
        let state = self.lock();
        state.publisher.is_some() && !publisher_silent(&state, SILENT_PUBLISHER, Instant::now())
    }

    pub fn is_live(&self) -> bool {
        self.live.borrow().live
    }

    /// Follows publish starts and stops.
    pub fn watch_live(&self) -> watch::Receiver<LiveState> {
        self.live.subscribe()
    }
    /// How many follow publish starts (`watch_live`): about how many
    /// destinations start together when a publish begins.
    pub fn live_watchers(&self) -> usize {
        self.live.receiver_count()
    }

    /// Attaches a destination queue to the live publish: it is primed with the
    /// metadata, the sequence headers and the cached GOP (so it starts at once,
    /// on a keyframe), then receives every live message, of the `tracks` it
    /// takes. Returns the publish session, or `None` when no publisher is live.
    pub fn subscribe<S: Subscriber>(&self, subscriber: &Arc<S>, tracks: Tracks) -> Option<u64> {
        let subscriber: Arc<dyn Subscriber> = subscriber.clone();
        let mut state = self.lock();
        let session = state.session?;
        let replay = &state.replay;
        let subscription = subscriber.begin(replay.has_video(), !replay.has_keyframe());
        for message in replay.headers().chain(replay.gop()) {
            match tracks {
                Tracks::All => subscriber.push_replay(message.clone()),
                Tracks::Default => {
                    if let Some(single) = single_track(message) {
                        subscriber.push_replay(single);
                    }
                }
            }
        }
        let by_lane = Arc::make_mut(&mut state.subscribers);
        remove_subscriber(by_lane, &subscriber);
        if by_lane.len() < lanes::count() {
            by_lane.resize_with(lanes::count(), Lane::default);
        }
        let lane = lanes::choose(by_lane);
        add_subscriber(
            &mut by_lane[lane],
            Subscription::new(subscriber, subscription, tracks),
        );
        Some(session)
    }

    /// As `subscribe`, for a destination that takes the stream as MPEG-TS
    /// (SRT): the first one starts the stream's muxer, primed with the
    /// cached headers and GOP; later ones share it. A TS queue is primed
    /// with the GOP only: the TS carries its tables and parameter sets.
    /// MPEG-TS carries one track of each kind: the default one.
    pub fn subscribe_ts<S: Subscriber>(&self, subscriber: &Arc<S>) -> Option<u64> {
        let subscriber: Arc<dyn Subscriber> = subscriber.clone();
        let mut state = self.lock();
        let session = state.session?;
        if state.ts.is_none() {
            let mut feed = TsFeed::default();
            for header in state.replay.sequence_headers().filter_map(single_track) {
                feed.muxer.mux(&header);
            }
            for message in state.replay.gop().iter().filter_map(single_track) {
                feed.mux(&message, true, false);
            }
            while let Some(codec) = feed.muxer.take_uncarried() {
                self.warn_uncarried(codec);
            }
            state.ts = Some(feed);
        }
        let has_video = state.replay.has_video();
        let feed = state.ts.as_mut().expect("created above");
        let on_keyframe = feed.gop.iter().any(|message| message.keyframe);
        let subscription = subscriber.begin(has_video, !on_keyframe);
        for message in &feed.gop {
            subscriber.push_replay(message.clone());
        }
        add_subscriber(
            &mut feed.subscribers,
            Subscription::new(subscriber, subscription, Tracks::All),
        );
        Some(session)
    }

    /// Ends the live session at once, grace period or not; the publishing
    /// connection sees `is_current` turn false and closes. For a stream
    /// being removed.
    pub fn end_current_publish(&self) {
        self.end_session_because(PublishEnded::Ended);
    }

    pub fn unsubscribe<S: Subscriber>(&self, subscriber: &Arc<S>) {
        let subscriber: Arc<dyn Subscriber> = subscriber.clone();
        let mut state = self.lock();
        remove_subscriber(
            Arc::make_mut(&mut state.subscribers).as_mut_slice(),
            &subscriber,
        );
        if let Some(feed) = &mut state.ts {
            Arc::make_mut(&mut feed.subscribers).retain(|s| !s.is_of(&subscriber));
            if feed.subscribers.is_empty() {
                // No SRT destination left: no muxing, no TS GOP held.
                state.ts = None;
            }
        }
    }

    fn publish(self: &Arc<Self>, token: u64, mut message: MediaMessage, bitrate: Option<u64>) {
        let mut state = self.lock();
        let now = message.received_at;
        let Some(role) = role_of(&state, token) else {
            return;
        };
        let on_air = state.publisher == Some(token);
        let slot = state.sources[role.index()]
            .as_mut()
            .expect("role_of found it");
        slot.last_received = now;
        if let Some(bps) = bitrate {
            slot.bitrate_bps = bps;
        }
        if on_air {
            slot.replay.record_headers(&message);
        } else {
            slot.replay.record(&message);
        }
        if message.kind != MediaKind::Data {
            state.arbiter.media(role, now);
        }
        if !on_air {
            self.consider_switch(state, role, now);
            return;
        }
        if let Some(bps) = bitrate {
            self.stats.bitrate_bps.store(bps, Ordering::Relaxed);
        }
        if state.standby.is_some() {
            return self.publish_during_standby(state, role, message);
        }
        state.timeline.rebase(&mut message);
        if state.timeline.goes_back(&message) {
            return;
        }
        // The path of every message: a slice of one, no allocation.
        self.deliver(state, std::slice::from_ref(&message));
    }

    /// The source on air speaks while the standby clip plays: it takes over
    /// at its next keyframe (a manual standby waits for `off`).
    fn publish_during_standby(
        self: &Arc<Self>,
        mut state: std::sync::MutexGuard<'_, HubState>,
        role: SourceRole,
        mut message: MediaMessage,
    ) {
        let slot = state.sources[role.index()]
            .as_ref()
            .expect("role_of found it");
        let has_video = slot.replay.has_video();
        let standby = state.standby.as_mut().expect("standby plays");
        if standby.reason == StandbyReason::Auto {
            // It was silent, or reconnected: it is back.
            standby.switch_back = true;
        }
        let takes_over = standby.switch_back
            && (message.keyframe || (message.kind == MediaKind::Audio && !has_video));
        if !takes_over {
            return;
        }
        state.standby = None;
        state.timeline.new_source();
        state.timeline.rebase(&mut message);
        // Its own sequence headers first: the clip's are what the
        // destinations decode with now.
        let slot = state.sources[role.index()]
            .as_ref()
            .expect("role_of found it");
        let mut out: Vec<MediaMessage> = slot
            .replay
            .headers()
            .map(|header| MediaMessage {
                timestamp: message.timestamp,
                ..header.clone()
            })
            .collect();
        self.standby_watch.send_replace(None);
        tracing::info!(stream = %self.id, "the encoder is back: standby ends at its keyframe");
        out.push(message);
        self.deliver(state, &out);
    }

    /// Records each message (timeline, caches) and pushes it to every
    /// destination queue, after releasing the lock. What single-track
    /// consumers get of a multitrack message is made here, once for all of
    /// them.
    fn deliver(&self, mut state: std::sync::MutexGuard<'_, HubState>, messages: &[MediaMessage]) {
        let mut twins = Vec::new();
        let mut uncarried = Vec::new();
        // Empty while every message is its own single-track form (no
        // multitrack): the common case allocates nothing.
        let mut singles: Vec<DefaultTrack> = Vec::new();
        if let Some(last) = messages.last() {
            self.stats
                .newest_timestamp_ms
                .store(last.timestamp, Ordering::Relaxed);
        }
        for (at, message) in messages.iter().enumerate() {
            let cached = record(&mut state, message);
            state.profile.observe(message);
            let gop_empty = state.replay.gop().is_empty();
            let single = default_track(message);
            let for_ts = match &single {
                DefaultTrack::Unchanged => Some(message),
                DefaultTrack::Track(track) => Some(track),
                DefaultTrack::Nothing => None,
            };
            if let (Some(feed), Some(for_ts)) = (&mut state.ts, for_ts) {
                twins.extend(feed.mux(for_ts, cached, gop_empty));
                uncarried.extend(std::iter::from_fn(|| feed.muxer.take_uncarried()));
            }
            if !singles.is_empty() || !matches!(single, DefaultTrack::Unchanged) {
                singles.resize(at, DefaultTrack::Unchanged);
                singles.push(single);
            }
        }
        // A destination subscribing from here on was replayed these messages
        // from the caches; one in the snapshot was not.
        let lanes = Arc::clone(&state.subscribers);
        let ts_subscribers = state.ts.as_ref().map(|feed| Arc::clone(&feed.subscribers));
        drop(state);
        for codec in uncarried {
            self.warn_uncarried(codec);
        }
        // Other lanes first, so their threads push while this one does.
        for (lane, queues) in lanes.iter().enumerate().skip(1) {
            if !queues.is_empty() {
                lanes::hand_over(lane, queues, messages, &singles);
            }
        }
        if let Some(queues) = lanes.first() {
            push_to_all(queues, messages, &singles);
        }
        if let Some(queues) = &ts_subscribers {
            push_to_all(queues, &twins, &[]);
        }
    }

    /// An off-air source's message came in: puts it on air when the
    /// arbiter wants it. A failback or a forced switch waits for its next
    /// keyframe; a failover (the source on air is gone or silent) starts
    /// from its cached keyframe at once, so destinations see no frozen
    /// picture. Without video, any message is a place to cut.
    fn consider_switch(
        self: &Arc<Self>,
        mut state: std::sync::MutexGuard<'_, HubState>,
        role: SourceRole,
        now: Instant,
    ) {
        let Some(switch) = state.arbiter.decide(now).filter(|s| s.to == role) else {
            return;
        };
        let replay = &state.sources[role.index()]
            .as_ref()
            .expect("connected")
            .replay;
        let ready = if !replay.has_video() {
            !replay.gop().is_empty() || replay.has_audio()
        } else if switch.reason.is_urgent() {
            replay.has_keyframe()
        } else {
            // Its keyframe just arrived.
            replay.gop().last().is_some_and(|message| message.keyframe)
        };
        if ready {
            self.cut_over(state, role, switch);
        }
    }

    /// Puts `role` on air: its sequence headers and metadata, then its
    /// cached GOP from the keyframe, all on the session's timeline after
    /// the last message sent. Ends the standby clip and the grace period.
    fn cut_over(
        self: &Arc<Self>,
        mut state: std::sync::MutexGuard<'_, HubState>,
        role: SourceRole,
        switch: Switch,
    ) {
        let from = state.arbiter.on_air();
        let slot = state.sources[role.index()].as_mut().expect("connected");
        let gop = slot.replay.take_gop();
        let headers: Vec<MediaMessage> = slot.replay.headers().cloned().collect();
        let (token, info) = (slot.token, slot.info.clone());
        state.arbiter.switched(role);
        state.publisher = Some(token);
        state.clean_stop = false;
        state.grace_until = None;
        let ended_standby = state.standby.take().is_some();
        state.timeline.new_source();
        clear_gop(&mut state);
        for queue in all_subscribers(&state) {
            queue.await_keyframe();
        }
        let mut media = gop;
        for message in &mut media {
            state.timeline.rebase(message);
        }
        media.retain(|message| !state.timeline.goes_back(message));
        let start = media.first().map(|m| m.timestamp);
        let start = start.unwrap_or_else(|| state.timeline.next_slot().unwrap_or(0));
        let mut out: Vec<MediaMessage> = headers
            .into_iter()
            .map(|header| MediaMessage {
                timestamp: start,
                ..header
            })
            .collect();
        out.extend(media);
        let session = state.session;
        if session.is_none() {
            state.session = Some(token);
        }
        self.stats.source_switches[switch.reason as usize].fetch_add(1, Ordering::Relaxed);
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = Some(info);
        if ended_standby {
            self.standby_watch.send_replace(None);
        }
        self.source_watch.send_replace(SourceSwitched {
            to: Some(role),
            reason: Some(switch.reason),
        });
        tracing::info!(
            stream = %self.id,
            source = role.as_str(),
            from = from.map_or("none", SourceRole::as_str),
            reason = switch.reason.as_str(),
            "source switch: destinations continue from the {}",
            role.as_str()
        );
        self.deliver(state, &out);
        if session.is_none() {
            self.wake.notify_one();
            self.live.send_replace(LiveState {
                live: true,
                session: token,
            });
        }
    }

    /// Sets (or clears) the stream's standby clip and timings; a live
    /// session starts being watched at once.
    pub fn set_standby(self: &Arc<Self>, config: Option<StandbyConfig>) {
        let configured = config.is_some();
        *self
            .standby_config
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = config;
        if configured {
            self.wake.notify_one();
        }
    }

    fn standby_config(&self) -> Option<StandbyConfig> {
        self.standby_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Warnings about the current publish, for the API: the standby clip's
    /// codec parameters differ from the encoder's (set by ingest), a codec
    /// SRT destinations cannot get. Cleared when the session ends.
    pub fn warnings(&self) -> Vec<String> {
        let warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        warnings
            .standby
            .iter()
            .chain(&warnings.sources)
            .chain(&warnings.uncarried)
            .cloned()
            .collect()
    }

    /// Sets (or clears) the warning that the standby clip differs from the
    /// encoder.
    pub fn set_standby_warning(&self, warning: Option<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .standby = warning;
    }

    /// Says, in the log and the API, that the stream's SRT destinations
    /// get none of a codec MPEG-TS does not carry here.
    fn warn_uncarried(&self, codec: UncarriedCodec) {
        let warning = format!(
            "SRT destinations get no {codec}: MPEG-TS carries H.264 or HEVC video and AAC audio; \
             set the encoder to those codecs"
        );
        tracing::warn!(stream = %self.id, %codec, "{warning}");
        let mut warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        if !warnings.uncarried.contains(&warning) {
            warnings.uncarried.push(warning);
        }
    }

    /// Why the standby clip is playing, if it is.
    pub fn standby(&self) -> Option<StandbyReason> {
        *self.standby_watch.borrow()
    }

    /// Follows source switches.
    pub fn watch_sources(&self) -> watch::Receiver<SourceSwitched> {
        self.source_watch.subscribe()
    }

    /// Follows standby starts and stops.
    pub fn watch_standby(&self) -> watch::Receiver<Option<StandbyReason>> {
        self.standby_watch.subscribe()
    }

    /// The configured clip, for comparing codecs with an encoder's.
    pub fn standby_clip(&self) -> Option<Arc<StandbyClip>> {
        self.standby_config().map(|c| c.clip)
    }

    /// Puts a live stream on standby, or takes it off (the encoder then
    /// takes over at its next keyframe; with no encoder, the clip plays on
    /// as an automatic standby).
    pub fn set_manual_standby(self: &Arc<Self>, on: bool) -> Result<(), StandbyRequestError> {
        let config = self.standby_config().ok_or(StandbyRequestError::NoClip)?;
        let mut state = self.lock();
        if state.session.is_none() {
            return Err(StandbyRequestError::NotLive);
        }
        let now = Instant::now();
        let has_publisher = state.publisher.is_some();
        match (on, &mut state.standby) {
            (true, Some(standby)) => {
                standby.reason = StandbyReason::Manual;
                standby.switch_back = false;
                self.standby_watch.send_replace(Some(StandbyReason::Manual));
                Ok(())
            }
            (true, None) => {
                let out = self.start_standby(&mut state, &config, StandbyReason::Manual, now);
                self.deliver(state, &out);
                Ok(())
            }
            (false, Some(standby)) => {
                standby.reason = StandbyReason::Auto;
                standby.switch_back = has_publisher;
                self.standby_watch.send_replace(Some(StandbyReason::Auto));
                Ok(())
            }
            (false, None) => Ok(()),
        }
    }

    /// Starts the clip on the session timeline, one frame after the last
    /// message sent; returns its headers and first frames to deliver.
    fn start_standby(
        &self,
        state: &mut HubState,
        config: &StandbyConfig,
        reason: StandbyReason,
        now: Instant,
    ) -> Vec<MediaMessage> {
        let base = state.timeline.next_slot().unwrap_or(0);
        let (mut player, mut out) = StandbyPlayer::start(&config.clip, base, now);
        player.due(&config.clip, now, &mut out);
        // Late joiners start on the clip's GOP from here.
        clear_gop(state);
        state.standby = Some(Standby {
            player,
            clip: Arc::clone(&config.clip),
            reason,
            since: now,
            switch_back: false,
        });
        self.standby_watch.send_replace(Some(reason));
        tracing::info!(stream = %self.id, reason = reason.as_str(), "standby: destinations get the standby clip");
        out
    }

    /// Runs the standby logic at `now`: starts the clip when the encoder is
    /// gone or silent, plays what is due, ends the session after
    /// `standby.max`. False once the session has ended (the driver stops).
    pub fn tick_standby(self: &Arc<Self>, now: Instant) -> bool {
        let Some(config) = self.standby_config() else {
            return self.lock().standby.is_some() && self.stop_unconfigured_standby();
        };
        let mut state = self.lock();
        if state.session.is_none() {
            return false;
        }
        if let Some(standby) = &mut state.standby {
            if now.saturating_duration_since(standby.since) >= config.max {
                drop(state);
                tracing::info!(stream = %self.id, max_s = config.max.as_secs(), "standby played for standby_max_s; ending the publish");
                self.end_session();
                return false;
            }
            let mut out = Vec::new();
            let clip = Arc::clone(&standby.clip);
            standby.player.due(&clip, now, &mut out);
            if !out.is_empty() {
                self.deliver(state, &out);
            }
            return true;
        }
        let gone = state.publisher.is_none() && !state.clean_stop;
        let silent = publisher_silent(&state, config.after, now);
        // The other source is about to take over (at its next message): the
        // clip is the last resort, after it.
        let other_ready = [SourceRole::Primary, SourceRole::Backup]
            .into_iter()
            .any(|role| {
                state.arbiter.on_air() != Some(role) && state.arbiter.is_healthy(role, now)
            });
        if (gone || silent) && !other_ready {
            let out = self.start_standby(&mut state, &config, StandbyReason::Auto, now);
            self.deliver(state, &out);
        }
        true
    }

    /// The clip was removed from the config while playing: the stream goes
    /// back to plain grace (it ends if no encoder is there).
    fn stop_unconfigured_standby(self: &Arc<Self>) -> bool {
        let mut state = self.lock();
        state.standby = None;
        let publisher = state.publisher;
        drop(state);
        self.standby_watch.send_replace(None);
        self.set_standby_warning(None);
        if publisher.is_none() {
            self.end_session();
            return false;
        }
        true
    }

    /// When `handle_timeout` must run next, on the runtime's clock: the
    /// end of the grace period, and while a session is live with a standby
    /// clip (configured or playing), every `STANDBY_TICK` to pace it.
    /// `None`: nothing is due until something else happens.
    pub fn poll_timeout(&self, now: tokio::time::Instant) -> Option<tokio::time::Instant> {
        let configured = self.standby_config().is_some();
        let state = self.lock();
        let standby = (state.session.is_some() && (configured || state.standby.is_some()))
            .then_some(now + STANDBY_TICK);
        [state.grace_until, standby].into_iter().flatten().min()
    }

    /// Runs what is due at `now` (the runtime's clock): ends the session
    /// when the grace period is over, and runs the standby logic.
    pub fn handle_timeout(self: &Arc<Self>, now: tokio::time::Instant) {
        let grace_over = self.lock().grace_until.is_some_and(|until| until <= now);
        if grace_over {
            tracing::info!(stream = %self.id, "no publisher came back within the grace period; ending the publish");
            self.end_session();
            return;
        }
        let live = self.lock().session.is_some();
        if live {
            self.tick_standby(Instant::now());
        }
    }

    /// The publishing connection ended. Destinations stay connected for the
    /// grace period; if no publisher resumes the session by then, it ends.
    fn publisher_left(self: &Arc<Self>, token: u64) {
        let mut state = self.lock();
        let Some(role) = role_of(&state, token) else {
            return;
        };
        let now = Instant::now();
        state.sources[role.index()] = None;
        state.arbiter.disconnected(role, now);
        // One source left: nothing to compare.
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sources = None;
        self.holder
            .send_modify(|holder| holder.tokens[role.index()] = 0);
        if state.publisher != Some(token) {
            tracing::info!(stream = %self.id, source = role.as_str(), "off-air source disconnected");
            return;
        }
        state.publisher = None;
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.stats.bitrate_bps.store(0, Ordering::Relaxed);
        // The other source takes over at once when it can; otherwise at
        // its next keyframe, within the grace period below.
        if let Some(switch) = state.arbiter.decide(now) {
            let slot = state.sources[switch.to.index()].as_ref().expect("healthy");
            if slot.replay.has_keyframe() {
                self.cut_over(state, switch.to, switch);
                return;
            }
        }
        self.source_watch.send_replace(SourceSwitched {
            to: None,
            reason: Some(crate::arbiter::SwitchReason::Disconnect),
        });
        // With a standby clip the destinations are fed it meanwhile, for up
        // to its `max` (the standby logic ends the session then).
        let grace = match self.standby_config() {
            Some(config) if !state.clean_stop => self
                .reconnect_grace()
                .max(config.max + Duration::from_secs(1)),
            _ => self.reconnect_grace(),
        };
        // Without a runtime (unit tests) there is no driver to end the
        // grace: it ends at once.
        if grace.is_zero() || tokio::runtime::Handle::try_current().is_err() {
            drop(state);
            self.end_session();
            return;
        }
        state.grace_until = Some(tokio::time::Instant::now() + grace);
        drop(state);
        self.wake.notify_one();
        tracing::info!(stream = %self.id, grace_s = grace.as_secs_f64(), "publisher gone; destinations stay connected for the grace period");
    }

    /// Ends the session: destinations drain, unpublish and disconnect.
    fn end_session(&self) {
        self.end_session_because(PublishEnded::SessionOver);
    }

    /// As `end_session`; a source still connected is told `why`.
    fn end_session_because(&self, why: PublishEnded) {
        let mut state = self.lock();
        let Some(session) = state.session else { return };
        for queue in all_subscribers(&state) {
            queue.end();
        }
        *state = HubState {
            next_session: state.next_session,
            arbiter: SourceArbiter::new(state.arbiter.config()),
            ..HubState::default()
        };
        self.holder.send_modify(|holder| {
            holder.tokens = [0; 2];
            holder.ended = why;
        });
        drop(state);
        self.standby_watch.send_replace(None);
        self.source_watch.send_replace(SourceSwitched::default());
        *self.warnings.lock().unwrap_or_else(|e| e.into_inner()) = Warnings::default();
        *self.publisher.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.stats.bitrate_bps.store(0, Ordering::Relaxed);
        self.live.send_replace(LiveState {
            live: false,
            session,
        });
    }
}

/// Whether a source is on air and has sent nothing for `at_least`.
fn publisher_silent(state: &HubState, at_least: Duration, now: Instant) -> bool {
    let on_air = state.publisher.and_then(|token| role_of(state, token));
    on_air
        .and_then(|role| state.sources[role.index()].as_ref())
        .is_some_and(|slot| slot.silent(at_least, now))
}

/// How two sources' pictures and codecs differ, each as `what: primary vs
/// backup`.
fn media_differences(primary: &MediaInfo, backup: &MediaInfo) -> Vec<String> {
    let picture = |m: &MediaInfo| match (m.width, m.height) {
        (Some(w), Some(h)) => format!("{w}x{h}"),
        _ => "unknown".into(),
    };
    let codec = |c: Option<&'static str>| c.unwrap_or("none").to_string();
    [
        ("resolution", picture(primary), picture(backup)),
        (
            "video",
            codec(primary.video_codec),
            codec(backup.video_codec),
        ),
        (
            "audio",
            codec(primary.audio_codec),
            codec(backup.audio_codec),
        ),
    ]
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(what, a, b)| format!("{what} {a} vs {b}"))
    .collect()
}

/// Which source a publish token holds, if it still holds one.
fn role_of(state: &HubState, token: u64) -> Option<SourceRole> {
    [SourceRole::Primary, SourceRole::Backup]
        .into_iter()
        .find(|role| {
            state.sources[role.index()]
                .as_ref()
                .is_some_and(|s| s.token == token)
        })
}

fn slot_of(state: &mut HubState, token: u64) -> Option<&mut SourceSlot> {
    let role = role_of(state, token)?;
    state.sources[role.index()].as_mut()
}

fn add_subscriber(lane: &mut Lane, subscription: Subscription) {
    let lane = Arc::make_mut(lane);
    lane.retain(|s| !same_subscriber(&s.subscriber, &subscription.subscriber));
    lane.push(subscription);
}

fn remove_subscriber(by_lane: &mut [Lane], subscriber: &Arc<dyn Subscriber>) {
    for lane in by_lane {
        if lane.iter().any(|s| s.is_of(subscriber)) {
            Arc::make_mut(lane).retain(|s| !s.is_of(subscriber));
        }
    }
}

/// Every subscriber of the session, FLV and TS.
fn all_subscribers(state: &HubState) -> impl Iterator<Item = &Arc<dyn Subscriber>> {
    let ts = state.ts.iter().flat_map(|feed| feed.subscribers.iter());
    state
        .subscribers
        .iter()
        .flat_map(|lane| lane.iter())
        .chain(ts)
        .map(|s| &s.subscriber)
}

/// Empties the GOP cache (and its TS twin): late joiners wait for the
/// next keyframe.
fn clear_gop(state: &mut HubState) {
    state.replay.clear_gop();
    if let Some(feed) = &mut state.ts {
        feed.gop.clear();
    }
}

/// Follows the timeline and keeps what a late joiner needs: metadata,
/// sequence headers and the current GOP. True when `message` went into the
/// GOP cache.
fn record(state: &mut HubState, message: &MediaMessage) -> bool {
    state.timeline.record(message);
    state.replay.record(message)
}

/// Why a publish stopped holding its stream while its connection lived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishEnded {
    /// It had sent nothing for `SILENT_PUBLISHER` and another encoder
    /// publishing the same key took over.
    Displaced,
    /// The hub ended it: the stream was removed.
    Ended,
    /// The session ended around it (the grace period or the standby clip's
    /// time ran out) while it sent nothing.
    SessionOver,
}

impl PublishEnded {
    /// What the log says, and what an RTMP encoder is told.
    pub fn reason(self) -> &'static str {
        match self {
            PublishEnded::Displaced => {
                "another encoder took over the stream after this one sent nothing for 1 s"
            }
            PublishEnded::Ended => "the stream was removed",
            PublishEnded::SessionOver => {
                "the stream's session ended while this source sent nothing"
            }
        }
    }
}

/// The publish tokens holding the stream's sources (0: none), and the
/// last one a newcomer displaced.
#[derive(Clone, Copy, Debug)]
struct Holder {
    tokens: [u64; 2],
    displaced: u64,
    /// Why the tokens were last cleared together.
    ended: PublishEnded,
}

impl Default for Holder {
    fn default() -> Self {
        Self {
            tokens: [0; 2],
            displaced: 0,
            ended: PublishEnded::Ended,
        }
    }
}

/// Held by the ingest connection that publishes one of the stream's
/// sources. Dropping it (the connection ended, cleanly or not) ends that
/// source: the other takes over, or the grace period begins.
pub struct PublishGuard {
    hub: Arc<StreamHub>,
    token: u64,
    protocol: IngestProtocol,
    window: BitrateWindow,
}

struct BitrateWindow {
    started: Instant,
    bytes: u64,
}

impl PublishGuard {
    pub fn push(&mut self, message: MediaMessage) {
        let stats = &self.hub.stats;
        let len = message.len() as u64;
        stats.bytes[self.protocol as usize].fetch_add(len, Ordering::Relaxed);
        let frames = match message.kind {
            MediaKind::Video => &stats.video_frames,
            MediaKind::Audio => &stats.audio_frames,
            MediaKind::Data => &stats.data_messages,
        };
        frames.fetch_add(1, Ordering::Relaxed);
        let window = &mut self.window;
        window.bytes += len;
        let elapsed = message
            .received_at
            .saturating_duration_since(window.started);
        let mut bitrate = None;
        if elapsed.as_millis() >= 1000 {
            bitrate = Some((window.bytes as f64 * 8.0 / elapsed.as_secs_f64()) as u64);
            window.started = message.received_at;
            window.bytes = 0;
        }
        self.hub.publish(self.token, message, bitrate);
    }

    pub fn hub(&self) -> &Arc<StreamHub> {
        &self.hub
    }

    /// False once the hub ended this publish on its own (the stream was
    /// removed, or another encoder took over): the connection should close.
    pub fn is_current(&self) -> bool {
        role_of(&self.hub.lock(), self.token).is_some()
    }

    /// Who publishes this source, while it holds it.
    pub fn publisher(&self) -> Option<PublisherInfo> {
        let mut state = self.hub.lock();
        slot_of(&mut state, self.token).map(|slot| slot.info.clone())
    }

    pub fn protocol(&self) -> IngestProtocol {
        self.protocol
    }

    /// Records what this source carries (for the API).
    pub fn set_media_info(&self, media: MediaInfo) {
        self.hub.set_media_info(self.token, media);
    }

    /// Resolves when this publish no longer holds the stream, with why.
    /// Owned, so a connection can keep it across reads.
    pub fn ended(&self) -> impl std::future::Future<Output = PublishEnded> + Send + 'static {
        let mut holder = self.hub.holder.subscribe();
        let token = self.token;
        async move {
            match holder
                .wait_for(|holder| !holder.tokens.contains(&token))
                .await
            {
                Ok(holder) if holder.displaced == token => PublishEnded::Displaced,
                Ok(holder) => holder.ended,
                Err(_) => PublishEnded::Ended,
            }
        }
    }
}

impl PublishGuard {
    /// The encoder ended its publish itself (RTMP `FCUnpublish`): the show
    /// is over rather than interrupted, so the standby clip does not start;
    /// a publisher may still resume within the grace period.
    pub fn finish(self) {
        self.hub.lock().clean_stop = true;
    }
}

impl Drop for PublishGuard {
    fn drop(&mut self) {
        self.hub.publisher_left(self.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv;
    use crate::replay::GOP_CACHE_MAX_MESSAGES;
    use crate::subscriber::inbox::Inbox;
    use bytes::Bytes;

    fn addr() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// A hub with a 2 s clip that starts after 1 s of silence.
    fn hub_with_standby() -> Arc<StreamHub> {
        let hub = StreamHub::new("main");
        let clip = StandbyClip::from_flv(&crate::standby::tests::flv_clip(2, true)).unwrap();
        hub.set_standby(Some(StandbyConfig {
            clip: Arc::new(clip),
            after: Duration::from_millis(1000),
            max: Duration::from_secs(60),
        }));
        hub
    }

    fn video(ts: u64, key: bool) -> MediaMessage {
        let body = vec![if key { 0x17 } else { 0x27 }, 0x01, 0, 0, 0, 0xab];
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(body))
    }

    #[test]
    fn second_publisher_is_refused_until_the_first_ends() {
        let hub = StreamHub::new("main");
        let first = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        assert!(matches!(
            hub.try_publish(IngestProtocol::Rtmp, addr()),
            Err(PublishError::AlreadyLive)
        ));
        assert_eq!(hub.publisher().unwrap().protocol, IngestProtocol::Rtmp);
        drop(first);
        assert!(!hub.is_live());
        assert!(hub.publisher().is_none());
        assert!(hub.try_publish(IngestProtocol::Rtmp, addr()).is_ok());
    }

    /// A publish learns that it no longer holds the stream, and why: a
    /// newcomer took over from it after its silence, or the stream ended.
    #[tokio::test]
    async fn a_publish_learns_it_was_displaced_or_ended() {
        let hub = StreamHub::new("main");
        let first = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let first_ended = first.ended();
        hub.lock().sources[0].as_mut().unwrap().last_received =
            Instant::now() - SILENT_PUBLISHER * 2;
        let second = hub.try_publish(IngestProtocol::Srt, addr()).unwrap();
        assert_eq!(first_ended.await, PublishEnded::Displaced);
        // Asked after the fact, the answer is the same.
        assert_eq!(first.ended().await, PublishEnded::Displaced);
        // The displaced guard's drop leaves the newcomer be.
        drop(first);
        assert!(second.is_current());

        let second_ended = second.ended();
        hub.end_current_publish();
        assert_eq!(second_ended.await, PublishEnded::Ended);
    }

    /// Destinations past `SPREAD_FROM` are pushed by a fan-out thread, and
    /// every destination still gets every message once, in order, however
    /// the destinations join and leave meanwhile.
    #[tokio::test]
    async fn a_large_stream_spreads_its_destinations_and_each_keeps_its_order() {
        crate::lanes::start(1).unwrap();
        assert_eq!(crate::lanes::count(), 2);
        let hub = StreamHub::new("wide");
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        publish.push(MediaMessage::new(
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        ));
        publish.push(video(0, true));
        let queues: Vec<Arc<Inbox>> = (0..40).map(|_| Inbox::new()).collect();
        for queue in &queues {
            hub.subscribe(queue, Tracks::All).unwrap();
        }
        let lane_sizes: Vec<usize> = hub.lock().subscribers.iter().map(|l| l.len()).collect();
        assert_eq!(lane_sizes.iter().sum::<usize>(), 40);
        assert!(lane_sizes[1] >= 10, "lanes {lane_sizes:?}");
        for n in 1..=300u64 {
            publish.push(video(n * 10, n % 50 == 0));
            if n == 150 {
                // One leaves and comes back mid-stream: it starts again from
                // the cached GOP, in order.
                hub.unsubscribe(&queues[39]);
                hub.subscribe(&queues[39], Tracks::All).unwrap();
            }
        }
        // Collect until the fan-out thread has pushed the last message.
        let mut received: Vec<Vec<MediaMessage>> = vec![Vec::new(); queues.len()];
        for _ in 0..200 {
            for (queue, out) in queues.iter().zip(&mut received) {
                out.extend(queue.take());
            }
            let done = |out: &Vec<MediaMessage>| out.last().map(|m| m.timestamp) == Some(3000);
            if received.iter().all(done) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for (i, out) in received.iter().enumerate() {
            let stamps: Vec<u64> = out
                .iter()
                .filter(|m| !m.sequence_header)
                .map(|m| m.timestamp)
                .collect();
            let expected: Vec<u64> = if i == 39 {
                (150..=300).map(|n| n * 10).collect()
            } else {
                (0..=300).map(|n| n * 10).collect()
            };
            assert_eq!(stamps, expected, "destination {i}");
        }
    }

    #[tokio::test]
    async fn late_joiner_gets_headers_then_the_current_gop_sharing_payloads() {
        let hub = StreamHub::new("main");
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let header =
            MediaMessage::new(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        publish.push(header);
        publish.push(video(0, true));
        publish.push(video(33, false));
        publish.push(video(66, true));
        let shared = video(99, false);
        publish.push(shared.clone());

        let queue = Inbox::new();
        assert!(hub.subscribe(&queue, Tracks::All).is_some());
        publish.push(video(132, false));
        let out = queue.take();
        let stamps: Vec<u64> = out.iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, vec![0, 66, 99, 132]);
        assert!(out[0].sequence_header);
        // Zero copy: the queued message points at the very bytes ingest pushed.
        assert_eq!(out[2].payload.as_ptr(), shared.payload.as_ptr());

        drop(publish);
        assert!(queue.ended());
    }

    /// Track 1 of a multitrack stream as FFmpeg 8 sends it: a OneTrack
    /// multitrack message beside track 0's plain ones.
    fn track_1(ts: u64, packet_type: u8, key: bool) -> MediaMessage {
        let frame_type = if key { 1 } else { 2 };
        let payload = crate::multitrack::tests::video(
            frame_type,
            0,
            packet_type,
            Some(b"avc1"),
            &[(None, 1, b"\x00\x00\x00track-1")],
        );
        MediaMessage::new(MediaKind::Video, ts, payload)
    }

    #[tokio::test]
    async fn default_consumers_get_track_0_alone_and_all_consumers_every_track() {
        let hub = StreamHub::new("main");
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let header =
            MediaMessage::new(MediaKind::Video, 0, Bytes::from_static(&[0x17, 0, 0, 0, 0]));
        publish.push(header);
        publish.push(track_1(0, 0, true));
        publish.push(video(0, true));
        publish.push(track_1(0, 1, true));
        let (single, all) = (Inbox::new(), Inbox::new());
        hub.subscribe(&single, Tracks::Default).unwrap();
        hub.subscribe(&all, Tracks::All).unwrap();
        publish.push(video(40, false));
        publish.push(track_1(40, 1, false));
        let (single_queue, all_queue) = (single, all);
        let single = single_queue.take();
        let all = all_queue.take();
        // Replayed: both tracks' headers and the GOP from track 0's keyframe.
        assert_eq!(all.len(), 6, "{all:?}");
        assert_eq!(single.len(), 3, "{single:?}");
        assert!(single
            .iter()
            .all(|m| crate::multitrack::read(m.kind, &m.payload) == Ok(None)));
        assert!(single[0].sequence_header && single[1].keyframe);
        // Nothing copied for the plain track.
        assert_eq!(single[2].payload.as_ptr(), all[4].payload.as_ptr());

        // A third track appears mid-stream: only the all-tracks consumer
        // sees it, and the stream's tracks list it.
        let track_2 = crate::multitrack::tests::video(
            2,
            0,
            1,
            Some(b"avc1"),
            &[(None, 2, b"\x00\x00\x00track-2")],
        );
        publish.push(MediaMessage::new(MediaKind::Video, 80, track_2));
        assert!(single_queue.take().is_empty());
        assert_eq!(all_queue.take().len(), 1);
        let ids: Vec<u8> = hub.tracks().iter().map(|t| t.id).collect();
        assert_eq!(ids, [0, 1, 2]);
    }

    /// The primary drops: the backup goes on air at once, from its cached
    /// keyframe, headers first, one frame after the last frame sent; none
    /// of its media reached the destination before. Its audio stamped
    /// before that keyframe never goes back in time.
    #[tokio::test]
    async fn a_backup_takes_over_at_once_from_its_cached_keyframe() {
        let hub = StreamHub::new("main");
        let mut primary = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let mut backup = hub
            .try_publish_as(IngestProtocol::Srt, addr(), SourceRole::Backup)
            .unwrap();
        let header = |marker| {
            MediaMessage::new(
                MediaKind::Video,
                0,
                Bytes::from(vec![0x17, 0, 0, 0, 0, marker]),
            )
        };
        let audio = |ts| MediaMessage::new(MediaKind::Audio, ts, Bytes::from_static(&[0xaf, 1, 7]));
        primary.push(header(1));
        primary.push(video(1000, true));
        let queue = Inbox::new();
        hub.subscribe(&queue, Tracks::All).unwrap();
        primary.push(video(1040, false));
        primary.push(audio(1050));
        backup.push(header(2));
        backup.push(video(500_000, false)); // before its first keyframe: not kept
        backup.push(video(500_040, true));
        backup.push(audio(500_030)); // stamped before its keyframe, after 1050
        backup.push(audio(499_000)); // would go back before 1050: dropped
        backup.push(video(500_080, false));
        assert_eq!(hub.active_source(), Some(SourceRole::Primary));

        drop(primary);
        assert_eq!(hub.active_source(), Some(SourceRole::Backup));
        backup.push(video(500_120, false));
        let out = queue.take();
        let got: Vec<(MediaKind, u64, bool)> = out
            .iter()
            .map(|m| (m.kind, m.timestamp, m.sequence_header))
            .collect();
        assert_eq!(
            got,
            [
                // The subscription's replay, then the primary.
                (MediaKind::Video, 0, true),
                (MediaKind::Video, 1000, false),
                (MediaKind::Video, 1040, false),
                (MediaKind::Audio, 1050, false),
                // The backup: its header, its cached GOP, one frame on.
                (MediaKind::Video, 1080, true),
                (MediaKind::Video, 1080, false),
                (MediaKind::Audio, 1070, false),
                (MediaKind::Video, 1120, false),
                (MediaKind::Video, 1160, false),
            ]
        );
        assert_eq!(out[4].payload.last(), Some(&2), "the backup's own header");
        assert_eq!(
            hub.stats().source_switches[SwitchReason::Disconnect as usize].load(Ordering::Relaxed),
            1
        );
    }

    /// The standby clip is the last resort: while the backup streams, a
    /// silent primary gives way to it, not to the clip.
    #[test]
    fn a_healthy_backup_comes_before_the_standby_clip() {
        let hub = hub_with_standby();
        let mut primary = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let mut backup = hub
            .try_publish_as(IngestProtocol::Rtmp, addr(), SourceRole::Backup)
            .unwrap();
        primary.push(video(0, true));
        backup.push(video(0, true));
        let start = Instant::now();
        // The backup goes on sending; the primary does not.
        backup.push(MediaMessage {
            received_at: start + Duration::from_millis(1050),
            ..video(40, false)
        });
        assert!(hub.tick_standby(start + Duration::from_millis(1100)));
        assert_eq!(hub.standby(), None, "the backup streams: no clip");
        // Both silent: the clip.
        assert!(hub.tick_standby(start + Duration::from_millis(2500)));
        assert_eq!(hub.standby(), Some(StandbyReason::Auto));
        // The primary, on air, speaks again: it is back at its keyframe. Then
        // it falls silent, the clip plays, and the backup speaks first: it
        // takes over from the clip at its keyframe, with no wait for the
        // silent primary.
        primary.push(MediaMessage {
            received_at: start + Duration::from_millis(2600),
            ..video(80, true)
        });
        assert_eq!(hub.standby(), None);
        assert!(hub.tick_standby(start + Duration::from_millis(3700)));
        assert_eq!(hub.standby(), Some(StandbyReason::Auto));
        backup.push(MediaMessage {
            received_at: start + Duration::from_millis(3800),
            ..video(80, true)
        });
        assert_eq!(hub.standby(), None);
        assert_eq!(hub.active_source(), Some(SourceRole::Backup));
    }

    /// A backup that sent nothing when the session ended is told so, not
    /// that its stream was removed.
    #[tokio::test]
    async fn a_silent_backup_learns_the_session_ended() {
        let hub = StreamHub::new("main");
        let primary = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let backup = hub
            .try_publish_as(IngestProtocol::Rtmp, addr(), SourceRole::Backup)
            .unwrap();
        let ended = backup.ended();
        drop(primary); // no grace: the session ends, the backup has no media
        assert_eq!(ended.await, PublishEnded::SessionOver);
        assert!(!backup.is_current());
    }

    /// Sources with different pictures take over all the same, with a
    /// warning in the API while both are connected.
    #[test]
    fn sources_that_differ_are_named_in_a_warning() {
        let hub = StreamHub::new("main");
        let primary = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let backup = hub
            .try_publish_as(IngestProtocol::Srt, addr(), SourceRole::Backup)
            .unwrap();
        let picture = |width, height| MediaInfo {
            video_codec: Some("h264"),
            audio_codec: Some("aac"),
            width: Some(width),
            height: Some(height),
            fps: Some(30.0),
        };
        primary.set_media_info(picture(1280, 720));
        assert!(hub.warnings().is_empty());
        backup.set_media_info(picture(640, 360));
        let warnings = hub.warnings();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("resolution 1280x720 vs 640x360"),
            "{warnings:?}"
        );
        drop(backup);
        assert!(hub.warnings().is_empty());
    }

    /// A pulled stream refuses pushed primaries and takes a pushed backup.
    #[test]
    fn a_pulled_stream_takes_a_pushed_backup() {
        let hub = StreamHub::new("main");
        hub.set_pull_only(true);
        assert!(matches!(
            hub.try_publish(IngestProtocol::Rtmp, addr()),
            Err(PublishError::PullOnly)
        ));
        let _pull = hub.try_publish(IngestProtocol::RtmpPull, addr()).unwrap();
        let _backup = hub
            .try_publish_as(IngestProtocol::Rtmp, addr(), SourceRole::Backup)
            .unwrap();
        assert_eq!(hub.sources().len(), 2);
    }

    #[test]
    fn a_silent_encoder_gives_way_to_the_standby_clip_and_takes_over_at_its_keyframe() {
        let hub = hub_with_standby();
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let queue = Inbox::new();
        let header = MediaMessage::new(
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 9]),
        );
        publish.push(header);
        hub.subscribe(&queue, Tracks::All).unwrap();
        publish.push(video(0, true));
        publish.push(video(40, false));
        let start = Instant::now();
        assert!(hub.tick_standby(start + Duration::from_millis(500)));
        assert_eq!(hub.standby(), None);
        // Silent for over `after`: the clip starts one frame after 40.
        assert!(hub.tick_standby(start + Duration::from_millis(1100)));
        assert_eq!(hub.standby(), Some(StandbyReason::Auto));
        assert!(hub.tick_standby(start + Duration::from_millis(3100)));
        // The encoder speaks again: its inter frame is not shown, its
        // keyframe takes over with its own header first.
        publish.push(video(80, false));
        assert_eq!(hub.standby(), Some(StandbyReason::Auto));
        publish.push(video(120, true));
        assert_eq!(hub.standby(), None);
        publish.push(video(160, false));

        let out = queue.take();
        let stamps: Vec<u64> = out
            .iter()
            .filter(|m| m.droppable())
            .map(|m| m.timestamp)
            .collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
        // The clip's frames sit between the encoder's (audio ones too).
        let clip_frames = out
            .iter()
            .filter(|m| {
                m.payload.ends_with(&[7]) || m.payload.ends_with(&[9]) && m.kind == MediaKind::Audio
            })
            .count();
        assert!(clip_frames > 50, "{clip_frames} clip frames");
        let takeover = out
            .iter()
            .position(|m| m.payload[..] == [0x17, 0, 0, 0, 0, 9][..] && m.timestamp > 0)
            .expect("the encoder's header again");
        assert!(out[takeover + 1].keyframe);
        assert_eq!(out[takeover].timestamp, out[takeover + 1].timestamp);
    }

    /// An H.264 frame with a real length-prefixed NAL unit, so it muxes.
    fn avc(ts: u64, key: bool) -> MediaMessage {
        let nal: &[u8] = if key { &[0x65, 0x88] } else { &[0x41, 0x9a] };
        let mut tag = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 2];
        tag.extend_from_slice(nal);
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(tag))
    }

    #[tokio::test]
    async fn srt_destinations_share_one_ts_mux_and_late_joiners_start_on_its_gop() {
        let hub = StreamHub::new("main");
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let record = flv::avc_decoder_configuration_record(&[0x67, 0x42, 0, 0x1e], &[0x68, 0xce]);
        let mut header = vec![0x17, 0, 0, 0, 0];
        header.extend(record.unwrap());
        publish.push(MediaMessage::new(MediaKind::Video, 0, Bytes::from(header)));
        publish.push(avc(0, true));
        publish.push(avc(33, false));

        let first = Inbox::new();
        let second = Inbox::new();
        assert!(hub.subscribe_ts(&first).is_some());
        publish.push(avc(66, false));
        assert!(hub.subscribe_ts(&second).is_some());
        publish.push(avc(99, false));

        let (a, b) = (first.take(), second.take());
        let stamps = |out: &[MediaMessage]| out.iter().map(|m| m.timestamp).collect::<Vec<_>>();
        // The cached GOP (its TS form), then live; no header messages.
        assert_eq!(stamps(&a), [0, 33, 66, 99]);
        assert_eq!(stamps(&b), [0, 33, 66, 99]);
        assert!(a[0].keyframe && a[0].payload[0] == 0x47);
        // Muxed once: both queues hold the same TS bytes.
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.payload.as_ptr(), y.payload.as_ptr());
        }
        // The stream's continuity counters run on across what both got.
        let video_counters: Vec<u8> = a
            .iter()
            .flat_map(|m| {
                m.payload
                    .chunks(188)
                    .map(|p| p.to_vec())
                    .collect::<Vec<_>>()
            })
            .filter(|p| p[1] & 0x1f == 0x01 && p[2] == 0x00)
            .map(|p| p[3] & 0x0f)
            .collect();
        assert_eq!(video_counters, [0, 1, 2, 3]);

        hub.unsubscribe(&first);
        hub.unsubscribe(&second);
        assert!(
            hub.lock().ts.is_none(),
            "no muxing without an SRT destination"
        );
    }

    #[test]
    fn the_gop_cache_is_capped_in_messages_and_in_what_they_cost() {
        let hub = StreamHub::new("main");
        let mut publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        publish.push(video(0, true));
        for n in 1..GOP_CACHE_MAX_MESSAGES as u64 {
            publish.push(MediaMessage::new(
                MediaKind::Audio,
                n,
                Bytes::from_static(&[0xaf, 0x01]),
            ));
        }
        assert_eq!(hub.lock().replay.gop().len(), GOP_CACHE_MAX_MESSAGES);
        // One more and the GOP is no longer cached: late joiners wait for
        // the next keyframe rather than hold a cache that grows.
        publish.push(video(99_999, false));
        assert!(hub.lock().replay.gop().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_publisher_back_within_the_grace_continues_the_session_on_one_timeline() {
        let hub = StreamHub::new("main");
        hub.set_reconnect_grace(std::time::Duration::from_secs(10));
        let mut first = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let queue = Inbox::new();
        let session = hub.subscribe(&queue, Tracks::All).unwrap();
        let header = MediaMessage::new(
            MediaKind::Video,
            5000,
            Bytes::from_static(&[0x17, 0, 0, 0, 0]),
        );
        first.push(header);
        first.push(video(5000, true));
        first.push(video(5040, false));
        drop(first);
        // Still live: the destinations keep their connections.
        assert!(hub.is_live());
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;

        let mut second = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        assert_eq!(hub.watch_live().borrow().session, session);
        second.push(video(0, false)); // before its first keyframe: skipped
        second.push(video(40, true));
        second.push(video(80, false));
        let out = queue.take();
        let stamps: Vec<(u64, bool)> = out
            .iter()
            .skip(1)
            .map(|m| (m.timestamp, m.keyframe))
            .collect();
        // The new publisher's clock (0, 40, 80) continues one frame
        // interval (40 ms) after 5040; its frame at 0 waited for a keyframe.
        assert_eq!(
            stamps,
            vec![(5000, true), (5040, false), (5120, true), (5160, false)]
        );

        drop(second);
        tokio::time::sleep(std::time::Duration::from_secs(11)).await;
        assert!(!hub.is_live());
        assert!(queue.ended());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_new_publisher_the_session_ends_after_the_grace() {
        let hub = StreamHub::new("main");
        hub.set_reconnect_grace(std::time::Duration::from_secs(2));
        let publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        let queue = Inbox::new();
        hub.subscribe(&queue, Tracks::All).unwrap();
        drop(publish);
        tokio::time::sleep(std::time::Duration::from_millis(1900)).await;
        assert!(hub.is_live());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!hub.is_live());
        // Removing a stream ends at once, grace or not.
        let _publish = hub.try_publish(IngestProtocol::Rtmp, addr()).unwrap();
        hub.end_current_publish();
        assert!(!hub.is_live());
    }

    #[test]
    fn subscribe_without_a_publisher_is_none() {
        let hub = StreamHub::new("main");
        let queue = Inbox::new();
        assert_eq!(hub.subscribe(&queue, Tracks::All), None);
    }
}
