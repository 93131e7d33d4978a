//! Shared Signals pushed by a trusted issuer (RFC 8935, SSF 1.0, CAEP, RISC): a user's revoked
//! sessions end their delegations here, and every SET that does not verify is refused with its
//! RFC 8935 code and changes nothing.

use mandate_model::SecretHash;
use mandate_testkit::{
    body_json, delegation_auth, delegation_exchange, delegation_issue, delegation_settings,
    id_token_claims, now, KeyKind, TestKey, TestServer, CAL, CORP,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const PUSH_TOKEN: &str = "corp-push-token-0123456789abcdef";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

struct World {
    corp: TestKey,
    server: TestServer,
}

async fn world() -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.trusted_issuers[0].ssf_push_token_hash = Some(SecretHash::of(PUSH_TOKEN));
    let server = TestServer::spawn(settings).await.unwrap();
    World { corp, server }
}

fn set_claims(server: &TestServer, jti: &str, sub: &str, event: &str) -> Value {
    json!({
        "iss": CORP,
        "aud": server.issuer(),
        "iat": now(),
        "jti": jti,
        "sub_id": {"format": "iss_sub", "iss": CORP, "sub": sub},
        "events": {event: {"event_timestamp": now(), "initiating_entity": "admin"}},
    })
}

fn sign_set(key: &TestKey, claims: &Value) -> String {
    let mut header = key.header(None);
    header["typ"] = json!("secevent+jwt");
    key.sign_raw(&header, claims).unwrap()
}

