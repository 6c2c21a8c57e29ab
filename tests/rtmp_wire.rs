//! End to end with the real binary: RTMP byte streams that Prism's own
//! writer never produces. A publisher that interleaves the chunks of its
//! audio and video messages, a destination server that interleaves its
//! control messages with the chunks of its replies, the hostile inputs that
//! used to panic a task or abort the daemon, and a stream key followed by
//! a query string. Every chunk header here is written by hand.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prism_media::MediaKind;
use prism_rtmp::handmade::{self, basic, strict_array_bomb, type0, type1, type2};
use prism_rtmp::{ChunkReader, Command, ReaderLimits, ServerEvent, ServerSession, Value};

use support::*;

const MAIN_KEY: &str = "live_wire_5e4d3c2b";
const OTHER_KEY: &str = "live_other_1a2b3c4d";
const CHUNK: usize = 128;

/// One whole message in 128-byte chunks.
fn whole(header: Vec<u8>, csid: u32, body: &[u8]) -> Vec<u8> {
    handmade::whole(header, csid, body, CHUNK)
}

fn command(csid: u32, msid: u32, name: &str, txn: f64, args: Vec<Value>) -> Vec<u8> {
    let body = Command::new(name, txn, Value::Null, args).encode();
    whole(type0(csid, 0, body.len(), 20, msid), csid, &body)
}

/// Reads from the server until `needle` shows up in what it sent.
fn read_until(stream: &mut TcpStream, needle: &[u8]) -> bool {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => return false,
        }
        if seen.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// Connects, handshakes and asks to publish `key` on stream 1; returns the
/// connection once Prism said `NetStream.Publish.Start`.
fn publish_by_hand(port: u16, key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    client_handshake(&mut stream).expect("handshake");
    let connect = Command::new(
        "connect",
        1.0,
        Value::object([
            ("app", Value::string("live")),
            (
                "tcUrl",
                Value::string(&format!("rtmp://127.0.0.1:{port}/live")),
            ),
        ]),
        vec![],
    )
    .encode();
    let mut wire = whole(type0(3, 0, connect.len(), 20, 0), 3, &connect);
    wire.extend(command(3, 0, "createStream", 2.0, vec![]));
    wire.extend(command(
        8,
        1,
        "publish",
        0.0,
        vec![Value::string(key), Value::string("live")],
    ));
    stream.write_all(&wire).unwrap();
    assert!(
        read_until(&mut stream, b"NetStream.Publish.Start"),
        "publish of the hand-built publisher was not accepted"
    );
    stream
}

/// A video payload: FLV video tag body, keyframe or not, `len` bytes.
fn video_frame(i: u32, keyframe: bool, len: usize) -> Vec<u8> {
    let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    body.extend((0..len - 5).map(|j| (j as u32).wrapping_mul(i + 3) as u8));
    body
}

fn audio_frame(i: u32) -> Vec<u8> {
    let mut body = vec![0xAF, 1];
    body.extend((0..298).map(|j| (j as u32 ^ i) as u8));
    body
}

