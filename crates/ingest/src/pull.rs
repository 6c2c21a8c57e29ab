//! Pulled sources: a stream with `pull = "rtmp://…"` or `pull = "srt://…"`
//! gets its media from that server instead of waiting for an encoder.
//! Prism plays the stream (an RTMP play client; an SRT caller in request
//! mode) and relays it as if it had been published: the hub sees a
//! publisher of protocol `rtmp-pull` or `srt-pull` while media flows, and
//! none while the source is gone, so grace and standby apply as usual.
//!
//! One supervised task per pulled stream: it reconnects with a short
//! jittered backoff (0.5 s doubling to 2 s) while the source is away, so a
//! source that comes back is relayed again within seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use srt_tokio::SrtSocket;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use prism_media::arbiter::SourceRole;
use prism_media::remote_text::remote_text;
use prism_media::supervise::catch_panic;
use prism_media::timeline::Unwrapper;
use prism_media::{IngestProtocol, MediaMessage, PublishGuard, StreamHub};
use prism_rtmp::{ChunkWriter, PlayClient, PlayEvent, PublishTarget, Role, ServerLimits};

use crate::announce::{log_publish_stopped, PublishAnnouncer};
use crate::error::PullError;
use crate::rtmp::relayed_message;
use crate::srt::TsToFlv;

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A connection that relayed this long starts the backoff over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Cluster mode: how often a node that does not pull asks again.
const ELSEWHERE_RECHECK: Duration = Duration::from_secs(1);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A live source that sends nothing for this long is gone: its publish ends
/// (grace and standby take over) and Prism reconnects.
const SOURCE_SILENT: Duration = Duration::from_secs(3);
/// An RTMP server with no publisher for the stream keeps the play session
/// open and silent (nginx-rtmp pings every minute); past this, reconnect.
const SERVER_IDLE: Duration = Duration::from_secs(180);

/// Where a pulled stream comes from.
#[derive(Clone)]
pub enum PullSource {
    Rtmp {
        host: String,
        port: u16,
        target: PublishTarget,
        /// What the source's messages may take: the bounds publishers have.
        limits: ServerLimits,
    },
    Srt {
        /// `HOST:PORT`.
        address: String,
        stream_id: Option<String>,
        passphrase: Option<String>,
        latency: Option<Duration>,
        key_length: u16,
    },
}

impl PullSource {
    pub fn protocol(&self) -> IngestProtocol {
        match self {
            PullSource::Rtmp { .. } => IngestProtocol::RtmpPull,
            PullSource::Srt { .. } => IngestProtocol::SrtPull,
        }
    }
}

