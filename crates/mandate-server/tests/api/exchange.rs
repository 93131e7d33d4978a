//! RFC 8693 token exchange over real HTTP: roots from trusted issuers, hand-offs, every refusal of
//! DESIGN.md section 5, and the wire format checked with an independent JWT library.

use mandate_model::{Audience, AuthMethod, ClientId, ScopeSet, Subject};
use mandate_server::config::{Acceptance, ConsentSettings, PolicySettings, TrustedIssuerSettings};
use mandate_store::UpstreamId;
use mandate_testkit::{
    agent_with_secret, alg_none, body_json, claims_of, empty_settings, exchange_form, header_of,
    id_token_claims, now, resource_server, ClientAuth, KeyKind, TestKey, TestServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CORP: &str = "https://corp.example.com";
const RSA: &str = "https://rsa.example.com";
const PRIMARY: &str = "https://primary.example.com";
const CAL: &str = "https://calendar.example.com";
const MAIL: &str = "https://mail.example.com";

struct Env {
    server: TestServer,
    corp: TestKey,
    rsa: TestKey,
    primary: TestKey,
}

fn issuer(url: &str, alias: &str, key: &TestKey, as_is: bool) -> TrustedIssuerSettings {
    TrustedIssuerSettings {
        issuer: url.into(),
        alias: mandate_model::IssuerAlias::parse(alias).unwrap(),
        subject_as_is: as_is,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(key.jwks()),
        algorithms: vec![key.alg().into()],
        accept: vec![Acceptance::IdToken, Acceptance::Jwt],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }
}

fn policy(actor: &str, audience: &str, scopes: &str, max_depth: Option<u32>) -> PolicySettings {
    PolicySettings {
        actor: ClientId::parse(actor).unwrap(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        max_depth,
    }
}

async fn env() -> Env {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let rsa = TestKey::generate(KeyKind::Rs256, Some("rsa-1")).unwrap();
    let primary = TestKey::generate(KeyKind::Es256, Some("primary-1")).unwrap();
    let mut settings = empty_settings();
    settings.trusted_issuers = vec![
        issuer(CORP, "corp", &corp, false),
        issuer(RSA, "rsa", &rsa, false),
        issuer(PRIMARY, "primary", &primary, true),
    ];
    let mut assistant = agent_with_secret(
        "assistant",
        "assistant-secret",
        AuthMethod::ClientSecretBasic,
    )
    .unwrap();
    assistant.upstream_ids = vec![UpstreamId {
        issuer: CORP.into(),
        client_id: "0oa-assistant".into(),
    }];
    settings.clients = vec![
        assistant,
        agent_with_secret(
            "booking-tool",
            "booking-secret",
            AuthMethod::ClientSecretPost,
        )
        .unwrap(),
        agent_with_secret("helper", "helper-secret", AuthMethod::ClientSecretBasic).unwrap(),
        resource_server("calendar-api", "calendar-secret", CAL).unwrap(),
        resource_server("mail-api", "mail-secret", MAIL).unwrap(),
    ];
    settings.policies = vec![
        policy("assistant", CAL, "calendar.read calendar.write", None),
        policy("assistant", MAIL, "mail.read", None),
        policy(
            "assistant",
            "agent:booking-tool",
            "calendar.read calendar.write mail.read",
            None,
        ),
        policy("booking-tool", CAL, "calendar.read calendar.write", None),
        policy("booking-tool", MAIL, "mail.read", None),
        policy("booking-tool", "agent:helper", "calendar.read", Some(2)),
        policy("booking-tool", "agent:assistant", "calendar.read", None),
        policy("helper", CAL, "calendar.read", None),
    ];
    settings.consents = vec![ConsentSettings {
        subject: Subject::parse("corp|carol").unwrap(),
        actor: ClientId::parse("assistant").unwrap(),
        audience: Audience::parse(CAL).unwrap(),
        scopes: ScopeSet::parse("calendar.read").unwrap(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    }];
    Env {
        server: TestServer::spawn(settings).await.unwrap(),
        corp,
        rsa,
        primary,
    }
}

fn assistant() -> ClientAuth {
    ClientAuth::Basic("assistant".into(), "assistant-secret".into())
}
fn booking() -> ClientAuth {
    ClientAuth::Post("booking-tool".into(), "booking-secret".into())
}
fn helper() -> ClientAuth {
    ClientAuth::Basic("helper".into(), "helper-secret".into())
}

/// An ID token from corp for alice, issued to the assistant (by its corp client id).
fn corp_id_token(env: &Env) -> String {
    env.corp
        .sign(None, &id_token_claims(CORP, "alice", "0oa-assistant"))
        .unwrap()
}

async fn post(
    env: &Env,
    form: Vec<(&str, String)>,
    auth: &ClientAuth,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = env.server.token(&pairs, auth).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, body_json(response).await, headers)
}

/// Exchanges and expects success; returns the issued token.
async fn exchange_ok(
    env: &Env,
    token: &str,
    kind: &str,
    audience: &str,
    extra: &[(&str, &str)],
    auth: &ClientAuth,
) -> String {
    let (status, body, headers) =
        post(env, exchange_form(token, kind, audience, extra), auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());
    let token = body["access_token"].as_str().unwrap().to_owned();
    verify_independently(env, &token).await;
    token
}

async fn refused(
    env: &Env,
    token: &str,
    kind: &str,
    audience: &str,
    extra: &[(&str, &str)],
    auth: &ClientAuth,
    code: &str,
) {
    let (status, body, headers) =
        post(env, exchange_form(token, kind, audience, extra), auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        !description.contains(token) || token.is_empty(),
        "descriptions never echo the token"
    );
}

/// Checks the token with `jsonwebtoken` against the served JWKS: the wire format is standard.
async fn verify_independently(env: &Env, token: &str) {
    let jwks: jsonwebtoken::jwk::JwkSet = env
        .server
        .http
        .get(env.server.url("/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_issuer(&[env.server.issuer()]);
    let aud = claims_of(token)["aud"].as_str().unwrap().to_owned();
    validation.set_audience(&[aud]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation).unwrap();
    for claim in ["iat", "nbf", "exp"] {
        assert!(data.claims[claim].is_i64(), "{claim} is a whole number");
    }
}

#[tokio::test]
async fn a_root_exchange_from_an_es256_id_token() {
    let env = env().await;
    let token = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        CAL,
        &[],
        &assistant(),
    )
    .await;
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "corp|alice");
    assert_eq!(claims["aud"], CAL);
    assert_eq!(claims["client_id"], "assistant");
    assert_eq!(claims["scope"], "calendar.read calendar.write");
    assert_eq!(claims["act"], json!({"sub": "assistant"}));
    assert_eq!(claims["ancestors"], json!([]));
    assert!(claims["jti"].as_str().unwrap().starts_with("hop_"));
    assert!(claims["chain_id"].as_str().unwrap().starts_with("chn_"));
    assert!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap() <= 300);
    assert_eq!(header_of(&token)["alg"], "ES256");
    // The hop is in the ledger with its evidence.
    let hop = env
        .server
        .state
        .ledger
        .hop(&mandate_chain::HopId(
            claims["jti"].as_str().unwrap().into(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        hop.evidence.kind,
        mandate_chain::EvidenceKind::UpstreamAudience
    );
    assert_eq!(hop.upstream.unwrap().issuer, CORP);
}

#[tokio::test]
async fn a_root_exchange_from_an_rs256_id_token_and_a_narrower_scope() {
    let env = env().await;
    let id_token = env
        .rsa
        .sign(None, &id_token_claims(RSA, "bob", "assistant"))
        .unwrap();
    let token = exchange_ok(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[("scope", "calendar.read")],
        &assistant(),
    )
    .await;
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], "rsa|bob");
    assert_eq!(claims["scope"], "calendar.read");
}

#[tokio::test]
async fn the_same_grant_gives_the_same_chain() {
    let env = env().await;
    let id_token = corp_id_token(&env);
    let first = claims_of(&exchange_ok(&env, &id_token, "id_token", CAL, &[], &assistant()).await);
    let second =
        claims_of(&exchange_ok(&env, &id_token, "id_token", MAIL, &[], &assistant()).await);
    assert_eq!(first["chain_id"], second["chain_id"]);
    assert_ne!(first["jti"], second["jti"]);
    let other_grant = claims_of(
        &exchange_ok(
            &env,
            &corp_id_token(&env),
            "id_token",
            CAL,
            &[],
            &assistant(),
        )
        .await,
    );
    assert_ne!(first["chain_id"], other_grant["chain_id"]);
}

#[tokio::test]
async fn a_hand_off_nests_act_and_narrows() {
    let env = env().await;
    let handoff = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[("scope", "calendar.read")],
        &assistant(),
    )
    .await;
    let h = claims_of(&handoff);
    assert_eq!(h["aud"], "agent:booking-tool");
    assert!(h.get("scope").is_none());
    assert_eq!(
        h["authorization_details"],
        json!([{"type": "mandate_delegation", "audience": CAL, "scopes": ["calendar.read"]}])
    );
    let app = exchange_ok(&env, &handoff, "access_token", CAL, &[], &booking()).await;
    let a = claims_of(&app);
    assert_eq!(
        a["act"],
        json!({"sub": "booking-tool", "act": {"sub": "assistant"}})
    );
    assert_eq!(a["chain_id"], h["chain_id"]);
    assert_eq!(a["ancestors"], json!([h["jti"]]));
    assert_eq!(a["scope"], "calendar.read");
    assert_eq!(a["sub"], "corp|alice");
    assert!(a["exp"].as_i64().unwrap() <= h["exp"].as_i64().unwrap());
    // The hand-off carried only calendar.read: write is widening, mail is outside the parent.
    refused(
        &env,
        &handoff,
        "access_token",
        CAL,
        &[("scope", "calendar.write")],
        &booking(),
        "invalid_scope",
    )
    .await;
    refused(
        &env,
        &handoff,
        "access_token",
        MAIL,
        &[],
        &booking(),
        "invalid_target",
    )
    .await;
}

