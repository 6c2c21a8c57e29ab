//! Whether this node reaches Redis now, as every cluster operation last saw
//! it: for the metrics, `/readyz`'s neighbours and the API's 503 answers.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tracing::{info, warn};

/// Redis could not serve an operation: what the node saw.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("Redis did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or the command failed (Redis's or the client's words).
    #[error("{0}")]
    Failed(String),
}

#[derive(Default)]
pub struct RedisHealth {
    up: AtomicBool,
    /// Times the connection was lost (up to down transitions).
    losses: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl RedisHealth {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }

    /// Why the last operation failed, while Redis is down.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn saw_success(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            info!("Redis reachable");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn saw_failure(&self, error: &str) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
        if self.up.swap(false, Ordering::Relaxed) {
            self.losses.fetch_add(1, Ordering::Relaxed);
            warn!(%error, "Redis unreachable: running shows go on, configuration changes wait for it");
        }
    }

    /// Runs one Redis operation for at most `limit`, and records what it
    /// showed of the connection.
    pub async fn bounded<T, E: Display>(
        &self,
        limit: Duration,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Result<T, RedisUnavailable> {
        let error = match tokio::time::timeout(limit, operation).await {
            Ok(Ok(value)) => {
                self.saw_success();
                return Ok(value);
            }
            Ok(Err(e)) => RedisUnavailable::Failed(e.to_string()),
            Err(_) => RedisUnavailable::Timeout(limit),
        };
        self.saw_failure(&error.to_string());
        Err(error)
    }
}
