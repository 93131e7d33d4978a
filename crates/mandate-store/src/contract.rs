//! The contract every storage backend meets (STYLE.md guideline 10): the in-memory backends run
//! it in this crate's unit tests, the Redis backends against a real `redis-server` (single and
//! cluster) in mandate-server's `redis_store` tests. A backend that passes can replace another.
//!
//! Each suite uses its own keys and ids, so the suites can share one empty store; a suite run
//! twice against the same store fails (ids are already taken), so give each run a fresh store.

use std::future::Future;
use std::sync::Arc;

use mandate_chain::{
    Authority, ChainId, ChainPage, ChainStart, ConsentGrant, ConsentStore, Evidence, EvidenceKind,
    HopId, HopRecord, Ledger, Policy, PolicyRow, PolicyStore, UpstreamGrant,
};
use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, ScopeSet, SecretHash, Subject,
};
use mandate_token::{Algorithm, SigningAlgorithm, SigningKey, UnverifiedJws};

use crate::{
    AuditEvent, AuditFilter, AuditLog, Client, ClientRegistry, RateDecision, RateLimiter,
    ReplayCache, UpstreamId,
};

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
        jkt: None,
        request: None,
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

    ledger_index(ledger).await;
}

/// The ledger's index of chains by start time (their earliest root's `issued_at`): newest first,
/// ties by chain id descending, paged exactly by position, bounded by `since`/`until`; children
/// neither add a chain nor move it, a later root leaves it, an earlier root moves it back.
/// Uses instants around 1.9e9 s, apart from the other suites' chains.
pub async fn ledger_index(ledger: &dyn Ledger) {
    const T0: i64 = 1_900_000_000;
    let upstream = (EvidenceKind::UpstreamAudience, "assistant");
    let at = |mut record: HopRecord, issued_at: i64| {
        record.issued_at = issued_at;
        record.expires_at = issued_at + 300;
        record
    };
    let hand_off = |parent: &str| (EvidenceKind::HandOff, parent.to_owned());
    for record in [
        at(hop("hop_i_a", "chn_idx_a", None, upstream), T0),
        at(hop("hop_i_b", "chn_idx_b", None, upstream), T0 + 10),
        at(hop("hop_i_c", "chn_idx_c", None, upstream), T0 + 10),
        at(hop("hop_i_d", "chn_idx_d", None, upstream), T0 + 20),
        // A child, much later, does not move its chain.
        at(
            hop(
                "hop_i_a2",
                "chn_idx_a",
                Some("hop_i_a"),
                (EvidenceKind::HandOff, &hand_off("hop_i_a").1),
            ),
            T0 + 30,
        ),
        // A second, later root of a chain leaves it where it started.
        at(hop("hop_i_d2", "chn_idx_d", None, upstream), T0 + 25),
        // A chain whose first recorded root is not its earliest moves back to the earliest.
        at(hop("hop_i_f", "chn_idx_f", None, upstream), T0 + 40),
        at(hop("hop_i_f2", "chn_idx_f", None, upstream), T0 + 5),
        // A child alone does not start a chain.
        at(
            hop(
                "hop_i_g",
                "chn_idx_g",
                Some("hop_i_x"),
                (EvidenceKind::HandOff, "hop_i_x"),
            ),
            T0 + 50,
        ),
    ] {
        ledger.record(&record).await.expect("record indexed hop");
    }
    let page =
        |since: Option<i64>, until: Option<i64>, after: Option<(i64, &str)>, limit| ChainPage {
            since,
            until,
            after: after.map(|(started_at, id)| ChainStart {
                started_at,
                chain_id: ChainId(id.into()),
            }),
            limit,
        };
    let listed = |page: ChainPage| async move {
        ledger
            .chains_by_start(&page)
            .await
            .expect("chains by start")
            .into_iter()
            .map(|s| (s.started_at - T0, s.chain_id.0))
            .collect::<Vec<_>>()
    };
    let all = |ids: &[(i64, &str)]| {
        ids.iter()
            .map(|(t, id)| (*t, (*id).to_owned()))
            .collect::<Vec<_>>()
    };
    let window = (Some(T0), Some(T0 + 100));
    assert_eq!(
        listed(page(window.0, window.1, None, 100)).await,
        all(&[
            (20, "chn_idx_d"),
            (10, "chn_idx_c"),
            (10, "chn_idx_b"),
            (5, "chn_idx_f"),
            (0, "chn_idx_a"),
        ])
    );
    // Pages of two, each after the last of the previous one: nothing twice, nothing missed,
    // also across a tie.
    assert_eq!(
        listed(page(window.0, window.1, None, 2)).await,
        all(&[(20, "chn_idx_d"), (10, "chn_idx_c")])
    );
    assert_eq!(
        listed(page(window.0, window.1, Some((T0 + 10, "chn_idx_c")), 2)).await,
        all(&[(10, "chn_idx_b"), (5, "chn_idx_f")])
    );
    assert_eq!(
        listed(page(window.0, window.1, Some((T0 + 5, "chn_idx_f")), 2)).await,
        all(&[(0, "chn_idx_a")])
    );
    assert!(listed(page(window.0, window.1, Some((T0, "chn_idx_a")), 2))
        .await
        .is_empty());
    // Bounds are inclusive and on the start time.
    assert_eq!(
        listed(page(Some(T0 + 10), window.1, None, 100)).await,
        all(&[(20, "chn_idx_d"), (10, "chn_idx_c"), (10, "chn_idx_b")])
    );
    assert_eq!(
        listed(page(window.0, Some(T0 + 10), None, 100)).await,
        all(&[
            (10, "chn_idx_c"),
            (10, "chn_idx_b"),
            (5, "chn_idx_f"),
            (0, "chn_idx_a"),
        ])
    );
    assert_eq!(
        listed(page(
            Some(T0 + 10),
            Some(T0 + 10),
            Some((T0 + 10, "chn_idx_c")),
            100
        ))
        .await,
        all(&[(10, "chn_idx_b")])
    );
    assert!(listed(page(Some(T0 + 21), Some(T0 + 100), None, 100))
        .await
        .is_empty());
    assert!(listed(page(window.0, window.1, None, 0)).await.is_empty());
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

    // Released after a failed operation: the retry is a first use; other keys stay held.
    cache.release("contract:c1:j1").await.expect("release");
    assert!(first("contract:c1:j1", now + 600)
        .await
        .expect("after release"));
    assert!(!first("contract:c2:j1", now + 600)
        .await
        .expect("still held"));
    cache
        .release("contract:never-used")
        .await
        .expect("release of nothing");
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

    // Listed all, by subject, by actor or by both, ordered by id.
    let listed = |subject: Option<&'static str>, actor: Option<&'static str>| async move {
        let subject = subject.map(|s| Subject::parse(s).expect("subject"));
        let actor = actor.map(|a| ClientId::parse(a).expect("client id"));
        store
            .list(subject.as_ref(), actor.as_ref())
            .await
            .expect("list")
            .into_iter()
            .map(|g| g.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(None, None).await,
        ["cg_a1", "cg_a2", "cg_a3", "cg_b1", "cg_t1"]
    );
    assert_eq!(listed(Some(alice), None).await, ["cg_a1", "cg_a2", "cg_a3"]);
    assert_eq!(
        listed(None, Some("assistant")).await,
        ["cg_a1", "cg_a3", "cg_b1", "cg_t1"]
    );
    assert_eq!(
        listed(Some(alice), Some("assistant")).await,
        ["cg_a1", "cg_a3"]
    );
    assert_eq!(listed(Some(team), None).await, ["cg_t1"]);
    assert!(listed(Some("corp|carol"), None).await.is_empty());
    assert!(listed(None, Some("nobody")).await.is_empty());

    // Found by id, exactly as inserted.
    let b1 = grant("cg_b1", "corp|bob", "assistant");
    assert_eq!(store.consent("cg_b1").await.expect("get"), Some(b1));
    assert_eq!(
        store.consent("cg_t1").await.expect("get"),
        Some(grant("cg_t1", team, "assistant"))
    );
    assert_eq!(store.consent("cg_none").await.expect("get"), None);

    // Removed by id: gone from every view, the others untouched; a second removal, or one of an
    // unknown id, removes nothing.
    assert!(store.remove("cg_b1").await.expect("remove"));
    assert_eq!(store.consent("cg_b1").await.expect("get"), None);
    assert!(consents_of(store, "corp|bob", "assistant").await.is_empty());
    assert_eq!(
        listed(None, None).await,
        ["cg_a1", "cg_a2", "cg_a3", "cg_t1"]
    );
    assert!(!store.remove("cg_b1").await.expect("remove again"));
    assert!(!store.remove("cg_none").await.expect("remove unknown"));
    assert_eq!(consents_of(store, alice, "assistant").await.len(), 2);
}

/// An active client of `kind` with a secret (unless it authenticates by `private_key_jwt`), one
/// owner and nothing optional set: the fixture the contract registers, for other tests too.
pub fn client(id: &str, kind: ClientKind, auth_method: AuthMethod) -> Client {
    Client {
        dpop: Default::default(),
        id: ClientId::parse(id).expect("client id"),
        kind,
        owners: vec![format!("{id}-team@example.com")],
        description: format!("the {id} contract client"),
        state: ClientState::Active,
        expires_at: None,
        auth_method,
        secret_hash: (auth_method != AuthMethod::PrivateKeyJwt)
            .then(|| SecretHash::of(&format!("secret of {id}"))),
        keys: None,
        jwks: None,
        upstream_ids: vec![],
        audiences: vec![],
        previous_secret: None,
        secret_rotated_at: None,
        created_at: None,
        created_by: None,
        updated_at: None,
        updated_by: None,
        revision: 0,
    }
}

async fn client_ids(registry: &dyn ClientRegistry) -> Vec<String> {
    registry
        .clients()
        .await
        .expect("clients")
        .iter()
        .map(|c| c.id.as_str().to_owned())
        .collect()
}

async fn stored(registry: &dyn ClientRegistry, id: &str) -> Option<crate::StoredClient> {
    registry
        .client(&ClientId::parse(id).expect("client id"))
        .await
        .expect("client")
        .map(|c| c.to_stored())
}

/// The client registry: clients found by id exactly as registered (a `private_key_jwt` client's
/// keys too, rebuilt from its JWKS), listed by id, and never replaced by a second registration
/// of the same id.
pub async fn clients(registry: &dyn ClientRegistry) {
    let signing = SigningKey::generate(SigningAlgorithm::Es256).expect("signing key");
    let jwks = serde_json::json!({ "keys": [signing.public_key().jwk()] });

    let mut agent = client(
        "contract-agent",
        ClientKind::Agent,
        AuthMethod::PrivateKeyJwt,
    );
    agent.keys = Some(
        mandate_token::VerifyingKeySet::from_jwks(&jwks, &Algorithm::ALL).expect("client keys"),
    );
    agent.jwks = Some(jwks);
    agent.expires_at = Some(
        chrono::DateTime::parse_from_rfc3339("2030-06-30T12:00:00Z")
            .expect("instant")
            .into(),
    );
    agent.owners.push("alice@example.com".into());
    agent.upstream_ids = vec![UpstreamId {
        issuer: "https://corp.example.com".into(),
        client_id: "0oa1agent".into(),
    }];
    let mut api = client(
        "contract-api",
        ClientKind::ResourceServer,
        AuthMethod::ClientSecretBasic,
    );
    api.audiences = vec![
        Audience::parse("https://calendar.example.com").expect("audience"),
        Audience::parse("https://mail.example.com").expect("audience"),
    ];
    let mut staged = client(
        "contract-b.staged_1",
        ClientKind::Agent,
        AuthMethod::ClientSecretPost,
    );
    staged.state = ClientState::Staged;

    let expected = [agent.to_stored(), api.to_stored(), staged.to_stored()];
    for c in [agent, api, staged] {
        assert!(registry.insert_if_absent(c).await.expect("insert"));
    }

    // Found by id exactly as registered.
    for c in &expected {
        assert_eq!(stored(registry, c.id.as_str()).await.as_ref(), Some(c));
    }
    assert_eq!(stored(registry, "contract-unknown").await, None);

    // Listed by id.
    assert_eq!(
        client_ids(registry).await,
        ["contract-agent", "contract-api", "contract-b.staged_1"]
    );

    // An audience is owned when a resource server lists it; an agent's id is not an audience.
    assert_owned(
        registry,
        &[
            ("https://calendar.example.com", true),
            ("https://mail.example.com", true),
            ("https://other.example.com", false),
            ("agent:contract-agent", false),
        ],
        "as registered",
    )
    .await;

    // A second registration of a taken id changes nothing.
    let mut again = client(
        "contract-api",
        ClientKind::Agent,
        AuthMethod::ClientSecretPost,
    );
    again.description = "an impostor".into();
    assert!(!registry.insert_if_absent(again).await.expect("insert"));
    assert_eq!(
        stored(registry, "contract-api").await.as_ref(),
        Some(&expected[1])
    );
    assert_eq!(client_ids(registry).await.len(), 3);

    // The agent's keys came back usable: they verify what its private key signs, and a
    // secret client has none.
    let agent = registry
        .client(&ClientId::parse("contract-agent").expect("client id"))
        .await
        .expect("client")
        .expect("the agent is registered");
    let keys = agent.keys.as_ref().expect("the agent's keys");
    assert_eq!(keys.len(), 1);
    let assertion = signing
        .sign("JWT", &serde_json::json!({ "sub": "contract-agent" }))
        .expect("sign");
    UnverifiedJws::parse(&assertion)
        .expect("parse")
        .verify(keys, &Algorithm::ALL)
        .expect("the stored keys verify the agent's signature");
    let other = SigningKey::generate(SigningAlgorithm::Es256).expect("signing key");
    let forged = other
        .sign("JWT", &serde_json::json!({ "sub": "contract-agent" }))
        .expect("sign");
    assert!(UnverifiedJws::parse(&forged)
        .expect("parse")
        .verify(keys, &Algorithm::ALL)
        .is_err());
    let api = registry
        .client(&ClientId::parse("contract-api").expect("client id"))
        .await
        .expect("client")
        .expect("the API is registered");
    assert!(api.keys.is_none() && api.jwks.is_none());
    assert!(api.may_authenticate(chrono::Utc::now()));

    client_changes(registry).await;
}

/// Checks [`ClientRegistry::audience_owned`] for each (audience, owned) pair, and that
/// [`ClientRegistry::audience_owner`] names a resource server that owns it exactly then.
async fn assert_owned(registry: &dyn ClientRegistry, cases: &[(&str, bool)], when: &str) {
    for (audience, owned) in cases {
        let audience = Audience::parse(audience).expect("audience");
        assert_eq!(
            registry
                .audience_owned(&audience)
                .await
                .expect("audience_owned"),
            *owned,
            "{audience} {when}"
        );
        let owner = registry
            .audience_owner(&audience)
            .await
            .expect("audience_owner");
        assert_eq!(owner.is_some(), *owned, "owner of {audience} {when}");
        if let Some(owner) = owner {
            assert!(owner.owns(&audience), "{} owns {audience} {when}", owner.id);
        }
    }
}

async fn current(registry: &dyn ClientRegistry, id: &str) -> crate::StoredClient {
    stored(registry, id)
        .await
        .expect("the client is registered")
}

/// Changes to registered clients: compare-and-set on the revision, so that of two writers who
/// read the same revision only one writes; every lifecycle field round-trips.
async fn client_changes(registry: &dyn ClientRegistry) {
    use crate::ReplaceOutcome;
    let read = current(registry, "contract-api").await;
    assert_eq!(read.revision, 0);

    let mut changed = read.clone();
    changed.description = "changed by an admin".into();
    changed.owners = vec!["new-team@example.com".into()];
    changed.audiences = vec![
        Audience::parse("https://calendar.example.com").expect("audience"),
        Audience::parse("https://tasks.example.com").expect("audience"),
    ];
    assert_eq!(
        registry
            .replace(Client::from_stored(changed.clone()).expect("client"))
            .await
            .expect("replace"),
        ReplaceOutcome::Replaced { revision: 1 }
    );
    changed.revision = 1;
    assert_eq!(current(registry, "contract-api").await, changed);

    // Ownership follows the resource server's audiences as they are now.
    assert_owned(
        registry,
        &[
            ("https://calendar.example.com", true),
            ("https://tasks.example.com", true),
            ("https://mail.example.com", false),
        ],
        "after the replace",
    )
    .await;

    // A writer who read revision 0 (or names one never stored) writes nothing.
    for revision in [0, 2, u64::MAX - 1] {
        let mut late = read.clone();
        late.description = "a lost update".into();
        late.revision = revision;
        assert_eq!(
            registry
                .replace(Client::from_stored(late).expect("client"))
                .await
                .expect("replace"),
            ReplaceOutcome::Stale,
            "replace over revision {revision}"
        );
    }
    assert_eq!(current(registry, "contract-api").await, changed);

    // An unknown id is not created by a replace.
    let ghost = client(
        "contract-ghost",
        ClientKind::Agent,
        AuthMethod::ClientSecretBasic,
    );
    assert_eq!(
        registry.replace(ghost).await.expect("replace"),
        ReplaceOutcome::Missing
    );
    assert_eq!(stored(registry, "contract-ghost").await, None);
    assert_eq!(client_ids(registry).await.len(), 3);

    // Every lifecycle field is kept.
    let instant = |s: &str| -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339(s)
            .expect("instant")
            .into()
    };
    let mut rotated = changed.clone();
    rotated.state = ClientState::Suspended;
    rotated.secret_hash = Some(SecretHash::of("the new secret"));
    rotated.previous_secret = Some(crate::PreviousSecret {
        hash: SecretHash::of("secret of contract-api"),
        valid_until: instant("2030-01-01T01:00:00Z"),
    });
    rotated.secret_rotated_at = Some(instant("2030-01-01T00:00:00Z"));
    rotated.created_at = Some(instant("2029-12-01T00:00:00Z"));
    rotated.created_by = Some("config".into());
    rotated.updated_at = Some(instant("2030-01-01T00:00:00Z"));
    rotated.updated_by = Some("ops-admin".into());
    assert_eq!(
        registry
            .replace(Client::from_stored(rotated.clone()).expect("client"))
            .await
            .expect("replace"),
        ReplaceOutcome::Replaced { revision: 2 }
    );
    rotated.revision = 2;
    assert_eq!(current(registry, "contract-api").await, rotated);

    // Two writers of the same revision at once: exactly one wins, and its change is stored.
    let writer = |description: &str| {
        let mut next = rotated.clone();
        next.description = description.into();
        Client::from_stored(next).expect("client")
    };
    let (a, b) = tokio::join!(
        registry.replace(writer("writer a")),
        registry.replace(writer("writer b"))
    );
    let (a, b) = (a.expect("replace a"), b.expect("replace b"));
    let winner = match (a, b) {
        (ReplaceOutcome::Replaced { revision: 3 }, ReplaceOutcome::Stale) => "writer a",
        (ReplaceOutcome::Stale, ReplaceOutcome::Replaced { revision: 3 }) => "writer b",
        other => panic!("two writers of one revision: {other:?}"),
    };
    let stored = current(registry, "contract-api").await;
    assert_eq!((stored.description.as_str(), stored.revision), (winner, 3));
}

