//! Serves an axum router (the metrics or the admin API) on a TCP listener
//! with the bounds an open port needs, which `axum::serve` does not apply:
//!
//! - a cap on connections per listener, well under the process's file
//!   descriptor limit: past it a newcomer is answered 503 and closed at once,
//!   so it costs a descriptor for a moment and never waits;
//! - a header-read timeout, which hyper also arms while a keep-alive
//!   connection waits for its next request, so it is the idle timeout too
//!   (a response being streamed, such as an event stream, is not idle);
//! - a write-stall timeout: a peer that takes no bytes for that long (an
//!   event-stream client that stopped reading) is dropped;
//! - at most 64 KiB buffered per connection for request heads.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Instant, Sleep};
use tracing::{debug, error, warn};

use prism_media::accept::{AcceptBackoff, Throttle, LOG_INTERVAL};
use prism_media::supervise::catch_panic;

/// Bounds for one HTTP listener.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// Connections open at once.
    pub max_connections: usize,
    /// For a request's head, and for the next request on an idle
    /// keep-alive connection.
    pub header_read_timeout: Duration,
    /// How long the peer may take no bytes while a response is written.
    pub write_stall_timeout: Duration,
}

/// The header-read (and keep-alive idle) timeout: Prometheus and curl send
/// a request's head in one packet; a slow-header client is gone in 10 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes nothing for this long while a response is written.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Request heads larger than this end the connection (hyper's floor is 8 KiB).
const MAX_HEAD_BUFFER: usize = 64 * 1024;
/// How long open requests may take to finish at shutdown; event streams
/// never finish and are cut after it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What a connection past the cap is told before it is closed.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nretry-after: 1\r\n\
connection: close\r\n\r\ntoo many connections\n";

/// Refusals being answered at once; past this a newcomer is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 16;
/// How long a refused client is given to finish sending its request, so
/// that closing does not reset the connection before it reads the 503.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);

/// Tells a connection past the cap why it is closed: the 503, then a short
/// read of what the client sent (a close with unread bytes would make the
/// kernel send a reset, and the client would lose the answer).
async fn refuse(mut socket: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A fresh socket's send buffer is empty: this never blocks.
    if socket.try_write(TOO_MANY_CONNECTIONS).is_err() {
        return;
    }
    let _ = socket.shutdown().await;
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Accepts on `listener` and serves `app` until `shutdown`, within `limits`.
/// `listener_name` labels the log lines and the series
/// `prism_http_connections{listener}` and
/// `prism_http_connections_refused_total{listener,reason="max_connections"}`.
pub async fn serve(
    listener_name: &'static str,
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let mut backoff = AcceptBackoff::new(listener_name);
    let mut refusals = Throttle::new(LOG_INTERVAL);
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (socket, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                Err(e) => {
                    backoff.failed(&e).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!(
                "prism_http_connections_refused_total",
                "listener" => listener_name,
                "reason" => "max_connections"
            )
            .increment(1);
            if let Some(times) = refusals.occurred(Instant::now()) {
                warn!(
                    listener = listener_name,
                    max = limits.max_connections,
                    times,
                    "http connection limit reached; newcomers get 503 (logged once per {} s)",
                    LOG_INTERVAL.as_secs()
                );
            }
            if let Ok(refusing) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    // Supervised like a served connection (counted, logged).
                    if let Err(panic) = catch_panic("http_connection", refuse(socket)).await {
                        error!(listener = listener_name, %remote, %panic, "http refusal task panicked");
                    }
                    drop(refusing);
                });
            }
            continue;
        };
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let open = metrics::gauge!("prism_http_connections", "listener" => listener_name);
            open.increment(1.0);
            let served = serve_connection(socket, app, limits, shutdown);
            if let Err(panic) = catch_panic("http_connection", served).await {
                error!(listener = listener_name, %remote, %panic, "http connection task panicked; connection closed");
            }
            open.decrement(1.0);
        });
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    socket: TcpStream,
    app: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = socket.set_nodelay(true);
    let io = TokioIo::new(WriteStallGuard::new(socket, limits.write_stall_timeout));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BUFFER)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(ended) => ended,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = ended {
        debug!(error = %e, "http connection ended");
    }
}

