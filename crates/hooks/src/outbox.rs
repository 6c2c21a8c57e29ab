//! A webhook's queue of events to deliver, sans-IO: in order, at least
//! once, retried with backoff (1 s doubling to 5 min) for up to 24 hours
//! after the first try, bounded (past `max`, the oldest is dropped). The
//! caller passes the wall clock (ms since the Unix epoch, so a queue read
//! back after a restart keeps its deadlines) and carries out the sends.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// The first retry waits this long; each next one twice as long.
pub const FIRST_RETRY_MS: u64 = 1_000;
/// Retries wait at most this long.
pub const MAX_RETRY_MS: u64 = 5 * 60_000;
/// An event not delivered this long after its first try is given up.
pub const GIVE_UP_MS: u64 = 24 * 3_600_000;

/// One event waiting to be delivered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub id: String,
    /// The event's JSON, as built when it happened.
    pub body: String,
    /// Wall-clock ms of its first try (0: not tried yet).
    #[serde(default)]
    pub first_try_ms: u64,
    #[serde(default)]
    pub attempts: u32,
    /// Not to be tried again before this (wall-clock ms).
    #[serde(default)]
    pub next_try_ms: u64,
}

/// What became of the event at the head after a try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Delivered (2xx): it leaves the queue.
    Delivered(String),
    /// Refused for good (a 4xx: the receiver will never take it).
    Rejected(String),
    /// Failed 24 hours after its first try: given up.
    Expired(String),
    /// Failed; tried again at `next_try_ms`.
    Retrying { id: String, next_try_ms: u64 },
}

#[derive(Debug)]
pub struct Outbox {
    pending: VecDeque<Pending>,
    max: usize,
}

impl Outbox {
    pub fn new(max: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Queues an event; returns the one dropped to make room, if any.
    pub fn push(&mut self, event: Pending) -> Option<Pending> {
        let dropped = (self.pending.len() >= self.max)
            .then(|| self.pending.pop_front())
            .flatten();
        self.pending.push_back(event);
        dropped
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Every event waiting, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// When the head is due (wall-clock ms), if there is one.
    pub fn next_try_ms(&self) -> Option<u64> {
        self.pending.front().map(|p| p.next_try_ms)
    }

    /// The head, if it is due at `now_ms`, marked as tried.
    pub fn due(&mut self, now_ms: u64) -> Option<&Pending> {
        let head = self.pending.front_mut()?;
        if head.next_try_ms > now_ms {
            return None;
        }
        if head.first_try_ms == 0 {
            head.first_try_ms = now_ms.max(1);
        }
        head.attempts += 1;
        Some(head)
    }

    /// The head was delivered.
    pub fn delivered(&mut self) -> Option<Settled> {
        self.pending.pop_front().map(|p| Settled::Delivered(p.id))
    }

    /// The head was refused for good.
    pub fn rejected(&mut self) -> Option<Settled> {
        self.pending.pop_front().map(|p| Settled::Rejected(p.id))
    }

    /// The head's try failed at `now_ms` (5xx, timeout, unreachable).
    pub fn failed(&mut self, now_ms: u64) -> Option<Settled> {
        let head = self.pending.front_mut()?;
        let shift = head.attempts.saturating_sub(1).min(20);
        let wait = (FIRST_RETRY_MS << shift).min(MAX_RETRY_MS);
        let next = now_ms + wait;
        if next > head.first_try_ms.saturating_add(GIVE_UP_MS) {
            return self.pending.pop_front().map(|p| Settled::Expired(p.id));
        }
        head.next_try_ms = next;
        Some(Settled::Retrying {
            id: head.id.clone(),
            next_try_ms: next,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Pending {
        Pending {
            id: id.into(),
            body: format!("{{\"id\":\"{id}\"}}"),
            first_try_ms: 0,
            attempts: 0,
            next_try_ms: 0,
        }
    }

    #[test]
    fn the_head_is_retried_with_doubling_waits_and_the_rest_waits_behind_it() {
        let mut outbox = Outbox::new(10);
        outbox.push(event("a"));
        outbox.push(event("b"));
        let mut now = 1_000_000;
        let mut waits = Vec::new();
        for _ in 0..12 {
            assert_eq!(outbox.due(now).unwrap().id, "a", "in order: b waits");
            let Some(Settled::Retrying { next_try_ms, .. }) = outbox.failed(now) else {
                panic!("retried");
            };
            waits.push(next_try_ms - now);
            assert!(outbox.due(next_try_ms - 1).is_none());
            now = next_try_ms;
        }
        assert_eq!(&waits[..5], [1_000, 2_000, 4_000, 8_000, 16_000]);
        assert_eq!(waits[8], 256_000);
        assert!(waits[9..].iter().all(|w| *w == MAX_RETRY_MS));
        assert_eq!(outbox.due(now).unwrap().attempts, 13);
        assert_eq!(outbox.delivered(), Some(Settled::Delivered("a".into())));
        assert_eq!(outbox.due(now).unwrap().id, "b");
    }

    #[test]
    fn an_event_failing_for_a_day_is_given_up() {
        let mut outbox = Outbox::new(10);
        outbox.push(event("a"));
        let start = 5_000;
        let mut now = start;
        loop {
            outbox.due(now).unwrap();
            match outbox.failed(now).unwrap() {
                Settled::Retrying { next_try_ms, .. } => now = next_try_ms,
                Settled::Expired(id) => {
                    assert_eq!(id, "a");
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(now - start <= GIVE_UP_MS && now - start > GIVE_UP_MS - MAX_RETRY_MS);
        assert!(outbox.is_empty());
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_a_4xx_is_not_retried() {
        let mut outbox = Outbox::new(2);
        assert_eq!(outbox.push(event("a")), None);
        assert_eq!(outbox.push(event("b")), None);
        assert_eq!(outbox.push(event("c")).unwrap().id, "a");
        assert_eq!(outbox.len(), 2);
        outbox.due(1);
        assert_eq!(outbox.rejected(), Some(Settled::Rejected("b".into())));
        assert_eq!(outbox.due(1).unwrap().id, "c");
    }
}
