//! Revocation propagation and per-verification cost, measured in one run on one machine.
//!
//! Starts a private Redis, a mandate on it, and N `Followed` verifiers; issues sibling tokens;
//! revokes them one by one through the admin API and measures the time from the revoke call's
//! return until every follower refuses the token. Then measures the cost of one verification in
//! each mode against a bare ES256 signature verification of the same token.
//!
//! ```sh
//! cargo bench -p mandate-verify --features redis --bench propagation -- [--followers N] [--revocations M] [--verifications K]
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_revocation::{FollowerConfig, TokenFacts, Verdict};
use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, claims_of, delegation_settings, exchange_form, id_token_claims, ClientAuth, KeyKind,
    TestKey, TestServer, ADMIN_OPS, CAL, CORP,
};
use mandate_token::{AccessTokenClaims, Algorithm, UnverifiedJws, VerifyingKeySet};
use mandate_verify::{Direct, Followed, Verifier};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn exchange(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    auth: &ClientAuth,
) -> String {
    let form = exchange_form(token, kind, audience, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = body_json(server.token(&pairs, auth).await.unwrap()).await;
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

fn facts(token: &str) -> TokenFacts {
    let claims: AccessTokenClaims = serde_json::from_value(claims_of(token)).unwrap();
    let mut agents: Vec<String> = claims
        .act
        .actors(16)
        .into_iter()
        .map(str::to_owned)
        .collect();
    agents.push(claims.client_id.clone());
    TokenFacts {
        hop: Some(claims.jti),
        ancestors: claims.ancestors,
        chain: Some(claims.chain_id),
        consents: vec![],
        agents,
        subject: Some(claims.sub),
        issued_at: claims.iat,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let followers = arg("--followers", 4);
    let revocations = arg("--revocations", 1000);
    let verifications = arg("--verifications", 20_000);

    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    settings.limits.token_requests_per_client_per_sec = 0;
    let server = TestServer::spawn(settings).await.unwrap();

    let config = FollowerConfig {
        staleness_bound: Duration::from_secs(3),
        block: Duration::from_millis(500),
    };
    let mut followed = Vec::new();
    for _ in 0..followers {
        followed.push(
            Followed::redis(&redis.url(), config, Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }

    // One hand-off, then `revocations` sibling calendar tokens from it.
    let assistant = ClientAuth::Basic("assistant".into(), "assistant-secret".into());
    let booking = ClientAuth::Basic("booking-tool".into(), "booking-secret".into());
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let handoff = exchange(
        &server,
        &id_token,
        "id_token",
        "agent:booking-tool",
        &assistant,
    )
    .await;
    let mut tokens = Vec::with_capacity(revocations);
    for _ in 0..revocations {
        tokens.push(exchange(&server, &handoff, "access_token", CAL, &booking).await);
    }
    // Wait until every follower is fresh.
    let probe = facts(&handoff);
    for f in &followed {
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.0.check(&probe).is_err() {
            assert!(Instant::now() < deadline, "follower never became fresh");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    let mut delays = Vec::with_capacity(revocations);
    for token in &tokens {
        let facts = facts(token);
        let jti = facts.hop.clone().unwrap();
        let response = server
            .http
            .post(server.admin_url(&format!("/admin/hops/{jti}/revoke")))
            .bearer_auth(ADMIN_OPS)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let returned = Instant::now();
        let deadline = returned + Duration::from_secs(5);
        let mut pending: Vec<&Followed> = followed.iter().collect();
        while !pending.is_empty() {
            pending.retain(|f| !matches!(f.0.check(&facts), Ok(Verdict::Revoked { .. })));
            assert!(Instant::now() < deadline, "revocation not seen within 5 s");
            if !pending.is_empty() {
                tokio::task::yield_now().await;
            }
        }
        delays.push(returned.elapsed());
    }
    delays.sort();
    println!("revocation propagation: {revocations} revocations, {followers} followers (time from the admin call's return until every follower refuses)");
    println!(
        "  p50 {:?}  p99 {:?}  max {:?}",
        percentile(&delays, 0.50),
        percentile(&delays, 0.99),
        delays[delays.len() - 1]
    );

    // Per-verification cost, against a bare ES256 verification of the same token.
    let jwks: serde_json::Value = server
        .http
        .get(server.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = VerifyingKeySet::from_jwks(&jwks, &[Algorithm::Es256]).unwrap();
    let (_, live) = {
        let handoff = exchange(
            &server,
            &corp
                .sign(None, &id_token_claims(CORP, "bob", "assistant"))
                .unwrap(),
            "id_token",
            "agent:booking-tool",
            &assistant,
        )
        .await;
        let app = exchange(&server, &handoff, "access_token", CAL, &booking).await;
        (handoff, app)
    };
    let bare = {
        let started = Instant::now();
        for _ in 0..verifications {
            let jws = UnverifiedJws::parse(&live).unwrap();
            let verified = jws.verify(&keys, &[Algorithm::Es256]).unwrap();
            std::hint::black_box(verified.claims::<AccessTokenClaims>().unwrap());
        }
        started.elapsed() / verifications as u32
    };
    let followed_verifier = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(followed[0].clone()))
        .build()
        .await
        .unwrap();
    let direct_verifier = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(Direct::redis(&redis.url()).await.unwrap()))
        .build()
        .await
        .unwrap();
    let measure = |verifier: Verifier, n: usize| {
        let live = live.clone();
        async move {
            let started = Instant::now();
            for _ in 0..n {
                std::hint::black_box(verifier.verify(&live).await.unwrap());
            }
            started.elapsed() / n as u32
        }
    };
    let followed_cost = measure(followed_verifier, verifications).await;
    let direct_n = (verifications / 10).max(100);
    let direct_cost = measure(direct_verifier, direct_n).await;
    let rate = |d: Duration| 1.0 / d.as_secs_f64();
    println!(
        "verification cost (one ES256 token, {verifications} verifications; Direct: {direct_n}):"
    );
    println!(
        "  bare ES256 verify + claims     {:>10.1?}/op  {:>8.0} /s",
        bare,
        rate(bare)
    );
    println!(
        "  Followed (in-process list)     {:>10.1?}/op  {:>8.0} /s  = {:.0}% of bare",
        followed_cost,
        rate(followed_cost),
        100.0 * rate(followed_cost) / rate(bare)
    );
    println!(
        "  Direct (one Redis round trip)  {:>10.1?}/op  {:>8.0} /s  = {:.0}% of bare",
        direct_cost,
        rate(direct_cost),
        100.0 * rate(direct_cost) / rate(bare)
    );
    for f in &followed {
        f.0.stop();
    }
    server.stop().await;
}
