//! End to end: the schedule. A live encoder publishes 30 s; an entry books
//! destination `sched` (disabled in the file) from +8 s to +18 s: it goes
//! live for that window alone and its recording spans it, while the
//! stream's other destination records the whole show; the entry reads
//! upcoming, in progress, then completed, with what `sched` sent. A file
//! booked as a stream's source before Prism restarts plays for its window;
//! a looping playlist of two files of different sizes plays across its
//! boundaries with no gap.

mod support;

use std::time::{Duration, Instant, SystemTime};

use support::*;

const KEY: &str = "live_sched_1b2c3d4e";
const TOKEN: &str = "schedule-token-5f6a7b8c";

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn api(port: u16, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, text) = http(port, method, path, Some(TOKEN), body);
    (status, serde_json::from_str(&text).unwrap_or_default())
}

fn entry(port: u16, id: &str) -> serde_json::Value {
    api(port, "GET", &format!("/v1/schedule/{id}"), "").1
}

#[test]
fn a_booked_destination_goes_live_for_its_window_alone() {
    require_ffmpeg();
    let scratch = Scratch::new("schedule-booked");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = stream_config(
        rtmp_port,
        admin_port,
        &[("always", nginx.port, true), ("sched", nginx.port, false)],
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));

    // Bad bookings are refused, each naming what is wrong.
    let now = SystemTime::now();
    for (body, status, says) in [
        (
            format!(
                r#"{{"stream": "main", "starts_at": "soon", "ends_at": "{}"}}"#,
                rfc3339(now)
            ),
            422,
            "starts_at: ",
        ),
        (
            format!(
                r#"{{"stream": "nope", "starts_at": "{0}", "ends_at": "{0}"}}"#,
                rfc3339(now)
            ),
            422,
            "stream: no stream",
        ),
        (
            format!(
                r#"{{"stream": "main", "destinations": ["x"], "starts_at": "{}", "ends_at": "{}"}}"#,
                rfc3339(now),
                rfc3339(now + Duration::from_secs(60))
            ),
            422,
            "destinations: no destination \"x\"",
        ),
    ] {
        let (got, json) = api(admin_port, "POST", "/v1/schedule", &body);
        assert_eq!(got, status, "{json}");
        assert!(
            json["error"]["message"].as_str().unwrap().starts_with(says),
            "{json}"
        );
    }

    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(KEY), 30, scratch.file("publisher.log"));
    poll_until(
        "the stream going live",
        Duration::from_secs(10),
        || api(admin_port, "GET", "/v1/streams/main", "").1,
        |stream| stream["live"] == true,
    );
    // Whole seconds on the wire: the window starts on the next one.
    let base = SystemTime::now() + Duration::from_secs(1);
    let (starts, ends) = (
        base + Duration::from_secs(8),
        base + Duration::from_secs(18),
    );
    let body = format!(
        r#"{{"stream": "main", "title": "The ten seconds", "destinations": ["sched"], "starts_at": "{}", "ends_at": "{}"}}"#,
        rfc3339(starts),
        rfc3339(ends)
    );
    let (status, booked) = api(admin_port, "POST", "/v1/schedule", &body);
    assert_eq!(status, 201, "{booked}");
    let id = booked["id"].as_str().unwrap().to_string();
    assert_eq!(booked["status"], "upcoming", "{booked}");
    // The same destination in an overlapping window is refused, naming it.
    let (status, clash) = api(admin_port, "POST", "/v1/schedule", &body);
    assert_eq!(status, 409, "{clash}");
    assert!(
        clash["error"]["message"].as_str().unwrap().contains(&id),
        "{clash}"
    );

    let live = poll_until(
        "the entry starting",
        Duration::from_secs(15),
        || entry(admin_port, &id),
        |e| e["status"] == "in-progress",
    );
    assert!(live["started_at"].is_string(), "{live}");
    poll_until(
        "sched going live",
        Duration::from_secs(5),
        || api(admin_port, "GET", "/v1/streams/main/destinations/sched", "").1,
        |d| d["state"] == "live",
    );
    let done = poll_until(
        "the entry ending",
        Duration::from_secs(15),
        || entry(admin_port, &id),
        |e| e["status"] == "completed",
    );
    assert!(done["ended_at"].is_string(), "{done}");
    let sent = &done["outcome"][0];
    assert_eq!(sent["destination"], "sched", "{done}");
    assert!(sent["bytes"].as_u64() > Some(10_000), "{done}");
    // Back to what the file says: disabled, while the show goes on.
    poll_until(
        "sched returning to disabled",
        Duration::from_secs(5),
        || api(admin_port, "GET", "/v1/streams/main/destinations/sched", "").1,
        |d| d["state"] == "disabled",
    );
    let started = Instant::now();
    assert!(
        publisher.wait(Duration::from_secs(30)).success(),
        "{}",
        publisher.log()
    );
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "the show outlived the entry"
    );

    let sched = nginx.dir.join("sched.flv");
    let span = probe_duration(&sched);
    assert!(
        (8.5..=11.5).contains(&span),
        "the booked destination recorded {span:.2} s"
    );
    assert_decodes(&sched, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let always = nginx.dir.join("always.flv");
    while probe_duration(&always) < 28.5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_good_recording(&always, 30.0);
    let (_, history) = api(admin_port, "GET", "/v1/schedule?status=completed", "");
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
}

