//! End to end: admission under a connection flood. 600 clients complete the
//! RTMP handshake, send nothing, and reconnect the moment Prism drops them,
//! from 50 source addresses, against the default limits. A publisher with a
//! known key still gets `NetStream.Publish.Start` within 3 s, and an ffmpeg
//! encoder that drops and returns at once continues its show.
//!
//! And the file-descriptor side: started with an open-files limit of 1024
//! (soft and hard, so it cannot be raised), 1010 idle sockets on the metrics
//! port leave RTMP publishing alone, and `/metrics` answers again once the
//! idle ones have timed out.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prism_rtmp::{ChunkWriter, ClientEvent, PublishClient, PublishTarget, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::*;

const SHOW_KEY: &str = "live_admission_show_5e4d";
const PROBE_KEY: &str = "live_admission_probe_9c8b";
const FLOOD_CLIENTS: usize = 600;
const FLOOD_ADDRESSES: u8 = 50;

/// The idle reconnecting clients; counts the connections they made.
struct Flood {
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Flood {
    fn start(runtime: &tokio::runtime::Runtime, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let tasks = (0..FLOOD_CLIENTS)
            .map(|n| {
                // 127.0.0.2 .. 127.0.0.51: loopback answers the whole /8.
                let source = Ipv4Addr::new(127, 0, 0, 2 + (n % FLOOD_ADDRESSES as usize) as u8);
                let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
                runtime.spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if idle_once(source, port).await {
                            connections.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            connections,
            tasks,
        }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.abort();
        }
        self.connections.load(Ordering::Relaxed)
    }
}

/// One idle client: connect from `source`, complete the handshake, then
/// sit until Prism hangs up. False if it never got connected.
async fn idle_once(source: Ipv4Addr, port: u16) -> bool {
    let Ok(socket) = TcpSocket::new_v4() else {
        return false;
    };
    if socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).is_err() {
        return false;
    }
    let Ok(mut stream) = socket.connect(([127, 0, 0, 1], port).into()).await else {
        return false;
    };
    if prism_rtmp::handshake(&mut stream, Role::Client)
        .await
        .is_err()
    {
        return true;
    }
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
    true
}

/// Connects, publishes `key` and returns how long `NetStream.Publish.Start`
/// took from the TCP connect.
async fn time_to_publish_start(port: u16, key: &str) -> Duration {
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let leftover = prism_rtmp::handshake(&mut stream, Role::Client)
        .await
        .expect("handshake");
    let mut client = PublishClient::new(
        PublishTarget {
            app: "live".into(),
            tc_url: format!("rtmp://127.0.0.1:{port}/live"),
            stream_name: key.into(),
        },
        4096,
    );
    let mut out = ChunkWriter::new(128);
    client.start(&mut out);
    let mut input = leftover;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let events = client
            .handle_input(&input, &mut out)
            .expect("valid replies");
        stream.write_all(&out.to_vec()).await.unwrap();
        out.clear();
        match events.into_iter().next() {
            Some(ClientEvent::PublishStarted { .. }) => return started.elapsed(),
            Some(ClientEvent::Rejected { code, reason }) => panic!("refused: {code} {reason}"),
            None => {}
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "Prism hung up on the publisher");
        input = buf[..n].to_vec();
    }
}

fn metric_value(metrics_port: u16, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&http_get(metrics_port, "/metrics").1, name, labels).unwrap_or(0.0)
}

