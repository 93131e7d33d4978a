//! `/admin/agents` over real HTTP: registration, changes, the lifecycle state machine with the
//! revocations it writes, secret rotation with its overlap window, roles, and the audit stream.

use std::sync::Arc;

use mandate_model::{ClientId, Clock, FixedClock, SecretHash};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_server::config::{AdminCredentialSettings, AdminRole};
use mandate_server::BuildOptions;
use mandate_testkit::{
    assertion_claims, body_json, delegation_auth, delegation_exchange, delegation_issue,
    delegation_settings, id_token_claims, now, ClientAuth, KeyKind, TestKey, TestServer,
    ADMIN_OPS as REVOKER, ADMIN_READER as READER, CAL, CORP,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The `manage` credential these tests add, named `ops-admin`.
pub const MANAGER: &str = "manager-secret-0123456789abcdefghijk";

pub struct Env {
    pub server: TestServer,
    pub corp: TestKey,
    pub clock: Arc<FixedClock>,
}

/// The delegation world of the test kit, on a fixed clock, with a `manage` credential
/// (`ops-admin`) next to its `revoke` (`ops-oncall`) and `read` (`auditor`) ones.
pub async fn env() -> Env {
    env_with(|_| {}).await
}

/// [`env`], with `tweak` applied to its settings.
pub async fn env_with(tweak: impl FnOnce(&mut mandate_server::Settings)) -> Env {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    tweak(&mut settings);
    settings.admin.credentials.push(AdminCredentialSettings {
        name: "ops-admin".into(),
        role: AdminRole::Manage,
        secret_hash: SecretHash::of(MANAGER),
    });
    let clock = Arc::new(FixedClock::at(now()));
    let options = BuildOptions {
        clock: Some(clock.clone()),
        ..BuildOptions::default()
    };
    Env {
        server: TestServer::spawn_with(settings, options).await.unwrap(),
        corp,
        clock,
    }
}

/// An admin request; the status and JSON body.
pub async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    secret: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = server.http.request(method, server.admin_url(path));
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "{path}: every admin answer is no-store"
    );
    (status, body_json(response).await)
}