/// Sends sequence headers, then `frames` video and audio messages whose
/// chunks alternate: video on csid 6, audio on csid 4, 128-byte chunks.
/// Video headers after the first are type 1, audio ones type 2 then
/// type 3 (the same delta again). Returns what was sent, per kind.
fn send_interleaved(stream: &mut TcpStream, frames: u32) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let video_header = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff];
    let audio_header = vec![0xAF, 0, 0x12, 0x10];
    let mut wire = whole(type0(6, 0, video_header.len(), 9, 1), 6, &video_header);
    wire.extend(whole(
        type0(4, 0, audio_header.len(), 8, 1),
        4,
        &audio_header,
    ));
    let (mut videos, mut audios) = (vec![video_header], vec![audio_header]);
    for i in 0..frames {
        let video = video_frame(i, i % 25 == 0, 900 + (i as usize * 37) % 3000);
        let audio = audio_frame(i);
        let video_head = if i == 0 {
            type0(6, 40, video.len(), 9, 1)
        } else {
            type1(6, 40, video.len(), 9)
        };
        let audio_head = match i {
            0 => type0(4, 43, audio.len(), 8, 1),
            1 => type2(4, 40),
            _ => basic(3, 4),
        };
        let mut v = video.chunks(CHUNK);
        let mut a = audio.chunks(CHUNK);
        wire.extend(video_head);
        wire.extend_from_slice(v.next().unwrap());
        wire.extend(audio_head);
        wire.extend_from_slice(a.next().unwrap());
        loop {
            let (nv, na) = (v.next(), a.next());
            if nv.is_none() && na.is_none() {
                break;
            }
            for (csid, chunk) in [(6, nv), (4, na)] {
                if let Some(chunk) = chunk {
                    wire.extend(basic(3, csid));
                    wire.extend_from_slice(chunk);
                }
            }
        }
        videos.push(video);
        audios.push(audio);
        if i % 10 == 9 {
            stream.write_all(&wire).unwrap();
            wire.clear();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    stream.write_all(&wire).unwrap();
    (videos, audios)
}

fn payloads(recorded: &Recorded, kind: MediaKind) -> Vec<Vec<u8>> {
    recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.kind == kind)
        .map(|m| m.payload.to_vec())
        .collect()
}

fn one_stream_config(rtmp_port: u16, destinations: &[(&str, u16)]) -> String {
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[[streams]]\nid = \"main\"\nkey = \"{MAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    for (id, port) in destinations {
        config.push_str(&format!(
            "\n  [[streams.destinations]]\n  id = \"{id}\"\n  url = \"rtmp://127.0.0.1:{port}/live/sink-key\"\n"
        ));
    }
    config
}

#[test]
fn an_interleaving_publisher_is_relayed_byte_identical() {
    let scratch = Scratch::new("wire-interleaved");
    let recorded: Recorded = Arc::new(Mutex::new(Vec::new()));
    let sink = FakeDestination::recording_rtmp(Arc::clone(&recorded));
    let rtmp_port = free_port();
    let mut prism = Prism::start(
        &scratch,
        &one_stream_config(rtmp_port, &[("sink", sink.port)]),
        rtmp_port,
    );
    let mut stream = publish_by_hand(rtmp_port, MAIN_KEY);
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let (videos, audios) = send_interleaved(&mut stream, 150);
    // Wait until the sink has everything, then end the publish.
    let deadline = Instant::now() + Duration::from_secs(15);
    // (A shortfall shows as the first differing message below.)
    while payloads(&recorded, MediaKind::Video).len() < videos.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    let got = payloads(&recorded, MediaKind::Video);
    if let Some(i) = (0..videos.len()).find(|&i| got.get(i) != videos.get(i)) {
        panic!(
            "video message {i} of {} differs: got {:?} sent {:?}",
            videos.len(),
            got.get(i).map(|p| (p.len(), &p[..5.min(p.len())])),
            videos.get(i).map(|p| (p.len(), &p[..5])),
        );
    }
    assert!(
        payloads(&recorded, MediaKind::Audio) == audios,
        "an audio payload changed, was lost or added"
    );
    let stamps: Vec<u64> = recorded
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.kind == MediaKind::Video)
        .map(|m| m.timestamp)
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "{stamps:?}");
    drop(stream);
    prism.terminate();
    assert!(!prism.log().contains("malformed"), "{}", prism.log());
}

