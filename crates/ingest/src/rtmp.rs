//! The RTMP listener: one task per encoder connection. The task owns the
//! socket; `prism_rtmp::ServerSession` does the protocol; the stream hub
//! gets the media. A panic in a connection task ends that connection only:
//! it is caught, logged with the remote address and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use prism_media::accept::{AcceptBackoff, Throttle, LOG_INTERVAL};
use prism_media::auth::{parse_args, PublishAttempt, Refusal};
use prism_media::flv::{self, AMF0_SET_DATA_FRAME};
use prism_media::hub::PublishEnded;
use prism_media::remote_text::remote_text;
use prism_media::supervise::catch_panic;
use prism_media::timeline::Unwrapper;
use prism_media::{
    IngestProtocol, KeyDirectory, MediaKind, MediaMessage, PublishError, PublishGuard,
};
use prism_rtmp::{ChunkWriter, Role, ServerEvent, ServerLimits, ServerSession};

use crate::admission::{Admission, AdmissionLimits, EvictedBy, Stage, Ticket};
use crate::announce::{log_publish_stopped, PublishAnnouncer};
use crate::error::IngestError;
use crate::stats::{IngestStats, Limit, OpenSession, RejectReason};
use crate::streamid::{names_backup, source_role};

/// Why an anonymous connection was closed to make room for a newer one.
/// Read buffer sizes before and after the publish is accepted.
const ANONYMOUS_READ_BUFFER: usize = 4 * 1024;
const PUBLISHING_READ_BUFFER: usize = 64 * 1024;

/// Replies to an encoder are tiny; one that cannot take them is gone.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on what one encoder connection may cost.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Open connections at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// From accept to an answered `connect` (handshake included): a real
    /// encoder needs a few round trips, an idle socket is gone quickly.
    pub handshake_timeout: Duration,
    /// From accept to an accepted publish (handshake, connect, publish).
    pub publish_timeout: Duration,
    /// A live publisher that sends nothing for this long is dropped.
    pub idle_timeout: Duration,
    /// The largest RTMP message accepted once publishing (RTMP's own cap
    /// is 16 MiB; before the publish is accepted the cap is 64 KiB).
    pub max_message_bytes: usize,
    /// Messages in progress at once on one connection (interleaved chunk
    /// streams); together with the message size, what bounds its memory.
    pub max_partial_messages: usize,
    /// Bounds on connections not yet publishing with a known key.
    pub admission: AdmissionLimits,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_message_bytes: ServerLimits::default().max_message_len,
            max_partial_messages: ServerLimits::default().max_partial_messages,
            admission: AdmissionLimits::default(),
        }
    }
}

/// The RTMP ingest: what outlives any one listener task. Connections are
/// tracked here, not inside the accept loop, so a listener that ends or
/// panics and is restarted takes no live publish with it, and the
/// connection cap keeps counting the connections it accepted.
pub struct RtmpIngest {
    directory: Arc<dyn KeyDirectory>,
    limits: IngestLimits,
    stats: Arc<IngestStats>,
    permits: Arc<Semaphore>,
    admission: Arc<Admission>,
    connections: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

impl RtmpIngest {
    pub fn new(
        directory: Arc<dyn KeyDirectory>,
        limits: IngestLimits,
        stats: Arc<IngestStats>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            admission: Arc::new(Admission::new(limits.admission)),
            directory,
            limits,
            stats,
            connections: TaskTracker::new(),
            shutdown,
        }
    }

