//! The streams Prism relays and the destinations of each: what the metrics
//! endpoint reads and the admin control plane adds to, changes and removes
//! from.

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

    pub fn destination(&self, id: &str) -> Option<Arc<DestinationHandle>> {
        self.destinations().into_iter().find(|d| d.id == id)
    }

    /// Adds a destination, or replaces the one with the same id (returned,
    /// still running: the caller shuts it down).
    pub fn put_destination(
        &self,
        handle: Arc<DestinationHandle>,
    ) -> Option<Arc<DestinationHandle>> {
        let mut destinations = self.destinations.write().unwrap_or_else(|e| e.into_inner());
        match destinations.iter_mut().find(|d| d.id == handle.id) {
            Some(slot) => Some(std::mem::replace(slot, handle)),
            None => {
                destinations.push(handle);
                None
            }
        }
    }

    /// Takes a destination out (still running: the caller shuts it down).
    pub fn take_destination(&self, id: &str) -> Option<Arc<DestinationHandle>> {
        let mut destinations = self.destinations.write().unwrap_or_else(|e| e.into_inner());
        let index = destinations.iter().position(|d| d.id == id)?;
        Some(destinations.remove(index))
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

    pub fn stream(&self, id: &str) -> Option<Arc<StreamEntry>> {
        self.streams().into_iter().find(|s| s.id == id)
    }

    /// Takes a stream out (its destinations still run: the caller shuts them down).
    pub fn take_stream(&self, id: &str) -> Option<Arc<StreamEntry>> {
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        let index = streams.iter().position(|s| s.id == id)?;
        Some(streams.remove(index))
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