/// Serves a publish with Prism's server session, but sends every reply
/// re-chunked at 64 bytes with a ping and a window acknowledgement size
/// between each two of its chunks; counts the video frames it receives.
fn interleaving_server(socket: &TcpStream, frames: &AtomicUsize) -> Option<()> {
    let mut socket_w = socket;
    let mut input = server_handshake(socket)?;
    let _ = socket.set_read_timeout(Some(Duration::from_secs(30)));
    let mut session = ServerSession::new(Default::default());
    let mut out = prism_rtmp::ChunkWriter::new(4096);
    let mut replies = ChunkReader::new(ReaderLimits::default());
    let mut events = Vec::new();
    let mut set_chunk_size = type0(2, 0, 4, 1, 0);
    set_chunk_size.extend(64u32.to_be_bytes());
    socket_w.write_all(&set_chunk_size).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        session.handle_input(&input, &mut out, &mut events).ok()?;
        for event in events.drain(..) {
            match event {
                ServerEvent::PublishRequested { .. } => session.accept_publish(&mut out),
                ServerEvent::Media(m) if m.type_id == 9 => {
                    frames.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let mut wire = Vec::new();
        // The session's own Set Chunk Size is applied by the reader and not
        // returned: this server announced 64 instead.
        let messages = prism_rtmp::connection::read_messages(&mut replies, &out.to_vec()).ok()?;
        for (n, message) in messages.into_iter().enumerate() {
            let csid = if message.type_id == 20 { 3 } else { 2 };
            let mut header = type0(
                csid,
                0,
                message.payload.len(),
                message.type_id,
                message.stream_id,
            );
            for (i, chunk) in message.payload.chunks(64).enumerate() {
                wire.extend(if i == 0 {
                    std::mem::take(&mut header)
                } else {
                    basic(3, csid)
                });
                wire.extend_from_slice(chunk);
                // A ping request and a window size on csid 2, mid-message.
                let mut ping = type0(2, 0, 6, 4, 0);
                ping.extend([0, 6]);
                ping.extend((n as u32 * 100 + i as u32).to_be_bytes());
                wire.extend(ping);
                let mut window = type0(2, 0, 4, 5, 0);
                window.extend(5_000_000u32.to_be_bytes());
                wire.extend(window);
            }
        }
        out.clear();
        socket_w.write_all(&wire).ok()?;
        let n = socket_w.read(&mut buf).ok().filter(|&n| n > 0)?;
        input = buf[..n].to_vec();
    }
}

#[test]
fn a_destination_server_that_interleaves_its_control_messages_receives_the_stream() {
    require_ffmpeg();
    let scratch = Scratch::new("wire-server");
    let frames = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&frames);
    let server =
        FakeDestination::start(move |socket| interleaving_server(socket, &counted).is_some());
    let rtmp_port = free_port();
    let mut prism = Prism::start(
        &scratch,
        &one_stream_config(rtmp_port, &[("interleaver", server.port)]),
        rtmp_port,
    );
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(MAIN_KEY), 6, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = frames.load(Ordering::Relaxed);
    // 6 s at 25 fps.
    assert!(
        got >= 149,
        "the interleaving server got {got} video frames:\n{}",
        prism.log()
    );
    let log = prism.log();
    assert!(!log.contains("destination failed"), "{log}");
    prism.terminate();
}

/// One hostile connection: handshake, then `wire`; holds it open until
/// Prism closes it or `hold` passes.
fn hostile(port: u16, wire: &[u8], hold: Duration) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    client_handshake(&mut stream)?;
    let _ = stream.set_write_timeout(Some(hold));
    let _ = stream.write_all(wire);
    Some(stream)
}

/// A destination server that answers `connect` with the nesting bomb.
fn bomb_answering_server(socket: &TcpStream) -> Option<()> {
    let mut socket_w = socket;
    server_handshake(socket)?;
    let mut body = Command::new("_result", 1.0, Value::Null, vec![])
        .encode()
        .to_vec();
    body.extend(strict_array_bomb(5_000));
    socket_w
        .write_all(&whole(type0(3, 0, body.len(), 20, 0), 3, &body))
        .ok()?;
    let mut sink = [0u8; 4096];
    while matches!(socket_w.read(&mut sink), Ok(n) if n > 0) {}
    Some(())
}

