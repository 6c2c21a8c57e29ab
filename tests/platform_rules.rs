//! End to end: a platform's published limits (`config/platforms.toml`)
//! checked against what a real ffmpeg publishes. A stream with a keyframe
//! every 10 s and no audio, to a destination with `platform = "youtube"`
//! and a local server: its warnings name the keyframe interval and the
//! missing audio (in the API, the metrics and on its card in the console),
//! and it is still sent. HEVC
//! to a Facebook destination is refused and never sent, while a YouTube
//! destination of the same stream, which takes HEVC, gets it.

mod support;

use std::time::{Duration, Instant};

use support::*;

const KEY: &str = "live_rules_4d5e6f7a";
const TOKEN: &str = "rules-token-8a9b0c1d";

fn config(
    rtmp_port: u16,
    admin_port: u16,
    metrics_port: u16,
    extra: &str,
    destinations: &str,
) -> String {
    format!(
        r#"[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[metrics]
listen = "127.0.0.1:{metrics_port}"
{extra}
[[streams]]
id = "main"
key = "{KEY}"
reconnect_grace_s = 0
{destinations}"#
    )
}

fn destination(admin_port: u16, id: &str) -> serde_json::Value {
    let (_, text) = http(
        admin_port,
        "GET",
        &format!("/v1/streams/main/destinations/{id}"),
        Some(TOKEN),
        "",
    );
    serde_json::from_str(&text).unwrap_or_default()
}

/// Waits until `done` holds for destination `id`; returns it then.
fn wait_for(
    admin_port: u16,
    id: &str,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    poll_until(
        &format!("destination {id}'s change"),
        within,
        || destination(admin_port, id),
        done,
    )
}

fn codes(view: &serde_json::Value) -> Vec<String> {
    view["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|w| w["code"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_stream_that_breaks_youtubes_rules_is_warned_about_and_still_sent() {
    require_ffmpeg();
    let scratch = Scratch::new("rules-youtube");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
    let text = config(
        rtmp_port,
        admin_port,
        metrics_port,
        "",
        &format!(
            "\n  [[streams.destinations]]\n  id = \"yt\"\n  platform = \"youtube\"\n  url = \"rtmp://127.0.0.1:{}/live/yt\"\n",
            nginx.port
        ),
    );
    let prism = Prism::start(&scratch, &text, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    // A keyframe every 10 s (250 frames at 25 fps), and no audio.
    let clip = live_clip(16).gop(250).silent();
    let mut publisher = Ffmpeg::clip_publisher(
        clip,
        &prism.publish_url(KEY),
        "flv",
        scratch.file("publisher.log"),
    );
    let view = wait_for(admin_port, "yt", Duration::from_secs(14), |view| {
        let codes = codes(view);
        codes.contains(&"keyframe_interval".to_string()) && codes.contains(&"no_audio".to_string())
    });
    let warnings = view["warnings"].to_string();
    assert!(warnings.contains("YouTube"), "{warnings}");
    assert!(warnings.contains("every 4 s"), "{warnings}");
    assert_eq!(
        view["state"], "live",
        "warnings do not stop the push: {view}"
    );
    let (_, metrics) = http_get(metrics_port, "/metrics");
    for (code, value) in [
        ("no_audio", 1.0),
        ("keyframe_interval", 1.0),
        ("bitrate", 0.0),
    ] {
        assert_eq!(
            metric(
                &metrics,
                "prism_destination_warnings",
                &[("destination", "yt"), ("code", code)]
            ),
            Some(value),
            "{code}"
        );
    }
    // The console shows them on the destination's card.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shown = runtime.block_on(async {
        let driver = support::browser::ChromeDriver::start();
        let client = support::browser::browser(&driver, &[]).await;
        client
            .goto(&format!("http://127.0.0.1:{admin_port}/#token={TOKEN}"))
            .await
            .unwrap();
        let card = "[data-destination=yt] .dest-warnings li";
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let shown = client
                .execute(
                    &format!("return [...document.querySelectorAll('{card}')].map(li => li.dataset.code + ': ' + li.textContent);"),
                    vec![],
                )
                .await
                .unwrap();
            let lines: Vec<String> = serde_json::from_value(shown).unwrap_or_default();
            if lines.iter().any(|l| l.starts_with("no_audio: ")) || Instant::now() > deadline {
                let _ = client.close().await;
                break lines;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    assert!(
        shown
            .iter()
            .any(|l| l.starts_with("keyframe_interval: a keyframe every"))
            && shown
                .iter()
                .any(|l| l.starts_with("no_audio: the stream has no audio")),
        "{shown:?}"
    );
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    let recorded = nginx.dir.join("yt.flv");
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe_duration(&recorded) < 14.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        probe_duration(&recorded) >= 14.0,
        "the destination got {:.1} s",
        probe_duration(&recorded)
    );
}

#[test]
fn hevc_is_refused_to_a_platform_that_takes_h264_only_and_sent_to_one_that_takes_it() {
    require_ffmpeg();
    let scratch = Scratch::new("rules-hevc");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port, metrics_port, srt_port) =
        (free_port(), free_port(), free_port(), free_port());
    let text = config(
        rtmp_port,
        admin_port,
        metrics_port,
        &format!("\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n"),
        &format!(
            "\n  [[streams.destinations]]\n  id = \"fb\"\n  platform = \"facebook\"\n  url = \"rtmp://127.0.0.1:{port}/live/fb\"\n\n  \
             [[streams.destinations]]\n  id = \"yt\"\n  platform = \"youtube\"\n  url = \"rtmp://127.0.0.1:{port}/live/yt\"\n",
            port = nginx.port
        ),
    );
    let prism = Prism::start(&scratch, &text, rtmp_port);
    prism.wait_for_log("srt ingest listening", Duration::from_secs(5));
    let clip = live_clip(8).codec("libx265");
    let mut publisher = Ffmpeg::clip_publisher(
        clip,
        &format!("srt://127.0.0.1:{srt_port}?streamid={KEY}"),
        "mpegts",
        scratch.file("publisher.log"),
    );
    let refused = wait_for(admin_port, "fb", Duration::from_secs(10), |view| {
        view["state"] == "refused"
    });
    assert_eq!(refused["last_error"]["kind"], "incompatible", "{refused}");
    let message = refused["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains("hevc") && message.contains("h264"),
        "{message}"
    );
    assert_eq!(refused["bytes_sent"], 0, "{refused}");
    let taken = wait_for(admin_port, "yt", Duration::from_secs(10), |view| {
        view["state"] == "live"
    });
    assert!(!codes(&taken).contains(&"codec".to_string()), "{taken}");
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !nginx.dir.join("fb.flv").exists(),
        "nothing reaches the refusing platform"
    );
    assert!(nginx.dir.join("yt.flv").exists());
}
