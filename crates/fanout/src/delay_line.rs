//! Delayed destinations (`delay_s`): the stream's delay ring (see
//! `prism_media::delay`), fed like a destination by the stream's hub, and
//! one *delayed hub* per delay, into which the ring releases the stream
//! that much later. A delayed destination is an ordinary destination of its
//! delayed hub: it connects when the delayed session begins, gets its own
//! tracks from it, and unpublishes when the delayed session ends.
//!
//! One task per stream owns the timing: it subscribes the ring to each live
//! session, sleeps until the next entry falls due, and releases it. A panic
//! in it is logged and counted, and it starts again (the ring and the
//! delayed hubs outlive it).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};
use tracing::{error, warn};

use prism_media::delay::{DelayEvent, DelayRing, Overflow};
use prism_media::single_track::Tracks;
use prism_media::supervise::catch_panic;
use prism_media::{IngestProtocol, MediaMessage, PublishGuard, StreamHub, Subscriber};

/// Shown as the delayed hubs' publisher: nothing connects from there.
const RING: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// A delay buffer that dropped media says so this long after.
const OVERFLOW_SHOWN_FOR: Duration = Duration::from_secs(60);

/// The delayed outputs of one stream.
pub struct DelayLine {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

struct Shared {
    hub: Arc<StreamHub>,
    feed: Arc<RingFeed>,
    outputs: Mutex<Vec<Output>>,
}

/// One delay: its hub, the publish the ring holds on it, and how many
/// destinations use it.
struct Output {
    delay: Duration,
    hub: Arc<StreamHub>,
    publish: Option<PublishGuard>,
    users: usize,
}

/// The ring as the stream's hub sees it: a subscriber.
struct RingFeed {
    ring: Mutex<DelayRing>,
    subscription: Mutex<u64>,
    wake: Notify,
}

impl RingFeed {
    fn ring(&self) -> MutexGuard<'_, DelayRing> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self, event: DelayEvent) {
        let mut ring = self.ring();
        let was_due = ring.next_due();
        ring.push(Instant::now(), event);
        if was_due.is_none() {
            drop(ring);
            self.wake.notify_one();
        }
    }
}

impl Subscriber for RingFeed {
    fn begin(&self, _stream_has_video: bool, _start_mid_gop: bool) -> u64 {
        let mut subscription = self.subscription.lock().unwrap_or_else(|e| e.into_inner());
        *subscription += 1;
        self.hold(DelayEvent::Begin);
        *subscription
    }

    fn push_replay(&self, message: MediaMessage) {
        self.hold(DelayEvent::Media(message));
    }

    fn push(&self, subscription: u64, message: &MediaMessage) {
        if *self.subscription.lock().unwrap_or_else(|e| e.into_inner()) == subscription {
            self.hold(DelayEvent::Media(message.clone()));
        }
    }

    fn await_keyframe(&self) {
        // The hub sends the new source's headers and keyframe next; the
        // ring keeps them in order like everything else.
    }

    fn end(&self) {
        self.hold(DelayEvent::End);
    }
}

impl DelayLine {
    /// The delay line of `hub`'s stream, holding at most `budget_bytes`.
    pub fn start(hub: Arc<StreamHub>, budget_bytes: usize) -> Self {
        let shared = Arc::new(Shared {
            hub,
            feed: Arc::new(RingFeed {
                ring: Mutex::new(DelayRing::new(budget_bytes)),
                subscription: Mutex::new(0),
                wake: Notify::new(),
            }),
            outputs: Mutex::new(Vec::new()),
        });
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(supervise(Arc::clone(&shared), stopped));
        Self { shared, stop }
    }

    /// The hub that carries the stream `delay` later, for a destination
    /// that goes out that late. The delay is read while a `DelayedHub` for
    /// it lives.
    pub fn hub_for(&self, delay: Duration) -> DelayedHub {
        let mut outputs = self.shared.outputs();
        let hub = match outputs.iter_mut().find(|o| o.delay == delay) {
            Some(output) => {
                output.users += 1;
                Arc::clone(&output.hub)
            }
            None => {
                let hub = StreamHub::new(self.shared.hub.id());
                outputs.push(Output {
                    delay,
                    hub: Arc::clone(&hub),
                    publish: None,
                    users: 1,
                });
                self.shared.feed.ring().add_delay(delay);
                hub
            }
        };
        drop(outputs);
        self.shared.feed.wake.notify_one();
        DelayedHub {
            hub,
            delay,
            line: Arc::downgrade(&self.shared),
        }
    }

