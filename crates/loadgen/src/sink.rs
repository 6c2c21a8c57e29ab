//! The sinks: one RTMP server (Prism's own server-side session) taking every
//! destination connection, counting frames and reading each frame's sequence
//! number to measure latency on the publisher's clock. In raw mode (the tee)
//! they only count bytes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use prism_media::{MediaKind, MediaMessage};
use prism_rtmp::{ChunkWriter, Role, ServerEvent, ServerSession};

use crate::source::{decode_stamp, AUDIO_STAMP_AT, VIDEO_STAMP_AT};
use crate::Clock;

struct Connection {
    stream: usize,
    connected_at: Instant,
    first_frame_at: Option<Instant>,
    first_seq: Option<u64>,
    received: u64,
    /// When each frame arrived and its latency.
    samples: Vec<(Instant, u32)>,
}

struct Shared {
    clocks: Vec<Arc<Clock>>,
    bytes: AtomicU64,
    window_start: OnceLock<Instant>,
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
    /// Counting bytes only (the tee): no RTMP sessions to report on.
    raw: bool,
    shared: Arc<Shared>,
}

pub struct SinkReport {
    latencies_us: Vec<u32>,
    pub lost: u64,
}

impl SinkReport {
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }
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
                        count_bytes(socket, &shared).await;
                    } else {
                        let _ = serve(socket, &shared).await;
                    }
                });
            }
        });
    }
    Ok(Sinks { raw, shared })
}

impl Sinks {
    pub fn set_window_start(&self, at: Instant) {
        let _ = self.shared.window_start.set(at);
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
        let mut latencies_us = Vec::new();
        for connection in connections.iter() {
            let connection = connection.lock().unwrap();
            if !streams.contains(&connection.stream) {
                continue;
            }
            latencies_us.extend(
                connection
                    .samples
                    .iter()
                    .filter(|(at, _)| (from..to).contains(at))
                    .map(|(_, us)| *us),
            );
        }
        latencies_us.sort_unstable();
        SinkReport {
            latencies_us,
            lost: 0,
        }
    }

    /// Latencies of every frame sent after the warm-up, and frames lost:
    /// sent after a sink's first frame but never received by it.
    pub fn report(&self, expected_connections: usize) -> SinkReport {
        let connections = self.shared.connections.lock().unwrap();
        let mut latencies_us = Vec::new();
        let mut lost = 0;
        let window_start = self.shared.window_start.get().copied();
        for connection in connections.iter() {
            let connection = connection.lock().unwrap();
            latencies_us.extend(
                connection
                    .samples
                    .iter()
                    .filter(|(at, _)| window_start.is_some_and(|w| *at >= w))
                    .map(|(_, us)| *us),
            );
            let last_sent = self.shared.clocks[connection.stream].last_seq();
            if let Some(first) = connection.first_seq {
                lost += (last_sent + 1 - first).saturating_sub(connection.received);
            }
        }
        if !self.raw && connections.len() < expected_connections {
            eprintln!(
                "prism-loadgen: only {} of {expected_connections} destinations connected",
                connections.len()
            );
        }
        latencies_us.sort_unstable();
        SinkReport { latencies_us, lost }
    }
}

impl Clock {
    /// The highest sequence number sent so far.
    pub fn last_seq(&self) -> u64 {
        self.sent
            .iter()
            .rposition(|s| s.load(Ordering::Relaxed) != 0)
            .map_or(0, |i| i as u64)
    }
}

async fn count_bytes(mut socket: TcpStream, shared: &Shared) {
    let mut buf = vec![0u8; 256 * 1024];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            break;
        }
        shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
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
                    let state = Arc::new(Mutex::new(Connection {
                        stream,
                        connected_at,
                        first_frame_at: None,
                        first_seq: None,
                        received: 0,
                        samples: Vec::new(),
                    }));
                    shared.connections.lock().unwrap().push(Arc::clone(&state));
                    connection = Some(state);
                }
                ServerEvent::Media(message) => {
                    let Some(connection) = &connection else {
                        continue;
                    };
                    let Some(kind) = MediaKind::from_type_id(message.type_id) else {
                        continue;
                    };
                    let message =
                        MediaMessage::new(kind, u64::from(message.timestamp), message.payload);
                    if message.sequence_header || message.kind == MediaKind::Data {
                        continue;
                    }
                    let at = if message.kind == MediaKind::Video {
                        VIDEO_STAMP_AT
                    } else {
                        AUDIO_STAMP_AT
                    };
                    let Some(stamp) = message.payload.get(at..at + 8) else {
                        continue;
                    };
                    let Some(seq) = decode_stamp(stamp) else {
                        continue;
                    };
                    let mut state = connection.lock().unwrap();
                    let clock = &shared.clocks[state.stream];
                    let now = Instant::now();
                    state.first_seq.get_or_insert(seq);
                    state.first_frame_at.get_or_insert(now);
                    state.received += 1;
                    if let Some(age) = clock.age_ns(seq) {
                        state
                            .samples
                            .push((now, (age / 1000).min(u32::MAX as u64) as u32));
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
                read = socket.read(&mut buf) => break read.map_err(|e| e.to_string())?,
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
