//! Admission control for RTMP: who gets a connection slot under attack.
//!
//! A connection is *anonymous* from accept until its publish is accepted
//! with a known stream key; only anonymous connections are bounded here
//! (publishing ones are bounded by the number of streams, one each).
//!
//! - One source address may hold `max_anonymous_per_address`; a newcomer
//!   from an address at its cap evicts that address's stalest connection.
//! - All addresses together may hold `max_anonymous`. When that pool is
//!   full, the accept loop takes the next connection from the kernel's
//!   queue (first come, first served) only once the stalest anonymous
//!   connection has made no progress for `stall_timeout`; it is evicted to
//!   make room. Progress is a step of the opening (handshake, `connect`,
//!   `createStream`), which an encoder makes every round trip, so an
//!   encoder is never the stalest while idle sockets hold slots, and idle
//!   sockets leave at `max_anonymous / stall_timeout` per second however
//!   fast they reconnect.
//!
//! `AdmissionTable` is the pure bookkeeping (time passed in); `Admission`
//! wraps it for the accept loop and the connection tasks.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How far an anonymous connection has come; eviction takes the lowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Accepted; the RTMP handshake is not complete.
    Accepted,
    /// Handshake complete; no `connect` yet.
    Handshaken,
    /// `connect` answered; no accepted publish yet.
    Connected,
    /// `createStream` answered; the publish is next.
    StreamCreated,
}

/// The bounds on anonymous connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Anonymous connections at once, from all addresses.
    pub max_anonymous: usize,
    /// Anonymous connections at once from one source address.
    pub max_anonymous_per_address: usize,
    /// With the pool full, a connection without progress for this long
    /// gives its slot to the next one.
    pub stall_timeout: Duration,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_anonymous: 512,
            max_anonymous_per_address: 16,
            stall_timeout: Duration::from_secs(1),
        }
    }
}

/// Why a connection was evicted: which bound the newcomer ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictedBy {
    /// `max_anonymous` reached.
    Pool,
    /// `max_anonymous_per_address` reached for the victim's address.
    Address,
}

#[derive(Debug)]
struct Entry {
    address: IpAddr,
    stage: Stage,
    /// When it was accepted or last moved to a later stage.
    progressed: Instant,
}

/// The anonymous connections, by id, with their address and progress.
#[derive(Debug)]
pub struct AdmissionTable {
    limits: AdmissionLimits,
    next_id: u64,
    entries: BTreeMap<u64, Entry>,
    per_address: HashMap<IpAddr, usize>,
}

impl AdmissionTable {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits: AdmissionLimits {
                max_anonymous: limits.max_anonymous.max(1),
                max_anonymous_per_address: limits.max_anonymous_per_address.max(1),
                stall_timeout: limits.stall_timeout,
            },
            next_id: 0,
            entries: BTreeMap::new(),
            per_address: HashMap::new(),
        }
    }

    /// When the pool has room for one more: `None` if now, else the time
    /// the stalest connection will have stalled (earlier if one leaves).
    pub fn room_at(&self, now: Instant) -> Option<Instant> {
        if self.entries.len() < self.limits.max_anonymous {
            return None;
        }
        let stalled_at = self
            .victim(None)
            .map(|id| self.entries[&id].progressed + self.limits.stall_timeout)?;
        (stalled_at > now).then_some(stalled_at)
    }

    /// Registers a new anonymous connection; returns its id and the ids it
    /// evicts (at most one per bound), which the caller must close. The
    /// caller waits for `room_at` first, so the pool's victim has stalled.
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> (u64, Vec<(u64, EvictedBy)>) {
        let mut evicted = Vec::new();
        if self.per_address.get(&address).copied().unwrap_or(0)
            >= self.limits.max_anonymous_per_address
        {
            if let Some(victim) = self.victim(Some(address)) {
                self.remove(victim);
                evicted.push((victim, EvictedBy::Address));
            }
        }
        if self.entries.len() >= self.limits.max_anonymous {
            if let Some(victim) = self.victim(None) {
                self.remove(victim);
                evicted.push((victim, EvictedBy::Pool));
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                address,
                stage: Stage::Accepted,
                progressed: now,
            },
        );
        *self.per_address.entry(address).or_default() += 1;
        (id, evicted)
    }

    /// Records progress; a connection never moves back.
    pub fn advance(&mut self, id: u64, stage: Stage, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&id) {
            if stage > entry.stage {
                entry.stage = stage;
                entry.progressed = now;
            }
        }
    }

    /// Forgets a connection: it published (and is no longer anonymous), was
    /// evicted, or closed.
    pub fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            if let Some(count) = self.per_address.get_mut(&entry.address) {
                *count -= 1;
                if *count == 0 {
                    self.per_address.remove(&entry.address);
                }
            }
        }
    }

    pub fn anonymous(&self) -> usize {
        self.entries.len()
    }

    /// The stalest anonymous connection (of one address, or of all): the
    /// longest without progress, the least advanced of equals. A linear scan
    /// of at most `max_anonymous` entries, once per accepted connection.
    fn victim(&self, address: Option<IpAddr>) -> Option<u64> {
        self.entries
            .iter()
            .filter(|(_, e)| address.is_none_or(|a| e.address == a))
            .min_by_key(|(id, e)| (e.progressed, e.stage, **id))
            .map(|(id, _)| *id)
    }
}

