//! One node's link to the cluster: its Redis connection (lazy, reconnecting,
//! every command bounded in time), the stream leases and their publish gate,
//! the shared configuration store, and the task that follows the store's
//! versions (pub/sub for speed, a poll every second as the safety net) and
//! the other nodes' requests to hand a stream over.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{debug, error, warn};

use prism_media::supervise::catch_panic;

use crate::gate::LeaseGate;
use crate::health::{RedisHealth, RedisUnavailable};
use crate::lease::Leases;
use crate::store::ConfigStore;
use crate::store::StoreError;

/// Redis commands that take longer fail: a node never waits on Redis for
/// more than this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The store's version is read this often besides the announcements (missed ones are
/// seen within this).
const POLL_EVERY: Duration = Duration::from_millis(500);
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(250);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(1);

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `redis://[user:password@]host[:port][/db]` (or `rediss://`).
    pub redis_url: String,
    /// This node's id, unique in the cluster: shown in refusals and the API.
    pub node_id: String,
    /// How long a dead node's leases outlive it.
    pub lease: Duration,
    /// The cluster's key space in Redis (several clusters can share one).
    pub prefix: String,
}

/// The URL may hold a password: it stays out of debug output.
impl std::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("redis_url", &redacted(&self.redis_url))
            .field("node_id", &self.node_id)
            .field("lease", &self.lease)
            .field("prefix", &self.prefix)
            .finish()
    }
}

pub struct Cluster {
    settings: ClusterSettings,
    client: redis::Client,
    redis: ConnectionManager,
    health: Arc<RedisHealth>,
    store: ConfigStore,
    schedule: ConfigStore,
    leases: Leases,
    gate: Arc<LeaseGate>,
    /// The store version last read or announced.
    versions: watch::Sender<u64>,
    /// The version of the shared configuration this node runs.
    applied: AtomicU64,
}

impl Cluster {
    /// Sets up the link without connecting: a node starts (and relays from
    /// its last known configuration) whether Redis is there or not. Call it
    /// within a Tokio runtime.
    /// Fails only on a `cluster.redis` URL the client cannot use.
    pub fn new(settings: ClusterSettings) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(settings.redis_url.as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let health = Arc::new(RedisHealth::default());
        let leases = Leases::new(
            redis.clone(),
            &settings.node_id,
            settings.lease,
            &settings.prefix,
        );
        let gate = LeaseGate::new(
            leases.clone(),
            redis.clone(),
            Arc::clone(&health),
            &settings.node_id,
            settings.lease,
            takeover_channel(&settings.prefix),
        );
        Ok(Arc::new(Self {
            store: ConfigStore::new(redis.clone(), &settings.prefix),
            schedule: ConfigStore::named(redis.clone(), &settings.prefix, "schedule"),
            leases,
            settings,
            client,
            redis,
            health,
            gate,
            versions: watch::Sender::new(0),
            applied: AtomicU64::new(0),
        }))
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    /// The shared schedule (JSON, versioned like the streams).
    pub fn schedule_store(&self) -> &ConfigStore {
        &self.schedule
    }

    /// Leases by name: a stream's, or (names no stream id can take, such as
    /// `schedule:e3`) a schedule entry's, held by the node that runs it.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn gate(&self) -> &Arc<LeaseGate> {
        &self.gate
    }

    pub fn health(&self) -> &Arc<RedisHealth> {
        &self.health
    }

