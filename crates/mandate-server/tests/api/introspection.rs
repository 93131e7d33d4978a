//! RFC 7662 `POST /introspect` over real HTTP: who may see which token, and `{"active":false}`
//! (exactly) for everything else, revocation anywhere in the chain included.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mandate_model::{Clock, FixedClock};
use mandate_revocation::{
    Checked, Revocation, RevocationList, RevocationRecord, RevocationStore, RevocationStoreError,
    RevocationStream, TokenFacts,
};
use mandate_server::config::ConfigSource;
use mandate_server::{AppState, BuildOptions, Listeners, Signals};
use mandate_testkit::{
    alg_none, body_json, claims_of, delegation_settings, exchange_form, header_of, id_token_claims,
    now, ClientAuth, KeyKind, TestKey, TestServer, ADMIN_OPS, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct World {
    server: TestServer,
    corp: TestKey,
    clock: Arc<FixedClock>,
}

async fn world_with(settings: impl FnOnce(&TestKey) -> mandate_server::Settings) -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let clock = Arc::new(FixedClock::at(now()));
    let server = TestServer::spawn_with(
        settings(&corp),
        BuildOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    World {
        server,
        corp,
        clock,
    }
}

async fn world() -> World {
    world_with(delegation_settings).await
}

fn id_token(w: &World, user: &str) -> String {
    let mut claims = id_token_claims(CORP, user, "assistant");
    claims["iat"] = json!(w.clock.now_secs());
    w.corp.sign(None, &claims).unwrap()
}

/// Introspects `token` as `caller`; asserts the answer is 200 JSON that no cache keeps.
async fn introspect(server: &TestServer, token: &str, caller: &str) -> Value {
    let response = server
        .post_form("/introspect", &[("token", token)], &auth(caller))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    body_json(response).await
}

fn inactive() -> Value {
    json!({"active": false})
}

fn jti(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

async fn admin_revoke(server: &TestServer, path: &str) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(ADMIN_OPS)
        .json(&json!({"reason": "introspection test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// The assistant hands off to the booking tool (root), which gets a calendar token (app).
async fn hand_off_and_app(w: &World) -> (String, String) {
    let root = issue(
        &w.server,
        &id_token(w, "alice"),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let app = issue(&w.server, &root, "access_token", CAL, "booking-tool").await;
    (root, app)
}

#[tokio::test]
async fn the_resource_server_owning_the_audience_sees_the_whole_chain() {
    let w = world().await;
    let (root, app) = hand_off_and_app(&w).await;
    let answer = introspect(&w.server, &app, "calendar-api").await;
    // Every claim of the token, plus `active` and `token_type`, and nothing else.
    let mut expected = claims_of(&app);
    expected["active"] = json!(true);
    expected["token_type"] = json!("Bearer");
    assert_eq!(answer, expected);
    assert_eq!(answer["sub"], "corp|alice");
    assert_eq!(answer["client_id"], "booking-tool");
    assert_eq!(answer["aud"], CAL);
    assert_eq!(answer["iss"], w.server.issuer());
    assert_eq!(answer["scope"], "calendar.read calendar.write");
    assert!(answer.get("authorization_details").is_none());
    assert_eq!(
        answer["act"],
        json!({"sub": "booking-tool", "act": {"sub": "assistant"}})
    );
    assert_eq!(answer["chain_id"], claims_of(&root)["chain_id"]);
    assert_eq!(answer["ancestors"], json!([jti(&root)]));
    assert_eq!(answer["jti"], jti(&app).as_str());
    assert!(answer["exp"].as_i64().unwrap() > answer["iat"].as_i64().unwrap());
}

#[tokio::test]
async fn other_callers_get_exactly_inactive() {
    let w = world().await;
    let (_, app) = hand_off_and_app(&w).await;
    // A resource server of another audience.
    assert_eq!(introspect(&w.server, &app, "mail-api").await, inactive());
    // The agent that requested it sees it.
    let answer = introspect(&w.server, &app, "booking-tool").await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["jti"], jti(&app).as_str());
    // An earlier actor in the chain is not its client; an unrelated agent neither.
    assert_eq!(introspect(&w.server, &app, "assistant").await, inactive());
    assert_eq!(introspect(&w.server, &app, "helper").await, inactive());
}

#[tokio::test]
async fn a_hand_off_is_visible_to_the_agent_that_requested_it() {
    let w = world().await;
    let (root, _) = hand_off_and_app(&w).await;
    let answer = introspect(&w.server, &root, "assistant").await;
    assert_eq!(answer["active"], true);
    assert_eq!(answer["client_id"], "assistant");
    assert_eq!(answer["aud"], "agent:booking-tool");
    assert_eq!(answer["act"], json!({"sub": "assistant"}));
    assert_eq!(answer["ancestors"], json!([]));
    assert!(answer.get("scope").is_none());
    assert_eq!(
        answer["authorization_details"],
        claims_of(&root)["authorization_details"]
    );
    let details = answer["authorization_details"].as_array().unwrap();
    assert!(details
        .iter()
        .all(|d| d["type"] == "mandate_delegation" && d["scopes"].is_array()));
    assert!(details.iter().any(|d| d["audience"] == CAL));
    // The agent it hands off to is its audience, not its client; no resource server owns it.
    assert_eq!(
        introspect(&w.server, &root, "booking-tool").await,
        inactive()
    );
    assert_eq!(
        introspect(&w.server, &root, "calendar-api").await,
        inactive()
    );
}

#[tokio::test]
async fn revoking_an_ancestor_hop_makes_the_descendants_inactive() {
    let w = world().await;
    let (root, app) = hand_off_and_app(&w).await;
    // Another chain, untouched by the revocation.
    let other = issue(
        &w.server,
        &id_token(&w, "bob"),
        "id_token",
        CAL,
        "assistant",
    )
    .await;
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await["active"],
        true
    );
    admin_revoke(&w.server, &format!("/admin/hops/{}/revoke", jti(&root))).await;
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await,
        inactive()
    );
    assert_eq!(
        introspect(&w.server, &app, "booking-tool").await,
        inactive()
    );
    assert_eq!(introspect(&w.server, &root, "assistant").await, inactive());
    assert_eq!(
        introspect(&w.server, &other, "calendar-api").await["active"],
        true
    );
}

#[tokio::test]
async fn revoking_the_chain_makes_every_token_of_it_inactive() {
    let w = world().await;
    let (root, app) = hand_off_and_app(&w).await;
    let mail = issue(&w.server, &root, "access_token", MAIL, "booking-tool").await;
    assert_eq!(
        introspect(&w.server, &mail, "mail-api").await["active"],
        true
    );
    let chain = claims_of(&root)["chain_id"].as_str().unwrap().to_owned();
    admin_revoke(&w.server, &format!("/admin/chains/{chain}/revoke")).await;
    assert_eq!(introspect(&w.server, &root, "assistant").await, inactive());
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await,
        inactive()
    );
    assert_eq!(introspect(&w.server, &mail, "mail-api").await, inactive());
}

#[tokio::test]
async fn an_expired_token_is_inactive_even_within_the_clock_skew() {
    let w = world().await;
    let token = issue(
        &w.server,
        &id_token(&w, "alice"),
        "id_token",
        CAL,
        "assistant",
    )
    .await;
    let claims = claims_of(&token);
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert_eq!(
        introspect(&w.server, &token, "calendar-api").await["active"],
        true
    );
    // At `exp` the token is dead here, although a verifier tolerating skew would still take it.
    w.clock.advance(lifetime);
    assert_eq!(
        introspect(&w.server, &token, "calendar-api").await,
        inactive()
    );
    w.clock.advance(400 - lifetime);
    assert_eq!(
        introspect(&w.server, &token, "calendar-api").await,
        inactive()
    );
    assert_eq!(introspect(&w.server, &token, "assistant").await, inactive());
}

#[tokio::test]
async fn anything_but_a_live_mandate_token_is_inactive() {
    let w = world().await;
    let (_, app) = hand_off_and_app(&w).await;
    let claims = claims_of(&app);
    let header = header_of(&app);
    // The same claims and header (`typ`, `alg`, mandate's `kid`), signed by another key.
    let forger = TestKey::generate(KeyKind::Es256, header["kid"].as_str()).unwrap();
    let forged = forger.sign_raw(&header, &claims).unwrap();
    // The same claims unsigned, and a corp-signed token dressed as an access token.
    let unsigned = alg_none(&claims);
    let mut upstream_as_at = id_token_claims(CORP, "alice", CAL);
    upstream_as_at["client_id"] = json!("booking-tool");
    let corp_at = w.corp.sign(Some("at+jwt"), &upstream_as_at).unwrap();
    // Flipping one character of the signature.
    let mut tampered = app.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for token in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        id_token(&w, "alice"),
        corp_at,
        forged,
        unsigned,
        tampered,
    ] {
        for caller in ["calendar-api", "booking-tool"] {
            assert_eq!(
                introspect(&w.server, &token, caller).await,
                inactive(),
                "{caller}: {token}"
            );
        }
    }
    // The genuine one still is active.
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await["active"],
        true
    );
}

