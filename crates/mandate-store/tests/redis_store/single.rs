//! The contract on one server, and the key layout and expiries it leaves there.

use mandate_redis_test::RedisServer;

use super::{meets_every_contract, RETENTION_SECS};

fn ttl(server: &RedisServer, key: &str) -> i64 {
    server.cli(&["TTL", key]).unwrap().trim().parse().unwrap()
}

fn pttl(server: &RedisServer, key: &str) -> i64 {
    server.cli(&["PTTL", key]).unwrap().trim().parse().unwrap()
}

#[tokio::test]
async fn a_single_server_meets_every_contract() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    meets_every_contract(connection).await;

    // Ledger keys: the chain's keys and both indexes, each expiring after the retention.
    let retention = i64::try_from(RETENTION_SECS).unwrap();
    for key in [
        "mandate:ledger:{chn_ledger1}:hop:hop_c1",
        "mandate:ledger:{chn_ledger1}:hops",
        "mandate:ledger:{chn_consent_a}:consents",
        "mandate:ledger:hop-chain:hop_c1",
        "mandate:ledger:consent:cg_1",
    ] {
        let ttl = ttl(&server, key);
        assert!(ttl > 0 && ttl <= retention, "{key}: TTL {ttl}");
    }
    assert_eq!(
        server
            .cli(&["GET", "mandate:ledger:hop-chain:hop_c2"])
            .unwrap()
            .trim(),
        "chn_ledger1"
    );
    assert_eq!(
        server
            .cli(&["LRANGE", "mandate:ledger:{chn_ledger1}:hops", "0", "-1"])
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["hop_c1", "hop_c2", "hop_c0"]
    );
    // The hop taken back from another chain left nothing there.
    assert_eq!(
        server
            .cli(&["EXISTS", "mandate:ledger:{chn_ledger3}:hop:hop_c2"])
            .unwrap()
            .trim(),
        "0"
    );

    // Consent grants never expire; the id key names the pair's hash.
    assert_eq!(ttl(&server, "mandate:consent:corp|alice:assistant"), -1);
    assert_eq!(ttl(&server, "mandate:consent-id:cg_a1"), -1);
    assert_eq!(
        server
            .cli(&["GET", "mandate:consent-id:cg_t1"])
            .unwrap()
            .trim(),
        "mandate:consent:corp|team:alice:assistant"
    );

    // Replay keys expire with the identifier; buckets within seconds.
    let replay = ttl(&server, "mandate:replay:contract:c1:j1");
    assert!(replay > 500 && replay <= 600, "replay TTL {replay}");
    let bucket = pttl(&server, "mandate:rate:contract-refill");
    assert!(bucket > 0 && bucket <= 2_000, "bucket PTTL {bucket}");
    assert_eq!(
        server
            .cli(&["EXISTS", "mandate:rate:contract-unlimited"])
            .unwrap()
            .trim(),
        "0",
        "a disabled limiter never writes"
    );
}
