//! `GET /metrics` on a node over a real Redis and real HTTP: what was done is counted with bounded
//! labels (routes, grants, codes, rules, kinds; never a client, a user or a token), the store's
//! round trips are timed, and only an admin credential reads it. Its own test binary: the
//! recorder is the process's, so no other test's traffic is counted here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::BTreeMap;

use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, claims_of, delegation_auth, delegation_issue, delegation_settings, exchange_form,
    id_token_claims, KeyKind, TestKey, TestServer, ADMIN_OPS, ADMIN_READER, CAL, CORP,
};
use reqwest::StatusCode;

/// One sample of the text format: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label=value");
                    (key.to_owned(), value.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().expect("a number"),
            }
        })
        .collect()
}

/// The value of the series `name` with (at least) `labels`, summed over the others.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(server: &TestServer, secret: Option<&str>) -> reqwest::Response {
    let request = server.http.get(server.admin_url("/metrics"));
    match secret {
        Some(secret) => request.bearer_auth(secret),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

#[tokio::test]
async fn metrics_count_what_the_node_did_with_bounded_labels() {
    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let server = TestServer::spawn(settings).await.unwrap();

    let grant = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let app_token = delegation_issue(&server, &grant, "id_token", CAL, "assistant")
        .await
        .unwrap();
    let hand_off = delegation_issue(
        &server,
        &grant,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await
    .unwrap();
    // The booking tool may hand calendar.read only to the helper: asking for more is refused by
    // the validator's scope rule.
    let form = exchange_form(
        &hand_off,
        "access_token",
        "agent:helper",
        &[("scope", "calendar.write")],
    );
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server
        .token(&pairs, &delegation_auth("booking-tool"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let refused = body_json(response).await;
    assert_eq!(refused["error"], "invalid_scope", "{refused}");
    let refused_code = refused["error"].as_str().unwrap().to_owned();
    let hop = claims_of(&hand_off)["jti"].as_str().unwrap().to_owned();
    let revoked = server
        .http
        .post(server.admin_url(&format!("/admin/hops/{hop}/revoke")))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);

    // Never on the public listener, even with an admin credential.
    let public = server
        .http
        .get(server.url("/metrics"))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    // Only an admin credential reads the metrics; any role does.
    assert_eq!(
        scrape(&server, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        scrape(&server, Some("not-a-credential")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = scrape(&server, Some(ADMIN_READER)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let samples = parse(&text);

    let token_ok = [
        ("listener", "public"),
        ("route", "/token"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(
        value(&samples, "mandate_http_requests_total", &token_ok),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            &samples,
            "mandate_http_requests_total",
            &[("route", "/token"), ("status", "400")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "mandate_http_request_duration_seconds_count",
            &[("listener", "public"), ("route", "/token")]
        ),
        3.0
    );
    for token in ["access_token", "hand_off"] {
        assert_eq!(
            value(
                &samples,
                "mandate_tokens_issued_total",
                &[
                    ("grant", "token_exchange"),
                    ("token", token),
                    ("binding", "bearer")
                ]
            ),
            1.0,
            "{token}: {text}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "mandate_grant_refusals_total",
            &[("grant", "exchange"), ("error", &refused_code)]
        ),
        1.0,
        "{text}"
    );
    let refusal = samples
        .iter()
        .find(|s| s.name == "mandate_grant_refusals_total")
        .unwrap();
    assert_ne!(refusal.labels["rule"], "request", "{refusal:?}");
    assert_eq!(
        value(
            &samples,
            "mandate_revocations_total",
            &[("kind", "hop"), ("by", "admin")]
        ),
        1.0
    );
    // Redis round trips: timed, by what was sent, with no failures.
    assert!(
        value(
            &samples,
            "mandate_store_command_duration_seconds_count",
            &[]
        ) > 0.0
    );
    assert!(
        value(
            &samples,
            "mandate_store_command_duration_seconds_count",
            &[("sent", "pipeline")]
        ) > 0.0
    );
    assert_eq!(value(&samples, "mandate_store_errors_total", &[]), 0.0);
    assert!(value(&samples, "mandate_signing_keys_published", &[]) >= 1.0);
    assert!(
        value(
            &samples,
            "mandate_signing_key_loaded_timestamp_seconds",
            &[]
        ) > 0.0
    );
    assert_eq!(
        value(
            &samples,
            "mandate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // No label names a client, a user, a hop or carries a token.
    for secret in [
        "alice",
        "assistant",
        "booking-tool",
        "hop_",
        &app_token,
        &hand_off,
    ] {
        assert!(!text.contains(secret), "{secret} appears in /metrics");
    }
    // A route's label is its pattern: an unknown path is `unmatched`, not the path.
    server
        .http
        .get(server.url("/no/such/path/alice"))
        .send()
        .await
        .unwrap();
    let text = scrape(&server, Some(ADMIN_READER))
        .await
        .text()
        .await
        .unwrap();
    assert!(!text.contains("/no/such/path"), "{text}");
    assert_eq!(
        value(
            &parse(&text),
            "mandate_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        2.0,
        "this path and /metrics asked of the public listener: {text}"
    );
    server.stop().await;
}