/// Stream `main` with its destinations: (id, nginx-rtmp port, enabled),
/// each recording to `ID.flv`.
fn stream_config(rtmp_port: u16, admin_port: u16, destinations: &[(&str, u16, bool)]) -> String {
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 0\n"
    );
    for (id, port, enabled) in destinations {
        config += &format!(
            "\n  [[streams.destinations]]\n  id = \"{id}\"\n  url = \"rtmp://127.0.0.1:{port}/live/{id}\"\n  enabled = {enabled}\n"
        );
    }
    config
}

/// Stream `main` (no encoder yet) with one destination, `dest`, on nginx.
fn show_config(rtmp_port: u16, admin_port: u16, nginx_port: u16) -> String {
    stream_config(rtmp_port, admin_port, &[("dest", nginx_port, true)])
}

/// Books `source` on stream `main` from `from` to `to` seconds from now.
fn book_show(admin_port: u16, source: &str, from: u64, to: u64) -> String {
    let base = SystemTime::now() + Duration::from_secs(1);
    let body = format!(
        r#"{{"stream": "main", "title": "Pre-recorded", "source": {source}, "starts_at": "{}", "ends_at": "{}"}}"#,
        rfc3339(base + Duration::from_secs(from)),
        rfc3339(base + Duration::from_secs(to))
    );
    let (status, booked) = api(admin_port, "POST", "/v1/schedule", &body);
    assert_eq!(status, 201, "{booked}");
    booked["id"].as_str().unwrap().to_string()
}

fn wait_until_over(admin_port: u16, id: &str, within: Duration) -> serde_json::Value {
    poll_until(
        "the entry ending",
        within,
        || entry(admin_port, id),
        |e| e["status"] == "completed" || e["status"] == "failed",
    )
}