    /// Accepts encoders on `listener` until shutdown; each connection runs
    /// in its own supervised task.
    pub async fn serve(&self, listener: TcpListener) {
        let mut shutdown = self.shutdown.clone();
        let stats = &self.stats;
        let max = self.limits.max_connections;
        let mut backoff = AcceptBackoff::new("rtmp");
        let mut limit_log = Throttle::new(LOG_INTERVAL);
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            let permit = tokio::select! {
                permit = async {
                    match Arc::clone(&self.permits).try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => {
                            stats.count_limit(Limit::Connections);
                            if let Some(times) = limit_log.occurred(tokio::time::Instant::now()) {
                                warn!(max, times, "rtmp connection limit reached; new encoders wait");
                            }
                            Arc::clone(&self.permits).acquire_owned().await.expect("semaphore is never closed")
                        }
                    }
                } => permit,
                _ = shutdown.changed() => return,
            };
            // With the anonymous pool full, the next connection stays in
            // the kernel's queue until a stalled one gives up its slot.
            tokio::select! {
                () = self.admission.room() => {}
                _ = shutdown.changed() => return,
            }
            let (socket, remote) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => {
                        backoff.succeeded();
                        accepted
                    }
                    Err(e) => {
                        backoff.failed(&e).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let (ticket, evictions) = self.admission.admit(remote.ip());
            for evicted_by in evictions {
                stats.count_limit(match evicted_by {
                    EvictedBy::Pool => Limit::AnonymousConnections,
                    EvictedBy::Address => Limit::AnonymousPerAddress,
                });
            }
            let directory = Arc::clone(&self.directory);
            let limits = self.limits.clone();
            let shutdown = self.shutdown.clone();
            let stats = Arc::clone(stats);
            self.connections.spawn(async move {
                let _permit = permit;
                let _open = OpenSession::new(stats.rtmp_sessions());
                let connection = handle_connection(
                    socket,
                    remote,
                    ticket,
                    &*directory,
                    &limits,
                    &stats,
                    shutdown,
                );
                match catch_panic("rtmp_connection", connection).await {
                    Ok(Ok(())) => debug!(%remote, "rtmp connection closed"),
                    Ok(Err(reason)) => {
                        let reason = remote_text(&reason.to_string());
                        info!(%remote, %reason, "rtmp connection ended")
                    }
                    Err(panic) => {
                        let panic = remote_text(&panic.message);
                        error!(%remote, %panic, "rtmp connection task panicked; connection closed")
                    }
                }
            });
        }
    }

    /// Waits for every connection to end (after shutdown, each ends its
    /// publish so destinations are unpublished cleanly).
    pub async fn drain(&self) {
        self.connections.close();
        self.connections.wait().await;
    }
}

async fn handle_connection(
    mut socket: TcpStream,
    remote: SocketAddr,
    mut ticket: Ticket,
    directory: &dyn KeyDirectory,
    limits: &IngestLimits,
    stats: &IngestStats,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let _ = socket.set_nodelay(true);
    // Small until the publish is accepted: anonymous connections are many
    // under a flood, and their replies and commands are small.
    let mut read_buf = vec![0u8; ANONYMOUS_READ_BUFFER];
    let accepted = tokio::time::Instant::now();
    // From the accept, and again from each clean stop: an encoder may
    // publish again on the same connection.
    let mut publish_deadline = accepted + limits.publish_timeout;
    let connect_deadline = (accepted + limits.handshake_timeout).min(publish_deadline);
    let mut has_published = false;
    let handshake_timed_out = || {
        stats.count_rejection(RejectReason::Timeout);
        stats.count_limit(Limit::HandshakeTimeout);
        IngestError::HandshakeTimeout(limits.handshake_timeout)
    };

    let handshake = tokio::time::timeout_at(
        connect_deadline,
        prism_rtmp::handshake(&mut socket, Role::Server),
    );
    let leftover = tokio::select! {
        handshake = handshake => handshake
            .map_err(|_| handshake_timed_out())?
            .map_err(|e| {
                stats.count_rejection(RejectReason::ProtocolError);
                IngestError::Handshake(e)
            })?,
        () = ticket.evicted() => return Err(IngestError::Evicted),
    };
    ticket.advance(Stage::Handshaken);

    let mut connection = Connection {
        socket,
        remote,
        session: ServerSession::new(ServerLimits {
            max_message_len: limits.max_message_bytes,
            max_partial_messages: limits.max_partial_messages,
        }),
        out: ChunkWriter::new(128),
        events: Vec::new(),
        publish: None,
        timeline: Unwrapper::new(),
        announcer: PublishAnnouncer::new(IngestProtocol::Rtmp),
        republishing: false,
        stats,
    };
    connection.process(&leftover, directory).await?;
    loop {
        if connection.publish.is_some() {
            has_published = true;
            match read_while_live(
                &mut connection,
                &mut read_buf,
                directory,
                &mut shutdown,
                limits,
            )
            .await?
            {
                LiveEnd::Closed => break,
                LiveEnd::Unpublished => continue,
                LiveEnd::Ended(why) => {
                    let told = why.reason();
                    info!(%remote, "publish ended: {told}");
                    connection.publish = None;
                    connection.session.end_publish(&mut connection.out, told);
                    // Best effort: an encoder that went silent may not read.
                    let _ = flush(&mut connection.socket, &mut connection.out).await;
                    return Ok(());
                }
            }
        }
        if has_published {
            // The encoder stopped cleanly (FCUnpublish): it has a new
            // publish timeout to publish again, and closing after it is
            // not a refusal.
            has_published = false;
            publish_deadline = tokio::time::Instant::now() + limits.publish_timeout;
            connection.timeline = Unwrapper::new();
            connection.announcer = PublishAnnouncer::new(IngestProtocol::Rtmp);
            connection.republishing = true;
        }
        let republishing = connection.republishing;
        let read = async {
            if !connection.session.is_connected() {
                tokio::time::timeout_at(connect_deadline, connection.socket.read(&mut read_buf))
                    .await
                    .map_err(|_| handshake_timed_out())
            } else {
                match tokio::time::timeout_at(
                    publish_deadline,
                    connection.socket.read(&mut read_buf),
                )
                .await
                {
                    Ok(read) => Ok(read),
                    // After a clean stop: the connection just ends.
                    Err(_) if republishing => Ok(Ok(0)),
                    Err(_) => {
                        stats.count_rejection(RejectReason::Timeout);
                        stats.count_limit(Limit::PublishTimeout);
                        Err(IngestError::PublishTimeout)
                    }
                }
            }
        };
        let n = tokio::select! {
            read = read => match read? {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(IngestError::Read(e)),
            },
            _ = shutdown.changed() => break,
            () = ticket.evicted() => return Err(IngestError::Evicted),
        };
        connection.process(&read_buf[..n], directory).await?;
        // Admission follows the opening only; a publishing connection
        // skips this on every later read.
        if ticket.is_anonymous() {
            if connection.publish.is_some() {
                ticket.publishing();
                read_buf.resize(PUBLISHING_READ_BUFFER, 0);
            } else if connection.session.is_stream_created() {
                ticket.advance(Stage::StreamCreated);
            } else if connection.session.is_connected() {
                ticket.advance(Stage::Connected);
            }
        }
    }
    if let Some(guard) = connection.publish {
        log_publish_stopped(&guard, remote, "connection closed");
    }
    Ok(())
}

