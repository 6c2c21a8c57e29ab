//! End to end: text from peers never becomes log syntax. A destination that
//! refuses the publish with newlines, a carriage return, ANSI escapes and a
//! BEL in its description (and another with a 900 kB one, under the 1 MiB a
//! server's message may have), a pulled source that refuses to play in the
//! same words, and an RTMP client with no valid key whose publish names such
//! arguments (and a bare token) after `?`: in the text and the JSON log
//! formats, every line of Prism's log is one well-formed record, none is
//! forged, no control character reaches the file, each peer's text does
//! arrive (escaped), no line outgrows its bound and the API's `last_error` is
//! cut to size.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::*;

const KEY: &str = "live_forging_show_4e7a";
/// A line a peer would like to append to the log.
const FORGED_LINE: &str = "2026-12-07T00:00:00.000000Z  INFO prism: FORGED";
const BARE_TOKEN: &str = "PLATFORMTOKEN0123456789";

fn hostile(marker: &str) -> &'static str {
    Box::leak(
        format!("refused\n{FORGED_LINE} {marker}\r\x1b[2J\x1b]0;owned\x07 end").into_boxed_str(),
    )
}

/// Publishes to Prism under a stream name with `?` and hostile argument
/// names; the key is unknown, so Prism refuses it after logging the names.
async fn hostile_publish(rtmp_port: u16) {
    let mut url =
        prism_fanout::DestinationUrl::parse(&format!("rtmp://127.0.0.1:{rtmp_port}/live/x"), None)
            .unwrap();
    url.stream_name = prism_media::StreamKey::new(format!(
        "nokey?\n{FORGED_LINE} ARGUMENT\x1b[2J\x07=1&{BARE_TOKEN}"
    ));
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", rtmp_port))
        .await
        .unwrap();
    let mut out = prism_rtmp::ChunkWriter::new(128);
    let refused = prism_fanout::start_publish(&mut stream, &url, 4096, &mut out, None).await;
    assert!(refused.is_err(), "an unknown key was accepted");
}

fn last_errors(admin_port: u16) -> Vec<String> {
    let view = api_json(admin_port, "/v1/streams/pushed", Some("x"));
    view["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["last_error"]["message"].as_str().map(str::to_string))
        .collect()
}

async fn no_forged_lines(format: &str) {
    require_ffmpeg();
    let scratch = Scratch::new(&format!("log-forging-{format}"));
    let destination = FakeDestination::refusing_rtmp(hostile("DESTINATION"));
    let huge = FakeDestination::refusing_rtmp(Box::leak(
        format!("{FORGED_LINE} HUGE\n{}", "x".repeat(900_000)).into_boxed_str(),
    ));
    let source = FakeDestination::refusing_rtmp_play(hostile("PULL"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "log_format = \"{format}\"\n\n[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n\
         [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ninsecure_no_auth = true\n\n\
         [[streams]]\nid = \"pushed\"\nkey = \"{KEY}\"\n\
           [[streams.destinations]]\n  id = \"hostile\"\n  url = \"rtmp://127.0.0.1:{}/live/k\"\n\
           [[streams.destinations]]\n  id = \"huge\"\n  url = \"rtmp://127.0.0.1:{}/live/k\"\n\n\
         [[streams]]\nid = \"pulled\"\npull = \"rtmp://127.0.0.1:{}/live/cam\"\n",
        destination.port, huge.port, source.port
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 8, scratch.file("pub.log"));
    hostile_publish(rtmp_port).await;
    let started = Instant::now();
    while destination
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
        || huge.accepted.load(std::sync::atomic::Ordering::Relaxed) < 2
        || source.accepted.load(std::sync::atomic::Ordering::Relaxed) < 1
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the peers were never reached"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let errors = last_errors(admin_port);
    publisher.wait(Duration::from_secs(30));

    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert!(error.len() <= 512, "last_error of {} bytes", error.len());
        assert!(!error.chars().any(char::is_control), "{error:?}");
    }

    let log = prism.log();
    assert!(
        !log.contains(BARE_TOKEN),
        "a value-less argument was logged"
    );
    for forbidden in ['\x1b', '\x07', '\r'] {
        assert!(
            !log.contains(forbidden),
            "{forbidden:?} reached the log:\n{log}"
        );
    }
    for marker in ["DESTINATION", "PULL", "ARGUMENT", "HUGE"] {
        assert!(
            log.lines()
                .any(|l| l.contains(FORGED_LINE) && l.contains(marker)),
            "the {marker} peer's text never reached the log (escaped):\n{log}"
        );
    }
    for line in log.lines() {
        assert!(line.len() <= 2048, "a log line of {} bytes", line.len());
        assert!(!line.starts_with(FORGED_LINE), "a forged line: {line}");
        match format {
            "json" => {
                let record: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON record ({e}): {line}"));
                assert!(record["level"].is_string(), "{line}");
            }
            _ => {
                // A record starts with its own timestamp and level.
                let fields: Vec<&str> = line.split_whitespace().take(2).collect();
                assert!(
                    fields.len() == 2
                        && fields[0].starts_with("20")
                        && fields[0].ends_with('Z')
                        && ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&fields[1]),
                    "not a log record: {line}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_forge_no_text_log_line() {
    no_forged_lines("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_forge_no_json_log_line() {
    no_forged_lines("json").await;
}
