//! A WAN-like path for the receivers: they sit in a network namespace of
//! their own, joined to this one by a pair of TUN devices whose packets this
//! process carries across through a delay line, dropping a share of them on
//! the way to the receivers. TCP runs end to end over it, so a relay's
//! destination sockets see a real round trip and real losses: their send
//! buffers fill and the relay's queued path does the work, as it does toward
//! a real platform. (`tc netem` would be the usual tool, but the kernels
//! this runs on here are built without it; a delay line in user space costs
//! the harness some CPU, never the relay's.) Set up when the run starts and
//! torn down when it ends (`Drop`); needs root and iproute2.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct WanPath {
    namespace: String,
    host_link: String,
    /// The relay's side of the link.
    pub host_ip: Ipv4Addr,
    /// Where receivers listen, inside the namespace.
    pub receiver_ip: Ipv4Addr,
    pub description: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e} (apt-get install -y iproute2)", args[0]))?;
    if !output.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

impl WanPath {
    /// `delay_ms` each way (the round trip is twice it); `loss_percent` of
    /// the packets toward the receivers are lost; `mtu` of both devices.
    pub fn create(delay_ms: u32, loss_percent: f64, mtu: u32) -> Result<Self, String> {
        let id = std::process::id() % 10_000;
        let subnet = (id % 250) as u8 + 1;
        let path = Self {
            namespace: format!("prism-lg-{id}"),
            host_link: format!("plg{id}a"),
            host_ip: Ipv4Addr::new(10, 77, subnet, 1),
            receiver_ip: Ipv4Addr::new(10, 77, subnet, 2),
            description: format!(
                "WAN path: receivers in a network namespace, {} ms RTT, {loss_percent} % loss toward them, MTU {mtu}",
                2 * delay_ms
            ),
        };
        let peer = format!("plg{id}b");
        let ns = path.namespace.clone();
        // On any failure, Drop removes what was made.
        run(&["ip", "netns", "add", &ns])?;
        let host_tun = open_tun(&path.host_link)?;
        let peer_tun = in_namespace(&ns, {
            let peer = peer.clone();
            move || open_tun(&peer)
        })?;
        let (host, receiver) = (path.host_ip.to_string(), path.receiver_ip.to_string());
        let mtu = mtu.to_string();
        run(&[
            "ip",
            "addr",
            "add",
            &host,
            "peer",
            &receiver,
            "dev",
            &path.host_link,
        ])?;
        // A deep device queue: the delay line is a thread, and a relay that
        // writes to a hundred sockets at once must not find the default 500
        // packets full while it is off the CPU (losses beyond the set rate).
        let queue = "20000";
        let up = ["mtu", mtu.as_str(), "txqueuelen", queue, "up"];
        run(&[&["ip", "link", "set", path.host_link.as_str()][..], &up].concat())?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        in_ns(&["ip", "addr", "add", &receiver, "peer", &host, "dev", &peer])?;
        in_ns(&[&["ip", "link", "set", peer.as_str()][..], &up].concat())?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        let delay = Duration::from_millis(u64::from(delay_ms));
        let (to_receivers, to_relay) = (
            host_tun.try_clone().map_err(|e| e.to_string())?,
            peer_tun.try_clone().map_err(|e| e.to_string())?,
        );
        carry("wan-out", host_tun, to_relay, delay, loss_percent / 100.0)?;
        carry("wan-back", peer_tun, to_receivers, delay, 0.0)?;
        Ok(path)
    }

    /// A listening socket inside the namespace (the socket stays there).
    pub fn listen(&self, port: u16) -> Result<TcpListener, String> {
        let ip = self.receiver_ip;
        in_namespace(&self.namespace, move || {
            TcpListener::bind((ip, port)).map_err(|e| format!("bind {ip}:{port}: {e}"))
        })
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.namespace, program]);
        command
    }
}

impl Drop for WanPath {
    fn drop(&mut self) {
        // The devices go with their file descriptors when the process
        // ends; the namespace must be deleted.
        let _ = run(&["ip", "link", "del", &self.host_link]);
        let _ = run(&["ip", "netns", "del", &self.namespace]);
    }
}

/// Runs `make` on a thread inside network namespace `namespace`: what it
/// creates (a socket, a TUN device) belongs there.
fn in_namespace<T: Send + 'static>(
    namespace: &str,
    make: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let netns = format!("/var/run/netns/{namespace}");
    std::thread::spawn(move || {
        let file = File::open(&netns).map_err(|e| format!("{netns}: {e}"))?;
        // SAFETY: setns on a valid namespace fd changes only this
        // thread's network namespace; the thread ends right after.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("setns: {}", std::io::Error::last_os_error()));
        }
        make()
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Creates TUN device `name` (IP packets, no packet-information header).
fn open_tun(name: &str) -> Result<File, String> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun: {e}"))?;
    let mut request = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    request.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes an ifreq, which `request` is laid
    // out as, and the fd is an open /dev/net/tun.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut request) } != 0 {
        return Err(format!(
            "TUNSETIFF {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// Carries every packet read from `from` to `to`, `delay` later, losing
/// `loss` of them (a fraction), on two threads: one reads and stamps, one
/// waits and writes, so the delay is the same for every packet and their
/// order is kept. The threads are named `{name}-read` and `{name}-write`,
/// so that the harness's own cost shows by name in `top -H` or a profile.
fn carry(
    name: &str,
    mut from: File,
    mut to: File,
    delay: Duration,
    loss: f64,
) -> Result<(), String> {
    let (sender, packets) = mpsc::channel::<(Instant, Vec<u8>)>();
    let thread = |role: &str| std::thread::Builder::new().name(format!("{name}-{role}"));
    thread("read")
        .spawn(move || {
            let mut random = Random(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = from.read(&mut buf) {
                if random.chance(loss) {
                    continue;
                }
                if sender
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        })
        .map_err(|e| format!("spawn the delay line's reader: {e}"))?;
    thread("write")
        .spawn(move || {
            let mut due: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
            loop {
                if due.is_empty() {
                    match packets.recv() {
                        Ok(packet) => due.push_back(packet),
                        Err(_) => return,
                    }
                }
                due.extend(packets.try_iter());
                let (at, _) = due.front().expect("filled above");
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                let (_, packet) = due.pop_front().expect("filled above");
                // A full device queue loses the packet, as a router's would.
                let _ = to.write(&packet);
            }
        })
        .map_err(|e| format!("spawn the delay line's writer: {e}"))?;
    Ok(())
}

/// xorshift64: enough to pick which packets are lost.
struct Random(u64);

impl Random {
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}
