//! The write side of a live destination session: it chunks messages onto the
//! connection on this session's timeline, writes them out, and keeps the
//! session's counters and latency samples. The destination task owns it;
//! while the task is idle it lends its session part to its queue
//! (`DirectWriter`), and the hub's pushes write through it at once, with no
//! task wake-up in between.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tracing::warn;

use prism_media::MediaMessage;
use prism_rtmp::{ChunkWriter, WriteError};

use crate::error::DestinationError;
use crate::queue::{DestinationQueue, DirectWriter};
use crate::status::DestinationStatus;

/// A destination's queue, with what its task lends it.
pub type SessionQueue = DestinationQueue<SessionWriter>;

/// A connection's write half, as a `MediaWriter` uses it.
pub trait MediaSink: AsyncWrite + Unpin + Send + 'static {
    /// Whether the sink can write without waiting (`try_write_tracked`,
    /// `direct_target`); if not, every write goes through the destination
    /// task.
    const WRITES_NOW: bool = true;

    /// A vectored write that never waits: a `WouldBlock` is recorded in
    /// tokio's readiness, so `writable` then waits for room. Only called
    /// when `WRITES_NOW` is true.
    fn try_write_tracked(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Resolves when the socket has room after a `try_write_tracked` that
    /// would have blocked.
    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }

    /// Where a lent `SessionWriter` writes (`None`: it is never lent).
    fn direct_target(&self) -> Option<DirectTarget> {
        None
    }
}

/// Where a lent `SessionWriter` writes directly, without the sink.
#[derive(Debug)]
pub enum DirectTarget {
    /// The connection's socket, through a descriptor of the writer's own:
    /// the socket stays open for as long as the writer may write to it,
    /// wherever it is lent, whatever happens to the task and its sink.
    Socket(OwnedFd),
    /// Takes everything and keeps nothing (`NullSink`).
    Discard,
}

/// The direct write is a plain `sendmsg` on the socket, past tokio's
/// readiness bookkeeping: a `WouldBlock` there leaves tokio believing the
/// socket writable, so the task's next write tries the socket, sees
/// `WouldBlock` itself and only then waits, which is correct and costs one
/// extra call on the rare slow path instead of touching tokio's state on
/// every write.
impl MediaSink for OwnedWriteHalf {
    fn try_write_tracked(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.try_write_vectored(bufs)
    }

    fn writable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send {
        let stream: &TcpStream = self.as_ref();
        stream.writable()
    }

    fn direct_target(&self) -> Option<DirectTarget> {
        let stream: &TcpStream = self.as_ref();
        // Without a descriptor to spare the destination still works, with
        // every write made by its task.
        stream
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(DirectTarget::Socket)
    }
}

/// TLS cannot write without waiting: rustls encrypts inside its async
/// writer, which needs a task context to flush into the socket.
impl MediaSink for tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>> {
    const WRITES_NOW: bool = false;

