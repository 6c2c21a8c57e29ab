//! The seed corpus: inputs the spec allows but Prism's writer never makes
//! (interleaved chunk streams, extended timestamps, abort messages, chunk
//! size changes mid-message) and the inputs that used to break Prism. The
//! RTMP seeds start with the byte `pieces` reads as the read size.

use prism_rtmp::handmade::{
    basic, nesting, set_chunk_size, strict_array_bomb, type0, type1, type2, whole,
};
use prism_rtmp::{Command, Value};

/// Read size selector: 128-byte reads.
const READS: u8 = 127;

fn command(msid: u32, name: &str, txn: f64, object: Value, args: Vec<Value>) -> Vec<u8> {
    let body = Command::new(name, txn, object, args).encode();
    whole(type0(3, 0, body.len(), 20, msid), 3, &body, 128)
}

fn publish_flow() -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(command(
        0,
        "connect",
        1.0,
        Value::object([("app", Value::string("live"))]),
        vec![],
    ));
    wire.extend(command(0, "createStream", 2.0, Value::Null, vec![]));
    wire.extend(command(
        1,
        "publish",
        0.0,
        Value::Null,
        vec![Value::string("key?bandwidthtest=true")],
    ));
    wire
}

/// Video on csid 6 and audio on csid 4, their chunks alternating; later
/// headers are types 1, 2 and 3.
fn interleaved() -> Vec<u8> {
    let mut wire = publish_flow();
    for i in 0..4u8 {
        let video = vec![if i == 0 { 0x17 } else { 0x27 }; 300];
        let audio = [0xAF; 200];
        wire.extend(if i == 0 {
            type0(6, 0, 300, 9, 1)
        } else {
            type1(6, 40, 300, 9)
        });
        wire.extend(&video[..128]);
        wire.extend(match i {
            0 => type0(4, 3, 200, 8, 1),
            1 => type2(4, 40),
            _ => basic(3, 4),
        });
        wire.extend(&audio[..128]);
        wire.extend(basic(3, 6));
        wire.extend(&video[128..256]);
        wire.extend(basic(3, 4));
        wire.extend(&audio[128..]);
        wire.extend(basic(3, 6));
        wire.extend(&video[256..]);
    }
    wire
}

fn extended_timestamps() -> Vec<u8> {
    let mut wire = publish_flow();
    let ts = 0x0123_4567u32;
    wire.extend(type0(6, ts, 200, 9, 1));
    wire.extend([0x17; 128]);
    wire.extend(basic(3, 6));
    wire.extend(ts.to_be_bytes());
    wire.extend([0x17; 72]);
    wire.extend(basic(3, 6));
    wire.extend(ts.to_be_bytes());
    wire.extend([0x27; 128]);
    wire
}

fn abort_mid_message() -> Vec<u8> {
    let mut wire = publish_flow();
    wire.extend(type0(6, 0, 500, 9, 1));
    wire.extend([0x17; 128]);
    wire.extend(type0(2, 0, 4, 2, 0));
    wire.extend(6u32.to_be_bytes());
    wire.extend(type0(6, 40, 3, 9, 1));
    wire.extend([0x27, 1, 0]);
    wire
}

fn chunk_size_mid_message() -> Vec<u8> {
    let mut wire = publish_flow();
    wire.extend(type0(6, 0, 1000, 9, 1));
    wire.extend([0x17; 128]);
    wire.extend(set_chunk_size(4096));
    wire.extend(basic(3, 6));
    wire.extend([0x17; 872]);
    wire
}

/// The remote panic: an unfinished message on csid 3, a short one on
/// csid 4, then type-3 chunks there.
fn short_after_unfinished() -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(type0(3, 0, 1000, 20, 0));
    wire.extend([0; 128]);
    wire.extend(type0(4, 0, 10, 9, 1));
    wire.extend([0; 10]);
    for _ in 0..3 {
        wire.extend(basic(3, 4));
        wire.extend([0; 10]);
    }
    wire
}

fn amf0_bomb(type_id: u8, body: Vec<u8>) -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(whole(type0(3, 0, body.len(), type_id, 0), 3, &body, 128));
    wire
}

