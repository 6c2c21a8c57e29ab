//! The SRT listener: encoders publish MPEG-TS over SRT, keyed by the stream
//! id; each publish is demuxed and remuxed into the same stream hub an RTMP
//! publish feeds, so a destination never knows which protocol the encoder used.
//!
//! srt-tokio runs the SRT protocol; access control happens here, before a
//! connection is accepted, with the SRT reject reasons callers understand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use srt_protocol::packet::CoreRejectReason;
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::{KeySize, Passphrase};
use srt_tokio::{ConnectionRequest, SrtIncoming, SrtListener, SrtSocket};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use prism_media::arbiter::SourceRole;
use prism_media::auth::{PublishAttempt, Refusal};
use prism_media::remote_text::remote_text;
use prism_media::supervise::catch_panic;
use prism_media::{IngestProtocol, KeyDirectory, MediaMessage, PublishError, StreamHub};

use crate::announce::{log_publish_stopped, PublishAnnouncer};
use crate::remux::Remuxer;
use crate::stats::{IngestStats, Limit, OpenSession, RejectReason as Rejection};
use crate::streamid::{publish_context, publish_key, unescaped};
use crate::ts::{EsFrame, TsDemuxer};

#[derive(Clone, Debug)]
pub struct SrtSettings {
    pub listen: SocketAddr,
    /// Receive latency (the SRT buffer that absorbs retransmissions).
    pub latency: Duration,
    /// The passphrase for streams that set none of their own.
    pub passphrase: Option<String>,
    /// A live publisher that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// SRT publishers connected at once; more are refused with Overload.
    pub max_connections: usize,
}

/// Reports panics of srt-tokio's own tasks (a session's protocol loop, a
/// listener's demultiplexer) as Prism's supervised tasks report theirs:
/// counted under `prism_task_panics_total{task}` and logged, the message
/// escaped. Such a panic ends that one connection (or listener, which is
/// then restarted); the process goes on. srt-tokio's warnings to the
/// operator (a kernel limit on its UDP buffers, UDP GSO refused) are logged
/// too.
pub fn observe_srt_tasks() {
    srt_tokio::set_panic_observer(|task, message| {
        prism_media::supervise::count_panic(task);
        error!(
            task,
            panic = %remote_text(&message),
            "an SRT task panicked; its connection ended"
        );
    });
    srt_tokio::set_warning_observer(|message| warn!("SRT: {message}"));
}

/// Binds the SRT listener (UDP); an error names the address.
pub async fn bind_srt(
    settings: &SrtSettings,
) -> Result<(SrtListener, SrtIncoming), crate::error::BindError> {
    SrtListener::builder()
        .latency(settings.latency)
        .bind(settings.listen)
        .await
        .map_err(|source| crate::error::BindError {
            what: "SRT",
            address: settings.listen,
            source,
        })
}

/// The SRT ingest: what outlives any one listener task (the settings, the
/// connection tracker), so a listener can be restarted under supervision.
pub struct SrtIngest {
    settings: SrtSettings,
    directory: Arc<dyn KeyDirectory>,
    stats: Arc<IngestStats>,
    connections: TaskTracker,
    /// Callers being admitted now.
    pending: Arc<AtomicUsize>,
    shutdown: watch::Receiver<bool>,
}

