//! The synthetic stream: a 1080p H.264 + AAC FLV made once with ffmpeg at the
//! requested bitrate (cached in target/loadgen), parsed into messages, and a
//! publisher that sends it in real time, looping, each frame stamped with a
//! sequence number so sinks can measure latency.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use prism_fanout::DestinationUrl;
use prism_media::{flv, MediaKind};
use prism_rtmp::ChunkWriter;
use prism_testkit::clip::Clip;

use crate::Clock;

const SOURCE_SECONDS: u32 = 10;
/// Where the sequence number goes in a frame payload: in an SEI NAL unit
/// (user data, unregistered) put first in every video frame, so the frame
/// stays valid H.264 for relays that parse it (SRS does); past the AAC
/// header (audio).
pub const VIDEO_STAMP_AT: usize = 5 + 4 + 3 + 16;
pub const AUDIO_STAMP_AT: usize = 2;
/// The SEI NAL unit carrying the stamp: header (type 6), payload type 5,
/// payload size 24 (a 16-byte UUID and the 8-byte stamp), then the RBSP
/// stop bit.
const STAMP_SEI_LEN: usize = 3 + 16 + 8 + 1;

/// A sequence number as 8 bytes of 7 bits each, high bit set: no zero
/// bytes, so no start-code emulation inside the SEI.
pub fn encode_stamp(seq: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = 0x80 | ((seq >> (7 * (7 - i))) & 0x7f) as u8;
    }
    out
}

pub fn decode_stamp(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(
        bytes
            .iter()
            .fold(0, |seq, b| (seq << 7) | u64::from(b & 0x7f)),
    )
}

/// `frame` (an FLV AVC NALU packet) with the stamp's SEI NAL unit first.
fn with_stamp_sei(frame: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(frame.len() + 4 + STAMP_SEI_LEN);
    out.extend_from_slice(&frame[..5]);
    out.extend_from_slice(&(STAMP_SEI_LEN as u32).to_be_bytes());
    out.extend_from_slice(&[0x06, 0x05, 24]);
    out.extend_from_slice(b"prism-loadgen-ts");
    out.extend_from_slice(&encode_stamp(0));
    out.push(0x80);
    out.extend_from_slice(&frame[5..]);
    Bytes::from(out)
}

#[derive(Clone)]
pub struct Tag {
    pub kind: MediaKind,
    pub timestamp: u32,
    pub data: Bytes,
}

#[derive(Clone)]
pub struct Source {
    pub tags: Arc<Vec<Tag>>,
    pub duration_ms: u32,
}

impl Source {
    pub fn messages_per_second(&self) -> usize {
        self.tags.len() * 1000 / self.duration_ms.max(1) as usize + 1
    }
}

/// Where a publisher sends.
pub enum Target {
    Rtmp(String),
    /// Plain TCP: the stream's index (4 bytes, big-endian), then its FLV
    /// tags, no protocol (the tee; the sinks learn the stream from it).
    Raw {
        address: String,
        stream: usize,
    },
}

/// Where the source stream of `bitrate_kbps` is cached: the workspace's
/// build directory (`CARGO_TARGET_DIR` when set), wherever the harness or its
/// tests run from, never the source tree.
pub fn source_path(bitrate_kbps: u32) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target
        .join("loadgen")
        .join(format!("source-{bitrate_kbps}k.flv"))
}

pub fn prepare(bitrate_kbps: u32) -> Result<Source, String> {
    let path = source_path(bitrate_kbps);
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if !path.exists() {
        eprintln!(
            "prism-loadgen: encoding the {SOURCE_SECONDS} s source stream once ({})",
            path.display()
        );
        Clip::new("testsrc2=size=1920x1080:rate=30")
            .audio("sine=frequency=440:sample_rate=48000")
            .seconds(SOURCE_SECONDS)
            .gop(60)
            .cbr(bitrate_kbps, bitrate_kbps)
            .audio_kbps(128)
            .encode("flv", &path)?;
    }
    let file = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_flv(file).ok_or_else(|| format!("{}: not an FLV file", path.display()))
}

