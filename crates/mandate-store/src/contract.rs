//! The contract every storage backend meets (STYLE.md guideline 10): the in-memory backends run
//! it in this crate's unit tests, the Redis backends against a real `redis-server` (single and
//! cluster) in mandate-server's `redis_store` tests. A backend that passes can replace another.
//!
//! Each suite uses its own keys and ids, so the suites can share one empty store; a suite run
//! twice against the same store fails (ids are already taken), so give each run a fresh store.

use std::future::Future;

use mandate_chain::{
    Authority, ChainId, ConsentGrant, ConsentStore, Evidence, EvidenceKind, HopId, HopRecord,
    Ledger, UpstreamGrant,
};
use mandate_model::{Audience, ClientId, ScopeSet, Subject};

use crate::{RateDecision, RateLimiter, ReplayCache};

/// Runs every suite but [`rate_limit_refill`], which needs a second to pass.
pub async fn run_all(
    ledger: &dyn Ledger,
    replay_cache: &dyn ReplayCache,
    limiter: &dyn RateLimiter,
    per_second: u32,
    consent_store: &dyn ConsentStore,
) {
    self::ledger(ledger).await;
    replay(replay_cache).await;
    rate_limit(limiter, per_second).await;
    consents(consent_store).await;
}

fn hop(id: &str, chain: &str, parent: Option<&str>, evidence: (EvidenceKind, &str)) -> HopRecord {
    let mut authority = Authority::new();
    authority.insert(
        "https://calendar.example.com",
        ScopeSet::parse("calendar.read").expect("scope"),
    );
    HopRecord {
        id: HopId(id.into()),
        parent: parent.map(|p| HopId(p.into())),
        chain_id: ChainId(chain.into()),
        ancestors: parent.iter().map(|p| HopId((*p).into())).collect(),
        subject: Subject::parse("corp|alice").expect("subject"),
        actors: vec![ClientId::parse("assistant").expect("client id")],
        client_id: ClientId::parse("assistant").expect("client id"),
        audience: Audience::parse("https://calendar.example.com").expect("audience"),
        authority,
        issued_at: 1_800_000_000,
        expires_at: 1_800_000_300,
        depth: if parent.is_some() { 2 } else { 1 },
        depth_limit: 5,
        evidence: Evidence {
            kind: evidence.0,
            reference: evidence.1.into(),
        },
        upstream: parent.is_none().then(|| UpstreamGrant {
            issuer: "https://corp.example.com".into(),
            grant_id: format!("grant-of-{chain}"),
            expires_at: 1_800_003_600,
        }),
    }
}

async fn ids_of(ledger: &dyn Ledger, chain: &str) -> Vec<String> {
    ledger
        .chain(&ChainId(chain.into()))
        .await
        .expect("chain")
        .into_iter()
        .map(|h| h.id.0)
        .collect()
}

async fn rooted_on(ledger: &dyn Ledger, consent: &str) -> Vec<String> {
    ledger
        .chains_rooted_on_consent(consent)
        .await
        .expect("chains rooted on consent")
        .into_iter()
        .map(|c| c.0)
        .collect()
}