#[tokio::test]
async fn a_hand_off_can_select_pairs_with_authorization_details() {
    let env = env().await;
    let details =
        json!([{"type": "mandate_delegation", "audience": MAIL, "scopes": ["mail.read"]}])
            .to_string();
    let handoff = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[("authorization_details", &details)],
        &assistant(),
    )
    .await;
    assert_eq!(
        claims_of(&handoff)["authorization_details"][0]["audience"],
        MAIL
    );
    exchange_ok(&env, &handoff, "access_token", MAIL, &[], &booking()).await;
    refused(
        &env,
        &handoff,
        "access_token",
        CAL,
        &[],
        &booking(),
        "invalid_target",
    )
    .await;
    let wider = json!([{"type": "mandate_delegation", "audience": MAIL, "scopes": ["mail.send"]}])
        .to_string();
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[("authorization_details", &wider)],
        &assistant(),
        "invalid_scope",
    )
    .await;
}

#[tokio::test]
async fn policy_and_target_refusals() {
    let env = env().await;
    // No policy row: the helper has none for mail.
    let to_helper = env
        .corp
        .sign(None, &id_token_claims(CORP, "alice", "helper"))
        .unwrap();
    refused(
        &env,
        &to_helper,
        "id_token",
        MAIL,
        &[],
        &helper(),
        "invalid_target",
    )
    .await;
    // Unknown audience, and malformed ones.
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        "https://unknown.example.com",
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:nobody",
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        "calendar",
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    // Two targets.
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        CAL,
        &[("resource", MAIL)],
        &assistant(),
        "invalid_target",
    )
    .await;
    // Scope widening at the root.
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        CAL,
        &[("scope", "calendar.admin")],
        &assistant(),
        "invalid_scope",
    )
    .await;
}

