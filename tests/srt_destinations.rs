//! End to end: SRT destinations. Prism calls SRT listeners (ffmpeg and
//! libsrt's `srt-live-transmit`, their default options, one with a
//! passphrase) and sends the show as MPEG-TS that decodes whole; a receiver
//! killed and restarted is fed again within seconds while an RTMP
//! destination of the same stream loses nothing.

mod support;

use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_srt_out_7f8e9d";
const PASSPHRASE: &str = "srt-out-passphrase-42";

fn config(rtmp_port: u16, destinations: &[String]) -> String {
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[fanout]\nconnect_timeout_s = 3\n\n[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n"
    );
    for (n, url) in destinations.iter().enumerate() {
        config += &format!("\n  [[streams.destinations]]\n  id = \"d{n}\"\n  url = \"{url}\"\n");
    }
    config
}

#[test]
fn srt_listeners_receive_a_show_that_decodes_whole() {
    require_ffmpeg();
    let scratch = Scratch::new("srt-out");
    let rtmp_port = free_port();
    let (ffmpeg_port, slt_port, rtmp_receiver_port) = (free_port(), free_port(), free_port());
    let ffmpeg_out = scratch.file("ffmpeg.ts");
    let slt_out = scratch.file("slt.ts");
    let rtmp_out = scratch.file("rtmp.flv");
    let mut ffmpeg_receiver = Ffmpeg::srt_receiver(ffmpeg_port, Some(PASSPHRASE), &ffmpeg_out);
    let mut slt_receiver = Ffmpeg::srt_live_transmit_receiver(slt_port, None, &slt_out);
    let mut rtmp_receiver = Ffmpeg::receiver(rtmp_receiver_port, "live", "x", &rtmp_out);
    let destinations = [
        format!("srt://127.0.0.1:{ffmpeg_port}?passphrase={PASSPHRASE}"),
        format!("srt://127.0.0.1:{slt_port}?streamid=ignored-by-the-listener"),
        format!("rtmp://127.0.0.1:{rtmp_receiver_port}/live/x"),
    ];
    let prism = Prism::start(&scratch, &config(rtmp_port, &destinations), rtmp_port);
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 8, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );

    // Prism ends the SRT sessions when the publish ends; the listeners
    // then finish their files.
    ffmpeg_receiver.wait(Duration::from_secs(15));
    rtmp_receiver.wait(Duration::from_secs(15));
    slt_receiver.wait(Duration::from_secs(15));
    for out in [&ffmpeg_out, &slt_out, &rtmp_out] {
        assert_good_recording(out, 8.0);
    }
    prism.assert_log_free_of(&[PASSPHRASE, "ignored-by-the-listener"]);
}

