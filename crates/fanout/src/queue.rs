//! The bounded queue between a stream hub and one destination task.
//!
//! The hub pushes without ever waiting: a queue over its byte budget drops
//! frames instead, and then keeps dropping until the next video keyframe, so
//! the destination never receives frames whose reference pictures it missed.
//! Sequence headers and metadata are not dropped, but they are bounded too:
//! past twice the budget, the queue sheds its frames and keeps only the
//! newest header of each kind. The budget counts what messages cost in
//! memory (`MediaMessage::cost`), not their payload alone.
//!
//! While its destination is idle (nothing queued, the socket keeping up), the
//! destination task lends its writer to the queue and sleeps; the hub's push
//! then writes the message straight to the socket, without a task wake-up.
//! Only when the socket cannot take a whole message does the push hand back
//! to the task, which finishes that write and drains the queue as usual.
//! A wake-up per message per destination cost more than the write itself.
//!
//! A destination with a latency budget (`max_delay`) lends its writer too,
//! but a push only adds the message to the batch the writer holds. The batch
//! goes out in one vectored write once its oldest message has waited the
//! budget: sent by the first push after that, or by the batch timer thread
//! (`batch_timer`) at the deadline, whichever comes first; at once when it
//! holds half the queue's budget. Nothing wakes the destination's task.
//! While the task has the writer (the socket was full, a replay, the server
//! spoke), messages wait in the queue until the oldest is due, and the task
//! writes them together.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use prism_media::subscriber::prefetch;
use prism_media::{MediaKind, MediaMessage, Subscriber};

use crate::batch_timer::{self, DueBatch};

/// Counters a destination exposes; read by the admin API and metrics.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub dropped_frames: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// What the queue may hold before it drops (`DestinationQueue::new`).
    pub budget_bytes: usize,
}

/// A destination's writer, lent to its queue while the destination task is
/// idle so that pushes write to the socket at once (see the module doc).
pub trait DirectWriter: Send + 'static {
    /// Writes `message` without waiting. `false` means the socket did not
    /// take all of it, or failed: the writer keeps what is left (or the
    /// error), and the queue wakes its owner to deal with it.
    fn write_now(&mut self, message: &MediaMessage) -> bool;

    /// Adds `message` to the batch the writer holds for `send_held`.
    fn hold(&mut self, message: &MediaMessage);

    /// Bytes the writer holds, not yet written.
    fn held_bytes(&self) -> usize;

    /// Writes the held batch without waiting; `false` as for `write_now`.
    /// `now` is the time of the call (read once for many writers).
    fn send_held(&mut self, now: Instant) -> bool;
}

/// The writer a destination task lent to its queue, if it did.
struct Lent<W> {
    writer: Option<Box<W>>,
    /// The writer could not finish a write: pushes queue until the owner
    /// takes it back.
    stalled: bool,
    /// When the batch the writer holds must go out (with a latency budget;
    /// `None` while it holds none, or once it was sent or stalled).
    due: Option<Instant>,
    /// The queue itself, for the batch timer to call back.
    queue: Option<Weak<dyn DueBatch>>,
}

impl<W> Default for Lent<W> {
    fn default() -> Self {
        Self {
            writer: None,
            stalled: false,
            due: None,
            queue: None,
        }
    }
}

struct QueueState<W> {
    items: VecDeque<MediaMessage>,
    queued_bytes: usize,
    /// Set after a drop (or when a destination joins mid-GOP): drop media
    /// until a video keyframe arrives.
    awaiting_keyframe: bool,
    /// The wait is for the destination's first keyframe: what it skips was
    /// never its to send, so it is not counted as dropped.
    awaiting_first_keyframe: bool,
    interrupted: bool,
    lent: Lent<W>,
    /// Whether the stream carries video at all; an audio-only stream has no
    /// keyframe to wait for.
    stream_has_video: bool,
    ended: bool,
    /// Bumped by every `reset`: which subscription pushes are for.
    subscription: u64,
    /// How long a message may be held so that it goes out with the ones
    /// after it (zero: hand each out at once).
    max_delay: Duration,
    /// Numbers the batches a lent writer holds, so the batch timer sends
    /// only the one it was asked for.
    batch: u64,
}

impl<W> Default for QueueState<W> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            queued_bytes: 0,
            awaiting_keyframe: false,
            awaiting_first_keyframe: false,
            interrupted: false,
            lent: Lent::default(),
            stream_has_video: false,
            ended: false,
            subscription: 0,
            max_delay: Duration::ZERO,
            batch: 0,
        }
    }
}