    /// What the ring holds now, in bytes.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.feed.ring().bytes()
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.shared.hub.unsubscribe(&self.shared.feed);
        for output in self.shared.outputs().drain(..) {
            output.hub.end_current_publish();
        }
    }
}

/// A delayed destination's hold on its delay: the hub it is a destination
/// of. The last one of a delay to go ends that delay's session and its
/// share of the ring.
pub struct DelayedHub {
    pub hub: Arc<StreamHub>,
    delay: Duration,
    line: Weak<Shared>,
}

impl DelayedHub {
    /// Its ring ran out of room within the last minute: what it held then.
    pub fn recent_overflow(&self) -> Option<Overflow> {
        let shared = self.line.upgrade()?;
        let overflow = shared.feed.ring().overflow();
        overflow.filter(|o| o.at.elapsed() < OVERFLOW_SHOWN_FOR)
    }
}

impl Drop for DelayedHub {
    fn drop(&mut self) {
        if let Some(shared) = self.line.upgrade() {
            shared.release(self.delay);
        }
    }
}

impl Shared {
    fn outputs(&self) -> MutexGuard<'_, Vec<Output>> {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, delay: Duration) {
        let mut outputs = self.outputs();
        let Some(at) = outputs.iter().position(|o| o.delay == delay) else {
            return;
        };
        outputs[at].users -= 1;
        if outputs[at].users == 0 {
            let output = outputs.remove(at);
            drop(outputs);
            output.hub.end_current_publish();
            self.feed.ring().remove_delay(delay);
        }
    }

    /// Releases what is due at `now` into each delayed hub.
    fn release_due(&self, now: Instant) {
        let mut events = Vec::new();
        let mut outputs = self.outputs();
        for output in outputs.iter_mut() {
            events.clear();
            self.feed.ring().take_due(output.delay, now, &mut events);
            for event in events.drain(..) {
                match event {
                    DelayEvent::Begin => {
                        if output.publish.is_none() {
                            output.publish =
                                output.hub.try_publish(IngestProtocol::Rtmp, RING).ok();
                        }
                    }
                    DelayEvent::Media(message) => {
                        if let Some(publish) = &mut output.publish {
                            // Its relay latency counts from its release.
                            publish.push(MediaMessage {
                                received_at: now,
                                ..message
                            });
                        }
                    }
                    DelayEvent::End => {
                        if let Some(publish) = output.publish.take() {
                            publish.finish();
                        }
                    }
                }
            }
        }
    }
}

/// Runs the line's task, and again after a panic.
async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        match catch_panic("delay_line", run(&shared, stop.clone())).await {
            Ok(()) => return,
            Err(panic) => {
                error!(stream = %shared.hub.id(), panic = %panic, "the delay line's task panicked; it starts again");
                shared.hub.unsubscribe(&shared.feed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        }
    }
}

/// Subscribes the ring to each live session of the stream, and releases
/// what falls due, until stopped.
async fn run(shared: &Shared, mut stop: watch::Receiver<bool>) {
    let mut live = shared.hub.watch_live();
    let mut served: Option<u64> = None;
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        let publish = *live.borrow_and_update();
        if publish.live && served != Some(publish.session) {
            served = Some(publish.session);
            if shared.hub.subscribe(&shared.feed, Tracks::All).is_none() {
                warn!(stream = %shared.hub.id(), "the session ended before the delay line joined it");
            }
        }
        shared.release_due(Instant::now());
        let due = shared.feed.ring().next_due();
        let sleep = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = shared.feed.wake.notified() => {}
            r = live.changed() => if r.is_err() { return },
            r = stop.changed() => if r.is_err() { return },
        }
    }
}
