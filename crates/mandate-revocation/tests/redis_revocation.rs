//! The revocation contract against a real Redis: a private server and a three-node cluster.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use mandate_redis_test::{RedisCluster, RedisServer};
use mandate_revocation::{contract, RedisRevocations};

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
    use mandate_revocation::{Revocation, RevocationKind, RevocationList, TokenFacts, Verdict};
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

/// Polls `INFO replication` on `node` until `wanted` is in it (10 s at most).
async fn until_info(node: &RedisServer, wanted: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let info = node.cli(&["INFO", "replication"]).unwrap();
        if info.contains(wanted) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {wanted:?} in {info}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn with_a_replica_a_revocation_is_acknowledged_by_it_or_refused() {
    use mandate_revocation::{Revocation, RevocationKind, RevocationList, RevocationStream};
    let primary = RedisServer::start().await.unwrap();
    let mut replica = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&primary.url()).await);
    assert_eq!(store.detect_replicas().await.unwrap(), 0);

    replica
        .cli(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()])
        .unwrap();
    until_info(&replica, "master_link_status:up").await;
    until_info(&primary, "connected_slaves:1").await;
    // A heartbeat notices the replica (as it would one attached after start-up).
    store.heartbeat("node-a", 60_000).await.unwrap();

    let revocation = |id: &str, now: i64| Revocation {
        kind: RevocationKind::Hop,
        id: id.into(),
        until_ms: now + 600_000,
        reason: "test".into(),
        by: "test".into(),
    };
    let now = store.now_ms().await.unwrap();
    store
        .revoke(vec![revocation("hop_replicated", now)])
        .await
        .unwrap();
    // Acknowledged means the replica holds it when the call returns.
    let on_replica = replica
        .cli(&["GET", "{mandate:rev}:hop:hop_replicated"])
        .unwrap();
    assert!(on_replica.contains("hop_replicated"), "{on_replica}");

    // The replica dies: the primary still takes the write, but no replica acknowledges it, so
    // the call fails (the caller retries) instead of claiming a durability it does not have.
    replica.kill();
    let refused = store
        .revoke(vec![revocation("hop_unacknowledged", now)])
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("no replica acknowledged"),
        "{refused}"
    );
    let on_primary = primary
        .cli(&["GET", "{mandate:rev}:hop:hop_unacknowledged"])
        .unwrap();
    assert!(on_primary.contains("hop_unacknowledged"), "{on_primary}");

    // Once the primary sees no replica (the next heartbeat), revocations no longer wait.
    until_info(&primary, "connected_slaves:0").await;
    store.heartbeat("node-a", 60_000).await.unwrap();
    store
        .revoke(vec![revocation("hop_alone", now)])
        .await
        .unwrap();
}

