//! One destination: a task that owns its socket and its bounded queue. It
//! connects when the stream goes live (at a random moment within half a
//! millisecond per destination of the stream, so that a stream's hundreds
//! of destinations do not all connect in one turn), publishes, replays what
//! the hub cached,
//! then relays the stream: while the destination keeps up, the task lends its
//! writer to the queue and the hub's pushes write each message straight to
//! the socket (never waiting on it); when the socket is full, the task takes
//! over and writes what queued in batches with vectored writes. On failure it
//! retries with jittered exponential backoff while the publisher stays live.
//! Nothing here is ever awaited by ingest or by another destination.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use prism_media::remote_text::remote_text;
use prism_media::single_track::Tracks;
use prism_media::supervise::catch_panic;
use prism_media::{MediaMessage, StreamHub};
use prism_rtmp::{ChunkWriter, ClientEvent, PublishClient, Role};

use crate::acks::{AckTracker, AckVerdict};
use crate::delay_line::DelayedHub;
use crate::error::{DestinationError, ErrorKind};
use crate::queue::Batch;
use crate::rules::{self, PlatformRules, Warning};
use crate::session::{
    stop_requested, went_live, Control, DestinationConfig, SessionEnd, BATCH_MESSAGES,
};
use crate::status::{status_epoch, DestinationState, DestinationStatus};
use crate::writer::{MediaSink, MediaWriter, SessionQueue};

use crate::transport::{tls_config, tls_connect, Transport};
use crate::url::{DestinationUrl, Scheme};

const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A session live this long resets the backoff; shorter ones keep doubling it,
/// so a server that accepts and then drops at once is not hammered.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);

/// The owner's side of a destination task.
pub struct DestinationHandle {
    pub id: String,
    pub status: Arc<DestinationStatus>,
    queue: Arc<SessionQueue>,
    control: watch::Sender<Control>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// A delayed destination's hold on its delay (`delay_s`).
    delayed: Option<DelayedHub>,
    /// What its warnings are worked out from.
    checked: RuleCheck,
}

/// What a destination's warnings are worked out from: the stream it gets,
/// and its platform's rules.
struct RuleCheck {
    hub: Arc<StreamHub>,
    rules: Option<Arc<PlatformRules>>,
    tracks: Tracks,
    rtmps: bool,
}

impl DestinationHandle {
    /// Enables or disables the push; disabling ends a live session at once
    /// (with a clean unpublish), enabling while live connects right away (within
    /// the start spread, `start_delay`).
    pub fn set_enabled(&self, enabled: bool) {
        self.control.send_modify(|c| c.enabled = enabled);
        self.queue.interrupt();
    }

    /// Checks the stream it gets against its platform's rules (and a
    /// delayed destination's buffer) and shows what is broken in its
    /// warnings; a codec the platform does not take stops the push until
    /// the stream is in one it does. Called each second.
    pub fn refresh_warnings(&self) {
        let check = &self.checked;
        let mut warnings = Vec::new();
        if let Some(rules) = &check.rules {
            if check.hub.is_live() {
                warnings = rules::check(
                    &rules.name,
                    &rules.limits,
                    &check.hub.tracks(),
                    check.tracks,
                    check.rtmps,
                );
            }
        }
        if let Some(overflow) = self.delayed.as_ref().and_then(DelayedHub::recent_overflow) {
            warnings.push(Warning {
                code: "delay_buffer",
                message: format!(
                    "the delay buffer filled at {} MiB ({:.0} s of the stream, less than this destination's delay): raise [fanout] max_delay_buffer_mib; the destination skipped ahead",
                    overflow.held_bytes >> 20,
                    overflow.held.as_secs_f64()
                ),
            });
        }
        let refused = warnings.iter().any(|w| w.code == "codec");
        self.status.set_warnings(warnings);
        if self.control.borrow().refused != refused {
            self.control.send_modify(|c| c.refused = refused);
            self.queue.interrupt();
        }
    }

    /// Whether it is held to rules that can warn: its platform's, or a
    /// delay buffer's.
    pub fn has_rules(&self) -> bool {
        self.checked.rules.is_some() || self.delayed.is_some()
    }

    /// Whether the push is enabled (what the task was last told).
    pub fn is_enabled(&self) -> bool {
        self.control.borrow().enabled
    }