fn row(actor: &str, audience: &str, scopes: &str, max_depth: Option<u32>) -> PolicyRow {
    PolicyRow {
        actor: ClientId::parse(actor).expect("client id"),
        audience: Audience::parse(audience).expect("audience"),
        scopes: ScopeSet::parse(scopes).expect("scopes"),
        max_depth,
    }
}

/// The policy store: empty at version 0; seeded once at version 1, after which seeding changes
/// nothing (even when an admin emptied the policy); replaced only at the current version, each
/// replacement adding one; a stale version is answered with the current one and changes nothing.
pub async fn policies(store: &dyn PolicyStore) {
    let calendar = "https://calendar.example.com";
    let seeded = vec![
        row("assistant", calendar, "calendar.read", Some(3)),
        row("assistant", "agent:booking", "calendar.read", None),
        // Merged with the first row when read.
        row("assistant", calendar, "calendar.write", Some(2)),
    ];
    let changed = vec![row(
        "booking",
        calendar,
        "calendar.read calendar.write",
        None,
    )];

    assert_eq!(store.policy().await.expect("policy"), (Arc::default(), 0));

    assert!(store.seed_if_empty(seeded.clone()).await.expect("seed"));
    let (policy, version) = store.policy().await.expect("policy");
    assert_eq!(version, 1);
    assert_eq!(*policy, Policy::new(seeded.clone()));
    assert_eq!(
        policy.rows().len(),
        2,
        "rows of one (actor, audience) merge"
    );

    // Seeding again keeps what the store holds.
    assert!(!store.seed_if_empty(changed.clone()).await.expect("seed"));
    assert_eq!(
        store.policy().await.expect("policy"),
        (Arc::new(Policy::new(seeded.clone())), 1)
    );

    // Replacing at the current version.
    assert_eq!(
        store.replace(changed.clone(), 1).await.expect("replace"),
        Ok(2)
    );
    assert_eq!(
        store.policy().await.expect("policy"),
        (Arc::new(Policy::new(changed.clone())), 2)
    );

    // A stale or future version: the current one, nothing changed.
    for stale in [0, 1, 3, u64::MAX] {
        assert_eq!(
            store.replace(seeded.clone(), stale).await.expect("replace"),
            Err(2),
            "replace at version {stale}"
        );
    }
    assert_eq!(
        store.policy().await.expect("policy"),
        (Arc::new(Policy::new(changed.clone())), 2)
    );

    // An emptied policy is still the store's: seeding does not refill it.
    assert_eq!(store.replace(vec![], 2).await.expect("replace"), Ok(3));
    assert!(!store.seed_if_empty(seeded).await.expect("seed"));
    assert_eq!(store.policy().await.expect("policy"), (Arc::default(), 3));
}