#[test]
fn hostile_rtmp_input_costs_a_live_show_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("wire-hostile");
    let (rtmp_port, sink_port, metrics_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("show.flv");
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let bomb_server = FakeDestination::start(|socket| bomb_answering_server(socket).is_some());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{MAIN_KEY}\"\nreconnect_grace_s = 0\n\n\
           [[streams.destinations]]\n  id = \"show\"\n  url = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n\n\
           [[streams.destinations]]\n  id = \"bomber\"\n  url = \"rtmp://127.0.0.1:{}/live/x\"\n\n\
         [[streams]]\nid = \"other\"\nkey = \"{OTHER_KEY}\"\nreconnect_grace_s = 0\n",
        bomb_server.port
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(MAIN_KEY), 14, scratch.file("pub.log"));
    prism.wait_for_log("destination=show", Duration::from_secs(10));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let baseline_kib = prism.rss_kib();
    let hold = Duration::from_secs(3);
    let mut held = Vec::new();

    // 2: an unfinished message on csid 3, a 10-byte one on csid 4, then
    // type-3 chunks on csid 4 (the old reader computed 10 - 128).
    let mut wire = type0(3, 0, 1000, 20, 0);
    wire.extend([0u8; 128]);
    wire.extend(type0(4, 0, 10, 9, 1));
    wire.extend([0u8; 10]);
    for _ in 0..20 {
        wire.extend(basic(3, 4));
        wire.extend([0u8; 128]);
    }
    held.extend(hostile(rtmp_port, &wire, hold));
    // 3: the strict-array bomb in connect, AMF0 and AMF3 (type 17 behind a zero).
    let bomb = strict_array_bomb(5_000);
    held.extend(hostile(
        rtmp_port,
        &whole(type0(3, 0, bomb.len(), 20, 0), 3, &bomb),
        hold,
    ));
    let mut amf3 = vec![0];
    amf3.extend(&bomb);
    held.extend(hostile(
        rtmp_port,
        &whole(type0(3, 0, amf3.len(), 17, 0), 3, &amf3),
        hold,
    ));
    // And plain nesting, with no marker to stop at: refused at the depth cap.
    let mut nested = bomb[..bomb.len() - 5_000 * 4 - 6].to_vec();
    nested.extend(handmade::nesting(5_000));
    held.extend(hostile(
        rtmp_port,
        &whole(type0(3, 0, nested.len(), 20, 0), 3, &nested),
        hold,
    ));
    // 48 connections that each declare a 16 MiB message and send all but
    // its last byte (the declaration is refused before anything is held).
    let body = vec![0x27u8; 16 * 1024 * 1024 - 2];
    let declared = whole(type0(6, 0, body.len() + 1, 9, 1), 6, &body);
    let big: Vec<_> = (0..48)
        .map(|_| {
            let declared = declared.clone();
            std::thread::spawn(move || hostile(rtmp_port, &declared, Duration::from_secs(3)))
        })
        .collect();
    // Connections that name every chunk stream id: unfinished messages on
    // each, and zero-length ones (a header state each).
    let mut every_csid = Vec::new();
    let mut empty_messages = Vec::new();
    for csid in 3..65_600u32 {
        // One whole 128-byte chunk of a 200-byte message: left unfinished.
        every_csid.extend(type0(csid, 0, 200, 9, 1));
        every_csid.extend([0u8; CHUNK]);
        empty_messages.extend(type0(csid, 0, 0, 9, 1));
    }
    held.extend(hostile(rtmp_port, &every_csid, hold));
    held.extend(hostile(rtmp_port, &empty_messages, hold));
    // The onMetaData variant, from a publisher with a key.
    let mut publisher_with_key = publish_by_hand(rtmp_port, OTHER_KEY);
    let mut metadata = vec![2, 0, 13];
    metadata.extend_from_slice(b"@setDataFrame");
    metadata.extend_from_slice(&[2, 0, 10]);
    metadata.extend_from_slice(b"onMetaData");
    metadata.extend_from_slice(&[0x0a, 0, 0, 0, 1, 0x09]);
    metadata.extend(handmade::nesting(5_000));
    let _ = publisher_with_key.write_all(&whole(type0(5, 0, metadata.len(), 18, 1), 5, &metadata));
    for handle in big {
        held.extend(handle.join().unwrap());
    }
    let peak_kib = prism.peak_rss_kib();
    drop(held);
    drop(publisher_with_key);

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 14.0);
    let frames = video_frames(&out);
    assert!(frames >= 349, "the show lost frames: {frames} of 350");

    // A new publisher gets in afterwards.
    let mut late = Ffmpeg::publisher(&prism.publish_url(OTHER_KEY), 2, scratch.file("late.log"));
    assert!(
        late.wait(Duration::from_secs(20)).success(),
        "{}",
        late.log()
    );
    let log = prism.log();
    assert!(
        log.matches("publish started").count() >= 2,
        "the late publisher was not accepted:\n{log}"
    );
    // The anonymous connections could hold at most 8 partial messages of
    // 64 KiB and a 64 KiB read buffer each; 54 of them, plus the
    // publisher's own (bounded by max_message_kib), plus slack for the
    // allocator. Measured: a few MiB over the baseline.
    let bound_kib = baseline_kib + 54 * (8 * 64 + 64) + 16 * 1024;
    assert!(
        peak_kib < bound_kib,
        "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB (baseline {baseline_kib} KiB)"
    );
    eprintln!("hostile input: baseline RSS {baseline_kib} KiB, peak {peak_kib} KiB");
    let (_, metrics) = http_get(metrics_port, "/metrics");
    // The 48 declarations, every chunk stream id twice, the plain nesting.
    let limit_hits = metric(
        &metrics,
        "prism_ingest_limit_hits_total",
        &[("limit", "message_bounds")],
    );
    assert!(
        limit_hits.unwrap_or(0.0) >= 51.0,
        "limit hits not counted:\n{metrics}"
    );
    assert!(log.contains("destination=bomber"), "{log}");
    let (status, _) = prism.terminate();
    assert!(status.success(), "prism did not exit cleanly");
    let log = prism.log();
    assert!(!log.contains("panicked"), "a task panicked:\n{log}");
    assert!(
        log.contains("nested deeper than"),
        "no nesting bomb was refused:\n{log}"
    );
    prism.assert_log_free_of(&[MAIN_KEY, OTHER_KEY]);
}

