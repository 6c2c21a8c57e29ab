//! The connect storm: a stream with many destinations starts publishing
//! while other streams are live, then every one of its destinations drops
//! at once. It measures how soon the destinations are live after the
//! publish starts, how Prism's reconnects spread out after the mass drop
//! (its backoff is jittered), and the other streams' latency before,
//! during the connect and during the reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::receivers::{ReceiverKind, Receivers};
use prism_testkit::free_port;

use crate::relay::{prism_config, start_prism_with};
use crate::source::{self, Source};
use crate::wan::WanPath;
use crate::{median, Args, Clock};

/// How long the other streams run before the storm stream starts.
const SETTLE: Duration = Duration::from_secs(5);
/// From the publish to the mass drop.
const LIVE_BEFORE_DROP: Duration = Duration::from_secs(8);
/// From the mass drop to the end.
const AFTER_DROP: Duration = Duration::from_secs(10);
/// The windows the other streams' latency is read in.
const WINDOW: Duration = Duration::from_secs(3);

pub struct StormOptions {
    pub other_streams: usize,
    pub other_destinations: usize,
}

pub async fn run(
    args: &Args,
    options: &StormOptions,
    source: &Source,
    wan: Option<&WanPath>,
) -> Result<(), String> {
    let streams = 1 + options.other_streams;
    let total = SETTLE + LIVE_BEFORE_DROP + AFTER_DROP;
    let clocks: Vec<Arc<Clock>> = (0..streams)
        .map(|_| {
            Arc::new(Clock::new(
                (total.as_secs() as usize + 5) * source.messages_per_second() * 2,
            ))
        })
        .collect();
    let ports = args.destinations.max(options.other_destinations);
    let receivers = Receivers::start(ReceiverKind::Harness, ports, clocks.clone(), false, wan)?;
    let sinks = receivers.sinks.as_ref().expect("harness receivers");

    let dir = std::env::temp_dir().join(format!("prism-loadgen-{}-storm", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port();
    let destinations: Vec<usize> = (0..streams)
        .map(|stream| match stream {
            0 => args.destinations,
            _ => options.other_destinations,
        })
        .collect();
    let config = prism_config(args, port, &receivers, args.max_delay_ms, &destinations, "");
    let mut prism = start_prism_with(&dir, &config, args.prism_bin.as_deref())?;
    let target =
        |stream: usize| source::Target::Rtmp(format!("rtmp://127.0.0.1:{port}/live/s{stream}"));

    let mut publishers = Vec::new();
    for (stream, clock) in clocks.iter().enumerate().skip(1) {
        publishers.push(tokio::spawn(source::publish(
            source.clone(),
            target(stream),
            total,
            Arc::clone(clock),
        )));
    }
    tokio::time::sleep(SETTLE).await;
    let started = Instant::now();
    publishers.push(tokio::spawn(source::publish(
        source.clone(),
        target(0),
        LIVE_BEFORE_DROP + AFTER_DROP,
        Arc::clone(&clocks[0]),
    )));
    tokio::time::sleep(LIVE_BEFORE_DROP).await;
    let dropped = Instant::now();
    sinks.hang_up(0);
    for publisher in publishers {
        publisher.await.map_err(|e| e.to_string())??;
    }
    let _ = prism.kill();
    let _ = prism.wait();

    let connections = sinks.connections_of(0);
    let (first, again): (Vec<_>, Vec<_>) =
        connections.iter().partition(|c| c.connected_at < dropped);
    let live_after = |times: &[&crate::sink::ConnectionTimes], from: Instant| -> Vec<f64> {
        let mut ms: Vec<f64> = times
            .iter()
            .filter_map(|c| c.first_frame_at)
            .map(|at| at.saturating_duration_since(from).as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let first_live = live_after(&first, started);
    let again_live = live_after(&again, dropped);
    let mut reconnect_ms: Vec<f64> = again
        .iter()
        .map(|c| {
            c.connected_at
                .saturating_duration_since(dropped)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    reconnect_ms.sort_by(f64::total_cmp);
    let within_2s = first_live.iter().filter(|ms| **ms <= 2000.0).count();

    let others = 1..streams;
    let p99_over = |span: Duration, from: Instant| {
        sinks
            .latencies_between(others.clone(), from, from + span)
            .percentile_ms(0.99)
    };
    let p99 = |from: Instant| p99_over(WINDOW, from);
    println!();
    println!(
        "connect storm: 1 stream x {} destinations published while {} other stream(s) x {} destinations are live; {} kbit/s; Prism max_delay_ms {}{}; {}",
        args.destinations,
        options.other_streams,
        options.other_destinations,
        args.bitrate,
        args.max_delay_ms,
        args.prism_threads
            .map(|t| format!(", worker_threads {t}"))
            .unwrap_or_default(),
        wan.map_or("loopback", |w| w.description.as_str())
    );
    let describe = |ms: &[f64]| match (ms.first(), median(ms.to_vec()), ms.last()) {
        (Some(first), Some(mid), Some(last)) => {
            format!("first {first:.0} ms, median {mid:.0} ms, last {last:.0} ms")
        }
        _ => "none".to_string(),
    };
    println!(
        "publish start: {} of {} destinations live (first frame received) within 2 s; {}",
        within_2s,
        args.destinations,
        describe(&first_live)
    );
    println!(
        "mass drop: {} destinations reconnected, connections made {}; live again {}",
        again.len(),
        describe(&reconnect_ms),
        describe(&again_live)
    );
    println!(
        "other streams' p99 latency (3 s windows): before {:.2} ms, during the connect storm {:.2} ms, all live and steady {:.2} ms, during the reconnects {:.2} ms",
        p99(started - WINDOW),
        p99(started),
        p99(dropped - WINDOW),
        p99(dropped + Duration::from_millis(500)),
    );
    // The storm's own cost, apart from the load of the destinations it adds:
    // the connects' first 0.5 s against the same span of the steady window.
    let short = Duration::from_millis(500);
    let p99_short = |from: Instant| p99_over(short, from);
    println!(
        "other streams' p99 latency (0.5 s windows): first 0.5 s of the connect storm {:.2} ms, of the reconnects {:.2} ms; steady {:.2} ms",
        p99_short(started),
        p99_short(dropped + Duration::from_millis(700)),
        p99_short(dropped - short),
    );
    Ok(())
}