/// The audit stream: events come back newest first; a filter matches `action` and `actor`
/// exactly (no prefix), and the limit counts matching events. Expects an empty stream.
pub async fn audit(log: &dyn AuditLog) {
    let event = |at: i64, actor: &str, action: &str| AuditEvent {
        at,
        actor: actor.into(),
        action: action.into(),
        target: format!("target-{at}"),
        detail: format!("detail\nwith a line break {at}"),
    };
    assert!(
        log.recent(&AuditFilter::default(), 10)
            .await
            .expect("read")
            .is_empty(),
        "the stream starts empty"
    );
    for n in 0..6 {
        if n % 2 == 0 {
            log.record(event(n, "client:assistant", "exchange.refused"))
                .await;
        } else {
            log.record(event(n, "ops", "revoke.hop")).await;
        }
    }
    let all = log.recent(&AuditFilter::default(), 10).await.expect("read");
    assert_eq!(
        all.iter().map(|e| e.at).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1, 0],
        "newest first"
    );
    assert_eq!(all[0], event(5, "ops", "revoke.hop"), "kept whole");
    let newest_two = log.recent(&AuditFilter::default(), 2).await.expect("read");
    assert_eq!(newest_two.iter().map(|e| e.at).collect::<Vec<_>>(), [5, 4]);
    let refused = AuditFilter {
        action: Some("exchange.refused".into()),
        actor: None,
    };
    let found = log.recent(&refused, 2).await.expect("read");
    assert_eq!(
        found.iter().map(|e| e.at).collect::<Vec<_>>(),
        [4, 2],
        "the limit counts matches"
    );
    let prefix = AuditFilter {
        action: Some("exchange".into()),
        actor: None,
    };
    assert!(log.recent(&prefix, 10).await.expect("read").is_empty());
    let by_ops = AuditFilter {
        action: Some("revoke.hop".into()),
        actor: Some("ops".into()),
    };
    assert_eq!(log.recent(&by_ops, 10).await.expect("read").len(), 3);
    let nobody = AuditFilter {
        action: Some("revoke.hop".into()),
        actor: Some("client:assistant".into()),
    };
    assert!(log.recent(&nobody, 10).await.expect("read").is_empty());
}

