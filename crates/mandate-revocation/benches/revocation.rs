//! Micro-benchmarks of the revocation check (docs/BENCHMARKS.md) for the facts of a third-hop
//! token (two ancestors, three agents, its chain and subject), against a list holding 10,000
//! live entries: in memory, in a follower's in-process copy (`Followed` mode) and against a
//! private `redis-server` (one round trip on loopback).
//!
//! ```sh
//! cargo bench -p mandate-revocation --features redis --bench revocation
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program"
)]

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mandate_model::SystemClock;
use mandate_redis_test::RedisServer;
use mandate_revocation::{
    FollowerConfig, MemoryRevocations, RedisRevocations, Revocation, RevocationFollower,
    RevocationKind, RevocationList, RevocationStore, RevocationStream, TokenFacts, Verdict,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

const ENTRIES: usize = 10_000;

fn facts() -> TokenFacts {
    TokenFacts {
        hop: Some("hop_01JDAAAAAAAAAAAAAAAAAAAAAA".into()),
        ancestors: vec![
            "hop_01JBAAAAAAAAAAAAAAAAAAAAAA".into(),
            "hop_01JCAAAAAAAAAAAAAAAAAAAAAA".into(),
        ],
        chain: Some("chn_01JCAAAAAAAAAAAAAAAAAAAAAA".into()),
        consents: vec![],
        agents: vec!["helper".into(), "booking-tool".into(), "assistant".into()],
        subject: Some("corp|alice".into()),
        issued_at: 1_800_000_000,
    }
}

/// Unrelated live entries, so that the lookups are in a populated list.
fn entries() -> Vec<Revocation> {
    let until_ms = (chrono_now_secs() + 3600) * 1000;
    (0..ENTRIES)
        .map(|i| Revocation {
            kind: RevocationKind::Hop,
            id: format!("hop_other_{i}"),
            until_ms,
            reason: "benchmark".into(),
            by: "bench".into(),
        })
        .collect()
}

fn chrono_now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn fill(store: &dyn RevocationStore) {
    for chunk in entries().chunks(500) {
        store.revoke(chunk.to_vec()).await.unwrap();
    }
}

async fn manager(url: &str, timeout: Duration) -> ConnectionManager {
    let client = redis::Client::open(url).unwrap();
    let config = ConnectionManagerConfig::new().set_response_timeout(Some(timeout));
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

fn revocation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let facts = facts();

    let memory = MemoryRevocations::new(Arc::new(SystemClock));
    runtime.block_on(fill(&memory));
    c.bench_function("check in memory (10k entries)", |b| {
        b.to_async(&runtime).iter(|| async {
            let checked = memory.check(&facts).await.unwrap();
            assert_eq!(checked.verdict, Verdict::Live);
        })
    });

    let redis_server = runtime.block_on(RedisServer::start()).unwrap();
    let url = redis_server.url();
    let store = RedisRevocations::new(runtime.block_on(manager(&url, Duration::from_secs(2))));
    runtime.block_on(fill(&store));
    c.bench_function("check against Redis, one round trip (10k entries)", |b| {
        b.to_async(&runtime).iter(|| async {
            let checked = store.check(&facts).await.unwrap();
            assert_eq!(checked.verdict, Verdict::Live);
        })
    });

    // A follower needs the heartbeats a mandate node writes each second.
    let heartbeat_store = store.clone();
    let heartbeats = runtime.spawn(async move {
        loop {
            let _ = heartbeat_store.heartbeat("bench", 3_600_000).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let config = FollowerConfig {
        staleness_bound: Duration::from_secs(3),
        block: Duration::from_millis(500),
    };
    let follower = runtime.block_on(async {
        let connection = manager(&url, Duration::from_secs(3)).await;
        let follower = RevocationFollower::spawn(connection, config);
        assert!(follower.ready(Duration::from_secs(10)).await);
        while follower.check(&facts).is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower
    });
    c.bench_function(
        "check in a follower's copy, Followed mode (10k entries)",
        |b| b.iter(|| assert_eq!(follower.check(&facts).unwrap(), Verdict::Live)),
    );
    follower.stop();
    heartbeats.abort();
    drop(redis_server);
}

criterion_group!(benches, revocation);
criterion_main!(benches);
