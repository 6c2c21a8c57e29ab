//! Failover: a primary and a hot backup (`?backup=1`) publish the same
//! synthetic show to one stream with --destinations sinks. Prism's CPU is
//! read with the primary alone and then with the backup beside it; then the
//! primary's connection is dropped `switches` times (it returns each time
//! and takes the show back after `failback_after_s = 1`). Prints the video
//! gap every destination saw at each failover, median and worst.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::receivers::{ReceiverKind, Receivers};
use prism_testkit::free_port;

use crate::relay::{cpu_percent, cpu_ticks, prism_config, start_prism_with};
use crate::source::{self, Source};
use crate::{median, Args, Clock};

/// Before any CPU is read: connections made, caches warm.
const WARM_UP: Duration = Duration::from_secs(3);
/// Each CPU reading.
const CPU_WINDOW: Duration = Duration::from_secs(20);
/// The primary on air before it is dropped (failback after 1 s, then at
/// its next keyframe).
const PRIMARY_HOLD: Duration = Duration::from_secs(4);
/// On the backup, after the drop: the window a gap is looked for in.
const ON_BACKUP: Duration = Duration::from_secs(2);

pub async fn run(args: &Args, switches: usize, source: &Source) -> Result<(), String> {
    let total = WARM_UP * 2 + CPU_WINDOW * 2 + (PRIMARY_HOLD + ON_BACKUP) * switches as u32;
    let clock = Arc::new(Clock::new(
        (total.as_secs() as usize + 10) * source.messages_per_second() * 2,
    ));
    let receivers = Receivers::start(
        ReceiverKind::Harness,
        args.destinations,
        vec![Arc::clone(&clock)],
        false,
        None,
    )?;
    let sinks = receivers.sinks.as_ref().expect("harness receivers");
    let dir = std::env::temp_dir().join(format!("prism-loadgen-{}-failover", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port();
    let config = prism_config(
        args,
        port,
        &receivers,
        args.max_delay_ms,
        &[args.destinations],
        "",
    )
    .replace(
        "key = \"s0\"\n",
        "key = \"s0\"\nreconnect_grace_s = 10\nfailback_after_s = 1\n",
    );
    let mut prism = start_prism_with(&dir, &config, args.prism_bin.as_deref())?;
    let pid = prism.id();
    let url = format!("rtmp://127.0.0.1:{port}/live/s0");
    let publish = |url: String| {
        tokio::spawn(source::publish(
            source.clone(),
            source::Target::Rtmp(url),
            total,
            Arc::clone(&clock),
        ))
    };
    let cpu_share = |window: Duration| async move {
        let before = cpu_ticks(pid)?;
        tokio::time::sleep(window).await;
        let ticks = cpu_ticks(pid)?.saturating_sub(before);
        Ok::<f64, String>(cpu_percent(ticks, window))
    };

    let mut primary = publish(url.clone());
    tokio::time::sleep(WARM_UP).await;
    let alone = cpu_share(CPU_WINDOW).await?;
    let backup = publish(format!("{url}?backup=1"));
    tokio::time::sleep(WARM_UP).await;
    let with_backup = cpu_share(CPU_WINDOW).await?;

    let mut dropped_at = Vec::with_capacity(switches);
    for _ in 0..switches {
        // Aborting the task drops its socket: the encoder is gone.
        primary.abort();
        dropped_at.push(Instant::now());
        tokio::time::sleep(ON_BACKUP).await;
        primary = publish(url.clone());
        tokio::time::sleep(PRIMARY_HOLD).await;
    }
    primary.abort();
    backup.abort();
    let _ = prism.kill();
    let _ = prism.wait();

    // The largest interval between two video frames any destination read
    // around each drop.
    let reads = sinks.video_reads(0);
    let mut gaps_ms: Vec<f64> = dropped_at
        .iter()
        .map(|&at| {
            let from = at - Duration::from_millis(200);
            let to = at + ON_BACKUP;
            reads
                .iter()
                .map(|frames| {
                    let window: Vec<Instant> = frames
                        .iter()
                        .copied()
                        .filter(|t| (from..to).contains(t))
                        .collect();
                    window
                        .windows(2)
                        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
                        .fold(0.0, f64::max)
                })
                .fold(0.0, f64::max)
        })
        .collect();
    gaps_ms.sort_by(f64::total_cmp);
    // The usual interval between two frames, for scale.
    let intervals: Vec<f64> = reads
        .iter()
        .flat_map(|frames| {
            frames
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        })
        .collect();
    let frame_ms = median(intervals).unwrap_or(0.0);
    println!(
        "failover: {switches} drops of the primary, {} destinations: video gap at the destinations median {:.0} ms, worst {:.0} ms (frames arrive every {frame_ms:.0} ms)",
        args.destinations,
        median(gaps_ms.clone()).unwrap_or(0.0),
        gaps_ms.last().copied().unwrap_or(0.0),
    );
    println!(
        "hot backup: Prism CPU {alone:.1} % of a core with the primary alone, {with_backup:.1} % with a hot backup beside it ({:.2}x)",
        with_backup / alone.max(0.01)
    );
    Ok(())
}
