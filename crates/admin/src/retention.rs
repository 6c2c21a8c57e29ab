//! Keeps the recordings within `[record] keep_hours` and `max_gib`, off the
//! async threads: each time a recording file is completed (that is when they
//! grow) and once a minute (for their age); and reports the free space
//! where they lie (`prism_recording_disk_free_bytes`).

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use prism_media::supervise::catch_panic;
use prism_record::library::{disk_free, expired, Active, Library};

use crate::config::RecordConfig;

/// What the sweep asks of the control plane.
pub(crate) trait Recordings: Send + Sync + 'static {
    /// `[record]` as it runs.
    fn record_config(&self) -> impl std::future::Future<Output = RecordConfig> + Send;
    /// The files being written (never deleted).
    fn active_recordings(&self) -> Vec<Active>;
    fn library(&self) -> &Arc<Library>;
    /// Woken when a recording file is completed.
    fn completed(&self) -> &Arc<tokio::sync::Notify>;
}

const EVERY: Duration = Duration::from_secs(60);

/// Runs until the control plane is gone.
pub(crate) fn spawn<C: Recordings>(controller: Weak<C>) {
    tokio::spawn(async move {
        loop {
            let Some(strong) = controller.upgrade() else {
                return;
            };
            let completed = Arc::clone(strong.completed());
            if let Err(panic) = catch_panic("retention", sweep(strong)).await {
                warn!(%panic, "the recordings' retention sweep panicked; it runs again in a minute");
            }
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = completed.notified() => {}
            }
        }
    });
}

async fn sweep<C: Recordings>(controller: Arc<C>) {
    let record = controller.record_config().await;
    let active = controller.active_recordings();
    let library = Arc::clone(controller.library());
    drop(controller);
    let swept = tokio::task::spawn_blocking(move || {
        let free = disk_free(&record.root).or_else(|| record.root.parent().and_then(disk_free));
        let mut deleted = Vec::new();
        if record.retention != Default::default() {
            let all = library.list(&record.root, None, &active);
            for recording in expired(&all, &active, record.retention, SystemTime::now()) {
                match library.delete(&recording, &active) {
                    Ok(()) => deleted.push((recording.id.to_string(), recording.bytes)),
                    Err(e) => warn!(recording = %recording.id, error = %e, "an expired recording could not be deleted"),
                }
            }
        }
        (free, deleted)
    })
    .await;
    let Ok((free, deleted)) = swept else {
        return;
    };
    if let Some(free) = free {
        metrics::gauge!("prism_recording_disk_free_bytes").set(free as f64);
    }
    for (id, bytes) in deleted {
        info!(recording = %id, bytes, "recording deleted by retention (keep_hours / max_gib)");
    }
}
