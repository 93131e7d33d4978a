//! mandate-verify against a real mandate over HTTP (the test kit's in-process server): tokens it
//! issues verify, with static keys and by discovery; the delegation chain is readable; every
//! kind of forged, foreign, expired or mistyped token is refused; `Direct` revocation on a
//! private Redis follows the chain and fails closed; a running verifier picks up a key rotation;
//! and the actix-web extractor answers RFC 6750.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mandate_model::FixedClock;
use mandate_revocation::{
    MemoryRevocations, Revocation, RevocationKind, RevocationList, RevocationStore,
};
use mandate_server::BuildOptions;
use mandate_testkit::{
    alg_none, b64_json, claims_of, delegation_settings, id_token_claims, now, KeyKind, TestKey,
    TestServer, CAL, CORP, MAIL,
};
use mandate_token::{AccessTokenClaims, Act, Algorithm, SigningAlgorithm, SigningKey};
use mandate_verify::{
    Direct, ManualMonotonic, RevocationSource, VerifiedToken, Verifier, VerifyError,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// A delegation world on a real mandate.

fn id_token(corp: &TestKey) -> String {
    corp.sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap()
}

/// The assistant hands work to the booking tool (hop 1, audience `agent:booking-tool`), which
/// exchanges the hand-off for a calendar token (hop 2). Returns (hand-off, calendar token).
async fn handoff_chain(server: &TestServer, corp: &TestKey) -> (String, String) {
    let handoff = issue(
        server,
        &id_token(corp),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let calendar = issue(server, &handoff, "access_token", CAL, "booking-tool").await;
    (handoff, calendar)
}

async fn world() -> (TestKey, TestServer) {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    (corp, server)
}

async fn static_verifier(server: &TestServer, audience: &str) -> Verifier {
    Verifier::builder(server.issuer(), audience)
        .jwks(server.get_json("/jwks").await.unwrap())
        .build()
        .await
        .unwrap()
}

#[cfg(feature = "redis")]
async fn admin_revoke(server: &TestServer, path: &str) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(mandate_testkit::ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn jti(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Tokens mandate issues verify, and the chain reads back.

fn assert_booking_tool_calendar_token(token: &VerifiedToken, handoff: &str, calendar: &str) {
    assert_eq!(token.subject(), "corp|alice");
    assert_eq!(token.client_id(), "booking-tool");
    assert_eq!(token.audience(), CAL);
    assert_eq!(token.actors(), ["booking-tool", "assistant"]);
    assert_eq!(token.current_actor(), "booking-tool");
    assert_eq!(token.depth(), 2);
    assert_eq!(token.ancestors(), [jti(handoff)]);
    assert_eq!(
        token.chain_id(),
        claims_of(handoff)["chain_id"].as_str().unwrap()
    );
    assert_eq!(
        token.chain_id(),
        claims_of(calendar)["chain_id"].as_str().unwrap()
    );
    assert_eq!(token.jti(), jti(calendar));
    assert_eq!(
        token.expires_at(),
        claims_of(calendar)["exp"].as_i64().unwrap()
    );
    assert!(token.has_scope("calendar.read"));
    token.require_scope("calendar.read").unwrap();
    assert_eq!(
        token.require_scope("mail.read").unwrap_err(),
        VerifyError::InsufficientScope("mail.read".into())
    );
    assert_eq!(token.claims().act.sub, "booking-tool");
}

#[tokio::test]
async fn mandate_tokens_verify_with_static_keys_and_by_discovery() {
    let (corp, server) = world().await;
    let (handoff, calendar) = handoff_chain(&server, &corp).await;

    let by_static_keys = static_verifier(&server, CAL).await;
    let token = by_static_keys.verify(&calendar).await.unwrap();
    assert_booking_tool_calendar_token(&token, &handoff, &calendar);

    let by_discovery = Verifier::builder(server.issuer(), CAL)
        .discover()
        .build()
        .await
        .unwrap();
    let token = by_discovery.verify(&calendar).await.unwrap();
    assert_booking_tool_calendar_token(&token, &handoff, &calendar);
    let shown = format!("{by_discovery:?}");
    assert!(shown.contains("/jwks") && shown.contains(CAL), "{shown}");

    // A root hop: one actor, no ancestors.
    let direct = issue(&server, &id_token(&corp), "id_token", MAIL, "assistant").await;
    let mail = static_verifier(&server, MAIL).await;
    let token = mail.verify(&direct).await.unwrap();
    assert_eq!(token.actors(), ["assistant"]);
    assert_eq!(token.depth(), 1);
    assert!(token.ancestors().is_empty());
    assert_eq!(token.scopes().to_string(), "mail.read");

    // The verifier is cheap to clone and usable from many tasks at once.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let verifier = by_discovery.clone();
            let calendar = calendar.clone();
            tokio::spawn(async move { verifier.verify(&calendar).await.map(|t| t.depth()) })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), Ok(2));
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refusals.

const TEST_ISSUER: &str = "https://mandate.test";

/// Claims shaped like mandate's, from `TEST_ISSUER` for `CAL`.
fn crafted_claims() -> Value {
    json!({
        "iss": TEST_ISSUER,
        "sub": "corp|alice",
        "aud": CAL,
        "client_id": "booking-tool",
        "scope": "calendar.read",
        "iat": now(),
        "nbf": now(),
        "exp": now() + 300,
        "jti": "hop_crafted",
        "act": {"sub": "booking-tool", "act": {"sub": "assistant"}},
        "chain_id": "chn_crafted",
        "ancestors": ["hop_parent"],
    })
}

async fn crafted_verifier(key: &TestKey) -> Verifier {
    Verifier::builder(TEST_ISSUER, CAL)
        .jwks(key.jwks())
        .build()
        .await
        .unwrap()
}

/// A compact JWS with exactly `header` and an HS256 signature keyed with `secret`.
fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    use josekit::jws::{JwsSigner, HS256};
    let input = format!("{}.{}", b64_json(header), b64_json(claims));
    let signature = HS256
        .signer_from_bytes(secret)
        .unwrap()
        .sign(input.as_bytes())
        .unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[tokio::test]
async fn forged_mistyped_and_misdirected_tokens_are_refused() {
    let key = TestKey::generate(KeyKind::Es256, Some("test-1")).unwrap();
    let verifier = crafted_verifier(&key).await;
    let at = Some("at+jwt");

    // The control: a well-formed token signed by the published key verifies.
    let good = key.sign(at, &crafted_claims()).unwrap();
    let token = verifier.verify(&good).await.unwrap();
    assert_eq!(token.ancestors(), ["hop_parent"]);
    let also = key
        .sign(Some("application/at+jwt"), &crafted_claims())
        .unwrap();
    verifier.verify(&also).await.unwrap();

    // typ: JWT, absent, another explicit type.
    for typ in [Some("JWT"), None, Some("oauth-id-jag+jwt"), Some("AT+JWT")] {
        let token = key.sign(typ, &crafted_claims()).unwrap();
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            VerifyError::WrongType,
            "{typ:?}"
        );
    }

    // alg: none (with and without typ), HS256 keyed with the public key (the key-confusion
    // attack: the HMAC secret is the verifier's own public key).
    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "at+jwt"})),
        b64_json(&crafted_claims())
    );
    assert_eq!(
        verifier.verify(&none).await.unwrap_err(),
        VerifyError::Algorithm
    );
    assert!(verifier.verify(&alg_none(&crafted_claims())).await.is_err());
    assert!(verifier
        .verify(&key.hs256_confused(&crafted_claims()).unwrap())
        .await
        .is_err());
    let pair =
        josekit::jwk::alg::ec::EcKeyPair::generate(josekit::jwk::alg::ec::EcCurve::P256).unwrap();
    let mut public = josekit::jwk::KeyPair::to_jwk_public_key(&pair);
    public.set_key_id("confused");
    let confused_verifier = Verifier::builder(TEST_ISSUER, CAL)
        .jwks(json!({"keys": [serde_json::to_value(public.as_ref()).unwrap()]}))
        .build()
        .await
        .unwrap();
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "confused"});
    for secret in [
        josekit::jwk::KeyPair::to_pem_public_key(&pair),
        josekit::jwk::KeyPair::to_der_public_key(&pair),
        serde_json::to_vec(public.as_ref()).unwrap(),
    ] {
        let token = hs256(&header, &crafted_claims(), &secret);
        assert_eq!(
            confused_verifier.verify(&token).await.unwrap_err(),
            VerifyError::Algorithm
        );
    }

    // An allow-list without ES256 refuses an ES256 token before any key is looked at.
    let eddsa_only = Verifier::builder(TEST_ISSUER, CAL)
        .jwks(
            TestKey::generate(KeyKind::EdDsa, Some("ed"))
                .unwrap()
                .jwks(),
        )
        .algorithms(&[Algorithm::EdDsa])
        .build()
        .await
        .unwrap();
    assert_eq!(
        eddsa_only.verify(&good).await.unwrap_err(),
        VerifyError::Algorithm
    );

    // Signature: a changed payload, another key under the published kid.
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut tampered_claims = crafted_claims();
    tampered_claims["scope"] = json!("calendar.read calendar.write");
    let tampered_payload = b64_json(&tampered_claims);
    parts[1] = &tampered_payload;
    assert_eq!(
        verifier.verify(&parts.join(".")).await.unwrap_err(),
        VerifyError::Signature
    );
    let impostor = TestKey::generate(KeyKind::Es256, Some("test-1")).unwrap();
    assert_eq!(
        verifier
            .verify(&impostor.sign(at, &crafted_claims()).unwrap())
            .await
            .unwrap_err(),
        VerifyError::Signature
    );
    let stranger = TestKey::generate(KeyKind::Es256, Some("other-kid")).unwrap();
    assert_eq!(
        verifier
            .verify(&stranger.sign(at, &crafted_claims()).unwrap())
            .await
            .unwrap_err(),
        VerifyError::UnknownKey,
        "a static key set is never refreshed"
    );

    // iss, aud.
    let with = |name: &str, value: Value| {
        let mut claims = crafted_claims();
        claims[name] = value;
        key.sign(at, &claims).unwrap()
    };
    for iss in [
        json!("https://evil.example"),
        json!(format!("{TEST_ISSUER}/")),
        Value::Null,
    ] {
        assert_eq!(
            verifier.verify(&with("iss", iss)).await.unwrap_err(),
            VerifyError::Issuer
        );
    }
    for aud in [
        json!(MAIL),
        json!([MAIL]),
        json!("https://calendar.example.com/"),
        Value::Null,
    ] {
        assert_eq!(
            verifier
                .verify(&with("aud", aud.clone()))
                .await
                .unwrap_err(),
            VerifyError::Audience,
            "{aud}"
        );
    }
    let token = verifier
        .verify(&with("aud", json!([MAIL, CAL])))
        .await
        .unwrap();
    assert_eq!(
        token.audience(),
        CAL,
        "an array containing the app is accepted"
    );

    // Time: expired beyond the skew, not yet valid, issued in the future; within the skew is fine.
    assert_eq!(
        verifier
            .verify(&with("exp", json!(now() - 61)))
            .await
            .unwrap_err(),
        VerifyError::Expired
    );
    verifier
        .verify(&with("exp", json!(now() - 30)))
        .await
        .unwrap();
    assert_eq!(
        verifier
            .verify(&with("nbf", json!(now() + 120)))
            .await
            .unwrap_err(),
        VerifyError::NotYetValid
    );
    assert_eq!(
        verifier
            .verify(&with("iat", json!(now() + 120)))
            .await
            .unwrap_err(),
        VerifyError::NotYetValid
    );
    let strict = Verifier::builder(TEST_ISSUER, CAL)
        .jwks(key.jwks())
        .clock_skew(0)
        .build()
        .await
        .unwrap();
    assert_eq!(
        strict
            .verify(&with("exp", json!(now() - 30)))
            .await
            .unwrap_err(),
        VerifyError::Expired
    );

    // Shape: fractional NumericDates, missing mandate claims, garbage, oversize.
    assert_eq!(
        verifier
            .verify(&with("exp", json!(now() as f64 + 0.5)))
            .await
            .unwrap_err(),
        VerifyError::Malformed
    );
    let mut no_chain = crafted_claims();
    no_chain.as_object_mut().unwrap().remove("chain_id");
    assert_eq!(
        verifier
            .verify(&key.sign(at, &no_chain).unwrap())
            .await
            .unwrap_err(),
        VerifyError::Malformed
    );
    for garbage in ["", "abc", "a.b.c", "a.b.c.d"] {
        assert_eq!(
            verifier.verify(garbage).await.unwrap_err(),
            VerifyError::Malformed
        );
    }
    let huge = format!("{}.{}.", "a".repeat(mandate_token::MAX_TOKEN_BYTES), "b");
    assert_eq!(
        verifier.verify(&huge).await.unwrap_err(),
        VerifyError::Malformed
    );
    let mut header = key.header(at);
    header["crit"] = json!(["exp"]);
    assert_eq!(
        verifier
            .verify(&key.sign_raw(&header, &crafted_claims()).unwrap())
            .await
            .unwrap_err(),
        VerifyError::Malformed
    );
}

