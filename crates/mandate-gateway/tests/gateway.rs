//! The gateway end to end, every part real: mandate on a private Redis, the `mandate-gateway`
//! binary following that Redis as the read-only verifier user, nginx (Debian's package) running the repository's forward-auth
//! block (`deploy/gateway/nginx.conf`), and a Python app that echoes what reached it. The same
//! cases run through nginx with the gateway in forward-auth mode, and through the gateway alone
//! in proxy mode.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::time::{Duration, Instant};

use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    claims_of, delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::Value;

use support::{echo_app, free_port, gateway, nginx};

/// The staleness bound both gateways are given.
const BOUND_SECS: u64 = 2;

fn config(mode: &str, port: u16, issuer: &str, redis: &str, app: u16) -> String {
    format!(
        r#"
listen = "127.0.0.1:{port}"
mode = "{mode}"
issuer = "{issuer}"
upstream = "http://127.0.0.1:{app}"

[revocation]
source = "redis"
url = "{redis}"
staleness_bound_secs = {BOUND_SECS}

[[routes]]
prefix = "/"
audience = "{CAL}"
scopes = ["calendar.read"]

[[routes]]
prefix = "/admin"
audience = "{CAL}"
scopes = ["calendar.admin"]
"#
    )
}

struct Answer {
    status: StatusCode,
    challenge: Option<String>,
    body: Value,
}