#[test]
fn a_stream_key_with_a_query_string_is_accepted_as_the_key() {
    require_ffmpeg();
    let scratch = Scratch::new("wire-query");
    let sink_port = free_port();
    let out = scratch.file("query.flv");
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "sink-key", &out);
    let rtmp_port = free_port();
    let mut prism = Prism::start(
        &scratch,
        &one_stream_config(rtmp_port, &[("sink", sink_port)]),
        rtmp_port,
    );
    let url = format!(
        "{}?bandwidthtest=true&token=hunter2",
        prism.publish_url(MAIN_KEY)
    );
    let mut publisher = Ffmpeg::publisher(&url, 4, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 4.0);
    prism.terminate();
    let log = prism.log();
    assert!(log.contains("arguments=bandwidthtest,token"), "{log}");
    assert!(!log.contains("unknown stream key"), "{log}");
    prism.assert_log_free_of(&[MAIN_KEY, "hunter2"]);
}

/// An encoder that stops cleanly (`FCUnpublish`, `deleteStream`) and
/// publishes again on the same connection, within `publish_timeout_s` of
/// the stop but later than that after the connection was accepted: the
/// second publish is accepted, and the stop is not counted as a timeout.
#[test]
fn a_clean_unpublish_then_a_republish_on_the_same_connection() {
    let scratch = Scratch::new("wire-republish");
    let (rtmp_port, metrics_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\npublish_timeout_s = 2\nhandshake_timeout_s = 2\n\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{MAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut stream = publish_by_hand(rtmp_port, MAIN_KEY);
    let (video, _) = send_interleaved(&mut stream, 10);
    assert!(!video.is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    let mut stop = command(3, 0, "FCUnpublish", 5.0, vec![Value::string(MAIN_KEY)]);
    stop.extend(command(8, 1, "deleteStream", 0.0, vec![Value::Number(1.0)]));
    stream.write_all(&stop).unwrap();
    prism.wait_for_log("the encoder unpublished", Duration::from_secs(5));
    // 2.5 s after the accept, 1 s after the stop.
    std::thread::sleep(Duration::from_secs(1));
    let mut again = command(3, 0, "createStream", 6.0, vec![]);
    again.extend(command(
        8,
        1,
        "publish",
        0.0,
        vec![Value::string(MAIN_KEY), Value::string("live")],
    ));
    stream.write_all(&again).unwrap();
    assert!(
        read_until(&mut stream, b"NetStream.Publish.Start"),
        "the second publish on the connection was refused:\n{}",
        prism.log()
    );
    send_interleaved(&mut stream, 10);
    let metrics = http_get(metrics_port, "/metrics").1;
    let timeouts = metric(
        &metrics,
        "prism_ingest_publish_rejected_total",
        &[("reason", "timeout")],
    )
    .unwrap_or(0.0);
    assert_eq!(timeouts, 0.0, "a clean stop was counted as a timeout");
    // Stopped again, the encoder lets the connection sit: it is closed
    // after publish_timeout_s, still without a refusal counted.
    stream.write_all(&stop).unwrap();
    assert!(!read_until(&mut stream, b"never sent"));
    let log = prism.log();
    assert_eq!(log.matches("the encoder unpublished").count(), 2, "{log}");
    let metrics = http_get(metrics_port, "/metrics").1;
    let refused = metric(
        &metrics,
        "prism_ingest_publish_rejected_total",
        &[("reason", "timeout")],
    );
    assert_eq!(refused.unwrap_or(0.0), 0.0, "{metrics}");
}

/// Reads until the server closes the connection (true), or `within` passes
/// with it still open (false). Whatever the server sends meanwhile is read
/// and dropped.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

/// A live publisher that keeps sending, even slowly, is never taken for a
/// silent one; one that goes silent is dropped after `idle_timeout_s`, and
/// not long after.
#[test]
fn a_live_publisher_is_dropped_after_the_idle_timeout_of_silence_and_not_before() {
    let scratch = Scratch::new("wire-idle");
    let rtmp_port = free_port();
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\nidle_timeout_s = 2\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{MAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut stream = publish_by_hand(rtmp_port, MAIN_KEY);
    // An audio frame every 700 ms for twice the timeout: each one must move
    // the deadline on.
    let mut last_sent = Instant::now();
    for n in 0..9u32 {
        let audio = audio_frame(n);
        stream
            .write_all(&whole(type0(4, n * 700, audio.len(), 8, 1), 4, &audio))
            .unwrap();
        last_sent = Instant::now();
        assert!(
            !closed_within(&mut stream, Duration::from_millis(700)),
            "dropped while sending, {} ms in:\n{}",
            n * 700,
            prism.log()
        );
    }
    assert!(
        closed_within(&mut stream, Duration::from_secs(6)),
        "a silent publisher was kept:\n{}",
        prism.log()
    );
    let after = last_sent.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "dropped {after:?} into the silence, before the 2 s timeout"
    );
    prism.wait_for_log("no data for 2 s", Duration::from_secs(2));
}

/// A stream removed through the admin API while an RTMP encoder publishes
/// to it closes that encoder's connection, and says why.
#[test]
fn removing_a_stream_closes_its_live_rtmp_publisher() {
    const TOKEN: &str = "wire-admin-token-0123456789";
    let scratch = Scratch::new("wire-removed");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{MAIN_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut stream = publish_by_hand(rtmp_port, MAIN_KEY);
    send_interleaved(&mut stream, 10);
    assert!(!closed_within(&mut stream, Duration::from_millis(300)));
    let (status, body) = http(admin_port, "DELETE", "/v1/streams/main", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    assert!(
        closed_within(&mut stream, Duration::from_secs(5)),
        "the publisher of a removed stream was kept:\n{}",
        prism.log()
    );
    prism.wait_for_log(
        "publish ended: the stream was removed",
        Duration::from_secs(2),
    );
}
