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
pub const VIDEO_STAMP_AT: usize = 5 + 4 + 3 + STAMP_UUID.len();
pub const AUDIO_STAMP_AT: usize = 2;
/// The SEI's UUID, which marks the stamp wherever a relay puts the SEI (a
/// relay that goes through MPEG-TS may keep an access unit delimiter first).
const STAMP_UUID: &[u8; 16] = b"prism-loadgen-ts";
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

/// The sequence number in a stamped frame as received: audio past the AAC
/// header, video after the stamp's UUID among the frame's first NAL units.
pub fn find_stamp(kind: MediaKind, payload: &[u8]) -> Option<u64> {
    let at = match kind {
        MediaKind::Audio => AUDIO_STAMP_AT,
        MediaKind::Video
            if payload.get(VIDEO_STAMP_AT - STAMP_UUID.len()..VIDEO_STAMP_AT)
                == Some(STAMP_UUID) =>
        {
            VIDEO_STAMP_AT
        }
        MediaKind::Video => {
            let head = &payload[..payload.len().min(128)];
            head.windows(STAMP_UUID.len())
                .position(|w| w == STAMP_UUID)?
                + STAMP_UUID.len()
        }
        MediaKind::Data => return None,
    };
    decode_stamp(payload.get(at..at + 8)?)
}

/// A stamp's value; none for bytes no stamp has (an unstamped frame).
fn decode_stamp(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    if bytes.iter().any(|b| b & 0x80 == 0) {
        return None;
    }
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
    out.extend_from_slice(STAMP_UUID);
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
    /// An `srt://` URL: MPEG-TS over SRT (`publish_srt`).
    Srt(String),
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
    match target {
        Target::Rtmp(url) => publish_rtmp(&source, &url, duration, &clock).await,
        Target::Raw { address, stream } => {
            publish_raw(&source, &address, stream, duration, &clock).await
        }
        Target::Srt(url) => publish_srt(&source, &url, duration, &clock).await,
    }
}