fn metadata_bomb() -> Vec<u8> {
    let mut wire = publish_flow();
    let mut body =
        b"\x02\x00\x0d@setDataFrame\x02\x00\x0aonMetaData\x0a\x00\x00\x00\x01\x09".to_vec();
    body.extend(nesting(2_000));
    wire.extend(whole(type0(5, 0, body.len(), 18, 1), 5, &body, 128));
    wire
}

fn huge_declaration() -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(type0(6, 0, 0xFF_FFFF, 9, 1));
    wire.extend([0x27; 128]);
    wire
}

fn every_chunk_stream_id() -> Vec<u8> {
    let mut wire = vec![READS];
    for csid in (3..65_600u32).step_by(97) {
        wire.extend(type0(csid, 0, 0, 9, 1));
    }
    wire
}

/// What a destination server might answer: a connect result whose chunks
/// have pings between them, then the bomb.
fn server_replies() -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(set_chunk_size(64));
    let body = Command::new(
        "_result",
        1.0,
        Value::Null,
        vec![Value::object([(
            "code",
            Value::string("NetConnection.Connect.Success"),
        )])],
    )
    .encode();
    for (i, part) in body.chunks(64).enumerate() {
        wire.extend(if i == 0 {
            type0(3, 0, body.len(), 20, 0)
        } else {
            basic(3, 3)
        });
        wire.extend(part);
        wire.extend(type0(2, 0, 6, 4, 0));
        wire.extend([0, 6, 0, 0, 0, i as u8]);
    }
    let result = Command::new("_result", 4.0, Value::Null, vec![Value::Number(1.0)]).encode();
    wire.extend(whole(type0(3, 0, result.len(), 20, 0), 3, &result, 64));
    wire
}

/// An origin playing a stream to Prism: connect and createStream results,
/// Play.Start, a keyframe, then the StreamEOF of its publisher leaving.
fn play_replies() -> Vec<u8> {
    let mut wire = vec![READS];
    wire.extend(set_chunk_size(64));
    for (txn, args) in [(1.0, vec![]), (2.0, vec![Value::Number(1.0)])] {
        let result = Command::new("_result", txn, Value::Null, args).encode();
        wire.extend(whole(type0(3, 0, result.len(), 20, 0), 3, &result, 64));
    }
    let start = Command::new(
        "onStatus",
        0.0,
        Value::Null,
        vec![Value::object([(
            "code",
            Value::string("NetStream.Play.Start"),
        )])],
    )
    .encode();
    wire.extend(whole(type0(5, 0, start.len(), 20, 1), 5, &start, 64));
    let video = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88].repeat(10);
    wire.extend(whole(type0(6, 40, video.len(), 9, 1), 6, &video, 64));
    wire.extend(type0(2, 0, 6, 4, 0));
    wire.extend([0, 1, 0, 0, 0, 1]);
    wire
}

/// Records for `ts_mux`: an H.264 sequence header, a keyframe, an AAC
/// AudioSpecificConfig and a frame.
fn mux_records() -> Vec<u8> {
    let mut avc_header = vec![0x17, 0, 0, 0, 0];
    avc_header.extend(
        prism_media::flv::avc_decoder_configuration_record(&[0x67, 0x42, 0, 0x1e], &[0x68, 0xce])
            .unwrap(),
    );
    let records: [(u8, u8, Vec<u8>); 4] = [
        (1, 0, avc_header),
        (
            1,
            0,
            vec![0x17, 1, 0, 0, 0x28, 0, 0, 0, 3, 0x65, 0x88, 0x84],
        ),
        (0, 0, vec![0xaf, 0, 0x12, 0x10]),
        (0, 21, vec![0xaf, 1, 0x21, 0x10, 0x04]),
    ];
    let mut wire = Vec::new();
    for (kind, step, body) in records {
        wire.extend([kind, step]);
        wire.extend((body.len() as u16).to_be_bytes());
        wire.extend(body);
    }
    wire
}

fn server_bomb() -> Vec<u8> {
    let mut body = Command::new("_result", 1.0, Value::Null, vec![])
        .encode()
        .to_vec();
    body.extend(strict_array_bomb(2_000));
    amf0_bomb(20, body)
}