/// The Shared Signals streams and their queues: streams are stored whole and listed by id; a
/// queue keeps arrival order, offers without removing, forgets only what is acknowledged (each
/// `jti` once), drops the oldest beyond its cap and counts them, and goes with its stream.
/// Expects no stream named `ssf_contract_a` or `ssf_contract_b`.
pub async fn ssf_streams(store: &dyn crate::SsfStreamStore) {
    use crate::{Delivery, QueueDepth, QueuedSet, SsfStream, StreamStatus};
    let stream = |id: &str| SsfStream {
        stream_id: id.into(),
        owner: ClientId::parse("calendar").expect("client id"),
        aud: vec!["https://calendar.example.com".into()],
        events_requested: vec![
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked".into(),
        ],
        delivery: Delivery::Poll { endpoint_url: None },
        status: StreamStatus::Enabled,
        reason: None,
        description: None,
        created_at: 1_800_000_000,
        removed_subjects: vec![],
    };
    let set = |n: u32| QueuedSet {
        jti: format!("set-{n}"),
        set: format!("header.payload-{n}.signature"),
    };
    let (a, b) = ("ssf_contract_a", "ssf_contract_b");
    assert_eq!(store.get(a).await.expect("get"), None);
    store.put(&stream(b)).await.expect("put");
    store.put(&stream(a)).await.expect("put");
    let ids: Vec<String> = store
        .all()
        .await
        .expect("all")
        .into_iter()
        .map(|s| s.stream_id)
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ordered by id: {ids:?}"
    );
    assert!(ids.contains(&a.to_owned()) && ids.contains(&b.to_owned()));
    let mut paused = stream(a);
    paused.status = StreamStatus::Paused;
    paused.removed_subjects = vec!["corp|alice".into()];
    paused.delivery = Delivery::Push {
        endpoint_url: "https://calendar.example.com/ssf".into(),
        authorization_header: Some("Bearer x".into()),
    };
    store.put(&paused).await.expect("replace");
    assert_eq!(store.get(a).await.expect("get"), Some(paused));

    store
        .enqueue(a, &[set(1), set(2), set(3)], 10)
        .await
        .expect("enqueue");
    store
        .enqueue(a, &[set(2), set(4)], 10)
        .await
        .expect("enqueue");
    let jtis = |sets: Vec<QueuedSet>| sets.into_iter().map(|s| s.jti).collect::<Vec<_>>();
    assert_eq!(
        jtis(store.pending(a, 10).await.expect("pending")),
        ["set-1", "set-2", "set-3", "set-4"],
        "arrival order, a jti queued once"
    );
    assert_eq!(
        store.pending(a, 2).await.expect("pending"),
        vec![set(1), set(2)],
        "kept whole"
    );
    assert_eq!(
        jtis(store.pending(a, 2).await.expect("pending")),
        ["set-1", "set-2"],
        "offering does not remove"
    );
    assert!(
        store.pending(b, 10).await.expect("pending").is_empty(),
        "queues are per stream"
    );
    assert_eq!(
        store
            .ack(a, &["set-2".into(), "set-9".into()])
            .await
            .expect("ack"),
        1
    );
    assert_eq!(
        store.ack(a, &["set-2".into()]).await.expect("ack"),
        0,
        "acknowledged once"
    );
    assert_eq!(
        jtis(store.pending(a, 10).await.expect("pending")),
        ["set-1", "set-3", "set-4"]
    );

    store
        .enqueue(a, &[set(5), set(6)], 4)
        .await
        .expect("enqueue");
    assert_eq!(
        jtis(store.pending(a, 10).await.expect("pending")),
        ["set-3", "set-4", "set-5", "set-6"]
    );
    assert_eq!(
        store.depth(a).await.expect("depth"),
        QueueDepth {
            pending: 4,
            dropped: 1
        }
    );

    assert!(store.delete(a).await.expect("delete"));
    assert!(!store.delete(a).await.expect("delete"));
    assert_eq!(store.get(a).await.expect("get"), None);
    assert_eq!(store.depth(a).await.expect("depth"), QueueDepth::default());
    assert!(
        store.pending(a, 10).await.expect("pending").is_empty(),
        "the queue went with it"
    );
    assert!(store.delete(b).await.expect("delete"));
}

