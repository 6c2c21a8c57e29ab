//! One stream hub with N subscribed destinations, each with the writer the
//! destination tasks use (`MediaWriter`), writing to a sink that keeps
//! nothing (a socket would measure the kernel). Two paths:
//! - `Path::Direct`: the writers are lent to their queues, so a push chunks
//!   and writes at once: the steady state of a destination that keeps up.
//! - `Path::Queued`: pushes queue, then each destination pops its batch and
//!   writes it: what a destination that fell behind does.
//! - `Path::Held(n)`: the writers are lent to queues with a latency budget
//!   (`max_delay_ms`) that covers n messages 40 ms apart (each message is
//!   stamped as received at its timestamp): a push holds the message in the
//!   writer, and the n-th writes the batch in one vectored write.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use prism_fanout::writer::{MediaWriter, NullSink, SessionQueue};
use prism_fanout::DestinationStatus;
use prism_media::{MediaKind, MediaMessage, PublishGuard, StreamHub};
use prism_rtmp::ChunkWriter;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Direct,
    Queued,
    Held(usize),
}

struct Destination {
    queue: Arc<SessionQueue>,
    /// Held here on the queued path; lent to the queue on the others.
    writer: Option<MediaWriter<NullSink>>,
    batch: Vec<MediaMessage>,
}

pub struct FanoutRig {
    publish: PublishGuard,
    path: Path,
    destinations: Vec<Destination>,
    runtime: tokio::runtime::Runtime,
    /// When the message stamped 0 was received (`Path::Held`).
    clock_start: Instant,
}

/// The spacing of the messages the held path's budget is set for.
const HELD_SPACING: Duration = Duration::from_millis(40);

impl FanoutRig {
    pub fn new(destinations: usize, path: Path) -> Self {
        let hub = StreamHub::new("bench");
        let publish = hub
            .try_publish(
                prism_media::IngestProtocol::Rtmp,
                "127.0.0.1:1".parse().unwrap(),
            )
            .expect("fresh hub");
        let destinations = (0..destinations)
            .map(|i| {
                let queue = Arc::new(SessionQueue::new(64 * 1024 * 1024));
                let status = Arc::new(DestinationStatus::new(Arc::clone(queue.stats())));
                hub.subscribe(&queue, prism_media::single_track::Tracks::Default)
                    .expect("live");
                let writer = MediaWriter::new(
                    NullSink,
                    ChunkWriter::new(prism_rtmp::DEFAULT_PUBLISH_CHUNK_SIZE as usize),
                    1,
                    Arc::clone(&status),
                    "bench",
                    &format!("d{i}"),
                );
                if let Path::Held(n) = path {
                    queue.set_max_delay(HELD_SPACING * (n as u32 - 1));
                }
                let writer = match path {
                    Path::Direct | Path::Held(_) => {
                        let (_, session) = writer.into_parts();
                        assert!(queue.lend(session).is_ok(), "nothing queued yet");
                        None
                    }
                    Path::Queued => Some(writer),
                };
                Destination {
                    queue,
                    writer,
                    batch: Vec::with_capacity(256),
                }
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        Self {
            publish,
            path,
            destinations,
            runtime,
            clock_start: Instant::now(),
        }
    }

    /// A video message of `len` bytes.
    pub fn video(len: usize, timestamp: u64, key: bool) -> MediaMessage {
        let mut body = vec![0u8; len];
        body[0] = if key { 0x17 } else { 0x27 };
        body[1] = 1;
        MediaMessage::new(MediaKind::Video, timestamp, Bytes::from(body))
    }

    pub fn audio(len: usize, timestamp: u64) -> MediaMessage {
        let mut body = vec![0u8; len];
        body[0] = 0xaf;
        body[1] = 1;
        MediaMessage::new(MediaKind::Audio, timestamp, Bytes::from(body))
    }

    /// Fans one message out to every destination and writes it (on the
    /// held path, holds it and writes every n-th message's batch).
    ///
    /// The held path's messages are stamped received at their timestamp,
    /// from when the rig was made: ahead of the clock, so the batch timer
    /// never sends a batch (each batch still gives it a deadline to discard
    /// once it passes).
    pub fn relay(&mut self, mut message: MediaMessage) {
        if let Path::Held(_) = self.path {
            message.received_at = self.clock_start + Duration::from_millis(message.timestamp);
        }
        self.publish.push(message);
        if self.path != Path::Queued {
            return;
        }
        for destination in &mut self.destinations {
            let writer = destination.writer.as_mut().expect("held on this path");
            destination.queue.try_batch(&mut destination.batch, 256);
            for message in destination.batch.drain(..) {
                writer.queue(&message);
            }
            // Polled in place: `block_on` would box a future this large
            // (in debug builds), which the destination task never does.
            let _runtime = self.runtime.enter();
            let flush = std::pin::pin!(writer.flush(Duration::from_secs(1)));
            match flush.poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(result) => result.expect("a null sink takes everything"),
                Poll::Pending => panic!("a null sink never waits"),
            }
        }
    }

    /// Bytes the destinations wrote, headers included.
    pub fn bytes_written(&mut self) -> u64 {
        let mut total = 0;
        for destination in &mut self.destinations {
            let queue = &destination.queue;
            match destination.writer.as_ref() {
                Some(writer) => total += writer.bytes_written(),
                None => {
                    let (session, due) = queue.reclaim_with_batch().expect("lent on this path");
                    total += session.bytes_written();
                    let lent = queue.lend_with_batch(session, due);
                    assert!(lent.is_ok(), "nothing queued, the batch not due");
                }
            }
        }
        total
    }
}

/// A destination on loopback `port` (`rtmp://127.0.0.1:PORT/app/key`) with
/// short timeouts and no latency budget: what the fan-out tests start
/// from, changing the field they are about.
pub fn local_destination(id: &str, port: u16) -> prism_fanout::DestinationConfig {
    prism_fanout::DestinationConfig {
        id: id.to_string(),
        url: prism_fanout::DestinationUrl::parse(&format!("rtmp://127.0.0.1:{port}/app/key"), None)
            .expect("a valid URL"),
        enabled: true,
        queue_budget_bytes: 8 << 20,
        connect_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        socket_send_buffer_bytes: 64 * 1024,
        chunk_size: prism_rtmp::DEFAULT_PUBLISH_CHUNK_SIZE,
        ca_file: None,
        ack_timeout: Duration::from_secs(10),
        max_delay: Duration::ZERO,
        tracks: prism_media::single_track::Tracks::Default,
        rules: None,
    }
}