    fn try_write_tracked(&self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

/// A sink that takes everything and keeps nothing: what the fan-out
/// benchmark writes to, so it measures Prism's work and not the kernel's.
#[derive(Debug, Default)]
pub struct NullSink;

impl AsyncWrite for NullSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl MediaSink for NullSink {
    fn try_write_tracked(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn direct_target(&self) -> Option<DirectTarget> {
        Some(DirectTarget::Discard)
    }
}

/// How much one gated write (`flush_gated`) copies before it gives its
/// permit to the next destination: about 50 µs of copying on loopback.
const REPLAY_SLICE_BYTES: usize = 256 * 1024;

/// Writes one destination session's media and control messages onto its
/// connection: the task's writer, made of the connection's sink and the
/// session's state. While the task is idle it lends the session to its
/// queue (`into_parts`), and the hub's pushes write through it.
pub struct MediaWriter<S> {
    sink: S,
    session: Box<SessionWriter>,
}

/// The part of a destination session's writer that the hub writes
/// through while it is lent: chunking on the session's timeline, the
/// direct write, the counters. It needs no sink: it writes to its own
/// `DirectTarget`.
pub struct SessionWriter {
    /// Kept beside the writer's other fields: reached through the sink
    /// (tokio keeps the socket behind an `Arc`), it was one more cache miss
    /// per destination per message.
    target: Option<DirectTarget>,
    out: ChunkWriter,
    /// The message stream id the server gave the publish.
    stream_id: u32,
    timeline: Timeline,
    telemetry: SessionTelemetry,
    status: Arc<DestinationStatus>,
    /// Why a direct write failed; the task reports it when it takes the
    /// writer back.
    failed: Option<DestinationError>,
    /// How much of `out.written_total()` is already in `status.bytes_sent`:
    /// the counter is shared, so it is brought up to date once a second (and
    /// when the writer goes away), not on every write.
    reported_bytes: u64,
}

impl<S: MediaSink> MediaWriter<S> {
    /// `out` carries the connection's chunk size (and may hold bytes not yet
    /// written); `stream` and `destination` name the session in metrics and logs.
    pub fn new(
        sink: S,
        out: ChunkWriter,
        stream_id: u32,
        status: Arc<DestinationStatus>,
        stream: &str,
        destination: &str,
    ) -> Self {
        let telemetry = SessionTelemetry::new(stream, destination, &status);
        let target = if S::WRITES_NOW {
            sink.direct_target()
        } else {
            None
        };
        Self {
            sink,
            session: Box::new(SessionWriter {
                target,
                out,
                stream_id,
                timeline: Timeline::default(),
                telemetry,
                status,
                failed: None,
                reported_bytes: 0,
            }),
        }
    }

    /// Whether the session can be lent for direct writes.
    pub fn writes_directly(&self) -> bool {
        self.session.target.is_some()
    }

    /// The sink and the session apart, to lend the session to the queue.
    pub fn into_parts(self) -> (S, Box<SessionWriter>) {
        (self.sink, self.session)
    }

    /// Puts a writer back together from `into_parts`.
    pub fn from_parts(sink: S, session: Box<SessionWriter>) -> Self {
        Self { sink, session }
    }

    /// Chunks `message` onto the connection, to go out with the next write.
    pub fn queue(&mut self, message: &MediaMessage) {
        self.session.hold(message);
    }

    /// Where protocol messages (responses to the server, the unpublish) go.
    pub fn chunks(&mut self) -> &mut ChunkWriter {
        &mut self.session.out
    }

    /// Writes everything queued, failing if a write makes no progress within
    /// `stall_timeout`, or if a direct write already failed.
    pub async fn flush(&mut self, stall_timeout: Duration) -> Result<(), DestinationError> {
        let session = &mut *self.session;
        if let Some(error) = session.failed.take() {
            return Err(error);
        }
        let result = session
            .out
            .write_to(&mut self.sink, Some(stall_timeout))
            .await;
        session.report_bytes();
        result?;
        session.telemetry.written(Instant::now(), &session.status);
        Ok(())
    }

    /// As `flush`, for a burst many destinations write at once (the cached
    /// GOP replayed to each new subscriber): writing takes a permit of
    /// `gate`, and gives it back after `REPLAY_SLICE_BYTES` or when the
    /// socket is full, so however many destinations connect together, only
    /// the gate's permits' worth of them copy into sockets at any moment
    /// and the other streams' tasks keep their threads. The wait for a
    /// socket with no room holds no permit: a slow path delays only its own
    /// destination. A TLS sink cannot write without waiting, so it flushes
    /// ungated.
    pub async fn flush_gated(
        &mut self,
        gate: &Semaphore,
        stall_timeout: Duration,
    ) -> Result<(), DestinationError> {
        if !S::WRITES_NOW {
            return self.flush(stall_timeout).await;
        }
        let session = &mut *self.session;
        if let Some(error) = session.failed.take() {
            return Err(error);
        }
        loop {
            let permit = gate
                .acquire()
                .await
                .expect("the replay gate is never closed");
            let mut slice_left = REPLAY_SLICE_BYTES;
            let sink = &self.sink;
            let result = session.out.try_write(|slices| {
                if slice_left == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let written = sink.try_write_tracked(slices)?;
                slice_left = slice_left.saturating_sub(written);
                Ok(written)
            });
            drop(permit);
            session.report_bytes();
            match result {
                Ok(true) => break,
                Ok(false) if slice_left == 0 => tokio::task::yield_now().await,
                Ok(false) => {
                    match tokio::time::timeout(stall_timeout, self.sink.writable()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(DestinationError::io("write", &e)),
                        Err(_) => return Err(WriteError::Stalled(stall_timeout).into()),
                    }
                }
                Err(e) => return Err(DestinationError::io("write", &e)),
            }
        }
        session.telemetry.written(Instant::now(), &session.status);
        Ok(())
    }

    /// Every byte written on this connection so far (`status.bytes_sent`
    /// catches up within a second).
    pub fn bytes_written(&self) -> u64 {
        self.session.bytes_written()
    }

    /// Closes the write side once the unpublish is out.
    pub async fn shutdown(&mut self) {
        let _ = self.sink.shutdown().await;
    }
}

impl SessionWriter {
    /// Every byte written on this connection so far.
    pub fn bytes_written(&self) -> u64 {
        self.out.written_total()
    }

    fn report_bytes(&mut self) {
        let total = self.out.written_total();
        self.status
            .bytes_sent
            .fetch_add(total - self.reported_bytes, Ordering::Relaxed);
        self.reported_bytes = total;
    }
}

impl Drop for SessionWriter {
    fn drop(&mut self) {
        self.report_bytes();
    }
}

/// Writes `slices` to a lent writer's target without waiting.
fn send_now(target: &Option<DirectTarget>, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match target {
        Some(DirectTarget::Socket(fd)) => socket2::SockRef::from(fd).send_vectored(slices),
        Some(DirectTarget::Discard) => Ok(slices.iter().map(|b| b.len()).sum()),
        // Never lent (`writes_directly`); the task would write it.
        None => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl DirectWriter for SessionWriter {
    fn write_now(&mut self, message: &MediaMessage) -> bool {
        let Some(timestamp) = self.timeline.rebase(message) else {
            return true;
        };
        let header = prism_rtmp::media_header(message.kind.type_id(), self.stream_id, timestamp);
        let target = &self.target;
        let result = self
            .out
            .write_now(header, &message.payload, |slices| send_now(target, slices));
        match result {
            Ok(true) => {
                if self
                    .telemetry
                    .written_one(message.received_at, &self.status)
                {
                    self.report_bytes();
                }
                true
            }
            Ok(false) => {
                // The task finishes this write; its latency is known then.
                self.telemetry.arrivals.push(message.received_at);
                false
            }
            Err(e) => {
                self.failed = Some(DestinationError::io("write", &e));
                false
            }
        }
    }

    fn hold(&mut self, message: &MediaMessage) {
        if let Some(timestamp) = self.timeline.rebase(message) {
            prism_rtmp::queue_media(
                &mut self.out,
                message.kind.type_id(),
                self.stream_id,
                timestamp,
                &message.payload,
            );
            self.telemetry.held(message.received_at);
        }
    }

    fn held_bytes(&self) -> usize {
        self.out.pending_bytes()
    }

    fn send_held(&mut self, now: Instant) -> bool {
        let target = &self.target;
        match self.out.try_write(|slices| send_now(target, slices)) {
            Ok(true) => {
                if self.telemetry.written(now, &self.status) {
                    self.report_bytes();
                }
                true
            }
            // The task finishes the write (and samples its latency then).
            Ok(false) => false,
            Err(e) => {
                self.failed = Some(DestinationError::io("write", &e));
                false
            }
        }
    }
}

/// Relay latency samples and the drop summary of one live session. Samples
/// collect in a reused buffer and go to the metrics recorder once a second,
/// so the per-message path neither allocates nor touches a shared lock.
struct SessionTelemetry {
    stream: String,
    destination: String,
    latency: metrics::Histogram,
    arrivals: Vec<Instant>,
    latencies: Vec<f64>,
    /// Direct writes so far (see `written_one`).
    direct_writes: u32,
    /// Messages held for a batch so far (see `held`).
    held_messages: u32,
    /// When the samples next go to the recorder (a second after the last
    /// time): kept as the deadline, so the per-write check is a comparison.
    next_flush: Instant,
    last_drop_report: Instant,
    dropped_at_last_report: u64,
}

const TELEMETRY_FLUSH: Duration = Duration::from_secs(1);
/// One message in this many (written directly, or held for a batch)
/// records its relay latency: at 30 fps with audio that is still about nine
/// samples a second per destination.
const LATENCY_SAMPLE_EVERY: u32 = 8;
/// Latency samples held between flushes; a batch adds at most 256.
const LATENCY_BUFFER: usize = 1024;
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

impl SessionTelemetry {
    fn new(stream: &str, destination: &str, status: &DestinationStatus) -> Self {
        let now = Instant::now();
        Self {
            stream: stream.to_string(),
            destination: destination.to_string(),
            latency: metrics::histogram!("prism_relay_latency_seconds", "stream" => stream.to_string()),
            arrivals: Vec::with_capacity(256),
            latencies: Vec::with_capacity(LATENCY_BUFFER + 256),
            direct_writes: 0,
            held_messages: 0,
            next_flush: now + TELEMETRY_FLUSH,
            last_drop_report: now,
            dropped_at_last_report: status.dropped_frames(),
        }
    }

    /// A message was chunked to go out with the next write: one in
    /// `LATENCY_SAMPLE_EVERY` is sampled for its latency once written.
    fn held(&mut self, arrived: Instant) {
        self.held_messages = self.held_messages.wrapping_add(1);
        if self.held_messages.is_multiple_of(LATENCY_SAMPLE_EVERY) {
            self.arrivals.push(arrived);
        }
    }

    /// After a batch was written at `now`: the latency of its sampled
    /// messages is known. True once a second, as `written_one`.
    fn written(&mut self, now: Instant, status: &DestinationStatus) -> bool {
        for arrived in self.arrivals.drain(..) {
            self.latencies
                .push(now.saturating_duration_since(arrived).as_secs_f64());
        }
        self.maintain(now, status)
    }

    /// After one message was written directly (`arrivals`, a separate
    /// buffer, is not touched). True once a second: time to update shared
    /// counters.
    ///
    /// Only one direct write in `LATENCY_SAMPLE_EVERY` reads the clock and
    /// records its latency (and any message that arrived a second or more
    /// after the last flush, so the once-a-second work is never late): the
    /// hub's push runs this for every destination of every message, and
    /// the clock read and the store into a buffer that is cold by the next
    /// message were about a sixth of Prism's user-space samples at 100
    /// destinations.
    fn written_one(&mut self, arrived: Instant, status: &DestinationStatus) -> bool {
        self.direct_writes = self.direct_writes.wrapping_add(1);
        if !self.direct_writes.is_multiple_of(LATENCY_SAMPLE_EVERY) && arrived < self.next_flush {
            return false;
        }
        let now = Instant::now();
        self.latencies
            .push(now.saturating_duration_since(arrived).as_secs_f64());
        self.maintain(now, status)
    }

    /// Hands samples to the recorder once a second, or sooner when the
    /// buffer is full (so it never grows), and reports drops every 10 s.
    /// Returns whether the second was up.
    fn maintain(&mut self, now: Instant, status: &DestinationStatus) -> bool {
        let second_up = now >= self.next_flush;
        if second_up {
            self.next_flush = now + TELEMETRY_FLUSH;
        }
        if second_up || self.latencies.len() >= LATENCY_BUFFER {
            for latency in self.latencies.drain(..) {
                self.latency.record(latency);
            }
        }
        if now.duration_since(self.last_drop_report) >= DROP_REPORT_EVERY {
            self.last_drop_report = now;
            let dropped = status.dropped_frames();
            let new_drops = dropped - self.dropped_at_last_report;
            self.dropped_at_last_report = dropped;
            if new_drops > 0 {
                warn!(
                    stream = %self.stream,
                    destination = %self.destination,
                    dropped_frames = new_drops,
                    queue_budget_kib = status.queue_stats().budget_bytes / 1024,
                    "destination is slower than the stream: frames dropped in the last 10 s"
                );
            }
        }
        second_up
    }
}

/// Rebases timestamps so each destination session's timeline starts at 0 on
/// the first frame it is sent (usually the cached keyframe), whatever the
/// publisher's clock says. Frames stamped before that start (audio
/// interleaved just ahead of the keyframe) are skipped, so every track stays
/// monotonic.
///
/// The session's timeline is 64-bit (it never wraps, whatever the
/// publisher's clock did); what goes out is its low 32 bits, RTMP's own wrap
/// at 2^32, so a destination session can run forever.
#[derive(Default)]
struct Timeline {
    origin: Option<u64>,
}

impl Timeline {
    fn rebase(&mut self, message: &MediaMessage) -> Option<u32> {
        let Some(origin) = self.origin else {
            if message.droppable() {
                self.origin = Some(message.timestamp);
            }
            return Some(0);
        };
        if let Some(elapsed) = message.timestamp.checked_sub(origin) {
            Some(prism_media::timeline::rtmp_timestamp(elapsed))
        } else if message.droppable() && !message.keyframe {
            None
        } else {
            // Sequence headers, metadata, and a keyframe stamped just before
            // the first message sent (a publisher that interleaves chunk
            // streams can finish a short audio message before the keyframe
            // that precedes it): dropping the keyframe would leave the
            // destination undecodable until the next one.
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prism_media::MediaKind;

    fn msg(kind: MediaKind, ts: u64, body: &'static [u8]) -> MediaMessage {
        MediaMessage::new(kind, ts, Bytes::from_static(body))
    }

    /// A lent session writes to its own descriptor of the socket: when the
    /// task and its sink are gone (a panic unwinds them, and the sink shuts
    /// the connection's write side), a write through the session fails on
    /// that connection, and never lands on a descriptor number the process
    /// has since given to another connection.
    #[tokio::test]
    async fn a_lent_session_outliving_its_sink_fails_on_its_own_connection() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connect = || TcpStream::connect(listener.local_addr().unwrap());
        let client = connect().await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (read_half, sink) = client.into_split();
        let status = Arc::new(DestinationStatus::new(Arc::default()));
        let writer = MediaWriter::new(sink, ChunkWriter::new(4096), 1, status, "s", "d");
        assert!(writer.writes_directly());
        let (sink, mut session) = writer.into_parts();
        drop((sink, read_half));
        // The next connection may take the closed descriptor's number.
        let _other = connect().await.unwrap();
        let (other_server, _) = listener.accept().await.unwrap();

        assert!(!session.write_now(&msg(MediaKind::Video, 0, &[0x17, 1, 0, 0, 0, 0xab])));
        assert!(session
            .failed
            .as_ref()
            .is_some_and(|e| e.is_closed() && e.message().starts_with("write failed")));
        drop(session);
        let mut received = Vec::new();
        server.read_to_end(&mut received).await.unwrap();
        assert!(received.is_empty(), "{received:?}");
        let mut probe = [0u8; 16];
        assert!(
            matches!(other_server.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "nothing reached the other connection"
        );
    }

    /// Direct writes record one latency sample in `LATENCY_SAMPLE_EVERY`,
    /// and always one for a message that arrived a second after the last
    /// flush, so the once-a-second flush is never held back.
    #[test]
    fn direct_writes_sample_their_latency_and_still_flush_each_second() {
        let status = DestinationStatus::new(Arc::default());
        let mut telemetry = SessionTelemetry::new("s", "d", &status);
        let arrived = telemetry.next_flush - TELEMETRY_FLUSH;
        for _ in 0..2 * LATENCY_SAMPLE_EVERY {
            telemetry.written_one(arrived, &status);
        }
        assert_eq!(telemetry.latencies.len(), 2);
        let a_second_later = telemetry.next_flush;
        telemetry.written_one(a_second_later, &status);
        assert_eq!(
            telemetry.latencies.len(),
            3,
            "a message a second after the last flush is sampled out of turn"
        );
    }

    /// A replay larger than the socket takes at once, written gated to a
    /// reader that starts late: the write waits for its permit, then for
    /// room without it, and the reader gets every byte in order.
    #[tokio::test]
    async fn a_gated_flush_waits_for_its_permit_then_writes_everything() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let (_read_half, sink) = client.into_split();
        let status = Arc::new(DestinationStatus::new(Arc::default()));
        let mut writer = MediaWriter::new(sink, ChunkWriter::new(60_000), 1, status, "s", "d");
        // A keyframe first (the timeline starts there), then 4 MiB of frames.
        let frame: &'static [u8] = Box::leak(vec![0x27u8; 100_000].into_boxed_slice());
        writer.queue(&msg(MediaKind::Video, 0, &[0x17, 1, 0, 0, 0]));
        for i in 0..42 {
            writer.queue(&msg(MediaKind::Video, 40 * (i + 1), frame));
        }
        let expected = writer.session.out.to_vec();
        assert!(expected.len() > 4_000_000);

        let gate = Semaphore::new(0);
        let (written, received) = {
            let gated = writer.flush_gated(&gate, Duration::from_secs(5));
            tokio::pin!(gated);
            let waited = tokio::time::timeout(Duration::from_millis(200), &mut gated).await;
            assert!(waited.is_err(), "no permit, no write");
            let mut probe = [0u8; 16];
            assert!(
                matches!(server.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock),
                "nothing reached the socket while the write waited for its permit"
            );
            gate.add_permits(1);
            let reader = async {
                let mut received = Vec::new();
                let mut buf = vec![0u8; 256 * 1024];
                while received.len() < expected.len() {
                    let n = server.read(&mut buf).await.unwrap();
                    assert!(n > 0, "closed early");
                    received.extend_from_slice(&buf[..n]);
                }
                received
            };
            tokio::join!(gated, reader)
        };
        written.unwrap();
        assert!(received == expected, "the bytes queued, in order");
        assert_eq!(gate.available_permits(), 1, "the permit came back");
        assert_eq!(writer.bytes_written(), expected.len() as u64);
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
        let early_key = msg(MediaKind::Video, 59_995, &[0x17, 1, 0, 0, 0]);
        assert_eq!(timeline.rebase(&early_key), Some(0));
        assert_eq!(timeline.rebase(&audio), Some(10));
        assert_eq!(timeline.rebase(&late_header), Some(0));
    }

    #[test]
    fn a_session_runs_past_two_to_the_31_and_32_milliseconds() {
        let mut timeline = Timeline::default();
        let start = (1u64 << 32) - 10; // the publisher's unwrapped clock
        let key = msg(MediaKind::Video, start, &[0x17, 1, 0, 0, 0]);
        assert_eq!(timeline.rebase(&key), Some(0));
        // Droppable frames keep going out after 2^31 ms of session (they
        // stopped when the elapsed time was an i32), and what goes out
        // wraps at 2^32 as RTMP's timestamps do.
        for elapsed in [
            40u64,
            (1 << 31) - 1,
            1 << 31,
            (1 << 31) + 40,
            (1 << 32) - 1,
            1 << 32,
            (1 << 32) + 40,
            60 * 86_400_000,
        ] {
            let frame = msg(MediaKind::Video, start + elapsed, &[0x27, 1, 0, 0, 0]);
            assert_eq!(timeline.rebase(&frame), Some(elapsed as u32), "{elapsed}");
        }
    }
}
