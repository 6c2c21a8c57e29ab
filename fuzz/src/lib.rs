//! The fuzz targets, as plain functions: each AFL++ binary in `src/bin`
//! calls one, and a unit test replays the seed corpus through all of them. A target returns normally whatever its input;
//! a panic, an abort or a hang is the bug AFL++ looks for.

pub mod seeds;
pub mod srt_connection;

use prism_rtmp::{ChunkReader, ChunkWriter, PublishClient, PublishTarget, ReaderLimits};
use prism_rtmp::{ServerEvent, ServerLimits, ServerSession};

/// Splits input into pieces of a size its first byte picks, so reads that
/// end anywhere inside a header or a chunk are covered.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (size, rest) = match data.split_first() {
        Some((&b, rest)) => (usize::from(b % 200) + 1, rest),
        None => (1, data),
    };
    rest.chunks(size)
}

/// The server session after the handshake, as an encoder drives it; every
/// publish request is accepted, so the larger post-publish limits and the
/// media path are reached too.
pub fn rtmp_server(data: &[u8]) {
    let mut session = ServerSession::new(ServerLimits {
        max_message_len: 256 * 1024,
        max_partial_messages: 8,
    });
    let mut out = ChunkWriter::new(128);
    let mut events = Vec::new();
    for piece in pieces(data) {
        if session.handle_input(piece, &mut out, &mut events).is_err() {
            return;
        }
        for event in events.drain(..) {
            if let ServerEvent::PublishRequested { .. } = event {
                session.accept_publish(&mut out);
            }
        }
        out.clear();
    }
}

/// The publishing client on what a destination server answers.
pub fn rtmp_client(data: &[u8]) {
    let mut client = PublishClient::new(
        PublishTarget {
            app: "app".into(),
            tc_url: "rtmp://h/app".into(),
            stream_name: "key".into(),
        },
        prism_rtmp::DEFAULT_PUBLISH_CHUNK_SIZE,
    );
    let mut out = ChunkWriter::new(128);
    client.start(&mut out);
    for piece in pieces(data) {
        if client.handle_input(piece, &mut out).is_err() {
            return;
        }
        out.clear();
    }
}

/// The play client (pulled sources) on what an RTMP origin answers.
pub fn rtmp_play(data: &[u8]) {
    let mut client = prism_rtmp::PlayClient::new(
        PublishTarget {
            app: "live".into(),
            tc_url: "rtmp://h/live".into(),
            stream_name: "cam".into(),
        },
        prism_rtmp::ServerLimits {
            max_message_len: 256 * 1024,
            ..prism_rtmp::ServerLimits::default()
        },
    );
    let mut out = ChunkWriter::new(128);
    client.start(&mut out);
    for piece in pieces(data) {
        if client.handle_input(piece, &mut out).is_err() {
            return;
        }
        out.clear();
    }
}

/// The MPEG-TS muxer (SRT destinations) on a publisher's messages: each
/// record is a kind byte (audio, video, data), a timestamp step (ms) and a
/// 16-bit length, then the FLV tag body. Whatever comes in, what comes out
/// is whole 188-byte packets.
pub fn ts_mux(data: &[u8]) {
    use prism_media::{MediaKind, MediaMessage};
    let mut muxer = prism_media::mpegts::TsMuxer::new();
    let (mut rest, mut timestamp) = (data, 0u64);
    while let [kind, step, high, low, body @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*high, *low])).min(body.len());
        let kind = [MediaKind::Audio, MediaKind::Video, MediaKind::Data][usize::from(*kind % 3)];
        timestamp += u64::from(*step);
        let message =
            MediaMessage::new(kind, timestamp, bytes::Bytes::copy_from_slice(&body[..len]));
        let ts = muxer.mux(&message);
        assert!(ts.len().is_multiple_of(188) && ts.chunks(188).all(|p| p[0] == 0x47));
        rest = &body[len..];
    }
}

/// The chunk reader alone, with small limits so they are hit often.
pub fn rtmp_chunks(data: &[u8]) {
    let mut reader = ChunkReader::new(ReaderLimits {
        max_message_len: 4096,
        max_partial_messages: 4,
        max_chunk_streams: 8,
        max_chunk_size: 4096,
    });
    for piece in pieces(data) {
        reader.feed(piece);
        loop {
            match reader.next_message() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            reader.buffered_bytes() <= 18 + 4 * 4096,
            "reader holds more than its limits"
        );
    }
}

/// AMF0 values and commands (both envelopes).
pub fn amf0(data: &[u8]) {
    if let Ok(values) = prism_rtmp::amf0::decode_all(data) {
        let encoded = prism_rtmp::amf0::encode_all(&values);
        assert!(
            prism_rtmp::amf0::decode_all(&encoded).is_ok(),
            "re-encoding does not decode"
        );
    }
    let _ = prism_rtmp::Command::decode(20, data);
    let _ = prism_rtmp::Command::decode(17, data);
}

