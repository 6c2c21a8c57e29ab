//! SRT destinations (`srt://`, caller mode). The stream reaches them as
//! MPEG-TS, muxed once per stream by the hub and shared by every SRT
//! destination (`StreamHub::subscribe_ts`); this task cuts it into
//! datagrams of seven 188-byte packets, as libsrt callers send, and hands
//! them to srt-tokio. The queue, its budget and keyframe drop policy, the
//! backoff, grace and standby are the same as for RTMP destinations: only
//! the session differs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use srt_tokio::SrtSocket;
use tokio::sync::watch;
use tracing::debug;

use prism_media::mpegts::DATAGRAM_LEN;
use prism_media::{MediaMessage, StreamHub};

use crate::error::{DestinationError, ErrorKind};
use crate::queue::Batch;

use crate::session::{
    stop_requested, went_live, Control, DestinationConfig, SessionEnd, BATCH_MESSAGES,
};
use crate::status::DestinationStatus;
use crate::writer::SessionQueue;

/// A receiver that sends nothing back for this long (no ACK, no keepalive:
/// a live receiver ACKs every 10 ms while data flows, and keeps the
/// connection alive every second when idle) is gone. SRT's own peer idle
/// timeout waits for 16 expirations of its EXP timer and 5 s, about 6 s on
/// loopback; the relay reconnects sooner, so a restarted receiver is fed
/// again within seconds.
const RECEIVER_SILENT: Duration = Duration::from_millis(2500);

/// How often srt-tokio reports the connection's counters (what
/// `RECEIVER_SILENT` is judged on).
const STATISTICS_EVERY: Duration = Duration::from_millis(250);

/// A datagram's worth of TS not yet full waits this long for the next
/// message before it goes out short. libsrt callers (ffmpeg, OBS) wait
/// until it is full; the wait bounds what it adds to latency.
const PARTIAL_HOLD: Duration = Duration::from_millis(40);

/// Cuts a stream of TS bytes into SRT datagrams of `DATAGRAM_LEN`: whole
/// datagrams are slices of the shared TS bytes (no copy); only the packets
/// that straddle two messages are copied into one datagram.
#[derive(Debug, Default)]
pub struct Datagrams {
    partial: BytesMut,
}

impl Datagrams {
    /// Appends `ts` (whole 188-byte packets) and moves every full datagram
    /// to `out`.
    pub fn push(&mut self, ts: &Bytes, out: &mut Vec<Bytes>) {
        let mut rest = ts.clone();
        if !self.partial.is_empty() {
            let take = (DATAGRAM_LEN - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest.split_to(take));
            if self.partial.len() < DATAGRAM_LEN {
                return;
            }
            out.push(self.partial.split().freeze());
        }
        while rest.len() >= DATAGRAM_LEN {
            out.push(rest.split_to(DATAGRAM_LEN));
        }
        self.partial.extend_from_slice(&rest);
    }

    /// Moves what is held to `out` as one short datagram.
    pub fn flush(&mut self, out: &mut Vec<Bytes>) {
        if !self.partial.is_empty() {
            out.push(self.partial.split().freeze());
        }
    }

    pub fn holding(&self) -> bool {
        !self.partial.is_empty()
    }
}

/// Connects, subscribes to the stream's TS and relays it until the publish
/// ends, the destination is stopped, or the receiver goes away.
pub(crate) async fn session(
    hub: &Arc<StreamHub>,
    config: &DestinationConfig,
    status: &Arc<DestinationStatus>,
    queue: &Arc<SessionQueue>,
    control: &mut watch::Receiver<Control>,
    served: &mut Option<u64>,
) -> SessionEnd {
    let connect_started = Instant::now();
    let mut socket = tokio::select! {
        socket = connect(config) => match socket {
            Ok(socket) => socket,
            Err(error) => return SessionEnd::Failed(error),
        },
        () = stop_requested(control) => return SessionEnd::Stopped,
    };
    let Some(publish_session) = hub.subscribe_ts(queue) else {
        close(&mut socket).await;
        return SessionEnd::PublisherEnded;
    };
    *served = Some(publish_session);
    went_live(hub, config, status, connect_started);
    let end = relay(status, queue, &mut socket, config, control).await;
    hub.unsubscribe(queue);
    close(&mut socket).await;
    end
}

