//! `/admin/consents` over real HTTP: stored consent grants created, listed and withdrawn, the
//! withdrawal killing every chain rooted on the grant, roles, and the audit stream.

use mandate_model::Clock;
use mandate_testkit::{
    body_json, id_token_claims, ADMIN_OPS as REVOKER, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::admin_agents::{active_at_calendar, call, env, Env, MANAGER};

fn instant(env: &Env, offset_secs: i64) -> String {
    (env.clock.now() + chrono::Duration::seconds(offset_secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn new_consent(env: &Env, subject: &str, actor: &str, audience: &str, scopes: &[&str]) -> Value {
    json!({
        "subject": subject,
        "actor": actor,
        "audience": audience,
        "scopes": scopes,
        "expires_at": instant(env, 86_400),
    })
}

async fn create(env: &Env, body: Value) -> Value {
    let (status, answer) = call(
        &env.server,
        Method::POST,
        "/admin/consents",
        Some(MANAGER),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["consent"].clone()
}

async fn list(env: &Env, query: &str) -> Vec<Value> {
    let (status, answer) = call(
        &env.server,
        Method::GET,
        &format!("/admin/consents{query}"),
        Some(READER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    answer["consents"].as_array().unwrap().clone()
}

fn ids(grants: &[Value]) -> Vec<String> {
    grants
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn withdraw(env: &Env, id: &str, secret: &str) -> (StatusCode, Value) {
    call(
        &env.server,
        Method::DELETE,
        &format!("/admin/consents/{id}"),
        Some(secret),
        None,
    )
    .await
}

fn expect_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"], code, "{body}");
}

/// A JWT from corp for `sub`, addressed to mandate and bound to the assistant by `azp`: only a
/// stored consent grant makes it evidence (evidence 3).
fn consent_jwt(env: &Env, sub: &str) -> String {
    let mut claims = id_token_claims(CORP, sub, env.server.issuer());
    claims["azp"] = json!("assistant");
    claims["iat"] = json!(env.clock.now_secs());
    claims["exp"] = json!(env.clock.now_secs() + 600);
    env.corp.sign(None, &claims).unwrap()
}

async fn exchange(env: &Env, jwt: &str) -> (StatusCode, Value) {
    mandate_testkit::delegation_exchange(&env.server, jwt, "jwt", CAL, "assistant")
        .await
        .unwrap()
}

#[tokio::test]
async fn a_created_grant_is_listed_and_filtered() {
    let env = env().await;
    let grant = create(
        &env,
        new_consent(&env, "corp|carol", "assistant", CAL, &["calendar.read"]),
    )
    .await;
    let id = grant["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with("cns_") && id.len() >= 4 + 22,
        "{id}: 128 random bits"
    );
    assert_eq!(
        grant,
        json!({"id": id, "subject": "corp|carol", "actor": "assistant", "audience": CAL,
            "scopes": ["calendar.read"], "expires_at": instant(&env, 86_400)})
    );
    let second = create(
        &env,
        new_consent(&env, "corp|carol", "booking-tool", MAIL, &["mail.read"]),
    )
    .await;
    let third = create(
        &env,
        new_consent(
            &env,
            "corp|dave",
            "assistant",
            CAL,
            &["calendar.read", "calendar.write"],
        ),
    )
    .await;
    assert_ne!(second["id"], grant["id"]);

    let mut all = vec![grant.clone(), second.clone(), third.clone()];
    all.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    assert_eq!(list(&env, "").await, all);
    let by = |grants: &[&Value]| {
        let mut v: Vec<String> = grants
            .iter()
            .map(|g| g["id"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&list(&env, "?subject=corp%7Ccarol").await),
        by(&[&grant, &second])
    );
    assert_eq!(
        ids(&list(&env, "?actor=assistant").await),
        by(&[&grant, &third])
    );
    assert_eq!(
        ids(&list(&env, "?subject=corp%7Ccarol&actor=assistant").await),
        by(&[&grant])
    );
    assert!(list(&env, "?subject=corp%7Cnobody").await.is_empty());
    for query in ["?actor=Not%20An%20Id", "?subject=", "?colour=blue"] {
        let (status, answer) = call(
            &env.server,
            Method::GET,
            &format!("/admin/consents{query}"),
            Some(READER),
            None,
        )
        .await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
}

#[tokio::test]
async fn bad_grants_are_refused_and_change_nothing() {
    let env = env().await;
    let valid = new_consent(&env, "corp|carol", "assistant", CAL, &["calendar.read"]);
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let cases = [
        (with("actor", json!("nobody")), "not a registered agent"),
        (
            with("actor", json!("calendar-api")),
            "not a registered agent",
        ),
        (with("actor", json!("Not An Id")), "actor"),
        (with("subject", json!("")), "subject"),
        (
            with("audience", json!("ftp://calendar.example.com")),
            "audience",
        ),
        (with("scopes", json!([])), "scope"),
        (with("scopes", json!(["calendar read"])), "scopes"),
        (with("expires_at", json!("2001-01-01T00:00:00Z")), "future"),
        (with("id", json!("cns chosen")), "consent id"),
        (with("colour", json!("blue")), "unknown field"),
    ];
    for (body, expected) in cases {
        let (status, answer) = call(
            &env.server,
            Method::POST,
            "/admin/consents",
            Some(MANAGER),
            Some(body.clone()),
        )
        .await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
        assert!(
            answer["message"].as_str().unwrap().contains(expected),
            "{body} → {answer}"
        );
    }
    assert!(list(&env, "").await.is_empty());
}

#[tokio::test]
async fn consent_endpoints_need_a_credential_with_the_right_role() {
    let env = env().await;
    let grant = create(
        &env,
        new_consent(&env, "corp|carol", "assistant", CAL, &["calendar.read"]),
    )
    .await;
    let id = grant["id"].as_str().unwrap();
    let delete_path = format!("/admin/consents/{id}");
    let body = new_consent(&env, "corp|eve", "assistant", CAL, &["calendar.read"]);
    let endpoints = [
        (Method::GET, "/admin/consents", None, vec![]),
        (
            Method::POST,
            "/admin/consents",
            Some(body),
            vec![READER, REVOKER],
        ),
        (
            Method::DELETE,
            delete_path.as_str(),
            None,
            vec![READER, REVOKER],
        ),
    ];
    for (method, path, body, refused) in &endpoints {
        for secret in [None, Some("not-a-credential")] {
            let (status, answer) =
                call(&env.server, method.clone(), path, secret, body.clone()).await;
            expect_error(status, &answer, StatusCode::UNAUTHORIZED, "unauthenticated");
        }
        for secret in refused {
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
    assert_eq!(list(&env, "").await, [grant]);
}

#[tokio::test]
async fn withdrawing_unknown_or_malformed_ids_is_refused() {
    let env = env().await;
    let (status, answer) = withdraw(&env, "cns_unknown", MANAGER).await;
    expect_error(status, &answer, StatusCode::NOT_FOUND, "not_found");
    let (status, answer) = withdraw(&env, "cns%3Abad", MANAGER).await;
    expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
}

#[tokio::test]
async fn withdrawal_kills_every_chain_rooted_on_the_grant() {
    let env = env().await;
    // Without a grant, carol's JWT is no evidence.
    let (status, body) = exchange(&env, &consent_jwt(&env, "carol")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let grant = create(
        &env,
        new_consent(&env, "corp|carol", "assistant", CAL, &["calendar.read"]),
    )
    .await;
    let id = grant["id"].as_str().unwrap().to_owned();
    let (status, body) = exchange(&env, &consent_jwt(&env, "carol")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(mandate_testkit::claims_of(&token)["scope"], "calendar.read");
    let chain_id = mandate_testkit::claims_of(&token)["chain_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(active_at_calendar(&env.server, &token).await);

    let (status, body) = withdraw(&env, &id, MANAGER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["withdrawn"], id);
    let entries: Vec<(String, String)> = body["revocation"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(entries.contains(&("consent".into(), id.clone())), "{body}");
    assert!(entries.contains(&("chain".into(), chain_id)), "{body}");

    // The chain is dead, the grant gone, and it roots nothing new.
    assert!(!active_at_calendar(&env.server, &token).await);
    assert!(list(&env, "").await.is_empty());
    let (status, body) = exchange(&env, &consent_jwt(&env, "carol")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, answer) = withdraw(&env, &id, MANAGER).await;
    expect_error(status, &answer, StatusCode::NOT_FOUND, "not_found");

    // Other grants and the tokens rooted on them are untouched.
    let other = create(
        &env,
        new_consent(&env, "corp|dave", "assistant", CAL, &["calendar.read"]),
    )
    .await;
    let (status, body) = exchange(&env, &consent_jwt(&env, "dave")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(active_at_calendar(&env.server, body["access_token"].as_str().unwrap()).await);
    assert_eq!(list(&env, "").await, [other]);
}

#[tokio::test]
async fn the_audit_stream_records_grants_with_the_credentials_name() {
    let env = env().await;
    let grant = create(
        &env,
        new_consent(&env, "corp|carol", "assistant", CAL, &["calendar.read"]),
    )
    .await;
    let id = grant["id"].as_str().unwrap();
    let (status, _) = withdraw(&env, id, MANAGER).await;
    assert_eq!(status, StatusCode::OK);
    let response = env
        .server
        .admin_get("/admin/audit?limit=1000", Some(READER))
        .await
        .unwrap();
    let audit = body_json(response).await;
    let events: Vec<(&str, &str)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == id)
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(
        events,
        [
            ("consent.withdraw", "ops-admin"),
            ("consent.create", "ops-admin")
        ],
        "{audit}"
    );
}

#[tokio::test]
async fn a_grant_may_be_given_its_id_but_not_one_taken_or_withdrawn() {
    let env = env().await;
    let mut body = new_consent(&env, "corp|alice", "assistant", CAL, &["calendar.read"]);
    body["id"] = json!("cns_from_the_file");

    // A dry run checks and stores nothing.
    let (status, answer) = call(
        &env.server,
        Method::POST,
        "/admin/consents?dry_run=true",
        Some(MANAGER),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["consent"]["id"], "cns_from_the_file");
    assert!(list(&env, "").await.is_empty());

    assert_eq!(create(&env, body.clone()).await["id"], "cns_from_the_file");
    let (status, answer) = call(
        &env.server,
        Method::POST,
        "/admin/consents",
        Some(MANAGER),
        Some(body.clone()),
    )
    .await;
    expect_error(status, &answer, StatusCode::CONFLICT, "conflict");

    let (status, answer) = withdraw(&env, "cns_from_the_file", MANAGER).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for path in ["/admin/consents?dry_run=true", "/admin/consents"] {
        let (status, answer) = call(
            &env.server,
            Method::POST,
            path,
            Some(MANAGER),
            Some(body.clone()),
        )
        .await;
        expect_error(status, &answer, StatusCode::CONFLICT, "withdrawn");
    }
    assert!(list(&env, "").await.is_empty());

    for id in ["", "has space", "a/b", &"x".repeat(129)] {
        let mut body = body.clone();
        body["id"] = json!(id);
        let (status, answer) = call(
            &env.server,
            Method::POST,
            "/admin/consents",
            Some(MANAGER),
            Some(body),
        )
        .await;
        expect_error(status, &answer, StatusCode::BAD_REQUEST, "invalid_input");
    }
}
