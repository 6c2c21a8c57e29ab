//! Stream leases: the node that accepts a publish holds the stream's lease
//! in Redis (set-if-absent with an expiry, renewed while live), so a key is
//! live on at most one node; a node that dies loses it within the lease
//! time. Each grant carries a fencing token (a per-stream counter), so a
//! node that lost its lease (paused, partitioned) can never renew or
//! release the lease another node holds now.
//!
//! Each operation is one Lua script: Redis runs it atomically, so there is
//! no window between reading the holder and writing it.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

/// A stream lease this node holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub stream: String,
    /// Grows with every grant of this stream's lease, to any node.
    pub fence: u64,
}

/// What `Leases::acquire` got.
#[derive(Debug, PartialEq, Eq)]
pub enum Acquired {
    Held(Lease),
    /// Another node holds the stream; its id, for the operator.
    Taken {
        node: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis answered the lease script with {0:?}")]
    Unexpected(String),
}

/// Takes the lease if nobody else holds it: `{1, fence}` or `{0, holder}`.
/// A lease this node id still holds is granted again with a new fence: it
/// is what a node restarted within the lease time left behind (node ids are
/// unique in a cluster).
const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and string.match(holder, '^(.*)|[0-9]+$') ~= ARGV[1] then
  return {0, holder}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return {1, tostring(fence)}
";

/// Extends the lease if this grant still holds it: 1, else 0.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Gives the lease up if this grant still holds it: 1, else 0.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Where a stream's lease lives in Redis.
pub(crate) fn lease_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:lease:{stream}")
}

/// The node of a lease's holder, `node|fence` (node ids may hold '|',
/// fences do not).
pub(crate) fn holder_node(holder: &str) -> &str {
    holder.rsplit_once('|').map_or(holder, |(node, _)| node)
}

/// This node's view of the stream leases.
#[derive(Clone)]
pub struct Leases {
    redis: ConnectionManager,
    node: String,
    ttl: Duration,
    prefix: String,
}

impl Leases {
    /// `node`: this node's id (shown to the operator of a refused publish);
    /// `ttl`: how long a lease outlives its last renewal; `prefix`: the
    /// cluster's key space in Redis.
    pub fn new(redis: ConnectionManager, node: &str, ttl: Duration, prefix: &str) -> Self {
        Self {
            redis,
            node: node.to_string(),
            ttl,
            prefix: prefix.to_string(),
        }
    }

    fn lease_key(&self, stream: &str) -> String {
        lease_key(&self.prefix, stream)
    }

    fn fence_key(&self, stream: &str) -> String {
        format!("{}:fence:{stream}", self.prefix)
    }

    fn holder(&self, lease: &Lease) -> String {
        format!("{}|{}", self.node, lease.fence)
    }

    fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().max(1) as u64
    }

    pub async fn acquire(&self, stream: &str) -> Result<Acquired, LeaseError> {
        let (granted, value): (i64, String) = Script::new(ACQUIRE)
            .key(self.lease_key(stream))
            .key(self.fence_key(stream))
            .arg(&self.node)
            .arg(self.ttl_ms())
            .invoke_async(&mut self.redis.clone())
            .await?;
        if granted == 1 {
            let fence = value
                .parse()
                .map_err(|_| LeaseError::Unexpected(value.clone()))?;
            return Ok(Acquired::Held(Lease {
                stream: stream.to_string(),
                fence,
            }));
        }
        Ok(Acquired::Taken {
            node: holder_node(&value).to_string(),
        })
    }

    /// Extends `lease`; false when this node no longer holds it (it expired
    /// and another node may have it): the publish must end.
    pub async fn renew(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let renewed: i64 = Script::new(RENEW)
            .key(self.lease_key(&lease.stream))
            .arg(self.holder(lease))
            .arg(self.ttl_ms())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(renewed == 1)
    }

    /// Gives `lease` up at the end of a publish (a lease already lost is
    /// left to its new holder).
    pub async fn release(&self, lease: &Lease) -> Result<bool, LeaseError> {
        let released: i64 = Script::new(RELEASE)
            .key(self.lease_key(&lease.stream))
            .arg(self.holder(lease))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(released == 1)
    }
}
