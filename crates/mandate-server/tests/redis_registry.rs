//! The client registry and the policy in Redis: their contracts on one server and on a cluster,
//! the key layout they leave, that nothing is cached (a second node sees a change at once), and
//! that start-up seeds an empty store from configuration while a store that holds clients and a
//! policy keeps them (DESIGN.md section 10).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use mandate_chain::{Policy, PolicyRow, PolicyStore};
use mandate_model::{Audience, ClientId, ScopeSet};
use mandate_server::config::{ConfigSource, StoreKind, StoreUrl};
use mandate_server::{AppState, BuildOptions, Settings};
use mandate_store::{contract, ClientRegistry, RedisClientRegistry, RedisPolicyStore, StoreError};
use mandate_testkit::redis::{RedisCluster, RedisServer};
use mandate_testkit::{
    agent_with_secret, body_json, delegation_settings, exchange_form, id_token_claims, ClientAuth,
    KeyKind, TestKey, TestServer, CAL, CORP, MAIL,
};
use reqwest::StatusCode;

fn id(value: &str) -> ClientId {
    ClientId::parse(value).unwrap()
}

fn row(actor: &str, audience: &str, scopes: &str) -> PolicyRow {
    PolicyRow {
        actor: id(actor),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        max_depth: None,
    }
}

#[tokio::test]
async fn a_single_server_meets_the_registry_and_policy_contracts() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    contract::clients(&RedisClientRegistry::new(connection.clone())).await;
    contract::policies(&RedisPolicyStore::new(connection)).await;

    // One JSON document per client, without the built keys, never expiring; the id set.
    let json = server
        .cli(&["GET", "mandate:client:contract-agent"])
        .unwrap();
    let stored: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(stored["id"], "contract-agent");
    assert_eq!(stored["jwks"]["keys"][0]["kty"], "EC");
    assert!(stored.get("keys").is_none());
    assert_eq!(
        server
            .cli(&["TTL", "mandate:client:contract-agent"])
            .unwrap()
            .trim(),
        "-1"
    );
    let mut ids: Vec<String> = server
        .cli(&["SMEMBERS", "mandate:clients"])
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["contract-agent", "contract-api", "contract-b.staged_1"]
    );

    // The policy: one hash, the rows as one JSON array, and the version.
    assert_eq!(
        server.cli(&["TYPE", "mandate:policy"]).unwrap().trim(),
        "hash"
    );
    assert_eq!(
        server
            .cli(&["HGET", "mandate:policy", "version"])
            .unwrap()
            .trim(),
        "3"
    );
    assert_eq!(
        server
            .cli(&["HGET", "mandate:policy", "rows"])
            .unwrap()
            .trim(),
        "[]"
    );
    assert_eq!(server.cli(&["TTL", "mandate:policy"]).unwrap().trim(), "-1");
}

#[tokio::test]
async fn a_cluster_meets_the_registry_and_policy_contracts() {
    let cluster = RedisCluster::start().await.unwrap();
    let connection = mandate_store::connect_cluster(&cluster.urls())
        .await
        .unwrap();
    contract::clients(&RedisClientRegistry::new(connection.clone())).await;
    contract::policies(&RedisPolicyStore::new(connection)).await;
}

