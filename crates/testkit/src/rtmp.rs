//! A fake RTMP destination for tests, built on Prism's own server session
//! (`prism_rtmp::ServerSession`): it answers a publish as a platform would
//! (accepts or refuses it), hands every media message to the test, and
//! misbehaves when told to (pauses, stops reading, stops acknowledging).
//! What it does is a `Script`; `serve` runs one connection with it.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use prism_rtmp::{ChunkWriter, Message, Role, ServerEvent, ServerLimits, ServerSession};

/// How the server answers a publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    /// `NetStream.Publish.BadName` with this description, as a platform
    /// answers a wrong stream key; the connection then closes.
    Refuse(String),
}

/// What the server does after each round (input parsed, answers written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Reads on.
    Read,
    /// Stops reading for a while, then reads on.
    Pause(Duration),
    /// Never reads again and keeps the connection open: `serve` returns
    /// `Served::Held`, and the caller holds the socket (a frozen server).
    Hold,
    /// Reads and throws everything away, unparsed, until the peer closes:
    /// it never acknowledges again (an ingest hung behind a live TCP front).
    Discard,
    /// Closes the connection.
    Close,
}

/// What a round of the connection looked like, for `Script::next`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// A publish was accepted on this connection.
    pub publishing: bool,
    /// Media messages received so far.
    pub media: u64,
}

/// A fake destination's behaviour. Every method has the well-behaved
/// default: accept, keep nothing, read on.
pub trait Script {
    fn publish(&mut self, _stream_name: &str) -> Answer {
        Answer::Accept
    }

    fn media(&mut self, _message: Message) {}

    fn next(&mut self, _progress: Progress) -> Next {
        Next::Read
    }
}

/// A well-behaved destination that keeps nothing.
pub struct Accept;

impl Script for Accept {}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// The peer closed it (or the script did).
    Closed,
    /// The script asked to hold it (`Next::Hold`).
    Held,
}

/// Serves one connection, from the handshake on, as `script` says; returns
/// how it ended and what it saw. An error is the peer's: a broken
/// handshake, bytes that are not RTMP, a reset.
pub async fn serve<S, Sc>(socket: &mut S, script: &mut Sc) -> Result<(Served, Progress), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Sc: Script + ?Sized,
{
    let mut input = prism_rtmp::handshake(socket, Role::Server)
        .await
        .map_err(|e| e.to_string())?;
    let mut session = ServerSession::new(ServerLimits {
        max_message_len: 16 << 20,
        max_partial_messages: 16,
    });
    let (mut out, mut events) = (ChunkWriter::new(128), Vec::new());
    let mut buf = vec![0u8; 64 * 1024];
    let mut progress = Progress::default();
    loop {
        session
            .handle_input(&input, &mut out, &mut events)
            .map_err(|e| e.to_string())?;
        let mut refused = false;
        for event in events.drain(..) {
            match event {
                ServerEvent::PublishRequested { stream_key, .. } => {
                    match script.publish(&stream_key) {
                        Answer::Accept => {
                            session.accept_publish(&mut out);
                            progress.publishing = true;
                        }
                        Answer::Refuse(description) => {
                            session.reject_publish(&mut out, &description);
                            refused = true;
                        }
                    }
                }
                ServerEvent::Media(message) => {
                    progress.media += 1;
                    script.media(message);
                }
                ServerEvent::PublishEnded => {}
            }
        }
        out.write_to(socket, None)
            .await
            .map_err(|e| e.to_string())?;
        if refused {
            return Ok((Served::Closed, progress));
        }
        match script.next(progress) {
            Next::Read => {}
            Next::Pause(pause) => tokio::time::sleep(pause).await,
            Next::Hold => return Ok((Served::Held, progress)),
            Next::Discard => {
                while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                return Ok((Served::Closed, progress));
            }
            Next::Close => return Ok((Served::Closed, progress)),
        }
        match socket.read(&mut buf).await {
            Ok(0) => return Ok((Served::Closed, progress)),
            Ok(n) => input = buf[..n].to_vec(),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}
