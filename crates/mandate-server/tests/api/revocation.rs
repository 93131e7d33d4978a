//! Revocation that follows the chain, over real HTTP (memory store; the Redis store runs the
//! same scenarios in the redis test binary).

use std::sync::Arc;

use mandate_model::{Clock, FixedClock};
use mandate_revocation::{TokenFacts, Verdict};
use mandate_server::state::ExchangePause;
use mandate_server::{AppState, BuildOptions};
use mandate_testkit::{
    body_json, claims_of, exchange_form, id_token_claims, now, ClientAuth, KeyKind, TestKey,
    TestServer,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

use mandate_testkit::{ADMIN_OPS as OPS, ADMIN_READER as READER, CAL, CORP, MAIL};

pub struct World {
    pub server: TestServer,
    pub corp: TestKey,
    pub clock: Arc<FixedClock>,
}

pub fn settings(corp: &TestKey) -> mandate_server::Settings {
    mandate_testkit::delegation_settings(corp)
}

async fn world_with(options: BuildOptions) -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let clock = Arc::new(FixedClock::at(now()));
    let options = BuildOptions {
        clock: Some(clock.clone()),
        ..options
    };
    World {
        server: TestServer::spawn_with(settings(&corp), options)
            .await
            .unwrap(),
        corp,
        clock,
    }
}

pub(crate) async fn world() -> World {
    world_with(BuildOptions::default()).await
}