#[tokio::test]
async fn the_presenter_must_be_named() {
    let env = env().await;
    // The booking tool presents the assistant's ID token.
    refused(
        &env,
        &corp_id_token(&env),
        "id_token",
        CAL,
        &[],
        &booking(),
        "invalid_request",
    )
    .await;
    // may_act naming someone else, even on a token issued to the assistant.
    let mut claims = id_token_claims(CORP, "alice", "0oa-assistant");
    claims["may_act"] = json!({"sub": "mallory"});
    refused(
        &env,
        &env.corp.sign(None, &claims).unwrap(),
        "id_token",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    // may_act naming the booking tool lets it present a token issued to someone else.
    let mut claims = id_token_claims(CORP, "alice", "some-portal");
    claims["may_act"] = json!({"sub": "booking-tool", "iss": CORP});
    exchange_ok(
        &env,
        &env.corp.sign(None, &claims).unwrap(),
        "id_token",
        CAL,
        &[],
        &booking(),
    )
    .await;
    // A hand-off addressed to the booking tool, presented by the helper.
    let handoff = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[],
        &assistant(),
    )
    .await;
    refused(
        &env,
        &handoff,
        "access_token",
        CAL,
        &[],
        &helper(),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_stored_consent_grant_is_evidence() {
    let env = env().await;
    // A JWT addressed to mandate, bound to the assistant by azp: carol consented to calendar.read.
    let mut claims = id_token_claims(CORP, "carol", env.server.issuer());
    claims["azp"] = json!("assistant");
    let jwt = env.corp.sign(None, &claims).unwrap();
    let token = exchange_ok(&env, &jwt, "jwt", CAL, &[], &assistant()).await;
    assert_eq!(claims_of(&token)["scope"], "calendar.read");
    // alice gave no consent.
    let mut claims = id_token_claims(CORP, "alice", env.server.issuer());
    claims["azp"] = json!("assistant");
    refused(
        &env,
        &env.corp.sign(None, &claims).unwrap(),
        "jwt",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn app_tokens_are_not_exchanged_again() {
    let env = env().await;
    let app = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        CAL,
        &[],
        &assistant(),
    )
    .await;
    refused(
        &env,
        &app,
        "access_token",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &app,
        "access_token",
        "agent:booking-tool",
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn cycles_and_depth_are_refused() {
    let env = env().await;
    let handoff = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[],
        &assistant(),
    )
    .await;
    // Handing back to the assistant would put it in the chain twice.
    refused(
        &env,
        &handoff,
        "access_token",
        "agent:assistant",
        &[],
        &booking(),
        "invalid_request",
    )
    .await;
    // booking-tool → helper has max_depth 2: the helper's own hop would be the third.
    let to_helper = exchange_ok(
        &env,
        &handoff,
        "access_token",
        "agent:helper",
        &[],
        &booking(),
    )
    .await;
    let (status, body, _) = post(
        &env,
        exchange_form(&to_helper, "access_token", CAL, &[]),
        &helper(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("too deep"),
        "{body}"
    );
}

#[tokio::test]
async fn request_shape_refusals() {
    let env = env().await;
    let id_token = corp_id_token(&env);
    refused(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[
            ("actor_token", "x"),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[("actor_token_type", "urn:ietf:params:oauth:token-type:jwt")],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &id_token,
        "saml2",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &id_token,
        "nonsense",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:refresh_token",
        )],
        &assistant(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[(
            "requested_token_type",
            "urn:ietf:params:oauth:token-type:id-jag",
        )],
        &assistant(),
        "invalid_request",
    )
    .await;
    // Missing subject_token_type, and no target at all.
    let form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", id_token.clone()),
        ("audience", CAL.to_owned()),
    ];
    let (status, body, _) = post(&env, form, &assistant()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    let form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", id_token.clone()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:id_token".to_owned(),
        ),
    ];
    let (_, body, _) = post(&env, form, &assistant()).await;
    assert_eq!(body["error"], "invalid_request");
    // A resource server cannot exchange.
    refused_with_status(
        &env,
        &id_token,
        &ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
        StatusCode::UNAUTHORIZED,
    )
    .await;
}

async fn refused_with_status(env: &Env, token: &str, auth: &ClientAuth, status: StatusCode) {
    let (got, body, _) = post(env, exchange_form(token, "id_token", CAL, &[]), auth).await;
    assert_eq!(got, status, "{body}");
}

#[tokio::test]
async fn bad_subject_tokens_are_invalid_request() {
    let env = env().await;
    let good = || id_token_claims(CORP, "alice", "0oa-assistant");
    let with = |name: &str, value: Value| {
        let mut c = good();
        c[name] = value;
        c
    };
    let without = |name: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(name);
        c
    };
    let stranger = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let tampered = {
        let token = corp_id_token(&env);
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = sig.as_bytes().to_vec();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(bytes).unwrap())
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "expired",
            env.corp
                .sign(None, &with("exp", json!(now() - 120)))
                .unwrap(),
        ),
        (
            "forged by another key with the same kid",
            stranger.sign(None, &good()).unwrap(),
        ),
        ("flipped signature byte", tampered),
        ("alg none", alg_none(&good())),
        (
            "HS256 keyed with the issuer's public key",
            env.corp.hs256_confused(&good()).unwrap(),
        ),
        (
            "typ at+jwt",
            env.corp.sign(Some("at+jwt"), &good()).unwrap(),
        ),
        (
            "typ ID-JAG",
            env.corp.sign(Some("oauth-id-jag+jwt"), &good()).unwrap(),
        ),
        (
            "untrusted issuer",
            env.corp
                .sign(None, &with("iss", json!("https://evil.example.com")))
                .unwrap(),
        ),
        (
            "issuer claim of one issuer, key of another",
            env.rsa.sign(None, &good()).unwrap(),
        ),
        (
            "too old",
            env.corp
                .sign(None, &with("iat", json!(now() - 7200)))
                .unwrap(),
        ),
        (
            "lives too long",
            env.corp
                .sign(None, &with("exp", json!(now() + 7200)))
                .unwrap(),
        ),
        ("no iat", env.corp.sign(None, &without("iat")).unwrap()),
        (
            "iat in the future",
            env.corp
                .sign(None, &with("iat", json!(now() + 600)))
                .unwrap(),
        ),
        ("no sub", env.corp.sign(None, &without("sub")).unwrap()),
        ("no aud", env.corp.sign(None, &without("aud")).unwrap()),
        ("garbage", "not.a.jwt".into()),
        ("oversized", "a".repeat(20_000)),
    ];
    for (name, token) in cases {
        let (status, body, _) = post(
            &env,
            exchange_form(&token, "id_token", CAL, &[]),
            &assistant(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"], "invalid_request", "{name}: {body}");
    }
    // A mandate token declared as an ID token, and an ID token declared as an access token.
    let app = exchange_ok(
        &env,
        &corp_id_token(&env),
        "id_token",
        "agent:booking-tool",
        &[],
        &assistant(),
    )
    .await;
    refused(
        &env,
        &app,
        "id_token",
        CAL,
        &[],
        &booking(),
        "invalid_request",
    )
    .await;
    refused(
        &env,
        &corp_id_token(&env),
        "access_token",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    // A forged mandate token (signed by a key mandate does not have).
    let mut forged_claims = claims_of(&app);
    forged_claims["authorization_details"][0]["scopes"] =
        json!(["calendar.read", "calendar.write", "calendar.admin"]);
    let forged = stranger.sign(Some("at+jwt"), &forged_claims).unwrap();
    refused(
        &env,
        &forged,
        "access_token",
        CAL,
        &[],
        &booking(),
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn no_issuer_asserts_another_issuers_users() {
    let env = env().await;
    // The as-is issuer cannot produce a namespaced subject.
    let id_token = env
        .primary
        .sign(None, &id_token_claims(PRIMARY, "corp|alice", "assistant"))
        .unwrap();
    refused(
        &env,
        &id_token,
        "id_token",
        CAL,
        &[],
        &assistant(),
        "invalid_request",
    )
    .await;
    // Its plain subjects stay plain.
    let id_token = env
        .primary
        .sign(None, &id_token_claims(PRIMARY, "dave", "assistant"))
        .unwrap();
    assert_eq!(
        claims_of(&exchange_ok(&env, &id_token, "id_token", CAL, &[], &assistant()).await)["sub"],
        "dave"
    );
    // A namespaced issuer claiming "corp|alice" stays inside its own namespace.
    let id_token = env
        .rsa
        .sign(None, &id_token_claims(RSA, "corp|alice", "assistant"))
        .unwrap();
    assert_eq!(
        claims_of(&exchange_ok(&env, &id_token, "id_token", CAL, &[], &assistant()).await)["sub"],
        "rsa|corp|alice"
    );
}

#[tokio::test]
async fn issued_tokens_never_outlive_their_parent() {
    let env = env().await;
    let short = env
        .corp
        .sign(
            None,
            &with_exp(id_token_claims(CORP, "alice", "0oa-assistant"), now() + 40),
        )
        .unwrap();
    let handoff = exchange_ok(
        &env,
        &short,
        "id_token",
        "agent:booking-tool",
        &[],
        &assistant(),
    )
    .await;
    let h_exp = claims_of(&handoff)["exp"].as_i64().unwrap();
    assert!(h_exp <= now() + 40);
    let app = exchange_ok(&env, &handoff, "access_token", CAL, &[], &booking()).await;
    assert!(claims_of(&app)["exp"].as_i64().unwrap() <= h_exp);
}

fn with_exp(mut claims: Value, exp: i64) -> Value {
    claims["exp"] = json!(exp);
    claims
}

#[tokio::test]
async fn development_mode_runs_the_whole_story() {
    let (settings, extras) = mandate_server::dev::development_settings().unwrap();
    let options = mandate_server::BuildOptions {
        demo_idp: Some(extras.demo_issuer_key.clone()),
        ..Default::default()
    };
    let server = TestServer::spawn_with(settings, options).await.unwrap();
    let response = server
        .http
        .post(server.url("/demo-idp/token"))
        .form(&[("sub", "alice"), ("client_id", "assistant")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id_token = body_json(response).await["id_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = exchange_form(
        &id_token,
        "id_token",
        "agent:booking-tool",
        &[("scope", "calendar.read")],
    );
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let auth = ClientAuth::Basic(
        "assistant".into(),
        mandate_server::dev::DEMO_SECRETS[0].1.into(),
    );
    let response = server.token(&pairs, &auth).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let handoff = body_json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&handoff)["sub"], "demo|alice");
    let form = exchange_form(
        &handoff,
        "access_token",
        "https://calendar.example.com",
        &[],
    );
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let auth = ClientAuth::Post(
        "booking-tool".into(),
        mandate_server::dev::DEMO_SECRETS[1].1.into(),
    );
    let response = server.token(&pairs, &auth).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let app = body_json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        claims_of(&app)["act"],
        json!({"sub": "booking-tool", "act": {"sub": "assistant"}})
    );
    server.stop().await;
}

#[tokio::test]
async fn the_demo_identity_provider_exists_only_in_development_mode() {
    let env = env().await;
    let response = env
        .server
        .http
        .post(env.server.url("/demo-idp/token"))
        .form(&[("sub", "alice"), ("client_id", "assistant")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// The ids the exchange gives its hops come from the state's `IdGenerator`: a test (or an
/// operator's own generator) decides them, and the issued token's `jti` and the ledger agree.
#[tokio::test]
async fn hop_ids_come_from_the_injected_generator() {
    #[derive(Debug, Default)]
    struct Numbered(std::sync::atomic::AtomicUsize);
    impl mandate_core::IdGenerator for Numbered {
        fn consent_id(&self) -> String {
            format!(
                "cns_{}",
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            )
        }
        fn hop_id(&self) -> mandate_chain::HopId {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            mandate_chain::HopId(format!("hop_numbered{n}"))
        }
    }
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn_with(
        mandate_testkit::delegation_settings(&corp),
        mandate_server::BuildOptions {
            ids: Some(std::sync::Arc::new(Numbered::default())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let id_token = corp
        .sign(
            None,
            &id_token_claims(mandate_testkit::CORP, "alice", "assistant"),
        )
        .unwrap();
    let first = mandate_testkit::delegation_issue(
        &server,
        &id_token,
        "id_token",
        mandate_testkit::CAL,
        "assistant",
    )
    .await
    .unwrap();
    let second = mandate_testkit::delegation_issue(
        &server,
        &id_token,
        "id_token",
        mandate_testkit::CAL,
        "assistant",
    )
    .await
    .unwrap();
    assert_eq!(claims_of(&first)["jti"], "hop_numbered0");
    assert_eq!(claims_of(&second)["jti"], "hop_numbered1");
    let hop = server
        .state
        .ledger
        .hop(&mandate_chain::HopId("hop_numbered1".into()))
        .await
        .unwrap();
    assert!(hop.is_some(), "the ledger holds the hop under the same id");
    server.stop().await;
}