/// FLV tag inspection and the H.264/HEVC/AAC parsers.
pub fn flv_tags(data: &[u8]) {
    use prism_media::flv;
    let _ = flv::inspect_video(data);
    let _ = flv::is_audio_sequence_header(data);
    let _ = flv::is_metadata(data);
    let _ = flv::video_codec_name(data);
    let _ = flv::audio_codec_name(data);
    let _ = prism_media::h264::sps_dimensions(data);
    let _ = prism_media::hevc::parse_sps(data);
    let _ = prism_media::aac::adts_frames(data).count();
    let _ = prism_media::h264::nal_units(data).count();
    // Enhanced RTMP v2 multitrack, as video and as audio: read, and track 0
    // re-framed for single-track consumers.
    // The stream's description (codec records, sizes, rates), as a
    // header and as a frame of each kind.
    let payload = bytes::Bytes::copy_from_slice(data);
    let mut profile = prism_media::profile::StreamProfile::default();
    for kind in [prism_media::MediaKind::Video, prism_media::MediaKind::Audio] {
        let _ = prism_media::multitrack::read(kind, &payload);
        let message = prism_media::MediaMessage::new(kind, 0, payload.clone());
        let _ = prism_media::single_track::default_track(&message);
        profile.observe(&message);
        profile.observe(&prism_media::MediaMessage {
            sequence_header: true,
            ..message
        });
    }
    let _ = prism_media::h264::record_sps(data);
    let _ = prism_media::hevc::record_sps(data);
    let _ = profile.tracks();
}

/// MPEG-TS demux and remux to FLV messages.
pub fn ts_remux(data: &[u8]) {
    use prism_ingest::remux::Remuxer;
    use prism_ingest::ts::TsDemuxer;
    let (mut demuxer, mut remuxer) = (TsDemuxer::new(), Remuxer::new());
    let (mut frames, mut messages) = (Vec::new(), Vec::new());
    for piece in data.chunks(1316) {
        demuxer.push(piece, &mut frames);
        for frame in frames.drain(..) {
            remuxer.push(frame, &mut messages);
        }
        messages.clear();
    }
}

/// SRT stream ids and destination URLs.
pub fn stream_id(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = prism_ingest::streamid::publish_key(text);
        // What the authorisation hook is told of it, after decoding.
        let unescaped = prism_ingest::streamid::unescaped(text);
        let _ = prism_ingest::streamid::publish_context(&unescaped);
        let _ = prism_media::auth::parse_args(text, '&');
        let _ = prism_fanout::DestinationUrl::parse(text, None);
        let _ = prism_fanout::DestinationUrl::parse(text, Some("key"));
    }
}

/// Config parsing and validation: a node's file, and the same text as the
/// cluster's shared streams document (what a node reads from Redis).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("fuzz.toml");
        // Hermetic: what the text names (files, the environment) is not
        // read, so a run depends on its input alone.
        let outside = &prism_admin::outside::Hermetic;
        let _ = prism_admin::Config::parse_in(path, text, outside);
        let node = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n[cluster]\nredis = \"redis://127.0.0.1\"\nnode_id = \"a\"\n";
        let _ = prism_admin::Config::parse_with_streams_in(
            path,
            node,
            std::path::Path::new("redis"),
            text,
            outside,
        );
    }
}

/// The SRT listener's handshakes (patched srt-protocol), driven as
/// srt-tokio drives it: the input is a series of datagrams, each a length
/// byte then that many bytes, from one of four source addresses (picked by
/// the length byte's top bits). A handshake conclusion gets the cookie the
/// listener last sent to its address, so mutated conclusions reach access
/// control and the key negotiation instead of stopping at the cookie check.
pub fn srt_handshake(data: &[u8]) {
    use prism_ingest::srt_drive::{ListenerRig, COOKIE_OFFSET};
    let mut rig = ListenerRig::new();
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x3f) * 8;
        let (datagram, after) = tail.split_at(len.min(tail.len()));
        rest = after;
        let from = std::net::SocketAddr::from(([127, 0, 0, 1], 5000 + u16::from(head >> 6)));
        let mut datagram = datagram.to_vec();
        if let Some(cookie) = rig.cookie_sent_to(from) {
            if let Some(field) = datagram.get_mut(COOKIE_OFFSET..COOKIE_OFFSET + 4) {
                field.copy_from_slice(&cookie.to_be_bytes());
            }
        }
        rig.datagram(&datagram, from);
        rig.tick(std::time::Duration::from_millis(100));
    }
    assert!(
        rig.listener.session_count() <= rig.opened + srt_protocol::listener::MAX_PENDING_SESSIONS,
        "the listener keeps more sessions than its bound"
    );
}