pub async fn exchange(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    agent: &str,
) -> (StatusCode, Value) {
    let form = exchange_form(token, kind, audience, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server.token(&pairs, &auth(agent)).await.unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

fn id_token(w: &World) -> String {
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims["iat"] = json!(w.clock.now_secs());
    w.corp.sign(None, &claims).unwrap()
}

async fn is_revoked(server: &TestServer, token: &str) -> bool {
    let facts = TokenFacts::of_access_token(&mandate_token_claims(token), 8);
    matches!(
        server
            .state
            .revocations
            .check(&facts)
            .await
            .unwrap()
            .verdict,
        Verdict::Revoked { .. }
    )
}

fn mandate_token_claims(token: &str) -> mandate_token::AccessTokenClaims {
    serde_json::from_value(claims_of(token)).unwrap()
}

pub(crate) async fn admin_post(
    server: &TestServer,
    path: &str,
    secret: &str,
) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(secret)
        .json(&json!({"reason": "incident 42"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

/// R: assistant → agent:booking-tool; M: booking-tool → agent:helper (child of R);
/// L: helper → calendar (child of M); S: booking-tool → mail (sibling of M).
pub(crate) struct Tree {
    pub(crate) root: String,
    pub(crate) middle: String,
    pub(crate) leaf: String,
    pub(crate) sibling: String,
}

pub(crate) async fn tree(w: &World) -> Tree {
    let s = &w.server;
    let root = issue(
        s,
        &id_token(w),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let middle = issue(s, &root, "access_token", "agent:helper", "booking-tool").await;
    let leaf = issue(s, &middle, "access_token", CAL, "helper").await;
    let sibling = issue(s, &root, "access_token", MAIL, "booking-tool").await;
    Tree {
        root,
        middle,
        leaf,
        sibling,
    }
}

#[tokio::test]
async fn revoking_a_middle_hop_kills_its_subtree_only() {
    let w = world().await;
    let t = tree(&w).await;
    let middle_jti = claims_of(&t.middle)["jti"].as_str().unwrap().to_owned();
    let (status, body) =
        admin_post(&w.server, &format!("/admin/hops/{middle_jti}/revoke"), OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut revoked: Vec<&str> = body["hops_revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    revoked.sort();
    let leaf_claims = claims_of(&t.leaf);
    let mut expected = vec![middle_jti.as_str(), leaf_claims["jti"].as_str().unwrap()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert!(is_revoked(&w.server, &t.middle).await);
    assert!(is_revoked(&w.server, &t.leaf).await);
    assert!(!is_revoked(&w.server, &t.root).await);
    assert!(!is_revoked(&w.server, &t.sibling).await);
    // The revoked hop cannot be exchanged again; its parent still can.
    let (status, body) = exchange(&w.server, &t.middle, "access_token", CAL, "helper").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    issue(&w.server, &t.root, "access_token", CAL, "booking-tool").await;
}

#[tokio::test]
async fn revoking_a_chain_kills_it_and_its_upstream_grant() {
    let w = world().await;
    let grant = id_token(&w);
    let root = issue(
        &w.server,
        &grant,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let app = issue(&w.server, &root, "access_token", CAL, "booking-tool").await;
    let chain = claims_of(&root)["chain_id"].as_str().unwrap().to_owned();
    let (status, body) = admin_post(&w.server, &format!("/admin/chains/{chain}/revoke"), OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entries"][0]["kind"], "chain");
    assert!(is_revoked(&w.server, &root).await && is_revoked(&w.server, &app).await);
    // The same upstream grant cannot start the chain again.
    let (status, body) = exchange(&w.server, &grant, "id_token", CAL, "assistant").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // Another sign-in is another grant.
    issue(&w.server, &id_token(&w), "id_token", CAL, "assistant").await;
}

#[tokio::test]
async fn a_re_signed_grant_without_jti_cannot_restart_a_revoked_chain() {
    let w = world().await;
    mandate_testkit::assert_signature_twin_is_the_same_grant(&w.server, &w.corp)
        .await
        .unwrap();
}

#[tokio::test]
async fn revoking_a_subject_covers_what_was_issued_before() {
    let w = world().await;
    let before_grant = id_token(&w);
    let before = issue(&w.server, &before_grant, "id_token", CAL, "assistant").await;
    let (status, body) = admin_post(&w.server, "/admin/subjects/corp%7Calice/revoke", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entries"][0]["id"], "corp|alice");
    assert!(is_revoked(&w.server, &before).await);
    let (status, _) = exchange(&w.server, &before_grant, "id_token", MAIL, "assistant").await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an upstream grant issued before T is refused"
    );
    // Later sign-ins work again.
    w.clock.advance(2);
    let after = issue(&w.server, &id_token(&w), "id_token", CAL, "assistant").await;
    assert!(!is_revoked(&w.server, &after).await);
    // Another user is untouched.
    let mut bob = id_token_claims(CORP, "bob", "assistant");
    bob["iat"] = json!(w.clock.now_secs() - 5);
    issue(
        &w.server,
        &w.corp.sign(None, &bob).unwrap(),
        "id_token",
        CAL,
        "assistant",
    )
    .await;
}

#[tokio::test]
async fn an_agent_entry_kills_every_token_it_acts_in() {
    let w = world().await;
    let t = tree(&w).await;
    w.server
        .state
        .revocation
        .revoke_agent("helper", "suspended", "test")
        .await
        .unwrap();
    // helper is the client of L and the recipient of M (audience agent:helper, DESIGN.md
    // section 8: a hand-off addressed to an agent is a token it appears in); not in R or S.
    assert!(is_revoked(&w.server, &t.middle).await);
    assert!(is_revoked(&w.server, &t.leaf).await);
    assert!(!is_revoked(&w.server, &t.sibling).await);
    assert!(!is_revoked(&w.server, &t.root).await);
    let (status, _) = exchange(&w.server, &t.middle, "access_token", CAL, "helper").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // booking-tool acts in M, L and S and receives R: the whole tree dies with it.
    let w = world().await;
    let t = tree(&w).await;
    w.server
        .state
        .revocation
        .revoke_agent("booking-tool", "suspended", "test")
        .await
        .unwrap();
    for token in [&t.root, &t.middle, &t.leaf, &t.sibling] {
        assert!(is_revoked(&w.server, token).await);
    }
    let (status, _) = exchange(&w.server, &t.root, "access_token", CAL, "booking-tool").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

fn ids(body: &Value, key: &str) -> Vec<String> {
    let mut ids: Vec<String> = body[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn jtis(tokens: &[&String]) -> Vec<String> {
    let mut ids: Vec<String> = tokens
        .iter()
        .map(|t| claims_of(t)["jti"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// A user's or an agent's revocation answers the live hops and chains it killed: an incident
/// responder reading "0" would think nothing was affected.
#[tokio::test]
async fn subject_and_agent_revocations_answer_the_live_hops_and_chains_they_killed() {
    let w = world().await;
    let t = tree(&w).await;
    let chain = claims_of(&t.root)["chain_id"].as_str().unwrap().to_owned();
    let (status, body) = admin_post(&w.server, "/admin/agents/helper/suspend", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // helper is the client of L and the recipient of M.
    assert_eq!(
        ids(&body["revocation"], "hops_revoked"),
        jtis(&[&t.middle, &t.leaf])
    );
    assert_eq!(
        ids(&body["revocation"], "chains_revoked"),
        std::slice::from_ref(&chain)
    );

    // A second chain of alice's, then her revocation: every live hop of both.
    let other = issue(&w.server, &id_token(&w), "id_token", MAIL, "assistant").await;
    let other_chain = claims_of(&other)["chain_id"].as_str().unwrap().to_owned();
    let (status, body) = admin_post(&w.server, "/admin/subjects/corp%7Calice/revoke", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        ids(&body, "hops_revoked"),
        jtis(&[&t.root, &t.middle, &t.leaf, &t.sibling, &other])
    );
    let mut chains = vec![chain, other_chain];
    chains.sort();
    assert_eq!(ids(&body, "chains_revoked"), chains);

    // Expired hops are not live: once the tokens' lifetime has passed, a revocation finds none.
    w.clock.advance(3_600);
    let (status, body) = admin_post(&w.server, "/admin/agents/booking-tool/suspend", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        ids(&body["revocation"], "hops_revoked").is_empty(),
        "{body}"
    );
    // Nobody else's.
    let (status, body) = admin_post(&w.server, "/admin/subjects/corp%7Cbob/revoke", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(ids(&body, "chains_revoked").is_empty(), "{body}");
}

#[tokio::test]
async fn withdrawing_a_consent_kills_the_chains_rooted_on_it() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut s = settings(&corp);
    s.consents.push(mandate_server::config::ConsentSettings {
        subject: mandate_model::Subject::parse("corp|carol").unwrap(),
        actor: mandate_model::ClientId::parse("assistant").unwrap(),
        audience: mandate_model::Audience::parse(CAL).unwrap(),
        scopes: mandate_model::ScopeSet::parse("calendar.read").unwrap(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(1),
    });
    let server = TestServer::spawn(s).await.unwrap();
    let jwt = |server: &TestServer| {
        let mut claims = id_token_claims(CORP, "carol", server.issuer());
        claims["azp"] = json!("assistant");
        corp.sign(None, &claims).unwrap()
    };
    let token = issue(&server, &jwt(&server), "jwt", CAL, "assistant").await;
    let hop = server
        .state
        .ledger
        .hop(&mandate_chain::HopId(
            claims_of(&token)["jti"].as_str().unwrap().into(),
        ))
        .await
        .unwrap()
        .unwrap();
    let consent_id = hop.evidence.reference.clone();
    let outcome = server
        .state
        .revocation
        .withdraw_consent(&consent_id, now() + 86_400, "user withdrew", "test")
        .await
        .unwrap();
    assert_eq!(
        outcome.entries.len(),
        2,
        "consent: and chain: written together"
    );
    assert!(is_revoked(&server, &token).await);
    // New roots on the withdrawn grant are refused.
    let (status, body) = exchange(&server, &jwt(&server), "jwt", CAL, "assistant").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
}

#[tokio::test]
async fn rfc7009_revokes_only_the_clients_own_tokens() {
    let w = world().await;
    let t = tree(&w).await;
    let post = |token: String, agent: &'static str| {
        let server = &w.server;
        async move {
            server
                .post_form(
                    "/revoke",
                    &[("token", &token), ("token_type_hint", "access_token")],
                    &auth(agent),
                )
                .await
                .unwrap()
        }
    };
    // booking-tool may not revoke the assistant's hand-off: 200, nothing changes (D8).
    let response = post(t.root.clone(), "booking-tool").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(!is_revoked(&w.server, &t.root).await);
    // Its own token: revoked with its subtree.
    assert_eq!(
        post(t.middle.clone(), "booking-tool").await.status(),
        StatusCode::OK
    );
    assert!(is_revoked(&w.server, &t.middle).await && is_revoked(&w.server, &t.leaf).await);
    assert!(!is_revoked(&w.server, &t.sibling).await);
    // Garbage and foreign tokens: 200 too.
    assert_eq!(
        post("garbage".into(), "booking-tool").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        post(id_token(&w), "assistant").await.status(),
        StatusCode::OK
    );
    // Missing token, bad credentials.
    let response = w
        .server
        .post_form("/revoke", &[], &auth("assistant"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = w
        .server
        .post_form(
            "/revoke",
            &[("token", &t.root)],
            &ClientAuth::Basic("assistant".into(), "wrong".into()),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(!is_revoked(&w.server, &t.root).await);
    // The audit stream names the client.
    let response = w
        .server
        .admin_get("/admin/audit", Some(READER))
        .await
        .unwrap();
    let events = body_json(response).await;
    assert!(events["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor"] == "client:booking-tool"));
}

/// Lands a chain revocation between the hop write and the second check.
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
async fn a_revocation_landing_mid_exchange_leaves_no_usable_token() {
    let w = world_with(BuildOptions {
        exchange_pause: Some(Arc::new(RevokeChainMidway)),
        ..Default::default()
    })
    .await;
    let (status, body) = exchange(&w.server, &id_token(&w), "id_token", CAL, "assistant").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_request");
    assert!(body.get("access_token").is_none());
    // The hop was recorded and is dead.
    let chains = w.server.state.revocations.entries().await.unwrap();
    assert!(chains
        .iter()
        .any(|e| e.kind == mandate_revocation::RevocationKind::Chain));
}

/// Suspends the exchanging agent between the hop write and the second check by changing its
/// state alone, with no revocation entry: the moment, inside a suspension, after the first
/// `agent` entry and the state change but before the entry is written again, seen by an exchange
/// that authenticated earlier and read its clock after the first entry.
#[derive(Debug)]
struct SuspendStateOnlyMidway;

#[async_trait::async_trait]
impl ExchangePause for SuspendStateOnlyMidway {
    async fn after_hop_recorded(&self, state: &AppState, hop: &mandate_chain::HopRecord) {
        let current = state.clients.client(&hop.client_id).await.unwrap().unwrap();
        let mut stored = current.to_stored();
        stored.state = mandate_model::ClientState::Suspended;
        let next = mandate_store::Client::from_stored(stored).unwrap();
        assert!(matches!(
            state.clients.replace(next).await.unwrap(),
            mandate_store::ReplaceOutcome::Replaced { .. }
        ));
    }
}

#[tokio::test]
async fn an_agent_suspended_mid_exchange_gets_no_token() {
    let w = world_with(BuildOptions {
        exchange_pause: Some(Arc::new(SuspendStateOnlyMidway)),
        ..Default::default()
    })
    .await;
    let (status, body) = exchange(&w.server, &id_token(&w), "id_token", CAL, "assistant").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
    // No revocation entry was involved: the re-read of the agent refused it.
    assert!(w
        .server
        .state
        .revocations
        .entries()
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn suspending_an_agent_writes_its_entry_again_after_the_state_change() {
    let w = world().await;
    let (status, body) = admin_post(&w.server, "/admin/agents/assistant/suspend", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One entry for the agent, its T from the write after the state change: at least the
    // time the state change was stamped with.
    let entries = w.server.state.revocations.entries().await.unwrap();
    let agent: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == mandate_revocation::RevocationKind::Agent && e.id == "assistant")
        .collect();
    assert_eq!(agent.len(), 1, "{entries:?}");
    let client = w
        .server
        .state
        .clients
        .client(&mandate_model::ClientId::parse("assistant").unwrap())
        .await
        .unwrap()
        .unwrap();
    let changed_ms = client.updated_at.unwrap().timestamp_millis();
    assert!(
        agent[0].at >= changed_ms,
        "T {} before the state change {changed_ms}",
        agent[0].at
    );
}

#[tokio::test]
async fn the_chain_view_shows_the_tree_with_status_and_evidence() {
    let w = world().await;
    let t = tree(&w).await;
    let middle_jti = claims_of(&t.middle)["jti"].as_str().unwrap().to_owned();
    admin_post(&w.server, &format!("/admin/hops/{middle_jti}/revoke"), OPS).await;
    let chain = claims_of(&t.root)["chain_id"].as_str().unwrap().to_owned();
    let response = w
        .server
        .admin_get(&format!("/admin/chains/{chain}"), Some(READER))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let view = body_json(response).await;
    assert_eq!(view["hops"], 4);
    let root = &view["roots"][0];
    assert_eq!(root["status"], "live");
    assert_eq!(root["evidence"]["kind"], "upstream_audience");
    let children = root["children"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    let middle = children
        .iter()
        .find(|c| c["jti"] == middle_jti.as_str())
        .unwrap();
    assert_eq!(middle["status"], "revoked");
    assert_eq!(middle["evidence"]["kind"], "hand_off");
    assert_eq!(middle["children"][0]["status"], "revoked");
    let sibling = children
        .iter()
        .find(|c| c["jti"] != middle_jti.as_str())
        .unwrap();
    assert_eq!(sibling["status"], "live");
    // Unknown chain; wrong role; no credential; unknown hop.
    assert_eq!(
        w.server
            .admin_get("/admin/chains/chn_nope", Some(READER))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let (status, _) = admin_post(&w.server, &format!("/admin/chains/{chain}/revoke"), READER).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin_post(&w.server, &format!("/admin/chains/{chain}/revoke"), "nope").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = admin_post(&w.server, "/admin/hops/hop_nope/revoke", OPS).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin_post(&w.server, "/admin/subjects/%7C/revoke", OPS).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Every admin action is audited with the credential's name.
    let events = body_json(
        w.server
            .admin_get("/admin/audit", Some(READER))
            .await
            .unwrap(),
    )
    .await;
    let event = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "revoke.hop")
        .unwrap()
        .clone();
    assert_eq!(event["actor"], "ops-oncall");
    assert_eq!(event["target"], middle_jti.as_str());
}

pub fn auth(client: &str) -> ClientAuth {
    mandate_testkit::delegation_auth(client)
}

pub async fn issue(
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

/// Admin answers are never cached: the revocations' and the chain tree's too.
#[tokio::test]
async fn revocation_answers_and_the_chain_tree_are_not_cached() {
    let w = world().await;
    let t = tree(&w).await;
    let jti = claims_of(&t.leaf)["jti"].as_str().unwrap().to_owned();
    let revoked = w
        .server
        .http
        .post(w.server.admin_url(&format!("/admin/hops/{jti}/revoke")))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(revoked.headers()["cache-control"], "no-store");
    let chain = body_json(revoked).await["chains_revoked"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let tree = w
        .server
        .admin_get(&format!("/admin/chains/{chain}"), Some(OPS))
        .await
        .unwrap();
    assert_eq!(tree.status(), StatusCode::OK);
    assert_eq!(tree.headers()["cache-control"], "no-store");
}