/// A running pull; stopping it (or dropping it) ends the pulled publish.
pub struct Pull {
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Pull {
    /// Ends the pull and waits for its task.
    pub async fn stop(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Pull {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// Starts pulling `source` into `hub`. `shown` names the source in logs
/// (the URL without its key).
/// `role`: which of the stream's sources it feeds (`pull` is the primary,
/// `backup_pull` the backup).
pub fn spawn_pull(
    hub: Arc<StreamHub>,
    source: PullSource,
    shown: String,
    role: SourceRole,
) -> Pull {
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(run(hub, source, shown, role, stop));
    Pull {
        shutdown,
        task: Some(task),
    }
}

async fn run(
    hub: Arc<StreamHub>,
    source: PullSource,
    shown: String,
    role: SourceRole,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = BACKOFF_START;
    let mut failures = 0u64;
    let mut waiting_elsewhere = false;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        // Cluster mode: one node pulls; the others wait for its lease to
        // end (the node died, or the stream was handed over).
        if let Err(e) = hub.admit(source.protocol(), role, Duration::ZERO).await {
            if !waiting_elsewhere {
                info!(stream = %hub.id(), source = %shown, "not pulling here: {e}");
                waiting_elsewhere = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(ELSEWHERE_RECHECK) => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        waiting_elsewhere = false;
        let started = Instant::now();
        let mut publish: Option<PublishGuard> = None;
        let attempt = catch_panic("pull", session(&hub, &source, role, &mut publish));
        let end = tokio::select! {
            end = attempt => end,
            _ = stop.changed() => return,
        };
        let was_live = publish.is_some();
        if let Some(guard) = publish.take() {
            let remote = guard_remote(&hub);
            log_publish_stopped(&guard, remote, "the pulled source went away");
        }
        // The source's words (a refusal's description) are data: escaped
        // and cut before they reach a log line.
        let reason = match end {
            Ok(reason) => remote_text(&reason),
            Err(panic) => {
                let panic = remote_text(&panic.message);
                error!(stream = %hub.id(), source = %shown, %panic, "pull task panicked; reconnecting");
                format!("internal error (task panicked): {panic}")
            }
        };
        if started.elapsed() >= BACKOFF_RESET_AFTER || was_live {
            backoff = BACKOFF_START;
            failures = 0;
        }
        failures += 1;
        // The first failure of a run says why; then one line a minute.
        if failures == 1 || failures.is_multiple_of(30) {
            warn!(stream = %hub.id(), source = %shown, error = %reason, attempts = failures, "pulled source unavailable; retrying");
        }
        let delay = backoff.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

fn guard_remote(hub: &StreamHub) -> SocketAddr {
    hub.publisher()
        .map(|p| p.remote)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// One connection to the source; returns why it ended. `publish` holds the
/// stream while media flows.
async fn session(
    hub: &Arc<StreamHub>,
    source: &PullSource,
    role: SourceRole,
    publish: &mut Option<PublishGuard>,
) -> String {
    let result = match source {
        PullSource::Rtmp {
            host,
            port,
            target,
            limits,
        } => rtmp_session(hub, host, *port, target, *limits, role, publish).await,
        PullSource::Srt { .. } => srt_session(hub, source, role, publish).await,
    };
    match result {
        Ok(()) => "the source ended the session".into(),
        Err(reason) => reason.to_string(),
    }
}

/// Feeds media to the hub. The stream is taken at the first audio or video
/// frame, not before: a server with no publisher may still send the last
/// one's headers, and that is no show. Headers and metadata wait for it.
struct Relay<'a> {
    hub: &'a Arc<StreamHub>,
    protocol: IngestProtocol,
    remote: SocketAddr,
    role: SourceRole,
    announcer: PublishAnnouncer,
    /// The newest header of each kind that came before the first frame.
    waiting_headers: Vec<MediaMessage>,
}

impl<'a> Relay<'a> {
    fn new(
        hub: &'a Arc<StreamHub>,
        protocol: IngestProtocol,
        remote: SocketAddr,
        role: SourceRole,
    ) -> Self {
        Self {
            hub,
            protocol,
            remote,
            role,
            announcer: PublishAnnouncer::new(protocol),
            waiting_headers: Vec::new(),
        }
    }

    fn push(
        &mut self,
        publish: &mut Option<PublishGuard>,
        message: MediaMessage,
    ) -> Result<(), PullError> {
        if publish.is_none() {
            if !message.droppable() {
                self.waiting_headers.retain(|h| {
                    h.kind != message.kind || h.sequence_header != message.sequence_header
                });
                self.waiting_headers.push(message);
                return Ok(());
            }
            let guard = self
                .hub
                .try_publish_as(self.protocol, self.remote, self.role)
                .map_err(PullError::Admit)?;
            info!(stream = %self.hub.id(), remote = %self.remote, protocol = self.protocol.as_str(), source = self.role.as_str(), "pulled source live");
            self.announcer = PublishAnnouncer::new(self.protocol);
            *publish = Some(guard);
            for header in std::mem::take(&mut self.waiting_headers) {
                self.forward(publish, header);
            }
        }
        self.forward(publish, message);
        Ok(())
    }

    fn forward(&mut self, publish: &mut Option<PublishGuard>, message: MediaMessage) {
        if let Some(guard) = publish {
            self.announcer.observe(&message, guard, self.remote);
            guard.push(message);
        }
    }

    /// The source's publisher left: the stream is released (grace and
    /// standby take over) until the next one sends a frame.
    fn source_stopped(&mut self, publish: &mut Option<PublishGuard>) {
        if let Some(guard) = publish.take() {
            log_publish_stopped(&guard, self.remote, "the source's publisher stopped");
        }
        self.waiting_headers.clear();
    }
}

async fn rtmp_session(
    hub: &Arc<StreamHub>,
    host: &str,
    port: u16,
    target: &PublishTarget,
    limits: ServerLimits,
    role: SourceRole,
    publish: &mut Option<PublishGuard>,
) -> Result<(), PullError> {
    let address = format!("{host}:{port}");
    let connect = TcpStream::connect((host, port));
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| PullError::NoAnswer {
            address: address.clone(),
            within: CONNECT_TIMEOUT,
        })?
        .map_err(|error| PullError::Connect {
            address: address.clone(),
            error,
        })?;
    let remote = stream.peer_addr().map_err(PullError::Read)?;
    let leftover = tokio::time::timeout(
        CONNECT_TIMEOUT,
        prism_rtmp::handshake(&mut stream, Role::Client),
    )
    .await
    .map_err(|_| PullError::HandshakeTimeout)??;
    let mut client = PlayClient::new(target.clone(), limits);
    let mut out = ChunkWriter::new(128);
    client.start(&mut out);
    let mut events = client.handle_input(&leftover, &mut out)?;
    let mut relay = Relay::new(hub, IngestProtocol::RtmpPull, remote, role);
    let mut timeline = Unwrapper::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        out.write_to(&mut stream, Some(CONNECT_TIMEOUT)).await?;
        for event in events.drain(..) {
            match event {
                PlayEvent::Started => {
                    info!(stream = %hub.id(), %remote, "playing the pulled RTMP source")
                }
                PlayEvent::Media(message) => {
                    if let Some(message) = relayed_message(message, &mut timeline) {
                        relay.push(publish, message)?;
                    }
                }
                PlayEvent::SourceStopped => {
                    relay.source_stopped(publish);
                    // The next publisher on the server starts its own clock.
                    timeline = Unwrapper::new();
                }
                PlayEvent::Rejected { code, reason } => {
                    return Err(PullError::Refused { code, reason })
                }
            }
        }
        // Live, silence means the source is gone; idle, the server is
        // waiting for a publisher.
        let patience = if publish.is_some() {
            SOURCE_SILENT
        } else {
            SERVER_IDLE
        };
        let n = match tokio::time::timeout(patience, stream.read(&mut buf)).await {
            Err(_) => return Err(PullError::Silent(patience)),
            Ok(Ok(0)) => return Err(PullError::Closed),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(PullError::Read(e)),
        };
        events = client.handle_input(&buf[..n], &mut out)?;
    }
}

async fn srt_session(
    hub: &Arc<StreamHub>,
    source: &PullSource,
    role: SourceRole,
    publish: &mut Option<PublishGuard>,
) -> Result<(), PullError> {
    let PullSource::Srt {
        address,
        stream_id,
        passphrase,
        latency,
        key_length,
    } = source
    else {
        unreachable!("an SRT source")
    };
    let mut builder = SrtSocket::builder().set(|o| o.connect.timeout = CONNECT_TIMEOUT);
    if let Some(latency) = latency {
        builder = builder.latency(*latency);
    }
    if let Some(passphrase) = passphrase {
        let (Ok(passphrase), Ok(key_size)) =
            (passphrase.clone().try_into(), (*key_length).try_into())
        else {
            return Err(PullError::BadPassphrase);
        };
        builder = builder.set(|o| {
            o.encryption.passphrase = Some(passphrase);
            o.encryption.key_size = key_size;
        });
    }
    let mut socket = builder
        .call(address.as_str(), stream_id.as_deref())
        .await
        .map_err(|error| PullError::Connect {
            address: address.clone(),
            error,
        })?;
    let remote = socket.settings().remote;
    let mut relay = Relay::new(hub, IngestProtocol::SrtPull, remote, role);
    let mut ts = TsToFlv::new();
    let mut messages = Vec::new();
    let result = loop {
        let data = match tokio::time::timeout(SOURCE_SILENT, socket.next()).await {
            Err(_) => break Err(PullError::Silent(SOURCE_SILENT)),
            Ok(None) => break Err(PullError::Closed),
            Ok(Some(Err(e))) => break Err(PullError::Read(e)),
            Ok(Some(Ok((_, data)))) => data,
        };
        ts.push(&data, &mut messages);
        if let Some(error) = messages
            .drain(..)
            .find_map(|message| relay.push(publish, message).err())
        {
            break Err(error);
        }
    };
    ts.log_losses(hub, remote);
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close_and_finish()).await;
    result
}