/// The shared admission state: the table, and a way to tell each evicted
/// connection's task to close.
pub struct Admission {
    inner: Mutex<Inner>,
    /// Woken when a connection leaves the pool.
    left: Notify,
}

struct Inner {
    table: AdmissionTable,
    evict: HashMap<u64, Arc<Notify>>,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                table: AdmissionTable::new(limits),
                evict: HashMap::new(),
            }),
            left: Notify::new(),
        }
    }

    /// Waits until the pool has room for one more connection.
    pub async fn room(&self) {
        loop {
            let left = self.left.notified();
            let room_at = {
                let inner = self.inner.lock().expect("admission lock");
                inner.table.room_at(Instant::now())
            };
            match room_at {
                None => return,
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = left => {}
                    }
                }
            }
        }
    }

    /// Admits a new connection, evicting what the bounds require; returns
    /// its ticket and why each eviction happened (for the counters).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> (Ticket, Vec<EvictedBy>) {
        let evicted_notify = Arc::new(Notify::new());
        let mut inner = self.inner.lock().expect("admission lock");
        let (id, evicted) = inner.table.admit(address, Instant::now());
        let mut reasons = Vec::with_capacity(evicted.len());
        for (victim, reason) in evicted {
            if let Some(notify) = inner.evict.remove(&victim) {
                notify.notify_one();
            }
            reasons.push(reason);
        }
        inner.evict.insert(id, Arc::clone(&evicted_notify));
        drop(inner);
        let ticket = Ticket {
            admission: Arc::clone(self),
            id,
            evicted: evicted_notify,
            anonymous: true,
        };
        (ticket, reasons)
    }

    pub fn anonymous(&self) -> usize {
        self.inner.lock().expect("admission lock").table.anonymous()
    }

    fn forget(&self, id: u64) {
        let mut inner = self.inner.lock().expect("admission lock");
        inner.table.remove(id);
        inner.evict.remove(&id);
        drop(inner);
        self.left.notify_waiters();
    }
}

/// One connection's place in admission; leaving the anonymous pool (or
/// dropping the ticket) frees it.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evicted: Arc<Notify>,
    anonymous: bool,
}

impl Ticket {
    /// Whether this connection still counts against the anonymous bounds.
    pub fn is_anonymous(&self) -> bool {
        self.anonymous
    }

    pub fn advance(&self, stage: Stage) {
        if self.anonymous {
            let mut inner = self.admission.inner.lock().expect("admission lock");
            inner.table.advance(self.id, stage, Instant::now());
        }
    }

    /// The publish was accepted with a known key: no longer evictable.
    pub fn publishing(&mut self) {
        if std::mem::take(&mut self.anonymous) {
            self.admission.forget(self.id);
        }
    }

