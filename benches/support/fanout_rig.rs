//! One stream hub with N subscribed destinations, driven synchronously: push a
//! message, then let every destination pop it, chunk it and write it out, as
//! the destination tasks do (minus the socket, which would measure the kernel).

use std::io::{IoSlice, Write};
use std::sync::Arc;

use bytes::Bytes;
use prism_media::chunk::{ChunkWriter, Cursor};
use prism_media::{rtmp, DestinationQueue, MediaKind, MediaMessage, PublishGuard, StreamHub};

pub struct FanoutRig {
    publish: PublishGuard,
    destinations: Vec<(Arc<DestinationQueue>, ChunkWriter, Vec<MediaMessage>)>,
    runtime: tokio::runtime::Runtime,
    pub bytes_written: u64,
}

impl FanoutRig {
    pub fn new(destinations: usize) -> Self {
        let hub = StreamHub::new("bench");
        let publish = hub
            .try_publish(
                prism_media::IngestProtocol::Rtmp,
                "127.0.0.1:1".parse().unwrap(),
            )
            .expect("fresh hub");
        let destinations = (0..destinations)
            .map(|_| {
                let queue = Arc::new(DestinationQueue::new(64 * 1024 * 1024));
                hub.subscribe(&queue).expect("live");
                (
                    queue,
                    ChunkWriter::new(rtmp::OUTBOUND_CHUNK_SIZE as usize),
                    Vec::with_capacity(256),
                )
            })
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        Self {
            publish,
            destinations,
            runtime,
            bytes_written: 0,
        }
    }

    /// A video message of `len` bytes (a keyframe every `gop`th call when `key`).
    pub fn video(len: usize, timestamp: u32, key: bool) -> MediaMessage {
        let mut body = vec![0u8; len];
        body[0] = if key { 0x17 } else { 0x27 };
        body[1] = 1;
        MediaMessage::new(MediaKind::Video, timestamp, Bytes::from(body))
    }

    pub fn audio(len: usize, timestamp: u32) -> MediaMessage {
        let mut body = vec![0u8; len];
        body[0] = 0xaf;
        body[1] = 1;
        MediaMessage::new(MediaKind::Audio, timestamp, Bytes::from(body))
    }

    /// Fans one message out to every destination and writes it.
    pub fn relay(&mut self, message: MediaMessage) {
        self.publish.push(message);
        let mut sink = std::io::sink();
        for (queue, writer, batch) in &mut self.destinations {
            self.runtime.block_on(queue.next_batch(batch, 256));
            for m in batch.drain(..) {
                rtmp::queue_media(writer, m.kind, 1, m.timestamp, &m.payload);
            }
            let mut cursor = Cursor::default();
            while !writer.is_done(cursor) {
                let mut slices = [IoSlice::new(&[]); 64];
                let filled = writer.io_slices(cursor, &mut slices);
                let written: usize = slices[..filled].iter().map(|s| s.len()).sum();
                let _ = sink.write_vectored(&slices[..filled]);
                writer.advance(&mut cursor, written);
                self.bytes_written += written as u64;
            }
            writer.clear();
        }
    }
}
