//! The contract every revocation backend meets; run by each backend's tests.

use crate::{Revocation, RevocationKind, RevocationStore, TokenFacts, Verdict};

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
}
