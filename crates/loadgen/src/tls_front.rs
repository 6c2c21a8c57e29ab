//! RTMPS receivers: nginx's stream module terminating TLS in front of the
//! receivers (one process per core, the receiver ports dealt among them,
//! one `listen … ssl` per receiver port, proxied to it in plain TCP), as a
//! platform's ingest front end does; one process alone, decrypting every
//! destination, would bound what the harness can measure. Prism's
//! destinations then push `rtmps://localhost:PORT/…`, trusting the front's
//! private CA through `ca_file`. The certificates are made with the
//! `openssl` command (an ECDSA P-256 key, as most platforms serve).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prism_testkit::nginx::spawn_nginx;
use prism_testkit::{free_port, wait_for_port};

/// Where Debian's libnginx-mod-stream puts the module.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

pub struct TlsFront {
    /// One TLS port per receiver port, in the same order.
    pub ports: Vec<u16>,
    /// The CA the front's certificate is signed by.
    pub ca_file: PathBuf,
    children: Vec<Child>,
    dir: PathBuf,
}

impl TlsFront {
    /// Starts the front for the receivers listening on `host`'s `backends`.
    pub fn start(host: Ipv4Addr, backends: &[u16]) -> Result<Self, String> {
        if !Path::new(NGINX_STREAM_MODULE).exists() {
            return Err(
                "nginx's stream module is not installed (apt-get install -y nginx libnginx-mod-stream)"
                    .into(),
            );
        }
        let dir = std::env::temp_dir().join(format!("prism-loadgen-{}-tls", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        make_certificates(&dir)?;
        let ports: Vec<u16> = backends.iter().map(|_| free_port()).collect();
        let mut front = Self {
            ports,
            ca_file: dir.join("ca.pem"),
            children: Vec::new(),
            dir,
        };
        let processes = std::thread::available_parallelism().map_or(1, |n| n.get());
        for process in 0..processes.min(backends.len()) {
            let servers: String = front
                .ports
                .iter()
                .zip(backends)
                .skip(process)
                .step_by(processes)
                .map(|(port, backend)| {
                    format!("  server {{\n    listen 127.0.0.1:{port} ssl;\n    proxy_pass {host}:{backend};\n  }}\n")
                })
                .collect();
            let own = front.dir.join(format!("front{process}"));
            std::fs::create_dir_all(&own).map_err(|e| e.to_string())?;
            let config = format!(
                "load_module {NGINX_STREAM_MODULE};\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
                 error_log {own}/error.log warn;\npid {own}/nginx.pid;\nevents {{ worker_connections 16384; }}\n\
                 stream {{\n  ssl_certificate {dir}/server.pem;\n  ssl_certificate_key {dir}/server.key;\n{servers}}}\n",
                own = own.display(),
                dir = front.dir.display()
            );
            front
                .children
                .push(spawn_nginx(Command::new("nginx"), &own, &config)?);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for &port in &front.ports {
            if !wait_for_port(port, deadline.saturating_duration_since(Instant::now())) {
                return Err(format!("the TLS front did not listen on 127.0.0.1:{port}"));
            }
        }
        Ok(front)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA and a certificate for `localhost` signed by it, in `dir`.
fn make_certificates(dir: &Path) -> Result<(), String> {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
            &["-subj", "/CN=prism-loadgen CA"],
        ]
        .concat(),
    )?;
    openssl(
        dir,
        &[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    )?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n")
        .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    )
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl (apt-get install -y openssl): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}
