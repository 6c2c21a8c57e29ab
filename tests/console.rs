//! The operator's console in a real browser: Debian's Chromium, headless,
//! driven through chromedriver (WebDriver, with fantoccini). Prism relays an
//! ffmpeg publish to two ffmpeg receivers; the page, opened with the token
//! in its URL fragment, shows the stream live with its resolution; a click
//! on one destination's switch stops that receiver while the other goes on;
//! a destination added through the form goes live. Screenshots are taken at
//! desktop and phone width, and the browser's console must stay free of
//! errors throughout.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use support::browser::{browser, ChromeDriver};
use support::*;

const TOKEN: &str = "console-admin-token-0123456789";
const KEY: &str = "live_console_show_42";
/// The text of the first element matching `css`, or "" if there is none.
async fn text(client: &Client, css: &str) -> String {
    match client.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Clicks the element, scrolled to the middle of the window first (as a
/// person scrolls to it: the page's sticky header covers the top).
async fn click(client: &Client, css: &str) {
    let element = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    client
        .execute(
            "arguments[0].scrollIntoView({ block: 'center' });",
            vec![serde_json::to_value(&element).unwrap()],
        )
        .await
        .unwrap();
    element.click().await.unwrap();
}

/// Waits until the element's text is `want`.
async fn wait_for_text(client: &Client, css: &str, want: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let got = text(client, css).await;
        if got == want {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{css}: {got:?} after {within:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the page logged to the browser's console at level SEVERE (errors,
/// failed requests, uncaught exceptions), through chromedriver's log
/// endpoint, which WebDriver clients do not wrap.
async fn console_errors(client: &Client, driver: &ChromeDriver) -> Vec<String> {
    use std::io::{BufRead, BufReader, Read, Write};
    let session = client.session_id().await.unwrap().unwrap();
    let body = r#"{"type": "browser"}"#;
    let mut socket = std::net::TcpStream::connect(("127.0.0.1", driver.port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        socket,
        "POST /session/{session}/se/log HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        driver.port,
        body.len()
    )
    .unwrap();
    // One HTTP/1.1 response, its body by Content-Length or in chunks.
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    let (mut length, mut chunked, mut status) = (None, false, String::new());
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        let header = line.trim_end().to_ascii_lowercase();
        if status.is_empty() {
            status = header.clone();
        } else if header.is_empty() {
            break;
        } else if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse::<usize>().ok();
        } else if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        }
    }
    assert!(status.starts_with("http/1.1 200"), "{status}");
    let mut json = Vec::new();
    if chunked {
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let size = usize::from_str_radix(line.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).unwrap();
            if size == 0 {
                break;
            }
            json.extend_from_slice(&chunk[..size]);
        }
    } else {
        json.resize(length.expect("a Content-Length"), 0);
        reader.read_exact(&mut json).unwrap();
    }
    let log: serde_json::Value = serde_json::from_slice(&json).unwrap();
    log["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Where screenshots go: `docs/` with `PRISM_UPDATE_SCREENSHOTS=1` (what the
/// docs/api.md shows), the test's scratch directory otherwise.
fn screenshot_path(scratch: &Scratch, name: &str) -> std::path::PathBuf {
    if std::env::var_os("PRISM_UPDATE_SCREENSHOTS").is_some() {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs")
            .join(name)
    } else {
        scratch.file(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_show_and_changes_destinations_with_clicks() {
    require_ffmpeg();
    let scratch = Scratch::new("console");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let (out_a, out_b, out_c) = (
        scratch.file("alpha.flv"),
        scratch.file("beta.flv"),
        scratch.file("gamma.flv"),
    );
    let mut receiver_a = Ffmpeg::receiver(port_a, "live", "alpha-key", &out_a);
    let mut receiver_b = Ffmpeg::receiver(port_b, "live", "beta-key", &out_b);
    let mut receiver_c = Ffmpeg::receiver(port_c, "live", "gamma-key", &out_c);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [fanout]\nconnect_timeout_s = 3\n\n[[streams]]\nid = \"main\"\nkey = \"{KEY}\"\nreconnect_grace_s = 0\n\n\
         \x20 [[streams.destinations]]\n  id = \"alpha\"\n  url = \"rtmp://127.0.0.1:{port_a}/live\"\n  key = \"alpha-key\"\n\n\
         \x20 [[streams.destinations]]\n  id = \"beta\"\n  url = \"rtmp://127.0.0.1:{port_b}/live\"\n  key = \"beta-key\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher = Ffmpeg::publisher(&prism.publish_url(KEY), 30, scratch.file("pub.log"));

    let driver = ChromeDriver::start();
    let client = browser(&driver, &[]).await;
    client
        .goto(&format!("http://127.0.0.1:{admin_port}/#token={TOKEN}"))
        .await
        .unwrap();
    // The token leaves the address bar.
    assert!(!client.current_url().await.unwrap().as_str().contains(TOKEN));

    let stream = "[data-stream=main]";
    let limit = Duration::from_secs(20);
    wait_for_text(&client, &format!("{stream} .state"), "live", limit).await;
    wait_for_text(&client, &format!("{stream} .resolution"), "320x240", limit).await;
    wait_for_text(
        &client,
        &format!("{stream} .active-source"),
        "primary",
        limit,
    )
    .await;
    let sources = text(&client, &format!("{stream} .sources")).await;
    assert!(sources.starts_with("primary: rtmp 320x240"), "{sources}");
    assert_eq!(
        text(&client, &format!("{stream} .codecs")).await,
        "h264 + aac"
    );
    for destination in ["alpha", "beta"] {
        let pill = format!("[data-destination={destination}] .dest-state");
        wait_for_text(&client, &pill, "live", limit).await;
    }
    // The key only on request.
    assert_eq!(
        text(&client, &format!("{stream} .stream-key")).await,
        "hidden"
    );
    click(&client, &format!("{stream} .show-key")).await;
    wait_for_text(&client, &format!("{stream} .stream-key"), KEY, limit).await;
    let server = text(&client, &format!("{stream} .server-url")).await;
    assert_eq!(server, format!("rtmp://127.0.0.1:{rtmp_port}/live"));
    click(&client, &format!("{stream} .show-key")).await;
    std::thread::sleep(Duration::from_secs(2));
    client.set_window_size(1280, 1000).await.unwrap();
    let desktop = client.screenshot().await.unwrap();
    std::fs::write(screenshot_path(&scratch, "console-desktop.png"), desktop).unwrap();

    // A click on alpha's switch: its receiver gets the end of the publish
    // and stops; beta goes on.
    click(&client, "[data-destination=alpha] .enabled").await;
    wait_for_text(
        &client,
        "[data-destination=alpha] .dest-state",
        "disabled",
        limit,
    )
    .await;
    let stopped = receiver_a.wait(Duration::from_secs(10));
    println!("alpha's receiver stopped: {stopped:?}");
    let alpha_bytes = std::fs::metadata(&out_a).unwrap().len();
    assert_eq!(
        text(&client, "[data-destination=beta] .dest-state").await,
        "live"
    );

    // A destination added through the form goes live.
    click(&client, &format!("{stream} .add-destination summary")).await;
    let form = format!("{stream} .add-destination-form");
    let fill = |name: &'static str, value: String| {
        let client = client.clone();
        let css = format!("{form} [name={name}]");
        async move {
            client
                .find(Locator::Css(&css))
                .await
                .unwrap()
                .send_keys(&value)
                .await
                .unwrap();
        }
    };
    fill("id", "gamma".into()).await;
    fill("url", format!("rtmp://127.0.0.1:{port_c}/live")).await;
    fill("key", "gamma-key".into()).await;
    click(&client, &format!("{form} button[type=submit]")).await;
    wait_for_text(
        &client,
        "[data-destination=gamma] .dest-state",
        "live",
        limit,
    )
    .await;
    let events = text(&client, "#events").await;
    assert!(events.contains("gamma: live"), "{events}");

    // Recording switched on and off with a click: the recording is listed
    // with its length and size, and its download link opens the file in
    // the browser without the token.
    click(&client, &format!("{stream} .record")).await;
    wait_for_text(
        &client,
        &format!("{stream} .record-state"),
        "recording",
        limit,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    click(&client, &format!("{stream} .record")).await;
    wait_for_text(&client, &format!("{stream} .record-state"), "off", limit).await;
    let row = format!("{stream} .recordings tbody tr");
    let started = Instant::now();
    while text(&client, &row).await.is_empty() {
        assert!(started.elapsed() < limit, "no recording listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = text(&client, &row).await;
    assert!(
        listed.contains("Download") && (listed.contains("KiB") || listed.contains("MiB")),
        "{listed}"
    );
    let fetched = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const link = document.querySelector(arguments[0]);
             fetch(link.href).then(async (r) => done({ status: r.status, bytes: (await r.arrayBuffer()).byteLength,
                                                     type: r.headers.get('content-type') }));",
            vec![serde_json::json!(format!("{row} a"))],
        )
        .await
        .unwrap();
    assert_eq!(fetched["status"], 200, "{fetched}");
    assert_eq!(fetched["type"], "video/mp4", "{fetched}");
    assert!(fetched["bytes"].as_u64().unwrap() > 10_000, "{fetched}");

    // Phone width: nothing wider than the screen, every control reachable
    // by keyboard.
    client.set_window_size(390, 844).await.unwrap();
    client
        .execute("window.scrollTo(0, 0)", vec![])
        .await
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let layout = client
        .execute(
            "return { overflow: document.documentElement.scrollWidth - window.innerWidth,
                      unreachable: [...document.querySelectorAll('button, input, select, summary')]
                        .filter(e => e.offsetParent !== null && e.tabIndex < 0).length };",
            vec![],
        )
        .await
        .unwrap();
    assert!(layout["overflow"].as_i64().unwrap() <= 0, "{layout}");
    assert_eq!(layout["unreachable"], 0, "{layout}");
    // The preview plays at phone width too, within the screen.
    let preview = "document.querySelector('[data-stream=main] .preview')";
    wait_until_played(
        &client,
        preview,
        1.0,
        &format!("{preview}.videoWidth === 320 && {preview}.getBoundingClientRect().width <= window.innerWidth"),
    )
    .await;
    assert!(
        !text(&client, &format!("{stream} .on-air-for"))
            .await
            .contains('—'),
        "time on air"
    );
    let phone = client.screenshot().await.unwrap();
    std::fs::write(screenshot_path(&scratch, "console-phone.png"), phone).unwrap();

    let errors = console_errors(&client, &driver).await;
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    client.close().await.unwrap();

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    receiver_b.wait(Duration::from_secs(15));
    receiver_c.wait(Duration::from_secs(15));
    // Alpha stopped at the click; beta has the whole show; gamma the part
    // after it was added.
    assert_eq!(std::fs::metadata(&out_a).unwrap().len(), alpha_bytes);
    assert_good_recording(&out_b, 30.0);
    let gamma = probe_duration(&out_c);
    assert!(gamma > 5.0, "gamma recorded {gamma} s");
    assert_good_recording(&out_c, gamma);
    prism.assert_log_free_of(&[KEY, "alpha-key", "gamma-key"]);
}

/// The value of a JavaScript expression in the page.
async fn eval(client: &Client, expression: &str) -> serde_json::Value {
    client
        .execute(&format!("return {expression};"), vec![])
        .await
        .unwrap_or_else(|e| panic!("{expression}: {e}"))
}

/// Waits until the `<video>` (a JavaScript expression) has played `seconds`
/// more, and `also` holds.
async fn wait_until_played(client: &Client, video: &str, seconds: f64, also: &str) {
    let at = eval(client, &format!("{video}.currentTime"))
        .await
        .as_f64()
        .unwrap();
    wait_for_js(
        client,
        &format!("{video}.currentTime > {at} + {seconds} && {also}"),
        Duration::from_secs(10),
    )
    .await;
}

/// Waits until a JavaScript condition holds in the page; returns how long.
async fn wait_for_js(client: &Client, condition: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if eval(client, condition).await == serde_json::Value::Bool(true) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "{condition} still false after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A 1280x720 show plays in the console's preview within seconds, at its
/// size, under 2 s behind what goes out; the thumbnail draws and the
/// destination's bitrate shows. Viewers that never read cost the show
/// nothing, and the daemon's memory stays bounded; one more viewer than
/// `max_preview_viewers` is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_previews_the_show_live_and_idle_viewers_cost_it_nothing() {
    require_ffmpeg();
    let scratch = Scratch::new("console-preview");
    let (rtmp_port, admin_port, dest_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("destination.flv");
    let mut receiver = Ffmpeg::receiver(dest_port, "live", "copy", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n\n\
         \x20 [[streams.destinations]]\n  id = \"dest\"\n  url = \"rtmp://127.0.0.1:{dest_port}/live/copy\"\n"
    );
    let prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let mut publisher = Ffmpeg::hd_publisher(&prism.publish_url(KEY), 30, scratch.file("pub.log"));
    let live = Instant::now();
    while !http(admin_port, "GET", "/v1/streams/main", Some(TOKEN), "")
        .1
        .contains("\"live\":true")
    {
        assert!(live.elapsed() < Duration::from_secs(10), "never live");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let driver = ChromeDriver::start();
    let client = browser(&driver, &[]).await;
    client
        .goto(&format!("http://127.0.0.1:{admin_port}/#token={TOKEN}"))
        .await
        .unwrap();
    let video = "document.querySelector('[data-stream=main] .preview')";
    let playing = wait_for_js(
        &client,
        &format!("{video} && {video}.currentTime > 0"),
        Duration::from_secs(5),
    )
    .await;
    println!("the preview played {playing:?} after the page opened");
    wait_until_played(&client, video, 3.0, "true").await;
    assert_eq!(eval(&client, &format!("{video}.videoWidth")).await, 1280);
    assert_eq!(eval(&client, &format!("{video}.videoHeight")).await, 720);

    // How far behind what goes out the picture is: the API's newest
    // timestamp against the video's position, read together in the page.
    let mut lags = Vec::new();
    for _ in 0..6 {
        let lag = client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 const video = document.querySelector('[data-stream=main] .preview');
                 fetch('/v1/streams/main', { headers: { Authorization: 'Bearer ' + sessionStorage.getItem('prism-admin-token') } })
                   .then((r) => r.json())
                   .then((s) => done(s.newest_timestamp_ms - video.currentTime * 1000));",
                vec![],
            )
            .await
            .unwrap()
            .as_f64()
            .unwrap();
        lags.push(lag);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("preview lag behind the newest message sent, ms: {lags:?}");
    assert!(lags.iter().all(|&lag| lag < 2000.0), "{lags:?}");

    // The thumbnail draws from the preview; the destination's bitrate shows.
    wait_for_js(
        &client,
        "document.querySelector('#stream-list [data-stream=main] canvas')?.dataset.drawn === 'yes'",
        Duration::from_secs(10),
    )
    .await;
    let started = Instant::now();
    loop {
        let bitrate = text(&client, "[data-destination=dest] .dest-bitrate").await;
        if bitrate.ends_with("bit/s") && !bitrate.starts_with("0 ") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "destination bitrate {bitrate:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Three viewers that never read (the console is the fourth), then one
    // too many.
    let rss_before = prism.rss_kib();
    let idle: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            use std::io::Write;
            let mut socket = std::net::TcpStream::connect(("127.0.0.1", admin_port)).unwrap();
            write!(
                socket,
                "GET /v1/streams/main/preview HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .unwrap();
            socket
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, body) = http(
        admin_port,
        "GET",
        "/v1/streams/main/preview",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_preview_viewers"), "{body}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_after = prism.rss_kib();
    println!(
        "RSS with three viewers that never read, 10 s on: {} KiB -> {} KiB",
        rss_before, rss_after
    );
    assert!(
        rss_after < rss_before + 48 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    // The console still plays.
    wait_until_played(&client, video, 1.0, "true").await;
    let errors = console_errors(&client, &driver).await;
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
    client.close().await.unwrap();
    drop(idle);

    assert!(
        publisher.wait(Duration::from_secs(40)).success(),
        "{}",
        publisher.log()
    );
    receiver.wait(Duration::from_secs(15));
    // The destination got the whole show meanwhile.
    assert_good_recording(&out, 30.0);
}

/// A newcomer's first run: the example config copied into an empty folder
/// (its ports moved to free ones) makes its admin token file, logs a link
/// once, and the link opens the console on the example stream; the token
/// in it works on the API. A second start logs no link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_of_the_example_config_logs_a_link_that_opens_the_console() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("first-run");
    let (rtmp_port, srt_port, metrics_port, admin_port) =
        (free_port(), free_port(), free_port(), free_port());
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/prism.toml"),
    )
    .unwrap();
    let config = example
        .replace("\"0.0.0.0:1935\"", &format!("\"127.0.0.1:{rtmp_port}\""))
        .replace("\"0.0.0.0:9000\"", &format!("\"127.0.0.1:{srt_port}\""))
        .replace(
            "\"127.0.0.1:9100\"",
            &format!("\"127.0.0.1:{metrics_port}\""),
        )
        .replace("\"127.0.0.1:8080\"", &format!("\"127.0.0.1:{admin_port}\""));
    assert_ne!(config, example);
    // `--check` first, as a careful newcomer would: it passes and writes
    // nothing.
    std::fs::write(scratch.file("prism.toml"), &config).unwrap();
    let checked = check_config(&scratch.file("prism.toml"));
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(!scratch.file("admin.token").exists());
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    prism.wait_for_log("console: open http://", Duration::from_secs(5));
    let log = prism.log();
    let link = log
        .split("console: open ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let prefix = format!("http://127.0.0.1:{admin_port}/#token=");
    assert!(link.starts_with(&prefix), "{link}");
    let token = &link[prefix.len()..];
    let file = scratch.file("admin.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert!(token.len() >= 32, "{token}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let driver = ChromeDriver::start();
    let client = browser(&driver, &[]).await;
    client.goto(&link).await.unwrap();
    wait_for_text(
        &client,
        "[data-stream=main] .stream-id",
        "main",
        Duration::from_secs(10),
    )
    .await;
    // No encoder yet: the preview says why there is no picture.
    wait_for_text(
        &client,
        "[data-stream=main] .preview-note",
        "The stream is not live",
        Duration::from_secs(10),
    )
    .await;
    let (status, body) = http(admin_port, "GET", "/v1/streams", Some(token), "");
    assert_eq!(status, 200, "{body}");
    client.close().await.unwrap();

    prism.terminate();
    let prism = Prism::start_on_file(&scratch, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    assert_eq!(prism.log().matches("console: open http://").count(), 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}

/// The schedule in the console: a show booked through the form (with an
/// event key, shown once) is listed as upcoming, edited, and canceled with
/// a click into the history; the page logs no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_books_edits_and_cancels_a_schedule_entry() {
    let scratch = Scratch::new("console-schedule");
    let (rtmp_port, admin_port) = (free_port(), free_port());
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [[streams]]\nid = \"main\"\nkey = \"{KEY}\"\n\n\
         \x20 [[streams.destinations]]\n  id = \"alpha\"\n  url = \"rtmp://127.0.0.1:9/live\"\n  key = \"alpha-key\"\n  enabled = false\n"
    );
    let _prism = Prism::start(&scratch, &config, rtmp_port);
    wait_for_port(admin_port, Duration::from_secs(5));
    let driver = ChromeDriver::start();
    let client = browser(&driver, &[]).await;
    client
        .goto(&format!("http://127.0.0.1:{admin_port}/#token={TOKEN}"))
        .await
        .unwrap();
    let limit = Duration::from_secs(10);
    wait_for_js(
        &client,
        "document.querySelector('#book-form select').options.length === 1",
        limit,
    )
    .await;
    click(&client, "#book summary").await;
    // In an hour, for an hour, in this browser's time zone.
    eval(
        &client,
        "(() => { const f = document.querySelector('#book-form');
           const local = (ms) => { const d = new Date(Date.now() + ms);
             return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); };
           f.elements.title.value = 'Friday show';
           f.elements.starts_at.value = local(3600e3);
           f.elements.ends_at.value = local(7200e3);
           f.elements.destinations.value = 'alpha';
           f.elements.key.checked = true; return true; })()",
    )
    .await;
    click(&client, "#book-form button[type=submit]").await;
    wait_for_js(
        &client,
        "document.querySelector('#book-key').textContent.startsWith('Its stream key (shown this once): ')",
        limit,
    )
    .await;
    let item = "#schedule-upcoming li[data-entry]";
    wait_for_js(
        &client,
        &format!("!!document.querySelector('{item}')"),
        limit,
    )
    .await;
    let listed = text(&client, item).await;
    assert!(
        listed.contains("Friday show · main")
            && listed.contains("takes alpha live")
            && listed.contains("event key"),
        "{listed}"
    );
    // Edit the title.
    click(&client, &format!("{item} .edit")).await;
    eval(
        &client,
        &format!("(() => {{ document.querySelector('{item} form').elements.title.value = 'Saturday show'; return true; }})()"),
    )
    .await;
    click(&client, &format!("{item} form button[type=submit]")).await;
    wait_for_js(
        &client,
        &format!("(document.querySelector('{item}') || {{}}).textContent?.includes('Saturday show') === true"),
        limit,
    )
    .await;
    let (_, listed) = http(admin_port, "GET", "/v1/schedule", Some(TOKEN), "");
    assert!(listed.contains("Saturday show"), "{listed}");
    // Cancel it: it moves to the history.
    click(&client, &format!("{item} .cancel")).await;
    wait_for_js(
        &client,
        "(document.querySelector('#schedule-history li[data-entry] .entry-status') || {}).textContent === 'canceled'",
        limit,
    )
    .await;
    let errors = console_errors(&client, &driver).await;
    assert!(errors.is_empty(), "{errors:?}");
    client.close().await.unwrap();
}