/// How reading a live publish ended.
enum LiveEnd {
    /// The encoder closed the connection, or Prism is shutting down.
    Closed,
    /// The encoder stopped publishing cleanly (it may publish again).
    Unpublished,
    /// The publish no longer holds the stream: another encoder took over,
    /// or the stream was removed.
    Ended(PublishEnded),
}

/// Reads a live publish into the hub until it ends.
///
/// What only matters when something rare happens (Prism shutting down, the
/// hub ending the publish, the encoder going silent) waits in futures that
/// live across reads. Made afresh for each read, as before the publish,
/// they registered and removed two waiters and a timer a few hundred times
/// a second: most of a publishing connection's own CPU.
async fn read_while_live(
    connection: &mut Connection<'_>,
    read_buf: &mut [u8],
    directory: &dyn KeyDirectory,
    shutdown: &mut watch::Receiver<bool>,
    limits: &IngestLimits,
) -> Result<LiveEnd, IngestError> {
    let Some(publish) = &connection.publish else {
        return Ok(LiveEnd::Unpublished);
    };
    let mut shutdown_changed = std::pin::pin!(shutdown.changed());
    let mut ended = std::pin::pin!(publish.ended());
    let mut last_read = tokio::time::Instant::now();
    let mut idle = std::pin::pin!(tokio::time::sleep_until(last_read + limits.idle_timeout));
    loop {
        let n = tokio::select! {
            biased;
            _ = &mut shutdown_changed => return Ok(LiveEnd::Closed),
            why = &mut ended => return Ok(LiveEnd::Ended(why)),
            read = connection.socket.read(read_buf) => match read {
                Ok(0) => return Ok(LiveEnd::Closed),
                Ok(n) => n,
                Err(e) => return Err(IngestError::Read(e)),
            },
            () = &mut idle => {
                // The timer is moved on only when it fires, not per read.
                let deadline = last_read + limits.idle_timeout;
                if tokio::time::Instant::now() < deadline {
                    idle.as_mut().reset(deadline);
                    continue;
                }
                connection.stats.count_limit(Limit::IdleTimeout);
                return Err(IngestError::Idle(limits.idle_timeout));
            }
        };
        last_read = tokio::time::Instant::now();
        connection.process(&read_buf[..n], directory).await?;
        if connection.publish.is_none() {
            return Ok(LiveEnd::Unpublished);
        }
    }
}

