//! The contract every revocation backend meets; run by each backend's tests.

use std::time::{Duration, Instant};

use crate::{
    Revocation, RevocationKind, RevocationStore, StreamEvent, StreamPosition, TokenFacts, Verdict,
};

fn entry(kind: RevocationKind, id: &str, until_ms: i64) -> Revocation {
    Revocation {
        kind,
        id: id.into(),
        until_ms,
        reason: "test".into(),
        by: "contract".into(),
    }
}

fn chain_token(hop: &str, ancestors: &[&str], issued_at: i64) -> TokenFacts {
    TokenFacts {
        hop: Some(hop.into()),
        ancestors: ancestors.iter().map(|s| s.to_string()).collect(),
        chain: Some("chn_contract".into()),
        consents: vec![],
        agents: vec!["booking".into(), "assistant".into()],
        subject: Some("corp|alice".into()),
        issued_at,
    }
}

/// Runs every contract check against `store`. `advance(secs)` moves the store's clock forward
/// (a fixed clock for memory; real sleeping is not needed for Redis, whose clock only moves
/// forward on its own, so Redis passes a no-op and the expiry check is skipped there).
pub async fn run_all(store: &dyn RevocationStore, advance: &(dyn Fn(i64) + Sync)) {
    let now = store.now_ms().await.expect("clock");
    let now_secs = now / 1000;

    // Nothing revoked yet.
    let root = chain_token("h1", &[], now_secs);
    let middle = chain_token("h2", &["h1"], now_secs);
    let leaf = chain_token("h3", &["h1", "h2"], now_secs);
    let sibling = chain_token("h4", &["h1"], now_secs);
    for facts in [&root, &middle, &leaf, &sibling] {
        assert_eq!(
            store.check(facts).await.expect("check").verdict,
            Verdict::Live
        );
    }

    // Revoking a middle hop kills it and its descendants, not its ancestors or siblings.
    let written = store
        .revoke(vec![entry(RevocationKind::Hop, "h2", now + 600_000)])
        .await
        .expect("revoke");
    assert_eq!(written.len(), 1);
    assert!(written[0].at >= now);
    assert!(matches!(
        store.check(&middle).await.expect("check").verdict,
        Verdict::Revoked { .. }
    ));
    assert!(matches!(
        store.check(&leaf).await.expect("check").verdict,
        Verdict::Revoked { .. }
    ));
    assert_eq!(
        store.check(&root).await.expect("check").verdict,
        Verdict::Live
    );
    assert_eq!(
        store.check(&sibling).await.expect("check").verdict,
        Verdict::Live
    );

    // An agent entry covers tokens issued up to T in which it is any actor.
    let old = chain_token("h5", &[], now_secs - 10);
    store
        .revoke(vec![entry(
            RevocationKind::Agent,
            "assistant",
            now + 600_000,
        )])
        .await
        .expect("revoke");
    assert!(matches!(
        store.check(&old).await.expect("check").verdict,
        Verdict::Revoked {
            kind: RevocationKind::Agent,
            ..
        }
    ));
    let later = TokenFacts {
        issued_at: now_secs + 3600,
        ..chain_token("h6", &[], 0)
    };
    assert_eq!(
        store.check(&later).await.expect("check").verdict,
        Verdict::Live
    );

    // T only grows: revoking again keeps the later T.
    let first = store
        .revoke(vec![entry(
            RevocationKind::Subject,
            "corp|bob",
            now + 600_000,
        )])
        .await
        .expect("revoke");
    let again = store
        .revoke(vec![entry(
            RevocationKind::Subject,
            "corp|bob",
            now + 600_000,
        )])
        .await
        .expect("revoke");
    assert!(again[0].at >= first[0].at);

    // Several entries in one call are all written.
    store
        .revoke(vec![
            entry(RevocationKind::Consent, "cns_1", now + 600_000),
            entry(RevocationKind::Chain, "chn_other", now + 600_000),
        ])
        .await
        .expect("revoke");
    let entries = store.entries().await.expect("entries");
    for (kind, id) in [
        (RevocationKind::Hop, "h2"),
        (RevocationKind::Agent, "assistant"),
        (RevocationKind::Consent, "cns_1"),
        (RevocationKind::Chain, "chn_other"),
    ] {
        assert!(
            entries.iter().any(|e| e.kind == kind && e.id == id),
            "{kind}:{id} listed"
        );
    }
    let consent_rooted = TokenFacts {
        consents: vec!["cns_1".into()],
        ..TokenFacts::default()
    };
    assert!(matches!(
        store.check(&consent_rooted).await.expect("check").verdict,
        Verdict::Revoked {
            kind: RevocationKind::Consent,
            ..
        }
    ));

    // Entries are forgotten after their lifetime (when the clock can be moved).
    store
        .revoke(vec![entry(RevocationKind::Hop, "short", now + 1_000)])
        .await
        .expect("revoke");
    advance(5);
    if store.now_ms().await.expect("clock") > now + 1_000 {
        let facts = chain_token("short", &[], now_secs);
        let facts = TokenFacts {
            agents: vec![],
            ..facts
        };
        assert_eq!(
            store.check(&facts).await.expect("check").verdict,
            Verdict::Live
        );
    }
    store.ping().await.expect("ping");
    store.heartbeat("node-a", 600_000).await.expect("heartbeat");

    stream(store, now).await;
}

