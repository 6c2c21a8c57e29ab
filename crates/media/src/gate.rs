//! The publish gate: asked before a stream takes a new publisher, so that in
//! cluster mode a key is live on at most one node (the gate takes the
//! stream's lease in Redis). A node on its own has no gate and admits
//! everything that `StreamHub::try_publish` accepts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Another node holds the stream (cluster mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveElsewhere {
    /// The node that has the stream live.
    pub node: String,
}

/// The future a gate answers with.
pub type Admission = Pin<Box<dyn Future<Output = Result<(), LiveElsewhere>> + Send>>;

pub trait PublishGate: Send + Sync + 'static {
    /// Whether this node may take a publish of `stream` (its id) now.
    /// Called before `try_publish`, from the connection's task. It may wait
    /// up to `patience` for another node to give the stream up (a dead
    /// node's lease to expire), and answers within a bounded time whatever
    /// the store does.
    fn admit(self: Arc<Self>, stream: &str, patience: Duration) -> Admission;
}
