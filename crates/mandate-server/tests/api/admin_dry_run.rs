//! `?dry_run=true` on the admin actions that revoke, over real HTTP (memory store): the preview
//! names exactly the hops the revocation then kills (seen through `GET /admin/chains/{id}`),
//! changes nothing (tokens still introspect active and exchange, no entry, no audit event), needs
//! the action's role, and any other value is 400.

use std::collections::BTreeSet;

use mandate_model::Clock;
use mandate_testkit::{
    claims_of, delegation_exchange, delegation_issue, id_token_claims, TestServer,
    ADMIN_OPS as REVOKER, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::admin_agents::{active_at_calendar, env, Env, MANAGER};

/// An admin request; the status and JSON body. A dry run's answer, like every admin answer
/// built by the agents' `answer`, is never cached.
async fn call(
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
    if path.contains("dry_run=true") && status == StatusCode::OK {
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
    (status, mandate_testkit::body_json(response).await)
}

/// Alice's chain: the assistant's hand-off to the booking tool (`hand_off`), the booking tool's
/// calendar token below it (`calendar`), the assistant's mail token from the same grant
/// (`mail`); bob's chain: the assistant's calendar token (`bobs`).
struct Tokens {
    alice_grant: String,
    hand_off: String,
    calendar: String,
    mail: String,
    bobs: String,
}

fn grant(env: &Env, user: &str) -> String {
    let mut claims = id_token_claims(CORP, user, "assistant");
    claims["iat"] = json!(env.clock.now_secs());
    claims["exp"] = json!(env.clock.now_secs() + 600);
    env.corp.sign(None, &claims).unwrap()
}

async fn tokens(env: &Env) -> Tokens {
    let server = &env.server;
    let alice_grant = grant(env, "alice");
    let hand_off = delegation_issue(
        server,
        &alice_grant,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    let calendar = delegation_issue(server, &hand_off, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
    let mail = delegation_issue(server, &alice_grant, "id_token", MAIL, "assistant")
        .await
        .unwrap();
    let bobs = delegation_issue(server, &grant(env, "bob"), "id_token", CAL, "assistant")
        .await
        .unwrap();
    Tokens {
        alice_grant,
        hand_off,
        calendar,
        mail,
        bobs,
    }
}

fn jti(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

fn chain_of(token: &str) -> String {
    claims_of(token)["chain_id"].as_str().unwrap().to_owned()
}

/// Every hop of the chains of `tokens` with its status, as `GET /admin/chains/{id}` shows it.
async fn statuses(server: &TestServer, tokens: &Tokens) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let chains: BTreeSet<String> = [&tokens.hand_off, &tokens.bobs]
        .into_iter()
        .map(|t| chain_of(t))
        .collect();
    for chain in chains {
        let (status, body) = call(
            server,
            Method::GET,
            &format!("/admin/chains/{chain}"),
            Some(READER),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let mut stack: Vec<Value> = body["roots"].as_array().unwrap().clone();
        while let Some(node) = stack.pop() {
            found.push((
                node["jti"].as_str().unwrap().to_owned(),
                node["status"].as_str().unwrap().to_owned(),
            ));
            stack.extend(node["children"].as_array().unwrap().iter().cloned());
        }
    }
    found.sort();
    found
}

fn with_status(statuses: &[(String, String)], wanted: &str) -> BTreeSet<String> {
    statuses
        .iter()
        .filter(|(_, s)| s == wanted)
        .map(|(hop, _)| hop.clone())
        .collect()
}

fn set(ids: &Value) -> BTreeSet<String> {
    ids.as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

async fn audit_len(server: &TestServer) -> usize {
    let (status, body) = call(server, Method::GET, "/admin/audit", Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["events"].as_array().unwrap().len()
}

/// The booking tool exchanges its hand-off for the calendar once more: the new token (the
/// exchange must succeed).
async fn hand_off_exchanges(server: &TestServer, tokens: &Tokens) -> String {
    delegation_issue(
        server,
        &tokens.hand_off,
        "access_token",
        CAL,
        "booking-tool",
    )
    .await
    .unwrap()
}

/// The path, the secret that may call it, and the hops its revocation kills.
fn cases(tokens: &Tokens) -> Vec<(String, &'static str, BTreeSet<String>)> {
    let hops = |ts: &[&String]| ts.iter().map(|t| jti(t)).collect::<BTreeSet<_>>();
    let alice = hops(&[&tokens.hand_off, &tokens.calendar, &tokens.mail]);
    vec![
        (
            format!("/admin/hops/{}/revoke", jti(&tokens.hand_off)),
            REVOKER,
            hops(&[&tokens.hand_off, &tokens.calendar]),
        ),
        (
            format!("/admin/hops/{}/revoke", jti(&tokens.calendar)),
            REVOKER,
            hops(&[&tokens.calendar]),
        ),
        (
            format!("/admin/chains/{}/revoke", chain_of(&tokens.hand_off)),
            REVOKER,
            alice.clone(),
        ),
        ("/admin/subjects/corp%7Calice/revoke".into(), REVOKER, alice),
        (
            "/admin/agents/booking-tool/suspend".into(),
            REVOKER,
            hops(&[&tokens.hand_off, &tokens.calendar]),
        ),
        (
            "/admin/agents/assistant/retire".into(),
            MANAGER,
            hops(&[
                &tokens.hand_off,
                &tokens.calendar,
                &tokens.mail,
                &tokens.bobs,
            ]),
        ),
    ]
}

/// The revocation part of an answer: the answer itself, or a transition's `revocation`.
fn revocation(path: &str, body: &Value) -> Value {
    if path.starts_with("/admin/agents/") {
        body["revocation"].clone()
    } else {
        body.clone()
    }
}

#[tokio::test]
async fn each_dry_run_names_exactly_what_its_revocation_then_kills() {
    let probe = env().await;
    let count = cases(&tokens(&probe).await).len();
    probe.server.stop().await;
    for case in 0..count {
        let env = env().await;
        let server = &env.server;
        let tokens = tokens(&env).await;
        let (path, secret, expected) = cases(&tokens).swap_remove(case);
        let before = statuses(server, &tokens).await;
        assert!(with_status(&before, "revoked").is_empty());
        let audited = audit_len(server).await;

        let (status, body) = call(
            server,
            Method::POST,
            &format!("{path}?dry_run=true"),
            Some(secret),
            Some(json!({"reason": "looking first"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(body["dry_run"], true, "{path}: {body}");
        let preview = revocation(&path, &body);
        assert_eq!(preview["dry_run"], true, "{path}: {preview}");
        assert_eq!(set(&preview["hops_revoked"]), expected, "{path}: {preview}");
        let detailed: Vec<&str> = preview["hops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["hop"].as_str().unwrap())
            .collect();
        let named: Vec<&str> = preview["hops_revoked"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap())
            .collect();
        assert_eq!(detailed, named, "{path}: the hops detail hops_revoked");
        for hop in preview["hops"].as_array().unwrap() {
            assert_eq!(hop["status"], "live", "{path}: {hop}");
            assert!(hop["chain_id"].as_str().unwrap().starts_with("chn_"));
            assert!(hop["client_id"].is_string() && hop["audience"].is_string());
        }
        assert_eq!(preview["counts"]["live"], expected.len(), "{path}");
        assert_eq!(preview["entries"][0]["reason"], "looking first");

        // Nothing changed: every hop as before, tokens live and exchangeable, no audit event.
        assert_eq!(statuses(server, &tokens).await, before, "{path}");
        assert!(active_at_calendar(server, &tokens.calendar).await, "{path}");
        assert!(active_at_calendar(server, &tokens.bobs).await, "{path}");
        assert_eq!(
            audit_len(server).await,
            audited,
            "{path}: a dry run audits nothing"
        );
        let fresh = hand_off_exchanges(server, &tokens).await;
        if path.starts_with("/admin/agents/") {
            let agent = body["agent"]["client_id"].as_str().unwrap();
            let (_, shown) = call(
                server,
                Method::GET,
                &format!("/admin/agents/{agent}"),
                Some(READER),
                None,
            )
            .await;
            assert_eq!(shown["state"], "active", "{path}: the state is unchanged");
            assert_ne!(body["agent"]["state"], "active", "{path}: as it would be");
        }

        // The exchange just made is a new hop the revocation may reach too (a preview is a
        // snapshot): the administrator looks again before confirming, and that look names the
        // new hop when it falls under the revocation, and nothing else new.
        let (status, body) = call(
            server,
            Method::POST,
            &format!("{path}?dry_run=true"),
            Some(secret),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let confirmed = set(&revocation(&path, &body)["hops_revoked"]);
        let new: BTreeSet<String> = confirmed.difference(&expected).cloned().collect();
        assert!(expected.is_subset(&confirmed), "{path}");
        assert!(new.iter().all(|hop| *hop == jti(&fresh)), "{path}: {new:?}");

        // The revocation itself kills exactly those hops: each hop revoked now that was not.
        let (status, body) = call(server, Method::POST, &path, Some(secret), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert!(body.get("dry_run").is_none(), "{path}: {body}");
        let outcome = revocation(&path, &body);
        assert_eq!(
            set(&outcome["hops_revoked"]),
            confirmed,
            "{path}: {outcome}"
        );
        assert_eq!(
            outcome["chains_revoked"], preview["chains_revoked"],
            "{path}"
        );
        let after = statuses(server, &tokens).await;
        assert_eq!(with_status(&after, "revoked"), confirmed, "{path}");
        assert_eq!(
            active_at_calendar(server, &tokens.calendar).await,
            !expected.contains(&jti(&tokens.calendar)),
            "{path}"
        );
        assert!(
            audit_len(server).await > audited,
            "{path}: the revocation is audited"
        );
        env.server.stop().await;
    }
}

#[tokio::test]
async fn a_dry_run_tells_hops_already_revoked_from_those_it_would_kill() {
    let env = env().await;
    let server = &env.server;
    let tokens = tokens(&env).await;
    let (status, _) = call(
        server,
        Method::POST,
        &format!("/admin/hops/{}/revoke", jti(&tokens.calendar)),
        Some(REVOKER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(
        server,
        Method::POST,
        &format!(
            "/admin/chains/{}/revoke?dry_run=true",
            chain_of(&tokens.hand_off)
        ),
        Some(REVOKER),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["counts"],
        json!({"entries": 1, "hops": 3, "chains": 1, "live": 2, "already_revoked": 1, "expired": 0})
    );
    let calendar = body["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == jti(&tokens.calendar).as_str())
        .unwrap();
    assert_eq!(calendar["status"], "revoked");
    assert_eq!(
        calendar["revoked_by"],
        json!({"kind": "hop", "id": jti(&tokens.calendar)})
    );
    assert_eq!(calendar["client_id"], "booking-tool");
    assert_eq!(calendar["actors"], json!(["booking-tool", "assistant"]));
    assert_eq!(calendar["audience"], CAL);
    assert_eq!(calendar["parent"], jti(&tokens.hand_off).as_str());
    assert_eq!(body["entries"][0]["kind"], "chain");
    // The grant still starts new tokens: the chain's entry was not written.
    let (status, _) =
        delegation_exchange(server, &tokens.alice_grant, "id_token", CAL, "assistant")
            .await
            .unwrap();
    assert_eq!(status, StatusCode::OK);
    env.server.stop().await;
}

#[tokio::test]
async fn a_dry_run_needs_the_role_of_its_action() {
    let env = env().await;
    let server = &env.server;
    let tokens = tokens(&env).await;
    let mut paths: Vec<(String, &str)> = cases(&tokens)
        .into_iter()
        .map(|(path, _, _)| (path, READER))
        .collect();
    // Retirement needs `manage`: a `revoke` credential may not even look.
    paths.push(("/admin/agents/assistant/retire".into(), REVOKER));
    paths.push(("/admin/agents/assistant/activate".into(), REVOKER));
    for (path, secret) in paths {
        for query in ["?dry_run=true", "?dry_run=false", ""] {
            let (status, body) = call(
                server,
                Method::POST,
                &format!("{path}{query}"),
                Some(secret),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}{query}: {body}");
            assert_eq!(body["error"], "forbidden");
        }
        let (status, _) = call(
            server,
            Method::POST,
            &format!("{path}?dry_run=true"),
            None,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
    assert!(with_status(&statuses(server, &tokens).await, "revoked").is_empty());
    env.server.stop().await;
}

#[tokio::test]
async fn a_dry_run_value_other_than_true_or_false_is_400_and_changes_nothing() {
    let env = env().await;
    let server = &env.server;
    let tokens = tokens(&env).await;
    let audited = audit_len(server).await;
    for (path, secret, _) in cases(&tokens) {
        for query in [
            "dry_run=1",
            "dry_run=yes",
            "dry_run=True",
            "dry_run=",
            "dry_run",
            "dry_run=true&dry_run=false",
            "dry-run=true",
            "dryRun=true",
            "dry_run=true&reason=x",
        ] {
            let (status, body) = call(
                server,
                Method::POST,
                &format!("{path}?{query}"),
                Some(secret),
                None,
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}?{query}: {body}");
            assert_eq!(body["error"], "invalid_input", "{path}?{query}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    assert!(with_status(&statuses(server, &tokens).await, "revoked").is_empty());
    assert!(active_at_calendar(server, &tokens.calendar).await);
    assert_eq!(audit_len(server).await, audited);
    // Refusals are the action's own: an unknown hop or agent is 404, a bad subject 400, a
    // transition the state machine refuses 409, and none of them writes anything.
    for (path, expected) in [
        ("/admin/hops/hop_unknown/revoke", StatusCode::NOT_FOUND),
        ("/admin/chains/chn_unknown/revoke", StatusCode::NOT_FOUND),
        ("/admin/subjects/corp%7C/revoke", StatusCode::BAD_REQUEST),
        ("/admin/agents/nobody/suspend", StatusCode::NOT_FOUND),
        ("/admin/agents/assistant/activate", StatusCode::CONFLICT),
    ] {
        let (status, body) = call(
            server,
            Method::POST,
            &format!("{path}?dry_run=true"),
            Some(MANAGER),
            None,
        )
        .await;
        assert_eq!(status, expected, "{path}: {body}");
    }
    // `dry_run=false` is the revocation.
    let path = format!("/admin/hops/{}/revoke?dry_run=false", jti(&tokens.calendar));
    let (status, body) = call(server, Method::POST, &path, Some(REVOKER), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!active_at_calendar(server, &tokens.calendar).await);
    env.server.stop().await;
}