    /// The version of the shared configuration this node runs (set by the
    /// control plane as it applies one).
    pub fn applied_version(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    pub fn set_applied_version(&self, version: u64) {
        self.applied.store(version, Ordering::Relaxed);
    }

    /// Follows the version of the shared configuration last announced or
    /// read.
    pub fn watch_versions(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    /// The store's version as last read or announced. Any difference is
    /// news: a newer version to apply, or an older one when Redis lost its
    /// data and the node should restore it.
    fn heard_of(&self, version: u64) {
        self.versions.send_if_modified(|heard| {
            let news = version != *heard;
            *heard = version;
            news
        });
    }

    /// The store's version now, within the command timeout. A version key
    /// that holds no version is reported (in the health `/v1/cluster`
    /// shows) and refused, never adopted.
    pub async fn read_version(&self) -> Result<u64, VersionError> {
        let read = self
            .health
            .bounded(COMMAND_TIMEOUT, async {
                match self.store.version().await {
                    Err(e @ StoreError::BadVersion { .. }) => Ok(Err(e)),
                    other => other.map(Ok),
                }
            })
            .await
            .map_err(VersionError::Unreachable)?;
        let version = read.map_err(|e| {
            self.health.saw_failure(&e.to_string());
            VersionError::Bad(e)
        })?;
        self.heard_of(version);
        Ok(version)
    }

    /// Which node each of `streams` is live on (holds the lease of), if any.
    pub async fn live_nodes(
        &self,
        streams: &[String],
    ) -> Result<Vec<Option<String>>, RedisUnavailable> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = streams
            .iter()
            .map(|s| crate::lease::lease_key(&self.settings.prefix, s))
            .collect();
        let mut redis = self.redis.clone();
        let holders: Vec<Option<String>> = self
            .health
            .bounded(
                COMMAND_TIMEOUT,
                redis::cmd("MGET").arg(keys).query_async(&mut redis),
            )
            .await?;
        Ok(holders
            .into_iter()
            .map(|h| h.map(|h| crate::lease::holder_node(&h).to_string()))
            .collect())
    }

    /// Runs until the process ends: the version poll, and the subscription
    /// to version announcements and takeover requests (re-made with backoff
    /// whenever Redis goes away).
    pub fn spawn_watch(self: &Arc<Self>) {
        let poller = Arc::clone(self);
        tokio::spawn(async move {
            let mut reported = false;
            loop {
                let read = catch_panic("cluster_link", poller.read_version())
                    .await
                    .unwrap_or_else(|panic| {
                        error!(%panic, "reading the cluster's version panicked; retrying");
                        Err(VersionError::Unreachable(RedisUnavailable::Failed(
                            panic.message,
                        )))
                    });
                match read {
                    Ok(_) => reported = false,
                    Err(_) if reported => {}
                    Err(VersionError::Unreachable(e)) => {
                        warn!(error = %e, redis = %redacted(&poller.settings.redis_url), "cannot reach the cluster's Redis; retrying");
                        reported = true;
                    }
                    Err(VersionError::Bad(e)) => {
                        error!(error = %e, "cluster: refusing the shared configuration's version; this node keeps the one it runs");
                        reported = true;
                    }
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        });
        let subscriber = Arc::clone(self);
        tokio::spawn(async move {
            let mut backoff = RESUBSCRIBE_MIN;
            loop {
                match catch_panic("cluster_link", subscriber.follow_announcements()).await {
                    Ok(Ok(())) => backoff = RESUBSCRIBE_MIN,
                    Ok(Err(e)) => {
                        debug!(error = %e, "cluster subscription lost; subscribing again")
                    }
                    Err(panic) => {
                        error!(%panic, "the cluster subscription panicked; subscribing again")
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
            }
        });
    }

    /// One subscription: until the connection drops.
    async fn follow_announcements(&self) -> Result<(), RedisUnavailable> {
        let failed = |e: redis::RedisError| RedisUnavailable::Failed(e.to_string());
        let mut pubsub = timeout(COMMAND_TIMEOUT, self.client.get_async_pubsub())
            .await
            .map_err(|_| RedisUnavailable::Timeout(COMMAND_TIMEOUT))?
            .map_err(failed)?;
        let changes = self.store.channel();
        let takeovers = takeover_channel(&self.settings.prefix);
        pubsub
            .subscribe(&[changes.as_str(), takeovers.as_str()])
            .await
            .map_err(failed)?;
        // Anything announced while unsubscribed is seen here.
        let _ = self.read_version().await;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if message.get_channel_name() == changes {
                match payload.parse::<u64>() {
                    Ok(version) if version <= crate::store::MAX_VERSION => self.heard_of(version),
                    _ => warn!(
                        announced = %prism_media::remote_text::remote_text(&payload),
                        "cluster: an announcement that is not a version; ignored"
                    ),
                }
            } else {
                self.gate.on_takeover_request(&payload);
            }
        }
        Ok(())
    }
}

/// Why the store's version could not be read.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    /// Redis did not answer (in time).
    #[error(transparent)]
    Unreachable(RedisUnavailable),
    /// Redis answered with what is not a version.
    #[error(transparent)]
    Bad(StoreError),
}

fn takeover_channel(prefix: &str) -> String {
    format!("{prefix}:takeover")
}

/// The Redis URL without its password, for logs.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redacted("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://…@10.0.0.5:6379/2"
        );
        assert_eq!(
            super::redacted("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
