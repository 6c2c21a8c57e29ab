//! The relays under test, each a separate process whose CPU and memory are
//! read from /proc: Prism (release build), nginx with nginx-rtmp-module's
//! `push`, SRS 5's `forward` (a binary the user built; see docs/benchmarks.md), and
//! a plain TCP tee (this binary's `tee` subcommand). Configs are generated
//! here.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::receivers::Receivers;
use crate::source::Target;
use crate::{Against, Args, Ingest, Variant};
use prism_testkit::free_port;
use prism_testkit::nginx::{spawn_nginx, NGINX_RTMP_MODULE};

pub struct Relay {
    against: Against,
    child: Child,
    port: u16,
    /// Where publishers send SRT (`Ingest::Srt`).
    srt_port: Option<u16>,
    dir: PathBuf,
}

/// Prism's config for a run: stream `s` (id and key `s{s}`) pushed to
/// `destinations[s]` receivers; `extra` is added as is (an `[srt]` section).
pub fn prism_config(
    args: &Args,
    port: u16,
    receivers: &Receivers,
    max_delay_ms: u64,
    destinations: &[usize],
    extra: &str,
) -> String {
    // Every publisher here comes from 127.0.0.1: admission's per-address
    // allowance for connections not yet publishing (16) must cover them
    // all connecting at once, as for encoders behind one NAT.
    let mut config = format!(
        "[rtmp]\nlisten = \"127.0.0.1:{port}\"\nmax_anonymous_per_address = {}\n\n[fanout]\nqueue_budget_kib = 16384\nchunk_size = {}\nmax_delay_ms = {}\n{extra}",
        destinations.len() + 16,
        args.chunk_size,
        max_delay_ms
    );
    if let Some(threads) = args.prism_threads {
        config += &format!("\n[runtime]\nworker_threads = {threads}\n");
    }
    for (stream, &count) in destinations.iter().enumerate() {
        config += &format!("\n[[streams]]\nid = \"s{stream}\"\nkey = \"s{stream}\"\n");
        for d in 0..count {
            config += &format!(
                "  [[streams.destinations]]\n  id = \"d{d}\"\n  url = \"{}\"\n",
                receivers.url(stream, d)
            );
            if let Some(ca_file) = receivers.ca_file() {
                config += &format!("  ca_file = \"{}\"\n", ca_file.display());
            }
        }
    }
    config
}

