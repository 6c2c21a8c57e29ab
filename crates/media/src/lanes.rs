//! Fan-out threads: one stream's destinations spread over more than one
//! core. A hub pushes each message to its destination queues from the
//! thread that read it from the publisher, and a push may write to the
//! socket (a lent writer), so one stream's whole fan-out ran on one thread.
//! With `[runtime] worker_threads = N`, N - 1 fan-out threads start beside
//! the runtime. A stream with many destinations puts each new one in a
//! *lane*: lane 0 is pushed by the publisher's thread as before, lane n by
//! fan-out thread n - 1. A destination keeps its lane for its whole
//! subscription, and each thread takes its jobs in order, so every
//! destination still sees the stream's messages in order.
//!
//! A push never waits on a socket, so a fan-out thread always keeps moving;
//! its channel is bounded all the same, and a publisher's thread that finds
//! it full waits for room (backpressure on one ingest connection, never an
//! unbounded backlog). A panic in a job is caught, logged and counted
//! (`prism_task_panics_total{task="fanout_thread"}`); the thread goes on
//! with the next job.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, OnceLock};

use crate::message::MediaMessage;
use crate::single_track::DefaultTrack;
use crate::subscriber::{push_to_all, Subscription};
use crate::supervise::{count_panic, panic_message};

/// A stream spreads its destinations only from this many on: below it, the
/// hand-over to another thread costs more than the pushes it moves.
pub const SPREAD_FROM: usize = 16;
/// Jobs a fan-out thread may have waiting: ten seconds of a 60 fps stream
/// with its audio, far more than a thread that keeps moving ever holds.
const JOBS_WAITING: usize = 1024;

/// One stream's destination queues in one lane: replaced whole when a
/// destination joins or leaves, so a delivery takes a snapshot.
pub(crate) type Lane = Arc<Vec<Subscription>>;

/// Messages to push to every queue of a lane.
struct Job {
    queues: Lane,
    messages: Vec<MediaMessage>,
    singles: Vec<DefaultTrack>,
}

static THREADS: OnceLock<Vec<SyncSender<Job>>> = OnceLock::new();

/// Starts `count` fan-out threads for the whole process (once; later calls
/// change nothing). Zero keeps every stream's fan-out on its publisher's
/// thread.
pub fn start(count: usize) -> std::io::Result<()> {
    if THREADS.get().is_some() {
        return Ok(());
    }
    let mut senders = Vec::with_capacity(count);
    for n in 0..count {
        let (sender, jobs) = sync_channel::<Job>(JOBS_WAITING);
        std::thread::Builder::new()
            .name(format!("prism-fanout-{n}"))
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    run(job);
                }
            })?;
        senders.push(sender);
    }
    let _ = THREADS.set(senders);
    Ok(())
}

fn run(job: Job) {
    let pushed = std::panic::catch_unwind(AssertUnwindSafe(|| {
        push_to_all(&job.queues, &job.messages, &job.singles);
    }));
    if let Err(panic) = pushed {
        count_panic("fanout_thread");
        tracing::error!(
            panic = %panic_message(panic.as_ref()),
            "a fan-out thread panicked pushing a message; it goes on with the next"
        );
    }
}

/// How many lanes a stream can use: its publisher's thread plus each
/// fan-out thread.
pub fn count() -> usize {
    1 + THREADS.get().map_or(0, Vec::len)
}

/// The lane for a destination joining a stream that has `lanes` (by lane):
/// lane 0 while the stream is small, then the lane with the fewest.
pub(crate) fn choose(lanes: &[Lane]) -> usize {
    let total: usize = lanes.iter().map(|lane| lane.len()).sum();
    if total < SPREAD_FROM || lanes.len() < 2 {
        return 0;
    }
    (0..lanes.len())
        .min_by_key(|&lane| lanes[lane].len())
        .unwrap_or(0)
}

/// Hands `messages` (and what single-track consumers get of them, see
/// `push_to_all`) to the fan-out thread of `lane` (1 or more) for every
/// queue in `queues`.
pub(crate) fn hand_over(
    lane: usize,
    queues: &Lane,
    messages: &[MediaMessage],
    singles: &[DefaultTrack],
) {
    let Some(sender) = THREADS.get().and_then(|threads| threads.get(lane - 1)) else {
        // No such thread (never started): push here, in order all the same.
        push_to_all(queues, messages, singles);
        return;
    };
    let job = Job {
        queues: Arc::clone(queues),
        messages: messages.to_vec(),
        singles: singles.to_vec(),
    };
    // The thread never stops while the process runs; a send can fail only
    // if it died, which catch_unwind prevents.
    let _ = sender.send(job);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriber::inbox::Inbox;

    fn lanes(sizes: &[usize]) -> Vec<Lane> {
        sizes
            .iter()
            .map(|&n| {
                Arc::new(
                    (0..n)
                        .map(|_| Subscription::new(Inbox::new(), 1, Default::default()))
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_small_stream_stays_on_lane_zero_and_a_large_one_fills_the_emptiest_lane() {
        assert_eq!(choose(&lanes(&[SPREAD_FROM - 1, 0])), 0);
        assert_eq!(choose(&lanes(&[SPREAD_FROM, 0])), 1);
        assert_eq!(choose(&lanes(&[SPREAD_FROM + 3, SPREAD_FROM + 2])), 1);
        assert_eq!(choose(&lanes(&[SPREAD_FROM, SPREAD_FROM])), 0);
        assert_eq!(choose(&lanes(&[100])), 0);
    }
}