impl Answer {
    /// A 401 with a DPoP challenge naming `error` (RFC 9449 §7.1).
    fn assert_dpop_refusal(&self, error: &str, what: &str) {
        assert_eq!(self.status, StatusCode::UNAUTHORIZED, "{what}");
        let challenge = self.challenge.as_deref().unwrap_or_default();
        assert!(
            challenge.starts_with(&format!(r#"DPoP error="{error}""#)),
            "{what}: {challenge:?}"
        );
    }

    /// The values of header `name` as the app received it.
    fn seen(&self, name: &str) -> Vec<String> {
        self.body["headers"][name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn call(base: &str, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    Answer {
        status,
        challenge,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// Polls until `done` holds for the answer to `token` at `base`, or `within` passes; how long
/// it took.
async fn until(
    base: &str,
    token: &str,
    within: Duration,
    done: impl Fn(&Answer) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let answer = call(base, "/events", Some(token), &[]).await;
        if done(&answer) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{base}: still {} after {within:?}",
            answer.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn revoke_hop(server: &TestServer, token: &str) {
    let jti = claims_of(token)["jti"].as_str().unwrap().to_owned();
    let response = server
        .http
        .post(server.admin_url(&format!("/admin/hops/{jti}/revoke")))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_forward_auth_and_proxy_mode_admit_only_live_tokens_for_their_audience() {
    let mut redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let server = TestServer::spawn(settings).await.unwrap();
    let issuer = server.issuer().to_owned();
    // The gateways follow as the read-only verifier user of `mandate redis acl`.
    let password = "gateway-password-0123456789";
    let hash: String = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        password,
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    let rule = mandate_revocation::verifier_acl_rule("gateway", &hash);
    let args: Vec<&str> = rule.split_whitespace().collect();
    assert_eq!(redis.cli(&args).unwrap().trim(), "OK");
    let verifier_url = format!("redis://gateway:{password}@127.0.0.1:{}/0", redis.port());
    let dir = tempfile::tempdir().unwrap();
    let (_app, app) = echo_app();
    let (forward_port, proxy_port, nginx_port) = (free_port(), free_port(), free_port());
    let _forward = gateway(
        dir.path(),
        "forward",
        &config("forward-auth", forward_port, &issuer, &verifier_url, app),
        forward_port,
    );
    let _proxy = gateway(
        dir.path(),
        "proxy",
        &config("proxy", proxy_port, &issuer, &verifier_url, app),
        proxy_port,
    );
    let _nginx = nginx(
        dir.path(),
        nginx_port,
        &format!("127.0.0.1:{forward_port}"),
        &format!("127.0.0.1:{app}"),
    );
    let bases = [
        format!("http://127.0.0.1:{nginx_port}"),
        format!("http://127.0.0.1:{proxy_port}"),
    ];

    // alice's assistant hands work to the booking tool, which takes a calendar token.
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let issue = |token: String, kind: &'static str, audience: &'static str, agent: &'static str| {
        let server = &server;
        async move {
            delegation_issue(server, &token, kind, audience, agent)
                .await
                .unwrap()
        }
    };
    let handoff = issue(
        id_token.clone(),
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let calendar = issue(handoff.clone(), "access_token", CAL, "booking-tool").await;
    let mail = issue(id_token.clone(), "id_token", MAIL, "assistant").await;
    let chain = claims_of(&calendar)["chain_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let scope = claims_of(&calendar)["scope"].as_str().unwrap().to_owned();
    let metadata = format!(r#"resource_metadata="{CAL}/.well-known/oauth-protected-resource""#);

    for base in &bases {
        // A live token passes, and the app hears who is calling from the gateway alone: the
        // caller's own X-Mandate-* headers are replaced.
        let forged = [
            ("X-Mandate-Subject", "corp|mallory"),
            ("X-Mandate-Actors", "root"),
            ("X-Mandate-Chain", "chn_forged"),
            ("X-Mandate-Scope", "calendar.admin"),
        ];
        let answer = call(base, "/events?day=1", Some(&calendar), &forged).await;
        assert_eq!(answer.status, StatusCode::OK, "{base}");
        assert_eq!(answer.body["path"], "/events?day=1", "{base}");
        assert_eq!(answer.seen("x-mandate-subject"), ["corp|alice"], "{base}");
        assert_eq!(
            answer.seen("x-mandate-actors"),
            ["booking-tool,assistant"],
            "{base}"
        );
        assert_eq!(answer.seen("x-mandate-chain"), [chain.as_str()], "{base}");
        assert_eq!(answer.seen("x-mandate-scope"), [scope.as_str()], "{base}");

        // No token, a forged one, another app's token: 401 naming the metadata.
        let answer = call(base, "/events", None, &forged).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{base}");
        assert_eq!(
            answer.challenge.as_deref(),
            Some(format!("Bearer {metadata}").as_str()),
            "{base}"
        );
        for token in ["not-a-jwt", mail.as_str()] {
            let answer = call(base, "/events", Some(token), &[]).await;
            assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{base}");
            assert_eq!(
                answer.challenge.as_deref(),
                Some(format!(r#"Bearer error="invalid_token", {metadata}"#).as_str()),
                "{base}"
            );
        }
        // A route needing a scope the token lacks: 403, also when the caller names a laxer
        // route in the header nginx's check reads (nginx sets it itself).
        for extra in [&[][..], &[("X-Original-URI", "/events")][..]] {
            let answer = call(base, "/admin/users", Some(&calendar), extra).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{base} {extra:?}");
        }
        // Two Authorization headers are never admitted (400 at the gateway; nginx makes any
        // check answer but 401 and 403 a 500).
        let second = format!("Bearer {mail}");
        let answer = call(
            base,
            "/events",
            Some(&calendar),
            &[("Authorization", &second)],
        )
        .await;
        assert!(
            matches!(answer.status.as_u16(), 400 | 500),
            "{base}: {}",
            answer.status
        );

        // The RFC 9728 metadata, without a token.
        let answer = call(base, "/.well-known/oauth-protected-resource", None, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{base}");
        assert_eq!(answer.body["resource"], CAL);
        assert_eq!(answer.body["authorization_servers"][0], issuer.as_str());
    }

    // RFC 9449: a DPoP-bound token passes with a proof for the original request (the route's
    // public URL, the original method, the token's hash), and is refused as a bearer token.
    let key = mandate_token::SigningKey::generate(mandate_token::SigningAlgorithm::Es256).unwrap();
    let bound = {
        let proof = key
            .sign_dpop_proof(&serde_json::json!({"jti": "gw-token", "htm": "POST",
                "htu": server.url("/token"), "iat": mandate_testkit::now()}))
            .unwrap();
        let form = mandate_testkit::exchange_form(&id_token, "id_token", CAL, &[]);
        let body: Value = server
            .http
            .post(server.url("/token"))
            .basic_auth("assistant", Some("assistant-secret"))
            .header("DPoP", proof)
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["token_type"], "DPoP", "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    };
    let proof_for = |jti: &str, method: &str| {
        key.sign_dpop_proof(&serde_json::json!({"jti": jti, "htm": method,
            "htu": format!("{CAL}/events"), "iat": mandate_testkit::now(),
            "ath": mandate_token::dpop::access_token_hash(&bound)}))
            .unwrap()
    };
    for (i, base) in bases.iter().enumerate() {
        let dpop = format!("DPoP {bound}");
        let good = proof_for(&format!("gw-{i}"), "GET");
        let answer = call(
            base,
            "/events?day=2",
            None,
            &[("Authorization", &dpop), ("DPoP", &good)],
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{base}");
        assert_eq!(answer.seen("x-mandate-subject"), ["corp|alice"], "{base}");
        // The same proof again, a proof for another method, the token as a bearer token.
        let other_method = proof_for(&format!("gw-post-{i}"), "POST");
        for (what, extra) in [
            (
                "replayed",
                vec![("Authorization", dpop.as_str()), ("DPoP", good.as_str())],
            ),
            (
                "another method",
                vec![
                    ("Authorization", dpop.as_str()),
                    ("DPoP", other_method.as_str()),
                ],
            ),
        ] {
            let answer = call(base, "/events", None, &extra).await;
            answer.assert_dpop_refusal("invalid_dpop_proof", &format!("{base} {what}"));
        }
        let answer = call(base, "/events", Some(&bound), &[]).await;
        answer.assert_dpop_refusal("invalid_token", base);
    }

    // Proxy mode strips every X-Mandate-* header a caller sends and forwards bodies.
    let answer = call(
        &bases[1],
        "/events",
        Some(&calendar),
        &[("X-Mandate-Tenant", "evil")],
    )
    .await;
    assert!(answer.seen("x-mandate-tenant").is_empty());
    let posted: Value = reqwest::Client::new()
        .post(format!("{}/events", bases[1]))
        .bearer_auth(&calendar)
        .body("{\"title\":\"dentist\"}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["method"], "POST");
    assert_eq!(posted["body"], "{\"title\":\"dentist\"}");

    // Revoking the hand-off (the calendar token's parent) reaches both gateways within the
    // follower's bound.
    revoke_hop(&server, &handoff).await;
    for base in &bases {
        let took = until(base, &calendar, Duration::from_secs(BOUND_SECS + 3), |a| {
            a.status == StatusCode::UNAUTHORIZED
        })
        .await;
        eprintln!("{base}: revoked hop refused after {took:?}");
    }

    // Redis goes away: once the view is older than the bound, every token is refused (503 from
    // the gateway; nginx turns a check's 503 into 500).
    let live_handoff = issue(id_token, "id_token", "agent:booking-tool", "assistant").await;
    let live = issue(live_handoff, "access_token", CAL, "booking-tool").await;
    for base in &bases {
        until(base, &live, Duration::from_secs(BOUND_SECS + 3), |a| {
            a.status == StatusCode::OK
        })
        .await;
    }
    redis.kill();
    let refused = [
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
    ];
    for (base, expected) in bases.iter().zip(refused) {
        until(base, &live, Duration::from_secs(BOUND_SECS + 5), |a| {
            a.status == expected
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_the_feed_the_gateway_sees_revocations_and_fails_closed_without_mandate() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let issuer = server.issuer().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("calendar.secret");
    std::fs::write(&secret, "calendar-secret\n").unwrap();
    let (_app, app) = echo_app();
    let port = free_port();
    let config = format!(
        r#"
listen = "127.0.0.1:{port}"
mode = "proxy"
issuer = "{issuer}"
upstream = "http://127.0.0.1:{app}"

[revocation]
source = "feed"
url = "{issuer}/revocations"
client_id = "calendar-api"
client_secret_file = "{}"
staleness_bound_secs = {BOUND_SECS}

[[routes]]
prefix = "/"
audience = "{CAL}"

[report]
client_id = "calendar-api"
client_secret_file = "{}"
instance = "gateway-feed"
"#,
        secret.display(),
        secret.display()
    );
    let _gateway = gateway(dir.path(), "feed", &config, port);
    let base = format!("http://127.0.0.1:{port}");
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let calendar = delegation_issue(&server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
    let answer = call(&base, "/events", Some(&calendar), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.seen("x-mandate-actors"), ["assistant"]);

    // The gateway reported itself: mandate's participation map shows it following the feed.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (calendar_entry, gateway_report) = loop {
        let map: Value = server
            .http
            .get(server.admin_url("/admin/participation"))
            .bearer_auth(mandate_testkit::ADMIN_READER)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entry = map["audiences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["audience"] == CAL)
            .unwrap()
            .clone();
        let report = entry["verifiers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["kind"] == "gateway")
            .cloned();
        if let Some(report) = report {
            break (entry, report);
        }
        assert!(Instant::now() < deadline, "no gateway report in {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(calendar_entry["verdict"], "follows revocations");
    assert_eq!(gateway_report["instance"], "gateway-feed");
    assert_eq!(gateway_report["mode"], "feed");

    revoke_hop(&server, &calendar).await;
    until(&base, &calendar, Duration::from_secs(BOUND_SECS + 3), |a| {
        a.status == StatusCode::UNAUTHORIZED
    })
    .await;

    let live = delegation_issue(&server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();
    assert_eq!(
        call(&base, "/events", Some(&live), &[]).await.status,
        StatusCode::OK
    );
    // mandate stops: its feed's heartbeats stop, and after the bound nothing is admitted.
    server.stop().await;
    until(&base, &live, Duration::from_secs(BOUND_SECS + 5), |a| {
        a.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
}

#[test]
fn a_bad_configuration_names_its_key_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "listen = \"127.0.0.1:1\"\nmode = \"proxy\"\nissuer = \"https://mandate.example.com\"\n\
         [revocation]\nsource = \"redis\"\nurl = \"redis://127.0.0.1:1\"\n\
         [[routes]]\nprefix = \"/\"\naudience = \"https://calendar.example.com\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_mandate-gateway"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("routes[0].upstream"), "{stderr}");
}
