//! While Redis is down every operation fails, within the connection's timeouts rather than
//! hanging, so that callers refuse requests promptly; once Redis is back, the same connection
//! serves again without being rebuilt.

use std::future::Future;
use std::time::{Duration, Instant};

use mandate_chain::{ChainId, ConsentGrant, ConsentStore, HopId, Ledger};
use mandate_model::{Audience, ClientId, ScopeSet, Subject};
use mandate_redis_test::RedisServer;
use mandate_store::{
    RateDecision, RateLimiter, RedisConsentStore, RedisLedger, RedisRateLimiter, RedisReplayCache,
    ReplayCache,
};

use super::{root_hop, wait_until_answering, RETENTION_SECS};

/// How long a refused operation may take: a few reconnection attempts, well inside the
/// connection and response timeouts (2 s each).
const PROMPT: Duration = Duration::from_secs(5);

async fn fails_promptly<T: std::fmt::Debug, E: std::fmt::Display>(
    what: &str,
    operation: impl Future<Output = Result<T, E>>,
) {
    let started = Instant::now();
    let outcome = tokio::time::timeout(PROMPT * 2, operation)
        .await
        .unwrap_or_else(|_| panic!("{what} hung while Redis was down"));
    let took = started.elapsed();
    match outcome {
        Ok(value) => panic!("{what} succeeded while Redis was down: {value:?}"),
        Err(error) => assert!(took < PROMPT, "{what} took {took:?} to fail: {error}"),
    }
}

fn grant(id: &str) -> ConsentGrant {
    ConsentGrant {
        id: id.into(),
        subject: Subject::parse("corp|alice").unwrap(),
        actor: ClientId::parse("assistant").unwrap(),
        audience: Audience::parse("https://calendar.example.com").unwrap(),
        scopes: ScopeSet::parse("calendar.read").unwrap(),
        expires_at: 1_800_000_000,
    }
}

#[tokio::test]
async fn every_operation_fails_closed_while_redis_is_down_and_recovers() {
    let mut server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let ledger = RedisLedger::new(connection.clone(), RETENTION_SECS);
    let replay = RedisReplayCache::new(connection.clone());
    let limiter = RedisRateLimiter::new(connection.clone(), 100);
    let consents = RedisConsentStore::new(connection);
    let alice = Subject::parse("corp|alice").unwrap();
    let assistant = ClientId::parse("assistant").unwrap();
    let now = chrono::Utc::now().timestamp();
    ledger
        .record(&root_hop("hop_before", "chn_fc"))
        .await
        .unwrap();

    server.kill();
    // Twice over: the first failures start reconnecting, the later ones meet a reconnection
    // that fails too; neither may hang or succeed.
    for round in 0..2 {
        let hop = root_hop(&format!("hop_down_{round}"), "chn_fc");
        fails_promptly("record", ledger.record(&hop)).await;
        fails_promptly("hop", ledger.hop(&HopId("hop_before".into()))).await;
        fails_promptly("chain", ledger.chain(&ChainId("chn_fc".into()))).await;
        fails_promptly(
            "chains_rooted_on_consent",
            ledger.chains_rooted_on_consent("cg"),
        )
        .await;
        fails_promptly("first_use", replay.first_use("c1:j-down", now + 600, now)).await;
        fails_promptly("acquire", limiter.acquire("client-down")).await;
        fails_promptly("consents", consents.consents(&alice, &assistant)).await;
        fails_promptly(
            "insert_if_absent",
            consents.insert_if_absent(grant("cg_down")),
        )
        .await;
    }

    server.restart().await.unwrap();
    wait_until_answering(&ledger).await;
    let hop = root_hop("hop_after", "chn_fc");
    ledger.record(&hop).await.unwrap();
    assert_eq!(
        ledger.hop(&HopId("hop_after".into())).await.unwrap(),
        Some(hop)
    );
    let chain: Vec<String> = ledger
        .chain(&ChainId("chn_fc".into()))
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.id.0)
        .collect();
    assert_eq!(
        chain,
        ["hop_before", "hop_after"],
        "nothing was written while down"
    );
    assert!(ledger
        .chains_rooted_on_consent("cg")
        .await
        .unwrap()
        .is_empty());
    assert!(replay.first_use("c1:j-down", now + 600, now).await.unwrap());
    assert_eq!(
        limiter.acquire("client-down").await.unwrap(),
        RateDecision::Allowed
    );
    assert!(consents
        .consents(&alice, &assistant)
        .await
        .unwrap()
        .is_empty());
    assert!(consents.insert_if_absent(grant("cg_down")).await.unwrap());
}
