//! End to end: an enhanced-RTMP publisher (HEVC, FourCC `hvc1`) through
//! Prism to a destination: every video payload arrives byte-identical, in
//! order, starting with the HEVC sequence start.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prism_ingest::remux::Remuxer;
use prism_ingest::ts::TsDemuxer;
use prism_media::{MediaKind, MediaMessage};

use support::*;

const STREAM_KEY: &str = "live_hevc_0f1e2d3c";

/// An enhanced-RTMP HEVC + AAC stream: ffmpeg makes HEVC in MPEG-TS, Prism's
/// own remuxer turns it into `hvc1` FLV messages (ffmpeg 5.1 cannot write
/// enhanced FLV itself).
fn enhanced_hevc_messages(scratch: &Scratch) -> Vec<MediaMessage> {
    let ts = scratch.file("hevc.ts");
    Clip::new("testsrc=size=320x240:rate=25")
        .codec("libx265")
        .encode("mpegts", &ts)
        .unwrap();
    let bytes = std::fs::read(&ts).unwrap();
    let (mut demuxer, mut remuxer) = (TsDemuxer::new(), Remuxer::new());
    let (mut frames, mut messages) = (Vec::new(), Vec::new());
    demuxer.push(&bytes, &mut frames);
    for frame in frames {
        remuxer.push(frame, &mut messages);
    }
    messages
}

#[test]
fn hevc_over_enhanced_rtmp_arrives_byte_identical() {
    require_ffmpeg();
    let scratch = Scratch::new("enhanced");
    let sent = enhanced_hevc_messages(&scratch);
    assert_eq!(
        &sent
            .iter()
            .find(|m| m.kind == MediaKind::Video)
            .unwrap()
            .payload[..5],
        b"\x90hvc1"
    );

    let recorded = Arc::new(Mutex::new(Vec::new()));
    let sink = FakeDestination::recording_rtmp(Arc::clone(&recorded));
    let rtmp_port = free_port();
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[[streams]]\nid = \"main\"\nkey = \"{STREAM_KEY}\"\nreconnect_grace_s = 0\n\n\
         [[streams.destinations]]\nid = \"youtube-like\"\nurl = \"rtmp://127.0.0.1:{}/live2/hevc-key\"\n",
        sink.port
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(publish_paced(&prism.publish_url(STREAM_KEY), &sent, 0));
    prism.wait_for_log("publish stopped", Duration::from_secs(10));
    // The destination is unpublished and closed once its queue drains.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !prism.log().contains("destination=youtube-like") || recorded.lock().unwrap().len() < 10 {
        assert!(std::time::Instant::now() < deadline, "nothing recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));

    let video = |messages: &[MediaMessage]| -> Vec<bytes::Bytes> {
        messages
            .iter()
            .filter(|m| m.kind == MediaKind::Video)
            .map(|m| m.payload.clone())
            .collect()
    };
    let sent_video = video(&sent);
    let got_video = video(&recorded.lock().unwrap());
    assert_eq!(
        got_video.len(),
        sent_video.len(),
        "video messages lost or added"
    );
    assert!(
        got_video == sent_video,
        "a video payload changed on the way"
    );
    assert!(
        got_video[1][0] & 0xf0 == 0x90,
        "first frame after the sequence start is an enhanced keyframe"
    );
    prism.terminate();
    prism.assert_log_free_of(&[STREAM_KEY, "hevc-key"]);
}