#[test]
fn a_show_booked_before_a_restart_plays_its_file_for_its_window() {
    require_ffmpeg();
    let scratch = Scratch::new("schedule-file");
    Clip::new("testsrc=size=320x240:rate=25")
        .seconds(30)
        .encode("flv", &scratch.file("show.flv"))
        .unwrap();
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let mut prism = Prism::start(
        &scratch,
        &show_config(rtmp_port, admin_port, nginx.port),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    // A file that cannot be played is refused when booked.
    std::fs::write(scratch.file("notes.txt"), "not a video").unwrap();
    let body = format!(
        r#"{{"stream": "main", "source": {{"file": "notes.txt"}}, "starts_at": "{}", "ends_at": "{}"}}"#,
        rfc3339(SystemTime::now() + Duration::from_secs(60)),
        rfc3339(SystemTime::now() + Duration::from_secs(70))
    );
    let (status, refused) = api(admin_port, "POST", "/v1/schedule", &body);
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("notes.txt: neither FLV nor MP4"),
        "{refused}"
    );

    let id = book_show(admin_port, r#"{"file": "show.flv"}"#, 6, 16);
    let (status, _) = prism.terminate();
    assert!(status.success());
    let _prism = Prism::start_on_file(&scratch, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    assert_eq!(entry(admin_port, &id)["status"], "upcoming");
    let done = wait_until_over(admin_port, &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    let recorded = nginx.dir.join("dest.flv");
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe_duration(&recorded) < 8.5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let probe = assert_good_recording(&recorded, 10.0);
    assert!(
        (8.5..=11.5).contains(&probe.duration),
        "{:.2} s of the show",
        probe.duration
    );
}

#[test]
fn a_looping_playlist_of_two_sizes_plays_across_its_boundaries_with_no_gap() {
    require_ffmpeg();
    let scratch = Scratch::new("schedule-playlist");
    for (name, size) in [("small.flv", "320x240"), ("large.flv", "640x360")] {
        Clip::new(&format!("testsrc=size={size}:rate=25"))
            .seconds(2)
            .encode("flv", &scratch.file(name))
            .unwrap();
    }
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let _prism = Prism::start(
        &scratch,
        &show_config(rtmp_port, admin_port, nginx.port),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    let id = book_show(
        admin_port,
        r#"{"file": ["small.flv", "large.flv"], "loop": true}"#,
        2,
        12,
    );
    let done = wait_until_over(admin_port, &id, Duration::from_secs(30));
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["source"]["loop"], true, "{done}");
    let recorded = nginx.dir.join("dest.flv");
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe_duration(&recorded) < 8.5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_decodes(&recorded, &[]);
    let sizes = runs(&width_sequence(&recorded));
    let widths: Vec<u32> = sizes.iter().map(|(w, _)| *w).collect();
    assert!(
        widths.len() >= 4 && widths.windows(2).all(|w| w[0] != w[1]),
        "the files alternate: {sizes:?}"
    );
    let gap = max_video_gap(&recorded);
    assert!(
        gap < Duration::from_millis(100),
        "a {gap:?} gap between files"
    );
}

/// An entry's own key publishes from 15 minutes before it starts to its
/// end: refused before, accepted within, shown once.
#[test]
fn an_event_key_is_refused_before_its_window_and_accepted_within_it() {
    require_ffmpeg();
    let scratch = Scratch::new("schedule-key");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let prism = Prism::start(
        &scratch,
        &show_config(rtmp_port, admin_port, nginx.port),
        rtmp_port,
    );
    wait_for_port(admin_port, Duration::from_secs(5));
    let book = |starts_in: u64| {
        let now = SystemTime::now();
        let body = format!(
            r#"{{"stream": "main", "key": true, "starts_at": "{}", "ends_at": "{}"}}"#,
            rfc3339(now + Duration::from_secs(starts_in)),
            rfc3339(now + Duration::from_secs(starts_in + 300))
        );
        let (status, booked) = api(admin_port, "POST", "/v1/schedule", &body);
        assert_eq!(status, 201, "{booked}");
        let key = booked["key"].as_str().expect("the key, once").to_string();
        let id = booked["id"].as_str().unwrap().to_string();
        assert_eq!(
            entry(admin_port, &id)["key"],
            serde_json::Value::Null,
            "never again"
        );
        assert_eq!(entry(admin_port, &id)["has_key"], true);
        key
    };
    // Its window opens in 5 minutes: not yet.
    let later = book(20 * 60);
    let mut early = Ffmpeg::publisher(&prism.publish_url(&later), 3, scratch.file("early.log"));
    assert!(
        !early.wait(Duration::from_secs(20)).success(),
        "an event key before its window publishes"
    );
    // Its window opened 5 minutes ago.
    let within = book(10 * 60);
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(&within), 4, scratch.file("within.log"));
    poll_until(
        "the event key's publish",
        Duration::from_secs(10),
        || api(admin_port, "GET", "/v1/streams/main", "").1,
        |stream| stream["live"] == true,
    );
    assert!(
        publisher.wait(Duration::from_secs(20)).success(),
        "{}",
        publisher.log()
    );
    prism.assert_log_free_of(&[&later, &within]);
}

/// A recording Prism made (fragmented MP4) is booked as a show and plays
/// back to a destination, whole and decodable.
#[test]
fn a_recording_prism_made_plays_back_as_a_show() {
    require_ffmpeg();
    let scratch = Scratch::new("schedule-recording");
    let nginx = Nginx::start(&scratch.file("nginx"));
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = show_config(rtmp_port, admin_port, nginx.port).replace(
        "reconnect_grace_s = 0\n",
        "reconnect_grace_s = 0\nrecord = true\n",
    ) + "\n[record]\npath = \"rec\"\n";
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher =
        Ffmpeg::publisher(&prism.publish_url(KEY), 6, scratch.file("publisher.log"));
    assert!(
        publisher.wait(Duration::from_secs(20)).success(),
        "{}",
        publisher.log()
    );
    let recording = poll_until(
        "a complete recording",
        Duration::from_secs(15),
        || api(admin_port, "GET", "/v1/recordings", "").1,
        |listed| listed[0]["complete"] == true,
    );
    let file = format!("rec/{}", recording[0]["file"].as_str().unwrap());
    assert!(file.ends_with(".mp4"), "{file}");
    // The destination's recording of the live show is set aside.
    std::fs::rename(nginx.dir.join("dest.flv"), nginx.dir.join("live.flv")).unwrap();
    let id = book_show(admin_port, &format!(r#"{{"file": "{file}"}}"#), 1, 9);
    let done = wait_until_over(admin_port, &id, Duration::from_secs(20));
    assert_eq!(done["status"], "completed", "{done}");
    let played = nginx.dir.join("dest.flv");
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe_duration(&played) < 5.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let probe = assert_good_recording(&played, 6.0);
    assert!(probe.duration > 5.0, "{:.2} s played back", probe.duration);
}