impl SrtIngest {
    pub fn new(
        settings: SrtSettings,
        directory: Arc<dyn KeyDirectory>,
        stats: Arc<IngestStats>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            settings,
            directory,
            stats,
            connections: TaskTracker::new(),
            pending: Arc::new(AtomicUsize::new(0)),
            shutdown,
        }
    }

    pub fn settings(&self) -> &SrtSettings {
        &self.settings
    }

    /// Accepts SRT publishers until shutdown, or until srt-tokio's own
    /// listener task ends (its sessions share that task's UDP socket, so
    /// they end with it). At shutdown the publishes end first, then the
    /// listener closes.
    pub async fn serve(&self, listener: SrtListener, mut incoming: SrtIncoming) {
        let mut listener = ClosingListener(Some(listener));
        let mut shutdown = self.shutdown.clone();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let request = tokio::select! {
                request = incoming.incoming().next() => match request {
                    Some(request) => request,
                    None => break,
                },
                _ = shutdown.changed() => break,
            };
            let remote = request.remote();
            // Each caller is admitted on its own task (the authorisation
            // hook and a cluster lease are waits that must not hold up the
            // next caller), at most MAX_PENDING_ADMISSIONS at once.
            let Some(pending) = PendingAdmission::take(&self.pending) else {
                self.stats.count_limit(Limit::Connections);
                warn!(%remote, protocol = "srt", "publish refused: too many SRT callers being admitted at once");
                let _ = request
                    .reject(RejectReason::Server(ServerRejectReason::Overload))
                    .await;
                continue;
            };
            let stats = Arc::clone(&self.stats);
            let shutdown = self.shutdown.clone();
            let settings = self.settings.clone();
            let directory = Arc::clone(&self.directory);
            self.connections.spawn(async move {
                let admitted = admit(request, &settings, &*directory, &stats);
                let admitted = match catch_panic("srt_connection", admitted).await {
                    Ok(admitted) => admitted,
                    Err(panic) => {
                        let panic = remote_text(&panic.message);
                        error!(%remote, %panic, "srt admission panicked; caller dropped");
                        None
                    }
                };
                drop(pending);
                let Some((hub, socket, role)) = admitted else {
                    return;
                };
                let _open = OpenSession::new(stats.srt_sessions());
                let publish = run_publish(
                    hub,
                    socket,
                    role,
                    remote,
                    settings.idle_timeout,
                    &stats,
                    shutdown,
                );
                if let Err(panic) = catch_panic("srt_connection", publish).await {
                    let panic = remote_text(&panic.message);
                    error!(%remote, %panic, "srt connection task panicked; connection closed");
                }
            });
        }
        if *shutdown.borrow() {
            self.connections.close();
            self.connections.wait().await;
        }
        listener.close().await;
    }
}

/// SRT callers admitted at once (each may wait on the authorisation hook or
/// a cluster lease); more are refused with Overload until some are done.
const MAX_PENDING_ADMISSIONS: usize = 64;

/// One caller being admitted, counted while it lasts.
struct PendingAdmission(Arc<AtomicUsize>);

impl PendingAdmission {
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        let taken = count.fetch_add(1, Ordering::Relaxed);
        if taken >= MAX_PENDING_ADMISSIONS {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Self(Arc::clone(count)))
    }
}

impl Drop for PendingAdmission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An `SrtListener` that is closed however its owner ends: srt-tokio's
/// `Drop` leaves the listener task (and its UDP port) running, so a
/// listener dropped by a panic would keep the port from being bound again.
struct ClosingListener(Option<SrtListener>);

impl ClosingListener {
    async fn close(&mut self) {
        if let Some(listener) = self.0.take() {
            close_listener(listener).await;
        }
    }
}

impl Drop for ClosingListener {
    fn drop(&mut self) {
        if let Some(listener) = self.0.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(close_listener(listener));
            }
        }
    }
}

/// Closes the listener; srt-tokio's `close` re-raises a panic of its
/// listener task, which is caught here, logged and counted.
async fn close_listener(mut listener: SrtListener) {
    if let Err(panic) = catch_panic("listener", listener.close()).await {
        let panic = remote_text(&panic.message);
        error!(%panic, "the SRT listener task had panicked; its SRT sessions ended with it");
    }
}

