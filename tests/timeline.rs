//! End to end: publisher clocks that wrap. ffmpeg's FLV muxer keeps 31 bits
//! of timestamp, so an ffmpeg publish wraps to 0 after 24.8 days live;
//! `-output_ts_offset` puts a publish just under, and across, that point at
//! once. RTMP's own 32-bit timestamps wrap after 49.7 days: a test publisher
//! sends ffmpeg's FLV tags stamped across 2^32 ms, with extended
//! timestamps. Each destination records the whole show, monotonic and
//! decodable.

mod support;

use std::time::Duration;

use bytes::Bytes;
use prism_media::MediaMessage;

use support::*;

const SECONDS: u32 = 10;
/// 2^31 ms in seconds, less a little: the first publish ends just under it.
const UNDER_2_31_S: &str = "2147470";
/// 4.6 s before 2^31 ms: the second publish wraps in its middle.
const ACROSS_2_31_S: &str = "2147479";
/// 4.5 s before 2^32 ms, for the 32-bit publisher.
const ACROSS_2_32_MS: u64 = (1 << 32) - 4_500;

/// The tags of an FLV file, as ffmpeg wrote them.
fn flv_tags(bytes: &[u8]) -> Vec<MediaMessage> {
    assert!(bytes.starts_with(b"FLV"), "not an FLV file");
    prism_media::flv::file_tags(&Bytes::copy_from_slice(bytes)).collect()
}

#[test]
fn publisher_clocks_across_two_to_the_31_and_32_reach_destinations_whole() {
    require_ffmpeg();
    let scratch = Scratch::new("timeline");
    let rtmp_port = free_port();
    let cases = ["under31", "across31", "across32"];
    let mut receivers = Vec::new();
    let mut config = format!("[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n");
    for case in cases {
        let port = free_port();
        let out = scratch.file(&format!("{case}.flv"));
        receivers.push((Ffmpeg::receiver(port, "live", case, &out), out));
        config += &format!(
            "\n[[streams]]\nid = \"{case}\"\nkey = \"live_timeline_{case}\"\nreconnect_grace_s = 0\n\n  \
             [[streams.destinations]]\n  id = \"d\"\n  url = \"rtmp://127.0.0.1:{port}/live/{case}\"\n"
        );
    }
    let prism = Prism::start(&scratch, &config, rtmp_port);

    // ffmpeg's FLV tags for the 32-bit publisher, made before the clock runs.
    let flv = scratch.file("source.flv");
    let mut source = Ffmpeg::publisher(
        &flv.display().to_string(),
        SECONDS,
        scratch.file("source.log"),
    );
    assert!(
        source.wait(Duration::from_secs(30)).success(),
        "{}",
        source.log()
    );
    let tags = flv_tags(&std::fs::read(&flv).unwrap());

    let mut under = Ffmpeg::publisher_with_output_options(
        &prism.publish_url("live_timeline_under31"),
        SECONDS,
        &["-output_ts_offset", UNDER_2_31_S],
        scratch.file("under31.log"),
    );
    let mut across = Ffmpeg::publisher_with_output_options(
        &prism.publish_url("live_timeline_across31"),
        SECONDS,
        &["-output_ts_offset", ACROSS_2_31_S],
        scratch.file("across31.log"),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(publish_paced(
        &prism.publish_url("live_timeline_across32"),
        &tags,
        ACROSS_2_32_MS,
    ));
    for publisher in [&mut under, &mut across] {
        assert!(
            publisher.wait(Duration::from_secs(30)).success(),
            "{}",
            publisher.log()
        );
    }
    for (receiver, out) in &mut receivers {
        receiver.wait(Duration::from_secs(20));
        let probe = assert_good_recording(out, SECONDS as f64);
        println!("{}: {probe:?}", out.display());
    }
    assert!(!prism.log().contains("panicked"));
}