/// One encoder connection past the handshake.
struct Connection<'a> {
    socket: TcpStream,
    remote: SocketAddr,
    session: ServerSession,
    out: ChunkWriter,
    /// Reused across reads, so the steady state allocates nothing here.
    events: Vec<ServerEvent>,
    publish: Option<PublishGuard>,
    /// The publisher's 32-bit (or ffmpeg's 31-bit) clock onto Prism's
    /// 64-bit timeline; one per publish.
    timeline: Unwrapper,
    announcer: PublishAnnouncer,
    /// The encoder has stopped a publish cleanly on this connection.
    republishing: bool,
    stats: &'a IngestStats,
}

impl Connection<'_> {
    /// Runs bytes through the session, acts on its events, sends its replies.
    async fn process(
        &mut self,
        bytes: &[u8],
        directory: &dyn KeyDirectory,
    ) -> Result<(), IngestError> {
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
            return Err(IngestError::Protocol(e));
        }
        let mut refused = None;
        for event in self.events.drain(..) {
            match event {
                ServerEvent::Media(message) => {
                    let Some(publish) = &mut self.publish else {
                        continue;
                    };
                    let Some(message) = relayed_message(message, &mut self.timeline) else {
                        continue;
                    };
                    self.announcer.observe(&message, publish, remote);
                    publish.push(message);
                }
                ServerEvent::PublishRequested {
                    stream_key,
                    arguments,
                } => {
                    let arguments = arguments.unwrap_or_default();
                    let role = source_role(arguments.split('&'));
                    let attempt = PublishAttempt {
                        key: stream_key.clone(),
                        protocol: IngestProtocol::Rtmp,
                        remote,
                        app: self.session.app().to_string(),
                        args: parse_args(&arguments, '&'),
                    };
                    if directory.authorizer().is_none() {
                        let names =
                            argument_names(arguments.split('&').filter(|a| !names_backup(a)));
                        if !names.is_empty() {
                            info!(%remote, arguments = %names, "publish names arguments after the stream key; ignored");
                        }
                    }
                    // One admission for every protocol (the authorisation
                    // hook, then the stream's lease in cluster mode: both
                    // bounded waits).
                    let admitted = match directory.admit(&attempt, role, RTMP_ADMIT_PATIENCE).await
                    {
                        Ok((hub, _)) => hub
                            .try_publish_as(IngestProtocol::Rtmp, remote, role)
                            .map(|guard| (hub, guard)),
                        Err(e) => Err(e),
                    };
                    match admitted {
                        Ok((hub, guard)) => {
                            self.session.accept_publish(&mut self.out);
                            debug!(stream = %hub.id(), %remote, protocol = "rtmp", "publish accepted");
                            self.publish = Some(guard);
                        }
                        Err(e) => {
                            // The key is never logged; the stream, when known, is.
                            let stream = directory
                                .find_key(&stream_key)
                                .map(|(hub, _)| hub.id().to_string());
                            warn!(stream = stream.as_deref().unwrap_or("-"), %remote, protocol = "rtmp", "publish refused: {e}");
                            self.stats.count_rejection(RejectReason::from(&e));
                            refused = Some(e);
                            break;
                        }
                    }
                }
                ServerEvent::PublishEnded => {
                    if let Some(guard) = self.publish.take() {
                        log_publish_stopped(&guard, remote, "the encoder unpublished");
                        guard.finish();
                    }
                }
            }
        }
        if let Some(reason) = refused {
            self.events.clear();
            let code = match reason {
                PublishError::Refused(Refusal::Unauthorized) => "NetStream.Publish.Unauthorized",
                _ => "NetStream.Publish.BadName",
            };
            self.session
                .reject_publish_as(&mut self.out, code, &reason.to_string());
            flush(&mut self.socket, &mut self.out).await?;
            return Err(IngestError::Refused(reason));
        }
        if !self.out.is_empty() {
            flush(&mut self.socket, &mut self.out).await?;
        }
        Ok(())
    }
}

