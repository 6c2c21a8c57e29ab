//! PRISM PATCH: datagrams read in batches. Upstream read every datagram with
//! its own `recvfrom`; a listener's one socket takes every caller's
//! datagrams (~570 a second per 6 Mbit/s publisher, and a keyframe's burst
//! of a hundred or more at once). Here one `recvmmsg` takes up to `SLOTS`
//! datagrams that are waiting, and they are handed out one by one before the
//! socket is read again. Where `recvmmsg` is missing, one datagram is read
//! per call, as before.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Datagrams taken by one `recvmmsg`.
const SLOTS: usize = 32;
/// Room for one datagram: an SRT packet is at most 1500 bytes (the MSS) less
/// the IP and UDP headers; a larger datagram is dropped, as truncated.
const SLOT_BYTES: usize = 1500;

pub struct ReceivedBatch {
    /// `SLOTS` buffers of `SLOT_BYTES`, back to back.
    buffers: Box<[u8]>,
    /// Each received datagram's slot, length and sender, in arrival order
    /// (a slot whose datagram was dropped has no entry).
    received: Vec<(usize, usize, SocketAddr)>,
    /// The next of `received` to hand out.
    next: usize,
}

impl Default for ReceivedBatch {
    fn default() -> Self {
        Self {
            buffers: vec![0; SLOTS * SLOT_BYTES].into_boxed_slice(),
            received: Vec::with_capacity(SLOTS),
            next: 0,
        }
    }
}

impl ReceivedBatch {
    /// The next datagram read and not yet handed out.
    pub fn next(&mut self) -> Option<(&[u8], SocketAddr)> {
        let &(slot, len, from) = self.received.get(self.next)?;
        self.next += 1;
        let start = slot * SLOT_BYTES;
        Some((&self.buffers[start..start + len], from))
    }

    /// Reads what is waiting on `socket`, or fails with `WouldBlock`, which
    /// clears its readiness.
    pub fn fill(&mut self, socket: &UdpSocket) -> io::Result<()> {
        self.received.clear();
        self.next = 0;
        socket.try_io(tokio::io::Interest::READABLE, || {
            read_batch(socket, &mut self.buffers, &mut self.received)
        })
    }
}

#[cfg(target_os = "linux")]
fn read_batch(
    socket: &UdpSocket,
    buffers: &mut [u8],
    received: &mut Vec<(usize, usize, SocketAddr)>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let datagrams = recvmmsg(socket.as_raw_fd(), buffers)?;
    for (slot, (len, truncated, from)) in datagrams.into_iter().enumerate() {
        // A truncated datagram is no SRT packet; nor is a non-IP sender's.
        if let (false, Some(from)) = (truncated, from.as_socket()) {
            received.push((slot, len, from));
        }
    }
    Ok(())
}

/// One `recvmmsg` into `buffers` (`SLOTS` slots of `SLOT_BYTES`), without
/// waiting: each datagram's length, whether it was truncated, and its
/// sender.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn recvmmsg(
    fd: std::os::fd::RawFd,
    buffers: &mut [u8],
) -> io::Result<Vec<(usize, bool, socket2::SockAddr)>> {
    assert_eq!(buffers.len(), SLOTS * SLOT_BYTES);
    // SAFETY: sockaddr_storage, iovec and mmsghdr are plain data, zero is a
    // valid value of each; every pointer set below points into `buffers`,
    // `addresses` or `iovecs`, which outlive the call, and each iovec and
    // name length is its own buffer's size. The kernel writes at most
    // `SLOTS` headers and reports how many; only those are read.
    unsafe {
        let mut addresses: [libc::sockaddr_storage; SLOTS] = std::mem::zeroed();
        let mut iovecs: [libc::iovec; SLOTS] = std::mem::zeroed();
        let mut headers: [libc::mmsghdr; SLOTS] = std::mem::zeroed();
        for (slot, ((iovec, header), address)) in iovecs
            .iter_mut()
            .zip(headers.iter_mut())
            .zip(addresses.iter_mut())
            .enumerate()
        {
            iovec.iov_base = buffers[slot * SLOT_BYTES..].as_mut_ptr() as *mut libc::c_void;
            iovec.iov_len = SLOT_BYTES;
            header.msg_hdr.msg_name = address as *mut libc::sockaddr_storage as *mut libc::c_void;
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            header.msg_hdr.msg_iov = iovec as *mut libc::iovec;
            header.msg_hdr.msg_iovlen = 1;
        }
        let count = libc::recvmmsg(
            fd,
            headers.as_mut_ptr(),
            SLOTS as _,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        );
        if count < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(headers
            .iter()
            .zip(addresses)
            .take(count as usize)
            .map(|(header, address)| {
                let truncated = header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let from = socket2::SockAddr::new(address, header.msg_hdr.msg_namelen);
                (header.msg_len as usize, truncated, from)
            })
            .collect())
    }
}

#[cfg(not(target_os = "linux"))]
fn read_batch(
    socket: &UdpSocket,
    buffers: &mut [u8],
    received: &mut Vec<(usize, usize, SocketAddr)>,
) -> io::Result<()> {
    let (len, from) = socket.try_recv_from(&mut buffers[..SLOT_BYTES])?;
    received.push((0, len, from));
    Ok(())
}