/// The seeds for `target`, by file name.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "rtmp_server" | "rtmp_chunks" => {
            let mut amf3 = vec![0];
            amf3.extend(strict_array_bomb(2_000));
            vec![
                ("publish", publish_flow()),
                ("interleaved", interleaved()),
                ("extended_timestamps", extended_timestamps()),
                ("abort", abort_mid_message()),
                ("chunk_size_mid_message", chunk_size_mid_message()),
                ("short_after_unfinished", short_after_unfinished()),
                ("strict_array_bomb", amf0_bomb(20, strict_array_bomb(2_000))),
                ("amf3_bomb", amf0_bomb(17, amf3)),
                ("metadata_bomb", metadata_bomb()),
                ("huge_declaration", huge_declaration()),
                ("every_chunk_stream_id", every_chunk_stream_id()),
            ]
        }
        "rtmp_client" => vec![("replies", server_replies()), ("bomb", server_bomb())],
        "rtmp_play" => vec![("replies", play_replies()), ("bomb", server_bomb())],
        "ts_mux" => vec![("avc_aac", mux_records())],
        "amf0" => vec![
            ("connect", Command::new("connect", 1.0, Value::object([("app", Value::string("live"))]), vec![Value::StrictArray(vec![Value::Null])]).encode().to_vec()),
            ("strict_array_bomb", strict_array_bomb(2_000)),
            ("nesting", nesting(2_000)),
        ],
        "flv_tags" => vec![
            ("avc_header", vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x64, 0, 0x1f]),
            ("hevc_enhanced", b"\x90hvc1\x01\x01\x60".to_vec()),
            ("aac", vec![0xAF, 0, 0x12, 0x10]),
            // Multitrack: ManyTracks H.264 (track 1 then track 0), OneTrack
            // as FFmpeg 8 writes it, ManyTracksManyCodecs, audio, ModEx.
            ("multitrack_many", b"\x96\x11avc1\x01\x00\x00\x04\x00\x00\x00a\x00\x00\x00\x04\x00\x00\x28b".to_vec()),
            ("multitrack_one", b"\x96\x01avc1\x01\x00\x00\x00\x00\x00\x00\x02\x09\xf0".to_vec()),
            ("multitrack_codecs", b"\xa6\x23hvc1\x00\x00\x00\x02hhav01\x01\x00\x00\x02aa".to_vec()),
            ("multitrack_audio", b"\x95\x11mp4a\x00\x00\x00\x02\x21\x10\x01\x00\x00\x01\x21".to_vec()),
            ("multitrack_modex", b"\x97\x02\x00\x00\x05\x06\x01avc1\x00\x00\x00\x00z".to_vec()),
        ],
        "ts_remux" => vec![("pat", {
            let mut packet = vec![0x47, 0x40, 0, 0x10, 0, 0, 0xb0, 0x0d, 0, 1, 0xc1, 0, 0, 0, 1, 0xf0, 0];
            packet.resize(188, 0xff);
            packet
        })],
        "stream_id" => vec![
            ("plain", b"live_key".to_vec()),
            ("access_control", b"#!::r=live/key,m=publish".to_vec()),
            ("url", b"rtmps://a.example:443/app/key?x=1".to_vec()),
        ],
        "config" => vec![
            (
                "minimal",
                b"[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[[streams]]\nid = \"main\"\nkey = \"k-0123456789\"\n".to_vec(),
            ),
            (
                "cluster_node",
                b"[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[cluster]\nredis = \"redis://127.0.0.1:6379\"\nnode_id = \"node-a\"\nlease_ms = 5000\n".to_vec(),
            ),
            (
                "hooks",
                b"[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[auth]\nurl = \"https://auth.example.com/p?t=1\"\ntimeout_ms = 500\non_error = \"allow\"\nunknown_keys = true\n\n[[webhooks]]\nurl = \"http://[::1]:8080/e\"\nsecret = \"0123456789abcdef\"\nevents = [\"publish_*\", \"config_changed\"]\n\n[[streams]]\nid = \"main\"\nkey = \"k-0123456789\"\nauth = false\n".to_vec(),
            ),
        ],
        "record" => vec![
            ("show", record_show()),
            // A plain MP4 ffmpeg wrote, played back as a file: H.264 with
            // B-frames and AAC, edit lists, the index last. Made with
            // `ffmpeg -f lavfi -i testsrc=size=32x32:rate=10 -f lavfi -i
            // sine=sample_rate=8000 -t 0.4 -c:v libx264 -preset ultrafast
            // -bf 2 -g 4 -c:a aac -b:a 8k -fflags +bitexact -map_metadata -1`.
            (
                "ffmpeg_plain_mp4",
                include_bytes!("../seeds/ffmpeg-plain.mp4").to_vec(),
            ),
        ],
        "srt_handshake" => srt_handshakes(),
        "srt_sender" => srt_sender_seeds(),
        "srt_receiver" => srt_receiver_seeds(),
        _ => Vec::new(),
    }
}