/// Cluster mode: how long an RTMP publish may wait for another node to
/// give its stream up (a dead node's lease to expire). An RTMP encoder
/// waits for its publish answer far longer.
const RTMP_ADMIT_PATIENCE: Duration = Duration::from_secs(8);

async fn flush(socket: &mut TcpStream, out: &mut ChunkWriter) -> Result<(), IngestError> {
    Ok(out.write_to(socket, Some(WRITE_STALL_TIMEOUT)).await?)
}

/// An RTMP media message on the publish's 64-bit timeline (see
/// `media_message`); configuration messages do not move the timeline.
pub(crate) fn relayed_message(
    message: prism_rtmp::Message,
    timeline: &mut Unwrapper,
) -> Option<MediaMessage> {
    let raw = message.timestamp;
    let mut message = media_message(message, 0)?;
    message.timestamp = if message.droppable() {
        timeline.unwrap(raw)
    } else {
        timeline.unwrap_config(raw)
    };
    Some(message)
}

/// The pipeline's message for an RTMP media message, `None` for one that is
/// not relayed. Data messages go out as publishers send them, except that
/// bare `onMetaData` gains the `@setDataFrame` prefix destinations expect,
/// and `@clearDataFrame` (which only makes sense to the server it was sent
/// to) is dropped.
/// `timestamp` is its place on the publish's 64-bit timeline.
fn media_message(message: prism_rtmp::Message, timestamp: u64) -> Option<MediaMessage> {
    let kind = MediaKind::from_type_id(message.type_id)?;
    let mut payload = message.payload;
    if kind == MediaKind::Data {
        if payload.starts_with(b"\x02\x00\x0f@clearDataFrame") {
            return None;
        }
        if flv::is_metadata(&payload) && !payload.starts_with(AMF0_SET_DATA_FRAME) {
            let mut prefixed = BytesMut::with_capacity(AMF0_SET_DATA_FRAME.len() + payload.len());
            prefixed.extend_from_slice(AMF0_SET_DATA_FRAME);
            prefixed.extend_from_slice(&payload);
            payload = prefixed.freeze();
        }
    }
    Some(MediaMessage::new(kind, timestamp, payload))
}

/// What may be logged of a publish's arguments (`KEY?a=1&b`): the names of
/// `name=value` pairs, escaped, and how many came without a value. Values
/// and value-less arguments are never shown: either may be a platform token
/// (`KEY?TOKEN`).
fn argument_names<'a>(arguments: impl Iterator<Item = &'a str>) -> String {
    let mut names = Vec::new();
    let mut bare = 0;
    for pair in arguments.filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((name, _)) => names.push(name),
            None => bare += 1,
        }
    }
    let mut shown = remote_text(&names.join(","));
    if bare > 0 {
        if !shown.is_empty() {
            shown.push_str(", ");
        }
        shown.push_str(&format!("{bare} without a value (not shown)"));
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn argument_values_and_bare_arguments_are_never_shown() {
        assert_eq!(argument_names("a=1&b=secret".split('&')), "a,b");
        assert_eq!(
            argument_names("PLATFORMTOKEN".split('&')),
            "1 without a value (not shown)"
        );
        assert_eq!(
            argument_names("x=1&TOKEN&\n2026 FORGED\x1b[2J=1".split('&')),
            "x,\\n2026 FORGED\\u{1b}[2J, 1 without a value (not shown)"
        );
        assert_eq!(argument_names("".split('&')), "");
    }

    fn data(payload: &'static [u8]) -> prism_rtmp::Message {
        prism_rtmp::Message {
            type_id: prism_rtmp::message::type_id::DATA_AMF0,
            stream_id: 1,
            timestamp: 0,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn metadata_is_prefixed_and_clear_data_frame_dropped() {
        let bare = b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09";
        let message = media_message(data(bare), 0).unwrap();
        assert!(message.payload.starts_with(AMF0_SET_DATA_FRAME));
        assert_eq!(&message.payload[AMF0_SET_DATA_FRAME.len()..], &bare[..]);
        assert!(media_message(data(b"\x02\x00\x0f@clearDataFrame"), 0).is_none());
        let cue = media_message(data(b"\x02\x00\x0aonCuePoint"), 0).unwrap();
        assert_eq!(&cue.payload[..], b"\x02\x00\x0aonCuePoint");
    }
}