async fn connect(config: &DestinationConfig) -> Result<SrtSocket, DestinationError> {
    let url = &config.url;
    let options = url
        .srt
        .clone()
        .unwrap_or_else(|| unreachable!("an srt:// url"));
    let mut builder = SrtSocket::builder().set(|o| {
        o.connect.timeout = config.connect_timeout;
        o.session.statistics_interval = STATISTICS_EVERY;
    });
    if let Some(latency) = options.latency {
        builder = builder.latency(latency);
    }
    if let Some(passphrase) = &options.passphrase {
        let passphrase = passphrase.expose().to_string().try_into();
        let key_size = options.key_length.try_into();
        let (Ok(passphrase), Ok(key_size)) = (passphrase, key_size) else {
            return Err(DestinationError::new(
                ErrorKind::Internal,
                "the SRT passphrase or pbkeylen is out of range",
            ));
        };
        builder = builder.set(|o| {
            o.encryption.passphrase = Some(passphrase);
            o.encryption.key_size = key_size;
        });
    }
    let stream_id = options.stream_id.as_ref().map(|id| id.expose());
    // Resolved here, so that a name that does not resolve says so.
    let dns = |why: String| DestinationError::new(ErrorKind::Dns, why);
    let address = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| dns(format!("cannot resolve {}: {e}", url.host)))?
        .next()
        .ok_or_else(|| dns(format!("{} did not resolve to any address", url.host)))?;
    builder
        .call(address.to_string().as_str(), stream_id)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => DestinationError::new(
                ErrorKind::ConnectTimeout,
                format!(
                    "no SRT answer from {} within {} s",
                    url.host_port(),
                    config.connect_timeout.as_secs()
                ),
            ),
            std::io::ErrorKind::ConnectionRefused => DestinationError::new(
                ErrorKind::Rejected,
                format!(
                    "the SRT listener refused the connection: {e} (check streamid and passphrase)"
                ),
            ),
            _ => DestinationError::new(
                ErrorKind::Connect,
                format!("SRT connect to {} failed: {e}", url.host_port()),
            ),
        })
}

async fn relay(
    status: &DestinationStatus,
    queue: &SessionQueue,
    socket: &mut SrtSocket,
    config: &DestinationConfig,
    control: &mut watch::Receiver<Control>,
) -> SessionEnd {
    let mut batch: Vec<MediaMessage> = Vec::with_capacity(BATCH_MESSAGES);
    let mut datagrams = Datagrams::default();
    let mut out: Vec<Bytes> = Vec::new();
    let mut statistics = socket.statistics().clone();
    let mut receiver = ReceiverHeard::new(Instant::now());
    status.set_verified(false);
    let mut checks = tokio::time::interval(STATISTICS_EVERY);
    loop {
        // Read what srt-tokio reported even while the queue keeps the task
        // busy, so a long burst is never taken for a silent receiver.
        while let Some(Some(counters)) = statistics.next().now_or_never() {
            receiver.hear(&counters, status);
        }
        if receiver.silent_for(Instant::now()) >= RECEIVER_SILENT {
            return SessionEnd::Failed(DestinationError::new(
                ErrorKind::AckTimeout,
                format!(
                    "the SRT receiver stopped answering: nothing from it for {:.1} s",
                    RECEIVER_SILENT.as_secs_f64()
                ),
            ));
        }
        if control.has_changed().unwrap_or(true) {
            let c = *control.borrow_and_update();
            if c.stops() {
                datagrams.flush(&mut out);
                let _ = send(status, socket, &mut out, config).await;
                return SessionEnd::Stopped;
            }
        }
        match queue.try_batch(&mut batch, BATCH_MESSAGES) {
            Some(Batch::Ready) => {
                for message in batch.drain(..) {
                    datagrams.push(&message.payload, &mut out);
                }
                if let Err(e) = send(status, socket, &mut out, config).await {
                    return SessionEnd::Failed(e);
                }
                continue;
            }
            Some(Batch::Ended) => {
                datagrams.flush(&mut out);
                let _ = send(status, socket, &mut out, config).await;
                return SessionEnd::PublisherEnded;
            }
            Some(Batch::Interrupted) => continue,
            // SRT destinations never set a latency budget: libsrt paces
            // its datagrams by its own latency.
            Some(Batch::Hold(_)) | None => {}
        }
        let hold = async {
            if datagrams.holding() {
                tokio::time::sleep(PARTIAL_HOLD).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            biased;
            () = queue.wait() => {}
            received = socket.next() => match received {
                // A receiver sends nothing but control packets; data from
                // it is ignored.
                Some(Ok(_)) => {}
                Some(Err(e)) => return SessionEnd::Failed(DestinationError::io("SRT connection", &e)),
                None => {
                    return SessionEnd::Failed(DestinationError::closed(
                        "the SRT receiver closed the connection",
                    ))
                }
            },
            Some(counters) = statistics.next() => receiver.hear(&counters, status),
            _ = checks.tick() => {}
            () = hold => {
                datagrams.flush(&mut out);
                if let Err(e) = send(status, socket, &mut out, config).await {
                    return SessionEnd::Failed(e);
                }
            }
        }
    }
}

/// When the receiver was last heard from, by the count of packets it sent.
struct ReceiverHeard {
    packets: u64,
    at: Instant,
}

impl ReceiverHeard {
    fn new(now: Instant) -> Self {
        Self {
            packets: 0,
            at: now,
        }
    }

    /// Takes the connection's counters: the receiver was heard if it sent
    /// more packets; one that acknowledges is shown verified.
    fn hear(&mut self, counters: &srt_tokio::SocketStatistics, status: &DestinationStatus) {
        if counters.rx_all_packets == self.packets {
            return;
        }
        self.packets = counters.rx_all_packets;
        self.at = Instant::now();
        if counters.rx_ack + counters.rx_light_ack > 0 {
            status.set_verified(true);
        }
    }

    fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at)
    }
}

