//! The sinks: one RTMP server (Prism's own server-side session) taking every
//! destination connection, counting frames and reading each frame's sequence
//! number to measure latency on the publisher's clock. In raw mode (the tee)
//! they read FLV tags behind the stream's index, and measure them the same way.
//!
//! A frame's latency is measured to when the kernel received it (the
//! socket's receive timestamp, `SO_TIMESTAMPNS`), not to when a sink task
//! got round to reading it: the sinks share the relay's cores, and at
//! hundreds of destinations their own scheduling would otherwise count as
//! the relay's. A read's timestamp is that of the last segment it took, so
//! a frame is never stamped earlier than its last byte arrived. The latency
//! to the read is kept too (`read` percentiles), for comparison.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use prism_media::{flv, MediaKind};
use prism_rtmp::{ChunkWriter, Role, ServerEvent, ServerSession};

use crate::source::find_stamp;
use crate::{wall_clock_ns, Clock};

struct Connection {
    stream: usize,
    connected_at: Instant,
    first_frame_at: Option<Instant>,
    first_seq: Option<u64>,
    received: u64,
    samples: Vec<Sample>,
    /// When each video frame was read, in order.
    video_reads: Vec<Instant>,
}

/// One frame received: when the sink read it, and its latency (µs) to the
/// kernel's receipt and to the read.
#[derive(Clone, Copy)]
struct Sample {
    seq: u64,
    read_at: Instant,
    arrival_us: u32,
    read_us: u32,
}

struct Shared {
    clocks: Vec<Arc<Clock>>,
    bytes: AtomicU64,
    window_start: OnceLock<Instant>,
    /// The frames counted for loss: those sent within these times on the
    /// publisher's clock (wall clock, ns).
    window_start_wall_ns: OnceLock<u64>,
    window_end_wall_ns: OnceLock<u64>,
    connections: Mutex<Vec<Arc<Mutex<Connection>>>>,
    /// (stream, at): every connection of that stream made before `at`
    /// hangs up.
    hang_up: watch::Sender<Option<(usize, Instant)>>,
}

/// When one connection was made and received its first frame.
pub struct ConnectionTimes {
    pub connected_at: Instant,
    pub first_frame_at: Option<Instant>,
}

pub struct Sinks {
    shared: Arc<Shared>,
}

pub struct SinkReport {
    /// To the kernel's receipt, sorted.
    latencies_us: Vec<u32>,
    /// To the sink's read, sorted.
    read_latencies_us: Vec<u32>,
    pub lost: u64,
    /// Frames sent in the measured window (`set_window_end`) that a
    /// connection live in it never received: what a relay lost once
    /// settled, whatever it skipped while a destination started.
    pub lost_in_window: u64,
    /// Connections that received a frame sent in the measured window.
    pub live: usize,
}

impl SinkReport {
    fn new(samples: impl Iterator<Item = Sample>, lost: u64, window: WindowCount) -> Self {
        let (mut latencies_us, mut read_latencies_us): (Vec<u32>, Vec<u32>) =
            samples.map(|s| (s.arrival_us, s.read_us)).unzip();
        latencies_us.sort_unstable();
        read_latencies_us.sort_unstable();
        Self {
            latencies_us,
            read_latencies_us,
            lost,
            lost_in_window: window.lost,
            live: window.live,
        }
    }

    /// Latency to the kernel's receipt: what the relay added.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies_us, p)
    }

    /// Latency to the sink's read, the sink's own scheduling included.
    pub fn read_percentile_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.read_latencies_us, p)
    }
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted_us.len() - 1) as f64 * p).round() as usize;
    sorted_us[index] as f64 / 1000.0
}

/// Serves every destination connection on `listeners` (one per
/// destination index; any name on any of them).
pub fn start(
    clocks: Vec<Arc<Clock>>,
    raw: bool,
    listeners: Vec<std::net::TcpListener>,
) -> Result<Sinks, String> {
    let shared = Arc::new(Shared {
        clocks,
        bytes: AtomicU64::new(0),
        window_start: OnceLock::new(),
        window_start_wall_ns: OnceLock::new(),
        window_end_wall_ns: OnceLock::new(),
        connections: Mutex::new(Vec::new()),
        hang_up: watch::channel(None).0,
    });
    for listener in listeners {
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = TcpListener::from_std(listener).map_err(|e| e.to_string())?;
        let accepting = Arc::clone(&shared);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move {
                    let _ = socket.set_nodelay(true);
                    if raw {
                        let _ = serve_raw(socket, &shared).await;
                    } else {
                        let _ = serve(socket, &shared).await;
                    }
                });
            }
        });
    }
    Ok(Sinks { shared })
}