/// The hop ledger: records found by id and by chain in record order, never overwritten (in the
/// same chain or another), and consent-rooted chains found by consent id.
pub async fn ledger(ledger: &dyn Ledger) {
    let upstream = (EvidenceKind::UpstreamAudience, "assistant");
    let root = hop("hop_c1", "chn_ledger1", None, upstream);
    let child = hop(
        "hop_c2",
        "chn_ledger1",
        Some("hop_c1"),
        (EvidenceKind::HandOff, "hop_c1"),
    );
    let other = hop("hop_c3", "chn_ledger2", None, upstream);
    ledger.record(&root).await.expect("record root");
    ledger.record(&child).await.expect("record child");
    ledger.record(&other).await.expect("record other chain");

    // Found by id alone, exactly as recorded.
    assert_eq!(
        ledger.hop(&HopId("hop_c2".into())).await.expect("hop"),
        Some(child.clone())
    );
    assert_eq!(
        ledger.hop(&HopId("hop_c1".into())).await.expect("hop"),
        Some(root.clone())
    );
    assert_eq!(
        ledger.hop(&HopId("hop_unknown".into())).await.expect("hop"),
        None
    );

    // Chains in record order, each with its own hops only.
    let sibling = hop(
        "hop_c0",
        "chn_ledger1",
        Some("hop_c1"),
        (EvidenceKind::HandOff, "hop_c1"),
    );
    ledger.record(&sibling).await.expect("record sibling");
    assert_eq!(
        ids_of(ledger, "chn_ledger1").await,
        ["hop_c1", "hop_c2", "hop_c0"]
    );
    assert_eq!(ids_of(ledger, "chn_ledger2").await, ["hop_c3"]);
    assert!(ids_of(ledger, "chn_unknown").await.is_empty());
    assert_eq!(
        ledger
            .chain(&ChainId("chn_ledger1".into()))
            .await
            .expect("chain"),
        [root.clone(), child.clone(), sibling]
    );

    // An id is never overwritten: not in its chain, not from another chain.
    let mut changed = child.clone();
    changed.expires_at += 1;
    assert!(ledger.record(&changed).await.is_err());
    let elsewhere = hop("hop_c2", "chn_ledger3", None, upstream);
    assert!(ledger.record(&elsewhere).await.is_err());
    assert_eq!(
        ledger.hop(&HopId("hop_c2".into())).await.expect("hop"),
        Some(child)
    );
    assert_eq!(ids_of(ledger, "chn_ledger1").await.len(), 3);
    assert!(ids_of(ledger, "chn_ledger3").await.is_empty());

    // Chains rooted on consent grants: only roots whose evidence is a consent grant count, and
    // one reference may name several grants.
    let consent = EvidenceKind::ConsentGrant;
    for record in [
        hop("hop_k1", "chn_consent_b", None, (consent, "cg_1")),
        hop("hop_k2", "chn_consent_a", None, (consent, "cg_2 cg_1")),
        // A second root of the same chain on the same grant: the chain is listed once.
        hop("hop_k3", "chn_consent_b", None, (consent, "cg_1")),
        // A child carrying consent evidence does not root its chain on it.
        hop("hop_k4", "chn_consent_c", Some("hop_k0"), (consent, "cg_1")),
        // A root whose evidence merely mentions the id is not consent-rooted.
        hop(
            "hop_k5",
            "chn_consent_d",
            None,
            (EvidenceKind::UpstreamAudience, "cg_1"),
        ),
        hop("hop_k6", "chn_consent_e", None, (consent, "cg_10")),
    ] {
        ledger.record(&record).await.expect("record consent hop");
    }
    assert_eq!(
        rooted_on(ledger, "cg_1").await,
        ["chn_consent_a", "chn_consent_b"]
    );
    assert_eq!(rooted_on(ledger, "cg_2").await, ["chn_consent_a"]);
    assert_eq!(rooted_on(ledger, "cg_10").await, ["chn_consent_e"]);
    assert!(rooted_on(ledger, "cg_3").await.is_empty());
}

/// The replay cache: an identifier is used once until it expires, and may be used again after.
/// Times are real (seconds since the epoch), because a Redis backend expires keys by its clock.
pub async fn replay(cache: &dyn ReplayCache) {
    let now = chrono::Utc::now().timestamp();
    let first = |key: &'static str, until: i64| cache.first_use(key, until, now);
    assert!(first("contract:c1:j1", now + 600).await.expect("first use"));
    assert!(!first("contract:c1:j1", now + 600)
        .await
        .expect("second use"));
    assert!(!first("contract:c1:j1", now + 900).await.expect("third use"));
    assert!(first("contract:c2:j1", now + 600).await.expect("other key"));

    // Recorded with an expiry already past: not held, so the next use is a first use too; that
    // one is held.
    assert!(first("contract:c1:old", now - 10).await.expect("expired"));
    assert!(first("contract:c1:old", now + 600).await.expect("reuse"));
    assert!(!first("contract:c1:old", now + 600).await.expect("held"));
}

/// The rate limiter, where no time needs to pass: bursts of `per_second` (at least 2) requests
/// per key, then limited with a retry-after of at least a second, keys independent. The
/// requests follow each other within far less than `1 / per_second` seconds, so this holds on a
/// real clock too.
pub async fn rate_limit(limiter: &dyn RateLimiter, per_second: u32) {
    assert!(per_second >= 2, "the contract needs a burst of at least 2");
    for _ in 0..per_second {
        assert_eq!(
            limiter.acquire("contract-rate-a").await.expect("acquire"),
            RateDecision::Allowed
        );
    }
    match limiter.acquire("contract-rate-a").await.expect("acquire") {
        RateDecision::Limited { retry_after_secs } => assert!(retry_after_secs >= 1),
        RateDecision::Allowed => panic!(
            "request {} of a burst of {per_second} allowed",
            per_second + 1
        ),
    }
    assert!(matches!(
        limiter.acquire("contract-rate-a").await.expect("acquire"),
        RateDecision::Limited { .. }
    ));
    // Another key has its own budget.
    for _ in 0..per_second {
        assert_eq!(
            limiter.acquire("contract-rate-b").await.expect("acquire"),
            RateDecision::Allowed
        );
    }
}

