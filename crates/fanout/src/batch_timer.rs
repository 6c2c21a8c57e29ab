//! The one thread that sends held batches when they are due.
//!
//! A destination with a latency budget lends its writer to its queue as an
//! idle one does, and the hub's pushes add each message to the batch the
//! writer holds: no write and no task wake-up per message. A batch must
//! leave once its oldest message has waited the budget. A push arriving
//! after that sends it; otherwise this thread does, at the deadline the
//! batch registered when it began. Every destination of a stream begins its
//! batch on the same message, so their deadlines coincide and the thread
//! wakes once per batch for all of them, where a timer in each destination's
//! task woke every task for every batch.
//!
//! Deadlines of batches already sent stay in the heap until they pass (the
//! queue then finds its batch number moved on): a heap has no cheap removal,
//! and each queue adds at most one deadline per batch it sends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use prism_media::supervise::{count_panic, panic_message};

/// A queue holding a batch in its lent writer.
pub(crate) trait DueBatch: Send + Sync {
    /// Sends batch number `batch`, if the writer still holds it; `now` is
    /// when the timer woke.
    fn send_due(&self, batch: u64, now: Instant);

    /// A hint that `send_due` comes soon: bring what it touches into the
    /// caches (as the hub's pushes do, `prism_media::subscriber`).
    fn prefetch(&self) {}
}

/// Deadlines this close together are served by one wake-up: a batch may go
/// out this much early, never late.
pub(crate) const COALESCE: Duration = Duration::from_millis(1);

struct Deadline {
    due: Instant,
    batch: u64,
    queue: Weak<dyn DueBatch>,
}

impl PartialEq for Deadline {
    fn eq(&self, other: &Self) -> bool {
        self.due == other.due
    }
}

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.due.cmp(&other.due)
    }
}

struct Timer {
    deadlines: Mutex<BinaryHeap<Reverse<Deadline>>>,
    changed: Condvar,
}

/// Asks for `batch` of `queue` to be sent at `due`. False when the timer
/// thread could not be started: the caller sends its batches itself.
pub(crate) fn schedule(due: Instant, batch: u64, queue: Weak<dyn DueBatch>) -> bool {
    let Some(timer) = timer() else {
        return false;
    };
    let mut deadlines = timer.lock();
    let sooner = deadlines
        .peek()
        .is_none_or(|Reverse(first)| due < first.due);
    deadlines.push(Reverse(Deadline { due, batch, queue }));
    drop(deadlines);
    // The thread sleeps until the first deadline it knew of: only one
    // before it needs to wake it.
    if sooner {
        timer.changed.notify_one();
    }
    true
}

fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            deadlines: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        match std::thread::Builder::new()
            .name("prism-batch-timer".into())
            .spawn(move || timer.run())
        {
            Ok(_) => Some(timer),
            Err(e) => {
                tracing::error!(
                    error = %e,
                    "could not start the batch timer thread: destinations with a latency budget send each message at once"
                );
                None
            }
        }
    })
}

impl Timer {
    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Deadline>>> {
        // The heap is only pushed and popped under the lock: a panic cannot
        // leave it half changed.
        self.deadlines.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        let mut due_now = Vec::new();
        let mut ready: Vec<(Arc<dyn DueBatch>, u64)> = Vec::new();
        loop {
            let mut deadlines = self.lock();
            loop {
                let now = Instant::now();
                match deadlines.peek() {
                    None => {
                        deadlines = self
                            .changed
                            .wait(deadlines)
                            .unwrap_or_else(|e| e.into_inner());
                    }
                    Some(Reverse(first)) if first.due > now + COALESCE => {
                        let wait = first.due - now;
                        deadlines = self
                            .changed
                            .wait_timeout(deadlines, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    Some(_) => break,
                }
            }
            let until = Instant::now() + COALESCE;
            while deadlines.peek().is_some_and(|Reverse(d)| d.due <= until) {
                let Reverse(deadline) = deadlines.pop().expect("peeked");
                due_now.push(deadline);
            }
            drop(deadlines);
            let now = Instant::now();
            // Each queue's state is cold by now: the next one's is fetched
            // while this one writes.
            ready.extend(
                due_now
                    .drain(..)
                    .filter_map(|d| Some((d.queue.upgrade()?, d.batch))),
            );
            for at in 0..ready.len() {
                if let Some((next, _)) = ready.get(at + 1) {
                    next.prefetch();
                }
                let (queue, batch) = &ready[at];
                let sent = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    queue.send_due(*batch, now);
                }));
                if let Err(panic) = sent {
                    count_panic("batch_timer");
                    tracing::error!(
                        panic = %panic_message(panic.as_ref()),
                        "the batch timer panicked sending a destination's batch; it goes on with the next"
                    );
                }
            }
            ready.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    struct Probe(Mutex<mpsc::Sender<(u64, Instant)>>);

    impl DueBatch for Probe {
        fn send_due(&self, batch: u64, now: Instant) {
            let _ = self.0.lock().unwrap().send((batch, now));
        }
    }

    #[test]
    fn deadlines_are_served_in_order_and_never_early_by_more_than_the_coalescing_window() {
        let (sender, sent) = mpsc::channel();
        let probe: Arc<dyn DueBatch> = Arc::new(Probe(Mutex::new(sender)));
        let start = Instant::now();
        for (batch, ms) in [(2, 60), (1, 20), (3, 100)] {
            let due = start + Duration::from_millis(ms);
            assert!(schedule(due, batch, Arc::downgrade(&probe)));
        }
        let mut order = Vec::new();
        for _ in 0..3 {
            let (batch, at) = sent.recv_timeout(Duration::from_secs(5)).unwrap();
            let due = start + Duration::from_millis([20, 60, 100][batch as usize - 1]);
            assert!(at + COALESCE >= due, "batch {batch} sent early");
            order.push(batch);
        }
        assert_eq!(order, [1, 2, 3]);
    }

    #[test]
    fn a_queue_gone_before_its_deadline_is_skipped() {
        let (sender, sent) = mpsc::channel();
        let gone: Arc<dyn DueBatch> = Arc::new(Probe(Mutex::new(sender.clone())));
        let kept: Arc<dyn DueBatch> = Arc::new(Probe(Mutex::new(sender)));
        let due = Instant::now() + Duration::from_millis(10);
        schedule(due, 7, Arc::downgrade(&gone));
        schedule(due, 8, Arc::downgrade(&kept));
        drop(gone);
        assert_eq!(sent.recv_timeout(Duration::from_secs(5)).unwrap().0, 8);
        assert!(sent.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
