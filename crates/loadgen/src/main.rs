//! `prism-loadgen`: what a relay costs per destination, measured on one
//! machine. It publishes a fixed pre-encoded stream (made once with ffmpeg,
//! so the publisher costs almost nothing) to a relay: Prism, nginx-rtmp with
//! `push`, or a plain TCP tee (the floor: the same bytes to N sockets, no
//! protocol work). N sinks in this process receive, count frames and measure
//! per-message latency (publisher and sinks share one clock). It prints one
//! table: relay CPU (from /proc, user+sys), RSS, egress, latency, frames lost.
//!
//!     cargo build --release -p prism -p prism-loadgen
//!     target/release/prism-loadgen --destinations 100 --bitrate 6000 --seconds 20 --all

mod capacity;
mod failover;
mod ingest;
mod receivers;
mod relay;
mod sink;
mod soak;
mod source;
mod storm;
mod tls_front;
mod wan;
mod write_floor;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};

use crate::receivers::{ReceiverKind, Receivers};
use crate::relay::Relay;
use crate::sink::SinkReport;
use crate::wan::WanPath;

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Measure a relay's cost per destination: Prism, nginx-rtmp push, or a plain TCP tee"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Destinations per stream.
    #[arg(long, default_value_t = 10)]
    destinations: usize,
    /// Streams, each published once and pushed to every destination.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Video bitrate of the synthetic stream, kbit/s (audio adds 128).
    #[arg(long, default_value_t = 6000)]
    bitrate: u32,
    /// Length of the run; the first 3 s are warm-up and not measured.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The relay to measure.
    #[arg(long, value_enum, default_value = "prism")]
    against: Against,
    /// Measure Prism, nginx-rtmp and the tee (and SRS, with --srs-bin) one
    /// after the other.
    #[arg(long)]
    all: bool,
    /// An SRS 5 binary (objs/srs) for --against srs.
    #[arg(long)]
    srs_bin: Option<PathBuf>,
    /// What receives the destinations: the harness's sinks (frames lost and
    /// latency measured) or nginx-rtmp servers (real RTMP receivers).
    #[arg(long, value_enum, default_value = "harness")]
    receivers: ReceiverKind,
    /// Put the receivers behind a WAN-like path: a network namespace joined
    /// by TUN devices through a delay line with loss (needs root and iproute2).
    #[arg(long)]
    wan: bool,
    /// The WAN path's round-trip time.
    #[arg(long, default_value_t = 40)]
    wan_rtt_ms: u32,
    /// The WAN path's loss toward the receivers, percent.
    #[arg(long, default_value_t = 0.1)]
    wan_loss: f64,
    /// The WAN path's MTU (1500 as on the internet; larger costs the
    /// harness's delay line less CPU).
    #[arg(long, default_value_t = 1500)]
    wan_mtu: u32,
    /// Prism's `[fanout] max_delay_ms`: the latency budget within which a
    /// destination's messages are coalesced into one write.
    #[arg(long, default_value_t = 0)]
    max_delay_ms: u64,
    /// Measure Prism once per latency budget (comma-separated ms), each a
    /// row of its own in every round (default: --max-delay-ms alone).
    #[arg(long, value_delimiter = ',')]
    budgets: Vec<u64>,
    /// Measure each relay this many times, interleaved (Prism, nginx, tee,
    /// Prism, ...); the table shows each relay's median run and the ratios
    /// the median of each round's ratios, since a shared machine is noisy.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The prism binary (default: beside this one).
    #[arg(long)]
    prism_bin: Option<PathBuf>,
    /// The RTMP chunk size both relays send with (Prism's `[fanout]
    /// chunk_size`, nginx-rtmp's `chunk_size`), so they are compared on the
    /// same wire format.
    #[arg(long, default_value_t = prism_rtmp::DEFAULT_PUBLISH_CHUNK_SIZE)]
    chunk_size: u32,
    /// nginx-rtmp's chunk size when it should differ from `--chunk-size`
    /// (4096 is nginx-rtmp's default).
    #[arg(long)]
    nginx_chunk_size: Option<u32>,
    /// Measure each Prism run twice, the second with every stream recorded
    /// (`record = true`, fMP4 to the temporary directory's disk), and print
    /// what recording adds.
    #[arg(long)]
    recording: bool,
    /// The protocols Prism's destinations push (comma-separated), each a
    /// run of its own, and what each costs next to RTMP: `rtmps` (TLS
    /// terminated by nginx's stream module in front of the receivers),
    /// `srt` (libsrt's `srt-live-transmit` listeners, their output
    /// discarded: no frame or latency figures).
    #[arg(long, value_delimiter = ',', default_value = "rtmp")]
    egress: Vec<Egress>,
    /// Prism's `[runtime] worker_threads` (default: Prism's own default, 1),
    /// and the tee's threads per stream.
    #[arg(long)]
    prism_threads: Option<usize>,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Run Prism for a long time under churn (publishers dropping and
    /// returning, destinations hanging up, admin changes every 3 s) and
    /// print its RSS, open fds and CPU at intervals, with their drift per
    /// hour. Uses --streams, --destinations, --bitrate and --prism-bin.
    Soak {
        /// How long to run, in minutes.
        #[arg(long, default_value_t = 60.0)]
        minutes: f64,
        /// Seconds between samples.
        #[arg(long, default_value_t = 30)]
        interval_s: u64,
    },
    /// The connect storm: 1 stream x --destinations starts publishing while
    /// other streams are live, then all its destinations drop at once;
    /// prints how soon they are live, how the reconnects spread, and the
    /// other streams' p99 latency before and during both.
    Storm {
        /// Streams live beside the storm stream.
        #[arg(long, default_value_t = 4)]
        other_streams: usize,
        /// Destinations of each other stream.
        #[arg(long, default_value_t = 5)]
        other_destinations: usize,
    },
    /// Prism's CPU with one ffmpeg publish over SRT against the same media
    /// over RTMP (--destinations each, --rounds interleaved).
    Ingest,
    /// A primary and a hot backup encoder on one stream (--destinations):
    /// Prism's CPU with and without the backup, then the primary dropped
    /// --switches times; prints the video gap the destinations saw.
    Failover {
        #[arg(long, default_value_t = 20)]
        switches: usize,
    },
    /// The largest load each relay holds on this machine (Prism; with --all
    /// nginx-rtmp, and SRS with --srs-bin): every destination live, no
    /// frame lost once settled, p99 latency within the relay's budget + 5
    /// ms. Uses --bitrate, --seconds, --prism-threads, --srs-bin.
    Capacity {
        /// The shapes of load to search (comma-separated).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "fanout,streams,srt-publishers,rtmps"
        )]
        shapes: Vec<capacity::Shape>,
        /// Destinations per stream in the `streams` and `srt-publishers` shapes.
        #[arg(long, default_value_t = 5)]
        per_stream: usize,
        /// Prism's latency budget (`[fanout] max_delay_ms`).
        #[arg(long, default_value_t = 100)]
        budget_ms: u64,
        /// The largest N (destinations) or S (streams) tried.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// The first N or S tried (default: 50 destinations, 8 streams).
        #[arg(long)]
        start: Option<usize>,
    },
    /// (internal) Run as the plain TCP tee relay.
    Tee {
        #[arg(long)]
        listen: String,
        /// Comma-separated addresses, one connection each per stream.
        #[arg(long)]
        sinks: String,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        /// Threads writing each stream's sinks (see `relay::run_tee`).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Coalesce what is read within this many ms into one write per
        /// sink (a relay's latency budget); 0 writes each read at once.
        #[arg(long, default_value_t = 0)]
        budget_ms: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Against {
    Prism,
    Nginx,
    Srs,
    Tee,
}

/// Send times of every stamped message, by sequence number: the one clock
/// the publisher writes and the sinks read. Kept on the wall clock (ns
/// since the epoch), since that is what the kernel's receive timestamps are
/// in (see `sink`); 0 is "not sent".
pub struct Clock {
    sent: Vec<AtomicU64>,
}

impl Clock {
    pub fn new(capacity: usize) -> Self {
        Self {
            sent: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn mark_sent(&self, seq: u64) {
        if let Some(slot) = self.sent.get(seq as usize) {
            slot.store(wall_clock_ns(), Ordering::Relaxed);
        }
    }

    /// Nanoseconds from `seq`'s send to `at_wall_ns` (wall clock), if it was
    /// sent.
    pub fn age_ns(&self, seq: u64, at_wall_ns: u64) -> Option<u64> {
        let sent = self.sent.get(seq as usize)?.load(Ordering::Relaxed);
        (sent != 0).then(|| at_wall_ns.saturating_sub(sent))
    }
}

/// Now on the wall clock, ns since the epoch.
pub fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What one run measured.
struct Row {
    relay: Variant,
    streams: usize,
    destinations: usize,
    cpu_percent: f64,
    /// The whole machine's busy CPU over the run (relay, harness and
    /// kernel), percent of one core.
    machine_percent: f64,
    rss_mib: f64,
    /// What the harness's sinks received (none with nginx receivers).
    egress_mbit: Option<f64>,
    /// Measured by the harness's sinks (none with nginx receivers).
    latency: Option<Latency>,
    sent: u64,
}

/// To the kernel's receipt at the sink, except `p99_read_ms`: to the
/// sink's read (see `sink`).
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    p99_read_ms: f64,
    lost: u64,
    /// Frames lost once settled (`SinkReport::lost_in_window`).
    lost_in_window: u64,
    /// Destinations that received the measured window's frames.
    live: usize,
}

fn main() {
    let args = Args::parse();
    if let Some(Command::Tee {
        listen,
        sinks,
        streams,
        threads,
        budget_ms,
    }) = &args.command
    {
        let sinks: Vec<String> = sinks.split(',').map(str::to_string).collect();
        let budget = Duration::from_millis(*budget_ms);
        relay::run_tee(listen, &sinks, *streams, *threads, budget);
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let source = match source::prepare(args.bitrate) {
        Ok(source) => source,
        Err(e) => {
            eprintln!("prism-loadgen: {e}");
            std::process::exit(2);
        }
    };
    if let Some(Command::Soak {
        minutes,
        interval_s,
    }) = &args.command
    {
        let options = soak::SoakOptions {
            streams: args.streams,
            destinations: args.destinations,
            duration: Duration::from_secs_f64(minutes * 60.0),
            interval: Duration::from_secs((*interval_s).max(1)),
            prism_bin: args.prism_bin.clone(),
        };
        eprintln!(
            "prism-loadgen: soak: {} stream(s) x {} destinations, {} kbit/s, {minutes} min",
            args.streams, args.destinations, args.bitrate
        );
        match runtime.block_on(soak::run(&options, &source)) {
            Ok(report) => report.print(),
            Err(e) => {
                eprintln!("prism-loadgen: soak failed: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let wan = if args.wan {
        match WanPath::create(args.wan_rtt_ms / 2, args.wan_loss, args.wan_mtu) {
            Ok(wan) => Some(wan),
            Err(e) => {
                eprintln!("prism-loadgen: cannot set up the WAN path: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let outcome = match &args.command {
        Some(Command::Storm {
            other_streams,
            other_destinations,
        }) => {
            let options = storm::StormOptions {
                other_streams: *other_streams,
                other_destinations: *other_destinations,
            };
            Some(runtime.block_on(storm::run(&args, &options, &source, wan.as_ref())))
        }
        Some(Command::Ingest) => Some(runtime.block_on(ingest::run(&args, wan.as_ref()))),
        Some(Command::Failover { switches }) => {
            Some(runtime.block_on(failover::run(&args, *switches, &source)))
        }
        Some(Command::Capacity {
            shapes,
            per_stream,
            budget_ms,
            max,
            start,
        }) => {
            let options = capacity::CapacityOptions {
                shapes: shapes.clone(),
                per_stream: *per_stream,
                budget_ms: *budget_ms,
                max: *max,
                start: *start,
            };
            Some(runtime.block_on(capacity::run_capacity(&args, &options, &source)))
        }
        _ => None,
    };
    if let Some(outcome) = outcome {
        if let Err(e) = outcome {
            eprintln!("prism-loadgen: {e}");
            drop(wan);
            std::process::exit(1);
        }
        return;
    }
    let budgets = if args.budgets.is_empty() {
        vec![args.max_delay_ms]
    } else {
        args.budgets.clone()
    };
    let mut relays = if args.all {
        let mut all = vec![Against::Prism, Against::Nginx];
        if args.srs_bin.is_some() {
            all.push(Against::Srs);
        }
        all.push(Against::Tee);
        all
    } else {
        vec![args.against]
    };
    // One run per Prism budget (and with recording, when asked), in the
    // place of Prism's one.
    let recordings: &[bool] = if args.recording {
        &[false, true]
    } else {
        &[false]
    };

    let relays: Vec<Variant> = relays
        .drain(..)
        .flat_map(|against| match against {
            // The tee coalesces within each budget too: the floor for
            // Prism at that budget.
            Against::Tee => budgets
                .iter()
                .map(|&budget| Variant {
                    against,
                    budget: Some(budget),
                    record: false,
                    egress: Egress::Rtmp,
                    ingest: Ingest::Rtmp,
                })
                .collect(),
            Against::Prism => budgets
                .iter()
                .flat_map(|&budget| {
                    args.egress.iter().flat_map(move |&egress| {
                        recordings.iter().map(move |&record| Variant {
                            against,
                            budget: Some(budget),
                            record,
                            egress,
                            ingest: Ingest::Rtmp,
                        })
                    })
                })
                .collect(),
            _ => vec![Variant {
                against,
                budget: None,
                record: false,
                egress: Egress::Rtmp,
                ingest: Ingest::Rtmp,
            }],
        })
        .collect();
    let mut rounds = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let mut rows = Vec::new();
        for &variant in &relays {
            eprintln!(
                "prism-loadgen: round {round}: {}, {} stream(s) x {} destinations, {} kbit/s, {} s",
                variant.name(),
                args.streams,
                args.destinations,
                args.bitrate,
                args.seconds
            );
            match runtime.block_on(run(&args, variant, &source, wan.as_ref())) {
                Ok(row) => {
                    eprintln!(
                        "prism-loadgen: {}: CPU {:.2} %",
                        variant.name(),
                        row.cpu_percent
                    );
                    rows.push(row);
                }
                Err(e) => eprintln!("prism-loadgen: {} failed: {e}", variant.name()),
            }
        }
        rounds.push(rows);
    }
    print_table(&args, &relays, &rounds, wan.as_ref());
    if args.recording {
        print_recording_floor(&args, &relays, &rounds);
    }
}

/// What recording adds beside its floor: the same bytes written to the same
/// disk the recorder's way by a bare thread (`write_floor`), in rounds
/// interleaved with nothing else running.
fn print_recording_floor(args: &Args, relays: &[Variant], rounds: &[Vec<Row>]) {
    let floors: Vec<f64> = (0..rounds.len().max(1))
        .filter_map(|_| {
            write_floor::measure(args.streams, args.bitrate + 128, args.seconds)
                .map_err(|e| eprintln!("prism-loadgen: the write floor failed: {e}"))
                .ok()
        })
        .collect();
    let Some(floor) = median(floors.clone()) else {
        return;
    };
    let shown: Vec<String> = floors.iter().map(|f| format!("{f:.2}")).collect();
    println!(
        "write floor: {} file(s) at {} kbit/s, one write + fdatasync per second each: {floor:.2} % of a core (by round: {})",
        args.streams,
        args.bitrate + 128,
        shown.join(", ")
    );
    for &recorded in relays.iter().filter(|r| r.record) {
        let plain = Variant {
            record: false,
            ..recorded
        };
        let added: Vec<f64> = rounds
            .iter()
            .filter_map(|rows| {
                let cpu = |relay| {
                    rows.iter()
                        .find(|r| r.relay == relay)
                        .map(|r| r.cpu_percent)
                };
                Some(cpu(recorded)? - cpu(plain)?)
            })
            .collect();
        if let Some(added) = median(added) {
            println!(
                "{} adds {added:.2} % of a core to {}; beyond the write floor: {:+.2} % of a core",
                recorded.name(),
                plain.name(),
                added - floor
            );
        }
    }
}

/// A relay as measured: Prism once per latency budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Variant {
    against: Against,
    /// Prism's `max_delay_ms` (the tee's coalescing budget).
    budget: Option<u64>,
    /// Prism records every stream.
    record: bool,
    /// What Prism's destinations push.
    egress: Egress,
    /// What the publishers send.
    ingest: Ingest,
}

/// The protocol the publishers send (RTMP, or MPEG-TS over SRT by libsrt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingest {
    Rtmp,
    Srt,
}

/// The protocol Prism's destinations push (`--egress`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Egress {
    Rtmp,
    Rtmps,
    Srt,
}

impl Variant {
    fn name(self) -> String {
        let relay = format!("{:?}", self.against).to_lowercase();
        let name = match self.budget {
            Some(0) | None => relay,
            Some(ms) => format!("{relay}/{ms}ms"),
        };
        let name = match self.ingest {
            Ingest::Rtmp => name,
            Ingest::Srt => name + "+srt-in",
        };
        let name = match self.egress {
            Egress::Rtmp => name,
            Egress::Rtmps => name + "+rtmps",
            Egress::Srt => name + "+srt",
        };
        if self.record {
            name + "+rec"
        } else {
            name
        }
    }
}

/// The middle value (the lower middle for an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

async fn run(
    args: &Args,
    variant: Variant,
    source: &source::Source,
    wan: Option<&WanPath>,
) -> Result<Row, String> {
    let against = variant.against;
    let budget = variant.budget.unwrap_or(0);
    let warmup = Duration::from_secs(3);
    let duration = Duration::from_secs(args.seconds.max(5));
    let clocks: Vec<Arc<Clock>> = (0..args.streams)
        .map(|_| {
            Arc::new(Clock::new(
                (duration.as_secs() as usize + 5) * source.messages_per_second() * 2,
            ))
        })
        .collect();
    let raw = against == Against::Tee;
    // The tee sends raw FLV, which only the harness's sinks take.
    let kind = if raw {
        ReceiverKind::Harness
    } else {
        args.receivers
    };
    let receivers = match variant.egress {
        Egress::Srt => Receivers::start_srt(args.destinations, wan)?,
        Egress::Rtmps => Receivers::start(kind, args.destinations, clocks.clone(), raw, wan)?
            .with_tls_front(wan)?,
        Egress::Rtmp => Receivers::start(kind, args.destinations, clocks.clone(), raw, wan)?,
    };
    let relay = Relay::start(variant, args, &receivers).await?;

    let started = Instant::now();
    let measure_from = started + warmup;
    if let Some(sinks) = &receivers.sinks {
        sinks.set_window_start(measure_from);
    }
    let mut publishers = Vec::new();
    for (stream, clock) in clocks.iter().enumerate() {
        let publish = source::publish(
            source.clone(),
            relay.publish_target(stream),
            duration,
            Arc::clone(clock),
        );
        publishers.push(tokio::spawn(publish));
    }
    tokio::time::sleep_until((measure_from).into()).await;
    let cpu_before = relay.cpu_ticks()?;
    let machine_before = relay::machine_ticks()?;
    if let Some(connected) = receivers.nginx_connections(wan) {
        let expected = args.streams * args.destinations;
        if connected < expected {
            return Err(format!(
                "only {connected} of {expected} destinations reached the nginx receivers"
            ));
        }
    }
    let receiver_cpu_before = receivers.nginx_pid().map(relay::cpu_ticks).transpose()?;
    let bytes_before = receivers.sinks.as_ref().map(|s| s.bytes());
    let window_start = Instant::now();
    let mut sent = 0;
    for publisher in publishers {
        sent += publisher.await.map_err(|e| e.to_string())??;
    }
    let window = window_start.elapsed();
    if let Some(sinks) = &receivers.sinks {
        sinks.set_window_end(Instant::now() - Duration::from_secs(1));
    }
    let idle = receivers.idle_srt_receivers();
    if idle > 0 {
        return Err(format!(
            "{idle} SRT receivers received nothing: their destinations were not live"
        ));
    }
    let cpu_after = relay.cpu_ticks()?;
    let machine_after = relay::machine_ticks()?;
    let receiver_cpu_after = receivers.nginx_pid().map(relay::cpu_ticks).transpose()?;
    let rss = relay.rss_kib()?;
    let bytes = receivers
        .sinks
        .as_ref()
        .zip(bytes_before)
        .map(|(s, before)| s.bytes() - before);
    // Let the last messages arrive (over the WAN path too, and past a
    // latency budget) before counting what was lost.
    tokio::time::sleep(Duration::from_millis(1000 + budget)).await;
    let report: Option<SinkReport> = receivers
        .sinks
        .as_ref()
        .map(|sinks| sinks.report(args.streams * args.destinations));
    relay.stop().await;
    if let (Some(before), Some(after)) = (receiver_cpu_before, receiver_cpu_after) {
        let percent = (after - before) as f64 / window.as_secs_f64();
        if percent > 80.0 {
            eprintln!(
                "prism-loadgen: the nginx receivers used {percent:.0} % of a core: they may be what limits this run"
            );
        }
    }

    Ok(Row {
        relay: variant,
        streams: args.streams,
        destinations: args.destinations,
        cpu_percent: relay::cpu_percent(cpu_after - cpu_before, window),
        machine_percent: (machine_after - machine_before) as f64 / window.as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        egress_mbit: bytes.map(|b| b as f64 * 8.0 / window.as_secs_f64() / 1e6),
        latency: report.map(|report| Latency {
            p50_ms: report.percentile_ms(0.50),
            p99_ms: report.percentile_ms(0.99),
            max_ms: report.percentile_ms(1.0),
            p99_read_ms: report.read_percentile_ms(0.99),
            lost: report.lost,
            lost_in_window: report.lost_in_window,
            live: report.live,
        }),
        sent,
    })
}

fn print_table(args: &Args, relays: &[Variant], rounds: &[Vec<Row>], wan: Option<&WanPath>) {
    // Each relay's median run, by CPU.
    let mut rows: Vec<&Row> = Vec::new();
    for &relay in relays {
        let mut runs: Vec<&Row> = rounds
            .iter()
            .flatten()
            .filter(|r| r.relay == relay)
            .collect();
        runs.sort_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent));
        if let Some(row) = runs.get(runs.len().saturating_sub(1) / 2) {
            rows.push(row);
        }
    }
    println!();
    println!(
        "{} stream(s) x {} destinations, {} kbit/s video + 128 kbit/s audio, chunk size {}{}, {} s (3 s warm-up not measured){}",
        args.streams,
        args.destinations,
        args.bitrate,
        match args.nginx_chunk_size {
            Some(nginx) if nginx != args.chunk_size => {
                format!("{} (nginx {nginx})", args.chunk_size)
            }
            _ => args.chunk_size.to_string(),
        },
        args.prism_threads
            .map(|t| format!(", Prism worker_threads {t} (the tee: {t} threads)"))
            .unwrap_or_default(),
        args.seconds,
        if rounds.len() > 1 {
            format!("; median of {} rounds", rounds.len())
        } else {
            String::new()
        }
    );
    println!(
        "receivers: {}; {}",
        match args.receivers {
            ReceiverKind::Harness => "the harness's sinks",
            ReceiverKind::Nginx => "nginx-rtmp (the tee: the harness's sinks)",
        },
        wan.map_or("loopback", |w| w.description.as_str())
    );
    println!(
        "{:<15} {:>5} {:>8} {:>9} {:>9} {:>10} {:>13} {:>8} {:>8} {:>8} {:>9} {:>11}",
        "relay",
        "dests",
        "CPU %",
        "machine %",
        "RSS MiB",
        "egress",
        "CPU ms/dest-s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "p99 read",
        "frames lost"
    );
    for row in &rows {
        let destinations = (row.streams * row.destinations) as f64;
        let per_destination_ms = row.cpu_percent * 10.0 / destinations;
        let (p50, p99, max, p99_read, lost) = match &row.latency {
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
            Some(l) => (
                format!("{:.2}", l.p50_ms),
                format!("{:.2}", l.p99_ms),
                format!("{:.1}", l.max_ms),
                format!("{:.2}", l.p99_read_ms),
                format!("{}/{}", l.lost, row.sent * row.destinations as u64),
            ),
        };
        let egress = row
            .egress_mbit
            .map_or("-".to_string(), |e| format!("{e:.0} Mb/s"));
        println!(
            "{:<15} {:>5} {:>8.1} {:>9.1} {:>9.1} {:>10} {:>13.3} {:>8} {:>8} {:>8} {:>9} {:>11}",
            row.relay.name(),
            row.streams * row.destinations,
            row.cpu_percent,
            row.machine_percent,
            row.rss_mib,
            egress,
            per_destination_ms,
            p50,
            p99,
            max,
            p99_read,
            lost
        );
    }
    if rounds.len() > 1 {
        for &relay in relays {
            let by_round = |what: &str, value: fn(&Row) -> String| {
                let runs: Vec<String> = rounds
                    .iter()
                    .flatten()
                    .filter(|r| r.relay == relay)
                    .map(value)
                    .collect();
                if !runs.is_empty() {
                    println!("{:<15} {what} by round: {}", relay.name(), runs.join(", "));
                }
            };
            by_round("CPU %", |r| format!("{:.2}", r.cpu_percent));
            by_round("machine %", |r| format!("{:.1}", r.machine_percent));
        }
    }
    // Ratios within each round (same machine state), then their median.
    let per_round = |prism: Variant, other: Variant, compare: fn(&Row, &Row) -> f64| {
        let values: Vec<f64> = rounds
            .iter()
            .filter_map(|rows| {
                let row = |relay| rows.iter().find(|r| r.relay == relay);
                Some(compare(row(prism)?, row(other)?))
            })
            .collect();
        median(values)
    };
    // Prism against each other relay; against the tee at its own budget
    // only (the floor for that budget).
    let compared = |prism: &Variant, other: &Variant| {
        other.against != Against::Prism
            && (other.against != Against::Tee || other.budget == prism.budget)
    };
    for &prism in relays.iter().filter(|r| r.against == Against::Prism) {
        for &other in relays.iter().filter(|o| compared(&prism, o)) {
            if let Some(r) = per_round(prism, other, |p, o| p.cpu_percent / o.cpu_percent) {
                println!("{} CPU / {} CPU = {r:.2}", prism.name(), other.name());
            }
        }
    }
    // What another protocol costs next to RTMP in the same Prism run,
    // round by round.
    for &other in relays.iter().filter(|r| r.egress != Egress::Rtmp) {
        let rtmp = Variant {
            egress: Egress::Rtmp,
            ..other
        };
        if let Some(r) = per_round(other, rtmp, |p, o| p.cpu_percent / o.cpu_percent) {
            println!("{} CPU / {} CPU = {r:.2}", other.name(), rtmp.name());
        }
    }
    // What recording adds to the same Prism run, round by round.
    for &recorded in relays.iter().filter(|r| r.record) {
        let plain = Variant {
            record: false,
            ..recorded
        };
        if let Some(r) = per_round(recorded, plain, |p, o| p.cpu_percent / o.cpu_percent) {
            println!("{} CPU / {} CPU = {r:.2}", recorded.name(), plain.name());
        }
        if let Some(d) = per_round(recorded, plain, |p, o| p.rss_mib - o.rss_mib) {
            println!(
                "{} RSS - {} RSS = {d:+.1} MiB",
                recorded.name(),
                plain.name()
            );
        }
    }
    // The whole machine's CPU does not depend on which process the kernel
    // charged a segment's transmission to (see `relay::machine_ticks`).
    for &prism in relays.iter().filter(|r| r.against == Against::Prism) {
        for &other in relays.iter().filter(|o| compared(&prism, o)) {
            let difference = |p: &Row, o: &Row| p.machine_percent - o.machine_percent;
            if let Some(d) = per_round(prism, other, difference) {
                println!(
                    "whole machine with {} - with {} = {d:+.1} % of a core",
                    prism.name(),
                    other.name()
                );
            }
        }
    }
}
