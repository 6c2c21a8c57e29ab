//! The relays under test, each a separate process whose CPU and memory are
//! read from /proc: Prism (release build), nginx with nginx-rtmp-module's
//! `push` (config generated here), and a plain TCP tee (this binary's `tee`
//! subcommand).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::source::Target;
use crate::{Against, Args};

const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct Relay {
    against: Against,
    child: Child,
    port: u16,
    _dir: PathBuf,
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

impl Relay {
    pub async fn start(
        against: Against,
        args: &Args,
        sink_port: u16,
        prism_bin: Option<&Path>,
    ) -> Result<Self, String> {
        let dir =
            std::env::temp_dir().join(format!("prism-loadgen-{}-{against:?}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = free_port()?;
        let child = match against {
            Against::Prism => {
                let mut config = format!(
                    "[rtmp]\nlisten = \"127.0.0.1:{port}\"\n\n[fanout]\nqueue_budget_kib = 16384\nchunk_size = {}\n",
                    args.chunk_size
                );
                for stream in 0..args.streams {
                    config += &format!("\n[[streams]]\nid = \"s{stream}\"\nkey = \"s{stream}\"\n");
                    for d in 0..args.destinations {
                        config += &format!(
                            "  [[streams.destinations]]\n  id = \"d{d}\"\n  url = \"rtmp://127.0.0.1:{sink_port}/sink/s{stream}-d{d}\"\n"
                        );
                    }
                }
                let path = dir.join("prism.toml");
                std::fs::write(&path, config).map_err(|e| e.to_string())?;
                spawn_prism(&path, prism_bin, Stdio::null())?
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
                        applications += &format!(
                            "      push rtmp://127.0.0.1:{sink_port}/sink/s{stream}-d{d};\n"
                        );
                    }
                    applications += "    }\n";
                }
                let config = format!(
                    "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
                     error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\nevents {{ worker_connections 8192; }}\n\
                     rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    chunk_size {chunk_size};\n{applications}  }}\n}}\n",
                    dir = dir.display(),
                    chunk_size = args.nginx_chunk_size.unwrap_or(args.chunk_size)
                );
                let path = dir.join("nginx.conf");
                std::fs::write(&path, config).map_err(|e| e.to_string())?;
                Command::new("nginx")
                    .arg("-c")
                    .arg(&path)
                    .arg("-p")
                    .arg(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start nginx: {e}"))?
            }
            Against::Tee => Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
                .args(["tee", "--listen", &format!("127.0.0.1:{port}"), "--sink"])
                .arg(format!("127.0.0.1:{sink_port}"))
                .args(["--copies", &(args.destinations).to_string()])
                .spawn()
                .map_err(|e| format!("cannot start the tee: {e}"))?,
        };
        // Wait for it to listen (the tee accepts exactly one connection, so
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
            _dir: dir,
        })
    }

    pub fn publish_target(&self, stream: usize) -> Target {
        match self.against {
            Against::Prism => {
                Target::Rtmp(format!("rtmp://127.0.0.1:{}/live/s{stream}", self.port))
            }
            Against::Nginx => Target::Rtmp(format!(
                "rtmp://127.0.0.1:{}/s{stream}/s{stream}",
                self.port
            )),
            Against::Tee => Target::Raw(format!("127.0.0.1:{}", self.port)),
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

/// The floor: accept one publisher, connect `copies` sockets to the sink,
/// and write every byte read to each of them. No protocol, no queues.
pub fn run_tee(listen: &str, sink: &str, copies: usize) {
    let listener = TcpListener::bind(listen).expect("tee listen");
    let (mut publisher, _) = listener.accept().expect("tee accept");
    let mut outputs: Vec<TcpStream> = (0..copies)
        .map(|_| {
            let stream = TcpStream::connect(sink).expect("tee connect");
            let _ = stream.set_nodelay(true);
            stream
        })
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = publisher.read(&mut buf) {
        if n == 0 {
            break;
        }
        for output in &mut outputs {
            if output.write_all(&buf[..n]).is_err() {
                return;
            }
        }
    }
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

/// utime + stime of process `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
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
