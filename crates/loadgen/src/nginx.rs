//! nginx-rtmp as the harness runs it: as a relay under test, and as the
//! receivers that record what relays send.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Where Debian's libnginx-mod-rtmp puts the module.
pub const NGINX_RTMP_MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

/// Writes `config` as `dir/nginx.conf` and starts `command` (nginx, or
/// `ip netns exec … nginx`) on it, with `dir` as its prefix.
pub fn spawn_nginx(mut command: Command, dir: &Path, config: &str) -> Result<Child, String> {
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
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
