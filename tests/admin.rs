//! End to end: the admin API of a running daemon while a real ffmpeg
//! publishes. Destinations are added and disabled live, changes survive a
//! restart with the operator's comments kept, SIGHUP/`/v1/reload` apply file
//! edits, and bad requests get JSON errors that name the field.

mod support;

use std::time::{Duration, Instant};

use support::*;

const STREAM_KEY: &str = "live_admin_9c8d7e6f";
const TOKEN: &str = "admin-token-5f1e2d3c4b5a";
const KEY_A: &str = "dest-a-key-11112222";
const KEY_B: &str = "dest-b-key-33334444";

fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value, String) {
    let (status, text) = http(port, method, path, Some(TOKEN), body);
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

fn destination_state(port: u16, dest: &str) -> String {
    let (_, json, _) = api(
        port,
        "GET",
        &format!("/v1/streams/main/destinations/{dest}"),
        "",
    );
    json["state"].as_str().unwrap_or("").to_string()
}

fn wait_for_state(port: u16, dest: &str, state: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while destination_state(port, dest) != state {
        assert!(
            Instant::now() < deadline,
            "{dest} never became {state}: {}",
            destination_state(port, dest)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn destinations_change_live_and_the_changes_survive_a_restart() {
    require_ffmpeg();
    let scratch = Scratch::new("admin");
    let (rtmp_port, admin_port, port_a, port_b) =
        (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r#"# Operator's note: this comment must survive API edits.
[rtmp]
listen = "127.0.0.1:{rtmp_port}"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "{TOKEN}"

[fanout]
connect_timeout_s = 3

[[streams]]
id = "main"   # the show
key = "{STREAM_KEY}"
reconnect_grace_s = 0

  [[streams.destinations]]
  id = "a"
  url = "rtmp://127.0.0.1:{port_a}/live"
  key = "{KEY_A}"
"#
    );
    let mut receiver_a = Ffmpeg::receiver(port_a, "live", KEY_A, &scratch.file("a.flv"));
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let events = listen_to_events(admin_port, TOKEN);

    // Authentication and request errors.
    assert_eq!(http(admin_port, "GET", "/healthz", None, "").0, 200);
    for token in [None, Some("wrong-token-000000000")] {
        let (status, body) = http(admin_port, "GET", "/v1/streams", token, "");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("\"unauthorized\""), "{body}");
    }
    let (status, json, _) = api(
        admin_port,
        "POST",
        "/v1/streams/main/destinations",
        r#"{"key": "#,
    );
    assert_eq!(status, 400);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON"),
        "{json}"
    );
    let (status, json, _) = api(
        admin_port,
        "POST",
        "/v1/streams/main/destinations",
        r#"{"key": "k", "urll": "rtmp://x/y"}"#,
    );
    assert_eq!(status, 400);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `urll`"),
        "{json}"
    );
    let (status, json, _) = api(
        admin_port,
        "POST",
        "/v1/streams/main/destinations",
        r#"{"key": "k", "url": "http://x/y"}"#,
    );
    assert_eq!(status, 422, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("url: "),
        "{json}"
    );
    let (status, json, _) = api(
        admin_port,
        "POST",
        "/v1/streams/main/destinations",
        r#"{"key": "k", "url": "rtmp://h/app", "max_delay_ms": 5000}"#,
    );
    assert_eq!(status, 422, "{json}");
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("max_delay_ms: must be from 0"),
        "{json}"
    );
    for (body, field) in [
        (
            r#"{"key": "k", "url": "rtmp://h/app", "delay_s": 601}"#,
            "delay_s: must be from 0 (live) to 600",
        ),
        (
            r#"{"key": "k", "url": "rtmp://h/app", "tracks": "some"}"#,
            "tracks: must be \"default\"",
        ),
    ] {
        let (status, json, _) = api(admin_port, "POST", "/v1/streams/main/destinations", body);
        assert_eq!(status, 422, "{json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let (status, _, _) = api(admin_port, "GET", "/v1/streams/nope", "");
    assert_eq!(status, 404);
    let (status, _, _) = api(
        admin_port,
        "POST",
        "/v1/streams/main/destinations",
        r#"{"id": "a", "url": "rtmp://h/app", "key": "k"}"#,
    );
    assert_eq!(status, 409);

    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(STREAM_KEY), 20, scratch.file("pub.log"));
    wait_for_state(admin_port, "a", "live", Duration::from_secs(10));
    let (_, streams, _) = api(admin_port, "GET", "/v1/streams", "");
    assert_eq!(streams[0]["live"], true, "{streams}");
    assert_eq!(streams[0]["ingest"]["protocol"], "rtmp", "{streams}");

    // Add a destination mid-show: it starts receiving at once.
    let mut receiver_b = Ffmpeg::receiver(port_b, "live", KEY_B, &scratch.file("b.flv"));
    let body =
        format!(r#"{{"id": "b", "url": "rtmp://127.0.0.1:{port_b}/live", "key": "{KEY_B}"}}"#);
    let (status, json, text) = api(admin_port, "POST", "/v1/streams/main/destinations", &body);
    assert_eq!(status, 201, "{text}");
    assert_eq!(json["key_hint"], "…4444");
    assert_eq!(json["max_delay_ms"], 100, "[fanout]'s default: {json}");
    assert!(!text.contains(KEY_B), "the key came back in full: {text}");
    wait_for_state(admin_port, "b", "live", Duration::from_secs(10));

    // Disable a: only a stops (its receiver sees the unpublish and exits).
    let (status, json, _) = api(
        admin_port,
        "PUT",
        "/v1/streams/main/destinations/a/disable",
        "",
    );
    assert_eq!((status, json["success"].as_bool()), (200, Some(true)));
    receiver_a.wait(Duration::from_secs(5));
    assert_eq!(destination_state(admin_port, "a"), "disabled");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(destination_state(admin_port, "b"), "live");

    assert!(publisher.wait(Duration::from_secs(40)).success());
    receiver_b.wait(Duration::from_secs(15));
    let got = probe_duration(&scratch.file("b.flv"));
    assert!(got > 5.0, "b recorded only {got} s");
    assert_good_recording(&scratch.file("b.flv"), got);

    // Delay and tracks are set through the API too.
    let (status, json, _) = api(
        admin_port,
        "PATCH",
        "/v1/streams/main/destinations/a",
        r#"{"delay_s": 30, "tracks": "all"}"#,
    );
    assert_eq!(status, 200, "{json}");
    assert_eq!(
        (json["delay_s"].as_u64(), json["tracks"].as_str()),
        (Some(30), Some("all"))
    );

    // The changes are in the file, and the operator's comments still are.
    let file = std::fs::read_to_string(scratch.file("prism.toml")).unwrap();
    assert!(
        file.contains("delay_s = 30") && file.contains("tracks = \"all\""),
        "{file}"
    );
    assert!(
        file.starts_with("# Operator's note: this comment must survive API edits.\n"),
        "{file}"
    );
    assert!(file.contains("id = \"main\"   # the show"), "{file}");
    assert!(file.contains("id = \"b\""), "{file}");
    let (status, _) = prism.terminate();
    assert!(status.success());

    // Restart on the same file: b is there, a is still disabled.
    let prism2 = Prism::start_on_file(&scratch, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let (_, destinations, text) = api(admin_port, "GET", "/v1/streams/main/destinations", "");
    let ids: Vec<&str> = destinations
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"], "{text}");
    assert_eq!(destinations[0]["enabled"], false);
    assert_eq!(destinations[0]["state"], "disabled");

    // An operator edits the file and reloads: only the difference applies.
    let edited = std::fs::read_to_string(scratch.file("prism.toml")).unwrap()
        + "\n  [[streams.destinations]]\n  id = \"c\"\n  url = \"rtmp://127.0.0.1:9/live/c-key-0000\"\n  enabled = false\n";
    std::fs::write(scratch.file("prism.toml"), &edited).unwrap();
    let (status, _, text) = api(admin_port, "POST", "/v1/reload", "");
    assert_eq!(status, 200, "{text}");
    let (_, c, _) = api(admin_port, "GET", "/v1/streams/main/destinations/c", "");
    assert_eq!(c["state"], "disabled", "{c}");
    // A broken file is refused with its error; the running config stays.
    std::fs::write(
        scratch.file("prism.toml"),
        edited.replace("id = \"c\"", "idd = \"c\""),
    )
    .unwrap();
    let (status, json, _) = api(admin_port, "POST", "/v1/reload", "");
    assert_eq!(status, 422);
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `idd`"),
        "{json}"
    );
    assert_eq!(
        api(admin_port, "GET", "/v1/streams/main/destinations/c", "").0,
        200
    );
    // SIGHUP reloads too: the fixed file removes c again.
    std::fs::write(
        scratch.file("prism.toml"),
        edited.replace(
            "\n  [[streams.destinations]]\n  id = \"c\"",
            "\n  [[streams.destinations]]\n  id = \"d\"",
        ),
    )
    .unwrap();
    prism2.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while api(admin_port, "GET", "/v1/streams/main/destinations/c", "").0 != 404 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        api(admin_port, "GET", "/v1/streams/main/destinations/d", "").0,
        200
    );
    drop(prism2);

    let seen = events.lock().unwrap().clone();
    for kind in [
        "destination_state",
        "publish_start",
        "publish_stop",
        "config_changed",
    ] {
        assert!(
            seen.contains(&format!("event: {kind}")),
            "no {kind} event in:\n{seen}"
        );
    }
    assert!(seen.contains("\"state\":\"live\""), "{seen}");
    assert!(
        seen.contains("\"source\":\"api\",\"stream\":\"main\""),
        "config_changed without its stream: {seen}"
    );
    for secret in [STREAM_KEY, KEY_A, KEY_B, TOKEN] {
        assert!(!seen.contains(secret), "{secret} in the event stream");
    }
    prism.assert_log_free_of(&[STREAM_KEY, KEY_A, KEY_B, TOKEN]);
}

#[test]
fn pull_sources_and_srt_destinations_are_set_through_the_api() {
    let scratch = Scratch::new("admin-pull");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let nobody = free_port();

    // A pulled stream needs no key, and none is returned.
    let body =
        format!(r#"{{"id": "cam", "pull": "rtmp://127.0.0.1:{nobody}/live/cam1-secret-name"}}"#);
    let (status, view, text) = api(admin_port, "POST", "/v1/streams", &body);
    assert_eq!(status, 201, "{text}");
    assert!(view.get("key").is_none(), "{text}");
    assert_eq!(
        view["pull"],
        format!("rtmp://127.0.0.1:{nobody}/live/…name")
    );

    // Bad sources are 422 with a message that names the field.
    for bad in [
        "rtmps://h/live/x",
        "http://h/x",
        "srt://h:1?passphrase=short",
    ] {
        let body = format!(r#"{{"pull": "{bad}"}}"#);
        let (status, view, text) = api(admin_port, "PATCH", "/v1/streams/cam", &body);
        assert_eq!(status, 422, "{bad}: {text}");
        assert!(
            view["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("pull:"),
            "{text}"
        );
    }
    // Taking publishers again needs a key.
    let (status, view, _) = api(admin_port, "PATCH", "/v1/streams/cam", r#"{"pull": null}"#);
    assert_eq!(status, 422);
    assert!(
        view["error"]["message"].as_str().unwrap().contains("key"),
        "{view}"
    );
    let body = format!(r#"{{"pull": "srt://127.0.0.1:{nobody}?streamid=%23!::r=cam,m=request"}}"#);
    let (status, view, text) = api(admin_port, "PATCH", "/v1/streams/cam", &body);
    assert_eq!(status, 200, "{text}");
    assert!(
        view["pull"].as_str().unwrap().starts_with("srt://"),
        "{text}"
    );

    // An SRT destination; its passphrase never comes back.
    let body = format!(
        r#"{{"id": "srt", "url": "srt://127.0.0.1:{nobody}?passphrase=api-srt-passphrase&latency=300"}}"#
    );
    let (status, _, text) = api(admin_port, "POST", "/v1/streams/cam/destinations", &body);
    assert_eq!(status, 201, "{text}");
    let (_, _, text) = api(admin_port, "GET", "/v1/streams/cam", "");
    assert!(!text.contains("api-srt-passphrase"), "{text}");
    prism.assert_log_free_of(&["api-srt-passphrase", "cam1-secret-name"]);
    let saved = std::fs::read_to_string(scratch.file("prism.toml")).unwrap();
    assert!(saved.contains("pull = \"srt://"), "{saved}");
}
