//! The shared configuration store against a real `redis-server`: changes
//! apply only to the version they were made from, each new version is
//! announced once on pub/sub, and a reader always sees a document with its
//! own version.

use std::time::Duration;

use futures_util::StreamExt;
use prism_cluster::StoreError;
use redis_server::Redis;

mod redis_server;

#[tokio::test]
async fn changes_are_versioned_compared_and_announced() {
    let redis = Redis::start();
    let node_a = redis.store().await;
    let node_b = redis.store().await;

    // Node B listens for announcements, as every node does.
    let mut pubsub = redis.client().get_async_pubsub().await.unwrap();
    pubsub.subscribe(node_b.channel()).await.unwrap();
    let mut announcements = pubsub.into_on_message();

    let empty = node_a.read().await.unwrap();
    assert_eq!((empty.version, empty.text.as_str()), (0, ""));
    let first = "[[streams]]\nid = \"main\"\nkey = \"k1\"\n";
    assert_eq!(node_a.write(0, first).await.unwrap(), 1);

    let message = tokio::time::timeout(Duration::from_secs(1), announcements.next())
        .await
        .expect("announced within a second")
        .unwrap();
    assert_eq!(message.get_payload::<u64>().unwrap(), 1);
    let seen = node_b.read().await.unwrap();
    assert_eq!((seen.version, seen.text.as_str()), (1, first));

    // Node B changes it; node A's change, made from version 1 too, is
    // refused rather than lost or applied twice.
    let second = format!("{first}reconnect_grace_s = 5\n");
    assert_eq!(node_b.write(1, &second).await.unwrap(), 2);
    match node_a
        .write(1, "[[streams]]\nid = \"other\"\nkey = \"k2\"\n")
        .await
    {
        Err(StoreError::Conflict { current: 2 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(node_a.version().await.unwrap(), 2);
    assert_eq!(node_a.read().await.unwrap().text, second);
    let message = tokio::time::timeout(Duration::from_secs(1), announcements.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.get_payload::<u64>().unwrap(), 2);
    // Exactly two versions were announced.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), announcements.next())
            .await
            .is_err()
    );
}
