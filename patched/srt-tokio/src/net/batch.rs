//! PRISM PATCH: the datagrams one turn of a session loop sends, written
//! together. Upstream sent every packet with its own `sendto`; a sender of a
//! 6 Mbit/s show makes ~570 of them a second, and a keyframe is a burst of a
//! hundred or more. Here consecutive datagrams of one size to one address
//! (the data packets of a burst: 16-byte header and 1316-byte payload) go
//! out in one `sendmsg` with UDP generic segmentation offload
//! (`UDP_SEGMENT`, Linux 4.18 on): the kernel splits it into the same
//! datagrams, and the stack is crossed once per run instead of once per
//! packet. The last datagram of a run may be shorter, as GSO allows. Where
//! the kernel or the device refuses GSO, every datagram is sent on its own,
//! as before, for the rest of the process.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use srt_protocol::packet::Packet;
use tokio::net::UdpSocket;

/// At most this many datagrams in one GSO send (the kernel's
/// `UDP_MAX_SEGMENTS` is 64 up to 5.x, 128 after), and in one batch: a
/// batch is written once it holds this many, so its buffer stays small.
pub const MAX_SEGMENTS: usize = 64;
/// At most this many bytes in one GSO send: one UDP datagram's payload.
const MAX_GSO_BYTES: usize = 65_000;

/// Set once the kernel refused a GSO send: every datagram alone from then.
static GSO_REFUSED: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
pub struct Batch {
    /// The serialized datagrams, back to back.
    bytes: Vec<u8>,
    /// Where each one starts, its length and where it goes.
    datagrams: Vec<(usize, usize, SocketAddr)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn push(&mut self, packet: &Packet, to: SocketAddr) {
        let start = self.bytes.len();
        packet.serialize(&mut self.bytes);
        self.datagrams.push((start, self.bytes.len() - start, to));
    }

    /// Sends every datagram pushed, in order. A send that fails is
    /// skipped, as one `sendto` failing was (SRT retransmits what the peer
    /// misses); the last error is returned.
    pub async fn send(&mut self, socket: &UdpSocket) -> io::Result<()> {
        let mut result = Ok(());
        let mut at = 0;
        while at < self.datagrams.len() {
            let run = self.run_from(at);
            let (start, segment, to) = self.datagrams[at];
            let (last_start, last_len, _) = self.datagrams[at + run - 1];
            let bytes = &self.bytes[start..last_start + last_len];
            if run > 1 && !GSO_REFUSED.load(Ordering::Relaxed) {
                match send_segments(socket, bytes, segment, to).await {
                    Ok(()) => {
                        at += run;
                        continue;
                    }
                    // Sent one by one below, this time and from now on.
                    Err(e) if refuses_gso(&e) => {
                        GSO_REFUSED.store(true, Ordering::Relaxed);
                        crate::warnings::warn(format!(
                            "UDP GSO refused ({e}): SRT datagrams are sent one by one"
                        ));
                    }
                    Err(e) => {
                        result = Err(e);
                        at += run;
                        continue;
                    }
                }
            }
            for &(start, len, to) in &self.datagrams[at..at + run] {
                if let Err(e) = socket.send_to(&self.bytes[start..start + len], to).await {
                    result = Err(e);
                }
            }
            at += run;
        }
        self.bytes.clear();
        self.datagrams.clear();
        result
    }

    /// How many datagrams from `at` one GSO send can carry: the same
    /// address and size (the last may be shorter), within the kernel's
    /// limits.
    fn run_from(&self, at: usize) -> usize {
        let (_, segment, to) = self.datagrams[at];
        let mut run = 1;
        let mut total = segment;
        for &(_, len, next_to) in &self.datagrams[at + 1..] {
            if next_to != to || len > segment || run == MAX_SEGMENTS || total + len > MAX_GSO_BYTES
            {
                break;
            }
            run += 1;
            total += len;
            if len < segment {
                break;
            }
        }
        run
    }
}

/// Whether `error` says this kernel or device cannot segment UDP.
fn refuses_gso(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EIO)
    )
}

#[cfg(target_os = "linux")]
async fn send_segments(
    socket: &UdpSocket,
    bytes: &[u8],
    segment: usize,
    to: SocketAddr,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let address = socket2::SockAddr::from(to);
    let segment = u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    socket
        .async_io(tokio::io::Interest::WRITABLE, || {
            sendmsg_segmented(socket.as_raw_fd(), bytes, segment, &address)
        })
        .await
        .map(|_| ())
}

#[cfg(not(target_os = "linux"))]
async fn send_segments(
    _socket: &UdpSocket,
    _bytes: &[u8],
    _segment: usize,
    _to: SocketAddr,
) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
}

/// One `sendmsg` of `bytes` to `address`, which the kernel splits into
/// datagrams of `segment` bytes (`UDP_SEGMENT`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn sendmsg_segmented(
    fd: std::os::fd::RawFd,
    bytes: &[u8],
    segment: u16,
    address: &socket2::SockAddr,
) -> io::Result<usize> {
    /// `UDP_SEGMENT` from linux/udp.h (not exported by every libc target).
    const UDP_SEGMENT: libc::c_int = 103;
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // Room for one control message carrying a u16, aligned for cmsghdr.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; every pointer set below outlives the
    // call, and the control buffer is large and aligned enough for one
    // cmsghdr with two bytes of data (CMSG_SPACE(2) is 24 on 64-bit).
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= std::mem::size_of_val(&control));
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_name = address.as_ptr() as *mut libc::c_void;
        message.msg_namelen = address.len();
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        message.msg_controllen = space as _;
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_UDP;
        (*header).cmsg_type = UDP_SEGMENT;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header) as *mut u16, segment);
        let sent = libc::sendmsg(fd, &message, 0);
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}