/// The SRT connection after its handshake as a sender (a destination's
/// or an SRT publisher's peer answering with ACKs, NAKs, drop requests and
/// anything else): see `srt_connection`.
pub fn srt_sender(data: &[u8]) {
    srt_connection::drive(srt_connection::Role::Sender, data);
}

/// The SRT connection after its handshake as a receiver (a publisher's or
/// a pulled source's data packets and control): see `srt_connection`.
pub fn srt_receiver(data: &[u8]) {
    srt_connection::drive(srt_connection::Role::Receiver, data);
}

/// A recording of whatever an encoder sends: messages read from the input
/// (kind, timestamp step, body) go through the segmenter in both formats;
/// every MP4 box it writes must read back with mp4-atom. The bodies are a
/// peer's bytes, so a configuration MP4 cannot hold is an error the
/// segmenter reports, never a panic or a file that does not parse.
pub fn record(data: &[u8]) {
    use mp4_atom::{Decode, Moof, Moov};
    use prism_media::{MediaKind, MediaMessage};
    use prism_record::{Format, Segmenter, Step};

    let mut messages = Vec::new();
    let (mut at, mut timestamp) = (0usize, 0u64);
    while at + 3 <= data.len() {
        let kind = match data[at] % 3 {
            0 => MediaKind::Video,
            1 => MediaKind::Audio,
            _ => MediaKind::Data,
        };
        timestamp += u64::from(data[at + 1]) * 8;
        let len = usize::from(data[at + 2]).min(data.len() - at - 3);
        let body = bytes::Bytes::copy_from_slice(&data[at + 3..at + 3 + len]);
        messages.push(MediaMessage::new(kind, timestamp, body));
        at += 3 + len;
    }
    for format in [Format::Fmp4, Format::Flv] {
        let mut segmenter = Segmenter::new(format, 2000);
        let mut steps = Vec::new();
        for message in &messages {
            segmenter.push(message, &mut steps);
        }
        segmenter.finish(&mut steps);
        if format != Format::Fmp4 {
            continue;
        }
        let mut file: Vec<u8> = Vec::new();
        let check = |file: &[u8]| {
            let mut at = 0;
            while at + 8 <= file.len() {
                let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
                assert!(
                    size >= 8 && at + size <= file.len(),
                    "a box overruns its file"
                );
                let body = &file[at..at + size];
                match &body[4..8] {
                    b"moov" => {
                        Moov::decode(&mut &body[..]).expect("the init segment reads back");
                    }
                    b"moof" => {
                        Moof::decode(&mut &body[..]).expect("a fragment reads back");
                    }
                    _ => {}
                }
                at += size;
            }
            assert_eq!(at, file.len(), "the file ends inside a box");
        };
        for step in steps {
            match step {
                Step::Open { head, .. } => {
                    check(&file);
                    file = head.to_vec();
                }
                Step::Append { parts, .. } => {
                    for part in parts {
                        file.extend_from_slice(&part);
                    }
                }
                Step::Close { trailer } => {
                    if let Some(trailer) = trailer {
                        file.extend_from_slice(&trailer);
                    }
                }
                Step::Unsupported(_) | Step::Failed(_) => {}
            }
        }
        check(&file);
        read_back(&file);
    }
    // The input itself as a file to play back.
    read_back(data);
}

/// Plays back `file` as a show would, reading every fragment.
fn read_back(file: &[u8]) {
    use prism_record::mp4_read::Mp4Reader;
    if let Ok(mut reader) = Mp4Reader::open(std::io::Cursor::new(file)) {
        let _ = reader.headers();
        while let Ok(Some(_)) = reader.next_fragment(true) {}
    }
}

/// A target: its name and the function AFL++ drives.
pub type Target = (&'static str, fn(&[u8]));

/// Every target by name, for the seed replay and the seed writer.
pub const TARGETS: [Target; 14] = [
    ("rtmp_server", rtmp_server),
    ("rtmp_client", rtmp_client),
    ("rtmp_play", rtmp_play),
    ("ts_mux", ts_mux),
    ("rtmp_chunks", rtmp_chunks),
    ("amf0", amf0),
    ("flv_tags", flv_tags),
    ("ts_remux", ts_remux),
    ("stream_id", stream_id),
    ("config", config),
    ("srt_handshake", srt_handshake),
    ("srt_sender", srt_sender),
    ("srt_receiver", srt_receiver),
    ("record", record),
];

#[cfg(test)]
mod tests {
    /// Every seed through every target (`cargo test --lib`: the AFL++
    /// binaries link only under `cargo afl build`).
    #[test]
    fn every_seed_runs_through_its_target() {
        for (target, run) in super::TARGETS {
            let seeds = super::seeds::seeds(target);
            assert!(!seeds.is_empty(), "{target} has no seeds");
            for (_, bytes) in seeds {
                run(&bytes);
            }
        }
    }
}
