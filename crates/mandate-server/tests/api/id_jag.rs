//! ID-JAG redemption (the resource-AS half of cross-app access, DESIGN.md section 7,
//! PROTOCOLS.md 2.4) over real HTTP: the JWT-bearer grant, every refusal, single use and reuse,
//! revocation, and the metadata.

use std::sync::Arc;

use mandate_chain::{EvidenceKind, HopId, UpstreamGrant};
use mandate_model::{ClientId, Clock, FixedClock, IssuerAlias};
use mandate_server::config::{Acceptance, TrustedIssuerSettings};
use mandate_server::state::ExchangePause;
use mandate_server::{AppState, BuildOptions, Settings};
use mandate_testkit::{
    alg_none, b64_json, body_json, claims_of, delegation_settings, exchange_form, header_of,
    id_token_claims, now, random_secret, resource_server, ClientAuth, KeyKind, TestKey, TestServer,
    ADMIN_OPS, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const ID_JAG_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// Trusted for ID-JAGs only, strict single use.
const IDP: &str = "https://idp.example.com";
/// Trusted for ID-JAGs only, reuse by the same client until exp.
const REUSE: &str = "https://reuse-idp.example.com";
/// Trusted for ID tokens, JWTs and ID-JAGs.
const BOTH: &str = "https://both.example.com";
/// A registered app for which no policy row exists.
const FILES: &str = "https://files.example.com";

struct Env {
    server: TestServer,
    idp: TestKey,
    reuse: TestKey,
    both: TestKey,
    corp: TestKey,
}

fn trusted(
    url: &str,
    alias: &str,
    key: &TestKey,
    accept: Vec<Acceptance>,
) -> TrustedIssuerSettings {
    TrustedIssuerSettings {
        issuer: url.into(),
        alias: IssuerAlias::parse(alias).unwrap(),
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(key.jwks()),
        algorithms: vec![key.alg().into()],
        accept,
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }
}

/// The delegation world (issuer `corp` for ID tokens; agents `assistant`, `booking-tool` and
/// `helper`; apps calendar and mail; admin credentials) plus the ID-JAG issuers and a files app
/// without policy rows.
fn settings(idp: &TestKey, reuse: &TestKey, both: &TestKey, corp: &TestKey) -> Settings {
    let mut settings = delegation_settings(corp);
    settings
        .trusted_issuers
        .push(trusted(IDP, "idp", idp, vec![Acceptance::IdJag]));
    let mut reusable = trusted(REUSE, "ridp", reuse, vec![Acceptance::IdJag]);
    reusable.id_jag_reuse = true;
    settings.trusted_issuers.push(reusable);
    settings.trusted_issuers.push(trusted(
        BOTH,
        "both",
        both,
        vec![Acceptance::IdToken, Acceptance::Jwt, Acceptance::IdJag],
    ));
    settings
        .clients
        .push(resource_server("files-api", "files-secret", FILES).unwrap());
    settings
}

async fn env_with(options: BuildOptions) -> Env {
    let idp = TestKey::generate(KeyKind::Es256, Some("idp-1")).unwrap();
    let reuse = TestKey::generate(KeyKind::Es256, Some("reuse-1")).unwrap();
    let both = TestKey::generate(KeyKind::Rs256, Some("both-1")).unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn_with(settings(&idp, &reuse, &both, &corp), options)
        .await
        .unwrap();
    Env {
        server,
        idp,
        reuse,
        both,
        corp,
    }
}

async fn env() -> Env {
    env_with(BuildOptions::default()).await
}

fn assistant() -> ClientAuth {
    ClientAuth::Basic("assistant".into(), "assistant-secret".into())
}

fn booking() -> ClientAuth {
    ClientAuth::Basic("booking-tool".into(), "booking-secret".into())
}

/// The claims of a valid ID-JAG from `iss` for alice, for the assistant, granting calendar
/// read and admin at the calendar app; issued now, valid five minutes.
fn jag_claims(env: &Env, iss: &str) -> Value {
    json!({
        "iss": iss,
        "sub": "alice",
        "aud": env.server.issuer(),
        "client_id": "assistant",
        "jti": random_secret(),
        "iat": now(),
        "exp": now() + 300,
        "resource": CAL,
        "scope": "calendar.read calendar.admin",
        "auth_time": now() - 60,
        "amr": ["pwd", "otp"],
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

fn sign(key: &TestKey, claims: &Value) -> String {
    key.sign(Some("oauth-id-jag+jwt"), claims).unwrap()
}

async fn redeem(
    env: &Env,
    assertion: &str,
    extra: &[(&str, &str)],
    auth: &ClientAuth,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut form = vec![("grant_type", JWT_BEARER), ("assertion", assertion)];
    form.extend_from_slice(extra);
    let response = env.server.token(&form, auth).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, body_json(response).await, headers)
}

/// Redeems and expects success; returns the response body.
async fn redeem_ok(env: &Env, assertion: &str, extra: &[(&str, &str)], auth: &ClientAuth) -> Value {
    let (status, body, headers) = redeem(env, assertion, extra, auth).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("issued_token_type").is_none(), "{body}");
    body
}

async fn refused(
    env: &Env,
    assertion: &str,
    extra: &[(&str, &str)],
    auth: &ClientAuth,
    code: &str,
) {
    let (status, body, headers) = redeem(env, assertion, extra, auth).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(body.get("access_token").is_none());
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(
        assertion.is_empty() || !description.contains(assertion),
        "descriptions never echo the assertion"
    );
}

#[tokio::test]
async fn an_id_jag_is_redeemed_for_a_root_token_of_a_new_chain() {
    let env = env().await;
    let claims = jag_claims(&env, IDP);
    let jti = claims["jti"].as_str().unwrap().to_owned();
    let body = redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    // ID-JAG scope ∩ the policy row (calendar.read calendar.write).
    assert_eq!(body["scope"], "calendar.read");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((295..=300).contains(&expires_in), "{expires_in}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(header_of(token)["typ"], "at+jwt");
    let at = claims_of(token);
    assert_eq!(at["iss"], env.server.issuer());
    assert_eq!(at["sub"], "idp|alice");
    assert_eq!(at["act"], json!({"sub": "assistant"}));
    assert_eq!(at["aud"], CAL);
    assert_eq!(at["client_id"], "assistant");
    assert_eq!(at["scope"], "calendar.read");
    assert_eq!(at["ancestors"], json!([]));
    assert!(at["exp"].as_i64().unwrap() <= claims["exp"].as_i64().unwrap());
    let chain = env.server.state.chain_key.derive("idp", &jti);
    assert_eq!(at["chain_id"], chain.0);

    // The ledger: a root hop whose evidence is the ID-JAG.
    let hop = env
        .server
        .state
        .ledger
        .hop(&HopId(at["jti"].as_str().unwrap().into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hop.chain_id, chain);
    assert_eq!(hop.parent, None);
    assert_eq!(hop.depth, 1);
    assert_eq!(hop.evidence.kind, EvidenceKind::IdJag);
    let reference: Value = serde_json::from_str(&hop.evidence.reference).unwrap();
    assert_eq!(reference, json!({"iss": IDP, "jti": jti}));
    assert_eq!(
        hop.upstream,
        Some(UpstreamGrant {
            issuer: IDP.into(),
            grant_id: jti.clone(),
            expires_at: claims["exp"].as_i64().unwrap(),
        })
    );

    // The app that owns the audience sees it as active.
    let response = env
        .server
        .post_form(
            "/introspect",
            &[("token", token)],
            &ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
        )
        .await
        .unwrap();
    let introspection = body_json(response).await;
    assert_eq!(introspection["active"], true, "{introspection}");
    assert_eq!(introspection["sub"], "idp|alice");
}

#[tokio::test]
async fn accepted_variants_of_typ_aud_and_scope() {
    let env = env().await;
    // `application/` prefix (decision D5).
    let token = env
        .idp
        .sign(Some("application/oauth-id-jag+jwt"), &jag_claims(&env, IDP))
        .unwrap();
    redeem_ok(&env, &token, &[], &assistant()).await;
    // A one-element aud array (decision D3).
    let claims = with(jag_claims(&env, IDP), "aud", json!([env.server.issuer()]));
    redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    // The request's scope narrows.
    let claims = with(
        jag_claims(&env, IDP),
        "scope",
        json!("calendar.read calendar.write"),
    );
    let body = redeem_ok(
        &env,
        &sign(&env.idp, &claims),
        &[("scope", "calendar.write")],
        &assistant(),
    )
    .await;
    assert_eq!(body["scope"], "calendar.write");
    // Without a scope claim the policy row bounds the grant.
    let claims = without(jag_claims(&env, IDP), "scope");
    let body = redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    assert_eq!(body["scope"], "calendar.read calendar.write");
    // Another client authentication method (client_secret_basic above; a private_key_jwt or
    // client_secret_post client is the same path) and an RS256 issuer.
    let body = redeem_ok(
        &env,
        &sign(&env.both, &jag_claims(&env, BOTH)),
        &[],
        &assistant(),
    )
    .await;
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["sub"],
        "both|alice"
    );
}

#[tokio::test]
async fn a_foreign_act_is_kept_only_in_the_ledger() {
    let env = env().await;
    let claims = with(
        jag_claims(&env, IDP),
        "act",
        json!({"sub": "idp-side-agent", "act": {"sub": "mallory"}}),
    );
    let body = redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    let at = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(at["act"], json!({"sub": "assistant"}));
    let hop = env
        .server
        .state
        .ledger
        .hop(&HopId(at["jti"].as_str().unwrap().into()))
        .await
        .unwrap()
        .unwrap();
    let reference: Value = serde_json::from_str(&hop.evidence.reference).unwrap();
    assert_eq!(reference["act"]["sub"], "idp-side-agent");
    assert_eq!(hop.actors, vec![ClientId::parse("assistant").unwrap()]);
}

#[tokio::test]
async fn bad_assertions_are_invalid_grant() {
    let env = env().await;
    let good = || jag_claims(&env, IDP);
    let issuer = env.server.issuer().to_owned();
    let stranger = TestKey::generate(KeyKind::Es256, Some("idp-1")).unwrap();
    let tampered = {
        let token = sign(&env.idp, &good());
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = sig.as_bytes().to_vec();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        format!("{head}.{}", String::from_utf8(bytes).unwrap())
    };
    let own_id_jag = env
        .server
        .state
        .keys
        .current()
        .active()
        .sign("oauth-id-jag+jwt", &with(good(), "iss", json!(issuer)))
        .unwrap();
    let mut cases: Vec<(&str, String)> = vec![
        ("wrong typ JWT", env.idp.sign(Some("JWT"), &good()).unwrap()),
        ("typ at+jwt", env.idp.sign(Some("at+jwt"), &good()).unwrap()),
        (
            "typ with another case",
            env.idp.sign(Some("OAUTH-ID-JAG+JWT"), &good()).unwrap(),
        ),
        ("missing typ", env.idp.sign(None, &good()).unwrap()),
        (
            "foreign aud",
            sign(
                &env.idp,
                &with(good(), "aud", json!("https://other-as.example.com")),
            ),
        ),
        (
            "multi-element aud",
            sign(
                &env.idp,
                &with(
                    good(),
                    "aud",
                    json!([issuer, "https://other-as.example.com"]),
                ),
            ),
        ),
        (
            "aud repeated",
            sign(&env.idp, &with(good(), "aud", json!([issuer, issuer]))),
        ),
        (
            "empty aud array",
            sign(&env.idp, &with(good(), "aud", json!([]))),
        ),
        (
            "token endpoint URL as aud",
            sign(
                &env.idp,
                &with(good(), "aud", json!(format!("{issuer}/token"))),
            ),
        ),
        (
            "client_id of another client",
            sign(&env.idp, &with(good(), "client_id", json!("booking-tool"))),
        ),
        (
            "untrusted issuer",
            sign(
                &env.idp,
                &with(good(), "iss", json!("https://evil.example.com")),
            ),
        ),
        (
            "issuer trusted, but not for ID-JAGs",
            sign(&env.corp, &with(good(), "iss", json!(CORP))),
        ),
        (
            "issuer claim of one issuer, key of another",
            sign(&env.reuse, &good()),
        ),
        (
            "forged by another key with the same kid",
            sign(&stranger, &good()),
        ),
        ("flipped signature byte", tampered),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64_json(&json!({"alg": "none", "typ": "oauth-id-jag+jwt"})),
                b64_json(&good())
            ),
        ),
        ("alg none without typ", alg_none(&good())),
        (
            "HS256 keyed with the issuer's public JWK",
            jsonwebtoken::encode(
                &jsonwebtoken::Header {
                    typ: Some("oauth-id-jag+jwt".into()),
                    kid: Some("idp-1".into()),
                    ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
                },
                &good(),
                &jsonwebtoken::EncodingKey::from_secret(
                    env.idp.public_jwk().to_string().as_bytes(),
                ),
            )
            .unwrap(),
        ),
        (
            "HS256 key confusion, as minted",
            env.idp.hs256_confused(&good()).unwrap(),
        ),
        (
            "expired beyond the skew",
            sign(
                &env.idp,
                &with(
                    with(good(), "exp", json!(now() - 120)),
                    "iat",
                    json!(now() - 400),
                ),
            ),
        ),
        (
            "iat in the future",
            sign(
                &env.idp,
                &with(
                    with(good(), "iat", json!(now() + 600)),
                    "exp",
                    json!(now() + 900),
                ),
            ),
        ),
        (
            "nbf in the future",
            sign(&env.idp, &with(good(), "nbf", json!(now() + 600))),
        ),
        (
            "lives longer than an hour",
            sign(&env.idp, &with(good(), "exp", json!(now() + 3700))),
        ),
        (
            "cnf (key-bound, no proof)",
            sign(
                &env.idp,
                &with(
                    good(),
                    "cnf",
                    json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
                ),
            ),
        ),
        (
            "cnf not a DPoP thumbprint",
            sign(
                &env.idp,
                &with(
                    good(),
                    "cnf",
                    json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}),
                ),
            ),
        ),
        (
            "issued by this server",
            sign(&env.idp, &with(good(), "iss", json!(issuer))),
        ),
        ("an ID-JAG this server signed itself", own_id_jag),
        (
            "an ID token of an issuer also trusted for ID-JAGs",
            env.both
                .sign(None, &id_token_claims(BOTH, "alice", "assistant"))
                .unwrap(),
        ),
        ("not a JWT", "not-a-jwt".into()),
        ("empty jti", sign(&env.idp, &with(good(), "jti", json!("")))),
        (
            "jti too long",
            sign(&env.idp, &with(good(), "jti", json!("j".repeat(300)))),
        ),
        (
            "scope claim malformed",
            sign(
                &env.idp,
                &with(good(), "scope", json!("calendar.read \"x\"")),
            ),
        ),
        (
            "resource claim empty",
            sign(&env.idp, &with(good(), "resource", json!([]))),
        ),
        (
            "sub with a control character",
            sign(&env.idp, &with(good(), "sub", json!("al\u{1}ice"))),
        ),
        (
            "exp not a number",
            sign(&env.idp, &with(good(), "exp", json!("soon"))),
        ),
    ];
    let mut cases: Vec<(String, String)> = cases
        .drain(..)
        .map(|(name, token)| (name.to_string(), token))
        .collect();
    for claim in ["jti", "iss", "sub", "aud", "client_id", "exp", "iat"] {
        cases.push((
            format!("missing {claim}"),
            sign(&env.idp, &without(good(), claim)),
        ));
    }
    for (name, token) in &cases {
        let (status, body, headers) = redeem(&env, token, &[], &assistant()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{name}: {body}");
        assert_eq!(headers["cache-control"], "no-store", "{name}");
        let description = body["error_description"].as_str().unwrap_or_default();
        assert!(
            description.contains(refusal_reason(name)),
            "{name}: {description}"
        );
        assert!(!description.contains(token.as_str()), "{name}");
    }
}