#[tokio::test]
async fn mandate_tokens_for_other_apps_or_from_other_issuers_are_refused() {
    let (corp, server) = world().await;
    let (handoff, calendar) = handoff_chain(&server, &corp).await;
    let mail_token = issue(&server, &handoff, "access_token", MAIL, "booking-tool").await;
    let calendar_app = static_verifier(&server, CAL).await;
    calendar_app.verify(&calendar).await.unwrap();
    assert_eq!(
        calendar_app.verify(&mail_token).await.unwrap_err(),
        VerifyError::Audience
    );
    assert_eq!(
        calendar_app.verify(&handoff).await.unwrap_err(),
        VerifyError::Audience,
        "a hand-off token is for the next agent, not for an app"
    );
    // The user's upstream ID token is not an access token.
    assert_eq!(
        calendar_app.verify(&id_token(&corp)).await.unwrap_err(),
        VerifyError::WrongType
    );

    // Another mandate (its own keys), and the first one's keys announced under another issuer.
    let other = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let (_, foreign) = handoff_chain(&other, &corp).await;
    assert_eq!(
        calendar_app.verify(&foreign).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    let confused = Verifier::builder(other.issuer(), CAL)
        .jwks(server.get_json("/jwks").await.unwrap())
        .build()
        .await
        .unwrap();
    assert_eq!(
        confused.verify(&calendar).await.unwrap_err(),
        VerifyError::Issuer,
        "keys are trusted for one issuer only"
    );
    other.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn tokens_issued_in_the_past_are_expired() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let past = now() - 3600;
    let clock = Arc::new(FixedClock::at(past));
    let server = TestServer::spawn_with(
        delegation_settings(&corp),
        BuildOptions {
            clock: Some(clock.clone()),
            ..BuildOptions::default()
        },
    )
    .await
    .unwrap();
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims["iat"] = json!(past);
    claims["exp"] = json!(past + 600);
    let grant = corp.sign(None, &claims).unwrap();
    let old = issue(&server, &grant, "id_token", CAL, "assistant").await;
    assert_eq!(claims_of(&old)["exp"].as_i64().unwrap(), past + 300);

    let verifier = static_verifier(&server, CAL).await;
    assert_eq!(
        verifier.verify(&old).await.unwrap_err(),
        VerifyError::Expired
    );
    // On the server's clock it is valid: the verifier's clock is injectable too.
    let then = Verifier::builder(server.issuer(), CAL)
        .jwks(server.get_json("/jwks").await.unwrap())
        .clock(clock)
        .build()
        .await
        .unwrap();
    then.verify(&old).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn building_needs_exactly_one_usable_key_source() {
    let key = TestKey::generate(KeyKind::Es256, Some("k")).unwrap();
    let build = |builder: mandate_verify::VerifierBuilder| async move { builder.build().await };
    assert!(matches!(
        build(Verifier::builder(TEST_ISSUER, CAL))
            .await
            .unwrap_err(),
        VerifyError::Keys(_)
    ));
    assert!(matches!(
        build(
            Verifier::builder(TEST_ISSUER, CAL)
                .jwks(key.jwks())
                .discover()
        )
        .await
        .unwrap_err(),
        VerifyError::Keys(_)
    ));
    for bad in [
        json!({"keys": []}),
        json!([]),
        json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    ] {
        assert!(matches!(
            build(Verifier::builder(TEST_ISSUER, CAL).jwks(bad))
                .await
                .unwrap_err(),
            VerifyError::Keys(_)
        ));
    }
    // A static RSA key with an EC-only allow-list is a configuration error, seen at start-up.
    let rsa = TestKey::generate(KeyKind::Rs256, Some("rsa")).unwrap();
    assert!(matches!(
        build(Verifier::builder(TEST_ISSUER, CAL).jwks(rsa.jwks()))
            .await
            .unwrap_err(),
        VerifyError::Keys(_)
    ));
    // Discovery and key URLs must be https (http only on loopback): no request is made.
    for issuer in ["http://mandate.example.com", "ftp://127.0.0.1", "not a url"] {
        assert!(matches!(
            build(Verifier::builder(issuer, CAL).discover())
                .await
                .unwrap_err(),
            VerifyError::Discovery(_)
        ));
    }
    assert!(matches!(
        build(Verifier::builder(TEST_ISSUER, CAL).jwks_uri("http://10.1.2.3/jwks"))
            .await
            .unwrap_err(),
        VerifyError::Keys(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// Direct revocation on a private Redis.

#[cfg(feature = "redis")]
#[tokio::test]
async fn direct_mode_follows_the_chain_and_fails_closed_without_redis() {
    use mandate_server::config::{StoreKind, StoreUrl};
    use mandate_testkit::redis::RedisServer;

    let mut redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let server = TestServer::spawn(settings).await.unwrap();

    let source = Direct::redis(&redis.url()).await.unwrap();
    let verifier = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(source))
        .build()
        .await
        .unwrap();
    let mail_app = Verifier::builder(server.issuer(), MAIL)
        .discover()
        .revocation(Arc::new(Direct::redis(&redis.url()).await.unwrap()))
        .build()
        .await
        .unwrap();

    let (handoff, calendar) = handoff_chain(&server, &corp).await;
    let mail = issue(&server, &handoff, "access_token", MAIL, "booking-tool").await;
    verifier.verify(&calendar).await.unwrap();
    mail_app.verify(&mail).await.unwrap();

    // Revoking the calendar hop kills it; its sibling lives on.
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&calendar))).await;
    assert_eq!(
        verifier.verify(&calendar).await.unwrap_err(),
        VerifyError::Revoked {
            kind: RevocationKind::Hop,
            id: jti(&calendar)
        }
    );
    mail_app.verify(&mail).await.unwrap();
    // Revoking the hand-off (an ancestor) kills everything below it.
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&handoff))).await;
    assert_eq!(
        mail_app.verify(&mail).await.unwrap_err(),
        VerifyError::Revoked {
            kind: RevocationKind::Hop,
            id: jti(&handoff)
        }
    );

    // A chain revocation, on a new chain.
    let (_, second) = handoff_chain(&server, &corp).await;
    verifier.verify(&second).await.unwrap();
    let chain = claims_of(&second)["chain_id"].as_str().unwrap().to_owned();
    admin_revoke(&server, &format!("/admin/chains/{chain}/revoke")).await;
    assert_eq!(
        verifier.verify(&second).await.unwrap_err(),
        VerifyError::Revoked {
            kind: RevocationKind::Chain,
            id: chain
        }
    );

    // Redis dies: nothing can be shown unrevoked, so nothing verifies — quickly.
    let (_, live) = handoff_chain(&server, &corp).await;
    verifier.verify(&live).await.unwrap();
    redis.kill();
    let started = Instant::now();
    assert!(matches!(
        verifier.verify(&live).await.unwrap_err(),
        VerifyError::RevocationUnavailable(_)
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // Redis comes back (from its AOF): the same verifier recovers, revocations intact.
    redis.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match verifier.verify(&live).await {
            Ok(_) => break,
            Err(VerifyError::RevocationUnavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(other) => panic!("no recovery: {other}"),
        }
    }
    assert!(matches!(
        verifier.verify(&calendar).await.unwrap_err(),
        VerifyError::Revoked { .. }
    ));
    server.stop().await;
}

/// Polls `verify` until `done` holds for its result, failing after `within`.
#[cfg(feature = "redis")]
async fn poll_until(
    verifier: &Verifier,
    token: &str,
    within: Duration,
    done: impl Fn(&Result<VerifiedToken, VerifyError>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let result = verifier.verify(token).await;
        if done(&result) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not within {within:?}: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn followed_mode_sees_revocations_fails_closed_and_recovers() {
    use mandate_server::config::{StoreKind, StoreUrl};
    use mandate_testkit::redis::RedisServer;
    use mandate_verify::{Followed, FollowerConfig};

    let mut redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let server = TestServer::spawn(settings).await.unwrap();
    let config = FollowerConfig {
        staleness_bound: Duration::from_millis(2500),
        block: Duration::from_millis(200),
    };
    let followed = Followed::redis(&redis.url(), config, Duration::from_secs(5))
        .await
        .unwrap();
    let verifier = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(followed))
        .build()
        .await
        .unwrap();
    let (handoff, calendar) = handoff_chain(&server, &corp).await;
    // The mandate node's heartbeats make the follower fresh.
    poll_until(&verifier, &calendar, Duration::from_secs(5), Result::is_ok).await;

    // An admin revocation of the ancestor reaches the follower within the bound.
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&handoff))).await;
    let seen_after = poll_until(&verifier, &calendar, Duration::from_secs(2), |r| {
        matches!(r, Err(VerifyError::Revoked { .. }))
    })
    .await;
    assert!(seen_after < Duration::from_secs(2));

    // Redis dies: once the newest heartbeat is older than the bound, nothing verifies.
    let (_, live) = handoff_chain(&server, &corp).await;
    poll_until(&verifier, &live, Duration::from_secs(5), Result::is_ok).await;
    redis.kill();
    poll_until(&verifier, &live, Duration::from_secs(10), |r| {
        matches!(r, Err(VerifyError::RevocationUnavailable(_)))
    })
    .await;

    // Redis comes back; a revocation made right away is not missed, and live tokens verify again.
    redis.restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = server
            .http
            .post(server.admin_url(&format!("/admin/hops/{}/revoke", jti(&live))))
            .bearer_auth(mandate_testkit::ADMIN_OPS)
            .send()
            .await
            .unwrap();
        if response.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "admin revoke never succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    poll_until(&verifier, &live, Duration::from_secs(20), |r| {
        matches!(r, Err(VerifyError::Revoked { .. }))
    })
    .await;
    let (_, fresh) = handoff_chain(&server, &corp).await;
    poll_until(&verifier, &fresh, Duration::from_secs(20), Result::is_ok).await;
    assert!(matches!(
        verifier.verify(&calendar).await,
        Err(VerifyError::Revoked { .. })
    ));
    server.stop().await;
}

