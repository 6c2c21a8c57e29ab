//! nginx with nginx-rtmp-module (Debian's `libnginx-mod-rtmp`): the real RTMP
//! server that the suite relays to and the load harness measures against.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::{free_port, wait_for_port};

/// Where Debian's libnginx-mod-rtmp puts the module.
pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Writes `config` as `dir/nginx.conf` and starts `command` (nginx, or
/// `ip netns exec … nginx`) on it, with `dir` as its prefix.
pub fn spawn_nginx(mut command: Command, dir: &Path, config: &str) -> Result<Child, String> {
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    command
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))
}

/// nginx-rtmp on a free port with one application, `live`, that records
/// what it receives into `dir` (`NAME.flv` per stream); also an origin that
/// players pull from. Stopped when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts it; panics (naming the package to install) when it cannot.
    pub fn start(dir: &Path) -> Self {
        assert!(
            Path::new(NGINX_RTMP_MODULE).exists(),
            "nginx-rtmp is missing: apt-get install -y nginx libnginx-mod-rtmp"
        );
        let port = free_port();
        std::fs::create_dir_all(dir).unwrap();
        let config = format!(
            "load_module {NGINX_RTMP_MODULE};\nworker_processes 1;\nmaster_process off;\ndaemon off;\n\
             error_log {dir}/error.log warn;\npid {dir}/nginx.pid;\nevents {{ worker_connections 64; }}\n\
             rtmp {{\n  server {{\n    listen 127.0.0.1:{port};\n    application live {{\n      live on;\n      \
             record all;\n      record_path {dir};\n    }}\n  }}\n}}\n",
            dir = dir.display()
        );
        let child = spawn_nginx(Command::new("nginx"), dir, &config).unwrap();
        let nginx = Self {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        assert!(
            wait_for_port(port, Duration::from_secs(5)),
            "nginx did not listen on {port}"
        );
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