async fn get(env: &Env, path: &str) -> Value {
    let (status, body) = call(&env.server, Method::GET, path, Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

async fn post(env: &Env, path: &str, secret: &str, body: Option<Value>) -> (StatusCode, Value) {
    call(&env.server, Method::POST, path, Some(secret), body).await
}

async fn patch(env: &Env, path: &str, body: Value) -> (StatusCode, Value) {
    call(&env.server, Method::PATCH, path, Some(MANAGER), Some(body)).await
}

fn expect_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Whether `auth` authenticates at `/token`: with an unknown grant type, an authenticated
/// client is told `unsupported_grant_type` (authentication comes first), anyone else 401.
pub async fn authenticates(server: &TestServer, auth: &ClientAuth) -> bool {
    let response = server
        .token(&[("grant_type", "urn:example:none")], auth)
        .await
        .unwrap();
    let status = response.status();
    let body = body_json(response).await;
    match status {
        StatusCode::BAD_REQUEST => {
            assert_eq!(body["error"], "unsupported_grant_type", "{body}");
            true
        }
        StatusCode::UNAUTHORIZED => {
            assert_eq!(body["error"], "invalid_client", "{body}");
            false
        }
        other => panic!("unexpected {other}: {body}"),
    }
}

fn basic(id: &str, secret: &str) -> ClientAuth {
    ClientAuth::Basic(id.into(), secret.into())
}

fn new_agent(id: &str) -> Value {
    json!({
        "client_id": id,
        "kind": "agent",
        "owners": ["travel-team@example.com"],
        "description": "Books trips",
        "auth_method": "client_secret_basic",
    })
}

/// Registers `body` as `ops-admin`; the answer.
async fn register(env: &Env, body: Value) -> Value {
    let (status, answer) = post(env, "/admin/agents", MANAGER, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

/// Registers an active secret agent; its secret.
async fn active_agent(env: &Env, id: &str) -> String {
    let mut body = new_agent(id);
    body["state"] = json!("active");
    register(env, body).await["client_secret"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn list_ids(env: &Env, query: &str) -> Vec<String> {
    get(env, &format!("/admin/agents{query}")).await["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client_id"].as_str().unwrap().to_owned())
        .collect()
}

fn instant(env: &Env, offset_secs: i64) -> String {
    (env.clock.now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn id_token(env: &Env, sub: &str) -> String {
    let mut claims = id_token_claims(CORP, sub, "assistant");
    claims["iat"] = json!(env.clock.now_secs());
    claims["exp"] = json!(env.clock.now_secs() + 600);
    env.corp.sign(None, &claims).unwrap()
}

/// Whether the calendar API, introspecting `token`, is told it is active.
pub async fn active_at_calendar(server: &TestServer, token: &str) -> bool {
    let response = server
        .post_form(
            "/introspect",
            &[("token", token)],
            &delegation_auth("calendar-api"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_json(response).await["active"] == json!(true)
}

/// Whether an `agent:<id>` entry covers a token `id` acts in issued now.
async fn agent_revoked(env: &Env, id: &str) -> bool {
    let facts = TokenFacts {
        hop: None,
        ancestors: vec![],
        chain: None,
        consents: vec![],
        agents: vec![id.to_owned()],
        subject: None,
        issued_at: env.clock.now_secs(),
    };
    matches!(
        env.server
            .state
            .revocations
            .check(&facts)
            .await
            .unwrap()
            .verdict,
        Verdict::Revoked { .. }
    )
}

#[tokio::test]
async fn a_registered_agent_gets_a_secret_shown_once_and_stored_only_as_its_hash() {
    let env = env().await;
    let answer = register(&env, new_agent("booking-agent")).await;
    let secret = answer["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 43, "256 bits, base64url");
    let agent = &answer["agent"];
    assert_eq!(agent["client_id"], "booking-agent");
    assert_eq!(agent["state"], "staged", "staged by default");
    assert_eq!(agent["kind"], "agent");
    assert_eq!(agent["owners"], json!(["travel-team@example.com"]));
    assert_eq!(agent["auth_method"], "client_secret_basic");
    assert_eq!(agent["expires_at"], Value::Null);
    assert_eq!(agent["keys"], json!([]));
    assert_eq!(
        agent["secret"],
        json!({"rotated_at": null, "previous_valid_until": null})
    );
    assert_eq!(agent["created_by"], "ops-admin");
    assert_eq!(agent["updated_by"], "ops-admin");
    assert_eq!(agent["created_at"], instant(&env, 0));

    // Stored as its hash only; never shown again.
    let stored = env
        .server
        .state
        .clients
        .client(&ClientId::parse("booking-agent").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.secret_hash, Some(SecretHash::of(&secret)));
    for path in ["/admin/agents/booking-agent", "/admin/agents"] {
        let text = env
            .server
            .admin_get(path, Some(READER))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(&secret), "{path} shows the secret");
        assert!(!text.contains("sha256"), "{path} shows a hash");
        assert!(!text.contains("\"client_secret\""), "{path}");
    }
    // Two registrations get different secrets.
    let other = register(&env, new_agent("other-agent")).await;
    assert_ne!(other["client_secret"], json!(secret));

    // Staged: the secret does not authenticate until the agent is activated.
    let auth = basic("booking-agent", &secret);
    assert!(!authenticates(&env.server, &auth).await);
    let (status, body) = post(&env, "/admin/agents/booking-agent/activate", MANAGER, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["state"], "active");
    assert!(authenticates(&env.server, &auth).await);
    assert!(!authenticates(&env.server, &basic("booking-agent", "a-wrong-secret")).await);
}

#[tokio::test]
async fn a_private_key_jwt_agent_registers_keys_and_gets_no_secret() {
    let env = env().await;
    let es = TestKey::generate(KeyKind::Es256, Some("es-1")).unwrap();
    let ed = TestKey::generate(KeyKind::EdDsa, Some("ed-1")).unwrap();
    let mut jwk = es.public_jwk();
    jwk["alg"] = json!("ES256");
    let answer = register(
        &env,
        json!({
            "client_id": "jwt-agent",
            "kind": "agent",
            "owners": ["a@example.com"],
            "auth_method": "private_key_jwt",
            "state": "active",
            "jwks": {"keys": [jwk, ed.public_jwk()]},
            "upstream_ids": [{"issuer": CORP, "client_id": "0oa1jwt"}],
        }),
    )
    .await;
    assert!(answer.get("client_secret").is_none(), "{answer}");
    let agent = &answer["agent"];
    assert_eq!(agent["secret"], Value::Null);
    assert_eq!(
        agent["keys"],
        json!([
            {"kid": "es-1", "kty": "EC", "alg": "ES256"},
            {"kid": "ed-1", "kty": "OKP", "alg": null},
        ])
    );
    assert_eq!(
        agent["upstream_ids"],
        json!([{"issuer": CORP, "client_id": "0oa1jwt"}])
    );
    assert!(!answer.to_string().contains("\"x\""), "no key material");

    // Either key authenticates.
    for key in [&es, &ed] {
        let jwt = key
            .sign(None, &assertion_claims("jwt-agent", env.server.issuer()))
            .unwrap();
        let auth = ClientAuth::Assertion {
            client_id: None,
            jwt,
        };
        assert!(authenticates(&env.server, &auth).await);
    }
}

#[tokio::test]
async fn a_resource_server_registers_with_its_audiences() {
    let env = env().await;
    let answer = register(
        &env,
        json!({
            "client_id": "travel-api",
            "kind": "resource_server",
            "owners": ["travel-api-team@example.com"],
            "auth_method": "client_secret_post",
            "audiences": ["https://travel.example.com"],
        }),
    )
    .await;
    assert_eq!(answer["agent"]["kind"], "resource_server");
    assert_eq!(
        answer["agent"]["audiences"],
        json!(["https://travel.example.com"])
    );
    assert!(answer["client_secret"].is_string());
}

#[tokio::test]
async fn bad_registrations_are_refused_precisely_and_change_nothing() {
    let env = env().await;
    let before = get(&env, "/admin/agents").await;
    let with = |field: &str, value: Value| {
        let mut body = new_agent("new-agent");
        body[field] = value;
        body
    };
    let mut without_owners = new_agent("new-agent");
    without_owners.as_object_mut().unwrap().remove("owners");
    let es = TestKey::generate(KeyKind::Es256, Some("k")).unwrap();
    let cases = [
        (with("client_id", json!("New Agent")), "client id"),
        (with("client_id", json!("agent:x")), "client id"),
        (with("client_id", json!("a@b")), "client id"),
        (with("owners", json!([])), "owners"),
        (without_owners, "owners"),
        (with("auth_method", json!("private_key_jwt")), "jwks"),
        (with("jwks", es.jwks()), "jwks"),
        (with("unexpected", json!(1)), "unknown field"),
        (with("client_secret", json!("mine")), "unknown field"),
        (with("state", json!("suspended")), "staged or active"),
        (with("kind", json!("robot")), "unknown variant"),
        (with("audiences", json!([CAL])), "audiences"),
        (
            with("expires_at", json!("2001-01-01T00:00:00Z")),
            "expires_at",
        ),
        (with("expires_at", json!("tomorrow")), "invalid body"),
        (
            with(
                "upstream_ids",
                json!([{"issuer": "https://evil.example.com", "client_id": "x"}]),
            ),
            "trusted issuer",
        ),
        (
            json!({"client_id": "new-api", "kind": "resource_server", "owners": ["o"],
                "auth_method": "client_secret_basic", "audiences": ["agent:helper"]}),
            "audiences",
        ),
        (
            json!({"client_id": "new-api", "kind": "resource_server", "owners": ["o"],
                "auth_method": "client_secret_basic"}),
            "audience",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = post(&env, "/admin/agents", MANAGER, Some(body.clone())).await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{body} → {answer}"
        );
    }
    // Not JSON, or no body at all.
    for raw in ["{not json", ""] {
        let response = env
            .server
            .http
            .post(env.server.admin_url("/admin/agents"))
            .bearer_auth(MANAGER)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{raw:?}");
        assert_eq!(body_json(response).await["error"], "invalid_input");
    }
    assert_eq!(get(&env, "/admin/agents").await, before);

    // An existing id is a conflict, and the existing agent keeps its secret.
    let (status, answer) = post(&env, "/admin/agents", MANAGER, Some(new_agent("assistant"))).await;
    expect_error(status, &answer, StatusCode::CONFLICT, "conflict");
    assert_eq!(get(&env, "/admin/agents").await, before);
    assert!(authenticates(&env.server, &delegation_auth("assistant")).await);
}

#[tokio::test]
async fn every_endpoint_needs_a_credential_with_the_right_role() {
    let env = env().await;
    register(&env, new_agent("target-agent")).await;
    let before = get(&env, "/admin/agents").await;
    let endpoints: [(Method, &str, Option<Value>, AdminRole); 8] = [
        (Method::GET, "/admin/agents", None, AdminRole::Read),
        (
            Method::GET,
            "/admin/agents/target-agent",
            None,
            AdminRole::Read,
        ),
        (
            Method::POST,
            "/admin/agents",
            Some(new_agent("sneaky-agent")),
            AdminRole::Manage,
        ),
        (
            Method::PATCH,
            "/admin/agents/target-agent",
            Some(json!({"description": "changed"})),
            AdminRole::Manage,
        ),
        (
            Method::POST,
            "/admin/agents/target-agent/secret",
            None,
            AdminRole::Manage,
        ),
        (
            Method::POST,
            "/admin/agents/assistant/suspend",
            None,
            AdminRole::Revoke,
        ),
        (
            Method::POST,
            "/admin/agents/target-agent/retire",
            None,
            AdminRole::Manage,
        ),
        (
            Method::POST,
            "/admin/agents/target-agent/activate",
            None,
            AdminRole::Manage,
        ),
    ];
    for (method, path, body, needed) in &endpoints {
        for secret in [None, Some("not-a-credential"), Some("")] {
            let (status, answer) =
                call(&env.server, method.clone(), path, secret, body.clone()).await;
            expect_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthenticated");
        }
        let refused_for: &[&str] = match needed {
            AdminRole::Read => &[],
            AdminRole::Revoke => &[READER],
            AdminRole::Manage => &[READER, REVOKER],
        };
        for secret in refused_for {
            let (status, answer) = call(
                &env.server,
                method.clone(),
                path,
                Some(secret),
                body.clone(),
            )
            .await;
            expect_error(status, &answer, StatusCode::FORBIDDEN, "forbidden");
        }
    }
    // Nothing changed, and no token of the assistant was revoked.
    assert_eq!(get(&env, "/admin/agents").await, before);
    assert!(!agent_revoked(&env, "assistant").await);

    // The revoke role may suspend.
    let (status, body) = post(&env, "/admin/agents/assistant/suspend", REVOKER, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["state"], "suspended");
}

#[tokio::test]
async fn unknown_ids_are_not_found_and_malformed_ones_invalid() {
    let env = env().await;
    for (method, suffix, body) in [
        (Method::GET, "", None),
        (Method::PATCH, "", Some(json!({"description": "x"}))),
        (Method::POST, "/secret", None),
        (Method::POST, "/suspend", None),
        (Method::POST, "/retire", None),
        (Method::POST, "/activate", None),
    ] {
        let (status, answer) = call(
            &env.server,
            method.clone(),
            &format!("/admin/agents/nobody{suffix}"),
            Some(MANAGER),
            body.clone(),
        )
        .await;
        expect_error(status, &answer, StatusCode::NOT_FOUND, "not_found");
        let (status, answer) = call(
            &env.server,
            method,
            &format!("/admin/agents/Bad%20Id{suffix}"),
            Some(MANAGER),
            body,
        )
        .await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert!(!agent_revoked(&env, "nobody").await, "a 404 writes nothing");
}

#[tokio::test]
async fn the_list_filters_by_kind_and_state_in_id_order() {
    let env = env().await;
    register(&env, new_agent("a-staged-agent")).await;
    assert_eq!(
        list_ids(&env, "").await,
        [
            "a-staged-agent",
            "assistant",
            "booking-tool",
            "calendar-api",
            "helper",
            "mail-api"
        ]
    );
    assert_eq!(
        list_ids(&env, "?kind=resource_server").await,
        ["calendar-api", "mail-api"]
    );
    assert_eq!(list_ids(&env, "?state=staged").await, ["a-staged-agent"]);
    assert_eq!(
        list_ids(&env, "?kind=agent&state=active").await,
        ["assistant", "booking-tool", "helper"]
    );
    assert!(list_ids(&env, "?state=retired").await.is_empty());
    for query in ["?kind=robot", "?state=Active", "?colour=blue"] {
        let (status, answer) = call(
            &env.server,
            Method::GET,
            &format!("/admin/agents{query}"),
            Some(READER),
            None,
        )
        .await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
}

#[tokio::test]
async fn clients_seeded_from_the_configuration_are_created_by_config() {
    let env = env().await;
    let agent = get(&env, "/admin/agents/assistant").await;
    assert_eq!(agent["created_by"], "config");
    assert_eq!(agent["updated_by"], "config");
    assert!(agent["created_at"].is_string());
}

#[tokio::test]
async fn a_patch_changes_the_mutable_fields_only() {
    let env = env().await;
    let secret = active_agent(&env, "patched-agent").await;
    let path = "/admin/agents/patched-agent";
    env.clock.advance(5);

    let (status, agent) = patch(
        &env,
        path,
        json!({"owners": ["new-owner@example.com", "second@example.com"],
            "description": "Now books hotels too",
            "upstream_ids": [{"issuer": CORP, "client_id": "0oa1patched"}],
            "expires_at": instant(&env, 3600)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(
        agent["owners"],
        json!(["new-owner@example.com", "second@example.com"])
    );
    assert_eq!(agent["description"], "Now books hotels too");
    assert_eq!(agent["expires_at"], instant(&env, 3600));
    assert_eq!(agent["upstream_ids"][0]["client_id"], "0oa1patched");
    assert_eq!(agent["updated_by"], "ops-admin");
    assert_eq!(agent["updated_at"], instant(&env, 0));
    assert_eq!(agent["created_at"], instant(&env, -5));
    // The answer is the agent as GET shows it, with the fields whose values changed.
    let mut agent = agent;
    assert_eq!(
        agent.as_object_mut().unwrap().remove("changed"),
        Some(json!([
            "owners",
            "description",
            "upstream_ids",
            "expires_at"
        ]))
    );
    assert_eq!(get(&env, path).await, agent);

    // null clears the expiry.
    let (status, mut agent) = patch(&env, path, json!({"expires_at": null})).await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(agent["expires_at"], Value::Null);
    assert_eq!(
        agent.as_object_mut().unwrap().remove("changed"),
        Some(json!(["expires_at"]))
    );

    // What may not change through PATCH, and malformed changes, are refused; nothing changes.
    let es = TestKey::generate(KeyKind::Es256, Some("k")).unwrap();
    for body in [
        json!({}),
        json!({"state": "active"}),
        json!({"client_id": "renamed"}),
        json!({"kind": "resource_server"}),
        json!({"auth_method": "client_secret_post"}),
        json!({"secret_hash": "sha256:00"}),
        json!({"owners": []}),
        json!({"owners": null}),
        json!({"jwks": es.jwks()}),
        json!({"audiences": [CAL]}),
        json!({"expires_at": "2001-01-01T00:00:00Z"}),
        json!({"description": "ok", "colour": "blue"}),
    ] {
        let (status, answer) = patch(&env, path, body.clone()).await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
        assert_eq!(get(&env, path).await, agent, "{body} changed something");
    }
    assert!(authenticates(&env.server, &basic("patched-agent", &secret)).await);
}

#[tokio::test]
async fn an_agent_past_its_expiry_no_longer_authenticates() {
    let env = env().await;
    let secret = active_agent(&env, "temp-agent").await;
    let auth = basic("temp-agent", &secret);
    let (status, body) = patch(
        &env,
        "/admin/agents/temp-agent",
        json!({"expires_at": instant(&env, 10)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(authenticates(&env.server, &auth).await);
    env.clock.advance(10);
    assert!(!authenticates(&env.server, &auth).await);
}

#[tokio::test]
async fn a_private_key_jwt_agent_rotates_its_keys_through_patch() {
    let env = env().await;
    let old = TestKey::generate(KeyKind::Es256, Some("old")).unwrap();
    let new = TestKey::generate(KeyKind::Es256, Some("new")).unwrap();
    register(
        &env,
        json!({"client_id": "jwt-agent", "kind": "agent", "owners": ["o"],
            "auth_method": "private_key_jwt", "state": "active", "jwks": old.jwks()}),
    )
    .await;
    let signed_by = |key: &TestKey| ClientAuth::Assertion {
        client_id: None,
        jwt: key
            .sign(None, &assertion_claims("jwt-agent", env.server.issuer()))
            .unwrap(),
    };
    assert!(authenticates(&env.server, &signed_by(&old)).await);
    assert!(!authenticates(&env.server, &signed_by(&new)).await);
    // Both keys during the switch, then only the new one.
    let both = json!({"keys": [old.public_jwk(), new.public_jwk()]});
    let (status, body) = patch(&env, "/admin/agents/jwt-agent", json!({"jwks": both})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["keys"].as_array().unwrap().len(), 2);
    assert!(authenticates(&env.server, &signed_by(&new)).await);
    let (status, body) = patch(&env, "/admin/agents/jwt-agent", json!({"jwks": new.jwks()})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!authenticates(&env.server, &signed_by(&old)).await);
    assert!(authenticates(&env.server, &signed_by(&new)).await);
    // Keys are never removed, nor replaced by private ones.
    let private = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]});
    for jwks in [Value::Null, json!({"keys": []}), private] {
        let (status, answer) = patch(&env, "/admin/agents/jwt-agent", json!({"jwks": jwks})).await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert!(authenticates(&env.server, &signed_by(&new)).await);
}

async fn transition(env: &Env, id: &str, action: &str) -> (StatusCode, Value) {
    post(env, &format!("/admin/agents/{id}/{action}"), MANAGER, None).await
}

async fn state_of(env: &Env, id: &str) -> String {
    get(env, &format!("/admin/agents/{id}")).await["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_lifecycle_transition_and_every_refused_one() {
    let env = env().await;
    // (agent, action, state after, or the refusal)
    register(&env, new_agent("walker")).await;
    register(&env, new_agent("staged-retiree")).await;
    active_agent(&env, "active-retiree").await;
    let steps: [(&str, &str, Result<&str, &str>); 16] = [
        ("walker", "suspend", Err("staged")),
        ("walker", "activate", Ok("active")),
        ("walker", "activate", Err("active")),
        ("walker", "suspend", Ok("suspended")),
        ("walker", "suspend", Err("suspended")),
        ("walker", "activate", Ok("active")),
        ("walker", "suspend", Ok("suspended")),
        ("walker", "retire", Ok("retired")),
        ("walker", "activate", Err("retired")),
        ("walker", "suspend", Err("retired")),
        ("walker", "retire", Err("retired")),
        ("staged-retiree", "retire", Ok("retired")),
        ("staged-retiree", "activate", Err("retired")),
        ("active-retiree", "retire", Ok("retired")),
        ("active-retiree", "suspend", Err("retired")),
        ("active-retiree", "activate", Err("retired")),
    ];
    for (id, action, expected) in steps {
        let before = get(&env, &format!("/admin/agents/{id}")).await;
        let (status, body) = transition(&env, id, action).await;
        match expected {
            Ok(state) => {
                assert_eq!(status, StatusCode::OK, "{id} {action}: {body}");
                assert_eq!(body["agent"]["state"], state, "{id} {action}");
                assert_eq!(state_of(&env, id).await, state);
                let revokes = action != "activate";
                assert_eq!(body.get("revocation").is_some(), revokes, "{body}");
                if revokes {
                    let entry = &body["revocation"]["entries"][0];
                    assert_eq!(entry["kind"], "agent");
                    assert_eq!(entry["id"], id);
                }
            }
            Err(from) => {
                expect_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
                let message = body["message"].as_str().unwrap();
                assert!(
                    message.contains(action) && message.contains(from),
                    "{message}"
                );
                assert_eq!(get(&env, &format!("/admin/agents/{id}")).await, before);
            }
        }
    }
    // A refused suspension of a staged agent wrote no revocation entry.
    register(&env, new_agent("never-suspended")).await;
    let (status, _) = transition(&env, "never-suspended", "suspend").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(!agent_revoked(&env, "never-suspended").await);
}

#[tokio::test]
async fn concurrent_activations_of_one_staged_agent_succeed_once() {
    let env = env().await;
    register(&env, new_agent("racer")).await;
    let attempts = (0..6).map(|_| transition(&env, "racer", "activate"));
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{results:?}");
    for (status, body) in &results {
        if *status != StatusCode::OK {
            expect_error(*status, body, StatusCode::CONFLICT, "invalid_transition");
        }
    }
    assert_eq!(state_of(&env, "racer").await, "active");
}

/// The assistant's calendar token, its hand-off to the booking tool, and the booking tool's
/// calendar token derived from that hand-off (the assistant is an actor of all three).
async fn live_tokens(env: &Env) -> (String, String, String) {
    let server = &env.server;
    let own = delegation_issue(
        server,
        &id_token(env, "alice"),
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    let handoff = delegation_issue(
        server,
        &id_token(env, "alice"),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    let derived = delegation_issue(server, &handoff, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
    assert!(active_at_calendar(server, &own).await);
    assert!(active_at_calendar(server, &derived).await);
    (own, handoff, derived)
}

#[tokio::test]
async fn suspension_kills_live_tokens_and_reactivation_does_not_revive_them() {
    let env = env().await;
    let (own, handoff, derived) = live_tokens(&env).await;
    let assistant = delegation_auth("assistant");

    let (status, body) = post(
        &env,
        "/admin/agents/assistant/suspend",
        REVOKER,
        Some(json!({"reason": "incident 7"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["state"], "suspended");
    assert_eq!(body["revocation"]["entries"][0]["kind"], "agent");
    assert_eq!(body["agent"]["updated_by"], "ops-oncall");

    // Every live token it acts in is dead, and it cannot authenticate or exchange.
    assert!(!active_at_calendar(&env.server, &own).await);
    assert!(!active_at_calendar(&env.server, &derived).await);
    assert!(!authenticates(&env.server, &assistant).await);
    let (status, body) = delegation_exchange(
        &env.server,
        &id_token(&env, "alice"),
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Nor can another agent exchange what the assistant handed off.
    let (status, body) =
        delegation_exchange(&env.server, &handoff, "access_token", CAL, "booking-tool")
            .await
            .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");

    // Reactivated (a second later: the entry covers tokens issued up to its instant), it
    // authenticates and exchanges again, but its old tokens stay dead.
    env.clock.advance(1);
    let (status, body) = transition(&env, "assistant", "activate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(authenticates(&env.server, &assistant).await);
    let fresh = delegation_issue(
        &env.server,
        &id_token(&env, "alice"),
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    assert!(active_at_calendar(&env.server, &fresh).await);
    assert!(!active_at_calendar(&env.server, &own).await);
    assert!(!active_at_calendar(&env.server, &derived).await);
}

/// Security finding 5 (SECURITY.md): a hand-off names its recipient only as its audience, and
/// the recipient's suspension kills it too.
#[tokio::test]
async fn suspending_the_recipient_of_a_hand_off_kills_the_hand_off() {
    let env = env().await;
    let handoff = delegation_issue(
        &env.server,
        &id_token(&env, "alice"),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    let (status, body) = transition(&env, "booking-tool", "suspend").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.clock.advance(1);
    let (status, body) = transition(&env, "booking-tool", "activate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(authenticates(&env.server, &delegation_auth("booking-tool")).await);
    // The hand-off made before the suspension is dead ...
    let (status, body) =
        delegation_exchange(&env.server, &handoff, "access_token", CAL, "booking-tool")
            .await
            .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{body}"
    );
    // ... and one made after the reactivation is not.
    let fresh = delegation_issue(
        &env.server,
        &id_token(&env, "alice"),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    delegation_issue(&env.server, &fresh, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
}

#[tokio::test]
async fn retirement_kills_live_tokens_and_is_final() {
    let env = env().await;
    let (own, handoff, derived) = live_tokens(&env).await;
    let (status, body) = transition(&env, "assistant", "retire").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["agent"]["state"], "retired");
    assert_eq!(body["revocation"]["entries"][0]["id"], "assistant");
    assert!(!active_at_calendar(&env.server, &own).await);
    assert!(!active_at_calendar(&env.server, &derived).await);
    assert!(!authenticates(&env.server, &delegation_auth("assistant")).await);
    let (status, _) =
        delegation_exchange(&env.server, &handoff, "access_token", CAL, "booking-tool")
            .await
            .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    env.clock.advance(1);
    let (status, body) = transition(&env, "assistant", "activate").await;
    expect_error(status, &body, StatusCode::CONFLICT, "invalid_transition");
    assert!(!authenticates(&env.server, &delegation_auth("assistant")).await);
}

async fn rotate(env: &Env, id: &str, body: Option<Value>) -> (StatusCode, Value) {
    post(env, &format!("/admin/agents/{id}/secret"), MANAGER, body).await
}

#[tokio::test]
async fn a_rotated_secret_overlaps_its_predecessor_until_the_window_ends() {
    let env = env().await;
    let old = active_agent(&env, "rotor").await;
    let (status, body) = rotate(&env, "rotor", Some(json!({"overlap_secs": 30}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = body["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(new.len(), 43);
    assert_ne!(new, old);
    assert_eq!(body["previous_valid_until"], instant(&env, 30));
    let agent = get(&env, "/admin/agents/rotor").await;
    assert_eq!(
        agent["secret"],
        json!({"rotated_at": instant(&env, 0), "previous_valid_until": instant(&env, 30)})
    );
    assert!(!agent.to_string().contains(&new));

    // Inside the window both work; at its end only the new one.
    env.clock.advance(29);
    assert!(authenticates(&env.server, &basic("rotor", &old)).await);
    assert!(authenticates(&env.server, &basic("rotor", &new)).await);
    env.clock.advance(1);
    assert!(!authenticates(&env.server, &basic("rotor", &old)).await);
    assert!(authenticates(&env.server, &basic("rotor", &new)).await);

    // Rotating again (default window, an hour) ends any older secret at once: at most two work.
    let (status, body) = rotate(&env, "rotor", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previous_valid_until"], instant(&env, 3600));
    let newest = body["client_secret"].as_str().unwrap().to_owned();
    assert!(authenticates(&env.server, &basic("rotor", &newest)).await);
    assert!(authenticates(&env.server, &basic("rotor", &new)).await);
    assert!(!authenticates(&env.server, &basic("rotor", &old)).await);

    // overlap_secs 0 ends the old secret now.
    let (status, body) = rotate(&env, "rotor", Some(json!({"overlap_secs": 0}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["previous_valid_until"], Value::Null);
    let last = body["client_secret"].as_str().unwrap().to_owned();
    assert!(authenticates(&env.server, &basic("rotor", &last)).await);
    assert!(!authenticates(&env.server, &basic("rotor", &newest)).await);
    assert!(!authenticates(&env.server, &basic("rotor", &new)).await);
}

#[tokio::test]
async fn bad_rotations_are_refused_and_change_nothing() {
    let env = env().await;
    let secret = active_agent(&env, "steady").await;
    let before = get(&env, "/admin/agents/steady").await;
    for body in [
        json!({"overlap_secs": 604_801}),
        json!({"overlap_secs": -1}),
        json!({"overlap_secs": "60"}),
        json!({"overlap": 60}),
    ] {
        let (status, answer) = rotate(&env, "steady", Some(body)).await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
    assert_eq!(get(&env, "/admin/agents/steady").await, before);
    assert!(authenticates(&env.server, &basic("steady", &secret)).await);

    // A private_key_jwt client has no secret to rotate.
    let key = TestKey::generate(KeyKind::Es256, Some("k")).unwrap();
    register(
        &env,
        json!({"client_id": "keyed", "kind": "agent", "owners": ["o"],
            "auth_method": "private_key_jwt", "jwks": key.jwks()}),
    )
    .await;
    let (status, answer) = rotate(&env, "keyed", None).await;
    expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(
        get(&env, "/admin/agents/keyed").await["secret"],
        Value::Null
    );
}

#[tokio::test]
async fn the_audit_stream_records_each_change_with_the_credentials_name() {
    let env = env().await;
    let secret = active_agent(&env, "audited").await;
    patch(
        &env,
        "/admin/agents/audited",
        json!({"description": "audited agent"}),
    )
    .await;
    let (_, rotated) = rotate(&env, "audited", Some(json!({"overlap_secs": 0}))).await;
    post(&env, "/admin/agents/audited/suspend", REVOKER, None).await;
    transition(&env, "audited", "activate").await;
    transition(&env, "audited", "retire").await;
    // Refused attempts are not changes.
    transition(&env, "audited", "activate").await;
    post(&env, "/admin/agents/audited/retire", READER, None).await;

    let response = env
        .server
        .admin_get("/admin/audit?limit=1000", Some(READER))
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains(&secret), "the audit stream holds a secret");
    assert!(!text.contains(rotated["client_secret"].as_str().unwrap()));
    let audit: Value = serde_json::from_str(&text).unwrap();
    let mut events: Vec<(String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == "audited")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    events.reverse();
    let expected = [
        ("agent.create", "ops-admin"),
        ("agent.update", "ops-admin"),
        ("agent.secret.rotate", "ops-admin"),
        ("agent.suspend", "ops-oncall"),
        ("agent.activate", "ops-admin"),
        ("agent.retire", "ops-admin"),
    ];
    assert_eq!(
        events,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "{audit}"
    );
}

/// The assistant exchanges a fresh ID token of alice's for a calendar token.
async fn assistant_exchanges(env: &Env) {
    let mut claims = mandate_testkit::id_token_claims(mandate_testkit::CORP, "alice", "assistant");
    claims["iat"] = json!(env.clock.now_secs());
    let id_token = env.corp.sign(None, &claims).unwrap();
    mandate_testkit::delegation_issue(&env.server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
}

/// An agent's last authentication and exchange are kept (to within a minute) and shown.
#[tokio::test]
async fn an_agents_last_use_moves_with_its_exchanges() {
    let env = env().await;
    let (status, body) = call(
        &env.server,
        Method::GET,
        "/admin/agents/assistant",
        Some(MANAGER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["last_exchange_at"], Value::Null, "{body}");
    assert_eq!(body["last_authenticated_at"], Value::Null, "{body}");
    assistant_exchanges(&env).await;
    let (_, listed) = call(
        &env.server,
        Method::GET,
        "/admin/agents",
        Some(MANAGER),
        None,
    )
    .await;
    let assistant = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client_id"] == "assistant")
        .unwrap()
        .clone();
    let now = chrono::DateTime::from_timestamp(env.clock.now_secs(), 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(assistant["last_exchange_at"], now.as_str(), "{assistant}");
    assert_eq!(
        assistant["last_authenticated_at"],
        now.as_str(),
        "{assistant}"
    );
    // Nobody else moved.
    let helper = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["client_id"] == "helper")
        .unwrap();
    assert_eq!(helper["last_exchange_at"], Value::Null);
    // A minute later, the next exchange moves it again.
    env.clock.advance(120);
    assistant_exchanges(&env).await;
    let (_, shown) = call(
        &env.server,
        Method::GET,
        "/admin/agents/assistant",
        Some(MANAGER),
        None,
    )
    .await;
    let later = chrono::DateTime::from_timestamp(env.clock.now_secs(), 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(shown["last_exchange_at"], later.as_str(), "{shown}");
}

/// `[lifecycle] suspend_unused_agents_after_days = 30`: a sweep suspends the agents neither
/// used nor registered within 30 days (by `system:lifecycle`, audited, revoking), and leaves the
/// agent used yesterday, resource servers and suspended agents alone; off, it suspends nothing.
#[tokio::test]
async fn unused_agents_are_suspended_by_the_lifecycle_policy() {
    let off = env().await;
    off.clock.advance(40 * 86_400);
    assert_eq!(
        mandate_server::lifecycle::sweep(&off.server.state).await,
        Ok(0)
    );

    let env = env_with(|settings| settings.lifecycle.suspend_unused_agents_after_days = 30).await;
    // Nothing is 30 days old yet: the clients were registered (seeded) now.
    assert_eq!(
        mandate_server::lifecycle::sweep(&env.server.state).await,
        Ok(0)
    );
    env.clock.advance(31 * 86_400);
    // The assistant is used a day before the sweep.
    env.clock.advance(-86_400);
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims["iat"] = json!(env.clock.now_secs());
    claims["exp"] = json!(env.clock.now_secs() + 600);
    let id_token = env.corp.sign(None, &claims).unwrap();
    delegation_issue(&env.server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
    env.clock.advance(86_400);
    assert_eq!(
        mandate_server::lifecycle::sweep(&env.server.state).await,
        Ok(2)
    );
    let states: Vec<(String, String)> = get(&env, "/admin/agents?kind=agent").await["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["client_id"].as_str().unwrap().to_owned(),
                a["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("assistant".to_owned(), "active".to_owned()),
            ("booking-tool".to_owned(), "suspended".to_owned()),
            ("helper".to_owned(), "suspended".to_owned()),
        ]
    );
    let events = get(&env, "/admin/audit?action=agent.suspend").await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    for event in events {
        assert_eq!(event["actor"], "system:lifecycle");
        assert!(
            event["detail"]
                .as_str()
                .unwrap()
                .ends_with("unused for 30 days"),
            "{event}"
        );
    }
    // A suspended agent no longer authenticates; a second sweep finds nothing more.
    let (status, body) = delegation_exchange(&env.server, &id_token, "id_token", CAL, "helper")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        mandate_server::lifecycle::sweep(&env.server.state).await,
        Ok(0)
    );
}

#[tokio::test]
async fn a_registration_may_bring_its_secret_hash_and_a_patch_may_replace_it() {
    let env = env().await;
    let mut body = new_agent("hashed-agent");
    body["state"] = json!("active");
    body["secret_hash"] = json!(SecretHash::of("chosen-secret-0123456789").to_string());
    let answer = register(&env, body).await;
    assert!(
        answer.get("client_secret").is_none(),
        "no secret is made: {answer}"
    );
    assert!(
        authenticates(
            &env.server,
            &basic("hashed-agent", "chosen-secret-0123456789")
        )
        .await
    );

    // private_key_jwt has no secret to hash.
    let es = TestKey::generate(KeyKind::Es256, Some("k")).unwrap();
    let mut body = new_agent("keyed-agent");
    body["auth_method"] = json!("private_key_jwt");
    body["jwks"] = es.jwks();
    body["secret_hash"] = json!(SecretHash::of("x").to_string());
    let (status, answer) = post(&env, "/admin/agents", MANAGER, Some(body)).await;
    expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");

    // A dry run answers what would change and changes nothing; the same value is no change.
    let path = "/admin/agents/hashed-agent";
    let before = get(&env, path).await;
    let next = json!({"secret_hash": SecretHash::of("next-secret-0123456789").to_string(),
                      "description": "Books trips"});
    let (status, answer) = call(
        &env.server,
        Method::PATCH,
        &format!("{path}?dry_run=true"),
        Some(MANAGER),
        Some(next.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["changed"], json!(["secret_hash"]));
    assert_eq!(get(&env, path).await, before, "a dry run changed the agent");
    assert!(
        authenticates(
            &env.server,
            &basic("hashed-agent", "chosen-secret-0123456789")
        )
        .await
    );

    let (status, answer) = patch(&env, path, next.clone()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["changed"], json!(["secret_hash"]));
    assert!(
        !authenticates(
            &env.server,
            &basic("hashed-agent", "chosen-secret-0123456789")
        )
        .await
    );
    assert!(
        authenticates(
            &env.server,
            &basic("hashed-agent", "next-secret-0123456789")
        )
        .await
    );

    // The same values again: nothing written (the revision and update time stay).
    let stored = get(&env, path).await;
    let (status, answer) = patch(&env, path, next).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["changed"], json!([]));
    assert_eq!(get(&env, path).await, stored);

    // An unknown query parameter is refused like an unknown field.
    let (status, answer) = call(
        &env.server,
        Method::PATCH,
        &format!("{path}?dry_rum=true"),
        Some(MANAGER),
        Some(json!({"description": "x"})),
    )
    .await;
    expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    assert_eq!(get(&env, path).await, stored);
}