/// One destination's queue. The hub holds it behind an `Arc` and pushes; the
/// destination task pops batches. The lock is per destination and held only
/// for a push or a batch pop, never across I/O. `W` is what the task lends
/// for direct writes (see the module doc).
pub struct DestinationQueue<W> {
    state: Mutex<QueueState<W>>,
    /// Where the lent writer lies and its size (0 when none is lent), read
    /// without the lock to prefetch it (`push_to_all`).
    lent_at: AtomicUsize,
    lent_size: AtomicUsize,
    ready: Notify,
    budget_bytes: usize,
    stats: Arc<QueueStats>,
}

/// What `next_batch` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Messages were moved into the caller's buffer.
    Ready,
    /// The publisher stopped and every queued message has been handed out.
    Ended,
    /// `interrupt` was called: the owner has something else to look at.
    Interrupted,
    /// Messages are queued but held (`set_max_delay`) until this instant;
    /// the owner is woken earlier only if the publish ends, the queue fills
    /// to half its budget, or it is interrupted.
    Hold(Instant),
}

impl<W> std::fmt::Debug for DestinationQueue<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationQueue")
            .field("budget_bytes", &self.budget_bytes)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// What the batch timer calls when a lent writer's batch is due.
impl<W: DirectWriter> DueBatch for DestinationQueue<W> {
    fn send_due(&self, batch: u64, now: Instant) {
        let mut state = self.lock();
        if state.batch != batch || state.lent.due.is_none() || state.lent.stalled {
            return;
        }
        let lent = &mut state.lent;
        let Some(writer) = lent.writer.as_mut() else {
            return;
        };
        lent.due = None;
        if !writer.send_held(now) {
            state.lent.stalled = true;
            drop(state);
            self.ready.notify_one();
        }
    }

    fn prefetch(&self) {
        prefetch(std::ptr::from_ref(self).cast(), size_of::<Self>());
        self.prefetch_lent_writer();
    }
}

/// What the hub calls: pushes never wait on the destination.
impl<W: DirectWriter> Subscriber for DestinationQueue<W> {
    fn begin(&self, stream_has_video: bool, start_mid_gop: bool) -> u64 {
        self.reset(stream_has_video, start_mid_gop)
    }

    fn push_replay(&self, message: MediaMessage) {
        let state = self.lock();
        self.enqueue(state, message);
    }

    fn push(&self, subscription: u64, message: &MediaMessage) {
        self.push_for(Some(subscription), message);
    }

    fn await_keyframe(&self) {
        let mut state = self.lock();
        state.awaiting_keyframe = state.stream_has_video;
        state.awaiting_first_keyframe = true;
    }

    fn end(&self) {
        self.lock().ended = true;
        self.ready.notify_one();
    }

    fn prefetch(&self) {
        self.prefetch_lent_writer();
    }
}