impl Relay {
    pub async fn start(
        variant: Variant,
        args: &Args,
        receivers: &Receivers,
    ) -> Result<Self, String> {
        let against = variant.against;
        let dir =
            std::env::temp_dir().join(format!("prism-loadgen-{}-{against:?}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port();
        let srt_port = (variant.ingest == Ingest::Srt).then(free_port);
        let max_delay_ms = variant.budget.unwrap_or(0);
        let child = match against {
            Against::Prism => {
                let path = dir.join("prism.toml");
                let destinations = vec![args.destinations; args.streams];
                let srt = srt_port.map_or(String::new(), |port| {
                    format!(
                        "\n[srt]\nlisten = \"127.0.0.1:{port}\"\nmax_connections = {}\n",
                        args.streams + 8
                    )
                });
                let mut config =
                    prism_config(args, port, receivers, max_delay_ms, &destinations, &srt);
                if variant.record {
                    // Every stream recorded, to this disk (fMP4, the default).
                    config = config.replace("\n[[streams]]\n", "\n[[streams]]\nrecord = true\n");
                    config = format!(
                        "[record]\npath = \"{}\"\n\n{config}",
                        dir.join("recordings").display()
                    );
                }
                std::fs::write(&path, config).map_err(|e| e.to_string())?;
                // Its warnings, for a run that fails.
                let log =
                    std::fs::File::create(dir.join("prism.log")).map_err(|e| e.to_string())?;
                spawn_prism(&path, args.prism_bin.as_deref(), Stdio::from(log))?
            }
            Against::Nginx | Against::Tee if srt_port.is_some() => {
                return Err(format!("{against:?} takes no SRT publish"));
            }
            Against::Nginx => {
                if !Path::new(NGINX_RTMP_MODULE).exists() {
                    return Err(
                        "nginx-rtmp is not installed (apt-get install -y nginx libnginx-mod-rtmp)"
                            .into(),
                    );
                }
                let mut applications = String::new();
                for stream in 0..args.streams {
                    applications += &format!("    application s{stream} {{\n      live on;\n");
                    for d in 0..args.destinations {
                        applications += &format!("      push {};\n", receivers.url(stream, d));
                    }
                    applications += "    }\n";
                }
                let config = format!(
                    "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
                     error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\nevents {{ worker_connections 16384; }}\n\
                     rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size {chunk_size};\n{applications}  }}\n}}\n",
                    dir = dir.display(),
                    chunk_size = args.nginx_chunk_size.unwrap_or(args.chunk_size)
                );
                spawn_nginx(Command::new("nginx"), &dir, &config)?
            }
            Against::Srs => {
                let binary = args.srs_bin.as_deref().ok_or(
                    "--against srs needs --srs-bin (an SRS 5 objs/srs; see docs/benchmarks.md)",
                )?;
                // SRS forwards a stream under its own app and name, so each
                // destination is a receiver port of its own.
                let destinations: Vec<String> = receivers
                    .ports
                    .iter()
                    .map(|p| format!("{}:{p}", receivers.host))
                    .collect();
                // SRT (an SRS built with --srt=on): remuxed to RTMP, then
                // forwarded as an RTMP publish is.
                let (srt_server, srt_vhost) = srt_port.map_or((String::new(), ""), |port| {
                    (
                        format!("srt_server {{\n    enabled on;\n    listen {port};\n}}\n"),
                        "    srt {\n        enabled on;\n        srt_to_rtmp on;\n    }\n",
                    )
                });
                let config = format!(
                    "listen {port};\nmax_connections 4000;\ndaemon off;\npid {dir}/srs.pid;\n\
                     srs_log_tank file;\nsrs_log_file {dir}/srs.log;\nsrs_log_level warn;\n{srt_server}\
                     vhost __defaultVhost__ {{\n    chunk_size {chunk_size};\n{srt_vhost}    forward {{\n        enabled on;\n        destination {};\n    }}\n}}\n",
                    destinations.join(" "),
                    dir = dir.display(),
                    chunk_size = args.chunk_size,
                );
                let path = dir.join("srs.conf");
                std::fs::write(&path, config).map_err(|e| e.to_string())?;
                Command::new(binary)
                    .arg("-c")
                    .arg(&path)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start SRS ({}): {e}", binary.display()))?
            }
            Against::Tee => {
                let sinks: Vec<String> = receivers
                    .ports
                    .iter()
                    .map(|p| format!("{}:{p}", receivers.host))
                    .collect();
                Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                    .args(["tee", "--listen", &format!("127.0.0.1:{port}")])
                    .args(["--streams", &args.streams.to_string()])
                    .args(["--threads", &args.prism_threads.unwrap_or(1).to_string()])
                    .args(["--budget-ms", &max_delay_ms.to_string()])
                    .args(["--sinks", &sinks.join(",")])
                    .spawn()
                    .map_err(|e| format!("cannot start the tee: {e}"))?
            }
        };
        // Wait for it to listen (the tee accepts exactly its publishers, so
        // it is given time instead of a probe).
        if against == Against::Tee {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for _ in 0..100 {
            if against == Against::Tee {
                break;
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            against,
            child,
            port,
            srt_port,
            dir,
        })
    }

    pub fn publish_target(&self, stream: usize) -> Target {
        if let Some(port) = self.srt_port {
            let stream_id = match self.against {
                Against::Srs => format!("#!::r=sink/s{stream},m=publish"),
                _ => format!("s{stream}"),
            };
            return Target::Srt(format!("srt://127.0.0.1:{port}?streamid={stream_id}"));
        }
        match self.against {
            Against::Prism => {
                Target::Rtmp(format!("rtmp://127.0.0.1:{}/live/s{stream}", self.port))
            }
            Against::Nginx => Target::Rtmp(format!(
                "rtmp://127.0.0.1:{}/s{stream}/s{stream}",
                self.port
            )),
            Against::Srs => Target::Rtmp(format!("rtmp://127.0.0.1:{}/sink/s{stream}", self.port)),
            Against::Tee => Target::Raw {
                address: format!("127.0.0.1:{}", self.port),
                stream,
            },
        }
    }

    /// utime + stime of the relay process, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64, String> {
        cpu_ticks(self.child.id())
    }

    pub fn rss_kib(&self) -> Result<u64, String> {
        rss_kib(self.child.id())
    }

    pub async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A run that ends early (a publisher that failed) never reaches `stop`:
