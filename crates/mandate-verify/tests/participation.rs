//! Participation end to end over real HTTP: verifiers built with mandate-verify report what they
//! are (a feed follower, a Redis follower, one that follows nothing), an app introspects, another
//! does nothing, and `GET /admin/participation` gives each audience its verdict; a follower that
//! stalls reports a growing lag; bad reports are refused and change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_testkit::{
    delegation_issue, delegation_settings, id_token_claims, resource_server, KeyKind, TestKey,
    TestServer, ADMIN_READER, CAL, CORP, MAIL,
};
use mandate_verify::report::{ReportConfig, Reporter};
use mandate_verify::{Feed, FeedConfig, Verifier};
use reqwest::StatusCode;
use serde_json::{json, Value};

const DOCS: &str = "https://docs.example.com";
const FILES: &str = "https://files.example.com";

async fn world(redis: Option<&mandate_testkit::redis::RedisServer>) -> (TestKey, TestServer) {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings
        .clients
        .push(resource_server("docs-api", "docs-secret", DOCS).unwrap());
    settings
        .clients
        .push(resource_server("files-api", "files-secret", FILES).unwrap());
    if let Some(redis) = redis {
        settings.store.kind = mandate_server::config::StoreKind::Redis;
        settings.store.url = Some(mandate_server::config::StoreUrl::One(redis.url()));
    }
    (corp, TestServer::spawn(settings).await.unwrap())
}

async fn map(server: &TestServer) -> Vec<Value> {
    let response = server
        .http
        .get(server.admin_url("/admin/participation"))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["audiences"].as_array().unwrap().clone()
}

fn audience<'a>(map: &'a [Value], name: &str) -> &'a Value {
    map.iter()
        .find(|a| a["audience"] == name)
        .unwrap_or_else(|| panic!("{name} missing from {map:?}"))
}

