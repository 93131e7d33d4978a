//! ID-JAG issuance (the IdP half of cross-app access, DESIGN.md section 7, PROTOCOLS.md 2.3)
//! over real HTTP: the exchange, the claims, the ledger, every refusal, and the full two-party
//! flow against a second mandate playing the resource AS.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mandate_chain::{EvidenceKind, HopId, UpstreamGrant};
use mandate_model::{Audience, ClientId, ScopeSet};
use mandate_server::config::{ConfigSource, IdJagResourceServerSettings};
use mandate_server::{AppState, BuildOptions, Listeners, RunningServer, Signals};
use mandate_testkit::{
    body_json, claims_of, delegation_settings, exchange_form, header_of, id_token_claims, now,
    resource_as_settings, ClientAuth, KeyKind, TestKey, TestServer, CORP, FILES, RAS_SECRET,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The API behind the resource AS.
/// A second API the row does not list.
const OTHER_API: &str = "https://other-api.example.com";
/// A resource AS whose row maps no client id for the assistant.
const UNMAPPED_AS: &str = "https://unmapped-as.example.com";

/// mandate as the enterprise IdP broker, and a second mandate as the resource AS.
struct Env {
    idp: TestServer,
    corp: TestKey,
    ras_issuer: String,
    ras_state: AppState,
    ras: Option<RunningServer>,
    http: reqwest::Client,
}

impl Env {
    async fn stop(mut self) {
        if let Some(ras) = self.ras.take() {
            ras.stop().await;
        }
        self.idp.stop().await;
    }
}

fn assistant() -> ClientAuth {
    ClientAuth::Basic("assistant".into(), "assistant-secret".into())
}

async fn env() -> Env {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    // The resource AS's address is needed by the IdP's configuration, and the IdP's keys by the
    // resource AS's: bind the resource AS first, start it last.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let ras_listeners = Listeners::bind(loopback, loopback).unwrap();
    let ras_public = ras_listeners.public.local_addr().unwrap();
    let ras_admin = ras_listeners.admin.local_addr().unwrap();
    let ras_issuer = format!("http://{ras_public}");

    let mut settings = delegation_settings(&corp);
    settings.id_jag.resource_servers = vec![
        IdJagResourceServerSettings {
            issuer: ras_issuer.clone(),
            client_ids: BTreeMap::from([(
                ClientId::parse("assistant").unwrap(),
                "assistant-at-ras".to_owned(),
            )]),
            resources: vec![Audience::parse(FILES).unwrap()],
            scopes: ScopeSet::parse("files.read files.write").unwrap(),
        },
        IdJagResourceServerSettings {
            issuer: UNMAPPED_AS.into(),
            client_ids: BTreeMap::from([(
                ClientId::parse("booking-tool").unwrap(),
                "booking-at-unmapped".to_owned(),
            )]),
            resources: vec![Audience::parse(FILES).unwrap()],
            scopes: ScopeSet::parse("files.read").unwrap(),
        },
    ];
    let idp = TestServer::spawn(settings).await.unwrap();

    // The resource AS trusts the IdP's published keys (inline copy) for ID-JAGs only.
    let jwks = idp.get_json("/jwks").await.unwrap();
    let alg = jwks["keys"][0]["alg"]
        .as_str()
        .unwrap_or("ES256")
        .to_owned();
    let mut ras = resource_as_settings(&ras_issuer, idp.issuer(), jwks, vec![alg]);
    ras.listen = ras_public;
    ras.admin_listen = ras_admin;
    let ras_state = AppState::build(ras, ConfigSource::Programmatic, BuildOptions::default())
        .await
        .unwrap();
    let running = mandate_server::start(ras_state.clone(), ras_listeners, Signals::Ignore).unwrap();
    Env {
        idp,
        corp,
        ras_issuer,
        ras_state,
        ras: Some(running),
        http: reqwest::Client::new(),
    }
}

/// Alice's ID token from corp, issued to `aud`.
fn id_token(env: &Env, aud: &str) -> (String, Value) {
    let mut claims = id_token_claims(CORP, "alice", aud);
    claims["auth_time"] = json!(now() - 120);
    (env.corp.sign(None, &claims).unwrap(), claims)
}

async fn request(
    env: &Env,
    subject_token: &str,
    subject_token_type: &str,
    audience: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut extra = extra.to_vec();
    extra.push(("requested_token_type", ID_JAG));
    let form = exchange_form(subject_token, subject_token_type, audience, &extra);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = env.idp.token(&pairs, &assistant()).await.unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

async fn refused(
    env: &Env,
    token: &str,
    kind: &str,
    audience: &str,
    extra: &[(&str, &str)],
    code: &str,
) {
    let (status, body) = request(env, token, kind, audience, extra).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body.get("access_token").is_none());
}

/// Redeems `assertion` at the resource AS as `assistant-at-ras`.
async fn redeem_at_ras(env: &Env, assertion: &str) -> (StatusCode, Value) {
    let response = env
        .http
        .post(format!("{}/token", env.ras_issuer))
        .basic_auth("assistant-at-ras", Some(RAS_SECRET))
        .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

#[tokio::test]
async fn an_id_token_is_exchanged_for_an_id_jag_recorded_as_a_root_hop() {
    let env = env().await;
    let (token, id_claims) = id_token(&env, "assistant");
    let (status, body) = request(&env, &token, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["issued_token_type"], ID_JAG);
    assert_eq!(body["token_type"], "N_A");
    assert_eq!(body["scope"], "files.read files.write");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((295..=300).contains(&expires_in), "{expires_in}");

    let jag = body["access_token"].as_str().unwrap();
    let header = header_of(jag);
    assert_eq!(header["typ"], "oauth-id-jag+jwt");
    assert!(header["kid"].is_string());
    let claims = claims_of(jag);
    assert_eq!(claims["iss"], env.idp.issuer());
    assert_eq!(claims["sub"], "corp|alice");
    assert_eq!(claims["aud"], json!(env.ras_issuer), "aud is a string");
    assert_eq!(claims["client_id"], "assistant-at-ras");
    assert_eq!(claims["resource"], json!(FILES), "the row's only resource");
    assert_eq!(claims["scope"], "files.read files.write");
    assert_eq!(claims["auth_time"], id_claims["auth_time"]);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert!(exp - iat <= 300 && exp > iat);
    assert!(exp <= id_claims["exp"].as_i64().unwrap());
    for absent in ["act", "cnf", "chain_id", "nbf"] {
        assert!(claims.get(absent).is_none(), "{absent}: {claims}");
    }
    let jti = claims["jti"].as_str().unwrap();
    assert!(jti.starts_with("hop_"));

    let hop = env
        .idp
        .state
        .ledger
        .hop(&HopId(jti.into()))
        .await
        .unwrap()
        .expect("the issuance is a hop");
    let id_jti = id_claims["jti"].as_str().unwrap();
    assert_eq!(hop.chain_id, env.idp.state.chain_key.derive("corp", id_jti));
    assert_eq!(hop.parent, None);
    assert_eq!(hop.depth, 1);
    assert_eq!(hop.subject.to_string(), "corp|alice");
    assert_eq!(hop.client_id.as_str(), "assistant");
    assert_eq!(hop.audience.to_string(), env.ras_issuer);
    assert_eq!(hop.evidence.kind, EvidenceKind::UpstreamAudience);
    assert_eq!(hop.evidence.reference, "assistant");
    assert_eq!((hop.issued_at, hop.expires_at), (iat, exp));
    assert_eq!(
        hop.upstream,
        Some(UpstreamGrant {
            issuer: CORP.into(),
            grant_id: id_jti.into(),
            expires_at: id_claims["exp"].as_i64().unwrap(),
        })
    );

    // Explicit resource and a narrower scope; the ID-JAG never outlives the ID token.
    let mut short = id_token_claims(CORP, "alice", "assistant");
    short["exp"] = json!(now() + 100);
    let short_token = env.corp.sign(None, &short).unwrap();
    let (status, body) = request(
        &env,
        &short_token,
        "id_token",
        &env.ras_issuer,
        &[("resource", FILES), ("scope", "files.read")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "files.read");
    let claims = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(claims["exp"], short["exp"]);
    assert_eq!(claims["scope"], "files.read");
    assert!(claims.get("auth_time").is_none());
    env.stop().await;
}

#[tokio::test]
async fn the_resource_as_redeems_the_id_jag_for_the_mapped_client() {
    let env = env().await;
    let (token, _) = id_token(&env, "assistant");
    let (status, body) = request(&env, &token, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jag = body["access_token"].as_str().unwrap().to_owned();

    let (status, body) = redeem_at_ras(&env, &jag).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    // The ID-JAG's scope ∩ the resource AS's policy row.
    assert_eq!(body["scope"], "files.read");
    let at = claims_of(body["access_token"].as_str().unwrap());
    assert_eq!(at["iss"], env.ras_issuer);
    assert_eq!(at["act"], json!({"sub": "assistant-at-ras"}));
    assert_eq!(at["client_id"], "assistant-at-ras");
    assert_eq!(at["aud"], FILES);
    assert_eq!(at["sub"], "ent|corp|alice");
    let hop = env
        .ras_state
        .ledger
        .hop(&HopId(at["jti"].as_str().unwrap().into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hop.evidence.kind, EvidenceKind::IdJag);

    // Single use at the resource AS.
    let (status, body) = redeem_at_ras(&env, &jag).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    env.stop().await;
}

#[tokio::test]
async fn refusals() {
    let env = env().await;
    let (token, _) = id_token(&env, "assistant");
    let ras = env.ras_issuer.clone();
    // Unknown audience, or none.
    refused(
        &env,
        &token,
        "id_token",
        "https://nowhere.example.com",
        &[],
        "invalid_target",
    )
    .await;
    refused(&env, &token, "id_token", FILES, &[], "invalid_target").await;
    // Resource outside the row.
    refused(
        &env,
        &token,
        "id_token",
        &ras,
        &[("resource", OTHER_API)],
        "invalid_target",
    )
    .await;
    // Scope outside the row.
    refused(
        &env,
        &token,
        "id_token",
        &ras,
        &[("scope", "files.read files.admin")],
        "invalid_scope",
    )
    .await;
    // No client-id mapping for this agent at that resource AS.
    refused(&env, &token, "id_token", UNMAPPED_AS, &[], "invalid_target").await;
    // An ID token issued to another client.
    let (other, _) = id_token(&env, "booking-tool");
    refused(&env, &other, "id_token", &ras, &[], "invalid_request").await;
    // Not an ID token: the same JWT declared as a JWT, a mandate access token, SAML, refresh.
    refused(&env, &token, "jwt", &ras, &[], "invalid_request").await;
    refused(&env, &token, "saml2", &ras, &[], "invalid_request").await;
    refused(&env, &token, "refresh_token", &ras, &[], "invalid_request").await;
    let at_form = exchange_form(&token, "id_token", "https://calendar.example.com", &[]);
    let pairs: Vec<(&str, &str)> = at_form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = env.idp.token(&pairs, &assistant()).await.unwrap();
    let at = body_json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    refused(&env, &at, "access_token", &ras, &[], "invalid_request").await;
    // audience is required, and nothing was recorded for any refusal.
    let form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", token.as_str()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:id_token",
        ),
        ("requested_token_type", ID_JAG),
        ("resource", FILES),
    ];
    let response = env.idp.token(&form, &assistant()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    env.stop().await;
}

#[tokio::test]
async fn the_issuing_server_never_takes_its_id_jag_as_a_subject_or_access_token() {
    let env = env().await;
    let (token, _) = id_token(&env, "assistant");
    let (_, body) = request(&env, &token, "id_token", &env.ras_issuer, &[]).await;
    let jag = body["access_token"].as_str().unwrap().to_owned();
    let cal = "https://calendar.example.com";
    for kind in ["access_token", "jwt", "id_token", "id-jag"] {
        let form = exchange_form(&jag, kind, cal, &[]);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = env.idp.token(&pairs, &assistant()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{kind}");
        assert_eq!(
            body_json(response).await["error"],
            "invalid_request",
            "{kind}"
        );
        // Nor for another ID-JAG.
        let (status, body) = request(&env, &jag, kind, &env.ras_issuer, &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{kind}: {body}");
    }
    // Introspection does not see it as an access token.
    let response = env
        .idp
        .post_form(
            "/introspect",
            &[("token", &jag)],
            &ClientAuth::Basic("calendar-api".into(), "calendar-secret".into()),
        )
        .await
        .unwrap();
    assert_eq!(body_json(response).await["active"], false);
    // Nor the jwt-bearer grant at the issuing server.
    let response = env
        .idp
        .token(
            &[("grant_type", JWT_BEARER), ("assertion", &jag)],
            &assistant(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    env.stop().await;
}

#[tokio::test]
async fn discovery_lists_the_id_jag_type_only_with_a_resource_as() {
    let env = env().await;
    let document = env
        .idp
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(
        document["identity_chaining_requested_token_types_supported"],
        json!([ID_JAG])
    );
    let ras: Value = env
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            env.ras_issuer
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ras
        .get("identity_chaining_requested_token_types_supported")
        .is_none());
    env.stop().await;
}

#[tokio::test]
async fn a_re_signed_id_token_without_jti_gets_no_id_jag_from_a_revoked_chain() {
    let env = env().await;
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims.as_object_mut().unwrap().remove("jti");
    let token = env.corp.sign(None, &claims).unwrap();
    let twin = mandate_testkit::es256_signature_twin(&token).unwrap();
    assert_ne!(twin, token);
    let chain_of = |body: &Value| {
        let jag = body["access_token"].as_str().unwrap().to_owned();
        let state = env.idp.state.clone();
        async move {
            let hop = claims_of(&jag)["jti"].as_str().unwrap().to_owned();
            state
                .ledger
                .hop(&HopId(hop))
                .await
                .unwrap()
                .unwrap()
                .chain_id
        }
    };
    let (status, first) = request(&env, &token, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    // The twin verifies and is the same grant: same chain.
    let (status, second) = request(&env, &twin, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let chain = chain_of(&first).await;
    assert_eq!(chain_of(&second).await, chain);
    let response = env
        .idp
        .http
        .post(env.idp.admin_url(&format!("/admin/chains/{chain}/revoke")))
        .bearer_auth(mandate_testkit::ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    for spelling in [&token, &twin] {
        refused(
            &env,
            spelling,
            "id_token",
            &env.ras_issuer,
            &[],
            "invalid_request",
        )
        .await;
    }
    env.stop().await;
}

#[tokio::test]
async fn a_revoked_chain_or_subject_gets_no_id_jag() {
    let env = env().await;
    let (token, id_claims) = id_token(&env, "assistant");
    let chain = env
        .idp
        .state
        .chain_key
        .derive("corp", id_claims["jti"].as_str().unwrap());
    let revoke = |path: String| {
        env.idp
            .http
            .post(env.idp.admin_url(&path))
            .bearer_auth(mandate_testkit::ADMIN_OPS)
            .json(&json!({"reason": "incident 42"}))
            .send()
    };
    // The chain exists once the first ID-JAG is recorded in it.
    let (status, body) = request(&env, &token, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = revoke(format!("/admin/chains/{chain}/revoke"))
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    refused(
        &env,
        &token,
        "id_token",
        &env.ras_issuer,
        &[],
        "invalid_request",
    )
    .await;
    // Another ID token of alice's works until alice is revoked.
    let (fresh, _) = id_token(&env, "assistant");
    let (status, body) = request(&env, &fresh, "id_token", &env.ras_issuer, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let response = revoke("/admin/subjects/corp%7Calice/revoke".into())
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let (later, _) = id_token(&env, "assistant");
    refused(
        &env,
        &later,
        "id_token",
        &env.ras_issuer,
        &[],
        "invalid_request",
    )
    .await;
    env.stop().await;
}