/// Access control: who may publish what. Refuses with the SRT reject reason
/// where the protocol has one; never logs the key.
async fn admit(
    request: ConnectionRequest,
    settings: &SrtSettings,
    directory: &dyn KeyDirectory,
    stats: &IngestStats,
) -> Option<(Arc<StreamHub>, SrtSocket, SourceRole)> {
    let remote = request.remote();
    let stream_id = request
        .stream_id()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let refuse = |reason: Rejection, why: &str| {
        stats.count_rejection(reason);
        warn!(%remote, protocol = "srt", "publish refused: {why}");
    };
    if stats.open_sessions(IngestProtocol::Srt) >= settings.max_connections as u64 {
        stats.count_limit(Limit::Connections);
        warn!(%remote, max = settings.max_connections, protocol = "srt", "publish refused: SRT connection limit reached");
        let _ = request
            .reject(RejectReason::Server(ServerRejectReason::Overload))
            .await;
        return None;
    }
    let stream_id = unescaped(&stream_id);
    let (key, role) = match publish_key(&stream_id) {
        Ok(named) => named,
        Err(e) => {
            refuse(Rejection::ProtocolError, &e.to_string());
            let _ = request
                .reject(RejectReason::Server(ServerRejectReason::BadMode))
                .await;
            return None;
        }
    };
    let (app, args) = publish_context(&stream_id);
    let attempt = PublishAttempt {
        key: key.to_string(),
        protocol: IngestProtocol::Srt,
        remote,
        app,
        args,
    };
    // One admission for every protocol (the authorisation hook, then the
    // stream's lease in cluster mode: both bounded waits).
    let (hub, stream_passphrase) = match directory.admit(&attempt, role, SRT_ADMIT_PATIENCE).await {
        Ok(admitted) => admitted,
        Err(e) => {
            refuse(Rejection::from(&e), &e.to_string());
            let _ = request.reject(RejectReason::Server(srt_reject(&e))).await;
            return None;
        }
    };
    let passphrase = stream_passphrase.or_else(|| settings.passphrase.clone());
    let caller_key_size = request.key_size();
    let key_settings = match (passphrase, caller_key_size) {
        (None, KeySize::Unspecified) => None,
        // Refused here: srt-protocol would panic on a caller that encrypts
        // when the listener does not.
        (None, _) => {
            refuse(
                Rejection::Unauthorized,
                "the caller encrypts but the stream has no passphrase",
            );
            let _ = request
                .reject(RejectReason::Core(CoreRejectReason::Unsecure))
                .await;
            return None;
        }
        (Some(passphrase), key_size) => {
            let Ok(passphrase) = Passphrase::try_from(passphrase) else {
                refuse(
                    Rejection::Unauthorized,
                    "the configured passphrase is not 10 to 79 characters",
                );
                let _ = request
                    .reject(RejectReason::Server(
                        ServerRejectReason::InternalServerError,
                    ))
                    .await;
                return None;
            };
            Some(KeySettings {
                // Answer with the caller's key length; an unencrypted caller
                // is then refused by the protocol ("password required").
                key_size: if key_size == KeySize::Unspecified {
                    KeySize::AES128
                } else {
                    key_size
                },
                passphrase,
            })
        }
    };
    match request.accept(key_settings).await {
        Ok(socket) => Some((hub, socket, role)),
        Err(_) => {
            // srt-protocol refused the handshake itself (BadSecret or Unsecure).
            refuse(
                Rejection::Unauthorized,
                "wrong passphrase, or encryption on one side only",
            );
            None
        }
    }
}

/// SRT's answer to a refused publish (the caller sees the code).
fn srt_reject(error: &PublishError) -> ServerRejectReason {
    match error {
        PublishError::UnknownKey => ServerRejectReason::Notfound,
        PublishError::PullOnly => ServerRejectReason::Forbidden,
        PublishError::AlreadyLive | PublishError::LiveElsewhere { .. } => {
            ServerRejectReason::Conflict
        }
        // libsrt's callers read these as 1401, 1403, 1503 and 1402.
        PublishError::Refused(Refusal::Unauthorized) => ServerRejectReason::Unauthorized,
        PublishError::Refused(Refusal::Forbidden) => ServerRejectReason::Forbidden,
        PublishError::Refused(Refusal::HookFailed) => ServerRejectReason::Down,
        PublishError::Refused(Refusal::Busy) => ServerRejectReason::Overload,
    }
}

/// Cluster mode: how long an SRT caller's handshake may wait for another
/// node to give its stream up. libsrt's callers give up connecting after
/// 3 s by default (SRTO_CONNTIMEO); a refused caller reconnects.
const SRT_ADMIT_PATIENCE: Duration = Duration::from_millis(2500);

