//! Supervision helpers: a panic inside a task ends that task's work, is
//! logged with what it was doing and counted, and never passes silently.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

/// A task's work that ended in a panic; shown as the panic's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Panicked {
    /// The kind of task (`prism_task_panics_total{task}`).
    pub task: &'static str,
    /// The text the panic was raised with.
    pub message: String,
}

/// Runs `future`, catching a panic inside it. On a panic, counts it under
/// `prism_task_panics_total{task}` and returns it; the caller logs it with
/// its own context (remote address, destination) and decides what follows
/// (end the connection, retry the destination, restart a listener).
pub async fn catch_panic<F: Future>(task: &'static str, future: F) -> Result<F::Output, Panicked> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| {
            count_panic(task);
            Panicked {
                task,
                message: panic_message(payload.as_ref()),
            }
        })
}

/// Counts one panic of a `task` kind.
pub fn count_panic(task: &'static str) {
    metrics::counter!("prism_task_panics_total", "task" => task).increment(1);
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// The task kinds that are supervised, so their series exist from the start.
pub const SUPERVISED_TASKS: [&str; 18] = [
    "rtmp_connection",
    "srt_connection",
    "srt_listener",
    "pull",
    "http_connection",
    "destination",
    "delay_line",
    "listener",
    "stream_driver",
    "cluster_sync",
    "cluster_lease",
    "cluster_link",
    "fanout_thread",
    "event_watch",
    "recorder",
    "retention",
    "rule_checks",
    "scheduler",
];

/// The listeners the test suite asks to fail on SIGUSR2 (`PRISM_TEST_HOOKS`,
/// comma-separated), so that it can watch supervision bring them back.
/// Only a build with the `test-hooks` feature reads it, which only the test
/// suite enables: a release daemon never looks at the variable.
pub fn listeners_to_fail_on_request() -> Option<Vec<String>> {
    #[cfg(feature = "test-hooks")]
    {
        let names = std::env::var("PRISM_TEST_HOOKS").ok()?;
        Some(names.split(',').map(|n| n.trim().to_string()).collect())
    }
    #[cfg(not(feature = "test-hooks"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message() {
        let caught = catch_panic("destination", async { panic!("boom {}", 7) }).await;
        assert_eq!(
            caught.unwrap_err(),
            Panicked {
                task: "destination",
                message: "boom 7".into()
            }
        );
        assert_eq!(catch_panic("destination", async { 5 }).await.unwrap(), 5);
    }
}