fn ids(events: &[StreamEvent]) -> Vec<StreamPosition> {
    events.iter().map(StreamEvent::id).collect()
}

/// The stream readers follow: a snapshot's position, then `read_after` from it.
async fn stream(store: &dyn RevocationStore, now: i64) {
    // Right after a snapshot's position, a revocation shows up, in order and only once.
    let start = store.stream_position().await.expect("position");
    assert!(store.stream_covers(start).await.expect("covers"));
    let (events, same) = store.read_after(start, Duration::ZERO).await.expect("read");
    assert!(
        events.is_empty(),
        "nothing after the last record: {events:?}"
    );
    assert_eq!(same, start);
    store
        .revoke(vec![
            entry(RevocationKind::Hop, "feed-h1", now + 600_000),
            entry(RevocationKind::Chain, "feed-c1", now + 600_000),
        ])
        .await
        .expect("revoke");
    let (events, after) = store
        .read_after(start, Duration::from_secs(2))
        .await
        .expect("read");
    let written: Vec<(RevocationKind, &str)> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Revocation { record, .. } => Some((record.kind, record.id.as_str())),
            StreamEvent::Heartbeat { .. } => None,
        })
        .collect();
    assert_eq!(
        written,
        [
            (RevocationKind::Hop, "feed-h1"),
            (RevocationKind::Chain, "feed-c1")
        ]
    );
    let read = ids(&events);
    assert!(read.windows(2).all(|w| w[0] < w[1]), "ids grow: {read:?}");
    assert!(read.first() > Some(&start));
    assert_eq!(read.last(), Some(&after));
    assert!(store.stream_covers(after).await.expect("covers"));
    assert_eq!(store.stream_position().await.expect("position"), after);

    // Heartbeats show up.
    store
        .heartbeat("node-feed", 600_000)
        .await
        .expect("heartbeat");
    let (events, after) = store
        .read_after(after, Duration::from_secs(2))
        .await
        .expect("read");
    assert!(
        events.iter().any(|e| matches!(
            e,
            StreamEvent::Heartbeat { node, at, .. } if node == "node-feed" && *at >= now
        )),
        "{events:?}"
    );

    // An empty wait returns within max_wait, where it started.
    let started = Instant::now();
    let (events, same) = store
        .read_after(after, Duration::from_millis(300))
        .await
        .expect("read");
    let waited = started.elapsed();
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(same, after);
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // A reader waiting is woken by a record written meanwhile, long before its max_wait.
    let started = Instant::now();
    let (read, ()) = tokio::join!(store.read_after(after, Duration::from_secs(10)), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        store
            .revoke(vec![entry(RevocationKind::Agent, "feed-a1", now + 600_000)])
            .await
            .expect("revoke");
    });
    let (events, _) = read.expect("read");
    assert!(
        events.iter().any(|e| matches!(
            e,
            StreamEvent::Revocation { record, .. } if record.id == "feed-a1"
        )),
        "{events:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // A position that is not of this stream: ahead of its last record. (A malformed one does
    // not parse into a position at all.)
    let ahead = StreamPosition {
        ms: after.ms + 86_400_000,
        seq: 0,
    };
    assert!(!store.stream_covers(ahead).await.expect("covers"));
    assert!(store.read_after(ahead, Duration::ZERO).await.is_err());
    for malformed in ["nonsense", ""] {
        assert!(
            malformed.parse::<StreamPosition>().is_err(),
            "{malformed:?}"
        );
    }
}
