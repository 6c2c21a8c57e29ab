//! The RTMP handshake (C0-C2 / S0-S2), simple and digest (Flash 9) forms.
//!
//! The one place Prism still uses rml_rtmp: its `Handshake` handles both
//! forms and was audited for untrusted input. It reads fixed-size packets
//! (1 + 1536 + 1536 bytes) with no length field a peer controls; its digest
//! offsets are computed modulo 728 and stay inside the packet; it neither
//! recurses nor reserves memory from what it reads. The driver below feeds it
//! at most `READ_SIZE` bytes at a time, so its buffer stays bounded too.

use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Which side of the handshake this end plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Speaks first (a publisher connecting to a server).
    Client,
    Server,
}

const READ_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection closed during the RTMP handshake")]
    Closed,
    #[error("bad RTMP handshake: {0}")]
    Invalid(String),
    #[error("handshake i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the handshake on `socket`; returns the bytes the peer sent past it
/// (the start of its first chunks).
pub async fn handshake<S>(socket: &mut S, role: Role) -> Result<Vec<u8>, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut handshake = Handshake::new(match role {
        Role::Client => PeerType::Client,
        Role::Server => PeerType::Server,
    });
    if role == Role::Client {
        let c0c1 = handshake
            .generate_outbound_p0_and_p1()
            .map_err(|e| HandshakeError::Invalid(format!("{e:?}")))?;
        socket.write_all(&c0c1).await?;
    }
    let mut buf = [0u8; READ_SIZE];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        let (response, leftover) = match handshake.process_bytes(&buf[..n]) {
            Ok(HandshakeProcessResult::InProgress { response_bytes }) => (response_bytes, None),
            Ok(HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            }) => (response_bytes, Some(remaining_bytes)),
            Err(e) => return Err(HandshakeError::Invalid(format!("{e:?}"))),
        };
        socket.write_all(&response).await?;
        if let Some(leftover) = leftover {
            return Ok(leftover);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn client_and_server_complete_and_hand_over_what_follows() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let leftover = handshake(&mut b, Role::Server).await.unwrap();
            let mut rest = leftover;
            while rest.len() < 5 {
                let mut buf = [0u8; 16];
                let n = b.read(&mut buf).await.unwrap();
                rest.extend_from_slice(&buf[..n]);
            }
            rest
        });
        handshake(&mut a, Role::Client).await.unwrap();
        a.write_all(b"hello").await.unwrap();
        assert_eq!(server.await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn garbage_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        a.write_all(&[0x16; 3000]).await.unwrap();
        assert!(matches!(
            handshake(&mut b, Role::Server).await,
            Err(HandshakeError::Invalid(_))
        ));
    }
}