/// What the description of each case of [`bad_assertions_are_invalid_grant`] says: each is
/// refused for its own reason, not by an earlier check.
fn refusal_reason(case: &str) -> &'static str {
    match case {
        "wrong typ JWT"
        | "typ at+jwt"
        | "typ with another case"
        | "missing typ"
        | "alg none without typ"
        | "HS256 key confusion, as minted"
        | "an ID token of an issuer also trusted for ID-JAGs" => "must have typ oauth-id-jag+jwt",
        "foreign aud"
        | "multi-element aud"
        | "aud repeated"
        | "empty aud array"
        | "token endpoint URL as aud" => "audience must be this server's issuer alone",
        "client_id of another client" => "client_id does not match",
        "untrusted issuer" | "issuer trusted, but not for ID-JAGs" => "not trusted for ID-JAGs",
        "issuer claim of one issuer, key of another"
        | "forged by another key with the same kid"
        | "flipped signature byte"
        | "alg none"
        | "HS256 keyed with the issuer's public JWK" => "signature is invalid",
        "expired beyond the skew" => "has expired",
        "iat in the future" => "issued in the future",
        "nbf in the future" => "not yet valid",
        "lives longer than an hour" => "lives too long",
        "cnf (key-bound, no proof)" => "proof of possession required",
        "cnf not a DPoP thumbprint" => "cnf must be a DPoP key thumbprint",
        "issued by this server" | "an ID-JAG this server signed itself" => {
            "does not redeem ID-JAGs it issued"
        }
        "not a JWT" => "not a well-formed JWT",
        "empty jti" | "missing jti" => "has no jti",
        "jti too long" => "longer than 256",
        "scope claim malformed" => "scope claim is malformed",
        "resource claim empty" => "resource claim is empty",
        "sub with a control character" => "sub cannot be used",
        "exp not a number" => "claims are malformed",
        "missing iss" => "has no iss",
        "missing sub" => "has no sub",
        "missing aud" => "has no aud",
        "missing client_id" => "has no client_id",
        "missing exp" => "has no exp",
        "missing iat" => "has no iat",
        other => panic!("no expected reason for {other}"),
    }
}