/// The entry is written by a script that reads T from the server's clock: what it stores and
/// what it appends to the stream must read back exactly, whatever the reason and id contain,
/// and a later revocation of the same id keeps the later T and the later expiry.
#[tokio::test]
async fn the_revocation_script_writes_what_it_is_given() {
    use mandate_revocation::{
        Revocation, RevocationKind, RevocationList, RevocationStream, StreamEvent,
    };
    let server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    let now = store.now_ms().await.unwrap();
    let reason = "said \"stop\" / ünïcode \\ back\nslash";
    let by = "admin:ops {team}";
    // A heartbeat first, so that the position read is a record's id.
    store.heartbeat("node-a", 60_000).await.unwrap();
    let start = store.stream_position().await.unwrap();
    let first = store
        .revoke(vec![Revocation {
            kind: RevocationKind::Agent,
            id: "booking/agent".into(),
            until_ms: now + 600_000,
            reason: reason.into(),
            by: by.into(),
        }])
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert!(first[0].at >= now && first[0].at < now + 5_000, "{first:?}");
    assert_eq!(first[0].until, now + 600_000);
    let stored = store.entries().await.unwrap();
    assert_eq!(stored, first);
    let (events, _) = store
        .read_after(start, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert!(events.iter().any(|event| matches!(
        event,
        StreamEvent::Revocation { record, .. } if *record == first[0]
    )));

    // Again, with a shorter lifetime: T moves on, the expiry stays the later one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = store
        .revoke(vec![Revocation {
            kind: RevocationKind::Agent,
            id: "booking/agent".into(),
            until_ms: now + 60_000,
            reason: "again".into(),
            by: by.into(),
        }])
        .await
        .unwrap();
    assert!(second[0].at > first[0].at, "{second:?} after {first:?}");
    assert_eq!(second[0].until, now + 600_000);
    assert_eq!(store.entries().await.unwrap(), second);
}

/// Calls of one Redis command since the statistics were last reset.
fn calls_of(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

fn agent_entry(id: &str, until_ms: i64) -> mandate_revocation::Revocation {
    mandate_revocation::Revocation {
        kind: mandate_revocation::RevocationKind::Agent,
        id: id.into(),
        until_ms,
        reason: "test".into(),
        by: "test".into(),
    }
}

/// Security finding 2 (SECURITY.md): a snapshot (every feed opened without a position) reads the
/// entries through their index, not the stream, whose heartbeats outnumber the entries by far.
#[tokio::test]
async fn a_snapshot_reads_the_entries_not_the_stream() {
    use mandate_revocation::RevocationList;
    let server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    let now = store.now_ms().await.unwrap();
    let mut connection = manager(&server.url()).await;
    let mut heartbeats = redis::pipe();
    for i in 0..5_000 {
        heartbeats
            .cmd("XADD")
            .arg("{mandate:rev}:stream")
            .arg("*")
            .arg("kind")
            .arg("heartbeat")
            .arg("id")
            .arg(format!("node-{}", i % 10))
            .arg("at")
            .arg(now)
            .ignore();
    }
    heartbeats.query_async::<()>(&mut connection).await.unwrap();
    let written = store
        .revoke(
            (0..3)
                .map(|i| agent_entry(&format!("agent-{i}"), now + 60_000))
                .collect(),
        )
        .await
        .unwrap();
    // One that has expired is in the index until pruned, and not in the snapshot.
    store
        .revoke(vec![agent_entry("short-lived", now + 50)])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    let mut entries = store.entries().await.unwrap();
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(entries, written);
    assert_eq!(
        calls_of(&server, "xrange"),
        0,
        "the snapshot read the stream"
    );
    assert_eq!(calls_of(&server, "zrange"), 1);
    // The next revocation prunes what expired from the index.
    store
        .revoke(vec![agent_entry("agent-3", now + 60_000)])
        .await
        .unwrap();
    let members = server
        .cli(&["ZRANGE", "{mandate:rev}:index", "0", "-1"])
        .unwrap();
    assert!(!members.contains("short-lived"), "{members}");
    assert_eq!(members.lines().count(), 4, "{members}");
}

/// Entries written before the index existed (an older node) are indexed at start-up, so that
/// snapshots keep them.
#[tokio::test]
async fn entries_written_before_the_index_are_indexed_at_start_up() {
    use mandate_revocation::RevocationList;
    let server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    let now = store.now_ms().await.unwrap();
    for (id, until) in [("old-live", now + 60_000), ("old-expired", now - 1_000)] {
        let record = format!(
            r#"{{"kind":"agent","id":"{id}","at":{now},"until":{until},"reason":"r","by":"b"}}"#
        );
        if until > now {
            server
                .cli(&[
                    "SET",
                    &format!("{{mandate:rev}}:agent:{id}"),
                    &record,
                    "PX",
                    "60000",
                ])
                .unwrap();
        }
        server
            .cli(&[
                "XADD",
                "{mandate:rev}:stream",
                "*",
                "kind",
                "agent",
                "id",
                id,
                "at",
                &now.to_string(),
                "until",
                &until.to_string(),
                "reason",
                "r",
                "by",
                "b",
            ])
            .unwrap();
    }
    assert!(store.entries().await.unwrap().is_empty());
    assert_eq!(store.index_entries().await.unwrap(), 2);
    let entries = store.entries().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].id, "old-live");
    // Indexing again changes nothing.
    store.index_entries().await.unwrap();
    assert_eq!(store.entries().await.unwrap(), entries);
}

/// Security finding 6 (SECURITY.md): an entry that cannot be read is a failure of the list, not
/// the absence of an entry: the check refuses (the server answers 503), and so does a snapshot.
#[tokio::test]
async fn an_unreadable_entry_fails_closed() {
    use mandate_revocation::{RevocationList, TokenFacts};
    let server = RedisServer::start().await.unwrap();
    let store = RedisRevocations::new(manager(&server.url()).await);
    server
        .cli(&[
            "SET",
            "{mandate:rev}:hop:hop_garbled",
            "{\"kind\":\"hop\",\"id\"",
        ])
        .unwrap();
    let facts = TokenFacts {
        hop: Some("hop_garbled".into()),
        ..TokenFacts::default()
    };
    let error = store.check(&facts).await.unwrap_err();
    assert!(error.to_string().contains("cannot be read"), "{error}");
    // A token that does not name it is checked as usual.
    let other = TokenFacts {
        hop: Some("hop_other".into()),
        ..TokenFacts::default()
    };
    assert!(store.check(&other).await.is_ok());
    server
        .cli(&[
            "ZADD",
            "{mandate:rev}:index",
            "99999999999999",
            "hop:hop_garbled",
        ])
        .unwrap();
    assert!(store.entries().await.is_err());
}