/// A source that never answers.
#[derive(Debug)]
struct Hanging;

#[async_trait::async_trait]
impl RevocationSource for Hanging {
    async fn verdict(
        &self,
        _facts: &mandate_revocation::TokenFacts,
    ) -> Result<mandate_revocation::Verdict, VerifyError> {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(mandate_revocation::Verdict::Live)
    }
}

#[tokio::test]
async fn direct_mode_with_an_in_memory_list_and_a_hanging_source() {
    let key = TestKey::generate(KeyKind::Es256, Some("test-1")).unwrap();
    let store = Arc::new(Direct(MemoryRevocations::new(Arc::new(
        mandate_model::SystemClock,
    ))));
    let verifier = Verifier::builder(TEST_ISSUER, CAL)
        .jwks(key.jwks())
        .revocation(store.clone())
        .build()
        .await
        .unwrap();
    let token = key.sign(Some("at+jwt"), &crafted_claims()).unwrap();
    verifier.verify(&token).await.unwrap();
    // An agent suspended after the token was issued covers it (the agents include every actor).
    store
        .0
        .revoke(vec![Revocation {
            kind: RevocationKind::Agent,
            id: "assistant".into(),
            until_ms: (now() + 600) * 1000,
            reason: "test".into(),
            by: "test".into(),
        }])
        .await
        .unwrap();
    assert_eq!(
        verifier.verify(&token).await.unwrap_err(),
        VerifyError::Revoked {
            kind: RevocationKind::Agent,
            id: "assistant".into()
        }
    );

    let hanging = Verifier::builder(TEST_ISSUER, CAL)
        .jwks(key.jwks())
        .revocation(Arc::new(Hanging))
        .revocation_timeout(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    let started = Instant::now();
    assert!(matches!(
        hanging.verify(&token).await.unwrap_err(),
        VerifyError::RevocationUnavailable(_)
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
}

// ---------------------------------------------------------------------------------------------
// Key rotation picked up by a running verifier.

/// A tiny issuer: RFC 8414 metadata and a JWKS that the test can switch, counting fetches.
struct LocalIssuer {
    base: String,
    jwks: Arc<Mutex<Value>>,
    jwks_hits: Arc<AtomicUsize>,
    handle: actix_web::dev::ServerHandle,
}

#[derive(Clone)]
struct IssuerState {
    issuer: String,
    jwks: Arc<Mutex<Value>>,
    jwks_hits: Arc<AtomicUsize>,
}

async fn metadata(state: web::Data<IssuerState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "issuer": state.issuer,
        "jwks_uri": format!("{}/jwks", state.issuer),
        "token_endpoint": format!("{}/token", state.issuer),
        "response_types_supported": [],
    }))
}