    /// Test hook (feature `test-hooks`, never in a release): makes the
    /// destination's task panic at its next turn, to show that the
    /// supervisor retries it.
    #[cfg(feature = "test-hooks")]
    pub fn inject_panic(&self) {
        self.status.panic_requested.store(true, Ordering::Relaxed);
        self.queue.interrupt();
    }

    /// Ends the task: a live session is unpublished cleanly first.
    pub async fn shutdown(&self) {
        self.control.send_modify(|c| c.shutdown = true);
        self.queue.interrupt();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Starts the task for one destination of `hub`'s stream.
pub fn spawn_destination(hub: Arc<StreamHub>, config: DestinationConfig) -> DestinationHandle {
    let queue = Arc::new(SessionQueue::new(config.queue_budget_bytes));
    let status = Arc::new(DestinationStatus::new(Arc::clone(queue.stats())));
    let (control, control_rx) = watch::channel(Control {
        enabled: config.enabled,
        shutdown: false,
        refused: false,
    });
    let checked = RuleCheck {
        hub: Arc::clone(&hub),
        rules: config.rules.clone(),
        tracks: config.tracks,
        rtmps: config.url.scheme == Scheme::Rtmps,
    };
    let id = config.id.clone();
    let task = tokio::spawn(supervise(
        hub,
        config,
        Arc::clone(&status),
        Arc::clone(&queue),
        control_rx,
    ));
    DestinationHandle {
        id,
        status,
        queue,
        control,
        task: Mutex::new(Some(task)),
        delayed: None,
        checked,
    }
}

/// Starts a destination that goes out its delay behind the stream: a
/// destination of the delayed hub, which it holds while it lives.
pub fn spawn_delayed_destination(
    delayed: DelayedHub,
    config: DestinationConfig,
) -> DestinationHandle {
    let mut handle = spawn_destination(Arc::clone(&delayed.hub), config);
    handle.delayed = Some(delayed);
    handle
}

/// Runs the destination's task, and runs it again after a panic: the
/// panic is logged and counted (`prism_task_panics_total{task="destination"}`),
/// the destination shows `retrying` with the panic as its last error, and it
/// reconnects after the usual backoff. The task itself returns only when it
/// is shut down or its stream is gone.
async fn supervise(
    hub: Arc<StreamHub>,
    config: DestinationConfig,
    status: Arc<DestinationStatus>,
    queue: Arc<SessionQueue>,
    control: watch::Receiver<Control>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let task = run(
            Arc::clone(&hub),
            config.clone(),
            Arc::clone(&status),
            Arc::clone(&queue),
            control.clone(),
        );
        let Err(panic) = catch_panic("destination", task).await else {
            return;
        };
        // Whatever the task held on the hub's side goes: its subscription
        // and a writer it may have lent to the queue.
        hub.unsubscribe(&queue);
        queue.discard_lent();
        let delay = jittered(backoff);
        let panic = remote_text(&panic.message);
        error!(
            stream = %hub.id(),
            destination = %config.id,
            url = %config.url,
            %panic,
            retry_in_ms = delay.as_millis() as u64,
            "destination task panicked; retrying"
        );
        status.record_failure(DestinationError::new(
            ErrorKind::Internal,
            format!("internal error (task panicked): {panic}"),
        ));
        status.set_state(DestinationState::Retrying);
        status.reconnects.fetch_add(1, Ordering::Relaxed);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        let mut control = control.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = async {
                while control.changed().await.is_ok() {
                    if control.borrow().shutdown {
                        return;
                    }
                }
            } => return,
        }
    }
}