/// An induction then libsrt's own conclusions (captured by srt-rs's
/// authors): plain, with a stream id, with key material; each datagram
/// framed as `srt_handshake` reads it (length / 8 in the low 6 bits).
fn srt_handshakes() -> Vec<(&'static str, Vec<u8>)> {
    use prism_ingest::srt_drive::{from_hex, induction_datagram, LIBSRT_CONCLUSIONS};
    let frame = |bytes: Vec<u8>| -> Vec<u8> {
        let mut bytes = bytes;
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        let mut framed = vec![(bytes.len() / 8) as u8];
        framed.extend(bytes);
        framed
    };
    LIBSRT_CONCLUSIONS
        .iter()
        .map(|(name, conclusion)| {
            let mut seed = frame(induction_datagram(1234));
            seed.extend(frame(from_hex(conclusion)));
            (*name, seed)
        })
        .collect()
}

/// A record of `srt_connection`'s input: a datagram (length / 8 in the
/// byte after the op, zero-padded to a multiple of 8).
fn srt_datagram(bytes: Vec<u8>) -> Vec<u8> {
    let mut bytes = bytes;
    bytes.resize(bytes.len().div_ceil(8) * 8, 0);
    let mut record = vec![0x00, (bytes.len() / 8) as u8];
    record.extend(bytes);
    record
}

/// Records of `srt_connection`'s input: the clock moves on 10 ms.
const SRT_TICK: u8 = 0x41;
/// The clock moves on 630 ms (past the latency, the NAK and ACK timers).
const SRT_LONG_TICK: u8 = 0x7f;
/// The local input closes.
const SRT_CLOSE: u8 = 0xc0;

fn srt_script(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    records.into_iter().flatten().collect()
}

/// What a receiving peer sends a Prism sender that holds ~570 packets:
/// ACKs and NAKs as libsrt sends them, the NAK of ten whole-space ranges
/// that once held a runtime thread for half a minute, ranges past what was
/// sent or reversed, a drop request, and every control type a peer may end
/// or disturb a session with.
fn srt_sender_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::srt_connection::wire::*;
    let hostile: Vec<u32> = (0..10).flat_map(|_| [0x8000_0000, 0x7fff_ffff]).collect();
    vec![
        (
            "acks",
            srt_script([
                srt_datagram(ack(1, 100)),
                vec![SRT_TICK],
                srt_datagram(control(ACK, 2, &[300])),
                vec![SRT_TICK],
                srt_datagram(ack(3, 570)),
                vec![0x8f, SRT_LONG_TICK],
            ]),
        ),
        (
            "naks",
            srt_script([
                srt_datagram(nak(&[5])),
                srt_datagram(nak(&[0x8000_0000 | 10, 20, 33])),
                vec![SRT_TICK],
                srt_datagram(ack(1, 40)),
            ]),
        ),
        ("whole_space_nak", srt_datagram(nak(&hostile))),
        (
            "naks_past_and_reversed",
            srt_script([
                srt_datagram(nak(&[0x8000_0000 | 1000, 5000])),
                srt_datagram(nak(&[0x8000_0000 | 500, 100])),
                srt_datagram(nak(&[0x8000_0000 | 0x7fff_fff0])),
            ]),
        ),
        (
            "drop_request_then_close",
            srt_script([
                srt_datagram(control(DROP_REQUEST, 3, &[10, 20])),
                vec![SRT_CLOSE, SRT_LONG_TICK],
            ]),
        ),
        (
            "keepalive_congestion_peer_error",
            srt_script([
                srt_datagram(control(KEEPALIVE, 0, &[])),
                srt_datagram(control(CONGESTION_WARNING, 0, &[])),
                srt_datagram(control(0x7fff, 0, &[1, 2])),
                srt_datagram(control(PEER_ERROR, 4000, &[])),
            ]),
        ),
        ("shutdown", srt_datagram(control(SHUTDOWN, 0, &[]))),
    ]
}