async fn jwks(state: web::Data<IssuerState>) -> HttpResponse {
    state.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let document = state.jwks.lock().unwrap().clone();
    HttpResponse::Ok().json(document)
}

async fn big() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!(
            "{{\"keys\":[],\"pad\":\"{}\"}}",
            "x".repeat(300 * 1024)
        ))
}

async fn redirect(state: web::Data<IssuerState>) -> HttpResponse {
    HttpResponse::Found()
        .insert_header(("Location", format!("{}/jwks", state.issuer)))
        .finish()
}

impl LocalIssuer {
    async fn start(initial: Value) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = IssuerState {
            issuer: base.clone(),
            jwks: Arc::new(Mutex::new(initial)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
        };
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route(
                    "/.well-known/oauth-authorization-server",
                    web::get().to(metadata),
                )
                .route("/jwks", web::get().to(jwks))
                .route("/big", web::get().to(big))
                .route("/redirect", web::get().to(redirect))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            base,
            jwks: state.jwks,
            jwks_hits: state.jwks_hits,
            handle,
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().unwrap() = jwks_of(keys);
    }

    fn hits(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }
}

fn jwks_of(keys: &[&SigningKey]) -> Value {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| Value::Object(k.public_key().jwk().clone()))
        .collect();
    json!({ "keys": keys })
}

