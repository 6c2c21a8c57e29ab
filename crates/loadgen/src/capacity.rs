//! The capacity of one box: for each relay and each shape of load, the
//! largest load it holds on this machine, found by search (doubling from a
//! start, then halving the interval between the largest load held and the
//! smallest failed, to within a tenth). A load is held when, over the
//! measured window, every destination received the stream, none lost a
//! frame sent in the window (what a relay skips while a destination starts
//! is not counted), and the p99 latency the relay added is within its
//! latency budget + 5 ms: Prism's `max_delay_ms`, 0 for nginx-rtmp (it
//! writes as it reads), 500 ms for SRS (its forwarder sends what it queued
//! on a 500 ms pulse). An SRT publish adds what TS over SRT holds by design
//! whatever the load: SRT's receive latency (120 ms, libsrt's default and
//! Prism's), a video frame's wait for the next to start (a TS video PES has
//! no length) and the sender's 1316-byte messages; that path is measured
//! once as the p99 of 1 publisher x 1 destination through Prism at budget
//! 0, and added to every relay's limit.
//!
//! The harness's sinks and publishers run on the same machine: the capacity
//! is the box's, with its receivers, for every relay alike.

use std::time::Duration;

use clap::ValueEnum;

use crate::source::Source;
use crate::{run, Against, Args, Egress, Ingest, Row, Variant};

/// The shapes of load (`capacity --shapes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Shape {
    /// One stream to N destinations.
    Fanout,
    /// S streams, each to `--per-stream` destinations.
    Streams,
    /// S streams published over SRT (MPEG-TS, libsrt's caller), each to
    /// `--per-stream` destinations.
    SrtPublishers,
    /// One stream to N RTMPS destinations (Prism only: nginx-rtmp and SRS
    /// push no RTMPS).
    Rtmps,
}

impl Shape {
    fn describe(self, per_stream: usize) -> String {
        match self {
            Shape::Fanout => "1 x N".into(),
            Shape::Streams => format!("S x {per_stream}"),
            Shape::SrtPublishers => format!("S SRT publishers x {per_stream}"),
            Shape::Rtmps => "1 x N RTMPS".into(),
        }
    }

    /// Where the search starts.
    fn start(self) -> usize {
        match self {
            Shape::Fanout | Shape::Rtmps => 50,
            Shape::Streams | Shape::SrtPublishers => 8,
        }
    }

    /// Whether `against` can carry this shape at all.
    fn carried_by(self, against: Against) -> bool {
        match self {
            Shape::Fanout | Shape::Streams => true,
            Shape::SrtPublishers => matches!(against, Against::Prism | Against::Srs),
            Shape::Rtmps => against == Against::Prism,
        }
    }
}

pub struct CapacityOptions {
    pub shapes: Vec<Shape>,
    pub per_stream: usize,
    pub budget_ms: u64,
    /// The largest N or S tried.
    pub max: usize,
    /// The first N or S tried, instead of the shape's own start.
    pub start: Option<usize>,
}

/// One probe's outcome: the run, or why it did not hold.
struct Probe {
    load: usize,
    row: Option<Row>,
    failure: Option<String>,
}

/// The search's result for one relay and shape.
struct Found {
    variant: Variant,
    shape: Shape,
    /// The largest load held, with its run; none if not even 1 was.
    held: Option<Probe>,
    /// The smallest load that failed, and why.
    failed: Option<Probe>,
}

pub async fn run_capacity(
    args: &Args,
    options: &CapacityOptions,
    source: &Source,
) -> Result<(), String> {
    let mut relays = vec![Against::Prism];
    if args.all {
        relays.push(Against::Nginx);
        if args.srs_bin.is_some() {
            relays.push(Against::Srs);
        }
    } else if args.against != Against::Prism {
        relays = vec![args.against];
    }
    let mut found = Vec::new();
    let mut srt_path_ms = None;
    for &shape in &options.shapes {
        if shape == Shape::SrtPublishers && srt_path_ms.is_none() {
            srt_path_ms = Some(measure_srt_path(args, source).await?);
        }
        for &against in relays.iter().filter(|a| shape.carried_by(**a)) {
            let variant = Variant {
                against,
                budget: (against == Against::Prism).then_some(options.budget_ms),
                record: false,
                egress: if shape == Shape::Rtmps {
                    Egress::Rtmps
                } else {
                    Egress::Rtmp
                },
                ingest: if shape == Shape::SrtPublishers {
                    Ingest::Srt
                } else {
                    Ingest::Rtmp
                },
            };
            let limit_ms = latency_limit_ms(variant, srt_path_ms.unwrap_or(0.0));
            found.push(search(args, options, source, variant, shape, limit_ms).await);
        }
    }
    print_capacity(args, options, srt_path_ms, &found);
    Ok(())
}

/// The p99 latency of TS over SRT at no load: 1 publisher x 1 destination
/// through Prism at budget 0.
async fn measure_srt_path(args: &Args, source: &Source) -> Result<f64, String> {
    let mut args = args.clone();
    args.streams = 1;
    args.destinations = 1;
    let variant = Variant {
        against: Against::Prism,
        budget: Some(0),
        record: false,
        egress: Egress::Rtmp,
        ingest: Ingest::Srt,
    };
    let row = run(&args, variant, source, None).await?;
    let p99 = row
        .latency
        .map(|l| l.p99_ms)
        .filter(|p99| p99.is_finite())
        .ok_or("the SRT path's latency: nothing measured")?;
    eprintln!("prism-loadgen: capacity: TS over SRT at no load: p99 {p99:.1} ms");
    Ok(p99)
}

