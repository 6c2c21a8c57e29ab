//! The RTMP listener: one task per encoder connection. The task owns the
//! socket; `IngestSession` does the protocol; the stream hub gets the media.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rml_rtmp::handshake::PeerType;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use prism_media::chunk::ChunkWriter;
use prism_media::rtmp;
use prism_media::{HubDirectory, IngestProtocol, PublishGuard};

use crate::announce::{log_publish_stopped, PublishAnnouncer};
use crate::session::{IngestEvent, IngestSession};
use crate::stats::{IngestStats, Limit, OpenSession, RejectReason};

/// Replies to an encoder are tiny; one that cannot take them is gone.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on what one encoder connection may cost.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Open connections at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// From accept to an accepted publish (handshake, connect, publish).
    pub publish_timeout: Duration,
    /// A live publisher that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// The largest RTMP message accepted (RTMP's own cap is 16 MiB).
    pub max_message_bytes: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_message_bytes: crate::session::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Accepts encoders until `shutdown` turns true; then every connection ends
/// its publish (so destinations are unpublished cleanly) and returns.
pub async fn serve_rtmp(
    listener: TcpListener,
    directory: Arc<HubDirectory>,
    limits: IngestLimits,
    stats: Arc<IngestStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = async {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) => {
                        stats.count_limit(Limit::Connections);
                        warn!(max = limits.max_connections, "rtmp connection limit reached; new encoders wait");
                        Arc::clone(&permits).acquire_owned().await.expect("semaphore is never closed")
                    }
                }
            } => permit,
            _ = shutdown.changed() => break,
        };
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(error = %e, "rtmp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let directory = Arc::clone(&directory);
        let limits = limits.clone();
        let shutdown = shutdown.clone();
        let stats = Arc::clone(&stats);
        connections.spawn(async move {
            let _permit = permit;
            let _open = OpenSession::new(stats.rtmp_sessions());
            match handle_connection(socket, remote, &directory, &limits, &stats, shutdown).await {
                Ok(()) => debug!(%remote, "rtmp connection closed"),
                Err(reason) => info!(%remote, %reason, "rtmp connection ended"),
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn handle_connection(
    mut socket: TcpStream,
    remote: SocketAddr,
    directory: &HubDirectory,
    limits: &IngestLimits,
    stats: &IngestStats,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut read_buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limits.publish_timeout;

    let leftover =
        tokio::time::timeout_at(deadline, rtmp::handshake(&mut socket, PeerType::Server))
            .await
            .map_err(|_| {
                stats.count_rejection(RejectReason::Timeout);
                stats.count_limit(Limit::PublishTimeout);
                "handshake timed out".to_string()
            })?
            .inspect_err(|_| stats.count_rejection(RejectReason::ProtocolError))?;

    let mut connection = Connection {
        socket,
        remote,
        session: IngestSession::with_max_message_bytes(limits.max_message_bytes),
        out: ChunkWriter::new(128),
        events: Vec::new(),
        publish: None,
        announcer: PublishAnnouncer::new(IngestProtocol::Rtmp),
        stats,
    };
    connection.process(&leftover, directory).await?;
    let mut hub_live = None;
    loop {
        let live = connection.publish.is_some();
        let read = async {
            if live {
                tokio::time::timeout(limits.idle_timeout, connection.socket.read(&mut read_buf))
                    .await
                    .map_err(|_| {
                        stats.count_limit(Limit::IdleTimeout);
                        format!("no data for {} s", limits.idle_timeout.as_secs())
                    })
            } else {
                tokio::time::timeout_at(deadline, connection.socket.read(&mut read_buf))
                    .await
                    .map_err(|_| {
                        stats.count_rejection(RejectReason::Timeout);
                        stats.count_limit(Limit::PublishTimeout);
                        "no publish before the timeout".to_string()
                    })
            }
        };
        // Follows the hub, so a publish the hub ended (its stream was removed)
        // closes the connection instead of feeding nothing.
        if connection.publish.is_none() {
            hub_live = None;
        } else if hub_live.is_none() {
            hub_live = connection.publish.as_ref().map(|p| p.hub().watch_live());
        }
        let publish_ended = async {
            match hub_live.as_mut() {
                Some(live) => {
                    let _ = live.changed().await;
                }
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            read = read => match read? {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(format!("read failed: {e}")),
            },
            _ = shutdown.changed() => break,
            () = publish_ended => {
                if connection.publish.as_ref().is_some_and(|p| !p.is_current()) {
                    info!(%remote, "publish ended: the stream was removed");
                    connection.publish = None;
                    return Ok(());
                }
                continue;
            }
        };
        connection.process(&read_buf[..n], directory).await?;
    }
    if let Some(guard) = connection.publish {
        log_publish_stopped(&guard, remote, "connection closed");
    }
    Ok(())
}

/// One encoder connection past the handshake.
struct Connection<'a> {
    socket: TcpStream,
    remote: SocketAddr,
    session: IngestSession,
    out: ChunkWriter,
    /// Reused across reads, so the steady state allocates nothing here.
    events: Vec<IngestEvent>,
    publish: Option<PublishGuard>,
    announcer: PublishAnnouncer,
    stats: &'a IngestStats,
}

impl Connection<'_> {
    /// Runs bytes through the session, acts on its events, sends its replies.
    async fn process(&mut self, bytes: &[u8], directory: &HubDirectory) -> Result<(), String> {
        let remote = self.remote;
        if let Err(e) = self
            .session
            .handle_input(bytes, &mut self.out, &mut self.events)
        {
            if self.publish.is_none() {
                self.stats.count_rejection(RejectReason::ProtocolError);
            }
            if e.is_limit() {
                self.stats.count_limit(Limit::MessageBounds);
            }
            return Err(e.to_string());
        }
        let mut refused = None;
        for event in self.events.drain(..) {
            match event {
                IngestEvent::Media(message) => {
                    if let Some(publish) = &mut self.publish {
                        self.announcer.observe(&message, publish.hub().id(), remote);
                        publish.push(message);
                    }
                }
                IngestEvent::PublishRequested { stream_key } => {
                    let Some(hub) = directory.lookup(&stream_key) else {
                        warn!(%remote, "publish refused: unknown stream key");
                        self.stats.count_rejection(RejectReason::UnknownKey);
                        refused = Some("unknown stream key".to_string());
                        break;
                    };
                    match hub.try_publish(IngestProtocol::Rtmp, remote) {
                        Ok(guard) => {
                            self.session
                                .accept_publish(&mut self.out)
                                .map_err(|e| e.to_string())?;
                            debug!(stream = %hub.id(), %remote, protocol = "rtmp", "publish accepted");
                            self.publish = Some(guard);
                        }
                        Err(e) => {
                            warn!(stream = %hub.id(), %remote, "publish refused: {e}");
                            self.stats.count_rejection(RejectReason::AlreadyLive);
                            refused = Some(e.to_string());
                            break;
                        }
                    }
                }
                IngestEvent::PublishEnded => {
                    if let Some(guard) = self.publish.take() {
                        log_publish_stopped(&guard, remote, "the encoder unpublished");
                    }
                }
            }
        }
        if let Some(reason) = refused {
            self.events.clear();
            self.session
                .reject_publish(&mut self.out, &reason)
                .map_err(|e| e.to_string())?;
            flush(&mut self.socket, &mut self.out).await?;
            return Err(format!("publish refused: {reason}"));
        }
        if !self.out.is_empty() {
            flush(&mut self.socket, &mut self.out).await?;
        }
        Ok(())
    }
}

async fn flush(socket: &mut TcpStream, out: &mut ChunkWriter) -> Result<(), String> {
    out.write_to(socket, Some(WRITE_STALL_TIMEOUT))
        .await
        .map_err(|e| e.to_string())
}