async fn run(
    hub: Arc<StreamHub>,
    config: DestinationConfig,
    status: Arc<DestinationStatus>,
    queue: Arc<SessionQueue>,
    mut control: watch::Receiver<Control>,
) {
    let mut live = hub.watch_live();
    let mut backoff = BACKOFF_START;
    let mut attempts_this_publish = 0u64;
    // The publish session a destination already served to its end, so a
    // stale "live" reading never reconnects to a publish that is over.
    let mut served: Option<u64> = None;
    loop {
        let c = *control.borrow_and_update();
        if c.shutdown {
            return;
        }
        if !c.enabled {
            status.set_state(DestinationState::Disabled);
            if control.changed().await.is_err() {
                return;
            }
            continue;
        }
        let publish = *live.borrow_and_update();
        if !publish.live || served == Some(publish.session) {
            status.set_state(DestinationState::Idle);
            attempts_this_publish = 0;
            backoff = BACKOFF_START;
            tokio::select! {
                r = control.changed() => if r.is_err() { return },
                r = live.changed() => if r.is_err() { return },
            }
            continue;
        }

        // Refused by the rule checks (`refresh_warnings`), which also
        // lift it; or found so here, before anything is sent.
        let refused = match c.refused {
            true => Some(codec_warning(&status)),
            false => refusal(&hub, &config).await,
        };
        if let Some(refusal) = refused {
            // Nothing is sent in a codec the platform refuses; the stream
            // is looked at again each second.
            if status.state() != DestinationState::Refused {
                warn!(stream = %hub.id(), destination = %config.id, reason = %refusal, "destination refuses the stream's codec");
                status.record_failure(DestinationError::new(ErrorKind::Incompatible, refusal));
                status.set_state(DestinationState::Refused);
            }
            tokio::select! {
                _ = tokio::time::sleep(REFUSAL_RECHECK) => {}
                r = control.changed() => if r.is_err() { return },
                r = live.changed() => if r.is_err() { return },
            }
            continue;
        }
        if attempts_this_publish == 0 {
            // The first attempt for this publish: every destination of the
            // stream woke with it, so starts are spread (see `start_delay`).
            tokio::select! {
                _ = tokio::time::sleep(start_delay(hub.live_watchers())) => {}
                r = control.changed() => { if r.is_err() { return } continue }
            }
        } else {
            status.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        attempts_this_publish += 1;
        status.set_state(DestinationState::Connecting);
        let started = Instant::now();
        let end = session(&hub, &config, &status, &queue, &mut control, &mut served).await;
        match end {
            SessionEnd::PublisherEnded => {
                status.set_error(None);
                attempts_this_publish = 0;
            }
            SessionEnd::Stopped => {
                status.set_error(None);
                attempts_this_publish = 0;
                served = None;
            }
            SessionEnd::Failed(error) => {
                // Often the server's own words (an onStatus description):
                // escaped and cut before the log, the API and events.
                let message = remote_text(error.message());
                let error = error.with_message(message);
                served = None;
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_START;
                }
                let delay = jittered(backoff);
                warn!(
                    stream = %hub.id(),
                    destination = %config.id,
                    url = %config.url,
                    error = %error,
                    kind = error.kind().as_str(),
                    dropped_frames = status.dropped_frames(),
                    retry_in_ms = delay.as_millis() as u64,
                    "destination failed; retrying"
                );
                status.record_failure(error);
                status.set_state(DestinationState::Retrying);
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    r = control.changed() => if r.is_err() { return },
                    r = live.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

/// A refused destination looks at the stream again this often.
const REFUSAL_RECHECK: Duration = Duration::from_secs(1);
/// How long a destination with codec rules waits for the stream to show
/// its video codec before it connects anyway.
const CODEC_WAIT: Duration = Duration::from_secs(1);

/// Why the destination must not send the stream now: its platform does not
/// take the stream's video codec. Waits up to `CODEC_WAIT` for the stream
/// to show its tracks, so that nothing is sent before it is known.
async fn refusal(hub: &StreamHub, config: &DestinationConfig) -> Option<String> {
    let rules = config.rules.as_ref()?;
    rules.limits.video_codecs.as_ref()?;
    let deadline = Instant::now() + CODEC_WAIT;
    loop {
        let tracks = hub.tracks();
        let known = tracks.iter().any(|t| t.codec.is_some());
        if known || Instant::now() >= deadline {
            return rules::incompatible_codec(&rules.name, &rules.limits, &tracks)
                .map(|w| w.message);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the rule checks said of the stream's codec.
fn codec_warning(status: &DestinationStatus) -> String {
    status
        .warnings()
        .into_iter()
        .find(|w| w.code == "codec")
        .map_or_else(
            || "the platform does not take the stream's video codec".to_string(),
            |w| w.message,
        )
}

/// How far apart destinations that start together are spread, per
/// destination, and at most. A publish wakes every destination of its
/// stream at once; 200 connects and handshakes in one turn of the runtime
/// held the other streams' frames back by milliseconds (the connect storm),
/// while reconnects, spread by their backoff's jitter, did not.
const START_SPREAD_PER_DESTINATION: Duration = Duration::from_micros(500);
const START_SPREAD_MAX: Duration = Duration::from_millis(200);

/// A random wait within the spread for `destinations` starting together.
fn start_delay(destinations: usize) -> Duration {
    let spread = START_SPREAD_PER_DESTINATION
        .saturating_mul(destinations.try_into().unwrap_or(u32::MAX))
        .min(START_SPREAD_MAX);
    spread.mul_f64(rand::thread_rng().gen_range(0.0..1.0))
}

fn jittered(base: Duration) -> Duration {
    let factor = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(factor)
}

async fn session(
    hub: &Arc<StreamHub>,
    config: &DestinationConfig,
    status: &Arc<DestinationStatus>,
    queue: &Arc<SessionQueue>,
    control: &mut watch::Receiver<Control>,
    served: &mut Option<u64>,
) -> SessionEnd {
    info!(stream = %hub.id(), destination = %config.id, url = %config.url, "destination connecting");
    if config.url.scheme == Scheme::Srt {
        return crate::srt::session(hub, config, status, queue, control, served).await;
    }
    let connect_started = Instant::now();
    let setup = tokio::time::timeout(config.connect_timeout, connect_and_publish(config));
    let (transport, client, out, stream_id) = tokio::select! {
        result = setup => match result {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => return SessionEnd::Failed(error),
            Err(_) => {
                return SessionEnd::Failed(DestinationError::new(
                    ErrorKind::ConnectTimeout,
                    format!(
                        "server did not accept the publish within {} s (connect_timeout_s)",
                        config.connect_timeout.as_secs()
                    ),
                ))
            }
        },
        () = stop_requested(control) => return SessionEnd::Stopped,
    };
    let live = Live {
        hub,
        config,
        status,
        queue,
        connect_started,
        client,
        out,
        stream_id,
    };
    // Split, so the task reads while its writer is lent to the queue.
    match transport {
        Transport::Plain(tcp) => {
            let (reader, sink) = tcp.into_split();
            live.run(reader, sink, control, served).await
        }
        Transport::Tls(tls) => {
            let (reader, sink) = tokio::io::split(*tls);
            live.run(reader, sink, control, served).await
        }
    }
}

/// A destination session from `NetStream.Publish.Start` on.
struct Live<'a> {
    hub: &'a Arc<StreamHub>,
    config: &'a DestinationConfig,
    status: &'a Arc<DestinationStatus>,
    queue: &'a Arc<SessionQueue>,
    connect_started: Instant,
    client: PublishClient,
    /// At the negotiated chunk size.
    out: ChunkWriter,
    stream_id: u32,
}

impl Live<'_> {
    /// Subscribes to the stream and relays it until the publish ends, the
    /// destination is stopped, or the connection fails.
    async fn run<R, S>(
        self,
        reader: R,
        sink: S,
        control: &mut watch::Receiver<Control>,
        served: &mut Option<u64>,
    ) -> SessionEnd
    where
        R: AsyncRead + Unpin,
        S: MediaSink,
    {
        let (hub, config, status, mut client) = (self.hub, self.config, self.status, self.client);
        let mut writer = MediaWriter::new(
            sink,
            self.out,
            self.stream_id,
            Arc::clone(status),
            hub.id(),
            &config.id,
        );
        let queue = self.queue;
        let Some(publish_session) = hub.subscribe(queue, config.tracks) else {
            // The publisher left while we were connecting.
            let _ = finish(&mut client, &mut writer, config).await;
            return SessionEnd::PublisherEnded;
        };
        *served = Some(publish_session);
        went_live(hub, config, status, self.connect_started);
        let end = relay(status, queue, reader, writer, client, config, control).await;
        hub.unsubscribe(queue);
        end
    }
}

/// The live loop: drain what is queued, then lend the writer to the queue
/// (so the hub writes to the socket directly, or holds the messages in the
/// writer's batch under a latency budget) and sleep until the queue or the
/// server needs the task. Messages the queue holds while the task has the
/// writer go out together when the oldest is due.
async fn relay<R, S>(
    status: &DestinationStatus,
    queue: &Arc<SessionQueue>,
    mut reader: R,
    mut writer: MediaWriter<S>,
    mut client: PublishClient,
    config: &DestinationConfig,
    control: &mut watch::Receiver<Control>,
) -> SessionEnd
where
    R: AsyncRead + Unpin,
    S: MediaSink,
{
    let mut batch: Vec<MediaMessage> = Vec::with_capacity(BATCH_MESSAGES);
    let mut read_buf = vec![0u8; 16 * 1024];
    let mut acks = AckTracker::new(prism_rtmp::DESTINATION_ACK_WINDOW);
    let acked_before = status.acked_bytes.load(Ordering::Relaxed);
    status.set_verified(false);
    let mut next_ack_check = Instant::now() + ACK_CHECK_EVERY;
    queue.set_max_delay(config.max_delay);
    let lends = writer.writes_directly();
    // What the queue holds first is the replay of the cached GOP, which
    // every destination of a stream writes at once when the stream starts
    // or they all reconnect: it goes through the replay gate.
    let mut replaying = true;
    // The deadline of the batch the writer holds, while the task has it
    // back for a moment (see `lend_with_batch`).
    let mut batch_due: Option<Instant> = None;
    loop {
        if Instant::now() >= next_ack_check {
            next_ack_check = Instant::now() + ACK_CHECK_EVERY;
            let sent = writer.bytes_written();
            if let Some(failed) = check_acks(status, &acks, acked_before, sent, config) {
                return failed;
            }
        }
        #[cfg(feature = "test-hooks")]
        if status.panic_requested.load(Ordering::Relaxed)
            && status.panic_requested.swap(false, Ordering::Relaxed)
        {
            panic!("panic injected by a test");
        }
        // Control changes interrupt the queue, so the task waits on the
        // queue and the socket only, not on a control channel too.
        if control.has_changed().unwrap_or(true) {
            let c = *control.borrow_and_update();
            if c.stops() {
                return match finish(&mut client, &mut writer, config).await {
                    Ok(()) => SessionEnd::Stopped,
                    Err(e) => SessionEnd::Failed(e),
                };
            }
        }
        let mut held_until = None;
        match queue.try_batch(&mut batch, BATCH_MESSAGES) {
            Some(Batch::Ready) => {
                for message in batch.drain(..) {
                    writer.queue(&message);
                }
                let written = if replaying {
                    writer
                        .flush_gated(replay_gate(), config.write_timeout)
                        .await
                } else {
                    writer.flush(config.write_timeout).await
                };
                if let Err(e) = written {
                    return SessionEnd::Failed(e);
                }
                continue;
            }
            Some(Batch::Ended) => {
                return match finish(&mut client, &mut writer, config).await {
                    Ok(()) => SessionEnd::PublisherEnded,
                    Err(e) => SessionEnd::Failed(e),
                };
            }
            Some(Batch::Interrupted) => continue,
            Some(Batch::Hold(until)) => held_until = Some(until),
            None => {}
        }
        // The queue has run dry (or holds only new messages): the replay is out.
        replaying = false;
        let read = if held_until.is_none() && lends {
            let (sink, session) = writer.into_parts();
            if let Err(back) = queue.lend_with_batch(session, batch_due.take()) {
                writer = MediaWriter::from_parts(sink, back);
                // Refused for what the writer holds: it goes out now.
                if let Err(e) = writer.flush(config.write_timeout).await {
                    return SessionEnd::Failed(e);
                }
                continue;
            }
            let read = wait(queue, &mut reader, &mut read_buf, next_ack_check).await;
            let (session, due) = queue
                .reclaim_with_batch()
                .expect("only this task takes back the writer it lent");
            writer = MediaWriter::from_parts(sink, session);
            // A batch still timed goes back lent with the writer; anything
            // else it holds (a direct write the socket could not take
            // whole, or the error of one that failed) is dealt with now.
            batch_due = due;
            if batch_due.is_none() {
                if let Err(e) = writer.flush(config.write_timeout).await {
                    return SessionEnd::Failed(e);
                }
            }
            read
        } else {
            // Held messages are waited for: a batch the writer holds goes
            // out first, not after them.
            batch_due = None;
            if let Err(e) = writer.flush(config.write_timeout).await {
                return SessionEnd::Failed(e);
            }
            let wake_by = held_until.map_or(next_ack_check, |until| until.min(next_ack_check));
            wait(queue, &mut reader, &mut read_buf, wake_by).await
        };
        match read {
            None => {}
            Some(Ok(0)) => {
                return SessionEnd::Failed(DestinationError::closed("server closed the connection"))
            }
            Some(Ok(n)) => match client.handle_input(&read_buf[..n], writer.chunks()) {
                Ok(events) => {
                    acks.observe(client.acknowledged(), Instant::now());
                    if let Some(ClientEvent::Rejected { code, reason }) = events.into_iter().next()
                    {
                        return SessionEnd::Failed(DestinationError::new(
                            ErrorKind::Rejected,
                            format!("server ended the publish: {code}: {reason}"),
                        ));
                    }
                    // What the client answered waits for the batch the
                    // writer holds, if any: within its deadline.
                    if batch_due.is_none() {
                        if let Err(e) = writer.flush(config.write_timeout).await {
                            return SessionEnd::Failed(e);
                        }
                    }
                }
                Err(e) => return SessionEnd::Failed(DestinationError::protocol(e)),
            },
            Some(Err(e)) => return SessionEnd::Failed(DestinationError::io("read", &e)),
        }
    }
}

/// The gate every destination's replay is written through: half the
/// runtime's threads (at least one) copy replays at any moment, so a
/// connect storm leaves the other half to the streams already live.
fn replay_gate() -> &'static Semaphore {
    static GATE: OnceLock<Semaphore> = OnceLock::new();
    GATE.get_or_init(|| Semaphore::new((prism_media::lanes::count() / 2).max(1)))
}

/// How often a live destination looks at its acknowledgements.
const ACK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Publishes what the acknowledgements say (`acked_before`: what earlier
/// connections had acknowledged); a server that stopped
/// acknowledging ends the session (it is reconnected with backoff).
fn check_acks(
    status: &DestinationStatus,
    acks: &AckTracker,
    acked_before: u64,
    sent: u64,
    config: &DestinationConfig,
) -> Option<SessionEnd> {
    let now = Instant::now();
    status
        .acked_bytes
        .store(acked_before + acks.acked(), Ordering::Relaxed);
    status
        .ack_lag_bytes
        .store(acks.unacked(sent), Ordering::Relaxed);
    if let Some(at) = acks.last_ack_at() {
        let ms = at.saturating_duration_since(status_epoch()).as_millis() as u64;
        status.set_last_ack_ms(ms.max(1));
    }
    match acks.verdict(sent, now, config.ack_timeout) {
        AckVerdict::Unverified => None,
        AckVerdict::Verified => {
            status.set_verified(true);
            None
        }
        AckVerdict::Stalled { silent, unacked } => {
            status.ack_timeouts.fetch_add(1, Ordering::Relaxed);
            Some(SessionEnd::Failed(DestinationError::new(
                ErrorKind::AckTimeout,
                format!(
                    "the server stopped acknowledging: nothing for {} s while {} KiB were sent (ack_timeout_s = {})",
                    silent.as_secs(),
                    unacked / 1024,
                    config.ack_timeout.as_secs()
                ),
            )))
        }
    }
}

/// Sleeps until the queue has something for the task (`None`), the server
/// sent something (`Some`: what the read returned), or `until` (`None`).
async fn wait<R: AsyncRead + Unpin>(
    queue: &SessionQueue,
    reader: &mut R,
    buf: &mut [u8],
    until: Instant,
) -> Option<std::io::Result<usize>> {
    tokio::select! {
        biased;
        () = queue.wait() => None,
        read = reader.read(buf) => Some(read),
        () = tokio::time::sleep_until(until.into()) => None,
    }
}

type Connected = (Transport, PublishClient, ChunkWriter, u32);

/// Opens the connection and runs it up to `NetStream.Publish.Start`.
async fn connect_and_publish(config: &DestinationConfig) -> Result<Connected, DestinationError> {
    let mut stream = open(config).await?;
    let mut out = ChunkWriter::new(128);
    let (client, stream_id) = start_publish(
        &mut stream,
        &config.url,
        config.chunk_size,
        &mut out,
        Some(config.write_timeout),
    )
    .await?;
    Ok((stream, client, out, stream_id))
}

/// Opens the transport to the destination: TCP, then TLS for `rtmps://`.
async fn open(config: &DestinationConfig) -> Result<Transport, DestinationError> {
    let (host, port) = (config.url.host.as_str(), config.url.port);
    let mut last_error = DestinationError::new(
        ErrorKind::Dns,
        format!("{host} did not resolve to any address"),
    );
    let addresses = tokio::net::lookup_host((host, port)).await.map_err(|e| {
        DestinationError::new(ErrorKind::Dns, format!("cannot resolve {host}: {e}"))
    })?;
    for address in addresses {
        let socket = if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| DestinationError::new(ErrorKind::Io, format!("cannot open a socket: {e}")))?;
        // A bounded kernel buffer keeps what a slow destination holds visible
        // to the queue's budget, instead of megabytes hidden in the kernel.
        let _ = socket.set_send_buffer_size(config.socket_send_buffer_bytes);
        match socket.connect(address).await {
            Ok(stream) => {
                // Frames go out as soon as they are written; batching happens above.
                let _ = stream.set_nodelay(true);
                return match config.url.scheme {
                    Scheme::Rtmp => Ok(Transport::Plain(stream)),
                    Scheme::Rtmps => {
                        // Reads the CA file: off the async threads.
                        let ca_file = config.ca_file.clone();
                        let tls =
                            tokio::task::spawn_blocking(move || tls_config(ca_file.as_deref()))
                                .await
                                .map_err(|e| format!("TLS setup task failed: {e}"))
                                .and_then(|config| config.map_err(|e| e.to_string()))
                                .map_err(|e| DestinationError::new(ErrorKind::Tls, e))?;
                        tls_connect(stream, host, tls).await
                    }
                    Scheme::Srt => unreachable!("SRT destinations have their own session"),
                };
            }
            Err(e) => {
                let kind = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorKind::ConnectRefused,
                    std::io::ErrorKind::TimedOut => ErrorKind::ConnectTimeout,
                    _ => ErrorKind::Connect,
                };
                last_error =
                    DestinationError::new(kind, format!("connect to {address} failed: {e}"));
            }
        }
    }
    Err(last_error)
}

/// Runs an RTMP publish on a fresh connection: handshake, `connect`,
/// `createStream`, `publish`. Returns the session and the message stream id
/// media goes on; `out` is left at the negotiated chunk size. Also what the
/// load harness publishes with.
pub async fn start_publish<S>(
    stream: &mut S,
    url: &DestinationUrl,
    chunk_size: u32,
    out: &mut ChunkWriter,
    write_timeout: Option<Duration>,
) -> Result<(PublishClient, u32), DestinationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let leftover = prism_rtmp::handshake(stream, Role::Client).await?;
    let mut client = PublishClient::new(url.publish_target(), chunk_size);
    client.start(out);
    let mut events = client
        .handle_input(&leftover, out)
        .map_err(DestinationError::protocol)?;
    let mut read_buf = vec![0u8; 16 * 1024];
    loop {
        out.write_to(stream, write_timeout).await?;
        if let Some(event) = events.into_iter().next() {
            return match event {
                ClientEvent::PublishStarted { stream_id } => Ok((client, stream_id)),
                ClientEvent::Rejected { code, reason } => Err(DestinationError::new(
                    ErrorKind::Rejected,
                    format!("server refused the stream: {code}: {reason}"),
                )),
            };
        }
        let n = read_some(stream, &mut read_buf).await?;
        events = client
            .handle_input(&read_buf[..n], out)
            .map_err(DestinationError::protocol)?;
    }
}

async fn read_some<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
) -> Result<usize, DestinationError> {
    match reader.read(buf).await {
        Ok(0) => Err(DestinationError::closed("server closed the connection")),
        Ok(n) => Ok(n),
        Err(e) => Err(DestinationError::io("read", &e)),
    }
}

/// Sends the clean end of the publish and closes our side.
async fn finish<S: MediaSink>(
    client: &mut PublishClient,
    writer: &mut MediaWriter<S>,
    config: &DestinationConfig,
) -> Result<(), DestinationError> {
    client.unpublish(writer.chunks());
    writer.flush(config.write_timeout).await?;
    writer.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_together_are_spread_in_proportion_up_to_a_cap() {
        for _ in 0..200 {
            assert_eq!(start_delay(0), Duration::ZERO);
            assert!(start_delay(1) < START_SPREAD_PER_DESTINATION);
            assert!(start_delay(200) < Duration::from_millis(100));
            assert!(start_delay(100_000) < START_SPREAD_MAX);
        }
        // Random within the spread, not a fixed offset.
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|_| start_delay(200)).collect();
        assert!(delays.len() > 1);
    }
}
