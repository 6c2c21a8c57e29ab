//! The node's streams as the control plane keeps them: the one table
//! (`prism_media::Streams`) with each stream's destinations and pulls
//! attached.

use std::sync::{Arc, Mutex};

use prism_fanout::{DestinationHandle, Destinations};
use prism_ingest::pull::Pull;
use prism_media::arbiter::SourceRole;

/// The node's one table of streams, by id and by key.
pub type Streams = prism_media::Streams<StreamParts>;
/// One stream of the table.
pub type RunningStream = prism_media::Stream<StreamParts>;

/// What the control plane attaches to a stream.
#[derive(Default)]
pub struct StreamParts {
    pub destinations: Destinations,
    /// The running pulls of its `pull` and `backup_pull` sources.
    pulls: Mutex<Vec<(SourceRole, Pull)>>,
}

impl StreamParts {
    pub(crate) fn add_pull(&self, role: SourceRole, pull: Pull) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        pulls.retain(|(r, _)| *r != role);
        pulls.push((role, pull));
    }

    /// Ends the stream's pulls and waits for their tasks.
    pub(crate) async fn stop_pulls(&self) {
        let pulls: Vec<(SourceRole, Pull)> =
            std::mem::take(&mut *self.pulls.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, pull) in pulls {
            pull.stop().await;
        }
    }
}

/// Stops every destination of every stream, each unpublishing cleanly,
/// concurrently: what a shutdown waits for.
pub async fn shut_down_destinations(streams: &Streams) {
    let handles: Vec<Arc<DestinationHandle>> = streams
        .all()
        .iter()
        .flat_map(|stream| stream.parts.destinations.all())
        .collect();
    prism_fanout::shut_down(handles).await;
}