#[tokio::test]
async fn every_read_sees_the_store_and_a_cut_short_insert_is_completed() {
    let server = RedisServer::start().await.unwrap();
    let node_a = mandate_store::connect(&server.url()).await.unwrap();
    let node_b = mandate_store::connect(&server.url()).await.unwrap();
    let (clients_a, clients_b) = (
        RedisClientRegistry::new(node_a.clone()),
        RedisClientRegistry::new(node_b.clone()),
    );
    let (policies_a, policies_b) = (RedisPolicyStore::new(node_a), RedisPolicyStore::new(node_b));

    // What one node writes, the other reads at once, though each built the policy it read last.
    assert!(policies_b.seed_if_empty(vec![]).await.unwrap());
    assert_eq!(policies_a.policy().await.unwrap(), (Arc::default(), 1));
    assert_eq!(policies_b.policy().await.unwrap(), (Arc::default(), 1));
    let rows = vec![row("assistant", CAL, "calendar.read")];
    assert_eq!(policies_a.replace(rows.clone(), 1).await.unwrap(), Ok(2));
    assert_eq!(
        policies_b.policy().await.unwrap(),
        (Arc::new(Policy::new(rows.clone())), 2)
    );
    assert_eq!(
        policies_b.replace(vec![], 1).await.unwrap(),
        Err(2),
        "a node that read version 1 cannot overwrite version 2"
    );

    // A store that lost its policy (emptied, or failed over to a replica behind it) can reach a
    // version again with other rows: a node goes by the write it built from, not the number.
    server.cli(&["DEL", "mandate:policy"]).unwrap();
    assert!(policies_a.seed_if_empty(vec![]).await.unwrap());
    let other = vec![row("assistant", CAL, "calendar.write")];
    assert_eq!(policies_a.replace(other.clone(), 1).await.unwrap(), Ok(2));
    assert_eq!(
        policies_b.policy().await.unwrap(),
        (Arc::new(Policy::new(other)), 2)
    );

    assert!(clients_b.clients().await.unwrap().is_empty());
    let client = mandate_store::Client::from_stored(mandate_store::StoredClient {
        dpop: Default::default(),
        id: id("assistant"),
        kind: mandate_model::ClientKind::Agent,
        owners: vec!["alice@example.com".into()],
        description: "helps".into(),
        state: mandate_model::ClientState::Active,
        expires_at: None,
        auth_method: mandate_model::AuthMethod::ClientSecretBasic,
        secret_hash: Some(mandate_model::SecretHash::of("assistant-secret")),
        jwks: None,
        upstream_ids: vec![],
        audiences: vec![],
        previous_secret: None,
        secret_rotated_at: None,
        created_at: None,
        created_by: None,
        updated_at: None,
        updated_by: None,
        revision: 0,
    })
    .unwrap();
    let stored = client.to_stored();
    assert!(clients_a.insert_if_absent(client).await.unwrap());
    let seen = clients_b.client(&id("assistant")).await.unwrap().unwrap();
    assert_eq!(seen.to_stored(), stored);

    // A client is built once per record: an unchanged record gives the same built client...
    let again = clients_b.client(&id("assistant")).await.unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&seen, &again),
        "an unchanged record is not rebuilt"
    );
    // ...and any change to the record, even one written behind the registry's back without a
    // new revision, is what the next read returns; so is a record that no longer parses, or none.
    let json = server.cli(&["GET", "mandate:client:assistant"]).unwrap();
    let suspended = json
        .trim()
        .replace("\"state\":\"active\"", "\"state\":\"suspended\"");
    assert_ne!(suspended, json.trim());
    server
        .cli(&["SET", "mandate:client:assistant", &suspended])
        .unwrap();
    let changed = clients_b.client(&id("assistant")).await.unwrap().unwrap();
    assert_eq!(changed.state, mandate_model::ClientState::Suspended);
    server
        .cli(&["SET", "mandate:client:assistant", "{not json"])
        .unwrap();
    assert!(matches!(
        clients_b.client(&id("assistant")).await,
        Err(StoreError::Corrupt(_))
    ));
    server.cli(&["DEL", "mandate:client:assistant"]).unwrap();
    assert!(clients_b.client(&id("assistant")).await.unwrap().is_none());
    server
        .cli(&["SET", "mandate:client:assistant", json.trim()])
        .unwrap();

    // A crash between writing the client and adding its id: the client authenticates but is
    // not listed, until the next insert of that id (the next start-up's seeding) completes it.
    server
        .cli(&["SREM", "mandate:clients", "assistant"])
        .unwrap();
    assert!(clients_b.clients().await.unwrap().is_empty());
    assert!(clients_b.client(&id("assistant")).await.unwrap().is_some());
    let again = mandate_store::Client::from_stored(stored.clone()).unwrap();
    assert!(!clients_b.insert_if_absent(again).await.unwrap());
    let listed: Vec<_> = clients_a
        .clients()
        .await
        .unwrap()
        .iter()
        .map(|c| c.to_stored())
        .collect();
    assert_eq!(listed, [stored]);

    // Unreadable data is reported as such, not as a missing client.
    server
        .cli(&["SET", "mandate:client:broken", "{not json"])
        .unwrap();
    assert!(matches!(
        clients_a.client(&id("broken")).await,
        Err(StoreError::Corrupt(_))
    ));
    // The rows are read and built once per write: rows changed by hand under the same
    // `written` are not read again; without `written` they are read, and checked, every time.
    let (built, _) = policies_a.policy().await.unwrap();
    server
        .cli(&["HSET", "mandate:policy", "rows", "{not json"])
        .unwrap();
    assert_eq!(policies_a.policy().await.unwrap().0, built);
    server.cli(&["HDEL", "mandate:policy", "written"]).unwrap();
    assert!(policies_a.policy().await.is_err());
}

