//! The node's streams as the control plane keeps them: the one table
//! (`prism_media::Streams`) with each stream's destinations and pulls
//! attached.

use std::sync::{Arc, Mutex};

use prism_fanout::{DelayLine, DestinationHandle, Destinations};
use prism_ingest::pull::Pull;
use prism_media::arbiter::SourceRole;
use prism_media::StreamHub;
use prism_record::RecorderHandle;

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
    /// Its recorder, while `record = true`.
    recorder: Mutex<Option<Arc<RecorderHandle>>>,
    /// Its delay ring and delayed hubs, made with its first delayed
    /// destination.
    delay: Mutex<Option<Arc<DelayLine>>>,
}

impl StreamParts {
    /// The stream's delay line, started with `budget_bytes` if it has none.
    pub(crate) fn delay_line(&self, hub: &Arc<StreamHub>, budget_bytes: usize) -> Arc<DelayLine> {
        let mut line = self.delay.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            line.get_or_insert_with(|| Arc::new(DelayLine::start(Arc::clone(hub), budget_bytes))),
        )
    }

    /// Its delay line, if a destination of it ever went out delayed.
    pub fn delay(&self) -> Option<Arc<DelayLine>> {
        self.delay.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn add_pull(&self, role: SourceRole, pull: Pull) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        pulls.retain(|(r, _)| *r != role);
        pulls.push((role, pull));
    }

    /// Its recorder, if it is recorded.
    pub fn recorder(&self) -> Option<Arc<RecorderHandle>> {
        self.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Puts in (or takes out) the recorder; returns the one it replaces.
    pub(crate) fn set_recorder(
        &self,
        recorder: Option<RecorderHandle>,
    ) -> Option<Arc<RecorderHandle>> {
        let mut slot = self.recorder.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::replace(&mut *slot, recorder.map(Arc::new))
    }

    /// Stops the recorder, which completes its file.
    pub(crate) async fn stop_recording(&self) {
        if let Some(recorder) = self.set_recorder(None) {
            recorder.stop().await;
        }
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

/// Stops every destination of every stream, each unpublishing cleanly, and
/// every recorder, each completing its file, concurrently: what a shutdown
/// waits for.
pub async fn shut_down(streams: &Streams) {
    let all = streams.all();
    let mut recorders = tokio::task::JoinSet::new();
    for stream in &all {
        if let Some(recorder) = stream.parts.set_recorder(None) {
            recorders.spawn(async move { recorder.stop().await });
        }
    }
    let handles: Vec<Arc<DestinationHandle>> = all
        .iter()
        .flat_map(|stream| stream.parts.destinations.all())
        .collect();
    prism_fanout::shut_down(handles).await;
    while recorders.join_next().await.is_some() {}
}
