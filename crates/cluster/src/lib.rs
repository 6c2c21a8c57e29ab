//! Prism's cluster mode: several nodes share streams through Redis. This
//! crate holds what the nodes agree on there: the stream lease, which makes
//! a key live on at most one node (and the publish gate that takes it), the
//! versioned store of the streams every node relays, and each node's link
//! to Redis that follows the store and its health.

pub mod gate;
pub mod health;
pub mod lease;
pub mod node;
pub mod store;

pub use gate::LeaseGate;
pub use health::{RedisHealth, RedisUnavailable};
pub use lease::{Acquired, Lease, LeaseError, Leases};
pub use node::{Cluster, ClusterSettings};
pub use store::{ConfigStore, StoreError, Versioned};
