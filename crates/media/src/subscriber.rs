//! What a stream hub pushes to: one consumer of the stream (a destination's
//! queue, in the fan-out crate). The hub knows only this trait, so the
//! consumer's queueing, drop policy and socket writes live with it.

use std::sync::Arc;

use crate::message::MediaMessage;
use crate::single_track::{DefaultTrack, Tracks};

/// A consumer the hub pushes every message of the live session to. Every
/// method is called from the thread that pushes (a publisher's, or a
/// fan-out thread) and must never wait on I/O.
pub trait Subscriber: Send + Sync + 'static {
    /// A new subscription begins: forget what is queued. `start_mid_gop`
    /// says the hub has no keyframe to replay, so media must wait for the
    /// next one. Returns the subscription's number, which the hub passes
    /// back with every live push.
    fn begin(&self, stream_has_video: bool, start_mid_gop: bool) -> u64;

    /// A message of the replay that primes a new subscription (headers,
    /// metadata, the cached GOP): taken whatever the consumer's budget.
    fn push_replay(&self, message: MediaMessage);

    /// A live message for `subscription`. A push for an earlier
    /// subscription is ignored: a fan-out thread may deliver a message
    /// queued before the consumer left and subscribed again.
    fn push(&self, subscription: u64, message: &MediaMessage);

    /// Another source took over the session: wait for its first keyframe.
    fn await_keyframe(&self);

    /// The live session ended.
    fn end(&self);

    /// A hint that `push` comes soon: bring what it touches into the
    /// caches (see `push_to_all`).
    fn prefetch(&self) {}
}

/// A subscriber as a hub holds it: with the subscription it joined with
/// and the tracks it takes.
#[derive(Clone)]
pub(crate) struct Subscription {
    pub(crate) subscriber: Arc<dyn Subscriber>,
    id: u64,
    tracks: Tracks,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("tracks", &self.tracks)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(subscriber: Arc<dyn Subscriber>, id: u64, tracks: Tracks) -> Self {
        Self {
            subscriber,
            id,
            tracks,
        }
    }

    /// Whether this is `subscriber`'s (the same object, whatever its type).
    pub(crate) fn is_of(&self, subscriber: &Arc<dyn Subscriber>) -> bool {
        same_subscriber(&self.subscriber, subscriber)
    }

    /// Pushes `message`, or what a single-track consumer gets of it
    /// (`single`, when it differs).
    fn push(&self, message: &MediaMessage, single: Option<&DefaultTrack>) {
        match (self.tracks, single) {
            (Tracks::Default, Some(DefaultTrack::Track(track))) => {
                self.subscriber.push(self.id, track)
            }
            (Tracks::Default, Some(DefaultTrack::Nothing)) => {}
            _ => self.subscriber.push(self.id, message),
        }
    }
}

pub(crate) fn same_subscriber(a: &Arc<dyn Subscriber>, b: &Arc<dyn Subscriber>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// Pushes each of `messages`, in order, to every subscription of `lane`
/// (one lane of a stream's destinations). `singles` is what single-track
/// consumers get of each message, or empty when that is each message as
/// it is (a stream without multitrack messages).
///
/// Each push reads the destination's queue, then its lent writer, then
/// writes to its socket; the socket copy in between (a video frame to a
/// few hundred sockets is megabytes) pushes that state out of the caches
/// before the next message, so every push waited on memory for the queue,
/// then again for the writer it points to. The walk asks for both ahead:
/// the subscriber two destinations on, what the next one's push will touch
/// (whose subscriber arrived meanwhile), so each one's fetch overlaps the
/// send before it.
pub(crate) fn push_to_all(
    lane: &[Subscription],
    messages: &[MediaMessage],
    singles: &[DefaultTrack],
) {
    for (at, message) in messages.iter().enumerate() {
        let single = singles.get(at);
        for (at, subscription) in lane.iter().enumerate() {
            if let Some(later) = lane.get(at + 2) {
                let subscriber: &dyn Subscriber = &*later.subscriber;
                prefetch(
                    std::ptr::from_ref(subscriber).cast(),
                    size_of_val(subscriber),
                );
            }
            if let Some(next) = lane.get(at + 1) {
                next.subscriber.prefetch();
            }
            subscription.push(message, single);
        }
    }
}

/// Asks the core to bring `len` bytes from `at` into its caches, without
/// waiting for them. Only a hint: a stale address costs a wasted fetch,
/// never a fault.
#[inline(always)]
pub fn prefetch(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = at as usize & !63;
        let end = at as usize + len;
        for line in (start..end).step_by(64) {
            // SAFETY: SSE is in every x86_64 CPU, and a prefetch reads
            // nothing the program can see: any address is allowed.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}

/// A subscriber for tests: keeps what it is pushed, and waits for a
/// keyframe when told to, as a destination's queue does.
#[cfg(test)]
pub(crate) mod inbox {
    use std::sync::Mutex;

    use super::*;
    use crate::message::MediaKind;

    #[derive(Debug, Default)]
    struct State {
        subscription: u64,
        received: Vec<MediaMessage>,
        awaiting_keyframe: bool,
        has_video: bool,
        ended: bool,
    }

    #[derive(Debug, Default)]
    pub(crate) struct Inbox(Mutex<State>);

    impl Inbox {
        pub(crate) fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }

        /// Everything received since the last call.
        pub(crate) fn take(&self) -> Vec<MediaMessage> {
            std::mem::take(&mut self.0.lock().unwrap().received)
        }

        pub(crate) fn ended(&self) -> bool {
            self.0.lock().unwrap().ended
        }
    }

    impl Subscriber for Inbox {
        fn begin(&self, stream_has_video: bool, start_mid_gop: bool) -> u64 {
            let mut state = self.0.lock().unwrap();
            state.subscription += 1;
            state.received.clear();
            state.ended = false;
            state.has_video = stream_has_video;
            state.awaiting_keyframe = stream_has_video && start_mid_gop;
            state.subscription
        }

        fn push_replay(&self, message: MediaMessage) {
            self.0.lock().unwrap().received.push(message);
        }

        fn push(&self, subscription: u64, message: &MediaMessage) {
            let mut state = self.0.lock().unwrap();
            if state.ended || state.subscription != subscription {
                return;
            }
            if message.kind == MediaKind::Video && message.sequence_header {
                state.has_video = true;
            }
            if message.droppable() && state.awaiting_keyframe {
                if !(message.kind == MediaKind::Video && message.keyframe) {
                    return;
                }
                state.awaiting_keyframe = false;
            }
            state.received.push(message.clone());
        }

        fn await_keyframe(&self) {
            let mut state = self.0.lock().unwrap();
            state.awaiting_keyframe = state.has_video;
        }

        fn end(&self) {
            self.0.lock().unwrap().ended = true;
        }
    }
}