/// Resolves once shutdown is signalled (holding no borrow of the channel).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// A socket whose writes fail with `TimedOut` once the peer has taken no
/// bytes for `timeout`, so a client that stops reading cannot hold its
/// connection (and the response it stalls) forever.
struct WriteStallGuard {
    socket: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteStallGuard {
    fn new(socket: TcpStream, timeout: Duration) -> Self {
        Self {
            socket,
            timeout,
            stalled: None,
        }
    }

    /// After the socket said Pending: starts the stall clock, or fails the
    /// write once it has run out (its timer wakes the task for that).
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took no bytes for {} s", timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
        }
        result
    }
}

impl AsyncRead for WriteStallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallGuard {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.socket).poll_write(cx, buf) {
            Poll::Pending => self.stall(cx),
            ready => self.progress(ready),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.socket).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.stall(cx),
            ready => self.progress(ready),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn limits(max_connections: usize) -> HttpLimits {
        HttpLimits {
            max_connections,
            header_read_timeout: Duration::from_millis(300),
            write_stall_timeout: Duration::from_millis(300),
        }
    }

    /// A router whose `/big` answer is far larger than socket buffers.
    fn app() -> Router {
        Router::new()
            .route("/", get(|| async { "hello\n" }))
            .route("/big", get(|| async { vec![b'x'; 64 * 1024 * 1024] }))
    }

    async fn start(limits: HttpLimits) -> (std::net::SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve("test", listener, app(), limits, stopped));
        (address, stop)
    }

    async fn get_root(address: std::net::SocketAddr) -> String {
        let mut socket = TcpStream::connect(address).await.unwrap();
        socket
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = socket.read_to_string(&mut answer).await;
        answer
    }

    /// Reads until the server closes; the time it took.
    async fn time_to_close(socket: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut sink = [0u8; 4096];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(5), socket.read(&mut sink)).await
        {
            if n == 0 {
                return started.elapsed();
            }
        }
        panic!("the server did not close the connection within 5 s");
    }

    #[tokio::test]
    async fn idle_and_slow_header_connections_are_closed() {
        let (address, _stop) = start(limits(8)).await;
        let mut idle = TcpStream::connect(address).await.unwrap();
        let mut slow = TcpStream::connect(address).await.unwrap();
        slow.write_all(b"GET / HT").await.unwrap();
        let trickle = async {
            for byte in b"TP/1.1\r\nhost: x\r\n" {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if slow.write_all(&[*byte]).await.is_err() {
                    break;
                }
            }
        };
        trickle.await;
        assert!(time_to_close(&mut idle).await < Duration::from_secs(2));
        assert!(time_to_close(&mut slow).await < Duration::from_secs(2));

        // A keep-alive connection idle after its first answer is closed too.
        let mut keep_alive = TcpStream::connect(address).await.unwrap();
        keep_alive
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 512];
        let n = keep_alive.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        let idle_for = time_to_close(&mut keep_alive).await;
        assert!(
            idle_for >= Duration::from_millis(200) && idle_for < Duration::from_secs(2),
            "{idle_for:?}"
        );
    }

    #[tokio::test]
    async fn past_the_cap_newcomers_get_503_and_the_held_slots_come_back() {
        let (address, _stop) = start(limits(3)).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(TcpStream::connect(address).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let refused = get_root(address).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.ends_with("too many connections\n"), "{refused}");
        // The idle ones time out; then a request gets in.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let answer = get_root(address).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped() {
        let (address, _stop) = start(limits(2)).await;
        let mut reader = TcpStream::connect(address).await.unwrap();
        reader
            .write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 64];
        let _ = reader.read(&mut head).await.unwrap();
        // Stop reading: the server's writes stall, then it gives up and
        // closes, which frees the slot for others.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut drained = 0usize;
        let mut sink = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut sink)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => drained += n,
                Err(_) => panic!("the stalled response was not cut"),
            }
        }
        assert!(drained < 64 * 1024 * 1024, "the whole answer went through");
    }

    #[tokio::test]
    async fn shutdown_ends_the_listener_and_its_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve("test", listener, app(), limits(4), stopped));
        let _idle = TcpStream::connect(address).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(3), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap();
    }
}
