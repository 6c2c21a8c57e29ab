//! The streams Prism relays and the destinations of each: what the metrics
//! endpoint reads, and the seam through which the admin API will add, change
//! and remove them.

use std::sync::{Arc, RwLock};

use prism_media::StreamHub;

use crate::destination::DestinationHandle;

pub struct StreamEntry {
    pub id: String,
    pub hub: Arc<StreamHub>,
    pub destinations: RwLock<Vec<Arc<DestinationHandle>>>,
}

impl StreamEntry {
    pub fn destinations(&self) -> Vec<Arc<DestinationHandle>> {
        self.destinations
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Default)]
pub struct Registry {
    streams: RwLock<Vec<Arc<StreamEntry>>>,
}

impl Registry {
    pub fn add_stream(&self, entry: StreamEntry) -> Arc<StreamEntry> {
        let entry = Arc::new(entry);
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&entry));
        entry
    }

    /// A snapshot of the streams (cheap: reference counts).
    pub fn streams(&self) -> Vec<Arc<StreamEntry>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops every destination, each unpublishing cleanly, concurrently.
    pub async fn shutdown(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for stream in self.streams() {
            for destination in stream.destinations() {
                tasks.spawn(async move { destination.shutdown().await });
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}