#[tokio::test]
async fn expiry_within_the_skew_is_accepted_and_the_token_never_outlives_the_grant() {
    let env = env().await;
    let claims = with(
        with(jag_claims(&env, IDP), "exp", json!(now() - 20)),
        "iat",
        json!(now() - 300),
    );
    let body = redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    assert!(body["expires_in"].as_i64().unwrap() <= 1, "{body}");
    // A short grant caps the token's lifetime.
    let claims = with(jag_claims(&env, IDP), "exp", json!(now() + 40));
    let body = redeem_ok(&env, &sign(&env.idp, &claims), &[], &assistant()).await;
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((35..=40).contains(&expires_in), "{expires_in}");
    let at = claims_of(body["access_token"].as_str().unwrap());
    assert!(at["exp"].as_i64().unwrap() <= claims["exp"].as_i64().unwrap());
}

#[tokio::test]
async fn a_mandate_access_token_is_not_an_assertion() {
    let env = env().await;
    let body = redeem_ok(
        &env,
        &sign(&env.idp, &jag_claims(&env, IDP)),
        &[],
        &assistant(),
    )
    .await;
    let access_token = body["access_token"].as_str().unwrap();
    refused(&env, access_token, &[], &assistant(), "invalid_grant").await;
}

#[tokio::test]
async fn strict_mode_refuses_a_second_use() {
    let env = env().await;
    let token = sign(&env.idp, &jag_claims(&env, IDP));
    // A refused request does not spend the grant.
    refused(
        &env,
        &token,
        &[("scope", "calendar.write")],
        &assistant(),
        "invalid_scope",
    )
    .await;
    redeem_ok(&env, &token, &[], &assistant()).await;
    let (status, body, _) = redeem(&env, &token, &[], &assistant()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("already been used"));
}

