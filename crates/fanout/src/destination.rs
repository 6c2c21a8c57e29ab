//! One destination: a task that owns its socket and its bounded queue. It
//! connects when the stream goes live, publishes, replays what the hub cached,
//! then writes queued messages in batches with vectored writes; on failure it
//! retries with jittered exponential backoff while the publisher stays live.
//! Nothing here is ever awaited by ingest or by another destination.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use rml_rtmp::handshake::PeerType;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use prism_media::chunk::ChunkWriter;
use prism_media::{rtmp, Batch, DestinationQueue, MediaMessage, StreamHub};

use crate::client::{ClientEvent, PublishClient};
use crate::transport::{tls_config, tls_connect, Transport};
use crate::url::{DestinationUrl, Scheme};

/// How many queued messages one write batch takes at most.
const BATCH_MESSAGES: usize = 256;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session live this long resets the backoff; shorter ones keep doubling it,
/// so a server that accepts and then drops at once is not hammered.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

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
    /// For `rtmps://`: trust only the CA certificates in this PEM file
    /// instead of the built-in roots (private servers).
    pub ca_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DestinationState {
    /// Enabled, waiting for the publisher.
    Idle = 0,
    Connecting = 1,
    Live = 2,
    /// The last attempt failed; waiting out the backoff.
    Retrying = 3,
    Disabled = 4,
}

impl DestinationState {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Idle => "idle",
            DestinationState::Connecting => "connecting",
            DestinationState::Live => "live",
            DestinationState::Retrying => "retrying",
            DestinationState::Disabled => "disabled",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            1 => DestinationState::Connecting,
            2 => DestinationState::Live,
            3 => DestinationState::Retrying,
            4 => DestinationState::Disabled,
            _ => DestinationState::Idle,
        }
    }
}

/// What a destination reports, readable at any time without touching its task.
#[derive(Debug)]
pub struct DestinationStatus {
    state: AtomicU8,
    last_error: Mutex<Option<String>>,
    /// Bumped on every state or error change, for event streams.
    changes: watch::Sender<()>,
    pub bytes_sent: AtomicU64,
    pub reconnects: AtomicU64,
    pub queue: Arc<DestinationQueue>,
}