/// The participation contract: a report lives until its expiry, the same owner, kind and
/// instance replace their report, others stand beside it. Expects no participant of owner
/// `participation-contract`.
pub async fn participation(store: &dyn crate::ParticipationStore) {
    use crate::Participant;
    let report = |instance: &str, mode: &str, seen: i64| Participant {
        owner: "participation-contract".into(),
        kind: "sdk".into(),
        instance: instance.into(),
        mode: mode.into(),
        audiences: vec!["https://calendar.example.com".into()],
        node: "host-1".into(),
        version: "0.1.0".into(),
        lag_ms: Some(12),
        count: 1,
        seen_at_ms: seen,
    };
    let ours = |all: Vec<Participant>| -> Vec<Participant> {
        all.into_iter()
            .filter(|p| p.owner == "participation-contract")
            .collect()
    };
    let now = 1_000_000;
    store
        .report(&report("a", "followed", now), now + 1_000)
        .await
        .expect("report a");
    store
        .report(&report("b", "none", now), now + 5_000)
        .await
        .expect("report b");
    let live = ours(store.live(now).await.expect("live"));
    assert_eq!(
        live,
        vec![report("a", "followed", now), report("b", "none", now)]
    );
    // A new report of `a` replaces the old one.
    store
        .report(&report("a", "feed", now + 500), now + 2_000)
        .await
        .expect("report a again");
    let live = ours(store.live(now + 600).await.expect("live"));
    assert_eq!(
        live,
        vec![report("a", "feed", now + 500), report("b", "none", now)]
    );
    // Past its expiry a report is gone, and stays gone.
    let live = ours(store.live(now + 2_000).await.expect("live"));
    assert_eq!(live, vec![report("b", "none", now)]);
    assert!(ours(store.live(now + 5_000).await.expect("live")).is_empty());
    assert!(ours(store.live(now).await.expect("live")).is_empty());
}

