//! A real `redis-server` (the test kit's) for a test, and the cluster's
//! clients of it.

use std::time::Duration;

use prism_cluster::{ConfigStore, Leases};
use prism_testkit::RedisServer;

/// A redis-server for one test, its data in the test binary's scratch dir.
pub struct Redis {
    server: RedisServer,
}

impl Redis {
    pub fn start() -> Self {
        let port = prism_testkit::free_port();
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self {
            server: RedisServer::start(&dir),
        }
    }

    #[allow(dead_code)] // each test binary uses some of these
    pub async fn leases(&self, node: &str, ttl: Duration) -> Leases {
        let client = redis::Client::open(self.server.url()).unwrap();
        let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
        Leases::new(manager, node, ttl, "prism-test")
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.server.url()).unwrap()
    }

    #[allow(dead_code)] // each test binary uses some of these
    pub async fn store(&self) -> ConfigStore {
        let manager = redis::aio::ConnectionManager::new(self.client())
            .await
            .unwrap();
        ConfigStore::new(manager, "prism-test")
    }
}
