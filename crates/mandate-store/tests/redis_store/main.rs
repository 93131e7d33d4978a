//! The Redis storage backends (mandate-store, feature `redis`) against real `redis-server`
//! processes: the contract suites every backend meets, on a single server and on a three-shard
//! Redis Cluster; durability across a crash (SIGKILL, AOF replay); and failing closed while the
//! server is down, then recovering on the same connection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod audit;
mod chain_index;
mod cluster;
mod durability;
mod fail_closed;
mod journal;
mod per_thread;
mod single;

use std::time::{Duration, Instant};

use mandate_chain::{ChainId, Evidence, EvidenceKind, HopId, HopRecord, Ledger};
use mandate_model::{Audience, ClientId, Subject};
use mandate_store::{
    contract, RedisConnection, RedisConsentStore, RedisLedger, RedisRateLimiter, RedisReplayCache,
};

/// Ledger retention for the tests: long enough that nothing expires during a run.
const RETENTION_SECS: u64 = 3_600;
/// The rate the rate-limit contract runs with.
const PER_SECOND: u32 = 3;

/// Every contract suite against the backends over `connection`.
async fn meets_every_contract<C: RedisConnection>(connection: C) {
    contract::run_all(
        &RedisLedger::new(connection.clone(), RETENTION_SECS),
        &RedisReplayCache::new(connection.clone()),
        &RedisRateLimiter::new(connection.clone(), PER_SECOND),
        PER_SECOND,
        &RedisConsentStore::new(connection.clone()),
    )
    .await;
    contract::ssf_streams(&mandate_store::RedisSsfStreams::new(connection.clone())).await;
    contract::participation(&mandate_store::RedisParticipation::new(connection.clone())).await;
    contract::last_use(&mandate_store::RedisLastUse::new(connection.clone())).await;
    contract::gates(&mandate_store::RedisGates::new(connection.clone())).await;
    contract::journal(&mandate_store::RedisJournal::new(connection.clone())).await;
    contract::audit(&mandate_store::RedisAuditLog::new(
        connection.clone(),
        1_000,
    ))
    .await;
    // Redis's clock cannot be moved, so a second really passes.
    contract::rate_limit_refill(
        &RedisRateLimiter::new(connection.clone(), PER_SECOND),
        PER_SECOND,
        tokio::time::sleep(Duration::from_millis(1_100)),
    )
    .await;
    contract::rate_limit_disabled(&RedisRateLimiter::new(connection, 0)).await;
}

/// A root hop (upstream evidence), as the token exchange records it.
fn root_hop(id: &str, chain: &str) -> HopRecord {
    HopRecord {
        jkt: None,
        request: None,
        id: HopId(id.into()),
        parent: None,
        chain_id: ChainId(chain.into()),
        ancestors: vec![],
        subject: Subject::parse("corp|alice").unwrap(),
        actors: vec![ClientId::parse("assistant").unwrap()],
        client_id: ClientId::parse("assistant").unwrap(),
        audience: Audience::parse("https://calendar.example.com").unwrap(),
        authority: mandate_chain::Authority::new(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
        depth: 1,
        depth_limit: 5,
        evidence: Evidence {
            kind: EvidenceKind::UpstreamAudience,
            reference: "assistant".into(),
        },
        upstream: None,
    }
}

/// Waits (up to 15 s) until the ledger answers again, as a node would while Redis restarts.
async fn wait_until_answering(ledger: &dyn Ledger) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match ledger.hop(&HopId("hop_probe".into())).await {
            Ok(_) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("the store did not answer again after the restart: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