impl Sinks {
    pub fn set_window_start(&self, at: Instant) {
        let _ = self.shared.window_start.set(at);
        let ahead = at.saturating_duration_since(Instant::now()).as_nanos() as u64;
        let _ = self
            .shared
            .window_start_wall_ns
            .set(wall_clock_ns() + ahead);
    }

    /// Frames sent after `at` (in the past) are not counted for loss: the
    /// last ones of a publish may be held by design (a TS demuxer ends a
    /// video frame only when the next one starts).
    pub fn set_window_end(&self, at: Instant) {
        let behind = Instant::now().saturating_duration_since(at).as_nanos() as u64;
        let _ = self
            .shared
            .window_end_wall_ns
            .set(wall_clock_ns().saturating_sub(behind));
    }

    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::Relaxed)
    }

    /// Every connection of `stream` so far, in the order they were made.
    pub fn connections_of(&self, stream: usize) -> Vec<ConnectionTimes> {
        let connections = self.shared.connections.lock().unwrap();
        connections
            .iter()
            .map(|c| c.lock().unwrap())
            .filter(|c| c.stream == stream)
            .map(|c| ConnectionTimes {
                connected_at: c.connected_at,
                first_frame_at: c.first_frame_at,
            })
            .collect()
    }

    /// When each connection of `stream` read each video frame.
    pub fn video_reads(&self, stream: usize) -> Vec<Vec<Instant>> {
        let connections = self.shared.connections.lock().unwrap();
        connections
            .iter()
            .map(|c| c.lock().unwrap())
            .filter(|c| c.stream == stream)
            .map(|c| c.video_reads.clone())
            .collect()
    }

    /// Hangs up every connection of `stream` made so far, at once.
    pub fn hang_up(&self, stream: usize) {
        self.shared
            .hang_up
            .send_replace(Some((stream, Instant::now())));
    }

    /// Latencies of the frames of streams `streams` that arrived within
    /// `from..to`.
    pub fn latencies_between(
        &self,
        streams: std::ops::Range<usize>,
        from: Instant,
        to: Instant,
    ) -> SinkReport {
        let connections = self.shared.connections.lock().unwrap();
        let mut samples = Vec::new();
        for connection in connections.iter() {
            let connection = connection.lock().unwrap();
            if !streams.contains(&connection.stream) {
                continue;
            }
            samples.extend(
                connection
                    .samples
                    .iter()
                    .filter(|s| (from..to).contains(&s.read_at)),
            );
        }
        SinkReport::new(samples.into_iter(), 0, WindowCount::default())
    }

    /// Latencies of every frame sent after the warm-up, and frames lost:
    /// sent after a sink's first frame but never received by it.
    pub fn report(&self, expected_connections: usize) -> SinkReport {
        let connections = self.shared.connections.lock().unwrap();
        let mut samples = Vec::new();
        let mut lost = 0;
        let window_start = self.shared.window_start.get().copied();
        // No start set counts nothing; no end set counts to the last sent.
        let wall_ns = |set: &OnceLock<u64>| set.get().copied().unwrap_or(u64::MAX);
        let (from, to) = (
            wall_ns(&self.shared.window_start_wall_ns),
            wall_ns(&self.shared.window_end_wall_ns),
        );
        let window_seqs: Vec<_> = self
            .shared
            .clocks
            .iter()
            .map(|c| c.seqs_sent_between(from, to))
            .collect();
        let mut window = WindowCount::default();
        for connection in connections.iter() {
            let connection = connection.lock().unwrap();
            let seqs = &window_seqs[connection.stream];
            let received = connection
                .samples
                .iter()
                .filter(|s| seqs.contains(&s.seq))
                .count() as u64;
            if received > 0 {
                window.live += 1;
                window.lost += (seqs.end - seqs.start).saturating_sub(received);
            }
            samples.extend(
                connection
                    .samples
                    .iter()
                    .filter(|s| window_start.is_some_and(|w| s.read_at >= w)),
            );
            let last_sent = self.shared.clocks[connection.stream].last_seq();
            if let Some(first) = connection.first_seq {
                lost += (last_sent + 1)
                    .saturating_sub(first)
                    .saturating_sub(connection.received);
            }
        }
        if connections.len() < expected_connections {
            eprintln!(
                "prism-loadgen: only {} of {expected_connections} destinations connected",
                connections.len()
            );
        }
        SinkReport::new(samples.into_iter(), lost, window)
    }
}

