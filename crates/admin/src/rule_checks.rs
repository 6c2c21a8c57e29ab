//! Each second, every destination checks the stream it gets against its
//! platform's rules (`prism_fanout::rules`): its warnings follow the stream
//! within a second, and a codec its platform refuses stops its push.

use std::sync::Weak;
use std::time::Duration;

use prism_media::supervise::catch_panic;
use tracing::warn;

use crate::streams::Streams;

const EVERY: Duration = Duration::from_secs(1);

/// Runs the checks until `streams` is gone. A panic is logged and counted,
/// and the checks go on a second later.
pub(crate) fn spawn(streams: Weak<Streams>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            let Some(streams) = streams.upgrade() else {
                return;
            };
            let checked = catch_panic("rule_checks", async {
                for stream in streams.all() {
                    for destination in stream.parts.destinations.all() {
                        destination.refresh_warnings();
                    }
                }
            });
            if let Err(panic) = checked.await {
                warn!(%panic, "the destinations' rule checks panicked; they run again in a second");
            }
        }
    });
}
