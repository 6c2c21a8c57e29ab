//! A real `redis-server` (Debian's package) on a free port, for a test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prism_cluster::{ConfigStore, Leases};

pub struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install -y redis-server)");
        // Owned at once, so a redis-server that never listens is killed too.
        let redis = Self { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {port}");
    }

    #[allow(dead_code)] // each test binary uses some of these
    pub async fn leases(&self, node: &str, ttl: Duration) -> Leases {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
        Leases::new(manager, node, ttl, "prism-test")
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }

    #[allow(dead_code)] // each test binary uses some of these
    pub async fn store(&self) -> ConfigStore {
        let manager = redis::aio::ConnectionManager::new(self.client())
            .await
            .unwrap();
        ConfigStore::new(manager, "prism-test")
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
