//! mandate on a real Redis over real HTTP: revocation that follows the chain, fail-closed
//! behaviour when Redis dies, recovery from its AOF, and two nodes sharing one store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::time::{Duration, Instant};

use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, claims_of, delegation_settings, exchange_form, id_token_claims, ClientAuth, KeyKind,
    TestKey, TestServer, ADMIN_OPS, ADMIN_READER, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::Value;

async fn node(redis: &RedisServer, corp: &TestKey, per_second: u32) -> TestServer {
    let mut settings = delegation_settings(corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    settings.limits.token_requests_per_client_per_sec = per_second;
    TestServer::spawn(settings).await.unwrap()
}

async fn exchange(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    agent: &str,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let form = exchange_form(token, kind, audience, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server.token(&pairs, &auth(agent)).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, body_json(response).await, headers)
}

fn id_token(corp: &TestKey) -> String {
    corp.sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap()
}

async fn admin_revoke(server: &TestServer, path: &str) -> Value {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_json(response).await
}

#[tokio::test]
async fn revocation_follows_the_chain_on_redis() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = node(&redis, &corp, 100).await;
    let grant = id_token(&corp);
    let root = issue(
        &server,
        &grant,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let middle = issue(
        &server,
        &root,
        "access_token",
        "agent:helper",
        "booking-tool",
    )
    .await;
    let leaf = issue(&server, &middle, "access_token", CAL, "helper").await;
    let sibling = issue(&server, &root, "access_token", MAIL, "booking-tool").await;
    // Revoke the middle hop: it and its descendant die; its parent and sibling live on.
    let jti = claims_of(&middle)["jti"].as_str().unwrap().to_owned();
    let outcome = admin_revoke(&server, &format!("/admin/hops/{jti}/revoke")).await;
    assert_eq!(outcome["hops_revoked"].as_array().unwrap().len(), 2);
    assert_eq!(
        exchange(&server, &middle, "access_token", CAL, "helper")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    issue(&server, &root, "access_token", CAL, "booking-tool").await;
    let revoked = |token: &str| {
        let facts = mandate_revocation::TokenFacts::of_access_token(
            &serde_json::from_value(claims_of(token)).unwrap(),
            8,
        );
        let state = server.state.clone();
        async move {
            matches!(
                state.revocations.check(&facts).await.unwrap().verdict,
                mandate_revocation::Verdict::Revoked { .. }
            )
        }
    };
    assert!(revoked(&leaf).await && revoked(&middle).await);
    assert!(!revoked(&root).await && !revoked(&sibling).await);
    // Revoke the chain: everything, and the upstream grant cannot start it again.
    let chain = claims_of(&root)["chain_id"].as_str().unwrap().to_owned();
    admin_revoke(&server, &format!("/admin/chains/{chain}/revoke")).await;
    assert!(revoked(&root).await && revoked(&sibling).await);
    assert_eq!(
        exchange(&server, &grant, "id_token", CAL, "assistant")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // The ledger is in Redis.
    let keys = redis.cli(&["KEYS", "mandate:ledger:*"]).unwrap();
    assert!(keys.contains(&jti), "{keys}");
    // Revoke the subject: tokens and grants issued before, not after.
    let before_grant = id_token(&corp);
    let before = issue(&server, &before_grant, "id_token", CAL, "assistant").await;
    admin_revoke(&server, "/admin/subjects/corp%7Calice/revoke").await;
    assert!(revoked(&before).await);
    assert_eq!(
        exchange(&server, &before_grant, "id_token", MAIL, "assistant")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // T and iat are whole-second comparable; a sign-in in a later second is not covered.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = issue(&server, &id_token(&corp), "id_token", CAL, "assistant").await;
    assert!(!revoked(&after).await);
    server.stop().await;
}

#[tokio::test]
async fn a_re_signed_grant_without_jti_cannot_restart_a_revoked_chain_on_redis() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = node(&redis, &corp, 100).await;
    mandate_testkit::assert_signature_twin_is_the_same_grant(&server, &corp)
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn redis_down_means_503_and_recovery_needs_no_restart() {
    let mut redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = node(&redis, &corp, 100).await;
    let handoff = issue(
        &server,
        &id_token(&corp),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let revoked_app = issue(&server, &handoff, "access_token", MAIL, "booking-tool").await;
    let jti = claims_of(&revoked_app)["jti"].as_str().unwrap().to_owned();
    admin_revoke(&server, &format!("/admin/hops/{jti}/revoke")).await;

    redis.kill();
    let started = Instant::now();
    let (status, body, headers) =
        exchange(&server, &id_token(&corp), "id_token", CAL, "assistant").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(body.get("access_token").is_none());
    assert!(started.elapsed() < Duration::from_secs(15));
    let (status, _, _) = exchange(&server, &handoff, "access_token", CAL, "booking-tool").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "nothing is issued without the store"
    );
    let response = server
        .http
        .post(server.admin_url(&format!("/admin/hops/{jti}/revoke")))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "revocations answer 503 too"
    );
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_json(health).await["store"], "unavailable");
    // Kubernetes: not ready, but alive (a store outage must not get the node restarted).
    let probe = |path: &'static str| server.http.get(server.url(path)).send();
    assert_eq!(
        probe("/readyz").await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(probe("/livez").await.unwrap().status(), StatusCode::OK);

    redis.restart().await.unwrap();
    // The server recovers by itself; earlier ledger entries and revocations are still there.
    let deadline = Instant::now() + Duration::from_secs(20);
    let app = loop {
        let (status, body, _) =
            exchange(&server, &handoff, "access_token", CAL, "booking-tool").await;
        if status == StatusCode::OK {
            break body["access_token"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no recovery: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        claims_of(&app)["ancestors"][0],
        claims_of(&handoff)["jti"],
        "the parent hop survived in the ledger"
    );
    let facts = mandate_revocation::TokenFacts::of_access_token(
        &serde_json::from_value(claims_of(&revoked_app)).unwrap(),
        8,
    );
    assert!(matches!(
        server
            .state
            .revocations
            .check(&facts)
            .await
            .unwrap()
            .verdict,
        mandate_revocation::Verdict::Revoked { .. }
    ));
    let health = server
        .http
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let ready = server.http.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn two_nodes_share_revocations_and_rate_limits() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    // Both nodes need the same signing key and chain-id key to accept each other's tokens.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    std::fs::write(
        &key,
        &*mandate_token::SigningKey::generate_pem(mandate_token::SigningAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let chain_key = dir.path().join("chain.key");
    std::fs::write(&chain_key, [7u8; 32]).unwrap();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut settings = delegation_settings(&corp);
        settings.store.kind = StoreKind::Redis;
        settings.store.url = Some(StoreUrl::One(redis.url()));
        settings.signing.key_file = Some(key.clone());
        settings.tokens.chain_id_key_file = Some(chain_key.clone());
        settings.limits.token_requests_per_client_per_sec = 4;
        nodes.push(TestServer::spawn(settings).await.unwrap());
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // Issued on A, revoked through A, refused by B at once.
    let handoff = issue(
        a,
        &id_token(&corp),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let jti = claims_of(&handoff)["jti"].as_str().unwrap().to_owned();
    admin_revoke(a, &format!("/admin/hops/{jti}/revoke")).await;
    let (status, body, _) = exchange(b, &handoff, "access_token", CAL, "booking-tool").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    // The per-client budget is shared: 4 a second across both nodes.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut limited = 0;
    for i in 0..8 {
        let server = if i % 2 == 0 { a } else { b };
        let response = server
            .token(&[("grant_type", "x")], &auth("helper"))
            .await
            .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
        }
    }
    assert!(
        limited >= 3,
        "only {limited} of 8 requests were limited across two nodes"
    );
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn a_node_on_redis_cluster_exchanges_and_revokes() {
    let cluster = mandate_testkit::redis::RedisCluster::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::Cluster(cluster.urls()));
    let server = TestServer::spawn(settings).await.unwrap();
    let handoff = issue(
        &server,
        &id_token(&corp),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    issue(&server, &handoff, "access_token", CAL, "booking-tool").await;
    let chain = claims_of(&handoff)["chain_id"].as_str().unwrap().to_owned();
    let outcome = admin_revoke(&server, &format!("/admin/chains/{chain}/revoke")).await;
    assert_eq!(outcome["hops_revoked"].as_array().unwrap().len(), 2);
    let (status, _, _) = exchange(&server, &handoff, "access_token", MAIL, "booking-tool").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.stop().await;
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

/// A Shared Signals push on one node of a Redis deployment: the user's token dies on the other
/// node too, and the same SET delivered to the other node is a replay there (one replay cache).
#[tokio::test]
async fn a_pushed_set_revokes_on_every_node_and_is_single_use_across_nodes() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let push_token = "redis-push-token";
    let start = |corp: &TestKey| {
        let mut settings = delegation_settings(corp);
        settings.store.kind = StoreKind::Redis;
        settings.store.url = Some(StoreUrl::One(redis.url()));
        settings.trusted_issuers[0].ssf_push_token_hash =
            Some(mandate_model::SecretHash::of(push_token));
        TestServer::spawn(settings)
    };
    let a = start(&corp).await.unwrap();
    let b = start(&corp).await.unwrap();
    let token = issue(&a, &id_token(&corp), "id_token", CAL, "assistant").await;
    let mut header = corp.header(None);
    header["typ"] = serde_json::json!("secevent+jwt");
    let set = corp
        .sign_raw(
            &header,
            &serde_json::json!({
                // Each test node has its own issuer: the SET is addressed to both.
                "iss": CORP, "aud": [a.issuer(), b.issuer()],
                "iat": mandate_testkit::now(), "jti": "set-nodes",
                "sub_id": {"format": "iss_sub", "iss": CORP, "sub": "alice"},
                "events": {"https://schemas.openid.net/secevent/risc/event-type/sessions-revoked": {}},
            }),
        )
        .unwrap();
    let push = |server: &TestServer| {
        server
            .http
            .post(server.url("/ssf/receive/corp"))
            .bearer_auth(push_token)
            .header("content-type", "application/secevent+jwt")
            .body(set.clone())
            .send()
    };
    assert_eq!(push(&a).await.unwrap().status(), StatusCode::ACCEPTED);
    let introspected = b
        .post_form(
            "/introspect",
            &[("token", token.as_str())],
            &auth("calendar-api"),
        )
        .await
        .unwrap();
    assert_eq!(body_json(introspected).await["active"], false);
    // Node b has seen the jti through Redis: its delivery there is a replay and writes nothing.
    let before = admin_events(&b).await;
    assert_eq!(push(&b).await.unwrap().status(), StatusCode::ACCEPTED);
    let after = admin_events(&b).await;
    let new_revocations = after
        .iter()
        .filter(|e| e["action"] == "revoke.subject")
        .count()
        - before
            .iter()
            .filter(|e| e["action"] == "revoke.subject")
            .count();
    assert_eq!(new_revocations, 0, "{after:?}");
    a.stop().await;
    b.stop().await;
}

async fn admin_events(server: &TestServer) -> Vec<Value> {
    let response = server
        .http
        .get(server.admin_url("/admin/audit?actor=ssf:corp"))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    body_json(response).await["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Two nodes on one Redis, one push receiver: every node runs the deliverer, and each SET of a
/// revocation made on either node arrives once.
#[tokio::test]
async fn two_nodes_push_each_set_once() {
    use std::sync::{Arc, Mutex};

    use actix_web::{web, App, HttpResponse, HttpServer};

    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let a = node(&redis, &corp, 0).await;
    let b = node(&redis, &corp, 0).await;
    let arrived: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = arrived.clone();
    let receiver = HttpServer::new(move || {
        let seen = seen.clone();
        App::new().route(
            "/ssf",
            web::post().to(move |body: String| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .push(claims_of(&body)["jti"].as_str().unwrap().to_owned());
                    HttpResponse::Accepted().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = receiver.handle();
    tokio::spawn(receiver);
    let created = a
        .http
        .post(a.url("/ssf/streams"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&serde_json::json!({
            "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": format!("http://127.0.0.1:{port}/ssf")},
            "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let mut expected = 0;
    for round in 0..10 {
        let (issuer, revoker) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let token = issue(issuer, &id_token(&corp), "id_token", CAL, "assistant").await;
        let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
        admin_revoke(revoker, &format!("/admin/hops/{jti}/revoke")).await;
        expected += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while arrived.lock().unwrap().len() < expected {
        assert!(Instant::now() < deadline, "{:?}", arrived.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a duplicate to show up, were one sent.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut jtis = arrived.lock().unwrap().clone();
    let total = jtis.len();
    jtis.sort();
    jtis.dedup();
    assert_eq!((total, jtis.len()), (expected, expected), "each SET once");
    handle.stop(true).await;
}

/// An admin POST; the status and body.
async fn admin_post(server: &TestServer, path: &str, secret: &str) -> (StatusCode, Value) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

fn ids(list: &Value) -> std::collections::BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect()
}

/// Dry runs on Redis: each names the hops its revocation then kills, writes no entry (the
/// revocation keys and stream are untouched, tokens still exchange), and is refused to a reader
/// and for a bad value.
#[tokio::test]
async fn dry_runs_on_redis_name_what_the_revocation_kills_and_write_nothing() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = node(&redis, &corp, 100).await;
    let grant = id_token(&corp);
    let root = issue(
        &server,
        &grant,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let middle = issue(
        &server,
        &root,
        "access_token",
        "agent:helper",
        "booking-tool",
    )
    .await;
    let leaf = issue(&server, &middle, "access_token", CAL, "helper").await;
    let sibling = issue(&server, &root, "access_token", MAIL, "booking-tool").await;
    let jti = |token: &str| claims_of(token)["jti"].as_str().unwrap().to_owned();
    // Every revocation key (the stream's length moves with the heartbeats, its key does not).
    let entries = || {
        let mut keys: Vec<String> = redis
            .cli(&["KEYS", "{mandate:rev}:*"])
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    };
    let entries_before = entries();

    let hop_path = format!("/admin/hops/{}/revoke", jti(&middle));
    let (status, preview) =
        admin_post(&server, &format!("{hop_path}?dry_run=true"), ADMIN_OPS).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    let expected: std::collections::BTreeSet<String> = [jti(&middle), jti(&leaf)].into();
    assert_eq!(ids(&preview["hops_revoked"]), expected, "{preview}");
    assert_eq!(preview["counts"]["live"], 2);
    for path in [
        format!(
            "/admin/chains/{}/revoke",
            claims_of(&root)["chain_id"].as_str().unwrap()
        ),
        "/admin/subjects/corp%7Calice/revoke".to_owned(),
        "/admin/agents/helper/suspend".to_owned(),
    ] {
        let (status, body) = admin_post(&server, &format!("{path}?dry_run=true"), ADMIN_OPS).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        let (status, body) =
            admin_post(&server, &format!("{path}?dry_run=true"), ADMIN_READER).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        let (status, body) = admin_post(&server, &format!("{path}?dry_run=maybe"), ADMIN_OPS).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{path}"
        );
    }
    // Nothing was written: no entry; the middle hop still exchanges and the helper, still
    // active, is its actor.
    assert_eq!(entries(), entries_before);
    issue(&server, &middle, "access_token", CAL, "helper").await;

    // The revocation kills what the preview named, plus the leaf exchanged since (a preview is
    // a snapshot), which a second look names too.
    let (_, again) = admin_post(&server, &format!("{hop_path}?dry_run=true"), ADMIN_OPS).await;
    assert_eq!(again["counts"]["live"], 3);
    let (status, outcome) = admin_post(&server, &hop_path, ADMIN_OPS).await;
    assert_eq!(status, StatusCode::OK, "{outcome}");
    assert_eq!(ids(&outcome["hops_revoked"]), ids(&again["hops_revoked"]));
    assert_eq!(
        exchange(&server, &middle, "access_token", CAL, "helper")
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    // The hop above the revoked one lives on.
    issue(&server, &root, "access_token", CAL, "booking-tool").await;
    // Now the chain's preview tells the dead hops from the live ones.
    let chain = claims_of(&root)["chain_id"].as_str().unwrap().to_owned();
    let (_, preview) = admin_post(
        &server,
        &format!("/admin/chains/{chain}/revoke?dry_run=true"),
        ADMIN_OPS,
    )
    .await;
    assert_eq!(preview["counts"]["already_revoked"], 3, "{preview}");
    let status_of = |token: &str| {
        preview["hops"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hop"] == jti(token).as_str())
            .map(|h| h["status"].clone())
    };
    assert_eq!(status_of(&sibling), Some("live".into()));
    assert_eq!(status_of(&leaf), Some("revoked".into()));
    let (_, outcome) =
        admin_post(&server, &format!("/admin/chains/{chain}/revoke"), ADMIN_OPS).await;
    assert_eq!(ids(&outcome["hops_revoked"]), ids(&preview["hops_revoked"]));
    server.stop().await;
}
