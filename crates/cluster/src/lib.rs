//! Prism's cluster mode (issue 19, in progress): several nodes share
//! streams through Redis. This crate holds what the nodes agree on there.
//! So far: the stream lease, which makes a key live on at most one node, and
//! the versioned store of the streams every node relays.

pub mod lease;
pub mod store;

pub use lease::{Acquired, Lease, LeaseError, Leases};
pub use store::{ConfigStore, StoreError, Versioned};
