//! RTMP chunk writer: turns messages into chunk headers plus slices of the
//! payloads, for one vectored write. Written by hand because rml_rtmp's
//! `ChunkSerializer` copies every payload into a fresh `Vec` per call, which
//! would cost one payload copy per message per destination; here only the
//! few header bytes are written, into a buffer reused across batches, and the
//! payload `Bytes` are referenced, never copied.
//!
//! Every message starts with a type-0 (full) header, so no header-compression
//! state is shared with anything else writing on the connection.

use std::io::IoSlice;

use bytes::Bytes;

/// The largest timestamp a chunk header carries inline; beyond it the header
/// holds 0xFFFFFF and a 4-byte extended timestamp follows.
const MAX_INLINE_TIMESTAMP: u32 = 0x00FF_FFFF;
/// iovecs per write call of `write_to`: below IOV_MAX (1024), and enough
/// for a batch a destination held for its latency budget (half a second of
/// 60 fps video with its audio is about 120 segments at 60000-byte chunks).
const IOVECS_PER_WRITE: usize = 256;
/// iovecs per call of `try_write`, the direct path's: a message or two. The
/// array is filled on every call, and 256 of them cost a direct write of a
/// two-chunk frame to 100 destinations 60 % more (the fan-out bench).
const IOVECS_PER_TRY: usize = 64;
/// A type-0 chunk header: basic header (1), timestamp (3), length (3), type
/// (1), message stream id (4), extended timestamp (4).
const MAX_TYPE0_HEADER: usize = 16;
use crate::MAX_MESSAGE_LEN;

#[derive(Clone, Copy, Debug)]
enum Segment {
    Header { start: u32, end: u32 },
    Payload { index: u32, start: u32, end: u32 },
}

/// One message to chunk.
#[derive(Clone, Copy, Debug)]
pub struct MessageHeader {
    pub chunk_stream_id: u8,
    pub type_id: u8,
    pub message_stream_id: u32,
    pub timestamp: u32,
}

/// Accumulates messages as header bytes and payload references until the
/// caller writes them out; `clear` keeps the buffers' capacity, so a writer
/// in steady state allocates nothing.
#[derive(Debug)]
pub struct ChunkWriter {
    chunk_size: usize,
    headers: Vec<u8>,
    payloads: Vec<Bytes>,
    segments: Vec<Segment>,
    /// Bytes queued and not yet written.
    pending: usize,
    /// Every byte written since the writer was made, for counters.
    written_total: u64,
    /// How far writing has got, so a write the socket took only part of
    /// resumes there, whichever of `try_write` and `write_to` goes on.
    written: Cursor,
}

impl ChunkWriter {
    /// `chunk_size` must match what the connection announced with SetChunkSize.
    pub fn new(chunk_size: usize) -> Self {
        assert!(chunk_size >= 1, "chunk size must be positive");
        Self {
            chunk_size,
            headers: Vec::with_capacity(1024),
            payloads: Vec::with_capacity(64),
            segments: Vec::with_capacity(256),
            pending: 0,
            written_total: 0,
            written: Cursor::default(),
        }
    }

    /// Applies a new outbound chunk size: the SetChunkSize message announcing
    /// it must already be queued, since the peer reads it before what follows.
    pub fn set_chunk_size(&mut self, chunk_size: usize) {
        assert!(chunk_size >= 1, "chunk size must be positive");
        self.chunk_size = chunk_size;
    }

    /// Queues one message. Payloads longer than 24 bits cannot be sent over
    /// RTMP; the caller checks `MAX_MESSAGE_LEN` (ingest cannot produce them).
    pub fn push(&mut self, header: MessageHeader, payload: &Bytes) {
        debug_assert!(payload.len() <= MAX_MESSAGE_LEN);
        debug_assert!((2..64).contains(&header.chunk_stream_id));
        let extended = header.timestamp >= MAX_INLINE_TIMESTAMP;
        let index = self.payloads.len() as u32;
        self.payloads.push(payload.clone());

        let start = self.headers.len() as u32;
        let mut first = [0u8; MAX_TYPE0_HEADER];
        let first_len = encode_type0(header, payload.len(), &mut first);
        self.headers.extend_from_slice(&first[..first_len]);
        self.push_header_segment(start);

        let len = payload.len();
        let mut offset = 0;
        loop {
            let end = (offset + self.chunk_size).min(len);
            if end > offset {
                self.segments.push(Segment::Payload {
                    index,
                    start: offset as u32,
                    end: end as u32,
                });
                self.pending += end - offset;
            }
            offset = end;
            if offset >= len {
                break;
            }
            // Continuation chunk: fmt 3, repeating the extended timestamp.
            let start = self.headers.len() as u32;
            self.headers.push(0xC0 | header.chunk_stream_id);
            if extended {
                self.headers
                    .extend_from_slice(&header.timestamp.to_be_bytes());
            }
            self.push_header_segment(start);
        }
    }

