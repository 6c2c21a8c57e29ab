//! Soak mode: a long run of the churn a relay sees over weeks, compressed.
//! N streams × M destinations; every publisher drops and returns (sometimes
//! within the grace period, sometimes after it), a third of the destinations
//! are served by a sink that hangs up at random, and the admin API disables,
//! enables, adds and removes destinations every few seconds. Prism's RSS,
//! open file descriptors and CPU are sampled at intervals, and their drift
//! per hour (least squares over the samples after the first fifth) printed.

use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use prism_testkit::free_port;
use prism_testkit::rtmp::{serve, Accept};

use crate::relay::{cpu_percent, cpu_ticks, open_fds, rss_kib, spawn_prism};
use crate::source::{self, Source, Target};
use crate::Clock;

/// What the soak runs.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub streams: usize,
    pub destinations: usize,
    pub duration: Duration,
    pub interval: Duration,
    pub prism_bin: Option<PathBuf>,
}

const TOKEN: &str = "soak-admin-token-0123456789";
const GRACE_S: u64 = 5;

/// One sample of Prism's process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub cpu_percent: f64,
}

/// The run's figures.
#[derive(Debug)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub publishes: u64,
    pub hangups: u64,
    pub admin_changes: u64,
    pub admin_failures: u64,
}

impl SoakReport {
    /// Least-squares slope of `value` per hour over the samples after the
    /// first fifth (start-up and the first connections are not drift).
    pub fn drift_per_hour(&self, value: impl Fn(&Sample) -> f64) -> f64 {
        let skip = self.samples.len() / 5;
        let points: Vec<(f64, f64)> = self.samples[skip..]
            .iter()
            .map(|s| (s.at_s, value(s)))
            .collect();
        if points.len() < 2 {
            return 0.0;
        }
        let n = points.len() as f64;
        let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
        let (mut num, mut den) = (0.0, 0.0);
        for (x, y) in &points {
            num += (x - mean_x) * (y - mean_y);
            den += (x - mean_x) * (x - mean_x);
        }
        if den == 0.0 {
            0.0
        } else {
            num / den * 3600.0
        }
    }

    pub fn print(&self) {
        let first = self.samples.first();
        let last = self.samples.last();
        let max_rss = self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
        let max_fds = self.samples.iter().map(|s| s.fds).max().unwrap_or(0);
        let mean_cpu = self.samples.iter().map(|s| s.cpu_percent).sum::<f64>()
            / self.samples.len().max(1) as f64;
        println!(
            "soak: {} publishes, {} sink hang-ups, {} admin changes ({} failed)",
            self.publishes, self.hangups, self.admin_changes, self.admin_failures
        );
        if let (Some(first), Some(last)) = (first, last) {
            println!(
                "soak: rss {:.1} -> {:.1} MiB (max {:.1}), fds {} -> {} (max {max_fds}), mean CPU {mean_cpu:.1} %",
                first.rss_kib as f64 / 1024.0,
                last.rss_kib as f64 / 1024.0,
                max_rss as f64 / 1024.0,
                first.fds,
                last.fds,
            );
        }
        println!(
            "soak: drift per hour: rss {:+.2} MiB, fds {:+.1}, cpu {:+.2} points",
            self.drift_per_hour(|s| s.rss_kib as f64 / 1024.0),
            self.drift_per_hour(|s| s.fds as f64),
            self.drift_per_hour(|s| s.cpu_percent),
        );
    }
}

/// Runs the soak against a Prism it starts; prints a line per sample.
pub async fn run(options: &SoakOptions, source: &Source) -> Result<SoakReport, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let hangups = Arc::new(AtomicU64::new(0));
    let steady = start_sink(None, Arc::clone(&hangups)).await?;
    let flaky = start_sink(Some(5_000..30_000), Arc::clone(&hangups)).await?;
    let (rtmp_port, admin_port) = (free_port(), free_port());

    let dir = std::env::temp_dir().join(format!("prism-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{rtmp_port}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{TOKEN}\"\n\n\
         [fanout]\nconnect_timeout_s = 3\n"
    );
    for stream in 0..options.streams {
        config += &format!(
            "\n[[streams]]\nid = \"s{stream}\"\nkey = \"soak-s{stream}\"\nreconnect_grace_s = {GRACE_S}\n"
        );
        for d in 0..options.destinations {
            let port = if d % 3 == 2 { flaky } else { steady };
            config += &format!(
                "  [[streams.destinations]]\n  id = \"d{d}\"\n  url = \"rtmp://127.0.0.1:{port}/sink/s{stream}-d{d}\"\n"
            );
        }
    }
    let config_path = dir.join("prism.toml");
    std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("prism.log")).map_err(|e| e.to_string())?;
    let child = spawn_prism(&config_path, options.prism_bin.as_deref(), Stdio::from(log))?;
    let prism = RunningPrism(child);
    let pid = prism.0.id();
    wait_for_port(rtmp_port).await?;

    let publishes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for stream in 0..options.streams {
        tasks.push(tokio::spawn(publisher_churn(
            source.clone(),
            rtmp_port,
            stream,
            Arc::clone(&stop),
            Arc::clone(&publishes),
        )));
    }
    let admin_changes = Arc::new(AtomicU64::new(0));
    let admin_failures = Arc::new(AtomicU64::new(0));
    tasks.push(tokio::spawn(admin_churn(
        admin_port,
        options.clone(),
        steady,
        Arc::clone(&stop),
        Arc::clone(&admin_changes),
        Arc::clone(&admin_failures),
    )));

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last_cpu = (cpu_ticks(pid)?, Instant::now());
    while started.elapsed() < options.duration {
        tokio::time::sleep(options.interval).await;
        let ticks = cpu_ticks(pid).map_err(|e| format!("prism is gone: {e}"))?;
        let now = Instant::now();
        let cpu_percent = cpu_percent(ticks - last_cpu.0, now.duration_since(last_cpu.1));
        last_cpu = (ticks, now);
        let sample = Sample {
            at_s: started.elapsed().as_secs_f64(),
            rss_kib: rss_kib(pid)?,
            fds: open_fds(pid)?,
            cpu_percent,
        };
        println!(
            "soak: t={:>6.0}s rss={:>7.1} MiB fds={:>4} cpu={:>5.1} % publishes={} admin={}",
            sample.at_s,
            sample.rss_kib as f64 / 1024.0,
            sample.fds,
            sample.cpu_percent,
            publishes.load(Ordering::Relaxed),
            admin_changes.load(Ordering::Relaxed),
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    Ok(SoakReport {
        samples,
        publishes: publishes.load(Ordering::Relaxed),
        hangups: hangups.load(Ordering::Relaxed),
        admin_changes: admin_changes.load(Ordering::Relaxed),
        admin_failures: admin_failures.load(Ordering::Relaxed),
    })
}

/// Prism, stopped (SIGTERM, then SIGKILL) however the soak ends.
struct RunningPrism(Child);

impl Drop for RunningPrism {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A small deterministic generator: the soak needs variety, not secrecy.
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn roll(&mut self, range: Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start).max(1)
    }
}

