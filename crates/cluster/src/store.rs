//! The cluster's shared documents: the `[[streams]]` of every node, as one
//! TOML document in Redis (parsed and checked by the same code as a node's
//! file), and the schedule, as JSON; each with a version that grows by one
//! with every change. A
//! change is applied only to the version it was made from (compare and set,
//! in one Lua script), and announced on a pub/sub channel with its version,
//! so a node applies each version once, in order, and a node that missed an
//! announcement (Redis was away) sees the version it lacks when it reads.

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};

/// Sets the document if the version is still `ARGV[1]`: returns the new
/// version, or the current one negated when it moved on.
const COMPARE_AND_SET: &str = r"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then
  return -current
end
redis.call('SET', KEYS[1], ARGV[2])
local next = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', KEYS[3], next)
return next
";

/// Puts a node's last known document back at its version, if Redis holds
/// an older one (it lost its data): returns 1 when restored, else 0.
const RESTORE: &str = r"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
";

/// The document at some version (0: never written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub version: u64,
    pub text: String,
}

/// The largest version Prism ever reads or writes: a change a millisecond
/// for 34 years. The key is Redis's to hold and anyone with access to write;
/// past this, what it holds is refused, never adopted or written back.
pub const MAX_VERSION: u64 = 1 << 40;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another change landed first: read again and redo the change.
    #[error("the configuration changed meanwhile (now version {current})")]
    Conflict { current: u64 },
    /// The version key holds what no Prism wrote.
    #[error(
        "the cluster's version key {key} holds {found:?}, which is not a version (0 to 2^40): \
         set it back to the version the nodes run (GET /v1/cluster on any node) with redis-cli"
    )]
    BadVersion { key: String, found: String },
}

/// A version as Redis holds it: absent is 0; anything but a whole number up
/// to [`MAX_VERSION`] is refused.
fn parse_version(key: &str, raw: Option<String>) -> Result<u64, StoreError> {
    let Some(raw) = raw else {
        return Ok(0);
    };
    match raw.parse::<u64>() {
        Ok(version) if version <= MAX_VERSION => Ok(version),
        _ => Err(StoreError::BadVersion {
            key: key.to_string(),
            found: prism_media::remote_text::remote_text(&raw),
        }),
    }
}

/// One versioned document in Redis: `PREFIX:NAME`, its version at
/// `PREFIX:NAME:version`, each new version announced on
/// `PREFIX:NAME:changes`.
#[derive(Clone)]
pub struct ConfigStore {
    redis: ConnectionManager,
    prefix: String,
    name: &'static str,
}

impl ConfigStore {
    /// The shared `[[streams]]`.
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self::named(redis, prefix, "streams")
    }

    /// Another document of the cluster's (`schedule`).
    pub fn named(redis: ConnectionManager, prefix: &str, name: &'static str) -> Self {
        Self {
            redis,
            prefix: prefix.to_string(),
            name,
        }
    }

    fn document_key(&self) -> String {
        format!("{}:{}", self.prefix, self.name)
    }

    fn version_key(&self) -> String {
        format!("{}:{}:version", self.prefix, self.name)
    }

    /// The pub/sub channel each new version is announced on.
    pub fn channel(&self) -> String {
        format!("{}:{}:changes", self.prefix, self.name)
    }

    /// The document and its version, read together.
    pub async fn read(&self) -> Result<Versioned, StoreError> {
        let mut redis = self.redis.clone();
        let (text, version): (Option<String>, Option<String>) = redis::pipe()
            .atomic()
            .get(self.document_key())
            .get(self.version_key())
            .query_async(&mut redis)
            .await?;
        Ok(Versioned {
            version: parse_version(&self.version_key(), version)?,
            text: text.unwrap_or_default(),
        })
    }

    /// Only the version (what a node polls, cheaply).
    pub async fn version(&self) -> Result<u64, StoreError> {
        let version: Option<String> = self.redis.clone().get(self.version_key()).await?;
        parse_version(&self.version_key(), version)
    }

    /// Writes `text` as the version after `based_on`; fails with `Conflict`
    /// when another change came first.
    pub async fn write(&self, based_on: u64, text: &str) -> Result<u64, StoreError> {
        let result = self.run(COMPARE_AND_SET, based_on, text).await?;
        if result > 0 {
            Ok(result as u64)
        } else {
            Err(StoreError::Conflict {
                current: result.unsigned_abs(),
            })
        }
    }

    /// After Redis lost its data: writes `text` back as `version` unless the
    /// store already has that version or a newer one (another node restored
    /// it first, or a change landed since). True when this call restored it.
    pub async fn restore(&self, version: u64, text: &str) -> Result<bool, StoreError> {
        if version > MAX_VERSION {
            return Ok(false);
        }
        Ok(self.run(RESTORE, version, text).await? == 1)
    }

    /// Runs one of the document's scripts: keys document, version and
    /// channel; arguments a version and a text.
    async fn run(&self, script: &str, version: u64, text: &str) -> Result<i64, StoreError> {
        Ok(Script::new(script)
            .key(self.document_key())
            .key(self.version_key())
            .key(self.channel())
            .arg(version)
            .arg(text)
            .invoke_async(&mut self.redis.clone())
            .await?)
    }
}
