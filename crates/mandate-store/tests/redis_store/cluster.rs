//! The contract on a three-shard Redis Cluster: every multi-key command and script touches one
//! chain's keys only, which share the `{<chain_id>}` hash tag, so none is refused as CROSSSLOT.

use mandate_redis_test::RedisCluster;

use super::meets_every_contract;

fn slot(cluster: &RedisCluster, key: &str) -> u16 {
    cluster
        .cli(0, &["CLUSTER", "KEYSLOT", key])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_cluster_meets_every_contract() {
    let cluster = RedisCluster::start().await.unwrap();
    let connection = mandate_store::connect_cluster(&cluster.urls())
        .await
        .unwrap();
    meets_every_contract(connection).await;

    // A chain's keys share one slot; the indexes are spread by their own ids.
    let chain_slot = slot(&cluster, "mandate:ledger:{chn_ledger1}:hops");
    for key in [
        "mandate:ledger:{chn_ledger1}:hop:hop_c1",
        "mandate:ledger:{chn_ledger1}:hop:hop_c2",
        "mandate:ledger:{chn_ledger1}:consents",
    ] {
        assert_eq!(slot(&cluster, key), chain_slot, "{key}");
    }
    // The data really is sharded: more than one node holds keys.
    let holding = (0..3)
        .filter(|&node| {
            let size: u64 = cluster
                .cli(node, &["DBSIZE"])
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            size > 0
        })
        .count();
    assert!(holding > 1, "only {holding} node holds keys");
}
