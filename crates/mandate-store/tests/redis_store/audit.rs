//! The audit stream in Redis: filtered reads walk the stream past one batch, newest first.

use mandate_redis_test::RedisServer;
use mandate_store::{AuditEvent, AuditFilter, AuditLog, RedisAuditLog};

#[tokio::test]
async fn a_filtered_read_walks_the_stream_newest_first_across_batches() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let log = RedisAuditLog::new(connection, 1_000_000);
    // Five rare events, then more common ones than one batch of the filtered read holds.
    for n in 0..1_205 {
        log.record(AuditEvent {
            at: n,
            actor: if n < 5 { "client:rare" } else { "ops" }.into(),
            action: if n < 5 {
                "exchange.refused"
            } else {
                "revoke.hop"
            }
            .into(),
            target: format!("t{n}"),
            detail: String::new(),
        })
        .await;
    }
    let rare = AuditFilter {
        action: Some("exchange.refused".into()),
        actor: None,
    };
    let found: Vec<i64> = log
        .recent(&rare, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(found, [4, 3, 2, 1, 0]);
    let by_actor = AuditFilter {
        action: None,
        actor: Some("client:rare".into()),
    };
    assert_eq!(log.recent(&by_actor, 2).await.unwrap().len(), 2);
    let newest: Vec<i64> = log
        .recent(&AuditFilter::default(), 3)
        .await
        .unwrap()
        .iter()
        .map(|e| e.at)
        .collect();
    assert_eq!(newest, [1_204, 1_203, 1_202]);
    // 1,001 matches need two batches; none is read twice.
    let common = AuditFilter {
        action: Some("revoke.hop".into()),
        actor: None,
    };
    let all = log.recent(&common, 1_001).await.unwrap();
    assert_eq!(all.len(), 1_001);
    assert_eq!(all.last().unwrap().at, 204);
}
