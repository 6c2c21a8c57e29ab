//! The publish gate of a cluster node: a stream takes a publisher only on
//! the node that holds its lease. The lease is taken when a publish is
//! admitted, renewed while the stream is live here (its grace and standby
//! included), and released when the session ends.
//!
//! When another node holds the lease but has no encoder connected (it is
//! in its reconnect grace, playing standby, or its publisher went silent),
//! this node asks it to hand the stream over: the encoder reconnected
//! through the load balancer to another node, and the show should follow it
//! at once rather than wait out the grace period.
//!
//! The gate knows streams by id; it finds the stream's hub on this node
//! through the lookup the control plane gives it (`set_streams`).
//!
//! Redis being away never stops a show: a live stream keeps its publisher,
//! and a publish that arrives meanwhile is admitted without a lease (logged),
//! the lease being taken when Redis is back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tracing::{error, info, warn};

use prism_media::gate::{Admission, LiveElsewhere, PublishGate};
use prism_media::supervise::catch_panic;
use prism_media::StreamHub;

use crate::health::{RedisHealth, RedisUnavailable};
use crate::lease::{Acquired, Lease, Leases};

/// The longest a publish waits for Redis before it is admitted anyway.
const REDIS_WAIT: Duration = Duration::from_millis(1500);
/// How often a waiting publish asks for the lease again.
const TAKEOVER_POLL: Duration = Duration::from_millis(100);
/// A waiting publish asks the holder to hand the stream over every 500 ms.
const ASK_EVERY_POLLS: u32 = 5;
/// A lease taken for a publish that is not live yet is kept this long (the
/// publisher's first frame, a pull's connect).
const START_WINDOW: Duration = Duration::from_secs(10);

/// Finds a stream's hub on this node by its id.
pub type StreamLookup = Box<dyn Fn(&str) -> Option<Arc<StreamHub>> + Send + Sync>;

struct Held {
    /// When a publish was last admitted under this lease: the lease is not
    /// given up while that publish may still be starting.
    admitted_at: Instant,
    /// The stream went live since then: its end is the session's end.
    seen_live: bool,
}

pub struct LeaseGate {
    leases: Leases,
    redis: ConnectionManager,
    health: Arc<RedisHealth>,
    node: String,
    ttl: Duration,
    takeover_channel: String,
    held: Mutex<HashMap<String, Held>>,
    streams: OnceLock<StreamLookup>,
}

