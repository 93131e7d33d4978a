//! What was acknowledged survives a crash: the harness runs AOF with `appendfsync always`.

use mandate_chain::{ChainId, HopId, Ledger};
use mandate_redis_test::RedisServer;
use mandate_store::{RedisLedger, RedisReplayCache, ReplayCache};

use super::{root_hop, wait_until_answering, RETENTION_SECS};

#[tokio::test]
async fn hops_and_used_ids_survive_a_crash() {
    let mut server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let ledger = RedisLedger::new(connection.clone(), RETENTION_SECS);
    let replay = RedisReplayCache::new(connection);
    let hop = root_hop("hop_durable", "chn_durable");
    ledger.record(&hop).await.unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(replay
        .first_use("c1:jti-durable", now + 600, now)
        .await
        .unwrap());

    server.kill();
    server.restart().await.unwrap();
    wait_until_answering(&ledger).await;

    assert_eq!(
        ledger.hop(&HopId("hop_durable".into())).await.unwrap(),
        Some(hop.clone())
    );
    assert_eq!(
        ledger.chain(&ChainId("chn_durable".into())).await.unwrap(),
        std::slice::from_ref(&hop)
    );
    assert!(ledger.record(&hop).await.is_err(), "still taken");
    assert!(
        !replay
            .first_use("c1:jti-durable", now + 600, now)
            .await
            .unwrap(),
        "a used id is still used after the crash"
    );
}