/// The measured window's count over connections (`SinkReport`).
#[derive(Default)]
struct WindowCount {
    lost: u64,
    live: usize,
}

impl Clock {
    /// The highest sequence number sent so far.
    pub fn last_seq(&self) -> u64 {
        self.sent
            .iter()
            .rposition(|s| s.load(Ordering::Relaxed) != 0)
            .map_or(0, |i| i as u64)
    }

    /// The sequence numbers of the messages sent within `from..to` (wall
    /// clock, ns); sequence numbers follow the order of sending.
    fn seqs_sent_between(&self, from: u64, to: u64) -> std::ops::Range<u64> {
        let sent_within = |s: &AtomicU64| (from..to).contains(&s.load(Ordering::Relaxed));
        match self.sent.iter().position(sent_within) {
            Some(first) => {
                let last = self.sent.iter().rposition(sent_within).unwrap_or(first);
                first as u64..last as u64 + 1
            }
            None => 0..0,
        }
    }
}

async fn serve(mut socket: TcpStream, shared: &Shared) -> Result<(), String> {
    let leftover = prism_rtmp::handshake(&mut socket, Role::Server)
        .await
        .map_err(|e| e.to_string())?;
    let connected_at = Instant::now();
    let mut hang_up = shared.hang_up.subscribe();
    let mut session = ServerSession::new(Default::default());
    let mut out = ChunkWriter::new(128);
    let mut events = Vec::new();
    let mut connection: Option<Arc<Mutex<Connection>>> = None;
    let mut buf = vec![0u8; 256 * 1024];
    let mut input_len = leftover.len().min(buf.len());
    buf[..input_len].copy_from_slice(&leftover[..input_len]);
    enable_receive_timestamps(&socket);
    // When the kernel received the input being parsed (wall clock, ns):
    // none for the handshake's leftover, or if the kernel gives none.
    let mut arrived_wall_ns: Option<u64> = None;
    loop {
        shared.bytes.fetch_add(input_len as u64, Ordering::Relaxed);
        session
            .handle_input(&buf[..input_len], &mut out, &mut events)
            .map_err(|e| e.to_string())?;
        for event in events.drain(..) {
            match event {
                ServerEvent::PublishRequested { stream_key, .. } => {
                    session.accept_publish(&mut out);
                    // Names are s{stream} or s{stream}-d{n}.
                    let stream = stream_key
                        .trim_start_matches('s')
                        .split('-')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    connection = Some(shared.register(stream, connected_at));
                }
                ServerEvent::Media(message) => {
                    let Some(connection) = &connection else {
                        continue;
                    };
                    if let Some(kind) = MediaKind::from_type_id(message.type_id) {
                        record_frame(connection, shared, kind, &message.payload, arrived_wall_ns);
                    }
                }
                ServerEvent::PublishEnded => {}
            }
        }
        if !out.is_empty() {
            out.write_to(&mut socket, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        input_len = loop {
            tokio::select! {
                read = read_stamped(&socket, &mut buf) => {
                    let (n, arrived) = read.map_err(|e| e.to_string())?;
                    arrived_wall_ns = arrived;
                    break n;
                }
                Ok(()) = hang_up.changed() => {
                    let order = *hang_up.borrow();
                    let stream = connection.as_ref().map(|c| c.lock().unwrap().stream);
                    if let Some((to_drop, before)) = order {
                        if stream == Some(to_drop) && connected_at < before {
                            return Ok(());
                        }
                    }
                }
            }
        };
        if input_len == 0 {
            return Ok(());
        }
    }
}

impl Shared {
    /// A new connection of `stream`, counted from here on.
    fn register(&self, stream: usize, connected_at: Instant) -> Arc<Mutex<Connection>> {
        let state = Arc::new(Mutex::new(Connection {
            stream,
            connected_at,
            first_frame_at: None,
            first_seq: None,
            received: 0,
            samples: Vec::new(),
            video_reads: Vec::new(),
        }));
        self.connections.lock().unwrap().push(Arc::clone(&state));
        state
    }
}

/// Counts one audio or video frame (sequence headers and data are not
/// frames) and records its latency from the stamp the publisher put in it:
/// to `arrived_wall_ns`, when the kernel received it, if known, and to now.
fn record_frame(
    connection: &Mutex<Connection>,
    shared: &Shared,
    kind: MediaKind,
    payload: &[u8],
    arrived_wall_ns: Option<u64>,
) {
    let frame = match kind {
        MediaKind::Video => !flv::inspect_video(payload).sequence_header,
        MediaKind::Audio => !flv::is_audio_sequence_header(payload),
        MediaKind::Data => false,
    };
    let Some(seq) = frame.then(|| find_stamp(kind, payload)).flatten() else {
        return;
    };
    let mut state = connection.lock().unwrap();
    let clock = &shared.clocks[state.stream];
    let now = Instant::now();
    state.first_seq.get_or_insert(seq);
    state.first_frame_at.get_or_insert(now);
    state.received += 1;
    if kind == MediaKind::Video {
        state.video_reads.push(now);
    }
    if let Some(read_age) = clock.age_ns(seq, wall_clock_ns()) {
        let arrival_age = arrived_wall_ns
            .and_then(|at| clock.age_ns(seq, at))
            .unwrap_or(read_age);
        let us = |ns: u64| (ns / 1000).min(u32::MAX as u64) as u32;
        state.samples.push(Sample {
            seq,
            read_at: now,
            arrival_us: us(arrival_age),
            read_us: us(read_age),
        });
    }
}

/// Serves one of the tee's connections: the stream's index (4 bytes), then
/// FLV tags, each frame measured as `serve` measures RTMP ones.
async fn serve_raw(socket: TcpStream, shared: &Shared) -> Result<(), String> {
    let connected_at = Instant::now();
    enable_receive_timestamps(&socket);
    let mut buf = vec![0u8; 256 * 1024];
    // Bytes of a tag not yet complete (and, at first, the stream index).
    let mut pending: Vec<u8> = Vec::new();
    let mut connection: Option<Arc<Mutex<Connection>>> = None;
    loop {
        let (n, arrived_wall_ns) = read_stamped(&socket, &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
        pending.extend_from_slice(&buf[..n]);
        let mut at = 0;
        let connection = match &connection {
            Some(connection) => connection,
            None => {
                let Some(index) = pending.get(..4) else {
                    continue;
                };
                let stream = u32::from_be_bytes(index.try_into().expect("4 bytes")) as usize;
                at = 4;
                connection.insert(shared.register(stream, connected_at))
            }
        };
        // A tag is taken once its PreviousTagSize is there too.
        while let Some(tag) =
            flv::tag_at(&pending[at..]).filter(|tag| at + tag.next() <= pending.len())
        {
            if let Some(kind) = MediaKind::from_type_id(tag.type_id) {
                let body = &pending[at + tag.body.start..at + tag.body.end];
                record_frame(connection, shared, kind, body, arrived_wall_ns);
            }
            at += tag.next();
        }
        pending.drain(..at);
    }
}

/// Asks the kernel to timestamp what `socket` receives. If it refuses,
/// reads carry no timestamp and the sink measures to its reads.
fn enable_receive_timestamps(socket: &TcpStream) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option of the stated size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Reads into `buf`; also returns when the kernel received the last
/// segment the read took (wall clock, ns), if it timestamps this socket.
async fn read_stamped(socket: &TcpStream, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            recv_with_timestamp(socket.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

fn recv_with_timestamp(fd: RawFd, buf: &mut [u8]) -> std::io::Result<(usize, Option<u64>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for one timespec control message, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `buf` and `control`, both alive and writable
    // for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the kernel filled `msg_controllen` bytes of `control` with
    // well-formed control messages; CMSG_* walk only within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(at.tv_sec as u64 * 1_000_000_000 + at.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, stamp))
}