/// Relays one accepted SRT publish into its hub.
async fn run_publish(
    hub: Arc<StreamHub>,
    mut socket: SrtSocket,
    role: SourceRole,
    remote: SocketAddr,
    idle_timeout: Duration,
    stats: &IngestStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut publish = match hub.try_publish_as(IngestProtocol::Srt, remote, role) {
        Ok(publish) => publish,
        Err(e) => {
            warn!(stream = %hub.id(), %remote, protocol = "srt", "publish refused: {e}");
            let _ = socket.close_and_finish().await;
            return;
        }
    };
    debug!(stream = %hub.id(), %remote, protocol = "srt", "publish accepted");
    let mut ts = TsToFlv::new();
    let mut announcer = PublishAnnouncer::new(IngestProtocol::Srt);
    let mut messages: Vec<MediaMessage> = Vec::new();
    // One idle timer for the whole publish, moved on only when it fires
    // (a timer per datagram was a registration in tokio's wheel ~600 times a
    // second), and one wait on each watch, kept across turns. Datagrams
    // that are already waiting are taken without going back through the
    // select.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    let mut shutdown_changed = std::pin::pin!(shutdown.changed());
    let mut ended = std::pin::pin!(publish.ended());
    let mut last_data = Instant::now();
    let reason = 'publish: loop {
        let mut next = tokio::select! {
            next = socket.next() => next,
            _ = &mut shutdown_changed => break "shutting down",
            why = &mut ended => break why.reason(),
            () = &mut idle => {
                let due = last_data + idle_timeout;
                if Instant::now() < due {
                    idle.as_mut().reset(due.into());
                    continue;
                }
                break "no data before the idle timeout";
            }
        };
        let mut taken = 0;
        loop {
            let data = match next {
                None => break 'publish "the encoder disconnected",
                Some(Err(_)) => break 'publish "the connection failed",
                Some(Ok((_, data))) => data,
            };
            for _ in 0..ts.push(&data, &mut messages) {
                stats.count_limit(Limit::MessageBounds);
            }
            for message in messages.drain(..) {
                announcer.observe(&message, &publish, remote);
                publish.push(message);
            }
            taken += 1;
            if taken == DATAGRAMS_PER_TURN {
                break;
            }
            match socket.next().now_or_never() {
                Some(waiting) => next = waiting,
                None => break,
            }
        }
        last_data = Instant::now();
    };
    ts.log_losses(&hub, remote);
    log_publish_stopped(&publish, remote, reason);
    drop(publish);
    let _ = socket.close_and_finish().await;
}

/// Datagrams an SRT publish takes in one turn before it looks at shutdown
/// and stream changes again.
const DATAGRAMS_PER_TURN: usize = 64;

/// MPEG-TS in, FLV messages out: what an SRT publish or a pulled SRT source
/// feeds the hub.
pub(crate) struct TsToFlv {
    demuxer: TsDemuxer,
    remuxer: Remuxer,
    frames: Vec<EsFrame>,
}

impl TsToFlv {
    pub(crate) fn new() -> Self {
        Self {
            demuxer: TsDemuxer::new(),
            remuxer: Remuxer::new(),
            frames: Vec::new(),
        }
    }

    /// Remuxes one datagram's TS into `out`; returns how many video frames
    /// were too large for an RTMP message (dropped, and logged here).
    pub(crate) fn push(&mut self, data: &[u8], out: &mut Vec<MediaMessage>) -> u64 {
        self.demuxer.push(data, &mut self.frames);
        let oversize_before = self.remuxer.stats.oversize_frames;
        for frame in self.frames.drain(..) {
            self.remuxer.push(frame, out);
        }
        let oversize = self.remuxer.stats.oversize_frames - oversize_before;
        if oversize > 0 {
            warn!("the SRT source sent a video frame larger than an RTMP message can carry (16 MiB); dropped until the next keyframe");
        }
        oversize
    }

    /// Logs what the source lost, if it lost anything.
    pub(crate) fn log_losses(&self, hub: &StreamHub, remote: SocketAddr) {
        let losses = self.remuxer.stats;
        if losses.video_frames_dropped + losses.audio_frames_dropped > 0
            || self.demuxer.skipped_bytes > 0
        {
            info!(
                stream = %hub.id(),
                %remote,
                video_frames_dropped = losses.video_frames_dropped,
                audio_frames_dropped = losses.audio_frames_dropped,
                skipped_bytes = self.demuxer.skipped_bytes,
                "srt input had losses (video waited for a keyframe after them)"
            );
        }
    }
}