/// Publishes for 20 to 60 s, stops, comes back after 0 to 15 s (within the
/// grace period or after it), until the soak ends.
async fn publisher_churn(
    source: Source,
    port: u16,
    stream: usize,
    stop: Arc<AtomicBool>,
    publishes: Arc<AtomicU64>,
) {
    let mut dice = Dice::new(stream as u64 + 1);
    while !stop.load(Ordering::Relaxed) {
        let length = Duration::from_secs(dice.roll(20..60));
        // The publisher stamps sequence numbers for latency; not measured here.
        let clock = Arc::new(Clock::new(0));
        let target = Target::Rtmp(format!("rtmp://127.0.0.1:{port}/live/soak-s{stream}"));
        let _ = source::publish(source.clone(), target, length, clock).await;
        publishes.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(dice.roll(0..15))).await;
    }
}

/// Every 3 s: disable or enable a destination; every fifth change, add an
/// extra destination to a stream or remove the one added before.
async fn admin_churn(
    port: u16,
    options: SoakOptions,
    sink_port: u16,
    stop: Arc<AtomicBool>,
    changes: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) {
    let mut dice = Dice::new(0xad);
    let mut extra: Option<(usize, u64)> = None;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        n += 1;
        let stream = dice.roll(0..options.streams as u64) as usize;
        let (method, path, body) = if n.is_multiple_of(5) {
            match extra.take() {
                Some((stream, id)) => (
                    "DELETE",
                    format!("/v1/streams/s{stream}/destinations/extra{id}"),
                    String::new(),
                ),
                None => {
                    extra = Some((stream, n));
                    (
                        "POST",
                        format!("/v1/streams/s{stream}/destinations"),
                        format!(
                            "{{\"id\":\"extra{n}\",\"url\":\"rtmp://127.0.0.1:{sink_port}/sink/extra\",\"key\":\"s{stream}-extra{n}\"}}"
                        ),
                    )
                }
            }
        } else {
            let d = dice.roll(0..options.destinations as u64);
            let action = if dice.roll(0..2) == 0 {
                "disable"
            } else {
                "enable"
            };
            (
                "PUT",
                format!("/v1/streams/s{stream}/destinations/d{d}/{action}"),
                String::new(),
            )
        };
        match http(port, method, &path, &body).await {
            Ok(status) if status < 300 => changes.fetch_add(1, Ordering::Relaxed),
            _ => failures.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// One HTTP/1.0 request to the admin API; its status code.
async fn http(port: u16, method: &str, path: &str, body: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {response:?}"))
}

/// An RTMP server that accepts every publish and discards the media;
/// with `hang_up_ms`, each connection is closed after a random time in it.
async fn start_sink(
    hang_up_ms: Option<Range<u64>>,
    hangups: Arc<AtomicU64>,
) -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    tokio::spawn(async move {
        let mut dice = Dice::new(u64::from(port));
        while let Ok((socket, _)) = listener.accept().await {
            let lifetime = hang_up_ms
                .clone()
                .map(|range| Duration::from_millis(dice.roll(range)));
            let hangups = Arc::clone(&hangups);
            tokio::spawn(async move {
                let served = discard(socket);
                match lifetime {
                    Some(lifetime) => {
                        if tokio::time::timeout(lifetime, served).await.is_err() {
                            hangups.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        let _ = served.await;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// A destination that accepts the publish and keeps nothing.
async fn discard(mut socket: TcpStream) -> Result<(), String> {
    serve(&mut socket, &mut Accept).await.map(|_| ())
}

async fn wait_for_port(port: u16) -> Result<(), String> {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("prism did not listen on {port}"))
}