impl LeaseGate {
    pub(crate) fn new(
        leases: Leases,
        redis: ConnectionManager,
        health: Arc<RedisHealth>,
        node: &str,
        ttl: Duration,
        takeover_channel: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            leases,
            redis,
            health,
            node: node.to_string(),
            ttl,
            takeover_channel,
            held: Mutex::new(HashMap::new()),
            streams: OnceLock::new(),
        })
    }

    /// Gives the gate the streams of this node (once; the control plane
    /// does it before it adds any stream).
    pub fn set_streams(&self, lookup: StreamLookup) {
        if self.streams.set(lookup).is_err() {
            warn!("the cluster gate was given this node's streams twice; the first lookup stays");
        }
    }

    /// The hub of `stream` on this node, if it has that stream.
    fn hub(&self, stream: &str) -> Option<Arc<StreamHub>> {
        self.streams.get().and_then(|lookup| lookup(stream))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The streams whose lease this node holds (or will take when Redis is
    /// back).
    pub fn held_streams(&self) -> usize {
        self.held().len()
    }

    /// Takes the stream's lease for a publish. When another node holds it,
    /// asks that node to hand it over, and waits up to `patience` (at most
    /// the lease time and a little: a dead node's lease expires by then) so
    /// that an encoder reconnecting after its node died gets in on its
    /// first try. A second publisher of a live stream is refused after it.
    async fn admit_publish(
        self: Arc<Self>,
        stream: String,
        patience: Duration,
    ) -> Result<(), LiveElsewhere> {
        if let Some(held) = self.held().get_mut(&stream) {
            held.admitted_at = Instant::now();
            held.seen_live = false;
            return Ok(());
        }
        let deadline = Instant::now() + patience.min(self.ttl + Duration::from_millis(500));
        let mut polls = 0u32;
        loop {
            let lease = match self.redis(self.leases.acquire(&stream)).await {
                Ok(Acquired::Held(lease)) => Some(lease),
                Ok(Acquired::Taken { node }) => {
                    if Instant::now() >= deadline {
                        warn!(stream = %stream, node = %node, "publish refused: the stream is live on another node");
                        return Err(LiveElsewhere { node });
                    }
                    // Asked again now and then: the encoder's old
                    // connection there may not have closed yet.
                    if polls.is_multiple_of(ASK_EVERY_POLLS) {
                        self.ask_takeover(&stream).await;
                    }
                    polls += 1;
                    tokio::time::sleep(TAKEOVER_POLL).await;
                    continue;
                }
                Err(e) => {
                    warn!(stream = %stream, error = %e, "Redis unreachable: publish admitted without a lease (taken when Redis is back)");
                    None
                }
            };
            self.hold(&stream, lease);
            return Ok(());
        }
    }

    /// Asks the node holding `stream` to hand it over if no encoder is
    /// connected there.
    async fn ask_takeover(&self, stream: &str) {
        let mut redis = self.redis.clone();
        let message = format!("{}|{stream}", self.node);
        let asked: Result<i64, _> = self
            .redis(redis.publish(&self.takeover_channel, message))
            .await;
        if let Err(e) = asked {
            warn!(stream = %stream, error = %e, "cannot ask the node holding the stream to hand it over");
        }
    }

    /// Another node asks for `payload`'s stream (`node|stream`): handed over
    /// when it is held here with no encoder connected.
    pub(crate) fn on_takeover_request(&self, payload: &str) {
        let Some((node, stream)) = payload.split_once('|') else {
            return;
        };
        if node == self.node {
            return;
        }
        if !self.held().contains_key(stream) {
            return;
        }
        let Some(hub) = self.hub(stream) else {
            return;
        };
        if hub.has_active_publisher() {
            info!(stream = %stream, node = %node, "another node asked for the stream; an encoder is live here, so it stays");
            return;
        }
        info!(stream = %stream, node = %node, "the encoder reconnected to another node: handing the stream over");
        hub.end_current_publish();
    }

    fn hold(self: &Arc<Self>, stream: &str, lease: Option<Lease>) {
        self.held().insert(
            stream.to_string(),
            Held {
                admitted_at: Instant::now(),
                seen_live: false,
            },
        );
        let gate = Arc::clone(self);
        let stream = stream.to_string();
        tokio::spawn(async move {
            let kept = catch_panic(
                "cluster_lease",
                Arc::clone(&gate).keep(stream.clone(), lease),
            )
            .await;
            if let Err(panic) = kept {
                // Unrenewed, the lease would lapse under a live show and
                // another node could take the same key: end it here.
                error!(stream = %stream, %panic, "the stream's lease task panicked: ending the publish here");
                gate.held().remove(&stream);
                if let Some(hub) = gate.hub(&stream) {
                    hub.end_current_publish();
                }
            }
        });
    }

    /// Renews the lease while the stream is live here; gives it up when the
    /// session ends; ends the session if another node has the lease now.
    async fn keep(self: Arc<Self>, stream: String, mut lease: Option<Lease>) {
        let Some(mut live) = self.hub(&stream).map(|hub| hub.watch_live()) else {
            // Not a stream of this node (removed meanwhile): nothing to
            // keep the lease for.
            self.give_up(&stream, lease.as_ref(), true).await;
            return;
        };
        let renew_every = self.ttl / 3;
        let mut redis_was_down = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(renew_every) => {}
                changed = live.changed() => {
                    if changed.is_err() {
                        // The hub is gone (the stream was removed).
                        self.give_up(&stream, lease.as_ref(), true).await;
                        return;
                    }
                }
            }
            if self.session_over(&stream) {
                self.give_up(&stream, lease.as_ref(), false).await;
                return;
            }
            let renewed = match &lease {
                Some(held) => self.redis(self.leases.renew(held)).await,
                None => Ok(false),
            };
            match renewed {
                Ok(true) => redis_was_down = false,
                // Expired while Redis was away (or never taken): take it
                // again, unless another node has it now.
                Ok(false) => match self.redis(self.leases.acquire(&stream)).await {
                    Ok(Acquired::Held(new)) => {
                        if lease.is_none() || redis_was_down {
                            info!(stream = %stream, fence = new.fence, "stream lease taken now that Redis answers");
                        } else {
                            warn!(stream = %stream, fence = new.fence, "stream lease had expired; taken again");
                        }
                        lease = Some(new);
                        redis_was_down = false;
                    }
                    Ok(Acquired::Taken { node }) => {
                        error!(stream = %stream, node = %node, "another node holds the stream's lease now: ending the publish here");
                        if let Some(hub) = self.hub(&stream) {
                            hub.end_current_publish();
                        }
                        self.give_up(&stream, None, true).await;
                        return;
                    }
                    Err(_) => redis_was_down = true,
                },
                Err(e) => {
                    if !redis_was_down {
                        warn!(stream = %stream, error = %e, "cannot renew the stream lease: Redis unreachable; the show goes on");
                    }
                    redis_was_down = true;
                }
            }
        }
    }

    /// Whether the stream's session here is over: not live, and no publish
    /// admitted recently that may still be starting. Forgets the stream if
    /// so, under the same lock `admit` takes, so a publish admitted now
    /// takes a new lease.
    fn session_over(&self, stream: &str) -> bool {
        let live_here = self.hub(stream).is_some_and(|h| h.is_live());
        let mut held = self.held();
        let Some(entry) = held.get_mut(stream) else {
            return true;
        };
        if live_here {
            entry.seen_live = true;
            return false;
        }
        if !entry.seen_live && entry.admitted_at.elapsed() < START_WINDOW {
            return false;
        }
        held.remove(stream);
        true
    }

    async fn give_up(&self, stream: &str, lease: Option<&Lease>, forget: bool) {
        if forget {
            self.held().remove(stream);
        }
        if let Some(lease) = lease {
            // On failure it expires on its own within the lease time.
            let _ = self.redis(self.leases.release(lease)).await;
        }
    }

    /// One Redis operation, bounded in time, its outcome recorded.
    async fn redis<T, E: std::fmt::Display>(
        &self,
        operation: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, RedisUnavailable> {
        self.health.bounded(REDIS_WAIT, operation).await
    }
}

impl PublishGate for LeaseGate {
    fn admit(self: Arc<Self>, stream: &str, patience: Duration) -> Admission {
        Box::pin(self.admit_publish(stream.to_string(), patience))
    }
}
