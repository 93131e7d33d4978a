//! The ledger's index of chains by start time in Redis: one sorted set, `mandate:chains`, scored
//! by each chain's first root, trimmed to the ledger's retention whenever a root is recorded.

use mandate_chain::{ChainPage, Ledger};
use mandate_redis_test::RedisServer;
use mandate_store::RedisLedger;

use super::root_hop;

const T: i64 = 1_800_000_000;

fn root_at(id: &str, chain: &str, issued_at: i64) -> mandate_chain::HopRecord {
    let mut hop = root_hop(id, chain);
    hop.issued_at = issued_at;
    hop.expires_at = issued_at + 300;
    hop
}

fn members(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["ZRANGE", "mandate:chains", "0", "-1", "WITHSCORES"])
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn the_chain_index_is_one_sorted_set_trimmed_to_the_retention() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let ledger = RedisLedger::new(connection, 100);

    ledger
        .record(&root_at("hop_t1", "chn_old", T))
        .await
        .unwrap();
    ledger
        .record(&root_at("hop_t2", "chn_mid", T + 50))
        .await
        .unwrap();
    // A child neither adds its chain nor moves it.
    let mut child = root_at("hop_t2c", "chn_mid", T + 90);
    child.parent = Some(mandate_chain::HopId("hop_t2".into()));
    ledger.record(&child).await.unwrap();
    assert_eq!(
        members(&server),
        ["chn_old", &T.to_string(), "chn_mid", &(T + 50).to_string()]
    );

    // A root recorded more than the retention (100 s) after chn_old started trims it; chn_mid,
    // within the retention, stays.
    ledger
        .record(&root_at("hop_t3", "chn_new", T + 101))
        .await
        .unwrap();
    assert_eq!(
        members(&server),
        [
            "chn_mid",
            &(T + 50).to_string(),
            "chn_new",
            &(T + 101).to_string()
        ]
    );
    let listed: Vec<String> = ledger
        .chains_by_start(&ChainPage {
            since: None,
            until: None,
            after: None,
            limit: 10,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.chain_id.0)
        .collect();
    assert_eq!(listed, ["chn_new", "chn_mid"]);
    // The index key carries no chain's hash tag: it is the one key naming every chain.
    assert_eq!(
        server.cli(&["TYPE", "mandate:chains"]).unwrap().trim(),
        "zset"
    );
}
