//! Prism's cluster mode (issue 19, in progress): several nodes share
//! streams through Redis. This crate holds what the nodes agree on there.
//! So far: the stream lease, which makes a key live on at most one node.

pub mod lease;

pub use lease::{Acquired, Lease, LeaseError, Leases};