#[tokio::test]
async fn reuse_mode_lets_the_same_client_present_it_again_and_nobody_else() {
    let env = env().await;
    let claims = jag_claims(&env, REUSE);
    let token = sign(&env.reuse, &claims);
    let first = redeem_ok(&env, &token, &[], &assistant()).await;
    let second = redeem_ok(&env, &token, &[], &assistant()).await;
    let (a, b) = (
        claims_of(first["access_token"].as_str().unwrap()),
        claims_of(second["access_token"].as_str().unwrap()),
    );
    assert_eq!(
        a["chain_id"], b["chain_id"],
        "the same grant, the same chain"
    );
    assert_ne!(a["jti"], b["jti"]);
    // Decision D2: another client re-presenting it is refused (the grant names its client).
    refused(&env, &token, &[], &booking(), "invalid_grant").await;
    // An ID-JAG for the booking tool is the booking tool's alone.
    let for_booking = sign(
        &env.reuse,
        &with(jag_claims(&env, REUSE), "client_id", json!("booking-tool")),
    );
    refused(&env, &for_booking, &[], &assistant(), "invalid_grant").await;
    redeem_ok(&env, &for_booking, &[], &booking()).await;
}

#[tokio::test]
async fn the_grant_is_bounded_by_policy_and_the_id_jag() {
    let env = env().await;
    let jag = |claims: Value| sign(&env.idp, &claims);
    // Scope widening beyond the ID-JAG.
    refused(
        &env,
        &jag(jag_claims(&env, IDP)),
        &[("scope", "calendar.write")],
        &assistant(),
        "invalid_scope",
    )
    .await;
    // Nothing in common between the ID-JAG and the policy row.
    refused(
        &env,
        &jag(with(
            jag_claims(&env, IDP),
            "scope",
            json!("calendar.admin"),
        )),
        &[],
        &assistant(),
        "invalid_scope",
    )
    .await;
    // A malformed request scope.
    refused(
        &env,
        &jag(jag_claims(&env, IDP)),
        &[("scope", "calendar.read \"x\"")],
        &assistant(),
        "invalid_scope",
    )
    .await;
    // No policy row for (assistant, files).
    refused(
        &env,
        &jag(with(jag_claims(&env, IDP), "resource", json!(FILES))),
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    // A resource no registered app owns.
    refused(
        &env,
        &jag(with(
            jag_claims(&env, IDP),
            "resource",
            json!("https://unknown.example.com"),
        )),
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    // A hand-off audience is never a resource.
    refused(
        &env,
        &jag(with(
            jag_claims(&env, IDP),
            "resource",
            json!("agent:booking-tool"),
        )),
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
}

#[tokio::test]
async fn the_resource_comes_from_the_id_jag_and_the_request_picks_among_several() {
    let env = env().await;
    let several = || {
        with(
            with(jag_claims(&env, IDP), "resource", json!([CAL, MAIL])),
            "scope",
            json!("calendar.read mail.read"),
        )
    };
    refused(
        &env,
        &sign(&env.idp, &several()),
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    let body = redeem_ok(
        &env,
        &sign(&env.idp, &several()),
        &[("resource", MAIL)],
        &assistant(),
    )
    .await;
    let at = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(
        (at["aud"].as_str(), at["scope"].as_str()),
        (Some(MAIL), Some("mail.read"))
    );
    // A requested resource outside the ID-JAG.
    refused(
        &env,
        &sign(&env.idp, &jag_claims(&env, IDP)),
        &[("resource", MAIL)],
        &assistant(),
        "invalid_target",
    )
    .await;
    // Two requested resources.
    refused(
        &env,
        &sign(&env.idp, &several()),
        &[("resource", MAIL), ("resource", CAL)],
        &assistant(),
        "invalid_target",
    )
    .await;
    // No resource claim: the request names it, and policy still bounds it.
    let unscoped = || without(jag_claims(&env, IDP), "resource");
    refused(
        &env,
        &sign(&env.idp, &unscoped()),
        &[],
        &assistant(),
        "invalid_target",
    )
    .await;
    refused(
        &env,
        &sign(&env.idp, &unscoped()),
        &[("resource", FILES)],
        &assistant(),
        "invalid_target",
    )
    .await;
    let body = redeem_ok(
        &env,
        &sign(&env.idp, &unscoped()),
        &[("resource", CAL)],
        &assistant(),
    )
    .await;
    assert_eq!(
        claims_of(body["access_token"].as_str().unwrap())["aud"],
        CAL
    );
}

#[tokio::test]
async fn the_client_must_authenticate_as_an_agent() {
    let env = env().await;
    let token = sign(&env.idp, &jag_claims(&env, IDP));
    for auth in [
        ClientAuth::None,
        ClientAuth::Basic("assistant".into(), "wrong-secret".into()),
        ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
    ] {
        let (status, body, _) = redeem(&env, &token, &[], &auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert_eq!(body["error"], "invalid_client");
    }
    // The assertion was not spent by those attempts.
    redeem_ok(&env, &token, &[], &assistant()).await;
    // The request must carry an assertion.
    let response = env
        .server
        .token(&[("grant_type", JWT_BEARER)], &assistant())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
}

#[tokio::test]
async fn an_id_jag_is_not_a_token_exchange_subject_token() {
    let env = env().await;
    // The `both` issuer is trusted for ID tokens, JWTs and ID-JAGs; its ID tokens work …
    let id_token = env
        .both
        .sign(None, &id_token_claims(BOTH, "alice", "assistant"))
        .unwrap();
    let response = env
        .server
        .token(
            &exchange_form(&id_token, "id_token", CAL, &[])
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
            &assistant(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // … but an ID-JAG is refused by the exchange, whatever type it is declared as.
    let mut claims = jag_claims(&env, BOTH);
    claims["aud"] = json!("assistant");
    let id_jag = sign(&env.both, &claims);
    for kind in ["id_token", "jwt", "id-jag", "access_token"] {
        let form = exchange_form(&id_jag, kind, CAL, &[]);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = env.server.token(&pairs, &assistant()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{kind}");
        let body = body_json(response).await;
        assert_eq!(body["error"], "invalid_request", "{kind}: {body}");
    }
    let form = exchange_form(&id_jag, "id_token", CAL, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = body_json(env.server.token(&pairs, &assistant()).await.unwrap()).await;
    assert_eq!(
        body["error_description"],
        "subject_token has the wrong typ header"
    );
}

async fn admin_post(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(ADMIN_OPS)
        .json(&json!({"reason": "incident 42"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

async fn is_active(env: &Env, token: &str) -> bool {
    let response = env
        .server
        .post_form(
            "/introspect",
            &[("token", token)],
            &ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
        )
        .await
        .unwrap();
    body_json(response).await["active"] == true
}

#[tokio::test]
async fn revoking_the_chain_stops_the_id_jag() {
    let env = env().await;
    let token = sign(&env.reuse, &jag_claims(&env, REUSE));
    let body = redeem_ok(&env, &token, &[], &assistant()).await;
    let access_token = body["access_token"].as_str().unwrap().to_owned();
    let chain = claims_of(&access_token)["chain_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The admin view shows the root hop and its evidence.
    let response = env
        .server
        .admin_get(&format!("/admin/chains/{chain}"), Some(ADMIN_OPS))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let view = body_json(response).await.to_string();
    assert!(view.contains("id_jag"), "{view}");
    let (status, body) = admin_post(&env.server, &format!("/admin/chains/{chain}/revoke")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!is_active(&env, &access_token).await);
    // Reuse mode would have allowed a re-presentation; the revoked chain does not.
    let (status, body, _) = redeem(&env, &token, &[], &assistant()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_description"], "the ID-JAG has been revoked");
    // Another ID-JAG is another grant.
    redeem_ok(
        &env,
        &sign(&env.reuse, &jag_claims(&env, REUSE)),
        &[],
        &assistant(),
    )
    .await;
}

#[tokio::test]
async fn revoking_the_subject_stops_id_jags_issued_before() {
    let clock = Arc::new(FixedClock::at(now()));
    let env = env_with(BuildOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    })
    .await;
    let at = |secs: i64| {
        let mut claims = jag_claims(&env, IDP);
        claims["iat"] = json!(secs);
        claims["exp"] = json!(secs + 300);
        claims
    };
    let before = sign(&env.idp, &at(clock.now_secs() - 5));
    let (status, body) = admin_post(&env.server, "/admin/subjects/idp%7Calice/revoke").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    refused(&env, &before, &[], &assistant(), "invalid_grant").await;
    // Issued after the revocation (the user signed in at the IdP again).
    clock.advance(2);
    let after = sign(&env.idp, &at(clock.now_secs()));
    redeem_ok(&env, &after, &[], &assistant()).await;
}

#[derive(Debug)]
struct RevokeChainMidway;

#[async_trait::async_trait]
impl ExchangePause for RevokeChainMidway {
    async fn after_hop_recorded(&self, state: &AppState, hop: &mandate_chain::HopRecord) {
        state
            .revocation
            .revoke_chain(&hop.chain_id.0, "race", "test")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_revocation_landing_mid_redemption_leaves_no_token() {
    let env = env_with(BuildOptions {
        exchange_pause: Some(Arc::new(RevokeChainMidway)),
        ..Default::default()
    })
    .await;
    let (status, body, _) = redeem(
        &env,
        &sign(&env.idp, &jag_claims(&env, IDP)),
        &[],
        &assistant(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("access_token").is_none());
}

#[tokio::test]
async fn discovery_advertises_the_profile_only_when_an_issuer_is_trusted_for_id_jags() {
    let env = env().await;
    let document = env
        .server
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(
        document["authorization_grant_profiles_supported"],
        json!([ID_JAG_PROFILE])
    );
    let grants = document["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&json!(JWT_BEARER)));
    assert!(grants.contains(&json!("urn:ietf:params:oauth:grant-type:token-exchange")));
    // Never the trusted-issuer list (ID-JAG §7).
    let text = document.to_string();
    for issuer in [IDP, REUSE, BOTH, CORP] {
        assert!(!text.contains(issuer), "{issuer} published");
    }

    // Without an issuer trusted for ID-JAGs: neither advertised nor served.
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let document = server
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert!(document
        .get("authorization_grant_profiles_supported")
        .is_none());
    assert_eq!(
        document["grant_types_supported"],
        json!(["urn:ietf:params:oauth:grant-type:token-exchange"])
    );
    let claims = with(jag_claims(&env, CORP), "aud", json!(server.issuer()));
    let response = server
        .token(
            &[
                ("grant_type", JWT_BEARER),
                ("assertion", &sign(&corp, &claims)),
            ],
            &assistant(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    server.stop().await;
}
