//! What ingest costs by protocol: Prism's CPU with the same media published
//! by ffmpeg over RTMP and over SRT (MPEG-TS, libsrt's defaults), to the same
//! destinations, interleaved by round. The publisher is ffmpeg in both cases
//! (`-c copy` from the harness's source file), so the difference is Prism's
//! SRT and MPEG-TS path against its RTMP path.
//!
//! Each round also measures libsrt's own receiver, `srt-live-transmit` as a
//! listener with its output discarded, on the same publish: the reference
//! implementation's cost of receiving the flow at all, a floor for what any
//! SRT ingest can cost next to an RTMP one.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::receivers::{ReceiverKind, Receivers};
use prism_testkit::free_port;

use crate::relay::{cpu_ticks, prism_config, spawn_prism};
use crate::wan::WanPath;
use crate::{median, Args, Clock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Rtmp,
    Srt,
}

/// Prism's CPU percent over the measured window of one run.
async fn measure(args: &Args, protocol: Protocol, wan: Option<&WanPath>) -> Result<f64, String> {
    let clock = Arc::new(Clock::new(16));
    let receivers = Receivers::start(
        ReceiverKind::Harness,
        args.destinations,
        vec![clock],
        false,
        wan,
    )?;
    let (rtmp_port, srt_port) = (free_port(), free_port());
    let srt = format!("\n[srt]\nlisten = \"127.0.0.1:{srt_port}\"\n");
    let config = prism_config(
        args,
        rtmp_port,
        &receivers,
        args.max_delay_ms,
        &[args.destinations],
        &srt,
    );
    let dir = std::env::temp_dir().join(format!("prism-loadgen-{}-ingest", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = dir.join("prism.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let mut prism = spawn_prism(&path, args.prism_bin.as_deref(), Stdio::null())?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (format, url) = match protocol {
        Protocol::Rtmp => ("flv", format!("rtmp://127.0.0.1:{rtmp_port}/live/s0")),
        Protocol::Srt => ("mpegts", format!("srt://127.0.0.1:{srt_port}?streamid=s0")),
    };
    let mut publisher = spawn_publisher(args, format, &url)?;
    let sample = || {
        let ticks = cpu_ticks(prism.id());
        (ticks, receivers.sinks.as_ref().map_or(0, |s| s.bytes()))
    };
    let ((before, bytes_before), (after, bytes_after), window) =
        measured_window(args, sample).await;
    let bytes = bytes_after - bytes_before;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = prism.kill();
    let _ = prism.wait();
    let (before, after) = (before?, after?);
    if bytes == 0 {
        return Err(format!("{protocol:?}: the destinations received nothing"));
    }
    eprintln!(
        "prism-loadgen: {protocol:?} ingest: egress {:.0} Mb/s",
        bytes as f64 * 8.0 / window.as_secs_f64() / 1e6
    );
    Ok((after - before) as f64 / window.as_secs_f64())
}

/// Waits out the warm-up, then takes `sample` at the start and the end of
/// the measured window: both samples and the window's length.
async fn measured_window<T>(args: &Args, mut sample: impl FnMut() -> T) -> (T, T, Duration) {
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = sample();
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds.saturating_sub(4).max(2))).await;
    let last = sample();
    (first, last, from.elapsed())
}

/// ffmpeg publishing the harness's source as it is (`-c copy`) in `format`
/// to `url`, for the run's length.
fn spawn_publisher(args: &Args, format: &str, url: &str) -> Result<Child, String> {
    let source = crate::source::source_path(args.bitrate);
    Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-stream_loop", "-1", "-i"])
        .arg(&source)
        .args([
            "-t",
            &args.seconds.to_string(),
            "-c",
            "copy",
            "-f",
            format,
            url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start ffmpeg: {e}"))
}

/// The same ffmpeg publish received by `srt-live-transmit` (libsrt's
/// defaults, output discarded): its CPU percent over the measured window.
async fn measure_libsrt_receiver(args: &Args) -> Result<f64, String> {
    let port = free_port();
    let mut receiver = Command::new("srt-live-transmit")
        .args(["-q", &format!("srt://:{port}?mode=listener"), "file://con"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start srt-live-transmit (Debian: srt-tools): {e}"))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut publisher = spawn_publisher(args, "mpegts", &format!("srt://127.0.0.1:{port}"))?;
    let (before, after, window) = measured_window(args, || cpu_ticks(receiver.id())).await;
    let _ = publisher.kill();
    let _ = publisher.wait();
    let _ = receiver.kill();
    let _ = receiver.wait();
    let ended_early = |e| format!("srt-live-transmit ended early: {e}");
    let (before, after) = (before.map_err(ended_early)?, after.map_err(ended_early)?);
    Ok((after - before) as f64 / window.as_secs_f64())
}

pub async fn run(args: &Args, wan: Option<&WanPath>) -> Result<(), String> {
    let mut rtmp = Vec::new();
    let mut srt = Vec::new();
    let mut libsrt = Vec::new();
    let mut ratios = Vec::new();
    let mut floor_ratios = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let r = measure(args, Protocol::Rtmp, wan).await?;
        let s = measure(args, Protocol::Srt, wan).await?;
        let l = measure_libsrt_receiver(args).await?;
        eprintln!(
            "prism-loadgen: round {round}: RTMP ingest {r:.2} %, SRT ingest {s:.2} %, srt-live-transmit {l:.2} %"
        );
        rtmp.push(r);
        srt.push(s);
        libsrt.push(l);
        ratios.push(s / r);
        // Prism's RTMP ingest plus everything libsrt's receiver costs: what
        // the SRT publish would cost if Prism received SRT as cheaply as the
        // reference implementation (generous: the RTMP receive stays in).
        floor_ratios.push((r + l) / r);
    }
    println!();
    println!(
        "ingest: one ffmpeg publish of the {} kbit/s source (-c copy) to Prism, 1 stream x {} destinations, {} s; median of {} rounds",
        args.bitrate,
        args.destinations,
        args.seconds,
        args.rounds.max(1)
    );
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("RTMP publish: Prism CPU % by round: {}", show(&rtmp));
    println!("SRT publish:  Prism CPU % by round: {}", show(&srt));
    println!(
        "srt-live-transmit receiving the SRT publish (output discarded): CPU % by round: {}",
        show(&libsrt)
    );
    println!(
        "Prism CPU with an SRT publish / with an RTMP publish = {:.2}",
        median(ratios).unwrap_or(f64::NAN)
    );
    println!(
        "the same ratio if Prism received SRT at libsrt's own cost, (RTMP publish + srt-live-transmit) / RTMP publish = {:.2}",
        median(floor_ratios).unwrap_or(f64::NAN)
    );
    Ok(())
}