/// What a sending peer (an encoder, a pulled source) sends a Prism
/// receiver: data in order, with gaps that raise NAKs and late drops, far
/// ahead of the window, retransmitted, flagged encrypted with no key, and
/// control packets among them.
fn srt_receiver_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::srt_connection::wire::*;
    let ts = [0x47u8; 188];
    let in_order = (0..20).flat_map(|n| [srt_datagram(data(n, n + 1, &ts)), vec![SRT_TICK]]);
    vec![
        ("in_order", srt_script(in_order)),
        (
            "gaps",
            srt_script([
                srt_datagram(data(0, 1, &ts)),
                srt_datagram(data(1, 2, &ts)),
                srt_datagram(data(5, 6, &ts)),
                vec![SRT_TICK, SRT_TICK],
                srt_datagram(data(2, 3, &ts)),
                vec![SRT_LONG_TICK],
                srt_datagram(data(9, 10, &ts)),
                vec![SRT_LONG_TICK],
            ]),
        ),
        (
            "far_ahead_and_behind",
            srt_script([
                srt_datagram(data(0x7fff_fff0, 1, &ts)),
                srt_datagram(data(0, 1, &ts)),
                srt_datagram(data(0x4000_0000, 2, &ts)),
                vec![SRT_LONG_TICK],
            ]),
        ),
        (
            "drop_request_and_ack2",
            srt_script([
                srt_datagram(data(0, 1, &ts)),
                srt_datagram(control(DROP_REQUEST, 2, &[1, 0x7fff_ffff])),
                srt_datagram(control(ACK2, 1, &[])),
                vec![SRT_LONG_TICK],
            ]),
        ),
        (
            "retransmitted_and_encrypted_flags",
            srt_script([
                srt_datagram({
                    let mut packet = data(0, 1, &ts);
                    packet[4] |= 0x04; // retransmitted
                    packet
                }),
                srt_datagram({
                    let mut packet = data(1, 2, &ts);
                    packet[4] |= 0x08; // even key, and no key was agreed
                    packet
                }),
                vec![SRT_LONG_TICK],
            ]),
        ),
        (
            "control_then_shutdown",
            srt_script([
                srt_datagram(control(KEEPALIVE, 0, &[])),
                srt_datagram(ack(1, 0)),
                srt_datagram(nak(&[0])),
                srt_datagram(control(SHUTDOWN, 0, &[])),
            ]),
        ),
    ]
}

/// A short show in the `record` target's framing (kind, timestamp step in
/// 8 ms, length, body): an H.264 sequence header from x264, an AAC one,
/// then keyframes and inter frames with audio between, over two segments.
fn record_show() -> Vec<u8> {
    let sps: &[u8] = b"\x67\x42\xc0\x1e\xd9\x00\xa0\x2f\xf9\x70\x11\x00\x00\x03\x00\x01\x00\x00\x03\x00\x32\x0f\x16\x2e\x48";
    let pps: &[u8] = b"\x68\xcb\x83\xcb\x20";
    let record = prism_media::flv::avc_decoder_configuration_record(sps, pps).unwrap();
    let mut out = Vec::new();
    let mut push = |kind: u8, step: u8, body: &[u8]| {
        out.extend([kind, step, body.len() as u8]);
        out.extend_from_slice(body);
    };
    let mut header = vec![0x17, 0, 0, 0, 0];
    header.extend_from_slice(&record);
    push(0, 0, &header);
    push(1, 0, &[0xaf, 0, 0x12, 0x10]);
    for n in 0..150u32 {
        let key = n % 50 == 0;
        let frame = [
            if key { 0x17 } else { 0x27 },
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            2,
            if key { 0x65 } else { 0x41 },
            0x88,
        ];
        push(0, 5, &frame);
        push(1, 0, &[0xaf, 1, 0x21, 0x10]);
    }
    out
}