fn on_redis(settings: &mut Settings, redis: &RedisServer) {
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
}

async fn build(settings: Settings) -> AppState {
    AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions::default(),
    )
    .await
    .unwrap()
}

async fn listed(clients: &Arc<dyn ClientRegistry>) -> Vec<(String, String)> {
    clients
        .clients()
        .await
        .unwrap()
        .iter()
        .map(|c| (c.id.as_str().to_owned(), c.description.clone()))
        .collect()
}

#[tokio::test]
async fn start_up_seeds_an_empty_store_and_then_the_store_wins() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    on_redis(&mut settings, &redis);
    let file_policy = Policy::new(
        settings
            .policies
            .iter()
            .map(|p| PolicyRow {
                actor: p.actor.clone(),
                audience: p.audience.clone(),
                scopes: p.scopes.clone(),
                max_depth: p.max_depth,
            })
            .collect(),
    );

    // The first node seeds the empty store from the file.
    let first = build(settings.clone()).await;
    let seeded = listed(&first.clients).await;
    assert_eq!(
        seeded.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        [
            "assistant",
            "booking-tool",
            "calendar-api",
            "helper",
            "mail-api"
        ]
    );
    assert_eq!(
        first.policies.policy().await.unwrap(),
        (Arc::new(file_policy.clone()), 1)
    );

    // An admin narrows the policy; then a node starts from a file that changed a client,
    // added one and changed the policy rows.
    let narrowed = vec![row("assistant", MAIL, "mail.read")];
    assert_eq!(
        first.policies.replace(narrowed.clone(), 1).await.unwrap(),
        Ok(2)
    );
    let mut changed = settings.clone();
    changed.clients[0].description = "changed in the file".into();
    changed.clients.push(
        agent_with_secret(
            "newcomer",
            "newcomer-secret",
            mandate_model::AuthMethod::ClientSecretBasic,
        )
        .unwrap(),
    );
    changed.policies.truncate(1);
    let second = build(changed).await;

    // The store's clients and policy win; the new client is added, and the first node sees
    // it at once.
    let mut expected = seeded.clone();
    expected.push(("newcomer".to_owned(), "test agent newcomer".to_owned()));
    assert_eq!(listed(&second.clients).await, expected);
    assert_eq!(listed(&first.clients).await, expected);
    assert_eq!(
        second.policies.policy().await.unwrap(),
        (Arc::new(Policy::new(narrowed)), 2)
    );

    // A node started from the original file again changes nothing either.
    let third = build(settings).await;
    assert_eq!(listed(&third.clients).await, expected);
    assert_eq!(third.policies.policy().await.unwrap().1, 2);
}

