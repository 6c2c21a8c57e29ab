//! The direct path against a real socket. The server stops reading for a
//! while: the destination's socket fills, a direct write stalls part-way, the
//! destination task takes over and messages queue; then the server reads
//! again and the task drains the queue and lends its writer back. Every
//! message must arrive exactly once, in order, byte for byte, parsed by
//! Prism's own server session (so the chunking stayed valid across the
//! hand-overs).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use prism_fanout::{spawn_destination, DestinationConfig, DestinationState};
use prism_media::{IngestProtocol, MediaKind, MediaMessage, StreamHub};
use prism_rtmp::Message;
use prism_testkit::fanout_rig::local_destination;
use prism_testkit::rtmp::{serve, Next, Progress, Script};

const MESSAGES: u32 = 300;
const FRAME_BYTES: usize = 20_000;

/// A video frame carrying its sequence number, filled with bytes derived from it.
fn frame(seq: u32) -> Bytes {
    let mut body = vec![if seq == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    body.extend_from_slice(&seq.to_be_bytes());
    body.extend((0..FRAME_BYTES).map(|i| (i as u32).wrapping_mul(seq + 7) as u8));
    Bytes::from(body)
}

/// Forwards every video frame, and stops reading for `pause` once, after
/// the fifth.
struct PausesOnce {
    pause: Duration,
    paused: bool,
    frames: mpsc::UnboundedSender<Message>,
}

impl Script for PausesOnce {
    fn media(&mut self, message: Message) {
        if message.type_id == MediaKind::Video.type_id() {
            let _ = self.frames.send(message);
        }
    }

    fn next(&mut self, progress: Progress) -> Next {
        if progress.media >= 5 && !self.paused {
            self.paused = true;
            return Next::Pause(self.pause);
        }
        Next::Read
    }
}

/// An RTMP server that accepts one publish, stops reading for `pause` after
/// the fifth frame, and forwards every video frame it receives.
async fn slow_server(
    listener: TcpListener,
    pause: Duration,
    frames: mpsc::UnboundedSender<Message>,
) {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut script = PausesOnce {
        pause,
        paused: false,
        frames,
    };
    serve(&mut socket, &mut script).await.unwrap();
}

// One thread: nothing runs between a push and the check after it.
async fn next_frame(frames: &mut mpsc::UnboundedReceiver<Message>, seq: u32) -> Message {
    tokio::time::timeout(Duration::from_secs(10), frames.recv())
        .await
        .unwrap_or_else(|_| panic!("frame {seq} never arrived"))
        .expect("the server is still running")
}

#[tokio::test]
async fn a_stalled_destination_gets_every_message_in_order_after_the_hand_over() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    let server = tokio::spawn(slow_server(listener, Duration::from_millis(700), frames_tx));

    let hub = StreamHub::new("direct");
    let mut publish = hub
        .try_publish(IngestProtocol::Rtmp, "127.0.0.1:1".parse().unwrap())
        .unwrap();
    let destination = spawn_destination(
        Arc::clone(&hub),
        DestinationConfig {
            // Large enough that nothing is dropped: this test is about order.
            queue_budget_bytes: 64 << 20,
            // Small, so a server that stops reading fills it quickly.
            socket_send_buffer_bytes: 16 * 1024,
            ..local_destination("slow", port)
        },
    );
    for _ in 0..500 {
        if destination.status.state() == DestinationState::Live {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(destination.status.state(), DestinationState::Live);

    let queued_bytes = || {
        destination
            .status
            .queue_stats()
            .queued_bytes
            .load(Ordering::Relaxed)
    };
    // 300 frames of 20 KB, one every 2 ms: 6 MB while the server sleeps 0.7 s.
    let mut queued_at_most = 0;
    for seq in 0..MESSAGES {
        publish.push(MediaMessage::new(
            MediaKind::Video,
            u64::from(seq) * 2,
            frame(seq),
        ));
        queued_at_most = queued_at_most.max(queued_bytes());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        queued_at_most > 1 << 20,
        "the stall never reached the queue (at most {queued_at_most} bytes queued)"
    );

    let mut last_timestamp = 0;
    for seq in 0..MESSAGES {
        let message = next_frame(&mut frames, seq).await;
        assert_eq!(message.payload, frame(seq), "frame {seq} differs");
        assert!(
            message.timestamp >= last_timestamp,
            "timestamps went back at frame {seq}"
        );
        last_timestamp = message.timestamp;
    }
    assert_eq!(destination.status.dropped_frames(), 0);
    // Caught up, the task lent its writer again: the next push is written
    // inside the call (a queued one would show in the queue until the task ran).
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish.push(MediaMessage::new(
        MediaKind::Video,
        u64::from(MESSAGES) * 2,
        frame(MESSAGES),
    ));
    assert_eq!(queued_bytes(), 0);
    let last = next_frame(&mut frames, MESSAGES).await;
    assert_eq!(last.payload, frame(MESSAGES));
    // The session carried on: no reconnect.
    assert_eq!(destination.status.reconnects.load(Ordering::Relaxed), 0);
    assert_eq!(destination.status.state(), DestinationState::Live);

    drop(publish);
    destination.shutdown().await;
    let _ = server.await;
}
