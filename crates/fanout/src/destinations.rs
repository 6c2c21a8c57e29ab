//! The destinations of one stream: what the control plane adds to, changes
//! and removes from, and what the API and the metrics read. A stream's
//! destinations travel with it in the node's one table of streams
//! (`prism_media::Streams`).

use std::sync::{Arc, RwLock};

use crate::destination::DestinationHandle;

#[derive(Default)]
pub struct Destinations {
    handles: RwLock<Vec<Arc<DestinationHandle>>>,
}

impl Destinations {
    /// A snapshot, in order (cheap: reference counts).
    pub fn all(&self) -> Vec<Arc<DestinationHandle>> {
        self.handles
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<DestinationHandle>> {
        self.all().into_iter().find(|d| d.id == id)
    }

    /// Adds a destination, or replaces the one with the same id (returned,
    /// still running: the caller shuts it down).
    pub fn put(&self, handle: Arc<DestinationHandle>) -> Option<Arc<DestinationHandle>> {
        let mut handles = self.handles.write().unwrap_or_else(|e| e.into_inner());
        match handles.iter_mut().find(|d| d.id == handle.id) {
            Some(slot) => Some(std::mem::replace(slot, handle)),
            None => {
                handles.push(handle);
                None
            }
        }
    }

    /// Takes a destination out (still running: the caller shuts it down).
    pub fn take(&self, id: &str) -> Option<Arc<DestinationHandle>> {
        let mut handles = self.handles.write().unwrap_or_else(|e| e.into_inner());
        let index = handles.iter().position(|d| d.id == id)?;
        Some(handles.remove(index))
    }

    /// Takes every destination out (still running).
    pub fn take_all(&self) -> Vec<Arc<DestinationHandle>> {
        std::mem::take(&mut *self.handles.write().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Stops destinations, each unpublishing cleanly, concurrently.
pub async fn shut_down(handles: impl IntoIterator<Item = Arc<DestinationHandle>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for handle in handles {
        tasks.spawn(async move { handle.shutdown().await });
    }
    while tasks.join_next().await.is_some() {}
}