#[tokio::test]
async fn the_token_exchange_follows_a_policy_change_at_once() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    on_redis(&mut settings, &redis);
    let server = TestServer::spawn(settings).await.unwrap();
    let auth = ClientAuth::Basic("assistant".into(), "assistant-secret".into());
    let exchange = |audience: &'static str| {
        let grant = corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let server = &server;
        let auth = &auth;
        async move {
            let form = exchange_form(&grant, "id_token", audience, &[]);
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let response = server.token(&pairs, auth).await.unwrap();
            let status = response.status();
            (status, body_json(response).await)
        }
    };
    let (status, body) = exchange(CAL).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Another node (here: a separate connection) takes the calendar away from the assistant.
    let other = RedisPolicyStore::new(mandate_store::connect(&redis.url()).await.unwrap());
    let (policy, version) = other.policy().await.unwrap();
    let rest: Vec<PolicyRow> = policy
        .rows()
        .iter()
        .filter(|r| !(r.actor == id("assistant") && r.audience == Audience::parse(CAL).unwrap()))
        .cloned()
        .collect();
    assert_eq!(other.replace(rest, version).await.unwrap(), Ok(version + 1));

    let (status, body) = exchange(CAL).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = exchange(MAIL).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

const MANAGER: &str = "manager-secret-0123456789abcdefghijk";

/// The delegation world on `redis`, with a `manage` credential `ops-admin`.
fn admin_settings(redis: &RedisServer, corp: &TestKey) -> Settings {
    let mut settings = delegation_settings(corp);
    settings
        .admin
        .credentials
        .push(mandate_server::config::AdminCredentialSettings {
            name: "ops-admin".into(),
            role: mandate_server::config::AdminRole::Manage,
            secret_hash: mandate_model::SecretHash::of(MANAGER),
        });
    on_redis(&mut settings, redis);
    settings
}