/// The rate limiter refills: after a spent burst, once `pass_a_second` has made at least a
/// second pass (advancing a fixed clock, or sleeping a little over a second), a request is
/// allowed again.
pub async fn rate_limit_refill(
    limiter: &dyn RateLimiter,
    per_second: u32,
    pass_a_second: impl Future<Output = ()>,
) {
    for _ in 0..per_second {
        assert_eq!(
            limiter.acquire("contract-refill").await.expect("acquire"),
            RateDecision::Allowed
        );
    }
    assert!(matches!(
        limiter.acquire("contract-refill").await.expect("acquire"),
        RateDecision::Limited { .. }
    ));
    pass_a_second.await;
    assert_eq!(
        limiter.acquire("contract-refill").await.expect("acquire"),
        RateDecision::Allowed
    );
}

/// A limiter built with `per_second = 0` never limits.
pub async fn rate_limit_disabled(limiter: &dyn RateLimiter) {
    for _ in 0..100 {
        assert_eq!(
            limiter
                .acquire("contract-unlimited")
                .await
                .expect("acquire"),
            RateDecision::Allowed
        );
    }
}

fn grant(id: &str, subject: &str, actor: &str) -> ConsentGrant {
    ConsentGrant {
        id: id.into(),
        subject: Subject::parse(subject).expect("subject"),
        actor: ClientId::parse(actor).expect("client id"),
        audience: Audience::parse("https://calendar.example.com").expect("audience"),
        scopes: ScopeSet::parse("calendar.read calendar.write").expect("scopes"),
        expires_at: 1_800_000_000,
    }
}

async fn consents_of(store: &dyn ConsentStore, subject: &str, actor: &str) -> Vec<ConsentGrant> {
    let mut grants = store
        .consents(
            &Subject::parse(subject).expect("subject"),
            &ClientId::parse(actor).expect("client id"),
        )
        .await
        .expect("consents");
    grants.sort_by(|a, b| a.id.cmp(&b.id));
    grants
}

/// Consent grants: listed per (subject, actor), ids unique across pairs, inserts idempotent.
pub async fn consents(store: &dyn ConsentStore) {
    let alice = "corp|alice";
    // A subject may hold `:`; it must not be confused with another pair.
    let team = "corp|team:alice";
    let grants = [
        grant("cg_a1", alice, "assistant"),
        grant("cg_a2", alice, "booking"),
        grant("cg_b1", "corp|bob", "assistant"),
        grant("cg_a3", alice, "assistant"),
        grant("cg_t1", team, "assistant"),
    ];
    for g in &grants {
        assert!(store.insert_if_absent(g.clone()).await.expect("insert"));
    }
    let [a1, a2, b1, a3, t1] = grants;
    assert_eq!(
        consents_of(store, alice, "assistant").await,
        [a1.clone(), a3]
    );
    assert_eq!(consents_of(store, alice, "booking").await, [a2]);
    assert_eq!(consents_of(store, "corp|bob", "assistant").await, [b1]);
    assert_eq!(consents_of(store, team, "assistant").await, [t1]);
    assert!(consents_of(store, "corp|carol", "assistant")
        .await
        .is_empty());
    assert!(consents_of(store, "corp|bob", "booking").await.is_empty());

    // Inserting again changes nothing, nor does another grant under a taken id.
    assert!(!store.insert_if_absent(a1.clone()).await.expect("insert"));
    let mut changed = a1.clone();
    changed.expires_at += 1;
    assert!(!store.insert_if_absent(changed).await.expect("insert"));
    assert!(!store
        .insert_if_absent(grant("cg_a1", "corp|bob", "booking"))
        .await
        .expect("insert"));
    assert_eq!(
        consents_of(store, alice, "assistant").await.first(),
        Some(&a1)
    );
    assert_eq!(consents_of(store, alice, "assistant").await.len(), 2);
    assert!(consents_of(store, "corp|bob", "booking").await.is_empty());
}