/// The p99 latency a relay may add and still hold a load.
fn latency_limit_ms(variant: Variant, srt_path_ms: f64) -> f64 {
    let budget = match variant.against {
        Against::Prism | Against::Tee => variant.budget.unwrap_or(0),
        Against::Nginx => 0,
        Against::Srs => 500,
    };
    let path = match variant.ingest {
        Ingest::Srt => srt_path_ms,
        Ingest::Rtmp => 0.0,
    };
    (budget + 5) as f64 + path
}

async fn search(
    args: &Args,
    options: &CapacityOptions,
    source: &Source,
    variant: Variant,
    shape: Shape,
    limit_ms: f64,
) -> Found {
    let mut held: Option<Probe> = None;
    let mut failed: Option<Probe> = None;
    let mut load = options.start.unwrap_or(shape.start()).min(options.max);
    loop {
        let probe = measure(args, options, source, variant, shape, load, limit_ms).await;
        eprintln!(
            "prism-loadgen: capacity: {} {}: {} at {}{}{}",
            variant.name(),
            shape.describe(options.per_stream),
            if probe.failure.is_none() {
                "holds"
            } else {
                "fails"
            },
            load,
            probe
                .failure
                .as_ref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            probe
                .row
                .as_ref()
                .map(|row| format!(", relay CPU {:.1} %", row.cpu_percent))
                .unwrap_or_default()
        );
        if probe.failure.is_none() {
            held = Some(probe);
        } else {
            failed = Some(probe);
        }
        let low = held.as_ref().map_or(0, |p| p.load);
        load = match &failed {
            None if low >= options.max => break,
            None => (low * 2).min(options.max),
            Some(high) => {
                if high.load - low <= (low / 10).max(1) {
                    break;
                }
                (low + high.load) / 2
            }
        };
    }
    Found {
        variant,
        shape,
        held,
        failed,
    }
}

async fn measure(
    args: &Args,
    options: &CapacityOptions,
    source: &Source,
    variant: Variant,
    shape: Shape,
    load: usize,
    limit_ms: f64,
) -> Probe {
    let mut args = args.clone();
    match shape {
        Shape::Fanout | Shape::Rtmps => {
            args.streams = 1;
            args.destinations = load;
        }
        Shape::Streams | Shape::SrtPublishers => {
            args.streams = load;
            args.destinations = options.per_stream;
        }
    }
    let outcome = run(&args, variant, source, None).await;
    // The next run starts on a quiet machine.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let row = match outcome {
        Ok(row) => row,
        Err(e) => {
            return Probe {
                load,
                row: None,
                failure: Some(e),
            }
        }
    };
    let expected = args.streams * args.destinations;
    let failure = match &row.latency {
        None => Some("no latency measured".to_string()),
        Some(l) if l.live < expected => Some(format!("{} of {expected} destinations live", l.live)),
        Some(l) if l.lost_in_window > 0 => Some(format!("{} frames lost", l.lost_in_window)),
        Some(l) if l.p99_ms.is_nan() || l.p99_ms > limit_ms => {
            Some(format!("p99 {:.1} ms over {limit_ms:.0} ms", l.p99_ms))
        }
        Some(_) => None,
    };
    Probe {
        load,
        row: Some(row),
        failure,
    }
}

fn print_capacity(
    args: &Args,
    options: &CapacityOptions,
    srt_path_ms: Option<f64>,
    found: &[Found],
) {
    println!();
    println!(
        "capacity: {} kbit/s video + 128 kbit/s audio, {} s per run (3 s warm-up), Prism budget {} ms{}; \
         held = every destination live, no frame lost in the window, p99 within the relay's budget + 5 ms",
        args.bitrate,
        args.seconds,
        options.budget_ms,
        args.prism_threads
            .map(|t| format!(", worker_threads {t}"))
            .unwrap_or_default(),
    );
    if let Some(path) = srt_path_ms {
        println!("TS over SRT at no load (added to the SRT publishers' limit): p99 {path:.1} ms");
    }
    println!(
        "{:<22} {:<15} {:>8} {:>8} {:>10} {:>8}  next step fails",
        "shape", "relay", "holds", "CPU %", "machine %", "p99 ms"
    );
    for f in found {
        let shape = f.shape.describe(options.per_stream);
        let (held, cpu, machine, p99) =
            match f.held.as_ref().and_then(|p| Some((p, p.row.as_ref()?))) {
                Some((probe, row)) => (
                    probe.load.to_string(),
                    format!("{:.1}", row.cpu_percent),
                    format!("{:.1}", row.machine_percent),
                    row.latency
                        .as_ref()
                        .map_or("-".into(), |l| format!("{:.1}", l.p99_ms)),
                ),
                None => ("none".into(), "-".into(), "-".into(), "-".into()),
            };
        let next = f
            .failed
            .as_ref()
            .map_or(format!("(not reached by {})", options.max), |p| {
                format!("at {}: {}", p.load, p.failure.as_deref().unwrap_or(""))
            });
        println!(
            "{:<22} {:<15} {:>8} {:>8} {:>10} {:>8}  {}",
            shape,
            f.variant.name(),
            held,
            cpu,
            machine,
            p99,
            next
        );
    }
}