async fn publish_rtmp(
    source: &Source,
    url: &str,
    duration: Duration,
    clock: &Clock,
) -> Result<u64, String> {
    let url = DestinationUrl::parse(url, None).map_err(|e| e.to_string())?;
    let mut stream = connect_retrying(&format!("{}:{}", url.host, url.port)).await?;
    let _ = stream.set_nodelay(true);
    let mut out = ChunkWriter::new(128);
    let stream_id = prism_fanout::start_publish(
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
    let mut writer = drained(stream);
    let mut pacer = Pacer::new(source, duration, clock);
    while let Some((kind, timestamp, payload)) = pacer.next().await {
        prism_rtmp::queue_media(&mut out, kind.type_id(), stream_id, timestamp, &payload);
        out.write_to(&mut writer, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = writer.shutdown().await;
    Ok(pacer.seq)
}

/// Plain TCP to the tee: the stream's index, then FLV tags.
async fn publish_raw(
    source: &Source,
    address: &str,
    stream: usize,
    duration: Duration,
    clock: &Clock,
) -> Result<u64, String> {
    let mut socket = connect_retrying(address).await?;
    let _ = socket.set_nodelay(true);
    socket
        .write_all(&(stream as u32).to_be_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut writer = drained(socket);
    let mut raw_tag = Vec::new();
    let mut pacer = Pacer::new(source, duration, clock);
    while let Some((kind, timestamp, payload)) = pacer.next().await {
        raw_tag.clear();
        flv::write_tag(&mut raw_tag, kind.type_id(), timestamp, &payload);
        writer
            .write_all(&raw_tag)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    let _ = writer.shutdown().await;
    Ok(pacer.seq)
}

/// MPEG-TS over SRT, sent by libsrt: the harness muxes (Prism's own TS
/// muxer) into the stdin of `srt-live-transmit` calling `url` with libsrt's
/// defaults, which sends it on in 1316-byte messages, as encoders do.
async fn publish_srt(
    source: &Source,
    url: &str,
    duration: Duration,
    clock: &Clock,
) -> Result<u64, String> {
    let mut child = std::process::Command::new("srt-live-transmit")
        // An encoder's messages: seven TS packets (srt-live-transmit's own
        // default, 1456 bytes, splits packets, which SRS refuses).
        .args(["-q", "-chunk", &SRT_MESSAGE.to_string(), "file://con", url])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start srt-live-transmit (Debian: srt-tools): {e}"))?;
    let stdin = child.stdin.take().ok_or("srt-live-transmit: no stdin")?;
    let sender = KillOnDrop(child);
    let mut pipe = tokio::net::unix::pipe::Sender::from_owned_fd(std::os::fd::OwnedFd::from(stdin))
        .map_err(|e| format!("srt-live-transmit's stdin: {e}"))?;
    let mut muxer = prism_media::mpegts::TsMuxer::new();
    let mut pacer = Pacer::new(source, duration, clock);
    // Video frames alone are measured: SRS parses the AAC in TS and drops
    // most frames a stamp garbles.
    pacer.stamp_audio = false;
    let mut written = 0;
    while let Some((kind, timestamp, payload)) = pacer.next().await {
        let packets = muxer.mux(&prism_media::MediaMessage::new(
            kind,
            timestamp.into(),
            payload,
        ));
        written += packets.len();
        pipe.write_all(&packets)
            .await
            .map_err(|e| format!("srt-live-transmit ended: {e}"))?;
    }
    // srt-live-transmit sends whole 1316-byte messages: null packets push
    // out the last one, and the connection stays up past SRT's receive
    // latency so the receiver delivers all it holds.
    let last_message = written % SRT_MESSAGE;
    if last_message > 0 {
        let padding: Vec<u8> =
            std::iter::repeat_n(TS_NULL_PACKET, (SRT_MESSAGE - last_message) / 188)
                .flatten()
                .collect();
        let _ = pipe.write_all(&padding).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    drop(pipe);
    drop(sender);
    Ok(pacer.seq)
}

/// What srt-live-transmit sends per SRT message: seven TS packets.
const SRT_MESSAGE: usize = 7 * 188;

/// A TS null packet (PID 0x1fff), which demuxers skip.
const TS_NULL_PACKET: [u8; 188] = {
    let mut packet = [0xff; 188];
    packet[0] = 0x47;
    packet[1] = 0x1f;
    packet[2] = 0xff;
    packet[3] = 0x10;
    packet
};

/// Ends a helper process with the publish that started it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The write half of `stream`; its read half is drained (acks, pings), so
/// the relay never blocks on us.
fn drained(stream: TcpStream) -> tokio::net::tcp::OwnedWriteHalf {
    let (mut reader, writer) = stream.into_split();
    tokio::spawn(async move {
        let mut sink = vec![0u8; 4096];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    writer
}

/// The source's tags at their times, looping for `duration` (sequence
/// headers and metadata only in the first pass), every frame stamped with
/// the next sequence number and marked sent on `clock`.
struct Pacer<'a> {
    source: &'a Source,
    duration: Duration,
    clock: &'a Clock,
    started: Instant,
    pass: u32,
    next: usize,
    /// Stamped messages so far.
    seq: u64,
    /// Audio frames get stamps too (their AAC data is garbled where the
    /// stamp goes; a relay that parses AAC may drop them).
    stamp_audio: bool,
}

impl<'a> Pacer<'a> {
    fn new(source: &'a Source, duration: Duration, clock: &'a Clock) -> Self {
        Self {
            source,
            duration,
            clock,
            started: Instant::now(),
            pass: 0,
            next: 0,
            seq: 0,
            stamp_audio: true,
        }
    }

    /// The next tag, its timestamp and its (stamped) payload, once it is
    /// due; none when the run is over.
    async fn next(&mut self) -> Option<(MediaKind, u32, Bytes)> {
        loop {
            if self.next == self.source.tags.len() {
                self.next = 0;
                self.pass += 1;
            }
            let tag = &self.source.tags[self.next];
            self.next += 1;
            let is_header = tag.kind == MediaKind::Data
                || prism_media::MediaMessage::new(tag.kind, 0, tag.data.clone()).sequence_header;
            if self.pass > 0 && is_header {
                continue;
            }
            let timestamp = self.pass * self.source.duration_ms + tag.timestamp;
            let due = self.started + Duration::from_millis(timestamp as u64);
            if due.duration_since(self.started) > self.duration {
                return None;
            }
            tokio::time::sleep_until(due.into()).await;
            let stamp_at = match tag.kind {
                MediaKind::Video => Some(VIDEO_STAMP_AT),
                MediaKind::Audio if self.stamp_audio => Some(AUDIO_STAMP_AT),
                MediaKind::Audio | MediaKind::Data => None,
            }
            .filter(|at| !is_header && tag.data.len() >= at + 8);
            let payload = if let Some(stamp_at) = stamp_at {
                self.seq += 1;
                let mut stamped = BytesMut::from(&tag.data[..]);
                stamped[stamp_at..stamp_at + 8].copy_from_slice(&encode_stamp(self.seq));
                self.clock.mark_sent(self.seq);
                stamped.freeze()
            } else {
                tag.data.clone()
            };
            return Some((tag.kind, timestamp, payload));
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An FLV AVC frame (keyframe, NALU) of one slice, stamped with `seq`.
    fn stamped_frame(seq: u64) -> Vec<u8> {
        let frame = [0x17, 1, 0, 0, 0, 0, 0, 0, 3, 0x65, 0x88, 0x84];
        let mut stamped = with_stamp_sei(&frame).to_vec();
        stamped[VIDEO_STAMP_AT..VIDEO_STAMP_AT + 8].copy_from_slice(&encode_stamp(seq));
        stamped
    }

    #[test]
    fn a_video_stamp_is_found_where_the_publisher_put_it() {
        let frame = stamped_frame(123_456);
        assert_eq!(find_stamp(MediaKind::Video, &frame), Some(123_456));
    }

    #[test]
    fn a_video_stamp_is_found_behind_an_access_unit_delimiter() {
        // What SRS forwards of a TS publish: the AUD kept first.
        let stamped = stamped_frame(77);
        let mut frame = stamped[..5].to_vec();
        frame.extend_from_slice(&[0, 0, 0, 2, 0x09, 0xf0]);
        frame.extend_from_slice(&stamped[5..]);
        assert_eq!(find_stamp(MediaKind::Video, &frame), Some(77));
    }

    #[test]
    fn an_unstamped_frame_has_no_stamp() {
        // Raw AAC as an encoder writes it: bytes with the high bit clear.
        let audio = [0xaf, 0x01, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c, 0x00, 0x40];
        assert_eq!(find_stamp(MediaKind::Audio, &audio), None);
        let unstamped_video = [0x27, 1, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x02];
        assert_eq!(find_stamp(MediaKind::Video, &unstamped_video), None);
    }
}