/// Hands `out` to srt-tokio (which paces and retransmits them). Its input
/// channel is bounded, so a stalled connection shows here as a send that
/// does not finish within `write_timeout`.
async fn send(
    status: &DestinationStatus,
    socket: &mut SrtSocket,
    out: &mut Vec<Bytes>,
    config: &DestinationConfig,
) -> Result<(), DestinationError> {
    if out.is_empty() {
        return Ok(());
    }
    let bytes: usize = out.iter().map(Bytes::len).sum();
    let sending = async {
        for datagram in out.drain(..) {
            socket.feed((Instant::now(), datagram)).await?;
        }
        socket.flush().await
    };
    match tokio::time::timeout(config.write_timeout, sending).await {
        Ok(Ok(())) => {
            status.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
            Ok(())
        }
        Ok(Err(e)) => Err(DestinationError::closed(format!(
            "the SRT connection closed: {e}"
        ))),
        Err(_) => Err(DestinationError::new(
            ErrorKind::WriteStall,
            format!(
                "SRT send made no progress for {} s",
                config.write_timeout.as_secs()
            ),
        )),
    }
}

/// Closes the connection (SRT's shutdown), without waiting long for it.
async fn close(socket: &mut SrtSocket) {
    if tokio::time::timeout(Duration::from_secs(1), socket.close())
        .await
        .is_err()
    {
        debug!("SRT close did not finish within 1 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prism_media::mpegts::TS_PACKET_LEN;

    fn packets(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n * TS_PACKET_LEN])
    }

    #[test]
    fn whole_datagrams_share_the_ts_bytes_and_only_straddling_packets_are_copied() {
        let mut datagrams = Datagrams::default();
        let mut out = Vec::new();
        let first = packets(16, 1);
        datagrams.push(&first, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].as_ptr(), first.as_ptr(), "a slice, not a copy");
        assert!(datagrams.holding());
        // Two packets wait; five of the next message complete the datagram.
        datagrams.push(&packets(6, 2), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].len(), DATAGRAM_LEN);
        assert_eq!((out[2][0], out[2][DATAGRAM_LEN - 1]), (1, 2));
        assert!(datagrams.holding());
        datagrams.flush(&mut out);
        assert_eq!(out[3].len(), TS_PACKET_LEN);
        assert!(!datagrams.holding());
        assert!(out
            .iter()
            .all(|d| d.len() % TS_PACKET_LEN == 0 && d.len() <= DATAGRAM_LEN));
    }
}
