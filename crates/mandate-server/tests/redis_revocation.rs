//! The revocation contract against a real Redis: a private server and a three-node cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use mandate_revocation::{contract, RedisRevocations};
use mandate_testkit::redis::{RedisCluster, RedisServer};

async fn manager(url: &str) -> redis::aio::ConnectionManager {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
        .set_response_timeout(Some(std::time::Duration::from_secs(2)));
    redis::aio::ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_meets_the_revocation_contract() {
    let server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    contract::run_all(&store, &|_| {}).await;
    // Entries and their stream records were written together.
    let length = server.cli(&["XLEN", "{mandate:rev}:stream"]).unwrap();
    assert!(length.trim().parse::<u32>().unwrap() >= 7, "{length}");
}

#[tokio::test]
async fn redis_cluster_meets_the_revocation_contract() {
    let cluster = RedisCluster::start().await.unwrap();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let connection = client.get_async_connection().await.unwrap();
    contract::run_all(&RedisRevocations::new(connection), &|_| {}).await;
}

#[tokio::test]
async fn revocations_survive_a_crash_and_the_store_fails_closed_meanwhile() {
    use mandate_revocation::{Revocation, RevocationKind, RevocationStore, TokenFacts, Verdict};
    let mut server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    let now = store.now_ms().await.unwrap();
    store
        .revoke(vec![Revocation {
            kind: RevocationKind::Hop,
            id: "hop_crash".into(),
            until_ms: now + 600_000,
            reason: "test".into(),
            by: "test".into(),
        }])
        .await
        .unwrap();
    let facts = TokenFacts {
        hop: Some("hop_crash".into()),
        issued_at: now / 1000,
        ..TokenFacts::default()
    };
    server.kill();
    let started = std::time::Instant::now();
    assert!(
        store.check(&facts).await.is_err(),
        "no answer is not a 'live' answer"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    server.restart().await.unwrap();
    // The same connection recovers by itself, and the entry was persisted (AOF, fsync always).
    let mut verdict = None;
    for _ in 0..50 {
        if let Ok(checked) = store.check(&facts).await {
            verdict = Some(checked.verdict);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        matches!(verdict, Some(Verdict::Revoked { .. })),
        "{verdict:?}"
    );
}