#[tokio::test]
async fn bad_requests_are_refused() {
    let w = world().await;
    let (_, app) = hand_off_and_app(&w).await;
    let s = &w.server;
    // Missing token.
    let response = s
        .post_form("/introspect", &[], &auth("calendar-api"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // A repeated parameter.
    let response = s
        .post_form(
            "/introspect",
            &[("token", &app), ("token", "garbage")],
            &auth("calendar-api"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // Wrong secret, unknown client, no client authentication: 401, whatever the token.
    for credentials in [
        ClientAuth::Basic("calendar-api".into(), "wrong".into()),
        ClientAuth::Basic("nobody".into(), "calendar-secret".into()),
        ClientAuth::None,
    ] {
        let response = s
            .post_form("/introspect", &[("token", &app)], &credentials)
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{credentials:?}"
        );
        assert!(response.headers().contains_key("www-authenticate"));
        let body = body_json(response).await;
        assert_eq!(body["error"], "invalid_client");
        assert!(body.get("active").is_none());
    }
    // POST only.
    let response = s.http.get(s.url("/introspect")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    // Not a form.
    let response = s
        .http
        .post(s.url("/introspect"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&json!({"token": app}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // `token_type_hint` is ignored, even when it is wrong.
    let response = s
        .post_form(
            "/introspect",
            &[("token", &app), ("token_type_hint", "refresh_token")],
            &auth("calendar-api"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await["active"], true);
}

#[tokio::test]
async fn introspection_is_rate_limited_per_client() {
    let w = world_with(|corp| {
        let mut settings = delegation_settings(corp);
        settings.limits.token_requests_per_client_per_sec = 2;
        settings
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            introspect(&w.server, "garbage", "calendar-api").await,
            inactive()
        );
    }
    let response = w
        .server
        .post_form(
            "/introspect",
            &[("token", "garbage")],
            &auth("calendar-api"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(body_json(response).await["error"], "slow_down");
    // Another client's budget is its own.
    assert_eq!(
        introspect(&w.server, "garbage", "mail-api").await,
        inactive()
    );
}

#[tokio::test]
async fn discovery_advertises_the_endpoint() {
    let w = world().await;
    let document = w
        .server
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    assert_eq!(
        document["introspection_endpoint"],
        format!("{}/introspect", w.server.issuer())
    );
    let methods = document["introspection_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.iter().any(|m| m == "client_secret_basic"));
    assert_eq!(
        document["introspection_endpoint_auth_methods_supported"],
        document["token_endpoint_auth_methods_supported"]
    );
}

/// A revocation list that can be switched off.
#[derive(Debug)]
pub(crate) struct SwitchableRevocations {
    pub(crate) inner: Arc<dyn RevocationStore>,
    pub(crate) down: AtomicBool,
}

impl SwitchableRevocations {
    fn gate(&self) -> Result<(), RevocationStoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(RevocationStoreError("switched off by the test".into()))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl RevocationList for SwitchableRevocations {
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        self.gate()?;
        self.inner.revoke(entries).await
    }
    async fn check(&self, facts: &TokenFacts) -> Result<Checked, RevocationStoreError> {
        self.gate()?;
        self.inner.check(facts).await
    }
    async fn now_ms(&self) -> Result<i64, RevocationStoreError> {
        self.gate()?;
        self.inner.now_ms().await
    }
    async fn entries(&self) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        self.gate()?;
        self.inner.entries().await
    }
    async fn ping(&self) -> Result<(), RevocationStoreError> {
        self.gate()?;
        self.inner.ping().await
    }
}

/// No stream of its own (feeds are not what these tests are about); heartbeats go through.
#[async_trait::async_trait]
impl RevocationStream for SwitchableRevocations {
    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError> {
        self.gate()?;
        self.inner.heartbeat(node, keep_ms).await
    }
}

#[tokio::test]
async fn a_store_failure_is_503_never_a_guess() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let clock = Arc::new(FixedClock::at(now()));
    // The test kit's harness, with the revocation list wrapped in a switch.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(loopback, loopback).unwrap();
    let public = listeners.public.local_addr().unwrap();
    let mut settings = delegation_settings(&corp);
    settings.listen = public;
    settings.admin_listen = listeners.admin.local_addr().unwrap();
    settings.issuer = format!("http://{public}");
    let mut state = AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let switch = Arc::new(SwitchableRevocations {
        inner: state.revocations.clone(),
        down: AtomicBool::new(false),
    });
    state.revocations = switch.clone();
    let running = mandate_server::start(state, listeners, Signals::Ignore).unwrap();
    let base = format!("http://{public}");
    let http = reqwest::Client::new();
    let post = |token: String, caller: &'static str| {
        let (http, base) = (&http, &base);
        async move {
            let ClientAuth::Basic(id, secret) = auth(caller) else {
                unreachable!()
            };
            http.post(format!("{base}/introspect"))
                .basic_auth(id, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap()
        }
    };

    let mut grant = id_token_claims(CORP, "alice", "assistant");
    grant["iat"] = json!(clock.now_secs());
    let response = http
        .post(format!("{base}/token"))
        .basic_auth("assistant", Some("assistant-secret"))
        .form(&exchange_form(
            &corp.sign(None, &grant).unwrap(),
            "id_token",
            CAL,
            &[],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let token = body_json(response).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = post(token.clone(), "calendar-api").await;
    assert_eq!(body_json(response).await["active"], true);

    switch.down.store(true, Ordering::SeqCst);
    // Nothing proves the token unrevoked, and saying inactive would mislead: 503.
    let response = post(token.clone(), "calendar-api").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers().contains_key("retry-after"));
    let body = body_json(response).await;
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(body.get("active").is_none());
    // A token the caller may not see, or garbage, is inactive whatever the store says.
    let response = post(token.clone(), "mail-api").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_json(response).await, inactive());
    let response = post("garbage".into(), "calendar-api").await;
    assert_eq!(body_json(response).await, inactive());

    switch.down.store(false, Ordering::SeqCst);
    let response = post(token, "calendar-api").await;
    assert_eq!(body_json(response).await["active"], true);
    running.stop().await;
}

#[tokio::test]
async fn subject_and_agent_revocations_make_tokens_inactive() {
    // Subject @ T.
    let w = world().await;
    let (_, app) = hand_off_and_app(&w).await;
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await["active"],
        true
    );
    admin_revoke(&w.server, "/admin/subjects/corp%7Calice/revoke").await;
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await,
        inactive()
    );
    // Agent @ T: the booking tool acts in the calendar token and is the recipient of the
    // assistant's hand-off (audience agent:booking-tool), so both die with it.
    let w = world().await;
    let (root, app) = hand_off_and_app(&w).await;
    w.server
        .state
        .revocation
        .revoke_agent("booking-tool", "suspended", "test")
        .await
        .unwrap();
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await,
        inactive()
    );
    assert_eq!(introspect(&w.server, &root, "assistant").await, inactive());
    // The assistant is the hand-off's client and an actor in the calendar token.
    let w = world().await;
    let (root, app) = hand_off_and_app(&w).await;
    assert_eq!(
        introspect(&w.server, &root, "assistant").await["active"],
        true
    );
    w.server
        .state
        .revocation
        .revoke_agent("assistant", "suspended", "test")
        .await
        .unwrap();
    assert_eq!(introspect(&w.server, &root, "assistant").await, inactive());
    assert_eq!(
        introspect(&w.server, &app, "calendar-api").await,
        inactive()
    );
}

fn auth(client: &str) -> ClientAuth {
    mandate_testkit::delegation_auth(client)
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
