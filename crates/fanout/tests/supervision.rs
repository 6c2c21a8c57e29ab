//! A destination task that panics is caught, shown as `retrying` with the
//! panic as its error, and reconnected: the server sees a second publish
//! and the frames pushed after it arrive.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use prism_fanout::{spawn_destination, DestinationState};
use prism_media::{IngestProtocol, MediaKind, MediaMessage, StreamHub};
use prism_rtmp::Message;
use prism_testkit::fanout_rig::local_destination;
use prism_testkit::rtmp::{serve, Script};

/// Keeps each video frame of one connection, numbered.
struct Frames {
    connection: u32,
    frames: mpsc::UnboundedSender<(u32, Bytes)>,
}

impl Script for Frames {
    fn media(&mut self, message: Message) {
        if message.type_id == MediaKind::Video.type_id() {
            let _ = self.frames.send((self.connection, message.payload));
        }
    }
}

/// Serves every connection it accepts with the test kit's fake destination
/// and reports `(connection number, frame payload)` for each video frame.
async fn recording_server(listener: TcpListener, frames: mpsc::UnboundedSender<(u32, Bytes)>) {
    let mut connection = 0;
    loop {
        let (mut socket, _) = listener.accept().await.unwrap();
        connection += 1;
        let mut script = Frames {
            connection,
            frames: frames.clone(),
        };
        tokio::spawn(async move {
            let _ = serve(&mut socket, &mut script).await;
        });
    }
}

fn frame(seq: u32) -> Bytes {
    let mut body = vec![0x17, 1, 0, 0, 0];
    body.extend_from_slice(&seq.to_be_bytes());
    Bytes::from(body)
}

#[tokio::test]
async fn a_panicking_destination_task_is_retried_and_goes_live_again() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    tokio::spawn(recording_server(listener, frames_tx));

    let hub = StreamHub::new("supervised");
    let mut publish = hub
        .try_publish(IngestProtocol::Rtmp, "127.0.0.1:1".parse().unwrap())
        .unwrap();
    let destination = spawn_destination(Arc::clone(&hub), local_destination("fragile", port));
    let status = Arc::clone(&destination.status);
    let wait_for = |state: DestinationState| {
        let status = Arc::clone(&status);
        async move {
            for _ in 0..1000 {
                if status.state() == state {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!(
                "destination never reached {state:?} (is {:?})",
                status.state()
            );
        }
    };
    wait_for(DestinationState::Live).await;
    publish.push(MediaMessage::new(MediaKind::Video, 0, frame(0)));
    let (first_connection, payload) = frames.recv().await.unwrap();
    assert_eq!(payload, frame(0));

    destination.inject_panic();
    wait_for(DestinationState::Retrying).await;
    let error = destination.status.last_error().unwrap();
    assert!(error.message().contains("panicked"), "{error}");
    assert_eq!(error.kind(), prism_fanout::ErrorKind::Internal);
    assert_eq!(
        destination
            .status
            .failures(prism_fanout::ErrorKind::Internal),
        1
    );
    assert_eq!(destination.status.reconnects.load(Ordering::Relaxed), 1);

    wait_for(DestinationState::Live).await;
    publish.push(MediaMessage::new(MediaKind::Video, 40, frame(1)));
    // The replayed GOP (frame 0) and then frame 1, on a new connection.
    let mut seen = Vec::new();
    while !seen.contains(&frame(1)) {
        let (connection, payload) = tokio::time::timeout(Duration::from_secs(5), frames.recv())
            .await
            .expect("no frame after the restart")
            .unwrap();
        assert!(connection > first_connection, "frame on the old connection");
        seen.push(payload);
    }
    drop(publish);
    destination.shutdown().await;
}