    /// Resolves when this connection is evicted (never, once publishing).
    pub async fn evicted(&self) {
        if self.anonymous {
            self.evicted.notified().await
        } else {
            std::future::pending().await
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.anonymous {
            self.admission.forget(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn limits(max_anonymous: usize, per_address: usize) -> AdmissionLimits {
        AdmissionLimits {
            max_anonymous,
            max_anonymous_per_address: per_address,
            stall_timeout: STALL,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_pool_has_room_once_its_stalest_connection_stalls() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(limits(2, 2));
        let (a, _) = t.admit(ip(1), t0);
        assert_eq!(t.room_at(t0), None);
        let (b, _) = t.admit(ip(2), t0 + ms(100));
        assert_eq!(t.room_at(t0 + ms(200)), Some(t0 + STALL));
        // a makes progress: b is now the stalest.
        t.advance(a, Stage::Handshaken, t0 + ms(300));
        assert_eq!(t.room_at(t0 + ms(400)), Some(t0 + ms(100) + STALL));
        let now = t0 + ms(100) + STALL;
        assert_eq!(t.room_at(now), None);
        let (_, evicted) = t.admit(ip(3), now);
        assert_eq!(evicted, vec![(b, EvictedBy::Pool)]);
        assert_eq!(t.anonymous(), 2);
    }

    #[test]
    fn one_address_is_capped_at_its_own_share() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(limits(10, 2));
        let (a, _) = t.admit(ip(1), t0);
        let (_b, _) = t.admit(ip(1), t0 + ms(1));
        let (other, _) = t.admit(ip(2), t0);
        let (_, evicted) = t.admit(ip(1), t0 + ms(2));
        // The address's own stalest goes, not the other address's.
        assert_eq!(evicted, vec![(a, EvictedBy::Address)]);
        assert!(t.entries.contains_key(&other));
    }

    /// 600 idle sockets cycling through a pool of 128 as fast as room
    /// appears: an encoder that progresses every 200 ms is never evicted
    /// before its publish.
    #[test]
    fn an_encoder_that_progresses_outlives_any_number_of_idle_sockets() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(limits(128, 16));
        for n in 0..128u32 {
            let (id, _) = t.admit(ip((n % 200) as u8), t0);
            t.advance(id, Stage::Handshaken, t0);
        }
        let mut now = t0 + STALL;
        let (encoder, _) = t.admit(ip(250), now);
        let stages = [Stage::Handshaken, Stage::Connected, Stage::StreamCreated];
        let (mut next_step, mut published) = (0, false);
        for n in 0..600u32 {
            now += ms(5);
            if !published && now >= t0 + STALL + ms(200) * (next_step as u32 + 1) {
                match stages.get(next_step) {
                    Some(&stage) => t.advance(encoder, stage, now),
                    None => {
                        assert!(
                            t.entries.contains_key(&encoder),
                            "evicted before its publish"
                        );
                        t.remove(encoder); // the publish is accepted
                        published = true;
                    }
                }
                next_step += 1;
            }
            if let Some(at) = t.room_at(now) {
                now = at;
            }
            let (id, evicted) = t.admit(ip((n % 200) as u8), now);
            assert!(evicted.iter().all(|(victim, _)| *victim != encoder));
            t.advance(id, Stage::Handshaken, now);
        }
        assert!(published, "the simulated encoder never reached its publish");
        assert!(t.anonymous() <= 128);
    }

    #[test]
    fn removal_frees_the_address_share() {
        let t0 = Instant::now();
        let mut t = AdmissionTable::new(limits(10, 1));
        let (a, _) = t.admit(ip(1), t0);
        t.remove(a);
        let (_, evicted) = t.admit(ip(1), t0);
        assert!(evicted.is_empty());
        assert_eq!(t.per_address.get(&ip(1)), Some(&1));
    }

    #[tokio::test(start_paused = true)]
    async fn room_waits_for_a_stall_or_a_departure() {
        let admission = Arc::new(Admission::new(limits(1, 1)));
        let (first, _) = admission.admit(ip(1));
        let started = Instant::now();
        admission.room().await;
        assert!(started.elapsed() >= STALL, "room before the stall timeout");
        let (mut second, reasons) = admission.admit(ip(2));
        assert_eq!(reasons, vec![EvictedBy::Pool]);
        tokio::time::timeout(ms(10), first.evicted())
            .await
            .expect("the first connection is told it was evicted");
        // A departure makes room at once.
        let waiting = tokio::spawn({
            let admission = Arc::clone(&admission);
            async move { admission.room().await }
        });
        tokio::time::sleep(ms(10)).await;
        second.publishing();
        tokio::time::timeout(ms(10), waiting)
            .await
            .unwrap()
            .unwrap();
        let still = tokio::time::timeout(ms(50), second.evicted()).await;
        assert!(still.is_err(), "a publishing connection is never evicted");
    }
}