/// The last-use contract: each kind kept apart, a later time replaces an earlier one, an earlier
/// one never replaces a later. Expects no client named `last-use-contract`.
pub async fn last_use(store: &dyn crate::LastUseStore) {
    use crate::{LastUse, UseKind};
    let client = "last-use-contract";
    store
        .touch(client, UseKind::Authenticated, 2_000)
        .await
        .expect("touch");
    store
        .touch(client, UseKind::Exchange, 1_000)
        .await
        .expect("touch");
    store
        .touch(client, UseKind::Authenticated, 1_500)
        .await
        .expect("an earlier time");
    let all = store.all().await.expect("all");
    assert_eq!(
        all.get(client).copied(),
        Some(LastUse {
            authenticated_at_ms: Some(2_000),
            exchange_at_ms: Some(1_000),
        })
    );
    store
        .touch(client, UseKind::Exchange, 3_000)
        .await
        .expect("touch");
    assert_eq!(
        store
            .all()
            .await
            .expect("all")
            .get(client)
            .and_then(|u| u.exchange_at_ms),
        Some(3_000)
    );
}

/// The gate contract: one gate per audience, replaced by a later one, removed; a store once
/// written is never seeded again, even when every gate was removed. Expects a store never
/// written.
pub async fn gates(store: &dyn crate::GateStore) {
    use crate::{Gate, Requirement};
    let gate = |audience: &str, require: Requirement, dry_run: bool| Gate {
        audience: audience.into(),
        require,
        dry_run,
        set_by: "contract".into(),
        set_at_ms: 1_000,
    };
    let calendar = "https://calendar.example.com";
    let mail = "https://mail.example.com";
    assert_eq!(store.gate(calendar).await.expect("gate"), None);
    assert!(store
        .seed_if_never_written(&[gate(calendar, Requirement::Verifies, true)])
        .await
        .expect("seed"));
    assert_eq!(
        store.gate(calendar).await.expect("gate"),
        Some(gate(calendar, Requirement::Verifies, true))
    );
    assert!(
        !store
            .seed_if_never_written(&[gate(mail, Requirement::None, false)])
            .await
            .expect("seed again"),
        "a seeded store is not seeded again"
    );
    store
        .put(&gate(calendar, Requirement::FollowsRevocations, false))
        .await
        .expect("put");
    store
        .put(&gate(mail, Requirement::None, false))
        .await
        .expect("put");
    assert_eq!(
        store.gates().await.expect("gates"),
        vec![
            gate(calendar, Requirement::FollowsRevocations, false),
            gate(mail, Requirement::None, false)
        ]
    );
    assert!(store.remove(calendar).await.expect("remove"));
    assert!(!store.remove(calendar).await.expect("remove again"));
    assert!(store.remove(mail).await.expect("remove"));
    assert!(store.gates().await.expect("gates").is_empty());
    assert!(
        !store
            .seed_if_never_written(&[gate(mail, Requirement::None, false)])
            .await
            .expect("seed after removals"),
        "removing every gate is a change an operator made, not an empty store"
    );
    assert_eq!(store.gate("").await.expect("the empty audience"), None);
}