impl<W: DirectWriter> DestinationQueue<W> {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            state: Mutex::new(QueueState::default()),
            lent_at: AtomicUsize::new(0),
            lent_size: AtomicUsize::new(0),
            ready: Notify::new(),
            budget_bytes,
            stats: Arc::new(QueueStats {
                budget_bytes,
                ..QueueStats::default()
            }),
        }
    }

    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// The queue's counters, shared with the destination's status.
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    /// Sets the latency budget within which messages are held and handed
    /// out together (see the module doc); zero hands each out at once.
    pub fn set_max_delay(&self, max_delay: Duration) {
        self.lock().max_delay = max_delay;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<W>> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single push or drain), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the queue for a new subscription: `start_mid_gop` tells it the
    /// hub had no keyframe to replay, so media waits for the next one.
    fn reset(&self, stream_has_video: bool, start_mid_gop: bool) -> u64 {
        let mut state = self.lock();
        state.subscription += 1;
        state.items.clear();
        state.queued_bytes = 0;
        state.ended = false;
        state.interrupted = false;
        state.stream_has_video = stream_has_video;
        state.awaiting_keyframe = stream_has_video && start_mid_gop;
        state.awaiting_first_keyframe = state.awaiting_keyframe;
        self.stats.queued_bytes.store(0, Ordering::Relaxed);
        state.subscription
    }

    /// Appends `message` and wakes the owner when it has something new to
    /// look at: the queue was empty (an owner that saw it non-empty drains
    /// it all before it waits again), or a held queue reached half its
    /// budget and must go out before it drops.
    fn enqueue(&self, mut state: std::sync::MutexGuard<'_, QueueState<W>>, message: MediaMessage) {
        let was_empty = state.items.is_empty();
        let half = self.budget_bytes / 2;
        let was_under_half = state.queued_bytes < half;
        state.queued_bytes += message.cost();
        state.items.push_back(message);
        let wake = was_empty
            || (!state.max_delay.is_zero() && was_under_half && state.queued_bytes >= half);
        self.stats
            .queued_bytes
            .store(state.queued_bytes as u64, Ordering::Relaxed);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
    }

    /// Queues a live message, or drops it by the policy above. Never blocks
    /// on the destination.
    pub fn push(&self, message: &MediaMessage) {
        self.push_for(None, message);
    }

    /// `push`, ignored unless the queue is still in `subscription` (when
    /// given): a fan-out thread may push a message delivered before the
    /// queue left and subscribed again, which the new subscription must not
    /// get after its replay.
    fn push_for(&self, subscription: Option<u64>, message: &MediaMessage) {
        let mut state = self.lock();
        if state.ended || subscription.is_some_and(|s| s != state.subscription) {
            return;
        }
        if message.kind == MediaKind::Video && message.sequence_header {
            state.stream_has_video = true;
        }
        if message.droppable() {
            let is_keyframe = message.kind == MediaKind::Video && message.keyframe;
            if state.awaiting_keyframe && !is_keyframe {
                let first = state.awaiting_first_keyframe;
                drop(state);
                if !first {
                    self.count_drop(message);
                }
                return;
            }
            if state.queued_bytes + message.cost() > self.budget_bytes {
                if is_keyframe {
                    // Everything still queued is stale: shed it (keeping the
                    // headers) so the destination restarts on this keyframe.
                    self.shed_frames(&mut state);
                } else {
                    state.awaiting_keyframe = state.stream_has_video;
                    state.awaiting_first_keyframe = false;
                    drop(state);
                    self.count_drop(message);
                    return;
                }
            }
            if is_keyframe {
                state.awaiting_keyframe = false;
                state.awaiting_first_keyframe = false;
            }
        } else if state.queued_bytes + message.cost() > self.budget_bytes.saturating_mul(2) {
            // Headers and metadata are never dropped, but a publisher that
            // sends nothing else cannot grow the queue either: the frames
            // go (the destination restarts on the next keyframe) and only
            // the newest header of each kind is kept.
            self.shed_frames(&mut state);
            state.awaiting_keyframe = state.stream_has_video;
            state.awaiting_first_keyframe = false;
            let superseded = |queued: &MediaMessage| {
                queued.kind == message.kind && queued.sequence_header == message.sequence_header
            };
            state.items.retain(|queued| !superseded(queued));
            state.queued_bytes = state.items.iter().map(MediaMessage::cost).sum();
        }
        if state.items.is_empty() && !state.lent.stalled && state.lent.writer.is_some() {
            let written = if state.max_delay.is_zero() {
                let writer = state.lent.writer.as_mut().expect("lent");
                writer.write_now(message)
            } else {
                self.hold(&mut state, message)
            };
            if !written {
                state.lent.stalled = true;
                drop(state);
                self.ready.notify_one();
            }
            return;
        }
        self.enqueue(state, message.clone());
    }

    /// Adds `message` to the lent writer's batch, and sends the batch if it
    /// is due (or holds half the budget). The first message of a batch asks
    /// the batch timer to send it at its deadline, should no push come
    /// after it in time. Returns `false` when the writer stalled.
    fn hold(&self, state: &mut QueueState<W>, message: &MediaMessage) -> bool {
        let lent = &mut state.lent;
        let writer = lent.writer.as_mut().expect("lent");
        writer.hold(message);
        let due = match lent.due {
            Some(due) => due,
            None => {
                let due = message.received_at + state.max_delay;
                state.batch += 1;
                let timed = lent
                    .queue
                    .clone()
                    .is_some_and(|queue| batch_timer::schedule(due, state.batch, queue));
                if !timed {
                    return writer.send_held(Instant::now());
                }
                lent.due = Some(due);
                due
            }
        };
        if message.received_at < due && writer.held_bytes() < self.budget_bytes / 2 {
            return true;
        }
        lent.due = None;
        writer.send_held(Instant::now())
    }

    /// Lends the owner's writer to the queue for direct writes. Refused
    /// (the writer comes back) when there is something for the owner to do
    /// first: queued messages, the end of the publish, an interrupt, or
    /// bytes the writer holds (the owner writes them).
    pub fn lend(self: &Arc<Self>, writer: Box<W>) -> Result<(), Box<W>> {
        self.lend_with_batch(writer, None)
    }

    /// `lend`, for a writer taken back with `reclaim_with_batch` for a
    /// moment (to read from the server) that still holds its batch: it goes
    /// back with the batch's deadline, unless that has passed (refused: the
    /// owner writes the batch).
    pub fn lend_with_batch(
        self: &Arc<Self>,
        writer: Box<W>,
        due: Option<Instant>,
    ) -> Result<(), Box<W>> {
        let mut state = self.lock();
        if !state.items.is_empty()
            || state.ended
            || state.interrupted
            || state.lent.writer.is_some()
        {
            return Err(writer);
        }
        let due = if writer.held_bytes() == 0 {
            None
        } else {
            // The timer may serve a deadline this early: it must not have
            // come and gone while the owner had the writer.
            match due {
                Some(due) if due > Instant::now() + batch_timer::COALESCE => Some(due),
                _ => return Err(writer),
            }
        };
        self.lent_at
            .store(&*writer as *const W as usize, Ordering::Relaxed);
        self.lent_size.store(size_of::<W>(), Ordering::Relaxed);
        let queue: Weak<dyn DueBatch> = Arc::downgrade(self) as Weak<dyn DueBatch>;
        state.lent = Lent {
            writer: Some(writer),
            stalled: false,
            due,
            queue: Some(queue),
        };
        Ok(())
    }

    /// Takes back the writer lent with `lend`, with any write it could not
    /// finish still in it, or the batch it holds.
    pub fn reclaim(&self) -> Option<Box<W>> {
        self.take_lent().map(|(writer, _)| writer)
    }

    /// `reclaim`, with the deadline of the batch the writer holds (`None`
    /// when it holds none, or holds what a write left: the owner writes
    /// that at once). See `lend_with_batch`.
    pub fn reclaim_with_batch(&self) -> Option<(Box<W>, Option<Instant>)> {
        self.take_lent()
    }

    /// Drops a writer left lent by an owner that is gone (its task
    /// panicked), so the hub stops writing through it.
    pub fn discard_lent(&self) {
        drop(self.take_lent());
    }

    /// Takes the lent writer back, with its batch's deadline. The batch
    /// keeps its number: lent again with the deadline, the batch timer's
    /// call for it still finds it.
    fn take_lent(&self) -> Option<(Box<W>, Option<Instant>)> {
        let mut state = self.lock();
        let writer = state.lent.writer.take();
        let due = state.lent.due.take();
        drop(state);
        self.lent_at.store(0, Ordering::Relaxed);
        writer.map(|writer| (writer, due))
    }

    /// Prefetches the lent writer, if one is lent (see `push_to_all`).
    fn prefetch_lent_writer(&self) {
        let at = self.lent_at.load(Ordering::Relaxed);
        if at != 0 {
            prefetch(at as *const u8, self.lent_size.load(Ordering::Relaxed));
        }
    }

    /// Drops every queued frame (headers and metadata stay), counted.
    fn shed_frames(&self, state: &mut QueueState<W>) {
        let before = state.items.len();
        state.items.retain(|m| !m.droppable());
        let shed = (before - state.items.len()) as u64;
        state.queued_bytes = state.items.iter().map(MediaMessage::cost).sum();
        self.stats.dropped_frames.fetch_add(shed, Ordering::Relaxed);
    }

    fn count_drop(&self, message: &MediaMessage) {
        if message.kind != MediaKind::Data {
            self.stats.dropped_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves up to `max` queued messages into `out` (which the caller reuses,
    /// so the steady state allocates nothing), waiting while the queue is
    /// empty or held.
    pub async fn next_batch(&self, out: &mut Vec<MediaMessage>, max: usize) -> Batch {
        loop {
            match self.try_batch(out, max) {
                Some(Batch::Hold(until)) => {
                    tokio::select! {
                        () = self.wait() => {}
                        () = tokio::time::sleep_until(until.into()) => {}
                    }
                }
                Some(batch) => return batch,
                None => self.wait().await,
            }
        }
    }

    /// `next_batch` without the wait: `None` when there is nothing to do.
    pub fn try_batch(&self, out: &mut Vec<MediaMessage>, max: usize) -> Option<Batch> {
        self.try_batch_at(out, max, Instant::now())
    }

    /// `try_batch` at `now` (for held messages: whether they are due).
    pub fn try_batch_at(
        &self,
        out: &mut Vec<MediaMessage>,
        max: usize,
        now: Instant,
    ) -> Option<Batch> {
        let mut state = self.lock();
        if let Some(oldest) = state.items.front() {
            let due = oldest.received_at + state.max_delay;
            let held = !state.max_delay.is_zero()
                && now < due
                && !state.ended
                && state.queued_bytes < self.budget_bytes / 2;
            if held {
                if std::mem::take(&mut state.interrupted) {
                    return Some(Batch::Interrupted);
                }
                return Some(Batch::Hold(due));
            }
            let n = state.items.len().min(max);
            let mut taken = 0;
            for message in state.items.drain(..n) {
                taken += message.cost();
                out.push(message);
            }
            state.queued_bytes -= taken;
            self.stats
                .queued_bytes
                .store(state.queued_bytes as u64, Ordering::Relaxed);
            return Some(Batch::Ready);
        }
        if state.ended {
            return Some(Batch::Ended);
        }
        if std::mem::take(&mut state.interrupted) {
            return Some(Batch::Interrupted);
        }
        None
    }

    /// Resolves when the queue may have something for its owner: queued
    /// messages, the end, an interrupt, or a lent writer that stalled. May
    /// resolve spuriously; the owner looks with `try_batch`.
    pub async fn wait(&self) {
        self.ready.notified().await;
    }

    /// Wakes the consumer even with nothing queued (`Batch::Interrupted`),
    /// so it can react to a control change without waiting on a second
    /// channel for every message.
    pub fn interrupt(&self) {
        self.lock().interrupted = true;
        self.ready.notify_one();
    }

    pub fn dropped_frames(&self) -> u64 {
        self.stats.dropped_frames.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use prism_media::message::MESSAGE_OVERHEAD;

    type Queue = DestinationQueue<Recorder>;

    fn video(ts: u64, key: bool, len: usize) -> MediaMessage {
        let mut body = vec![if key { 0x17 } else { 0x27 }, 0x01];
        body.resize(len, 0);
        MediaMessage::new(MediaKind::Video, ts, Bytes::from(body))
    }

    fn audio(ts: u64) -> MediaMessage {
        MediaMessage::new(
            MediaKind::Audio,
            ts,
            Bytes::from_static(&[0xaf, 0x01, 1, 2]),
        )
    }

    fn video_header() -> MediaMessage {
        MediaMessage::new(
            MediaKind::Video,
            0,
            Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        )
    }

    async fn drain(queue: &Queue) -> Vec<MediaMessage> {
        let mut out = Vec::new();
        while !queue.lock().items.is_empty() {
            queue.next_batch(&mut out, 1024).await;
        }
        out
    }

    #[tokio::test]
    async fn over_budget_drops_until_next_keyframe() {
        // The header and two 400-byte frames fit, with their overhead.
        let queue = Queue::new(6 + 800 + 3 * MESSAGE_OVERHEAD + 100);
        queue.reset(true, false);
        queue.push(&video_header());
        queue.push(&video(0, true, 400));
        queue.push(&video(33, false, 400));
        // Over budget: dropped, and so is everything until a keyframe.
        queue.push(&video(66, false, 400));
        queue.push(&audio(70));
        queue.push(&video(99, false, 10));
        assert_eq!(queue.dropped_frames(), 3);
        // The keyframe does not fit either: stale media is shed, headers kept.
        queue.push(&video(132, true, 700));
        let out = drain(&queue).await;
        let stamps: Vec<(u64, bool)> = out.iter().map(|m| (m.timestamp, m.keyframe)).collect();
        assert_eq!(stamps, vec![(0, false), (132, true)]);
        assert!(out[0].sequence_header);
        assert_eq!(queue.dropped_frames(), 5);
    }

    #[tokio::test]
    async fn sequence_headers_and_metadata_are_never_dropped() {
        let queue = Queue::new(300);
        queue.reset(true, false);
        // A keyframe is queued...
        queue.push(&video(0, true, 100));
        // ...but the frame after it is over budget and dropped.
        queue.push(&video(40, false, 100));
        queue.push(&video_header());
        queue.push(&MediaMessage::new(
            MediaKind::Data,
            0,
            Bytes::from(vec![2u8; 64]),
        ));
        let out = drain(&queue).await;
        assert_eq!(out.len(), 3);
        assert!(out[1].sequence_header && out[2].kind == MediaKind::Data);
        assert_eq!(queue.dropped_frames(), 1);
    }

    #[tokio::test]
    async fn a_keyframe_larger_than_the_budget_is_still_queued() {
        let queue = Queue::new(10);
        queue.reset(true, false);
        queue.push(&video(0, true, 100));
        queue.push(&video(40, false, 100));
        let out = drain(&queue).await;
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
    }

    #[tokio::test]
    async fn a_publisher_of_headers_alone_cannot_grow_the_queue() {
        let budget = 4096;
        let queue = Queue::new(budget);
        queue.reset(true, false);
        queue.push(&video(0, true, 1000));
        for n in 0..10_000u64 {
            queue.push(&video_header());
            queue.push(&MediaMessage::new(
                MediaKind::Data,
                n,
                Bytes::from(vec![2u8; 300]),
            ));
            let cost = queue.lock().queued_bytes;
            assert!(
                cost <= 2 * budget + 2 * (300 + MESSAGE_OVERHEAD),
                "{cost} bytes queued"
            );
        }
        // What is left: the newest of each, ready for the next keyframe.
        let out = drain(&queue).await;
        assert!(out.len() <= 2 * budget / (6 + MESSAGE_OVERHEAD) + 2);
        assert!(out.iter().all(|m| !m.droppable()));
        assert_eq!(queue.dropped_frames(), 1);
    }

    /// Tiny messages count with their overhead: the budget bounds memory.
    #[tokio::test]
    async fn tiny_messages_fill_the_budget_by_what_they_cost() {
        let queue = Queue::new(64 * 1024);
        queue.reset(false, false);
        for n in 0..100_000u64 {
            queue.push(&MediaMessage::new(
                MediaKind::Audio,
                n,
                Bytes::from_static(&[0xaf, 0x01]),
            ));
        }
        let queued = queue.lock().items.len();
        assert!(
            queued <= 64 * 1024 / (2 + MESSAGE_OVERHEAD),
            "{queued} messages"
        );
    }

    #[tokio::test]
    async fn joining_mid_gop_waits_for_a_keyframe_but_audio_only_does_not() {
        let queue = Queue::new(1 << 20);
        queue.reset(true, true);
        queue.push(&video(0, false, 10));
        queue.push(&audio(1));
        queue.push(&video(33, true, 10));
        queue.push(&audio(34));
        assert_eq!(drain(&queue).await.len(), 2);
        // Frames before a joiner's first keyframe were never its to send.
        assert_eq!(queue.dropped_frames(), 0);

        queue.reset(false, true);
        queue.push(&audio(1));
        assert_eq!(drain(&queue).await.len(), 1);
    }

    #[tokio::test]
    async fn end_is_seen_after_the_queue_drains() {
        let queue = Queue::new(1 << 20);
        queue.reset(false, false);
        queue.push(&audio(1));
        queue.end();
        queue.push(&audio(2));
        let mut out = Vec::new();
        assert_eq!(queue.next_batch(&mut out, 16).await, Batch::Ready);
        assert_eq!(out.len(), 1);
        assert_eq!(queue.next_batch(&mut out, 16).await, Batch::Ended);
    }

    /// Records what it is given; "the socket" takes `room` messages, then
    /// would block. A held batch counts as one write in `sends`.
    #[derive(Debug, Default)]
    struct Recorder {
        written: Vec<u64>,
        room: usize,
        held: Vec<(u64, usize)>,
        sends: Vec<Vec<u64>>,
    }

    impl Recorder {
        fn with_room(room: usize) -> Box<Self> {
            Box::new(Self {
                room,
                ..Self::default()
            })
        }
    }

    impl DirectWriter for Recorder {
        fn write_now(&mut self, message: &MediaMessage) -> bool {
            self.written.push(message.timestamp);
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            true
        }

        fn hold(&mut self, message: &MediaMessage) {
            self.held.push((message.timestamp, message.cost()));
        }

        fn held_bytes(&self) -> usize {
            self.held.iter().map(|(_, cost)| cost).sum()
        }

        fn send_held(&mut self, _now: Instant) -> bool {
            let batch: Vec<u64> = self.held.drain(..).map(|(ts, _)| ts).collect();
            self.written.extend(&batch);
            self.sends.push(batch);
            if self.room == 0 {
                return false;
            }
            self.room -= 1;
            true
        }
    }

    #[tokio::test]
    async fn a_lent_writer_takes_pushes_until_the_socket_is_full() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(false, false);
        queue.lend(Recorder::with_room(2)).unwrap();
        queue.push(&audio(1));
        queue.push(&audio(2));
        assert!(queue.try_batch(&mut Vec::new(), 16).is_none());
        // The third does not fit: it stays with the writer, the owner is
        // woken, and what comes next queues behind it.
        queue.push(&audio(3));
        queue.push(&audio(4));
        tokio::time::timeout(std::time::Duration::from_secs(1), queue.wait())
            .await
            .expect("the owner is woken");
        let recorder: Box<Recorder> = queue.reclaim().unwrap();
        assert_eq!(recorder.written, vec![1, 2, 3]);
        let mut out = Vec::new();
        assert_eq!(queue.try_batch(&mut out, 16), Some(Batch::Ready));
        assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), vec![4]);
        assert!(queue.reclaim().is_none());
    }

    #[tokio::test]
    async fn lending_is_refused_while_the_owner_has_work() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(false, false);
        let recorder = || Recorder::with_room(10);
        queue.push(&audio(1));
        let back = queue.lend(recorder()).unwrap_err();
        assert!(back.written.is_empty());
        queue.try_batch(&mut Vec::new(), 16);
        queue.interrupt();
        assert!(queue.lend(recorder()).is_err());
        assert_eq!(
            queue.try_batch(&mut Vec::new(), 16),
            Some(Batch::Interrupted)
        );
        // Lent, then the publish ends: the owner is woken and sees the end.
        queue.lend(recorder()).unwrap();
        queue.end();
        queue.push(&audio(2));
        queue.wait().await;
        let recorder: Box<Recorder> = queue.reclaim().unwrap();
        assert!(recorder.written.is_empty());
        assert_eq!(queue.try_batch(&mut Vec::new(), 16), Some(Batch::Ended));
    }

    #[tokio::test]
    async fn the_drop_policy_applies_before_a_direct_write() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(true, true);
        queue.lend(Recorder::with_room(10)).unwrap();
        queue.push(&video(0, false, 10));
        queue.push(&video(33, true, 10));
        queue.push(&audio(34));
        let recorder: Box<Recorder> = queue.reclaim().unwrap();
        assert_eq!(recorder.written, vec![33, 34]);
    }

    fn audio_at(ts: u64, received_at: Instant) -> MediaMessage {
        MediaMessage {
            received_at,
            ..audio(ts)
        }
    }

    #[test]
    fn a_latency_budget_holds_messages_until_the_oldest_is_due() {
        let queue = Queue::new(1 << 20);
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(100));
        let t0 = Instant::now();
        queue.push(&audio_at(1, t0));
        queue.push(&audio_at(2, t0 + Duration::from_millis(60)));
        let mut out = Vec::new();
        let due = t0 + Duration::from_millis(100);
        assert_eq!(
            queue.try_batch_at(&mut out, 16, t0 + Duration::from_millis(99)),
            Some(Batch::Hold(due))
        );
        assert!(out.is_empty());
        // Due: everything queued goes out together.
        assert_eq!(queue.try_batch_at(&mut out, 16, due), Some(Batch::Ready));
        assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn held_messages_go_at_once_when_the_publish_ends_or_the_queue_is_half_full() {
        let queue = Queue::new(4 * (400 + MESSAGE_OVERHEAD));
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(500));
        let t0 = Instant::now();
        let mut out = Vec::new();
        queue.push(&audio_at(1, t0));
        assert!(matches!(
            queue.try_batch_at(&mut out, 16, t0),
            Some(Batch::Hold(_))
        ));
        // An interrupt is seen while messages are held.
        queue.interrupt();
        assert_eq!(
            queue.try_batch_at(&mut out, 16, t0),
            Some(Batch::Interrupted)
        );
        queue.end();
        assert_eq!(queue.try_batch_at(&mut out, 16, t0), Some(Batch::Ready));
        assert_eq!(queue.try_batch_at(&mut out, 16, t0), Some(Batch::Ended));

        let queue = Queue::new(4 * (400 + MESSAGE_OVERHEAD));
        queue.reset(true, false);
        queue.set_max_delay(Duration::from_millis(500));
        queue.push(&MediaMessage {
            received_at: t0,
            ..video(0, true, 400)
        });
        assert!(matches!(
            queue.try_batch_at(&mut out, 16, t0),
            Some(Batch::Hold(_))
        ));
        queue.push(&MediaMessage {
            received_at: t0,
            ..video(33, false, 400)
        });
        out.clear();
        assert_eq!(queue.try_batch_at(&mut out, 16, t0), Some(Batch::Ready));
        assert_eq!(out.len(), 2);
        assert_eq!(queue.dropped_frames(), 0);
    }

    /// The owner is woken once per batch: by the push that finds the queue
    /// empty, not by every push after it.
    #[tokio::test]
    async fn the_owner_is_woken_by_the_first_push_only() {
        let queue = Queue::new(1 << 20);
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(200));
        queue.push(&audio(1));
        tokio::time::timeout(Duration::from_secs(1), queue.wait())
            .await
            .expect("the first push wakes the owner");
        queue.push(&audio(2));
        queue.push(&audio(3));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), queue.wait())
                .await
                .is_err(),
            "later pushes do not wake the owner again"
        );
        let mut out = Vec::new();
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(2), queue.next_batch(&mut out, 16))
                .await
                .expect("held messages come out when due"),
            Batch::Ready
        );
        assert_eq!(out.len(), 3);
    }

    /// Waits (a while at most) until the writer lent to `queue` has sent
    /// `sends` batches; returns what it has sent.
    fn sends_of(queue: &Queue, sends: usize) -> Vec<Vec<u64>> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = queue.lock();
            let writer = state.lent.writer.as_ref().expect("still lent");
            if writer.sends.len() >= sends || Instant::now() > deadline {
                return writer.sends.clone();
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_lent_writer_holds_a_budgets_worth_and_sends_it_in_one_write() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(200));
        queue.lend(Recorder::with_room(10)).unwrap();
        let t0 = Instant::now();
        queue.push(&audio_at(1, t0));
        queue.push(&audio_at(2, t0 + Duration::from_millis(100)));
        queue.push(&audio_at(3, t0 + Duration::from_millis(199)));
        assert!(sends_of(&queue, 0).is_empty(), "held within the budget");
        // The first message past the deadline sends the batch with it; the
        // next starts a new batch.
        queue.push(&audio_at(4, t0 + Duration::from_millis(200)));
        queue.push(&audio_at(5, t0 + Duration::from_millis(210)));
        assert_eq!(sends_of(&queue, 1), [vec![1, 2, 3, 4]]);
        // No push comes after it: the batch timer sends it when it is due
        // (and not again for the first batch's deadline).
        assert_eq!(sends_of(&queue, 2), [vec![1, 2, 3, 4], vec![5]]);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sends_of(&queue, 0).len(), 2);
        assert!(
            queue.try_batch(&mut Vec::new(), 16).is_none(),
            "the owner had nothing to do"
        );
    }

    #[test]
    fn a_held_batch_goes_at_half_the_budget_and_a_full_socket_wakes_the_owner() {
        let queue = Arc::new(Queue::new(4 * (400 + MESSAGE_OVERHEAD)));
        queue.reset(true, false);
        queue.set_max_delay(Duration::from_secs(60));
        queue.lend(Recorder::with_room(0)).unwrap();
        let t0 = Instant::now();
        queue.push(&MediaMessage {
            received_at: t0,
            ..video(0, true, 400)
        });
        assert!(sends_of(&queue, 0).is_empty());
        queue.push(&MediaMessage {
            received_at: t0,
            ..video(33, false, 400)
        });
        assert_eq!(sends_of(&queue, 1), [vec![0, 33]]);
        // The socket took none of it: the owner takes the writer back and
        // what comes meanwhile waits in the queue.
        queue.push(&MediaMessage {
            received_at: t0,
            ..video(66, false, 400)
        });
        let recorder: Box<Recorder> = queue.reclaim().unwrap();
        assert_eq!(recorder.written, [0, 33]);
        let mut out = Vec::new();
        queue.end();
        assert_eq!(queue.try_batch(&mut out, 16), Some(Batch::Ready));
        assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), [66]);
    }

    #[test]
    fn a_writer_taken_back_for_a_moment_goes_back_with_its_batch_and_deadline() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(150));
        queue.lend(Recorder::with_room(10)).unwrap();
        queue.push(&audio(1));
        let (recorder, due) = queue.reclaim_with_batch().unwrap();
        let due = due.expect("the batch is timed");
        // Lent again with its deadline: the timer still sends it, once.
        queue.lend_with_batch(recorder, Some(due)).unwrap();
        queue.push(&audio(2));
        assert_eq!(sends_of(&queue, 1), [vec![1, 2]]);
        assert!(Instant::now() + batch_timer::COALESCE >= due, "sent early");
        // A writer holding bytes without a deadline, or past it, is refused:
        // its owner writes them.
        queue.push(&audio(3));
        let (recorder, due) = queue.reclaim_with_batch().unwrap();
        let back = queue.lend_with_batch(recorder, None).unwrap_err();
        assert_eq!(back.held.len(), 1);
        let back = queue
            .lend_with_batch(back, due.map(|_| Instant::now()))
            .unwrap_err();
        assert_eq!(back.held.len(), 1);
    }

    #[test]
    fn a_writer_taken_back_keeps_its_batch_and_the_timer_leaves_it_alone() {
        let queue = Arc::new(Queue::new(1 << 20));
        queue.reset(false, false);
        queue.set_max_delay(Duration::from_millis(20));
        queue.lend(Recorder::with_room(10)).unwrap();
        queue.push(&audio(1));
        let recorder: Box<Recorder> = queue.reclaim().unwrap();
        assert_eq!(recorder.held.len(), 1, "the owner writes it");
        // Lent again, empty: the first batch's deadline passes, and only the
        // new batch is sent, at its own.
        let mut recorder = recorder;
        recorder.held.clear();
        queue.lend(recorder).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        assert!(sends_of(&queue, 0).is_empty());
        queue.push(&audio(2));
        assert_eq!(sends_of(&queue, 1), [vec![2]]);
    }
}