/// the relay must not outlive it and load the runs after it.
impl Drop for Relay {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Recordings of a run are gigabytes: gone with it.
        let _ = std::fs::remove_dir_all(self.dir.join("recordings"));
    }
}

/// The floor: accept `streams` publishers; for each, connect to every sink
/// and write every byte read to each of them. No protocol, no queues. With
/// `threads` above 1 the sinks are split into that many groups, as Prism's
/// lanes split a stream's destinations: the reading thread writes to the
/// first, and hands each batch to one thread per other group.
///
/// With a `budget` it coalesces as a relay with that latency budget does:
/// what it reads within `budget` of a batch's first read goes to each sink
/// in one vectored write (the floor for Prism at the same `max_delay_ms`).
pub fn run_tee(listen: &str, sinks: &[String], streams: usize, threads: usize, budget: Duration) {
    let listener = TcpListener::bind(listen).expect("tee listen");
    let mut handles = Vec::new();
    for _ in 0..streams.max(1) {
        let (publisher, _) = listener.accept().expect("tee accept");
        let sinks = sinks.to_vec();
        handles.push(std::thread::spawn(move || {
            tee_one(publisher, &sinks, threads, budget)
        }));
    }
    for handle in handles {
        let _ = handle.join();
    }
}

/// What one publisher sent within one budget: its reads, in order.
type Batch = Arc<Vec<Vec<u8>>>;

fn tee_one(mut publisher: TcpStream, sinks: &[String], threads: usize, budget: Duration) {
    let outputs: Vec<TcpStream> = sinks
        .iter()
        .map(|sink| {
            let stream = TcpStream::connect(sink).expect("tee connect");
            let _ = stream.set_nodelay(true);
            stream
        })
        .collect();
    // Round-robin, as Prism's lanes fill (the emptiest lane first).
    let mut groups: Vec<Vec<TcpStream>> = (0..threads.max(1)).map(|_| Vec::new()).collect();
    let group_count = groups.len();
    for (n, output) in outputs.into_iter().enumerate() {
        groups[n % group_count].push(output);
    }
    let mut own = groups.remove(0);
    let helpers: Vec<std::sync::mpsc::SyncSender<Batch>> = groups
        .into_iter()
        .map(|mut group| {
            let (sender, batches) = std::sync::mpsc::sync_channel::<Batch>(1024);
            std::thread::spawn(move || {
                while let Ok(batch) = batches.recv() {
                    if !write_batch_to(&mut group, &batch) {
                        return;
                    }
                }
            });
            sender
        })
        .collect();
    let mut reads: Vec<Vec<u8>> = Vec::new();
    let mut first_read = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // With a batch open, wait for the publisher only until its budget is
        // spent; then it goes out (and whatever arrives next opens the next).
        let due = !reads.is_empty()
            && !readable_within(&publisher, budget.saturating_sub(first_read.elapsed()));
        // Whether the publisher is done (what is batched still goes out).
        let done = !due
            && match publisher.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => {
                    if reads.is_empty() {
                        first_read = Instant::now();
                    }
                    reads.push(buf[..n].to_vec());
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
                Err(_) => true,
            };
        let send = due || done || (!reads.is_empty() && first_read.elapsed() >= budget);
        if send && !reads.is_empty() {
            let batch: Batch = Arc::new(std::mem::take(&mut reads));
            for helper in &helpers {
                let _ = helper.send(Arc::clone(&batch));
            }
            if !write_batch_to(&mut own, &batch) {
                return;
            }
        }
        if done {
            return;
        }
    }
}