async fn push(
    server: &TestServer,
    alias: &str,
    token: Option<&str>,
    set: &str,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .post(server.url(&format!("/ssf/receive/{alias}")))
        .header("content-type", "application/secevent+jwt")
        .body(set.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn active(server: &TestServer, token: &str) -> bool {
    let response = server
        .post_form(
            "/introspect",
            &[("token", token)],
            &delegation_auth("calendar-api"),
        )
        .await
        .unwrap();
    body_json(response).await["active"] == true
}

async fn id_token(w: &World, user: &str) -> String {
    w.corp
        .sign(None, &id_token_claims(CORP, user, "assistant"))
        .unwrap()
}

#[tokio::test]
async fn a_pushed_session_revoked_ends_the_users_delegations_here() {
    let w = world().await;
    let alice_id_token = id_token(&w, "alice").await;
    let alice = delegation_issue(&w.server, &alice_id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
    let bob = delegation_issue(
        &w.server,
        &id_token(&w, "bob").await,
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    assert!(active(&w.server, &alice).await);

    let set = sign_set(
        &w.corp,
        &set_claims(&w.server, "set-1", "alice", SESSION_REVOKED),
    );
    let (status, _) = push(&w.server, "corp", Some(PUSH_TOKEN), &set).await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // Alice's live token is dead, and her ID token from before the signal starts nothing new.
    assert!(!active(&w.server, &alice).await);
    let (status, body) =
        delegation_exchange(&w.server, &alice_id_token, "id_token", CAL, "assistant")
            .await
            .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // Bob is not touched.
    assert!(active(&w.server, &bob).await);

    // Audited: the signal and the revocation it made, by the transmitter.
    let audit = w
        .server
        .http
        .get(w.server.admin_url("/admin/audit?actor=ssf:corp"))
        .bearer_auth(mandate_testkit::ADMIN_OPS)
        .send()
        .await
        .unwrap();
    let audit = body_json(audit).await;
    let actions: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"ssf.received") && actions.contains(&"revoke.subject"),
        "{audit}"
    );

    // The same SET again is acknowledged and changes nothing more.
    let (status, _) = push(&w.server, "corp", Some(PUSH_TOKEN), &set).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    w.server.stop().await;
}

#[tokio::test]
async fn sets_that_do_not_verify_are_refused_with_their_rfc_8935_code_and_change_nothing() {
    let w = world().await;
    let alice = delegation_issue(
        &w.server,
        &id_token(&w, "alice").await,
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    let good = || set_claims(&w.server, "set-x", "alice", SESSION_REVOKED);
    let with = |name: &str, value: Value| {
        let mut claims = good();
        claims[name] = value;
        claims
    };
    let stranger = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut jwt_typ = w.corp.header(None);
    jwt_typ["typ"] = json!("JWT");
    let cases: Vec<(&str, Option<&str>, String, StatusCode, &str)> = vec![
        (
            "no token",
            None,
            sign_set(&w.corp, &good()),
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
        ),
        (
            "wrong token",
            Some("guess"),
            sign_set(&w.corp, &good()),
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
        ),
        (
            "stranger's key",
            Some(PUSH_TOKEN),
            sign_set(&stranger, &good()),
            StatusCode::BAD_REQUEST,
            "invalid_key",
        ),
        (
            "alg none",
            Some(PUSH_TOKEN),
            mandate_testkit::alg_none(&good()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "typ JWT",
            Some(PUSH_TOKEN),
            w.corp.sign_raw(&jwt_typ, &good()).unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "another iss",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("iss", json!("https://other.example.com"))),
            StatusCode::BAD_REQUEST,
            "invalid_issuer",
        ),
        (
            "another aud",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("aud", json!("https://other.example.com"))),
            StatusCode::BAD_REQUEST,
            "invalid_audience",
        ),
        (
            "with sub",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("sub", json!("alice"))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "with exp",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("exp", json!(now() + 60))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "old iat",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("iat", json!(now() - 86_400))),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "no jti",
            Some(PUSH_TOKEN),
            sign_set(&w.corp, &with("jti", Value::Null)),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "another issuer's user",
            Some(PUSH_TOKEN),
            sign_set(
                &w.corp,
                &with(
                    "sub_id",
                    json!({"format": "iss_sub", "iss": "https://other.example.com", "sub": "alice"}),
                ),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an email subject",
            Some(PUSH_TOKEN),
            sign_set(
                &w.corp,
                &with(
                    "sub_id",
                    json!({"format": "email", "email": "alice@corp.example.com"}),
                ),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (what, token, set, status, err) in cases {
        let (got, body) = push(&w.server, "corp", token, &set).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["err"], err, "{what}: {body}");
        assert!(active(&w.server, &alice).await, "{what} changed something");
    }
    // An alias that does not receive, and a body that is not a SET.
    let (status, body) = push(
        &w.server,
        "nobody",
        Some(PUSH_TOKEN),
        &sign_set(&w.corp, &good()),
    )
    .await;
    assert_eq!(
        (status, body["err"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("authentication_failed"))
    );
    let response = w
        .server
        .http
        .post(w.server.url("/ssf/receive/corp"))
        .bearer_auth(PUSH_TOKEN)
        .header("content-type", "application/json")
        .body(sign_set(&w.corp, &good()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // An event mandate does not act on is acknowledged and ignored.
    let claims = set_claims(
        &w.server,
        "set-claims",
        "alice",
        "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
    );
    let (status, _) = push(
        &w.server,
        "corp",
        Some(PUSH_TOKEN),
        &sign_set(&w.corp, &claims),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(active(&w.server, &alice).await);
    w.server.stop().await;
}

/// The store fails while the SET is processed: 503, and the transmitter's retry of the very same
/// SET (same `jti`) is processed once the store is back, not taken for a replay.
#[tokio::test]
async fn a_set_whose_revocation_could_not_be_written_is_processed_on_retry() {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use crate::introspection::SwitchableRevocations;

    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = mandate_server::Listeners::bind(loopback, loopback).unwrap();
    let public = listeners.public.local_addr().unwrap();
    let mut settings = delegation_settings(&corp);
    settings.listen = public;
    settings.admin_listen = listeners.admin.local_addr().unwrap();
    settings.issuer = format!("http://{public}");
    settings.trusted_issuers[0].ssf_push_token_hash = Some(SecretHash::of(PUSH_TOKEN));
    let mut state = mandate_server::AppState::build(
        settings,
        mandate_server::config::ConfigSource::Programmatic,
        mandate_server::BuildOptions::default(),
    )
    .await
    .unwrap();
    let switch = Arc::new(SwitchableRevocations {
        inner: state.revocations.clone(),
        down: AtomicBool::new(false),
    });
    state.revocation = mandate_core::RevocationService::new(
        switch.clone(),
        state.ledger.clone(),
        state.audit.clone(),
        *state.revocation.lifetimes(),
    );
    let running = mandate_server::start(state, listeners, mandate_server::Signals::Ignore).unwrap();
    let base = format!("http://{public}");
    let http = reqwest::Client::new();
    let push = |set: String| {
        let (http, base) = (&http, &base);
        async move {
            http.post(format!("{base}/ssf/receive/corp"))
                .bearer_auth(PUSH_TOKEN)
                .header("content-type", "application/secevent+jwt")
                .body(set)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let claims = json!({
        "iss": CORP, "aud": base, "iat": now(), "jti": "set-retried",
        "sub_id": {"format": "iss_sub", "iss": CORP, "sub": "alice"},
        "events": {SESSION_REVOKED: {}},
    });
    let set = sign_set(&corp, &claims);
    switch.down.store(true, Ordering::SeqCst);
    assert_eq!(push(set.clone()).await, StatusCode::SERVICE_UNAVAILABLE);
    switch.down.store(false, Ordering::SeqCst);
    assert!(
        switch.inner.entries().await.unwrap().is_empty(),
        "nothing written while down"
    );
    assert_eq!(push(set.clone()).await, StatusCode::ACCEPTED);
    let entries = switch.inner.entries().await.unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].id, "corp|alice");
    // A third delivery is a replay: nothing more is written.
    assert_eq!(push(set).await, StatusCode::ACCEPTED);
    assert_eq!(switch.inner.entries().await.unwrap(), entries);
    running.stop().await;
}

#[tokio::test]
async fn an_idps_session_revoked_is_passed_on_to_the_apps_that_hold_the_users_tokens() {
    let w = world().await;
    let alice = delegation_issue(
        &w.server,
        &id_token(&w, "alice").await,
        "id_token",
        CAL,
        "assistant",
    )
    .await
    .unwrap();
    let stream: Value = w
        .server
        .http
        .post(w.server.url("/ssf/streams"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let set = sign_set(
        &w.corp,
        &set_claims(&w.server, "set-on", "alice", SESSION_REVOKED),
    );
    assert_eq!(
        push(&w.server, "corp", Some(PUSH_TOKEN), &set).await.0,
        StatusCode::ACCEPTED
    );
    let polled: Value = w
        .server
        .http
        .post(w.server.url(&format!(
            "/ssf/poll/{}",
            stream["stream_id"].as_str().unwrap()
        )))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&json!({"returnImmediately": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subjects: Vec<Value> = polled["sets"]
        .as_object()
        .unwrap()
        .values()
        .map(|set| mandate_testkit::claims_of(set.as_str().unwrap())["sub_id"].clone())
        .collect();
    let alice_jti = mandate_testkit::claims_of(&alice)["jti"].clone();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects
        .contains(&json!({"format": "iss_sub", "iss": w.server.issuer(), "sub": "corp|alice"})));
    assert!(
        subjects.contains(&json!({"format": "jwt_id", "iss": w.server.issuer(), "jti": alice_jti}))
    );
    w.server.stop().await;
}