/// Polls the map until `done` holds for `name`, within `within`.
async fn until(
    server: &TestServer,
    name: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let map = map(server).await;
        let entry = audience(&map, name).clone();
        if done(&entry) {
            return entry;
        }
        assert!(start.elapsed() < within, "{name}: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The calendar's resource server following mandate's feed, its first snapshot loaded.
async fn calendar_feed(server: &TestServer) -> Feed {
    let feed = Feed::connect(
        &server.url("/revocations"),
        "calendar-api",
        "calendar-secret",
        FeedConfig::default(),
    )
    .await
    .unwrap();
    assert!(feed.ready(Duration::from_secs(5)).await);
    feed
}

fn reporting(server: &TestServer, client: &str, secret: &str, instance: &str) -> ReportConfig {
    let mut config = ReportConfig::new(&server.url("/participation"), client, secret);
    config.instance = instance.into();
    config.every = Duration::from_millis(200);
    config
}

#[tokio::test]
async fn each_audience_gets_the_verdict_of_what_takes_part() {
    let (corp, server) = world(None).await;
    // The calendar follows the feed and reports; the mail app verifies without following.
    let feed = calendar_feed(&server).await;
    let calendar = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(feed.clone()))
        .build()
        .await
        .unwrap();
    let mail = Verifier::builder(server.issuer(), MAIL)
        .discover()
        .build()
        .await
        .unwrap();
    let _calendar_reports = Reporter::spawn(
        &[&calendar],
        reporting(&server, "calendar-api", "calendar-secret", "cal-1"),
    )
    .unwrap();
    let _mail_reports = Reporter::spawn(
        &[&mail],
        reporting(&server, "mail-api", "mail-secret", "mail-1"),
    )
    .unwrap();
    // The docs app introspects a token; the files app does nothing at all.
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let token = delegation_issue(&server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
    let response = server
        .post_form(
            "/introspect",
            &[("token", token.as_str())],
            &mandate_testkit::ClientAuth::Basic("docs-api".into(), "docs-secret".into()),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let cal = until(&server, CAL, Duration::from_secs(5), |a| {
        a["verdict"] == "follows revocations"
    })
    .await;
    let verifiers = cal["verifiers"].as_array().unwrap();
    let sdk = verifiers.iter().find(|v| v["kind"] == "sdk").unwrap();
    assert_eq!(sdk["instance"], "cal-1");
    assert_eq!(sdk["mode"], "feed");
    assert!(sdk["lag_ms"].as_u64().unwrap() < 3_000, "{sdk}");
    // mandate counts the feed connection itself too.
    assert!(verifiers.iter().any(|v| v["kind"] == "feed"), "{cal}");
    assert_eq!(cal["owners"][0]["client_id"], "calendar-api");

    let mail_entry = until(&server, MAIL, Duration::from_secs(5), |a| {
        a["verdict"] == "verifies only"
    })
    .await;
    assert_eq!(mail_entry["verifiers"][0]["mode"], "none");
    let map_now = map(&server).await;
    assert_eq!(audience(&map_now, DOCS)["verdict"], "introspects");
    assert_eq!(audience(&map_now, DOCS)["verifiers"][0]["count"], 1);
    assert_eq!(audience(&map_now, FILES)["verdict"], "silent");

    // The feed stalls: the reports say its view grows old.
    feed.stop();
    let stalled = until(&server, CAL, Duration::from_secs(10), |a| {
        a["verifiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["kind"] == "sdk" && v["lag_ms"].as_u64().unwrap_or(0) > 2_000)
    })
    .await;
    assert_eq!(stalled["verdict"], "follows revocations", "{stalled}");
    server.stop().await;
}

#[tokio::test]
async fn bad_reports_are_refused_and_change_nothing() {
    let (_corp, server) = world(None).await;
    let report = |body: Value, client: (&str, &str)| {
        let request = server
            .http
            .post(server.url("/participation"))
            .basic_auth(client.0, Some(client.1))
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    let good = json!({"instance": "cal-1", "kind": "sdk", "mode": "followed", "audiences": [CAL]});
    let calendar = ("calendar-api", "calendar-secret");
    for (body, client, expected) in [
        // Another app's audience.
        (
            json!({"instance": "x", "kind": "sdk", "mode": "followed", "audiences": [MAIL]}),
            calendar,
            StatusCode::BAD_REQUEST,
        ),
        // An unknown mode, an unknown field, a hostile instance name.
        (
            json!({"instance": "x", "kind": "sdk", "mode": "sometimes", "audiences": [CAL]}),
            calendar,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"instance": "x", "kind": "sdk", "mode": "none", "audiences": [CAL], "admin": true}),
            calendar,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"instance": "x\r\nX-Evil: 1", "kind": "sdk", "mode": "none", "audiences": [CAL]}),
            calendar,
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"instance": "x".repeat(5_000), "kind": "sdk", "mode": "none", "audiences": [CAL]}),
            calendar,
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // Wrong secret; an agent.
        (
            good.clone(),
            ("calendar-api", "wrong"),
            StatusCode::UNAUTHORIZED,
        ),
    ] {
        assert_eq!(report(body.clone(), client).await, expected, "{body}");
    }
    let response = server
        .http
        .post(server.url("/participation"))
        .basic_auth("assistant", Some("assistant-secret"))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    for entry in map(&server).await {
        assert_eq!(entry["verdict"], "silent", "{entry}");
    }
    // At most 16 live instances per resource server; renewing one that exists still works.
    for i in 0..16 {
        let body =
            json!({"instance": format!("i{i}"), "kind": "sdk", "mode": "none", "audiences": [CAL]});
        assert_eq!(report(body, calendar).await, StatusCode::OK);
    }
    let extra = json!({"instance": "i16", "kind": "sdk", "mode": "none", "audiences": [CAL]});
    assert_eq!(report(extra, calendar).await, StatusCode::CONFLICT);
    let again = json!({"instance": "i3", "kind": "sdk", "mode": "followed", "audiences": [CAL]});
    assert_eq!(report(again, calendar).await, StatusCode::OK);
    server.stop().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_follower_reports_through_a_redis_backed_mandate() {
    use mandate_verify::{Followed, FollowerConfig};
    let redis = mandate_testkit::redis::RedisServer::start().await.unwrap();
    let (_corp, server) = world(Some(&redis)).await;
    let followed = Followed::redis(
        &redis.url(),
        FollowerConfig::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let verifier = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(followed))
        .build()
        .await
        .unwrap();
    let _reports = Reporter::spawn(
        &[&verifier],
        reporting(&server, "calendar-api", "calendar-secret", "cal-redis"),
    )
    .unwrap();
    let cal = until(&server, CAL, Duration::from_secs(5), |a| {
        a["verdict"] == "follows revocations"
    })
    .await;
    assert_eq!(cal["verifiers"][0]["mode"], "followed");
    // The report lives in Redis: a second node on the same store sees it.
    let mut settings = delegation_settings(&TestKey::generate(KeyKind::Es256, None).unwrap());
    settings.store.kind = mandate_server::config::StoreKind::Redis;
    settings.store.url = Some(mandate_server::config::StoreUrl::One(redis.url()));
    let other = TestServer::spawn(settings).await.unwrap();
    let seen = map(&other).await;
    assert_eq!(audience(&seen, CAL)["verdict"], "follows revocations");
    other.stop().await;
    server.stop().await;
}

const ADMIN_MANAGER: &str = "manager-secret-0123456789abcdefghijk";

/// The world, with a `manage` admin credential (gates are changed with it).
async fn gated_world(redis: Option<&mandate_testkit::redis::RedisServer>) -> (TestKey, TestServer) {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings
        .admin
        .credentials
        .push(mandate_server::config::AdminCredentialSettings {
            name: "gatekeeper".into(),
            role: mandate_server::config::AdminRole::Manage,
            secret_hash: mandate_model::SecretHash::of(ADMIN_MANAGER),
        });
    if let Some(redis) = redis {
        settings.store.kind = mandate_server::config::StoreKind::Redis;
        settings.store.url = Some(mandate_server::config::StoreUrl::One(redis.url()));
    }
    (corp, TestServer::spawn(settings).await.unwrap())
}

async fn set_gate(server: &TestServer, gate: Value) -> Value {
    let response = server
        .http
        .put(server.admin_url("/admin/participation/gates"))
        .bearer_auth(ADMIN_MANAGER)
        .json(&gate)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn explain(server: &TestServer, audience: &str) -> Value {
    let response = server
        .http
        .post(server.admin_url("/admin/policies/explain"))
        .bearer_auth(ADMIN_READER)
        .json(
            &json!({"agent": "assistant", "subject_token_type": "id_token",
                      "audience": audience, "subject": "corp|alice"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn audit(server: &TestServer, action: &str) -> Vec<Value> {
    let response = server
        .http
        .get(server.admin_url(&format!("/admin/audit?action={action}")))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    body["events"].as_array().unwrap().clone()
}

/// The calendar's gate requires a follower: exchanges for it are refused (and explain says
/// so) until a verifier that follows revocations reports, then pass; the mail app's dry-run
/// gate only audits what it would refuse; a read credential cannot set a gate.
async fn a_gate_refuses_until_a_follower_reports(
    redis: Option<&mandate_testkit::redis::RedisServer>,
) {
    let (corp, server) = gated_world(redis).await;
    let id_token = || {
        corp.sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap()
    };
    let set = set_gate(
        &server,
        json!({"audience": CAL, "require": "follows_revocations"}),
    )
    .await;
    assert_eq!(set["gate"]["verdict"], "silent", "{set}");
    assert_eq!(set["gate"]["met"], false, "{set}");
    let (status, body) =
        mandate_testkit::delegation_exchange(&server, &id_token(), "id_token", CAL, "assistant")
            .await
            .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_target", "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("requires a verifier that follows revocations"),
        "{body}"
    );
    let explained = explain(&server, CAL).await;
    assert_eq!(explained["allowed"], false, "{explained}");
    assert_eq!(explained["rule"], "participation_gate", "{explained}");
    assert_eq!(explained["gate"]["met"], false, "{explained}");
    assert_eq!(audience(&map(&server).await, CAL)["gate"]["met"], false);

    // The calendar's follower starts and reports: the gate is met. On Redis it checks the
    // list itself on every request (Direct), else it follows mandate's feed.
    let follower: Arc<dyn mandate_verify::RevocationSource> = match redis {
        #[cfg(feature = "redis")]
        Some(redis) => Arc::new(mandate_verify::Direct::redis(&redis.url()).await.unwrap()),
        _ => Arc::new(calendar_feed(&server).await),
    };
    let mode = if redis.is_some() { "direct" } else { "feed" };
    let calendar = Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(follower)
        .build()
        .await
        .unwrap();
    let _reports = Reporter::spawn(
        &[&calendar],
        reporting(&server, "calendar-api", "calendar-secret", "cal-1"),
    )
    .unwrap();
    let cal = until(&server, CAL, Duration::from_secs(5), |a| {
        a["verifiers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["kind"] == "sdk" && v["mode"] == mode)
    })
    .await;
    assert_eq!(cal["gate"]["met"], true, "{cal}");
    let token = delegation_issue(&server, &id_token(), "id_token", CAL, "assistant")
        .await
        .unwrap();
    // A follower answers once it has heard a heartbeat (it may not have yet).
    let started = Instant::now();
    while let Err(error) = calendar.verify(&token).await {
        assert!(started.elapsed() < Duration::from_secs(5), "{error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let explained = explain(&server, CAL).await;
    assert_eq!(explained["allowed"], true, "{explained}");
    assert_eq!(explained["gate"]["verdict"], "follows revocations");

    // A dry run on the silent mail app: issued, and audited as what it would refuse.
    set_gate(
        &server,
        json!({"audience": MAIL, "require": "verifies", "dry_run": true}),
    )
    .await;
    delegation_issue(&server, &id_token(), "id_token", MAIL, "assistant")
        .await
        .unwrap();
    let would = audit(&server, "gates.would_refuse").await;
    assert_eq!(would.len(), 1, "{would:?}");
    assert_eq!(would[0]["target"], MAIL);
    assert_eq!(would[0]["actor"], "client:assistant");
    assert_eq!(audit(&server, "gates.set").await.len(), 2);

    // A read credential cannot change gates; a gate guards apps, not agents; removing one
    // that is not there is a 404.
    let response = server
        .http
        .put(server.admin_url("/admin/participation/gates"))
        .bearer_auth(ADMIN_READER)
        .json(&json!({"audience": MAIL, "require": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = server
        .http
        .put(server.admin_url("/admin/participation/gates"))
        .bearer_auth(ADMIN_MANAGER)
        .json(&json!({"audience": "agent:helper", "require": "none"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let remove = |audience: &str| {
        server
            .http
            .delete(server.admin_url("/admin/participation/gates"))
            .query(&[("audience", audience)])
            .bearer_auth(ADMIN_MANAGER)
            .send()
    };
    assert_eq!(remove(MAIL).await.unwrap().status(), StatusCode::OK);
    assert_eq!(remove(MAIL).await.unwrap().status(), StatusCode::NOT_FOUND);
    let listed: Value = server
        .http
        .get(server.admin_url("/admin/participation/gates"))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["gates"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["gates"][0]["audience"], CAL);
    assert_eq!(listed["gates"][0]["set_by"], "gatekeeper");
    server.stop().await;
}

#[tokio::test]
async fn a_gate_refuses_until_a_feed_follower_reports() {
    a_gate_refuses_until_a_follower_reports(None).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_gate_refuses_until_a_direct_verifier_reports_on_redis() {
    let redis = mandate_testkit::redis::RedisServer::start().await.unwrap();
    a_gate_refuses_until_a_follower_reports(Some(&redis)).await;
}
