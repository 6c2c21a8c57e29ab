//! Stream leases against a real `redis-server` (Debian's package), started
//! on a free port for the test.

use std::time::Duration;

use prism_cluster::Acquired;
use redis_server::Redis;

mod redis_server;

#[tokio::test]
async fn a_stream_is_leased_to_one_node_and_fenced_after_it_expires() {
    let redis = Redis::start();
    let ttl = Duration::from_millis(400);
    let a = redis.leases("node-a", ttl).await;
    let b = redis.leases("node-b", ttl).await;

    let Acquired::Held(lease_a) = a.acquire("main").await.unwrap() else {
        panic!("the first node gets the lease")
    };
    assert_eq!(
        b.acquire("main").await.unwrap(),
        Acquired::Taken {
            node: "node-a".into()
        }
    );
    // Another stream is free.
    assert!(matches!(
        b.acquire("other").await.unwrap(),
        Acquired::Held(_)
    ));

    // Renewed, it outlives its first expiry.
    for _ in 0..4 {
        tokio::time::sleep(ttl / 2).await;
        assert!(a.renew(&lease_a).await.unwrap());
    }
    assert!(matches!(
        b.acquire("main").await.unwrap(),
        Acquired::Taken { .. }
    ));

    // Node A stops renewing (it died, or paused): the lease expires, node B
    // takes it with a higher fence, and A's stale grant can neither renew
    // nor release B's lease.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let Acquired::Held(lease_b) = b.acquire("main").await.unwrap() else {
        panic!("the lease expired")
    };
    assert!(lease_b.fence > lease_a.fence);
    assert!(!a.renew(&lease_a).await.unwrap());
    assert!(!a.release(&lease_a).await.unwrap());
    assert!(
        matches!(a.acquire("main").await.unwrap(), Acquired::Taken { node } if node == "node-b")
    );

    // Released at the end of a publish, it is free at once.
    assert!(b.release(&lease_b).await.unwrap());
    assert!(matches!(
        a.acquire("main").await.unwrap(),
        Acquired::Held(_)
    ));
}

#[tokio::test]
async fn a_node_restarted_within_the_lease_time_gets_its_stream_back() {
    let redis = Redis::start();
    let ttl = Duration::from_secs(30);
    let before_restart = redis.leases("node-a", ttl).await;
    let Acquired::Held(old) = before_restart.acquire("main").await.unwrap() else {
        panic!("the first node gets the lease")
    };
    // The same node id after a restart (systemd brought it back at once):
    // its encoder's reconnect need not wait for its own old lease.
    let after_restart = redis.leases("node-a", ttl).await;
    let Acquired::Held(new) = after_restart.acquire("main").await.unwrap() else {
        panic!("a restarted node gets its own stream back")
    };
    assert!(new.fence > old.fence);
    // The grant from before the restart is stale: it cannot renew.
    assert!(!before_restart.renew(&old).await.unwrap());
    assert!(after_restart.renew(&new).await.unwrap());
    // Another node still cannot take it.
    let other = redis.leases("node-b", ttl).await;
    assert_eq!(
        other.acquire("main").await.unwrap(),
        Acquired::Taken {
            node: "node-a".into()
        }
    );
}