/// Seals until nothing is pending (a journal that seals on append has nothing pending).
async fn seal_all(journal: &dyn crate::Journal) {
    for _ in 0..100 {
        if journal.bounds().await.expect("bounds").pending == 0 {
            return;
        }
        journal.seal(2).await.expect("seal");
    }
    panic!("the journal never sealed what was appended");
}

/// The journal: one order without gaps, each entry linked to the one before, readable by pages
/// in that order; checkpoints only move forward; retention forgets the oldest entries first and
/// moves the base, so that what is kept still verifies from it. The journal must start empty.
pub async fn journal(journal: &dyn crate::Journal) {
    use crate::RecordKind;
    use mandate_journal::{Head, Verifier, GENESIS};

    let empty = journal.bounds().await.expect("bounds");
    assert_eq!(
        (empty.base.clone(), empty.head.clone()),
        (Head::default(), Head::default())
    );
    for n in 0..5_i64 {
        let kind = if n % 2 == 0 {
            RecordKind::Hop
        } else {
            RecordKind::Audit
        };
        journal
            .append(
                1_000 + n,
                kind,
                serde_json::json!({ "n": n, "text": "é\n\"" }),
            )
            .await
            .expect("append");
    }
    seal_all(journal).await;
    assert_eq!(
        journal.seal(10).await.expect("seal"),
        0,
        "nothing left to seal"
    );
    let bounds = journal.bounds().await.expect("bounds");
    assert_eq!(bounds.head.seq, 5);
    let all = journal.entries(0, 100).await.expect("entries");
    assert_eq!(
        all.iter()
            .map(|e| (e.place, e.entry.seq))
            .collect::<Vec<_>>(),
        [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)],
        "one order, without gaps"
    );
    let first = &all[0].entry;
    assert_eq!(first.prev, GENESIS);
    assert_eq!((first.kind.as_str(), first.time), ("hop", 1_000));
    assert_eq!(
        first.record,
        serde_json::json!({ "n": 0, "text": "é\n\"" }),
        "kept whole"
    );
    assert_eq!(all[1].entry.kind, "audit");
    assert_eq!(bounds.head, all[4].entry.head());
    let mut verifier = Verifier::new();
    all.iter().for_each(|e| verifier.feed(e.entry.clone()));
    let report = verifier.finish(Some(&bounds.head));
    assert!(report.is_clean(), "{:?}", report.findings);

    let page = journal.entries(2, 2).await.expect("page");
    assert_eq!(
        page.iter().map(|e| e.place).collect::<Vec<_>>(),
        [3, 4],
        "paged by place"
    );
    assert!(journal
        .entries(5, 10)
        .await
        .expect("past the end")
        .is_empty());

    // Checkpoints only move forward.
    let checkpoint = |seq: u64, hash: &str| mandate_journal::Checkpoint {
        seq,
        hash: hash.to_owned(),
        jwt: format!("jwt-{seq}"),
    };
    assert!(journal.latest_checkpoint().await.expect("latest").is_none());
    assert!(journal
        .add_checkpoint(&checkpoint(3, &all[2].entry.hash))
        .await
        .expect("add"));
    assert!(
        !journal
            .add_checkpoint(&checkpoint(3, "other"))
            .await
            .expect("add"),
        "same seq"
    );
    assert!(!journal
        .add_checkpoint(&checkpoint(2, &all[1].entry.hash))
        .await
        .expect("add"));
    assert!(journal
        .add_checkpoint(&checkpoint(5, &all[4].entry.hash))
        .await
        .expect("add"));
    assert_eq!(
        journal
            .checkpoints(0, 10)
            .await
            .expect("list")
            .iter()
            .map(|c| c.seq)
            .collect::<Vec<_>>(),
        [3, 5]
    );
    assert_eq!(journal.checkpoints(3, 10).await.expect("list").len(), 1);
    assert_eq!(
        journal.latest_checkpoint().await.expect("latest"),
        Some(checkpoint(5, &all[4].entry.hash))
    );

    // Retention: entries written before 1_002 go, at most `max` at a time; the base follows.
    assert_eq!(journal.forget_before(1_002, 1).await.expect("forget"), 1);
    assert_eq!(journal.forget_before(1_002, 10).await.expect("forget"), 1);
    assert_eq!(journal.forget_before(1_002, 10).await.expect("forget"), 0);
    let bounds = journal.bounds().await.expect("bounds");
    assert_eq!(bounds.base, all[1].entry.head());
    let kept = journal.entries(0, 100).await.expect("entries");
    assert_eq!(
        kept.iter().map(|e| e.entry.seq).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    let mut verifier = Verifier::starting_after(bounds.base.clone());
    kept.iter().for_each(|e| verifier.feed(e.entry.clone()));
    assert!(verifier.finish(Some(&bounds.head)).is_clean());

    // Sealing goes on from the head.
    journal
        .append(2_000, RecordKind::Audit, serde_json::json!({ "n": 5 }))
        .await
        .expect("append");
    seal_all(journal).await;
    let next = journal.entries(5, 10).await.expect("entries");
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].entry.seq, &next[0].entry.prev),
        (6, &all[4].entry.hash)
    );
    assert!(next[0].entry.hash_matches());
}