async fn admin(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    secret: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let mut request = server
        .http
        .request(method, server.admin_url(path))
        .bearer_auth(secret);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

/// Whether `id`/`secret` authenticates at `server`'s `/token` (an authenticated client is told
/// `unsupported_grant_type` for an unknown grant, anyone else 401).
async fn authenticates(server: &TestServer, id: &str, secret: &str) -> bool {
    let response = server
        .token(
            &[("grant_type", "urn:example:none")],
            &ClientAuth::Basic(id.into(), secret.into()),
        )
        .await
        .unwrap();
    match response.status() {
        StatusCode::BAD_REQUEST => true,
        StatusCode::UNAUTHORIZED => false,
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn what_an_admin_changes_on_one_node_every_node_sees_at_once() {
    use reqwest::Method;
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let a = TestServer::spawn(admin_settings(&redis, &corp))
        .await
        .unwrap();
    let b = TestServer::spawn(admin_settings(&redis, &corp))
        .await
        .unwrap();

    let (status, created) = admin(
        &a,
        Method::POST,
        "/admin/agents",
        MANAGER,
        Some(
            serde_json::json!({"client_id": "shared-agent", "kind": "agent",
            "owners": ["o@example.com"], "auth_method": "client_secret_basic",
            "state": "active"}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    assert!(authenticates(&b, "shared-agent", &secret).await);

    // Suspended through node B (a revoke credential): node A refuses it at once.
    let (status, body) = admin(
        &b,
        Method::POST,
        "/admin/agents/shared-agent/suspend",
        mandate_testkit::ADMIN_OPS,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!authenticates(&a, "shared-agent", &secret).await);
    let (_, seen) = admin(
        &a,
        Method::GET,
        "/admin/agents/shared-agent",
        mandate_testkit::ADMIN_READER,
        None,
    )
    .await;
    assert_eq!(seen["state"], "suspended");
    assert_eq!(seen["updated_by"], "ops-oncall");
    assert_eq!(seen["created_by"], "ops-admin");

    // Reactivated and rotated on A without overlap: B takes only the new secret.
    let (status, _) = admin(
        &a,
        Method::POST,
        "/admin/agents/shared-agent/activate",
        MANAGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, rotated) = admin(
        &a,
        Method::POST,
        "/admin/agents/shared-agent/secret",
        MANAGER,
        Some(serde_json::json!({"overlap_secs": 0})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["client_secret"].as_str().unwrap();
    assert!(!authenticates(&b, "shared-agent", &secret).await);
    assert!(authenticates(&b, "shared-agent", new_secret).await);

    // The stored record: one revision per change, the hash and never the secret.
    let json = redis.cli(&["GET", "mandate:client:shared-agent"]).unwrap();
    assert!(!json.contains(&secret) && !json.contains(new_secret));
    let stored: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(stored["revision"], 3, "{stored}");
    assert_eq!(
        stored["secret_hash"],
        mandate_model::SecretHash::of(new_secret).to_string()
    );
    assert!(stored.get("previous_secret").is_none());

    // Consent grants: created on A, listed on B, withdrawn on B, gone on A.
    let (status, grant) = admin(
        &a,
        Method::POST,
        "/admin/consents",
        MANAGER,
        Some(
            serde_json::json!({"subject": "corp|carol", "actor": "assistant",
            "audience": CAL, "scopes": ["calendar.read"],
            "expires_at": (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let consent_id = grant["consent"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        redis
            .cli(&["SISMEMBER", "mandate:consent-ids", &consent_id])
            .unwrap()
            .trim(),
        "1"
    );
    let (_, listed) = admin(
        &b,
        Method::GET,
        "/admin/consents?actor=assistant",
        mandate_testkit::ADMIN_READER,
        None,
    )
    .await;
    assert_eq!(listed["consents"][0]["id"], consent_id.as_str());
    let (status, withdrawn) = admin(
        &b,
        Method::DELETE,
        &format!("/admin/consents/{consent_id}"),
        MANAGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{withdrawn}");
    let (_, listed) = admin(
        &a,
        Method::GET,
        "/admin/consents",
        mandate_testkit::ADMIN_READER,
        None,
    )
    .await;
    assert_eq!(listed["consents"], serde_json::json!([]));
    for key in [
        format!("mandate:consent-id:{consent_id}"),
        "mandate:consent-ids".to_owned(),
        "mandate:consent:corp|carol:assistant".to_owned(),
    ] {
        assert_eq!(redis.cli(&["EXISTS", &key]).unwrap().trim(), "0", "{key}");
    }
}

#[tokio::test]
async fn a_record_stored_before_the_lifecycle_fields_is_read_and_changed() {
    use reqwest::Method;
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(admin_settings(&redis, &corp))
        .await
        .unwrap();
    let legacy = serde_json::json!({
        "id": "legacy-agent", "kind": "agent", "owners": ["old@example.com"],
        "description": "from an older release", "state": "active",
        "auth_method": "client_secret_basic",
        "secret_hash": mandate_model::SecretHash::of("legacy-secret").to_string(),
    });
    redis
        .cli(&["SET", "mandate:client:legacy-agent", &legacy.to_string()])
        .unwrap();
    redis
        .cli(&["SADD", "mandate:clients", "legacy-agent"])
        .unwrap();

    let (status, agent) = admin(
        &server,
        Method::GET,
        "/admin/agents/legacy-agent",
        MANAGER,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(agent["created_by"], serde_json::Value::Null);
    assert_eq!(agent["created_at"], serde_json::Value::Null);
    assert!(authenticates(&server, "legacy-agent", "legacy-secret").await);

    // A record without a revision is at revision 0, so a change applies to it.
    let (status, agent) = admin(
        &server,
        Method::PATCH,
        "/admin/agents/legacy-agent",
        MANAGER,
        Some(serde_json::json!({"description": "changed"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{agent}");
    assert_eq!(agent["updated_by"], "ops-admin");
    let stored: serde_json::Value = serde_json::from_str(
        redis
            .cli(&["GET", "mandate:client:legacy-agent"])
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(stored["revision"], 1);
    assert_eq!(stored["description"], "changed");
    assert!(authenticates(&server, "legacy-agent", "legacy-secret").await);
}

fn resource_server_owning(id: &str, audiences: &[&str]) -> mandate_store::Client {
    let mut client = contract::client(
        id,
        mandate_model::ClientKind::ResourceServer,
        mandate_model::AuthMethod::ClientSecretBasic,
    );
    client.audiences = audiences
        .iter()
        .map(|a| Audience::parse(a).unwrap())
        .collect();
    client
}

/// The registry remembers which client owned an audience, so that an exchange does not read
/// every client; the answer must still come from the records as they are now, whatever the hint
/// says.
#[tokio::test]
async fn the_audience_owner_hint_never_decides_an_answer() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let registry = RedisClientRegistry::new(connection);
    let calendar = Audience::parse("https://calendar.example.com").unwrap();
    let mail = Audience::parse("https://mail.example.com").unwrap();
    let hint = |audience: &Audience| {
        server
            .cli(&["GET", &format!("mandate:audience-owner:{audience}")])
            .unwrap()
            .trim()
            .to_owned()
    };
    for client in [
        resource_server_owning("cal-api", &["https://calendar.example.com"]),
        resource_server_owning("mail-api", &["https://mail.example.com"]),
    ] {
        assert!(registry.insert_if_absent(client).await.unwrap());
    }

    // Found by reading the clients; the owner is remembered.
    assert!(registry.audience_owned(&calendar).await.unwrap());
    assert_eq!(hint(&calendar), "cal-api");
    assert!(registry.audience_owned(&calendar).await.unwrap());

    // A hint naming a client that does not own the audience (written by anyone with access to
    // the store) is checked, not believed: the answer comes from the records and the hint is
    // corrected.
    server
        .cli(&[
            "SET",
            "mandate:audience-owner:https://mail.example.com",
            "cal-api",
        ])
        .unwrap();
    assert!(registry.audience_owned(&mail).await.unwrap());
    assert_eq!(hint(&mail), "mail-api");
    server
        .cli(&[
            "SET",
            "mandate:audience-owner:https://other.example.com",
            "cal-api",
        ])
        .unwrap();
    let other = Audience::parse("https://other.example.com").unwrap();
    assert!(!registry.audience_owned(&other).await.unwrap());
    assert_eq!(
        hint(&other),
        "",
        "a hint for an unowned audience is removed"
    );

    // The owner gives the audience up: the next exchange sees it at once.
    let mut cal = resource_server_owning("cal-api", &["https://tasks.example.com"]);
    cal.revision = registry
        .client(&id("cal-api"))
        .await
        .unwrap()
        .unwrap()
        .revision;
    assert!(matches!(
        registry.replace(cal).await.unwrap(),
        mandate_store::ReplaceOutcome::Replaced { .. }
    ));
    assert!(!registry.audience_owned(&calendar).await.unwrap());
    assert!(registry
        .audience_owned(&Audience::parse("https://tasks.example.com").unwrap())
        .await
        .unwrap());
}

/// Client records read (`GET`s) since the last `CONFIG RESETSTAT`.
fn gets_since_reset(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]).unwrap();
    stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

/// An exchange names its target app, and any authenticated agent can name one no resource
/// server owns: that answer must cost the reads of the few clients that ever owned the app, not
/// one read per registered client.
#[tokio::test]
async fn an_unowned_audience_is_answered_without_reading_every_client() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let registry = RedisClientRegistry::new(connection);
    for i in 0..40 {
        let agent = contract::client(
            &format!("agent-{i}"),
            mandate_model::ClientKind::Agent,
            mandate_model::AuthMethod::ClientSecretBasic,
        );
        assert!(registry.insert_if_absent(agent).await.unwrap());
    }
    let cal = resource_server_owning("cal-api", &["https://calendar.example.com"]);
    assert!(registry.insert_if_absent(cal).await.unwrap());
    let calendar = Audience::parse("https://calendar.example.com").unwrap();
    let unowned = Audience::parse("https://nobody.example.com").unwrap();

    server.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    assert!(!registry.audience_owned(&unowned).await.unwrap());
    assert!(!registry.audience_owned(&unowned).await.unwrap());
    assert_eq!(gets_since_reset(&server), 2, "one hint read per check");

    // No hint yet for the calendar: its one former owner is read, not the 41 clients.
    server.cli(&["CONFIG", "RESETSTAT"]).unwrap();
    assert!(registry.audience_owned(&calendar).await.unwrap());
    assert_eq!(gets_since_reset(&server), 2, "the hint, then cal-api");

    // A member of the set is checked, not believed: an agent's id, or one no client has,
    // written there by anyone with access to the store, owns nothing.
    server
        .cli(&[
            "SADD",
            "mandate:audience-owners:https://nobody.example.com",
            "agent-0",
            "ghost",
        ])
        .unwrap();
    assert!(!registry.audience_owned(&unowned).await.unwrap());

    // An owner that moves to another app stays in the calendar's set and is read, and found
    // not to own it any more.
    let mut moved = resource_server_owning("cal-api", &["https://tasks.example.com"]);
    moved.revision = 0;
    assert!(matches!(
        registry.replace(moved).await.unwrap(),
        mandate_store::ReplaceOutcome::Replaced { .. }
    ));
    assert!(!registry.audience_owned(&calendar).await.unwrap());
}

/// Resource servers written before the audience-owner sets existed (or by hand) are not in them
/// until start-up indexes the registry; then their apps are found.
#[tokio::test]
async fn start_up_indexes_the_owners_of_records_written_without_the_sets() {
    let server = RedisServer::start().await.unwrap();
    let connection = mandate_store::connect(&server.url()).await.unwrap();
    let registry = RedisClientRegistry::new(connection.clone());
    let legacy = resource_server_owning("legacy-api", &["https://legacy.example.com"]);
    let record = serde_json::to_string(&legacy.to_stored()).unwrap();
    server
        .cli(&["SET", "mandate:client:legacy-api", &record])
        .unwrap();
    server
        .cli(&["SADD", "mandate:clients", "legacy-api"])
        .unwrap();
    let app = Audience::parse("https://legacy.example.com").unwrap();
    assert!(
        !registry.audience_owned(&app).await.unwrap(),
        "not indexed yet: the app looks unowned, and exchanges for it are refused"
    );

    assert_eq!(registry.index_audience_owners().await.unwrap(), 1);
    assert!(registry.audience_owned(&app).await.unwrap());

    // A node's start-up does it.
    server
        .cli(&[
            "DEL",
            "mandate:audience-owners:https://legacy.example.com",
            "mandate:audience-owner:https://legacy.example.com",
        ])
        .unwrap();
    let mut settings = mandate_testkit::empty_settings();
    on_redis(&mut settings, &server);
    let state = build(settings).await;
    assert!(state.clients.audience_owned(&app).await.unwrap());
}

/// A grant seeded from `[[consents]]` and then withdrawn by an admin stays withdrawn when a
/// node starts again from the same file.
#[tokio::test]
async fn a_withdrawn_configuration_consent_is_not_seeded_again() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    on_redis(&mut settings, &redis);
    settings.consents = vec![mandate_server::config::ConsentSettings {
        subject: mandate_model::Subject::parse("corp|alice").unwrap(),
        actor: id("assistant"),
        audience: Audience::parse(CAL).unwrap(),
        scopes: ScopeSet::parse("calendar.read").unwrap(),
        expires_at: chrono::Utc::now() + chrono::Duration::days(30),
    }];

    let first = build(settings.clone()).await;
    let seeded = first.consents.list(None, None).await.unwrap();
    assert_eq!(seeded.len(), 1);
    first
        .consent_grants
        .withdraw(&seeded[0].id, "no longer", "admin:ops")
        .await
        .unwrap();
    assert!(first.consents.list(None, None).await.unwrap().is_empty());

    let second = build(settings.clone()).await;
    assert!(
        second.consents.list(None, None).await.unwrap().is_empty(),
        "the withdrawn grant came back"
    );
    assert!(first.consents.list(None, None).await.unwrap().is_empty());
}