fn parse_flv(file: Vec<u8>) -> Option<Source> {
    if !file.starts_with(b"FLV") {
        return None;
    }
    let file = Bytes::from(file);
    let tags: Vec<Tag> = flv::file_tags(&file)
        .map(|message| {
            // AVC frames (packet type 1) get the stamp's NAL unit.
            let data = if message.kind == MediaKind::Video
                && message.payload.len() > 5
                && message.payload[1] == 1
            {
                with_stamp_sei(&message.payload)
            } else {
                message.payload
            };
            Tag {
                kind: message.kind,
                timestamp: message.timestamp as u32,
                data,
            }
        })
        .collect();
    let duration_ms = tags.iter().map(|t| t.timestamp).max()? + 34;
    Some(Source {
        tags: Arc::new(tags),
        duration_ms,
    })
}

/// Publishes in real time for `duration`, looping the source; returns how
/// many stamped messages were sent.
pub async fn publish(
    source: Source,
    target: Target,
    duration: Duration,
    clock: Arc<Clock>,
) -> Result<u64, String> {
    let (url, raw_addr, raw_stream) = match target {
        Target::Rtmp(url) => (Some(url), None, 0),
        Target::Raw { address, stream } => (None, Some(address), stream),
    };
    let address = match (&url, &raw_addr) {
        (Some(url), _) => {
            let parsed = DestinationUrl::parse(url, None).map_err(|e| e.to_string())?;
            format!("{}:{}", parsed.host, parsed.port)
        }
        (_, Some(addr)) => addr.clone(),
        _ => unreachable!(),
    };
    let mut stream = connect_retrying(&address).await?;
    let _ = stream.set_nodelay(true);
    let mut out = ChunkWriter::new(128);
    let mut stream_id = 0;
    if let Some(url) = &url {
        let url = DestinationUrl::parse(url, None).map_err(|e| e.to_string())?;
        stream_id = prism_fanout::start_publish(
            &mut stream,
            &url,
            // What OBS publishes with.
            prism_rtmp::server::SERVER_CHUNK_SIZE,
            &mut out,
            None,
        )
        .await
        .map_err(|e| e.to_string())?
        .1;
    }
    let raw = raw_addr.is_some();
    if raw {
        stream
            .write_all(&(raw_stream as u32).to_be_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    let (mut reader, mut writer) = stream.into_split();
    // Drain whatever the relay says (acks, pings), so it never blocks on us.
    tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    });

    let started = Instant::now();
    let mut seq = 0u64;
    let mut pass = 0u32;
    'passes: loop {
        let offset = pass * source.duration_ms;
        for tag in source.tags.iter() {
            let is_header = tag.kind == MediaKind::Data
                || prism_media::MediaMessage::new(tag.kind, 0, tag.data.clone()).sequence_header;
            if pass > 0 && is_header {
                continue;
            }
            let due = started + Duration::from_millis((offset + tag.timestamp) as u64);
            if due.duration_since(started) > duration {
                break 'passes;
            }
            tokio::time::sleep_until(due.into()).await;
            let stamp_at = match tag.kind {
                MediaKind::Video => VIDEO_STAMP_AT,
                MediaKind::Audio => AUDIO_STAMP_AT,
                MediaKind::Data => usize::MAX,
            };
            let payload = if !is_header && tag.data.len() >= stamp_at + 8 {
                seq += 1;
                let mut stamped = BytesMut::from(&tag.data[..]);
                stamped[stamp_at..stamp_at + 8].copy_from_slice(&encode_stamp(seq));
                clock.mark_sent(seq);
                stamped.freeze()
            } else {
                tag.data.clone()
            };
            if raw {
                let mut raw_tag = Vec::with_capacity(payload.len() + 15);
                flv::write_tag(
                    &mut raw_tag,
                    tag.kind.type_id(),
                    offset + tag.timestamp,
                    &payload,
                );
                writer
                    .write_all(&raw_tag)
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                continue;
            }
            prism_rtmp::queue_media(
                &mut out,
                tag.kind.type_id(),
                stream_id,
                offset + tag.timestamp,
                &payload,
            );
            out.write_to(&mut writer, None)
                .await
                .map_err(|e| e.to_string())?;
        }
        pass += 1;
    }
    let _ = writer.shutdown().await;
    Ok(seq)
}

async fn connect_retrying(address: &str) -> Result<TcpStream, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("connect to {address}: {e}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