/// An HD show, as a real encoder sends it: its keyframes are larger than
/// the send buffer srt-tokio once had by default (32 packets), whose
/// overflow stopped the session sending anything more while it stayed
/// connected.
#[test]
fn an_hd_show_reaches_libsrt_whole() {
    require_ffmpeg();
    let scratch = Scratch::new("srt-out-hd");
    let rtmp_port = free_port();
    let slt_port = free_port();
    let slt_out = scratch.file("slt.ts");
    let mut slt_receiver = Ffmpeg::srt_live_transmit_receiver(slt_port, None, &slt_out);
    let destinations = [format!("srt://127.0.0.1:{slt_port}")];
    let prism = Prism::start(&scratch, &config(rtmp_port, &destinations), rtmp_port);
    let mut publisher = Ffmpeg::hd_publisher(&prism.publish_url(KEY), 8, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    slt_receiver.wait(Duration::from_secs(15));
    // 8 s at 2 to 4 Mbit/s: megabytes, all of which decode.
    let received = std::fs::metadata(&slt_out).unwrap().len();
    assert!(
        received > 1_000_000,
        "libsrt received {received} bytes:\n{}",
        prism.log()
    );
    assert_good_recording(&slt_out, 8.0);
}

#[test]
fn a_restarted_srt_receiver_is_fed_again_within_5_s_while_rtmp_loses_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("srt-out-restart");
    let rtmp_port = free_port();
    let (srt_port, rtmp_receiver_port) = (free_port(), free_port());
    let first_out = scratch.file("first.ts");
    let second_out = scratch.file("second.ts");
    let rtmp_out = scratch.file("rtmp.flv");
    let mut srt_receiver = Ffmpeg::srt_receiver(srt_port, None, &first_out);
    let mut rtmp_receiver = Ffmpeg::receiver(rtmp_receiver_port, "live", "x", &rtmp_out);
    let destinations = [
        format!("srt://127.0.0.1:{srt_port}"),
        format!("rtmp://127.0.0.1:{rtmp_receiver_port}/live/x"),
    ];
    let prism = Prism::start(&scratch, &config(rtmp_port, &destinations), rtmp_port);
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 20, scratch.file("pub.log"));

    let srt_sessions = |prism: &Prism| {
        prism
            .log()
            .lines()
            .filter(|l| l.contains("destination live") && l.contains("destination=d0"))
            .count()
    };
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(srt_sessions(&prism), 1, "{}", prism.log());
    // The receiver dies without a word (SIGKILL: no SRT shutdown) and comes
    // back a second later on the same port.
    srt_receiver.kill();
    std::thread::sleep(Duration::from_secs(1));
    let restarted = Instant::now();
    let mut srt_receiver = Ffmpeg::srt_receiver(srt_port, None, &second_out);
    // (ffmpeg probes its input for seconds before it writes a byte, so
    // Prism's word is the clock; the recording is checked at the end.)
    let fed_again = loop {
        if srt_sessions(&prism) == 2 {
            break restarted.elapsed();
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(10),
            "the restarted receiver got nothing in 10 s:\n{}",
            prism.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("restarted SRT receiver fed again after {fed_again:?}");
    assert!(
        fed_again <= Duration::from_secs(5),
        "fed again after {fed_again:?}"
    );

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    srt_receiver.wait(Duration::from_secs(15));
    rtmp_receiver.wait(Duration::from_secs(15));
    // The RTMP destination never noticed: one connection, the whole show.
    let log = prism.log();
    let rtmp_sessions = log
        .lines()
        .filter(|l| l.contains("destination live") && l.contains("d1"))
        .count();
    assert_eq!(rtmp_sessions, 1, "{log}");
    assert_good_recording(&rtmp_out, 20.0);
    let second = probe_duration(&second_out);
    assert!(second > 8.0, "the restarted receiver got {second} s");
    assert_good_recording(&second_out, second);
}

#[test]
fn an_encoder_replaced_within_the_grace_is_one_continuous_ts_show() {
    require_ffmpeg();
    let scratch = Scratch::new("srt-out-grace");
    let rtmp_port = free_port();
    let srt_port = free_port();
    let out = scratch.file("grace.ts");
    let mut receiver = Ffmpeg::srt_receiver(srt_port, None, &out);
    let config = config(rtmp_port, &[format!("srt://127.0.0.1:{srt_port}")])
        .replace("key = \"", "reconnect_grace_s = 10\nkey = \"");
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut first = Ffmpeg::publisher(&prism.publish_url(KEY), 30, scratch.file("pub1.log"));
    std::thread::sleep(Duration::from_secs(6));
    first.kill();
    std::thread::sleep(Duration::from_secs(1));
    let mut second = Ffmpeg::publisher(&prism.publish_url(KEY), 6, scratch.file("pub2.log"));
    assert!(
        second.wait(Duration::from_secs(30)).success(),
        "{}",
        second.log()
    );
    receiver.wait(Duration::from_secs(30));
    // One SRT session across both encoders; the TS timeline runs on (the
    // second encoder's clock is rebased), so it decodes as one show.
    assert_one_continuous_show(&prism, &out, 10.0);
}

/// An encoder sending codecs MPEG-TS does not carry (Flash-era Sorenson
/// H.263 video and MP3 audio, as ffmpeg's FLV muxer writes them) gets a
/// warning that names them, in the log and the API, for the stream's SRT
/// destinations; its RTMP destination is fed as sent.
#[test]
fn codecs_srt_destinations_cannot_get_are_named_in_a_warning() {
    require_ffmpeg();
    const TOKEN: &str = "srt-out-token-0123456789";
    let scratch = Scratch::new("srt-out-codecs");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let (srt_port, rtmp_receiver_port) = (free_port(), free_port());
    let rtmp_out = scratch.file("rtmp.flv");
    let mut srt_receiver = Ffmpeg::srt_receiver(srt_port, None, &scratch.file("srt.ts"));
    let mut rtmp_receiver = Ffmpeg::receiver(rtmp_receiver_port, "live", "x", &rtmp_out);
    let destinations = [
        format!("srt://127.0.0.1:{srt_port}"),
        format!("rtmp://127.0.0.1:{rtmp_receiver_port}/live/x"),
    ];
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n{}",
        config(rtmp_port, &destinations)
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher = Ffmpeg::publisher_with_output_options(
        &prism.publish_url(KEY),
        6,
        &["-c:v", "flv", "-c:a", "libmp3lame"],
        scratch.file("pub.log"),
    );
    prism.wait_for_log("SRT destinations get no mp3 audio", Duration::from_secs(10));
    prism.wait_for_log(
        "SRT destinations get no sorenson-h263 video",
        Duration::from_secs(5),
    );
    let stream = api_json(admin_port, "/v1/streams/main", Some(TOKEN));
    let warnings = stream["warnings"].to_string();
    assert!(
        warnings.contains("no mp3 audio") && warnings.contains("no sorenson-h263 video"),
        "{stream}"
    );
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    rtmp_receiver.wait(Duration::from_secs(15));
    srt_receiver.kill();
    let log = prism.log();
    assert_eq!(
        log.matches("SRT destinations get no mp3 audio").count(),
        1,
        "{log}"
    );
    let received = probe_duration(&rtmp_out);
    assert!(received > 5.0, "the RTMP destination got {received} s");
}
