//! The admin API against the browser of an operator who visits a hostile
//! page, in headless Chromium. A page on another site sends what a page can
//! send without CORS (a `no-cors` POST with a text or form body) and what it
//! can send with it (JSON, a read of the stream key); a page whose host name
//! is re-pointed at 127.0.0.1 (DNS rebinding, simulated with
//! `--host-resolver-rules`) is same-origin to the browser and tries the same.
//! Under `insecure_no_auth` and with a token, nothing changes (the stream's
//! destinations and `prism.toml` stay as they were) and nothing is read;
//! the console's own origin still works.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use support::browser::{browser, ChromeDriver};
use support::*;

const KEY: &str = "live_cross_site_show_31";
const TOKEN: &str = "cross-site-admin-token-0123456789";

/// Serves an empty page on every request: the hostile site's origin.
fn hostile_site() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let page = "<!doctype html><title>hostile</title>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

/// Runs `requests` (a JS array of `[method, url, {fetch options}]`) from
/// the page open in `client`; each result is the status code, or the error
/// the browser gave (`"blocked: ..."`) when it withheld the response.
async fn try_from_page(client: &fantoccini::Client, requests: Value) -> Vec<String> {
    let script = r#"
        const [requests, done] = arguments;
        (async () => {
            const results = [];
            for (const [method, url, options] of requests) {
                try {
                    const response = await fetch(url, Object.assign({ method }, options));
                    const text = await response.text().catch(() => "");
                    results.push(`${response.type} ${response.status} ${text.slice(0, 200)}`);
                } catch (e) {
                    results.push(`blocked: ${e}`);
                }
            }
            done(results);
        })();
    "#;
    let value = client
        .execute_async(script, vec![requests])
        .await
        .expect("the page ran its requests");
    serde_json::from_value(value).unwrap()
}

/// Every attack of the test, against the API at `admin` (an origin, or ""
/// for the page's own).
fn attacks(admin: &str) -> Value {
    let destination =
        json!({"id": "attacker", "url": "rtmp://127.0.0.1:9/live", "key": "k"}).to_string();
    json!([
        ["POST", format!("{admin}/v1/streams/show/destinations"),
            {"mode": "no-cors", "headers": {"Content-Type": "text/plain"}, "body": destination}],
        ["POST", format!("{admin}/v1/streams/show/destinations"),
            {"mode": "no-cors", "headers": {"Content-Type": "application/x-www-form-urlencoded"}, "body": destination}],
        ["POST", format!("{admin}/v1/streams/show/destinations"),
            {"headers": {"Content-Type": "application/json"}, "body": destination}],
        ["PUT", format!("{admin}/v1/streams/show/destinations/own/enable"),
            {"headers": {"Content-Type": "application/json"}}],
        ["DELETE", format!("{admin}/v1/streams/show"), {}],
        ["GET", format!("{admin}/v1/streams/show/key"), {}],
        ["GET", format!("{admin}/v1/streams/show/key"), {"mode": "no-cors"}],
    ])
}

/// Prism with one stream and one (disabled) destination; `auth` is the
/// `[admin]` line that sets the mode.
fn start(scratch: &Scratch, auth: &str) -> (Prism, u16) {
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{auth}\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{KEY}\"\n\n  [[streams.destinations]]\n  id = \"own\"\n  \
         url = \"rtmp://127.0.0.1:9/live/own\"\n  enabled = false\n"
    );
    let prism = Prism::start(scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    (prism, admin_port)
}

/// The stream's destinations, as the API (asked with the token) lists them.
fn destinations(admin_port: u16) -> Vec<(String, bool)> {
    let view = api_json(admin_port, "/v1/streams/show", Some(TOKEN));
    view["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["enabled"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn nothing_crosses_sites(auth: &str, name: &str) {
    let scratch = Scratch::new(name);
    let (prism, admin_port) = start(&scratch, auth);
    let config_before = std::fs::read_to_string(scratch.file("prism.toml")).unwrap();
    let evil_port = hostile_site();
    let driver = ChromeDriver::start();
    let client = browser(
        &driver,
        &["--host-resolver-rules=MAP evil.test 127.0.0.1, MAP rebind.test 127.0.0.1"],
    )
    .await;

    // Another site.
    client
        .goto(&format!("http://evil.test:{evil_port}/"))
        .await
        .unwrap();
    let cross_site =
        try_from_page(&client, attacks(&format!("http://127.0.0.1:{admin_port}"))).await;
    println!("{name}: from another site: {cross_site:#?}");

    // DNS rebinding: the hostile name now points at Prism, so the page is
    // same-origin with the API as far as the browser knows.
    client
        .goto(&format!("http://rebind.test:{admin_port}/"))
        .await
        .unwrap();
    let rebound = try_from_page(&client, attacks("")).await;
    println!("{name}: rebound: {rebound:#?}");

    // The console's own origin works, so the refusals above are the
    // guard's and not a dead listener.
    client
        .goto(&format!("http://127.0.0.1:{admin_port}/"))
        .await
        .unwrap();
    let own = try_from_page(
        &client,
        json!([["GET", "/v1/streams/show/key",
                {"headers": {"Authorization": format!("Bearer {TOKEN}")}}]]),
    )
    .await;
    client.close().await.unwrap();

    assert!(
        own[0].starts_with("basic 200") && own[0].contains(KEY),
        "{own:?}"
    );
    for result in cross_site.iter().chain(&rebound) {
        assert!(!result.contains(KEY), "the stream key was read: {result}");
        // A response the page could read must be a refusal; an opaque one
        // (no-cors) and a blocked one tell the page nothing.
        assert!(
            result.starts_with("blocked:")
                || result.starts_with("opaque 0")
                || result.contains(" 403 ")
                || result.contains(" 415 "),
            "{result}"
        );
    }
    for result in &rebound {
        assert!(
            result.contains(" 403 "),
            "a rebound request was not refused: {result}"
        );
    }
    assert_eq!(destinations(admin_port), [("own".to_string(), false)]);
    assert_eq!(
        std::fs::read_to_string(scratch.file("prism.toml")).unwrap(),
        config_before
    );
    let log = prism.log();
    assert!(!log.contains("attacker"), "{log}");
}

#[tokio::test]
async fn no_other_site_changes_or_reads_anything_without_auth() {
    // The token still works for the test's own reads: PRISM_ADMIN_TOKEN is
    // not set and insecure_no_auth accepts any request, so `destinations`
    // sends one that is ignored.
    nothing_crosses_sites("insecure_no_auth = true", "cross-site-no-auth").await;
}

#[tokio::test]
async fn no_other_site_changes_or_reads_anything_with_a_token() {
    nothing_crosses_sites(&format!("token = \"{TOKEN}\""), "cross-site-token").await;
}