/// Waits up to `wait` for `socket` to have something to read (or to close).
/// `ppoll` keeps the budget to the microsecond, where a socket read timeout
/// runs on the kernel's coarser tick and would hold batches longer than the
/// budget says.
fn readable_within(socket: &TcpStream, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    if wait.is_zero() {
        return false;
    }
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    // SAFETY: one valid pollfd, a valid timespec and no signal mask.
    let ready = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
    // An error (EINTR) counts as readable: the read that follows tells.
    ready != 0
}

/// Each output gets the batch in one vectored write (more only when the
/// socket takes part of it). False once a write fails (the run is over).
fn write_batch_to(outputs: &mut [TcpStream], batch: &[Vec<u8>]) -> bool {
    outputs.iter_mut().all(|output| {
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|read| IoSlice::new(read)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match output.write_vectored(slices) {
                Ok(0) => return false,
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    })
}

/// The prism binary: the one given, or the one beside this binary.
pub fn prism_binary(prism_bin: Option<&Path>) -> Result<PathBuf, String> {
    match prism_bin {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("prism")),
    }
}

/// Starts Prism on `config`, its log going to `stderr`.
/// Writes `config` to `dir/prism.toml` and starts Prism on it, its output
/// discarded.
pub fn start_prism_with(
    dir: &Path,
    config: &str,
    prism_bin: Option<&Path>,
) -> Result<Child, String> {
    let path = dir.join("prism.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    spawn_prism(&path, prism_bin, Stdio::null())
}

pub fn spawn_prism(
    config: &Path,
    prism_bin: Option<&Path>,
    stderr: Stdio,
) -> Result<Child, String> {
    let binary = prism_binary(prism_bin)?;
    Command::new(&binary)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start {} (build it: cargo build --release -p prism): {e}",
                binary.display()
            )
        })
}

/// CPU `ticks` (of `cpu_ticks`) spent over `window`, as a percentage of
/// one core. USER_HZ is 100 on every Linux architecture Prism targets.
pub fn cpu_percent(ticks: u64, window: Duration) -> f64 {
    ticks as f64 / 100.0 / window.as_secs_f64() * 100.0
}

/// utime + stime of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `/proc/…/stat` file (a process's or a thread's),
/// in clock ticks.
pub fn stat_ticks(path: &str) -> Result<u64, String> {
    let stat = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    // Fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("bad /proc stat field {n}"))
    };
    Ok(field(11)? + field(12)?)
}

/// Busy time of the whole machine (every core: user, nice, system, irq,
/// softirq, steal), in clock ticks. Behind the WAN path a TCP segment is
/// sent, checksummed and segmented in whichever context releases it: the
/// relay's own `sendmsg` when its socket has room, or the harness's
/// delay-line thread when an ACK it delivers opens the window. Per-process
/// CPU then depends on which; the whole machine's does not.
pub fn machine_ticks() -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| e.to_string())?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .ok_or("no cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().map_err(|_| format!("bad /proc/stat field {f}")))
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal
    let field = |n: usize| fields.get(n).copied().unwrap_or(0);
    Ok(field(0) + field(1) + field(2) + field(5) + field(6) + field(7))
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}

/// File descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> Result<usize, String> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .count())
}
