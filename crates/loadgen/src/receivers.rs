//! Where the relays' destinations go: the harness's own sinks (which count
//! frames and measure latency), or real RTMP servers (nginx-rtmp, one
//! process, `live on` with no players). Either listens on one port per
//! destination index (SRS forwards a stream under its own name, so each
//! destination needs its own server address), on loopback or behind the
//! WAN path.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::sink::Sinks;
use crate::tls_front::TlsFront;
use crate::wan::WanPath;
use crate::Clock;
use prism_testkit::free_port;
use prism_testkit::nginx::{spawn_nginx, NGINX_RTMP_MODULE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReceiverKind {
    /// The harness's sinks: frames lost and latency are measured.
    Harness,
    /// nginx-rtmp servers: real RTMP receivers (no latency figures).
    Nginx,
}

pub struct Receivers {
    /// The address the relays send to.
    pub host: Ipv4Addr,
    /// One port per destination index.
    pub ports: Vec<u16>,
    pub sinks: Option<Sinks>,
    nginx: Option<Child>,
    _dir: Option<PathBuf>,
    /// TLS terminated in front of the receivers (`with_tls_front`).
    tls: Option<TlsFront>,
    /// libsrt's listeners (`start_srt`).
    srt: Vec<Child>,
}

impl Receivers {
    pub fn start(
        kind: ReceiverKind,
        destinations: usize,
        clocks: Vec<Arc<Clock>>,
        raw: bool,
        wan: Option<&WanPath>,
    ) -> Result<Self, String> {
        let host = wan.map_or(Ipv4Addr::LOCALHOST, |w| w.receiver_ip);
        match kind {
            ReceiverKind::Harness => {
                let mut listeners = Vec::with_capacity(destinations);
                for _ in 0..destinations {
                    listeners.push(match wan {
                        Some(wan) => wan.listen(0)?,
                        None => TcpListener::bind((host, 0)).map_err(|e| e.to_string())?,
                    });
                }
                let ports = listeners
                    .iter()
                    .map(|l| l.local_addr().map(|a| a.port()))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
                let sinks = crate::sink::start(clocks, raw, listeners)?;
                Ok(Self {
                    host,
                    ports,
                    sinks: Some(sinks),
                    nginx: None,
                    _dir: None,
                    tls: None,
                    srt: Vec::new(),
                })
            }
            ReceiverKind::Nginx => {
                if raw {
                    return Err("the tee sends raw FLV: it needs the harness's receivers".into());
                }
                Self::start_nginx(destinations, host, wan)
            }
        }
    }

    fn start_nginx(
        destinations: usize,
        host: Ipv4Addr,
        wan: Option<&WanPath>,
    ) -> Result<Self, String> {
        if !std::path::Path::new(NGINX_RTMP_MODULE).exists() {
            return Err(
                "nginx-rtmp is not installed (apt-get install -y nginx libnginx-mod-rtmp)".into(),
            );
        }
        let dir = std::env::temp_dir().join(format!("prism-loadgen-{}-rx", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        // Ports below the ephemeral range (32768 up), so no outgoing
        // connection takes one between the check and nginx's bind; any in a
        // fresh namespace, checked on loopback.
        let base = 20_000 + (std::process::id() % 8) as u16 * 1500;
        let mut ports = Vec::with_capacity(destinations);
        let mut candidate = base;
        while ports.len() < destinations {
            if candidate >= 32_768 {
                return Err("no free ports for the nginx receivers below 32768".into());
            }
            if wan.is_some() || TcpListener::bind((host, candidate)).is_ok() {
                ports.push(candidate);
            }
            candidate += 1;
        }
        // A server block per port: one block's ports share its streams, and
        // SRS forwards every destination under the same stream name.
        let servers: String = ports
            .iter()
            .map(|port| {
                format!(
                    "  server {{\n    listen {host}:{port};\n    application sink {{\n      live on;\n    }}\n  }}\n"
                )
            })
            .collect();
        let config = format!(
            "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
             error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\nevents {{ worker_connections 16384; }}\n\
             rtmp {{\n{servers}}}\n",
            dir = dir.display()
        );
        let command = match wan {
            Some(wan) => wan.command("nginx"),
            None => std::process::Command::new("nginx"),
        };
        let child = spawn_nginx(command, &dir, &config)?;
        let receivers = Self {
            host,
            ports,
            sinks: None,
            nginx: Some(child),
            _dir: Some(dir),
            tls: None,
            srt: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &receivers.ports {
            while TcpStream::connect_timeout(&(host, *port).into(), Duration::from_secs(1)).is_err()
            {
                if Instant::now() > deadline {
                    return Err(format!(
                        "the nginx receivers did not listen on {host}:{port}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(receivers)
    }

    /// The receiving nginx's process id, to read its CPU.
    pub fn nginx_pid(&self) -> Option<u32> {
        self.nginx.as_ref().map(Child::id)
    }

    /// How many connections the nginx receivers hold now (each destination
    /// publishing is one), counted with `ss` where they run.
    pub fn nginx_connections(&self, wan: Option<&WanPath>) -> Option<usize> {
        self.nginx.as_ref()?;
        let mut command = match wan {
            Some(wan) => wan.command("ss"),
            None => std::process::Command::new("ss"),
        };
        let output = command
            .args(["-Htn", "state", "established"])
            .output()
            .ok()?;
        let local_ports: std::collections::HashSet<String> = self
            .ports
            .iter()
            .map(|p| format!("{}:{p}", self.host))
            .collect();
        Some(
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter(|line| {
                    line.split_whitespace()
                        .nth(2)
                        .is_some_and(|local| local_ports.contains(local))
                })
                .count(),
        )
    }

    /// SRT receivers: libsrt's own `srt-live-transmit` listening with its
    /// defaults, one per destination, discarding what it receives (so no
    /// frame or latency figures).
    pub fn start_srt(destinations: usize, wan: Option<&WanPath>) -> Result<Self, String> {
        if wan.is_some() {
            return Err("SRT destinations are measured on loopback only".into());
        }
        let mut receivers = Self {
            host: Ipv4Addr::LOCALHOST,
            ports: Vec::with_capacity(destinations),
            sinks: None,
            nginx: None,
            _dir: None,
            tls: None,
            srt: Vec::with_capacity(destinations),
        };
        for _ in 0..destinations {
            let port = free_port();
            let child = std::process::Command::new("srt-live-transmit")
                .args([
                    "-a",
                    "no",
                    "-q",
                    &format!("srt://127.0.0.1:{port}?mode=listener"),
                    "file://con",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| {
                    format!("cannot start srt-live-transmit (apt-get install -y srt-tools): {e}")
                })?;
            receivers.ports.push(port);
            receivers.srt.push(child);
        }
        std::thread::sleep(Duration::from_millis(500));
        for child in &mut receivers.srt {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "an srt-live-transmit receiver exited at once: {status}"
                ));
            }
        }
        Ok(receivers)
    }

    /// How many SRT receivers have written nothing of what they received
    /// (`wchar` in their `/proc/PID/io`): destinations that never reached
    /// them.
    pub fn idle_srt_receivers(&self) -> usize {
        let written = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/io"))
                .ok()
                .and_then(|io| {
                    io.lines()
                        .find_map(|line| line.strip_prefix("wchar: "))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .unwrap_or(0)
        };
        self.srt
            .iter()
            .filter(|child| written(child.id()) == 0)
            .count()
    }

    /// Puts a TLS front (`tls_front`) before the receivers: destinations
    /// then push RTMPS to it.
    pub fn with_tls_front(mut self, wan: Option<&WanPath>) -> Result<Self, String> {
        if wan.is_some() {
            return Err("RTMPS destinations are measured on loopback only".into());
        }
        self.tls = Some(TlsFront::start(self.host, &self.ports)?);
        Ok(self)
    }

    /// Where destination `d` of `stream` sends (the name the sinks parse).
    pub fn url(&self, stream: usize, d: usize) -> String {
        if !self.srt.is_empty() {
            return format!("srt://{}:{}", self.host, self.ports[d]);
        }
        match &self.tls {
            Some(tls) => format!("rtmps://localhost:{}/sink/s{stream}-d{d}", tls.ports[d]),
            None => format!("rtmp://{}:{}/sink/s{stream}-d{d}", self.host, self.ports[d]),
        }
    }

    /// The CA a destination must trust to reach the TLS front, if any.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.tls.as_ref().map(|tls| tls.ca_file.as_path())
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        for child in &mut self.srt {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.nginx {
            // `ip netns exec` runs nginx in its own process: the kill
            // reaches it (exec replaces ip).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