impl DestinationStatus {
    pub fn state(&self) -> DestinationState {
        DestinationState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn dropped_frames(&self) -> u64 {
        self.queue.dropped_frames()
    }

    /// Resolves on each state or error change; ends (with `Err`) when the
    /// destination is gone.
    pub fn watch_changes(&self) -> watch::Receiver<()> {
        self.changes.subscribe()
    }

    fn set_state(&self, state: DestinationState) {
        if self.state.swap(state as u8, Ordering::Relaxed) != state as u8 {
            self.changes.send_replace(());
        }
    }

    fn set_error(&self, error: Option<String>) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if *last != error {
            *last = error;
            drop(last);
            self.changes.send_replace(());
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Control {
    enabled: bool,
    shutdown: bool,
}

/// The owner's side of a destination task.
pub struct DestinationHandle {
    pub id: String,
    pub status: Arc<DestinationStatus>,
    control: watch::Sender<Control>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl DestinationHandle {
    /// Enables or disables the push; disabling ends a live session at once
    /// (with a clean unpublish), enabling while live connects right away.
    pub fn set_enabled(&self, enabled: bool) {
        self.control.send_modify(|c| c.enabled = enabled);
        self.status.queue.interrupt();
    }

    /// Ends the task: a live session is unpublished cleanly first.
    pub async fn shutdown(&self) {
        self.control.send_modify(|c| c.shutdown = true);
        self.status.queue.interrupt();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts the task for one destination of `hub`'s stream.
pub fn spawn_destination(hub: Arc<StreamHub>, config: DestinationConfig) -> DestinationHandle {
    let status = Arc::new(DestinationStatus {
        state: AtomicU8::new(DestinationState::Idle as u8),
        last_error: Mutex::new(None),
        changes: watch::Sender::new(()),
        bytes_sent: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        queue: Arc::new(DestinationQueue::new(config.queue_budget_bytes)),
    });
    let (control, control_rx) = watch::channel(Control {
        enabled: config.enabled,
        shutdown: false,
    });
    let id = config.id.clone();
    let task = tokio::spawn(run(hub, config, Arc::clone(&status), control_rx));
    DestinationHandle {
        id,
        status,
        control,
        task: Mutex::new(Some(task)),
    }
}

/// How a session ended.
enum SessionEnd {
    /// The publisher stopped; the destination was unpublished cleanly.
    PublisherEnded,
    /// Disabled or shut down; unpublished cleanly.
    Stopped,
    Failed(String),
}

async fn run(
    hub: Arc<StreamHub>,
    config: DestinationConfig,
    status: Arc<DestinationStatus>,
    mut control: watch::Receiver<Control>,
) {
    let mut live = hub.watch_live();
    let mut backoff = BACKOFF_START;
    let mut attempts_this_publish = 0u64;
    // The publish session a destination already served to its end, so a
    // stale "live" reading never reconnects to a publish that is over.
    let mut served: Option<u64> = None;
    loop {
        let c = *control.borrow_and_update();
        if c.shutdown {
            return;
        }
        if !c.enabled {
            status.set_state(DestinationState::Disabled);
            if control.changed().await.is_err() {
                return;
            }
            continue;
        }
        let publish = *live.borrow_and_update();
        if !publish.live || served == Some(publish.session) {
            status.set_state(DestinationState::Idle);
            attempts_this_publish = 0;
            backoff = BACKOFF_START;
            tokio::select! {
                r = control.changed() => if r.is_err() { return },
                r = live.changed() => if r.is_err() { return },
            }
            continue;
        }

        if attempts_this_publish > 0 {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        attempts_this_publish += 1;
        status.set_state(DestinationState::Connecting);
        let started = Instant::now();
        let end = session(&hub, &config, &status, &mut control, &mut served).await;
        match end {
            SessionEnd::PublisherEnded => {
                status.set_error(None);
                attempts_this_publish = 0;
            }
            SessionEnd::Stopped => {
                status.set_error(None);
                attempts_this_publish = 0;
                served = None;
            }
            SessionEnd::Failed(error) => {
                served = None;
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                let delay = jittered(backoff);
                warn!(
                    stream = %hub.id(),
                    destination = %config.id,
                    url = %config.url,
                    error = %error,
                    dropped_frames = status.dropped_frames(),
                    retry_in_ms = delay.as_millis() as u64,
                    "destination failed; retrying"
                );
                status.set_error(Some(error));
                status.set_state(DestinationState::Retrying);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    r = control.changed() => if r.is_err() { return },
                    r = live.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

fn jittered(base: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(factor)
}

async fn session(
    hub: &Arc<StreamHub>,
    config: &DestinationConfig,
    status: &DestinationStatus,
    control: &mut watch::Receiver<Control>,
    served: &mut Option<u64>,
) -> SessionEnd {
    info!(stream = %hub.id(), destination = %config.id, url = %config.url, "destination connecting");
    let connect_started = Instant::now();
    let setup = tokio::time::timeout(config.connect_timeout, connect_and_publish(config));
    let (mut transport, mut client, mut out, stream_id) = tokio::select! {
        result = setup => match result {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return SessionEnd::Failed(error),
            Err(_) => {
                return SessionEnd::Failed(format!(
                    "server did not accept the publish within {} s",
                    config.connect_timeout.as_secs()
                ))
            }
        },
        () = stop_requested(control) => return SessionEnd::Stopped,
    };
    let mut read_buf = vec![0u8; 16 * 1024];

    let queue = &status.queue;
    let Some(publish_session) = hub.subscribe(queue) else {
        // The publisher left while we were connecting.
        let _ = finish(&mut client, &mut transport, &mut out, config).await;
        return SessionEnd::PublisherEnded;
    };
    *served = Some(publish_session);
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

    let mut batch: Vec<MediaMessage> = Vec::with_capacity(BATCH_MESSAGES);
    let mut timeline = Timeline::default();
    let mut telemetry = SessionTelemetry::new(status.dropped_frames());
    let end = loop {
        // Control changes interrupt the queue wait, so each wake-up waits on
        // one thing (the queue) plus the socket, not a control channel too.
        if control.has_changed().unwrap_or(true) {
            let c = *control.borrow_and_update();
            if c.shutdown || !c.enabled {
                break match finish(&mut client, &mut transport, &mut out, config).await {
                    Ok(()) => SessionEnd::Stopped,
                    Err(e) => SessionEnd::Failed(e),
                };
            }
        }
        tokio::select! {
            biased;
            next = queue.next_batch(&mut batch, BATCH_MESSAGES) => {
                if next == Batch::Interrupted {
                    // A control change: handled at the top of the loop.
                    continue;
                }
                if next == Batch::Ended {
                    break match finish(&mut client, &mut transport, &mut out, config).await {
                        Ok(()) => SessionEnd::PublisherEnded,
                        Err(e) => SessionEnd::Failed(e),
                    };
                }
                for message in batch.drain(..) {
                    if let Some(timestamp) = timeline.rebase(&message) {
                        rtmp::queue_media(&mut out, message.kind, stream_id, timestamp, &message.payload);
                        telemetry.arrivals.push(message.received_at);
                    }
                }
                let pending = out.pending_bytes() as u64;
                if let Err(e) = flush(&mut transport, &mut out, config).await {
                    break SessionEnd::Failed(e);
                }
                status.bytes_sent.fetch_add(pending, Ordering::Relaxed);
                telemetry.written(hub, config, status);
            }
            // One object reads and writes: select! drops the read future
            // before any branch's handler runs, so no split (and no lock) is needed.
            read = transport.read(&mut read_buf) => {
                match read {
                    Ok(0) => break SessionEnd::Failed("server closed the connection".into()),
                    Ok(n) => match client.handle_input(&read_buf[..n], &mut out) {
                        Ok(events) => {
                            if let Some(ClientEvent::Rejected { code, reason }) = events.into_iter().next() {
                                break SessionEnd::Failed(format!("server ended the publish: {code}: {reason}"));
                            }
                            if let Err(e) = flush(&mut transport, &mut out, config).await {
                                break SessionEnd::Failed(e);
                            }
                        }
                        Err(e) => break SessionEnd::Failed(e.to_string()),
                    },
                    Err(e) => break SessionEnd::Failed(format!("read failed: {e}")),
                }
            }
        }
    };
    hub.unsubscribe(queue);
    end
}

type Connected = (Transport, PublishClient, ChunkWriter, u32);

/// Opens the connection and runs it up to `NetStream.Publish.Start`.
async fn connect_and_publish(config: &DestinationConfig) -> Result<Connected, String> {
    let mut stream = open(config).await?;
    let mut out = ChunkWriter::new(128);
    let (client, stream_id) = start_publish(
        &mut stream,
        &config.url,
        &mut out,
        Some(config.write_timeout),
    )
    .await?;
    Ok((stream, client, out, stream_id))
}

/// Resolves when the destination is disabled or shut down.
async fn stop_requested(control: &mut watch::Receiver<Control>) {
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

/// Opens the transport to the destination: TCP, then TLS for `rtmps://`.
async fn open(config: &DestinationConfig) -> Result<Transport, String> {
    let (host, port) = (config.url.host.as_str(), config.url.port);
    let mut last_error = format!("{host} did not resolve to any address");
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for address in addresses {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("cannot open a socket: {e}"))?;
        // A bounded kernel buffer keeps what a slow destination holds visible
        // to the queue's budget, instead of megabytes hidden in the kernel.
        let _ = socket.set_send_buffer_size(config.socket_send_buffer_bytes);
        match socket.connect(address).await {
            Ok(stream) => {
                // Frames go out as soon as they are written; batching happens above.
                let _ = stream.set_nodelay(true);
                return match config.url.scheme {
                    Scheme::Rtmp => Ok(Transport::Plain(stream)),
                    Scheme::Rtmps => {
                        let tls = tls_config(config.ca_file.as_deref())?;
                        tls_connect(stream, host, tls).await
                    }
                };
            }
            Err(e) => last_error = format!("connect to {address} failed: {e}"),
        }
    }
    Err(last_error)
}

/// Runs an RTMP publish on a fresh connection: handshake, `connect`,
/// `createStream`, `publish`. Returns the session and the message stream id
/// media goes on; `out` is left at the negotiated chunk size. Also what the
/// load harness publishes with.
pub async fn start_publish<S>(
    stream: &mut S,
    url: &DestinationUrl,
    out: &mut ChunkWriter,
    write_timeout: Option<Duration>,
) -> Result<(PublishClient, u32), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leftover = rtmp::handshake(stream, PeerType::Client).await?;
    let mut client = PublishClient::new(url.clone());
    client.start(out).map_err(|e| e.to_string())?;
    let mut events = client
        .handle_input(&leftover, out)
        .map_err(|e| e.to_string())?;
    let mut read_buf = vec![0u8; 16 * 1024];
    loop {
        out.write_to(stream, write_timeout)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(event) = events.into_iter().next() {
            return match event {
                ClientEvent::PublishStarted { stream_id } => Ok((client, stream_id)),
                ClientEvent::Rejected { code, reason } => {
                    Err(format!("server refused the stream: {code}: {reason}"))
                }
            };
        }
        let n = read_some(stream, &mut read_buf).await?;
        events = client
            .handle_input(&read_buf[..n], out)
            .map_err(|e| e.to_string())?;
    }
}

async fn read_some<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Result<usize, String> {
    match reader.read(buf).await {
        Ok(0) => Err("server closed the connection".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Sends the clean end of the publish and closes our side.
async fn finish<W: AsyncWrite + Unpin>(
    client: &mut PublishClient,
    writer: &mut W,
    out: &mut ChunkWriter,
    config: &DestinationConfig,
) -> Result<(), String> {
    client.unpublish(out).map_err(|e| e.to_string())?;
    flush(writer, out, config).await?;
    let _ = writer.shutdown().await;
    Ok(())
}

/// Writes everything queued on `out`; a write that makes no progress within
/// the write timeout fails the session.
async fn flush<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut ChunkWriter,
    config: &DestinationConfig,
) -> Result<(), String> {
    out.write_to(writer, Some(config.write_timeout))
        .await
        .map_err(|e| e.to_string())
}

/// Relay latency samples and the drop summary of one live session. Samples
/// collect in a reused buffer and go to the metrics recorder once a second,
/// so the per-message path neither allocates nor touches a shared lock.
struct SessionTelemetry {
    arrivals: Vec<Instant>,
    latencies: Vec<f64>,
    last_flush: Instant,
    last_drop_report: Instant,
    dropped_at_last_report: u64,
}

const TELEMETRY_FLUSH: Duration = Duration::from_secs(1);
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

impl SessionTelemetry {
    fn new(dropped_frames: u64) -> Self {
        let now = Instant::now();
        Self {
            arrivals: Vec::with_capacity(BATCH_MESSAGES),
            latencies: Vec::with_capacity(1024),
            last_flush: now,
            last_drop_report: now,
            dropped_at_last_report: dropped_frames,
        }
    }

    /// After a batch reached the socket: its messages' latency is now known.
    fn written(&mut self, hub: &StreamHub, config: &DestinationConfig, status: &DestinationStatus) {
        let now = Instant::now();
        for arrived in self.arrivals.drain(..) {
            self.latencies
                .push(now.saturating_duration_since(arrived).as_secs_f64());
        }
        if now.duration_since(self.last_flush) >= TELEMETRY_FLUSH {
            self.last_flush = now;
            let histogram = metrics::histogram!("prism_relay_latency_seconds", "stream" => hub.id().to_string());
            for latency in self.latencies.drain(..) {
                histogram.record(latency);
            }
        }
        if now.duration_since(self.last_drop_report) >= DROP_REPORT_EVERY {
            self.last_drop_report = now;
            let dropped = status.dropped_frames();
            let new_drops = dropped - self.dropped_at_last_report;
            self.dropped_at_last_report = dropped;
            if new_drops > 0 {
                warn!(
                    stream = %hub.id(),
                    destination = %config.id,
                    dropped_frames = new_drops,
                    queue_budget_kib = config.queue_budget_bytes / 1024,
                    "destination is slower than the stream: frames dropped in the last 10 s"
                );
            }
        }
    }
}

/// Rebases timestamps so each destination session's timeline starts at 0 on
/// the first frame it is sent (usually the cached keyframe), whatever the
/// publisher's clock says. Frames stamped before that start (audio
/// interleaved just ahead of the keyframe) are skipped, so every track stays
/// monotonic.
#[derive(Default)]
struct Timeline {
    origin: Option<u32>,
}

impl Timeline {
    fn rebase(&mut self, message: &MediaMessage) -> Option<u32> {
        let Some(origin) = self.origin else {
            if message.droppable() {
                self.origin = Some(message.timestamp);
            }
            return Some(0);
        };
        // Signed distance, so a publisher clock that wraps past 2^32 ms keeps counting.
        let delta = message.timestamp.wrapping_sub(origin) as i32;
        if delta >= 0 {
            Some(delta as u32)
        } else if message.droppable() {
            None
        } else {
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prism_media::MediaKind;

    fn msg(kind: MediaKind, ts: u32, body: &'static [u8]) -> MediaMessage {
        MediaMessage::new(kind, ts, Bytes::from_static(body))
    }

    #[test]
    fn timeline_starts_at_zero_and_skips_frames_before_the_start() {
        let mut timeline = Timeline::default();
        let header = msg(MediaKind::Video, 0, &[0x17, 0, 0, 0, 0]);
        let key = msg(MediaKind::Video, 60_000, &[0x17, 1, 0, 0, 0]);
        let early_audio = msg(MediaKind::Audio, 59_990, &[0xaf, 1]);
        let audio = msg(MediaKind::Audio, 60_010, &[0xaf, 1]);
        let late_header = msg(MediaKind::Audio, 10, &[0xaf, 0, 0x12, 0x10]);
        assert_eq!(timeline.rebase(&header), Some(0));
        assert_eq!(timeline.rebase(&key), Some(0));
        assert_eq!(timeline.rebase(&early_audio), None);
        assert_eq!(timeline.rebase(&audio), Some(10));
        assert_eq!(timeline.rebase(&late_header), Some(0));
    }

    #[test]
    fn timeline_survives_publisher_clock_wrap() {
        let mut timeline = Timeline::default();
        let key = msg(MediaKind::Video, u32::MAX - 10, &[0x17, 1, 0, 0, 0]);
        let next = msg(MediaKind::Video, 20, &[0x27, 1, 0, 0, 0]);
        assert_eq!(timeline.rebase(&key), Some(0));
        assert_eq!(timeline.rebase(&next), Some(31));
    }
}
