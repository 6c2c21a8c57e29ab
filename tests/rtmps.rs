//! End to end: an `rtmps://` destination behind TLS with a private CA. With
//! the CA as `ca_file` the stream arrives and decodes; without it (the
//! built-in roots) the certificate is refused and the error says why.

mod support;

use std::time::Duration;

use support::tls::{certificates, tls_proxy};
use support::*;

const STREAM_KEY: &str = "live_rtmps_3c2b1a0f";
const DEST_KEY: &str = "facebook-like-key-8765";

#[test]
fn rtmps_destination_with_a_private_ca_receives_the_stream() {
    require_ffmpeg();
    let scratch = Scratch::new("rtmps");
    let (ca_pem, certificate, key) = certificates();
    std::fs::write(scratch.file("ca.pem"), ca_pem).unwrap();
    let (rtmp_port, tls_port, receiver_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("tls.flv");
    let mut receiver = Ffmpeg::receiver(receiver_port, "rtmp", DEST_KEY, &out);
    tls_proxy(tls_port, receiver_port, certificate, key);

    let config = format!(
        r#"[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[fanout]
connect_timeout_s = 3

[[streams]]
id = "main"
key = "{STREAM_KEY}"
reconnect_grace_s = 0

  [[streams.destinations]]
  id = "private-ca"
  url = "rtmps://localhost:{tls_port}/rtmp/"
  key = "{DEST_KEY}"
  ca_file = "ca.pem"

  [[streams.destinations]]
  id = "public-roots"
  url = "rtmps://localhost:{tls_port}/rtmp/"
  key = "other-key-00001111"
"#
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 6, scratch.file("pub.log"));
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 6.0);

    let log = prism.log();
    assert!(
        log.lines()
            .any(|l| l.contains("destination live") && l.contains("destination=private-ca")),
        "{log}"
    );
    // Verification is on by default: the private CA is not among the built-in roots.
    assert!(
        log.lines()
            .any(|l| l.contains("destination=public-roots")
                && l.contains("invalid peer certificate")),
        "{log}"
    );
    prism.terminate();
    prism.assert_log_free_of(&[STREAM_KEY, DEST_KEY, "other-key-00001111"]);
}

#[test]
fn a_bad_ca_file_is_a_config_error_with_its_line() {
    let scratch = Scratch::new("rtmps-check");
    std::fs::write(scratch.file("empty.pem"), "not a certificate\n").unwrap();
    let config = "[rtmp]\nlisten = \"127.0.0.1:1935\"\n\n[[streams]]\nid = \"main\"\nkey = \"k\"\n\n  [[streams.destinations]]\n  id = \"d\"\n  url = \"rtmps://localhost:443/app\"\n  key = \"k\"\n  ca_file = \"empty.pem\"\n";
    let path = scratch.file("prism.toml");
    std::fs::write(&path, config).unwrap();
    let output = check_config(&path);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":12:13: streams[0].destinations[0].ca_file:"),
        "{stderr}"
    );
    assert!(stderr.contains("holds no certificate"), "{stderr}");
}
