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
use prism_media::{HubDirectory, PublishGuard};

use crate::session::{IngestEvent, IngestSession};

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
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Accepts encoders until `shutdown` turns true; then every connection ends
/// its publish (so destinations are unpublished cleanly) and returns.
pub async fn serve_rtmp(
    listener: TcpListener,
    directory: Arc<HubDirectory>,
    limits: IngestLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("semaphore is never closed"),
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
        connections.spawn(async move {
            let _permit = permit;
            match handle_connection(socket, remote, &directory, &limits, shutdown).await {
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
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = socket.set_nodelay(true);
    let mut read_buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + limits.publish_timeout;

    let leftover =
        tokio::time::timeout_at(deadline, rtmp::handshake(&mut socket, PeerType::Server))
            .await
            .map_err(|_| "handshake timed out".to_string())??;

    let mut connection = Connection {
        socket,
        remote,
        session: IngestSession::new(),
        out: ChunkWriter::new(128),
        events: Vec::new(),
        publish: None,
    };
    connection.process(&leftover, directory).await?;
    loop {
        let live = connection.publish.is_some();
        let read = async {
            if live {
                tokio::time::timeout(limits.idle_timeout, connection.socket.read(&mut read_buf))
                    .await
                    .map_err(|_| format!("no data for {} s", limits.idle_timeout.as_secs()))
            } else {
                tokio::time::timeout_at(deadline, connection.socket.read(&mut read_buf))
                    .await
                    .map_err(|_| "no publish before the timeout".to_string())
            }
        };
        let n = tokio::select! {
            read = read => match read? {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(format!("read failed: {e}")),
            },
            _ = shutdown.changed() => break,
        };
        connection.process(&read_buf[..n], directory).await?;
    }
    if let Some(guard) = connection.publish {
        info!(stream = %guard.hub().id(), %remote, "publish ended: connection closed");
    }
    Ok(())
}

/// One encoder connection past the handshake.
struct Connection {
    socket: TcpStream,
    remote: SocketAddr,
    session: IngestSession,
    out: ChunkWriter,
    /// Reused across reads, so the steady state allocates nothing here.
    events: Vec<IngestEvent>,
    publish: Option<PublishGuard>,
}

impl Connection {
    /// Runs bytes through the session, acts on its events, sends its replies.
    async fn process(&mut self, bytes: &[u8], directory: &HubDirectory) -> Result<(), String> {
        let remote = self.remote;
        self.session
            .handle_input(bytes, &mut self.out, &mut self.events)
            .map_err(|e| e.to_string())?;
        let mut refused = None;
        for event in self.events.drain(..) {
            match event {
                IngestEvent::Media(message) => {
                    if let Some(publish) = &self.publish {
                        publish.push(message);
                    }
                }
                IngestEvent::PublishRequested { stream_key } => {
                    let Some(hub) = directory.lookup(&stream_key) else {
                        warn!(%remote, "publish refused: unknown stream key");
                        refused = Some("unknown stream key".to_string());
                        break;
                    };
                    match hub.try_publish() {
                        Ok(guard) => {
                            self.session
                                .accept_publish(&mut self.out)
                                .map_err(|e| e.to_string())?;
                            info!(stream = %hub.id(), %remote, protocol = "rtmp", "publish started");
                            self.publish = Some(guard);
                        }
                        Err(e) => {
                            warn!(stream = %hub.id(), %remote, "publish refused: {e}");
                            refused = Some(e.to_string());
                            break;
                        }
                    }
                }
                IngestEvent::PublishEnded => {
                    if let Some(guard) = self.publish.take() {
                        info!(stream = %guard.hub().id(), %remote, "publish stopped by the encoder");
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