#[test]
fn publishers_get_in_through_a_flood_of_idle_reconnecting_clients() {
    require_ffmpeg();
    let scratch = Scratch::new("admission");
    let (rtmp_port, metrics_port, sink_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("show.flv");
    // One connection only: one file means the destination never reconnected.
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{SHOW_KEY}\"\nreconnect_grace_s = 10\n\n  [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n\n\
         [[streams]]\nid = \"probe\"\nkey = \"{PROBE_KEY}\"\nreconnect_grace_s = 0\n"
    );
    let mut prism = Prism::start(&scratch, &config, rtmp_port);
    let mut first = Ffmpeg::publisher(&prism.publish_url(SHOW_KEY), 60, scratch.file("first.log"));
    prism.wait_for_log("destination live", Duration::from_secs(10));
    let show_started = Instant::now();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let flood = Flood::start(&runtime, rtmp_port);
    // Until the pool is full and the flood cycles through it (512 slots by
    // default; 88 clients wait in the kernel's queue at any time).
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric_value(
        metrics_port,
        "prism_ingest_limit_hits_total",
        &[("limit", "max_anonymous_connections")],
    ) < 100.0
    {
        assert!(Instant::now() < deadline, "the flood never filled the pool");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The publisher runs on its own runtime, as an encoder on its own host
    // would: the flood's tasks do not delay its side of the exchange.
    let publisher = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut waits = Vec::new();
    for _ in 0..5 {
        waits.push(publisher.block_on(time_to_publish_start(rtmp_port, PROBE_KEY)));
        std::thread::sleep(Duration::from_millis(300));
    }
    let slowest = *waits.iter().max().unwrap();
    println!("Publish.Start under the flood: {waits:?}");
    assert!(
        slowest < Duration::from_secs(3),
        "a publisher waited {slowest:?} for Publish.Start: {waits:?}"
    );

    // The encoder crashes and its replacement connects at once.
    first.kill();
    let first_part = show_started.elapsed().as_secs_f64();
    let mut second = Ffmpeg::publisher(&prism.publish_url(SHOW_KEY), 6, scratch.file("second.log"));
    assert!(
        second.wait(Duration::from_secs(40)).success(),
        "{}",
        second.log()
    );
    let connections = flood.stop();
    receiver.wait(Duration::from_secs(20));
    println!("the flood made {connections} connections");

    assert_one_continuous_show(&prism, &out, first_part + 5.0);
    prism.terminate();
}

/// Idle HTTP sockets held on the metrics port: as the attack was run,
/// each sends one byte of a request head every 5 s.
const IDLE_HTTP_SOCKETS: usize = 1010;

#[test]
fn a_low_fd_limit_and_idle_http_sockets_leave_publishing_and_scraping_alive() {
    require_ffmpeg();
    // The test process itself holds the 1010 sockets.
    rlimit::increase_nofile_limit(4096).unwrap();
    let scratch = Scratch::new("admission-fds");
    let (rtmp_port, metrics_port, sink_port) = (free_port(), free_port(), free_port());
    let out = scratch.file("show.flv");
    let mut receiver = Ffmpeg::receiver(sink_port, "live", "show", &out);
    let config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[streams]]\nid = \"show\"\nkey = \"{SHOW_KEY}\"\nreconnect_grace_s = 0\n\n  [[streams.destinations]]\n  id = \"only\"\n  url = \"rtmp://127.0.0.1:{sink_port}/live/show\"\n"
    );
    let prism = Prism::start_with_fd_limit(&scratch, &config, rtmp_port, 1024, 1024);
    prism.wait_for_log(
        "soft_at_start=1024 soft=1024 hard=1024",
        Duration::from_secs(5),
    );
    wait_for_port(metrics_port, Duration::from_secs(5));

    let flood_started = Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..IDLE_HTTP_SOCKETS)
        .filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", metrics_port)).ok())
        .collect();
    assert_eq!(
        idle.len(),
        IDLE_HTTP_SOCKETS,
        "the kernel refused some connects"
    );
    let trickle_stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = Arc::clone(&trickle_stop);
        std::thread::spawn(move || {
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                for socket in &mut idle {
                    let _ = std::io::Write::write(socket, &[b"GET /metrics"[round % 12]]);
                }
                round += 1;
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    // Refusals past the 16 being answered at once are reset, so let the
    // burst of accepts pass before asking.
    std::thread::sleep(Duration::from_millis(1000));
    let fds = prism.open_fds();
    println!("prism holds {fds} descriptors with {IDLE_HTTP_SOCKETS} idle HTTP sockets open");
    assert!(
        fds < 1024 - 200,
        "prism holds {fds} of its 1024 descriptors"
    );
    let (status, body) = http_get(metrics_port, "/metrics");
    assert_eq!((status, body.as_str()), (503, "too many connections\n"));

    // A real encoder publishes through it all, and its show arrives whole.
    let mut encoder =
        Ffmpeg::publisher(&prism.publish_url(SHOW_KEY), 4, scratch.file("encoder.log"));
    assert!(
        encoder.wait(Duration::from_secs(30)).success(),
        "{}",
        encoder.log()
    );
    receiver.wait(Duration::from_secs(15));
    assert_good_recording(&out, 4.0);

    // Once the idle sockets time out (10 s), a scrape gets in again.
    let scraped = loop {
        let (status, body) = http_get(metrics_port, "/metrics");
        if status == 200 {
            break body;
        }
        assert!(
            flood_started.elapsed() < Duration::from_secs(20),
            "/metrics still refused after {:?}",
            flood_started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    println!(
        "/metrics answered again {:?} after the flood began",
        flood_started.elapsed()
    );
    let refused = metric(
        &scraped,
        "prism_http_connections_refused_total",
        &[("listener", "metrics"), ("reason", "max_connections")],
    )
    .unwrap_or(0.0);
    assert!(
        refused >= (IDLE_HTTP_SOCKETS - 64) as f64,
        "refused {refused}"
    );
    trickle_stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    // Throttled: the limit is logged at most once per 10 s, not per socket.
    let lines = prism.log().matches("http connection limit reached").count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} log lines for the refusals"
    );
}

#[test]
fn the_soft_fd_limit_is_raised_to_the_hard_limit_at_start() {
    let scratch = Scratch::new("admission-raise");
    let rtmp_port = free_port();
    let config = format!("[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n");
    let prism = Prism::start_with_fd_limit(&scratch, &config, rtmp_port, 1024, 4096);
    prism.wait_for_log(
        "soft_at_start=1024 soft=4096 hard=4096",
        Duration::from_secs(5),
    );
}