fn signed_by(key: &SigningKey, issuer: &str) -> String {
    let claims = AccessTokenClaims {
        cnf: None,
        iss: issuer.into(),
        sub: "corp|alice".into(),
        aud: CAL.into(),
        client_id: "assistant".into(),
        scope: Some("calendar.read".into()),
        authorization_details: None,
        iat: now(),
        nbf: now(),
        exp: now() + 300,
        jti: format!("hop_{}", mandate_testkit::random_secret()),
        act: Act {
            sub: "assistant".into(),
            act: None,
        },
        chain_id: "chn_rotation".into(),
        ancestors: vec![],
    };
    key.sign("at+jwt", &claims).unwrap()
}

#[tokio::test]
async fn a_running_verifier_picks_up_a_rotated_key() {
    let old = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let new = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let issuer = LocalIssuer::start(jwks_of(&[&old])).await;
    let floor = Duration::from_secs(30);
    let time = Arc::new(ManualMonotonic::default());
    let verifier = Verifier::builder(&issuer.base, CAL)
        .discover()
        .refresh_floor(floor)
        .monotonic(time.clone())
        .build()
        .await
        .unwrap();
    // The default floor (30 s) on a second verifier built a little later: no re-fetch this
    // soon after its start-up.
    time.advance(Duration::from_secs(10));
    let patient = Verifier::builder(&issuer.base, CAL)
        .discover()
        .monotonic(time.clone())
        .build()
        .await
        .unwrap();
    assert_eq!(issuer.hits(), 2, "build fetched the keys once each");

    verifier
        .verify(&signed_by(&old, &issuer.base))
        .await
        .unwrap();
    // A kid nobody publishes yet, just after a fetch: refused without another fetch.
    let early = signed_by(&new, &issuer.base);
    assert_eq!(
        verifier.verify(&early).await.unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(issuer.hits(), 2);

    // The server rotates: the new key is published (the old one retired).
    issuer.publish(&[&new]);
    // Just inside the floor: still no fetch.
    time.advance(floor - Duration::from_secs(11));
    assert_eq!(
        verifier
            .verify(&signed_by(&new, &issuer.base))
            .await
            .unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(issuer.hits(), 2);
    time.advance(Duration::from_secs(1));
    let token = verifier
        .verify(&signed_by(&new, &issuer.base))
        .await
        .unwrap();
    assert_eq!(token.subject(), "corp|alice");
    assert_eq!(issuer.hits(), 3, "one re-fetch for the unknown kid");
    // The retired key is gone from the cache; a burst of unknown kids makes no fetch within the
    // floor.
    assert_eq!(
        verifier
            .verify(&signed_by(&old, &issuer.base))
            .await
            .unwrap_err(),
        VerifyError::UnknownKey
    );
    for _ in 0..20 {
        let random = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        assert_eq!(
            verifier
                .verify(&signed_by(&random, &issuer.base))
                .await
                .unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    assert_eq!(issuer.hits(), 3);
    // Concurrent first sightings of the new kid on the patient verifier: still within its floor.
    assert_eq!(
        patient
            .verify(&signed_by(&new, &issuer.base))
            .await
            .unwrap_err(),
        VerifyError::UnknownKey
    );
    assert_eq!(issuer.hits(), 3);
    issuer.handle.stop(false).await;
}

#[tokio::test]
async fn a_stale_key_set_is_refreshed_in_the_background() {
    let old = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let new = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let issuer = LocalIssuer::start(jwks_of(&[&old])).await;
    let time = Arc::new(ManualMonotonic::default());
    let max_age = Duration::from_secs(300);
    let verifier = Verifier::builder(&issuer.base, CAL)
        .jwks_uri(&format!("{}/jwks", issuer.base))
        .refresh_floor(Duration::ZERO)
        .jwks_max_age(max_age)
        .monotonic(time.clone())
        .build()
        .await
        .unwrap();
    verifier
        .verify(&signed_by(&old, &issuer.base))
        .await
        .unwrap();
    // The server stops publishing the old key; once the cache is older than its max age, a
    // verification triggers a background re-fetch and the old key stops being trusted.
    issuer.publish(&[&new]);
    // Not yet older than its maximum age: served from the cache, no fetch.
    time.advance(max_age);
    verifier
        .verify(&signed_by(&old, &issuer.base))
        .await
        .unwrap();
    tokio::task::yield_now().await;
    assert_eq!(issuer.hits(), 1);
    time.advance(Duration::from_secs(1));
    let _ = verifier.verify(&signed_by(&old, &issuer.base)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while issuer.hits() < 2 {
        assert!(Instant::now() < deadline, "no background refresh");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        verifier
            .verify(&signed_by(&old, &issuer.base))
            .await
            .unwrap_err(),
        VerifyError::UnknownKey
    );
    issuer.handle.stop(false).await;
}

#[tokio::test]
async fn discovery_and_key_fetching_are_bounded() {
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let issuer = LocalIssuer::start(jwks_of(&[&key])).await;
    // The metadata must name exactly the issuer it was fetched for.
    let with_slash = format!("{}/", issuer.base);
    assert!(matches!(
        Verifier::builder(&with_slash, CAL)
            .discover()
            .build()
            .await
            .unwrap_err(),
        VerifyError::Discovery(_)
    ));
    // An issuer with a path: the well-known segment goes before the path (RFC 8414 §3.1), and
    // this server has nothing there.
    let with_path = format!("{}/tenant", issuer.base);
    assert!(matches!(
        Verifier::builder(&with_path, CAL)
            .discover()
            .build()
            .await
            .unwrap_err(),
        VerifyError::Discovery(_)
    ));
    // Oversized bodies and redirects are refused.
    for path in ["/big", "/redirect"] {
        let error = Verifier::builder(&issuer.base, CAL)
            .jwks_uri(&format!("{}{path}", issuer.base))
            .build()
            .await
            .unwrap_err();
        assert!(matches!(error, VerifyError::Keys(_)), "{path}: {error}");
    }
    assert_eq!(issuer.hits(), 0, "the redirect was not followed");
    // Unusable keys in a fetched set are skipped, not fatal.
    let rsa = TestKey::generate(KeyKind::Rs256, Some("rsa")).unwrap();
    let mut mixed = jwks_of(&[&key]);
    mixed["keys"].as_array_mut().unwrap().push(rsa.public_jwk());
    *issuer.jwks.lock().unwrap() = mixed;
    let verifier = Verifier::builder(&issuer.base, CAL)
        .discover()
        .build()
        .await
        .unwrap();
    verifier
        .verify(&signed_by(&key, &issuer.base))
        .await
        .unwrap();
    issuer.handle.stop(false).await;
}

// ---------------------------------------------------------------------------------------------
// The actix-web extractor.

#[cfg(feature = "actix-web")]
mod extractor {
    use super::*;
    use actix_web::http::header;
    use actix_web::test;
    use mandate_verify::actix::{require_scope, Authenticated};

    async fn events(auth: Authenticated) -> actix_web::Result<HttpResponse> {
        require_scope(&auth, "calendar.read")?;
        Ok(HttpResponse::Ok().json(json!({
            "subject": auth.subject(),
            "actor": auth.current_actor(),
        })))
    }

    async fn delete_events(auth: Authenticated) -> actix_web::Result<HttpResponse> {
        require_scope(&auth, "calendar.admin")?;
        Ok(HttpResponse::NoContent().finish())
    }

    macro_rules! app {
        ($verifier:expr) => {
            test::init_service(
                App::new()
                    .app_data(web::Data::new($verifier))
                    .route("/events", web::get().to(events))
                    .route("/events", web::delete().to(delete_events)),
            )
            .await
        };
    }

    fn challenge(response: &actix_web::dev::ServiceResponse) -> Option<String> {
        response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[actix_web::test]
    async fn the_extractor_answers_rfc_6750() {
        let (corp, server) = world().await;
        let (_, calendar) = handoff_chain(&server, &corp).await;
        let store = Arc::new(Direct(MemoryRevocations::new(Arc::new(
            mandate_model::SystemClock,
        ))));
        let verifier = Verifier::builder(server.issuer(), CAL)
            .discover()
            .revocation(store.clone())
            .build()
            .await
            .unwrap();
        let app = app!(verifier);

        // 200: the handler sees the subject and the current actor.
        let request = test::TestRequest::get()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 200);
        let body: Value = test::read_body_json(response).await;
        assert_eq!(
            body,
            json!({"subject": "corp|alice", "actor": "booking-tool"})
        );
        // The scheme is case-insensitive.
        let request = test::TestRequest::get()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("bearer {calendar}")))
            .to_request();
        assert_eq!(test::call_service(&app, request).await.status(), 200);

        // 401 without credentials (or with another scheme): a bare challenge, no error code.
        for authorization in [None, Some("Basic YWxpY2U6c2VjcmV0")] {
            let mut request = test::TestRequest::get().uri("/events");
            if let Some(value) = authorization {
                request = request.insert_header((header::AUTHORIZATION, value));
            }
            let response = test::call_service(&app, request.to_request()).await;
            assert_eq!(response.status(), 401);
            assert_eq!(challenge(&response).as_deref(), Some("Bearer"));
        }

        // 401 invalid_token, saying nothing more: garbage, empty, a foreign token.
        let foreign = {
            let key = TestKey::generate(KeyKind::Es256, Some("x")).unwrap();
            let mut claims = crafted_claims();
            claims["iss"] = json!(server.issuer());
            key.sign(Some("at+jwt"), &claims).unwrap()
        };
        for value in [
            "Bearer not-a-jwt".to_owned(),
            "Bearer".to_owned(),
            "Bearer a b".to_owned(),
            format!("Bearer {foreign}"),
        ] {
            let request = test::TestRequest::get()
                .uri("/events")
                .insert_header((header::AUTHORIZATION, value.clone()))
                .to_request();
            let response = test::call_service(&app, request).await;
            assert_eq!(response.status(), 401, "{value}");
            assert_eq!(
                challenge(&response).as_deref(),
                Some(r#"Bearer error="invalid_token""#)
            );
            assert!(test::read_body(response).await.is_empty());
        }

        // 400 invalid_request: two Authorization headers.
        let request = test::TestRequest::get()
            .uri("/events")
            .append_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .append_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 400);
        assert_eq!(
            challenge(&response).as_deref(),
            Some(r#"Bearer error="invalid_request""#)
        );

        // 403 insufficient_scope, naming the scope.
        let request = test::TestRequest::delete()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 403);
        assert_eq!(
            challenge(&response).as_deref(),
            Some(r#"Bearer error="insufficient_scope", scope="calendar.admin""#)
        );

        // Revoked: 401 invalid_token, like any other invalid token.
        store
            .0
            .revoke(vec![Revocation {
                kind: RevocationKind::Hop,
                id: jti(&calendar),
                until_ms: (now() + 600) * 1000,
                reason: "test".into(),
                by: "test".into(),
            }])
            .await
            .unwrap();
        let request = test::TestRequest::get()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            challenge(&response).as_deref(),
            Some(r#"Bearer error="invalid_token""#)
        );
        server.stop().await;
    }

    #[actix_web::test]
    async fn the_extractor_fails_closed() {
        let (corp, server) = world().await;
        let (_, calendar) = handoff_chain(&server, &corp).await;
        let verifier = hanging_verifier(&server).await;
        let app = app!(verifier);
        let request = test::TestRequest::get()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        let response = test::call_service(&app, request).await;
        assert_eq!(response.status(), 503);
        assert_eq!(challenge(&response), None);

        // A verifier missing from the app data is a wiring bug: 500, never a pass.
        let bare = test::init_service(App::new().route("/events", web::get().to(events))).await;
        let request = test::TestRequest::get()
            .uri("/events")
            .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
            .to_request();
        assert_eq!(test::call_service(&bare, request).await.status(), 500);
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 9728 metadata through the actix-web extractor.

#[cfg(feature = "actix-web")]
#[actix_web::test]
async fn the_extractor_names_the_resource_metadata_it_serves() {
    use actix_web::http::header;
    use actix_web::test;
    use mandate_verify::actix::{metadata_resource, Authenticated};
    use mandate_verify::ProtectedResource;

    async fn whoami(auth: Authenticated) -> HttpResponse {
        HttpResponse::Ok().body(auth.subject().to_owned())
    }
    let (corp, server) = world().await;
    let (_, calendar) = handoff_chain(&server, &corp).await;
    let verifier = static_verifier(&server, CAL).await;
    let metadata = ProtectedResource::new(CAL, server.issuer()).scopes(["calendar.read"]);
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(verifier))
            .app_data(web::Data::new(metadata.clone()))
            .service(metadata_resource(metadata.clone()))
            .route("/whoami", web::get().to(whoami)),
    )
    .await;
    let request = test::TestRequest::get().uri(metadata.path()).to_request();
    let response = test::call_service(&app, request).await;
    assert_eq!(response.status(), 200);
    let document: Value = test::read_body_json(response).await;
    assert_eq!(
        document,
        json!({"resource": CAL, "authorization_servers": [server.issuer()],
            "scopes_supported": ["calendar.read"], "bearer_methods_supported": ["header"],
            "dpop_signing_alg_values_supported": ["ES256", "ES384", "EdDSA", "RS256", "PS256"]})
    );
    let url = metadata.url();
    for (authorization, expected) in [
        (None, format!(r#"Bearer resource_metadata="{url}""#)),
        (
            Some("Bearer nope"),
            format!(r#"Bearer error="invalid_token", resource_metadata="{url}""#),
        ),
    ] {
        let mut request = test::TestRequest::get().uri("/whoami");
        if let Some(value) = authorization {
            request = request.insert_header((header::AUTHORIZATION, value));
        }
        let response = test::call_service(&app, request.to_request()).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
            expected.as_str()
        );
    }
    let request = test::TestRequest::get()
        .uri("/whoami")
        .insert_header((header::AUTHORIZATION, format!("Bearer {calendar}")))
        .to_request();
    assert_eq!(test::call_service(&app, request).await.status(), 200);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The tower layer, in an axum app served over real HTTP.

#[cfg(feature = "tower")]
mod tower_layer {
    use super::*;
    use axum::routing::get;
    use axum::{Extension, Router};
    use mandate_verify::tower::MandateLayer;
    use mandate_verify::ProtectedResource;

    async fn whoami(Extension(token): Extension<VerifiedToken>) -> axum::Json<Value> {
        axum::Json(json!({"subject": token.subject(), "actors": token.actors()}))
    }

    /// Serves `app` on a free loopback port; its base URL.
    async fn serve(app: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{address}")
    }

    #[tokio::test]
    async fn an_axum_app_behind_the_layer_sees_only_verified_tokens() {
        let (corp, server) = world().await;
        let (_, calendar) = handoff_chain(&server, &corp).await;
        let store = Arc::new(Direct(MemoryRevocations::new(Arc::new(
            mandate_model::SystemClock,
        ))));
        let verifier = Verifier::builder(server.issuer(), CAL)
            .discover()
            .revocation(store.clone())
            .build()
            .await
            .unwrap();
        let metadata = ProtectedResource::new(CAL, server.issuer()).scopes(["calendar.read"]);
        let url = metadata.url();
        let read = Router::new().route("/whoami", get(whoami)).layer(
            MandateLayer::new(verifier.clone())
                .require_scope("calendar.read")
                .metadata(metadata.clone()),
        );
        let admin = Router::new().route("/admin", get(whoami)).layer(
            MandateLayer::new(verifier)
                .require_scope("calendar.admin")
                .metadata(metadata.clone()),
        );
        let base = serve(read.merge(admin)).await;
        let http = reqwest::Client::new();
        let get = |path: &str, authorization: &[String]| {
            let mut request = http.get(format!("{base}{path}"));
            for value in authorization {
                request = request.header("authorization", value);
            }
            async move { request.send().await.unwrap() }
        };
        let challenge = |response: &reqwest::Response| {
            response.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .to_owned()
        };
        let bearer = format!("Bearer {calendar}");

        let response = get("/whoami", std::slice::from_ref(&bearer)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"subject": "corp|alice", "actors": ["booking-tool", "assistant"]})
        );
        // The metadata is served without a token.
        let response = get(metadata.path(), &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.json::<Value>().await.unwrap()["resource"], CAL);

        let response = get("/whoami", &[]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&response),
            format!(r#"Bearer resource_metadata="{url}""#)
        );
        let response = get("/whoami", &["Bearer not-a-jwt".to_owned()]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            challenge(&response),
            format!(r#"Bearer error="invalid_token", resource_metadata="{url}""#)
        );
        let response = get("/whoami", &[bearer.clone(), bearer.clone()]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = get("/admin", std::slice::from_ref(&bearer)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            challenge(&response),
            format!(
                r#"Bearer error="insufficient_scope", scope="calendar.admin", resource_metadata="{url}""#
            )
        );
        // A token for another app.
        let mail = issue(&server, &id_token(&corp), "id_token", MAIL, "assistant").await;
        let response = get("/whoami", &[format!("Bearer {mail}")]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        store
            .0
            .revoke(vec![Revocation {
                kind: RevocationKind::Hop,
                id: jti(&calendar),
                until_ms: (now() + 600) * 1000,
                reason: "test".into(),
                by: "test".into(),
            }])
            .await
            .unwrap();
        let response = get("/whoami", std::slice::from_ref(&bearer)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        server.stop().await;
    }

    #[tokio::test]
    async fn the_layer_fails_closed() {
        let (corp, server) = world().await;
        let (_, calendar) = handoff_chain(&server, &corp).await;
        let verifier = hanging_verifier(&server).await;
        let base = serve(
            Router::new()
                .route("/whoami", get(whoami))
                .layer(MandateLayer::new(verifier)),
        )
        .await;
        let response = reqwest::Client::new()
            .get(format!("{base}/whoami"))
            .bearer_auth(&calendar)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().get("www-authenticate").is_none());
        server.stop().await;
    }
}

/// A verifier for the calendar whose revocation source never answers (100 ms timeout).
#[cfg(any(feature = "actix-web", feature = "tower"))]
async fn hanging_verifier(server: &TestServer) -> Verifier {
    Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(Hanging))
        .revocation_timeout(Duration::from_millis(100))
        .build()
        .await
        .unwrap()
}

async fn issue(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    agent: &str,
) -> String {
    mandate_testkit::delegation_issue(server, token, kind, audience, agent)
        .await
        .unwrap()
}

/// The server's own revocation store as a verifier's source, as `Direct` over Redis would be.
#[derive(Debug)]
struct ServerStore(Arc<dyn RevocationStore>);

#[async_trait::async_trait]
impl RevocationSource for ServerStore {
    async fn verdict(
        &self,
        facts: &mandate_revocation::TokenFacts,
    ) -> Result<mandate_revocation::Verdict, VerifyError> {
        self.0
            .check(facts)
            .await
            .map(|checked| checked.verdict)
            .map_err(|e| VerifyError::RevocationUnavailable(e.0))
    }
}

/// Review finding 6: the verifier accepts a skew of up to 300 s, while revocation entries lived
/// for a hop's `exp` plus the server's skew (60 s): past that, a verifier set to the largest skew
/// took the revoked token again. Entries now outlive their tokens by the largest skew allowed.
#[tokio::test]
async fn a_revoked_token_stays_refused_for_as_long_as_any_skew_accepts_it() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let clock = Arc::new(FixedClock::at(now()));
    let server = TestServer::spawn_with(
        delegation_settings(&corp),
        BuildOptions {
            clock: Some(clock.clone()),
            ..BuildOptions::default()
        },
    )
    .await
    .unwrap();
    let calendar = issue(&server, &id_token(&corp), "id_token", CAL, "assistant").await;
    let claims = claims_of(&calendar);
    let response = server
        .http
        .post(server.admin_url(&format!(
            "/admin/hops/{}/revoke",
            claims["jti"].as_str().unwrap()
        )))
        .bearer_auth(mandate_testkit::ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let verifier = Verifier::builder(server.issuer(), CAL)
        .jwks(server.get_json("/jwks").await.unwrap())
        .clock(clock.clone())
        .clock_skew(mandate_verify::MAX_CLOCK_SKEW_SECS)
        .revocation(Arc::new(ServerStore(server.state.revocations.clone())))
        .build()
        .await
        .unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    // Just short of the largest skew past `exp`: the signature and times still pass.
    let late = exp + mandate_verify::MAX_CLOCK_SKEW_SECS - 1;
    clock.advance(late - mandate_model::Clock::now_secs(clock.as_ref()));
    assert!(
        matches!(
            verifier.verify(&calendar).await,
            Err(VerifyError::Revoked { .. })
        ),
        "a revoked token {}s past exp",
        late - exp
    );
    server.stop().await;
}
