//! Ports on loopback for the servers a test starts.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A port that was free a moment ago, for TCP and UDP alike (SRT listens on
/// UDP), and never handed out before in this process: the kernel may give a
/// released port 0 bind again, and the tests of one binary run in parallel,
/// so two of them could otherwise be told the same port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("loopback has a free port")
            .port();
        if !handed_out.contains(&port) && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `port` (loopback);
/// false if nothing did within `within`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_handed_out_once_and_is_free_for_tcp_and_udp() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len());
        let port = free_port();
        let _tcp = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let _udp = UdpSocket::bind(("127.0.0.1", port)).unwrap();
        assert!(wait_for_port(port, Duration::from_secs(1)));
    }
}
