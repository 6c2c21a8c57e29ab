use std::{
    convert::TryFrom,
    error,
    fmt::{Debug, Display, Formatter},
    io::{self, Cursor, ErrorKind},
    net::SocketAddr,
    sync::Arc,
};

use bytes::BytesMut;
use futures::channel::mpsc::Receiver;
use futures::{channel::mpsc, prelude::*};
use socket2::{Domain, Protocol, Socket, Type};
use srt_protocol::packet::{Packet, ReceivePacketResult};
use tokio::net::{lookup_host, UdpSocket};

use crate::options::*;

mod batch;

pub async fn bind_socket(options: &SocketOptions) -> Result<UdpSocket, io::Error> {
    let socket = Socket::new(
        if options.connect.local.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;

    let send_buffer_size = usize::try_from(options.connect.udp_send_buffer_size.0).unwrap();
    let recv_buffer_size = usize::try_from(options.connect.udp_recv_buffer_size.0).unwrap();

    socket.set_nonblocking(true)?; // required for passing to tokio
    socket.set_recv_buffer_size(recv_buffer_size)?;
    warn_if_capped(&socket, recv_buffer_size);
    socket.set_send_buffer_size(send_buffer_size)?;
    socket.bind(&options.connect.local.into())?;

    UdpSocket::from_std(socket.into())
}

/// PRISM PATCH: the kernel grants a receive buffer up to
/// `net.core.rmem_max` (Debian's default: 208 KiB), whatever was asked; a
/// burst past what it granted (keyframes of many publishers arriving at
/// once on a listener's one socket) is dropped before SRT sees it, and
/// costs retransmissions or, past the latency, frames. Said once per
/// process.
fn warn_if_capped(socket: &Socket, asked: usize) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    // Linux reports twice what it grants (the other half is its overhead).
    let granted = socket.recv_buffer_size().map_or(asked, |reported| {
        if cfg!(target_os = "linux") {
            reported / 2
        } else {
            reported
        }
    });
    if granted < asked && !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        crate::warnings::warn(format!(
            "the kernel capped SRT's UDP receive buffer at {} KiB of the {} KiB asked: \
             raise net.core.rmem_max (sysctl -w net.core.rmem_max={asked}) so that bursts \
             from many publishers are not dropped",
            granted / 1024,
            asked / 1024
        ));
    }
}

pub async fn lookup_remote_host(remote: &SocketAddress) -> Result<SocketAddr, io::Error> {
    use SocketHost::*;
    let mut remote_address = match &remote.host {
        Domain(domain) => lookup_host(format!("{domain}:0"))
            .await?
            .next()
            .ok_or_else(|| {
                io::Error::new(ErrorKind::NotFound, OptionsError::InvalidRemoteAddress)
            })?,
        Ipv4(ipv4) => SocketAddr::new((*ipv4).into(), 0),
        Ipv6(ipv6) => SocketAddr::new((*ipv6).into(), 0),
    };
    if remote_address.port() == 0 {
        remote_address.set_port(remote.port);
    }
    Ok(remote_address)
}

pub struct PacketSocket {
    socket: Arc<UdpSocket>,
    stream: Option<mpsc::Receiver<ReceivePacketResult>>,
    buffer: BytesMut,
    // PRISM PATCH: whether the socket is IPv6, read once. Upstream asked the
    // kernel (getsockname) for every datagram it parsed.
    ipv6: bool,
    // PRISM PATCH: the datagrams of one turn of the session loop, written
    // out together by `flush` (see `batch`).
    batch: batch::Batch,
}

impl PacketSocket {
    pub fn from_socket(socket: Arc<UdpSocket>, buffer_capacity: usize) -> Self {
        let ipv6 = socket.local_addr().is_ok_and(|local| local.is_ipv6());
        Self {
            socket,
            stream: None,
            buffer: BytesMut::with_capacity(buffer_capacity),
            ipv6,
            batch: batch::Batch::default(),
        }
    }

    pub fn clone_channel(
        &self,
        channel_buffer: usize,
    ) -> (mpsc::Sender<ReceivePacketResult>, Self) {
        let (packet_sender, packet_receiver) = mpsc::channel(channel_buffer);
        (
            packet_sender,
            Self {
                socket: self.socket.clone(),
                stream: Some(packet_receiver),
                buffer: BytesMut::with_capacity(self.buffer.capacity()),
                ipv6: self.ipv6,
                batch: batch::Batch::default(),
            },
        )
    }

    pub async fn send(&mut self, packet: (Packet, SocketAddr)) -> Result<usize, io::Error> {
        self.buffer.clear();
        packet.0.serialize(&mut self.buffer);
        self.socket.send_to(&self.buffer, packet.1).await
    }

    /// PRISM PATCH: adds `packet` to the datagrams `flush` writes; true
    /// once they are a GSO send's worth, to be flushed before more.
    pub fn queue(&mut self, packet: (Packet, SocketAddr)) -> bool {
        self.batch.push(&packet.0, packet.1);
        self.batch.len() >= batch::MAX_SEGMENTS
    }

    /// PRISM PATCH: writes what `queue` gathered: runs of datagrams of one
    /// size to one address in one `sendmsg` with UDP GSO where the kernel
    /// has it, the others one by one.
    pub async fn flush(&mut self) -> Result<(), io::Error> {
        self.batch.send(&self.socket).await
    }

    pub async fn receive(&mut self) -> ReceivePacketResult {
        match self.stream.as_mut() {
            Some(stream) => Self::stream_receive(stream).await,
            None => self.socket_receive().await,
        }
    }

    async fn stream_receive(stream: &mut Receiver<ReceivePacketResult>) -> ReceivePacketResult {
        stream.next().await.unwrap_or_else(|| {
            Err(io::Error::new(ErrorKind::NotConnected, PacketStreamClosedError).into())
        })
    }

    async fn socket_receive(&mut self) -> ReceivePacketResult {
        loop {
            self.socket.readable().await?;
            self.buffer.clear();
            return match self.socket.try_recv_buf_from(&mut self.buffer) {
                Ok((size, from)) => self.parse(size, from),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => Err(e.into()),
            };
        }
    }

    fn parse(&mut self, size: usize, from: SocketAddr) -> ReceivePacketResult {
        let packet = Packet::parse(&mut Cursor::new(&self.buffer[0..size]), self.ipv6)?;
        Ok((packet, from))
    }
}

#[derive(Debug, Eq, PartialEq)]
pub struct PacketStreamClosedError;

impl Display for PacketStreamClosedError {
    fn fmt(&self, f: &mut Formatter<'_>) -> std::fmt::Result {
        write!(f, "packet stream was closed")
    }
}

impl error::Error for PacketStreamClosedError {}

#[cfg(test)]
mod tests {
    use super::*;
    use assert_matches::assert_matches;

    #[tokio::test]
    async fn resolve_dns() {
        let socket_address = SocketAddress {
            host: SocketHost::Domain("localhost".to_string()),
            port: 3000,
        };
        let remote_host = lookup_remote_host(&socket_address).await.unwrap();
        assert_matches!(
            remote_host.to_string().as_str(),
            "127.0.0.1:3000" | "[::1]:3000"
        );
    }
}