    /// Writes one message at once, straight from `payload`, when nothing is
    /// pending and it fits one chunk: the header is built on the stack and
    /// nothing is queued, so a socket that keeps up costs no bookkeeping.
    /// Otherwise, or for what the socket does not take, it queues the message
    /// as `push` does (the rest goes out with `try_write` or `write_to`).
    /// Returns `Ok(true)` when all of it went out.
    pub fn write_now(
        &mut self,
        header: MessageHeader,
        payload: &Bytes,
        mut write: impl FnMut(&[IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> std::io::Result<bool> {
        use std::io::ErrorKind;
        if !self.is_empty() || payload.len() > self.chunk_size {
            self.push(header, payload);
            return self.try_write(write);
        }
        let mut first = [0u8; MAX_TYPE0_HEADER];
        let first_len = encode_type0(header, payload.len(), &mut first);
        let slices = [IoSlice::new(&first[..first_len]), IoSlice::new(payload)];
        let written = loop {
            match write(&slices) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break 0,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if written == first_len + payload.len() {
            self.written_total += written as u64;
            return Ok(true);
        }
        self.push(header, payload);
        self.consume(written);
        Ok(false)
    }

    fn push_header_segment(&mut self, start: u32) {
        let end = self.headers.len() as u32;
        self.pending += (end - start) as usize;
        // Adjacent header bytes (a short message followed by the next one's
        // header) merge into one segment, saving an iovec.
        if let Some(Segment::Header { end: prev_end, .. }) = self.segments.last_mut() {
            if *prev_end == start {
                *prev_end = end;
                return;
            }
        }
        self.segments.push(Segment::Header { start, end });
    }

    /// Bytes queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.pending
    }

    pub fn is_empty(&self) -> bool {
        self.pending == 0
    }

    pub fn clear(&mut self) {
        self.headers.clear();
        self.payloads.clear();
        self.segments.clear();
        self.pending = 0;
        self.written = Cursor::default();
    }

    fn segment_bytes(&self, segment: Segment) -> &[u8] {
        match segment {
            Segment::Header { start, end } => &self.headers[start as usize..end as usize],
            Segment::Payload { index, start, end } => {
                &self.payloads[index as usize][start as usize..end as usize]
            }
        }
    }

    /// Fills `slices` with the bytes not yet written, at most `slices.len()`
    /// of them; returns how many were filled.
    fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut skip = self.written.offset;
        for &segment in self.segments.iter().skip(self.written.segment) {
            if filled == slices.len() {
                break;
            }
            let bytes = &self.segment_bytes(segment)[skip..];
            skip = 0;
            slices[filled] = IoSlice::new(bytes);
            filled += 1;
        }
        filled
    }

    /// Every byte written since the writer was made.
    pub fn written_total(&self) -> u64 {
        self.written_total
    }

    /// Records that the next `written` bytes went out.
    fn consume(&mut self, mut written: usize) {
        self.pending -= written;
        self.written_total += written as u64;
        while written > 0 {
            let segment = self.segments[self.written.segment];
            let remaining = self.segment_bytes(segment).len() - self.written.offset;
            if written < remaining {
                self.written.offset += written;
                return;
            }
            written -= remaining;
            self.written.segment += 1;
            self.written.offset = 0;
        }
    }

    /// Whether every queued byte has been written.
    fn is_done(&self) -> bool {
        self.written.segment >= self.segments.len()
    }

    /// Writes what the socket takes now, without waiting: `write` is a
    /// non-blocking vectored write. Returns `Ok(true)` once everything is out
    /// (the writer is then cleared), `Ok(false)` when the socket would block
    /// (the rest stays queued; the next `try_write` or `write_to` resumes it).
    pub fn try_write(
        &mut self,
        mut write: impl FnMut(&[IoSlice<'_>]) -> std::io::Result<usize>,
    ) -> std::io::Result<bool> {
        use std::io::ErrorKind;
        while !self.is_done() {
            let mut slices = [IoSlice::new(&[]); IOVECS_PER_TRY];
            let filled = self.io_slices(&mut slices);
            let written = match write(&slices[..filled]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.consume(written);
        }
        self.clear();
        Ok(true)
    }

    /// Every queued byte in order; for tests and for transports that cannot
    /// write vectored.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.pending);
        for &segment in &self.segments {
            out.extend_from_slice(self.segment_bytes(segment));
        }
        out
    }
}

/// Writes the type-0 (full) header of a message into `out`; returns its length.
fn encode_type0(
    header: MessageHeader,
    payload_len: usize,
    out: &mut [u8; MAX_TYPE0_HEADER],
) -> usize {
    let extended = header.timestamp >= MAX_INLINE_TIMESTAMP;
    let inline_ts = header.timestamp.min(MAX_INLINE_TIMESTAMP);
    out[0] = header.chunk_stream_id; // fmt 0
    out[1..4].copy_from_slice(&inline_ts.to_be_bytes()[1..]);
    out[4..7].copy_from_slice(&(payload_len as u32).to_be_bytes()[1..]);
    out[7] = header.type_id;
    out[8..12].copy_from_slice(&header.message_stream_id.to_le_bytes());
    if extended {
        out[12..16].copy_from_slice(&header.timestamp.to_be_bytes());
        16
    } else {
        12
    }
}

/// A position in a `ChunkWriter`'s queued bytes, for resuming after a
/// partial write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    segment: usize,
    offset: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_rtmp::chunk_io::ChunkDeserializer;

    fn header(csid: u8, ts: u32) -> MessageHeader {
        MessageHeader {
            chunk_stream_id: csid,
            type_id: 9,
            message_stream_id: 1,
            timestamp: ts,
        }
    }

    /// What the writer produces must parse with an independent RTMP chunk
    /// parser (rml_rtmp's, correct for a writer that never interleaves)
    /// back into the same messages.
    fn round_trip(chunk_size: usize, messages: &[(u8, u32, Bytes)]) {
        let mut writer = ChunkWriter::new(chunk_size);
        for (csid, ts, payload) in messages {
            writer.push(header(*csid, *ts), payload);
        }
        let bytes = writer.to_vec();
        assert_eq!(bytes.len(), writer.pending_bytes());
        let mut parser = ChunkDeserializer::new();
        parser.set_max_chunk_size(chunk_size).unwrap();
        let mut parsed = Vec::new();
        let mut input: &[u8] = &bytes;
        while let Some(message) = parser.get_next_message(input).unwrap() {
            parsed.push(message);
            input = &[];
        }
        assert_eq!(parsed.len(), messages.len());
        for (got, (_, ts, payload)) in parsed.iter().zip(messages) {
            assert_eq!(got.timestamp.value, *ts);
            assert_eq!(got.type_id, 9);
            assert_eq!(got.message_stream_id, 1);
            assert_eq!(&got.data, payload);
        }
    }

    #[test]
    fn round_trips_through_an_independent_parser() {
        let big = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<u8>>());
        let exact = Bytes::from(vec![7u8; 4096]);
        round_trip(
            4096,
            &[
                (6, 0, big.clone()),
                (4, 20, Bytes::from_static(b"abc")),
                (6, 40, exact),
                (4, 60, Bytes::new()),
            ],
        );
        round_trip(128, &[(6, 1, big)]);
    }

    #[test]
    fn extended_timestamps_repeat_on_continuation_chunks() {
        let payload = Bytes::from(vec![1u8; 300]);
        round_trip(
            128,
            &[(6, 0x0100_0000, payload.clone()), (6, 0x0100_0021, payload)],
        );
        let mut writer = ChunkWriter::new(128);
        writer.push(header(6, 0x0100_0000), &Bytes::from(vec![1u8; 130]));
        let bytes = writer.to_vec();
        // 12-byte header + 4 extended, 128 bytes, 1-byte fmt-3 header + 4 extended, 2 bytes.
        assert_eq!(bytes.len(), 16 + 128 + 5 + 2);
        assert_eq!(&bytes[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(bytes[144], 0xC6);
        assert_eq!(&bytes[145..149], &[1, 0, 0, 0]);
    }

    /// A socket that takes at most 7 bytes per call through at most 2
    /// slices, and would block on every third call.
    fn trickle(
        out: &mut Vec<u8>,
        calls: &mut u32,
        slices: &[IoSlice<'_>],
    ) -> std::io::Result<usize> {
        *calls += 1;
        if calls.is_multiple_of(3) {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let mut budget = 7;
        for slice in slices.iter().take(2) {
            let take = slice.len().min(budget);
            out.extend_from_slice(&slice[..take]);
            budget -= take;
        }
        Ok(7 - budget)
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut writer = ChunkWriter::new(100);
        let payload = Bytes::from((0..250u32).map(|i| i as u8).collect::<Vec<u8>>());
        writer.push(header(6, 5), &payload);
        writer.push(header(4, 6), &Bytes::from_static(b"xy"));
        let expected = writer.to_vec();
        let (mut out, mut calls) = (Vec::new(), 0);
        let mut would_block = 0;
        while !writer
            .try_write(|slices| trickle(&mut out, &mut calls, slices))
            .unwrap()
        {
            would_block += 1;
            assert_eq!(writer.pending_bytes(), expected.len() - out.len());
        }
        assert!(would_block > 10);
        assert_eq!(out, expected);
        assert!(writer.is_empty() && writer.is_done());
    }

    #[tokio::test]
    async fn write_to_finishes_what_try_write_started() {
        let mut writer = ChunkWriter::new(100);
        let payload = Bytes::from((0..250u32).map(|i| i as u8).collect::<Vec<u8>>());
        writer.push(header(6, 5), &payload);
        let expected = writer.to_vec();
        let (mut out, mut calls) = (Vec::new(), 0);
        assert!(!writer
            .try_write(|slices| trickle(&mut out, &mut calls, slices))
            .unwrap());
        assert_eq!(out.len(), 14);
        writer.write_to(&mut out, None).await.unwrap();
        assert_eq!(out, expected);
        assert!(writer.is_empty());
    }

    #[tokio::test]
    async fn write_now_sends_what_push_would_queue() {
        let small = Bytes::from((0..90u32).map(|i| i as u8).collect::<Vec<u8>>());
        let big = Bytes::from((0..250u32).map(|i| i as u8).collect::<Vec<u8>>());
        let mut reference = ChunkWriter::new(100);
        reference.push(header(6, 5), &small);
        reference.push(header(6, 0x0100_0000), &small);
        reference.push(header(4, 6), &big);
        reference.push(header(6, 7), &small);
        let expected = reference.to_vec();

        let mut writer = ChunkWriter::new(100);
        let mut out = Vec::new();
        // A socket that takes everything: the one-chunk messages go out whole.
        let mut take_all = |slices: &[IoSlice<'_>]| {
            let n: usize = slices.iter().map(|s| s.len()).sum();
            for slice in slices {
                out.extend_from_slice(slice);
            }
            Ok(n)
        };
        assert!(writer
            .write_now(header(6, 5), &small, &mut take_all)
            .unwrap());
        assert!(writer
            .write_now(header(6, 0x0100_0000), &small, &mut take_all)
            .unwrap());
        // Larger than a chunk: queued and written through the general path.
        assert!(writer.write_now(header(4, 6), &big, &mut take_all).unwrap());
        assert!(writer.is_empty());
        // A socket that takes 7 bytes: the rest is queued for write_to.
        let mut calls = 1;
        assert!(!writer
            .write_now(header(6, 7), &small, |s| trickle(&mut out, &mut calls, s))
            .unwrap());
        assert_eq!(writer.pending_bytes(), expected.len() - out.len());
        writer.write_to(&mut out, None).await.unwrap();
        assert_eq!(out, expected);
        assert_eq!(writer.written_total(), expected.len() as u64);
    }

    #[test]
    fn the_payload_is_referenced_not_copied() {
        let payload = Bytes::from(vec![3u8; 5000]);
        let mut writer = ChunkWriter::new(4096);
        writer.push(header(6, 0), &payload);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = writer.io_slices(&mut slices);
        assert_eq!(n, 4); // header, 4096 bytes, fmt-3 header, 904 bytes
        assert_eq!(slices[1].as_ptr(), payload.as_ptr());
        assert_eq!(slices[3].as_ptr(), payload[4096..].as_ptr());
    }
}

/// Why a `write_to` did not finish.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed while writing")]
    Closed,
    #[error("peer accepted no data for {} s", .0.as_secs())]
    Stalled(std::time::Duration),
}

impl ChunkWriter {
    /// Writes everything queued with vectored writes (each write call takes up
    /// to 256 iovecs), resuming after partial writes (its own or an earlier
    /// `try_write`'s), then clears the writer.
    /// With `stall_timeout`, a write call that makes no progress for that long
    /// fails, so a peer that stopped reading cannot hold the caller forever.
    pub async fn write_to<W>(
        &mut self,
        writer: &mut W,
        stall_timeout: Option<std::time::Duration>,
    ) -> Result<(), WriteError>
    where
        W: tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        while !self.is_done() {
            let mut slices = [IoSlice::new(&[]); IOVECS_PER_WRITE];
            let filled = self.io_slices(&mut slices);
            let write = writer.write_vectored(&slices[..filled]);
            let written = match stall_timeout {
                Some(limit) => tokio::time::timeout(limit, write)
                    .await
                    .map_err(|_| WriteError::Stalled(limit))??,
                None => write.await?,
            };
            if written == 0 {
                return Err(WriteError::Closed);
            }
            self.consume(written);
        }
        self.clear();
        Ok(())
    }
}
