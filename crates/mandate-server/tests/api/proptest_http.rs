//! Property tests over the HTTP layer: the real app on a port-0 listener (the test kit), hit with
//! arbitrary parameter maps, bodies, headers and JWT-shaped strings at `/token`, `/introspect`,
//! `/revoke` and `/admin/*`. Properties: no answer is a 5xx (the store here is in memory and never
//! down) and no request panics a worker (a dropped connection fails the test); a refused request
//! changes nothing (ledger, revocations, registry, policies, consents, and the audit stream apart
//! from the `*.refused` records the design asks for).
//!
//! Each property runs 48 cases by default, a few seconds in all; the long form is
//! `PROPTEST_CASES=20000 cargo test -p mandate-server --test api proptest_http` (figures in
//! docs/SECURITY-TESTING.md).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use mandate_testkit::{
    delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey, TestServer,
    ADMIN_OPS, ADMIN_READER, CAL, CORP,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::Method;
use serde_json::Value;

/// The bearer token the corp issuer pushes Shared Signals with.
const PUSH_TOKEN: &str = "proptest-push-token";

/// The number of cases per property: `PROPTEST_CASES` or 48.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// The running app and genuine tokens the generated requests may carry.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    server: TestServer,
    /// A hand-off to booking-tool, an app token for the calendar, an upstream ID token, then
    /// Shared Signals SETs of the corp issuer (each for a user of its own, with no tokens).
    tokens: Vec<String>,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, tokens) = runtime.block_on(async {
        let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
        let mut settings = delegation_settings(&corp);
        settings.trusted_issuers[0].ssf_push_token_hash =
            Some(mandate_model::SecretHash::of(PUSH_TOKEN));
        let server = TestServer::spawn(settings).await.unwrap();
        let id_token = corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let hand_off = delegation_issue(
            &server,
            &id_token,
            "id_token",
            "agent:booking-tool",
            "assistant",
        )
        .await
        .unwrap();
        let app = delegation_issue(&server, &hand_off, "access_token", CAL, "booking-tool")
            .await
            .unwrap();
        let fresh_id_token = corp
            .sign(None, &id_token_claims(CORP, "bob", "assistant"))
            .unwrap();
        let mut tokens = vec![hand_off, app, fresh_id_token];
        let mut header = corp.header(None);
        header["typ"] = serde_json::json!("secevent+jwt");
        for n in 0..10 {
            let claims = serde_json::json!({
                "iss": CORP, "aud": server.issuer(), "iat": mandate_testkit::now(),
                "jti": format!("proptest-set-{n}"),
                "sub_id": {"format": "iss_sub", "iss": CORP, "sub": format!("carol{n}")},
                "events": {"https://schemas.openid.net/secevent/caep/event-type/session-revoked": {}},
            });
            tokens.push(corp.sign_raw(&header, &claims).unwrap());
        }
        (server, tokens)
    });
    Fixture {
        runtime,
        server,
        tokens,
    }
}

/// Everything a refused request must leave alone, read through the admin API.
async fn state(server: &TestServer) -> Value {
    let mut snapshot = serde_json::Map::new();
    for path in [
        "/admin/chains?limit=500",
        "/admin/agents",
        "/admin/policies",
        "/admin/consents",
        "/admin/audit?limit=1000",
    ] {
        let response = server.admin_get(path, Some(ADMIN_READER)).await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let mut body: Value = response.json().await.unwrap();
        // A client's last successful authentication is usage bookkeeping, like the audit
        // stream's refusals below: a request refused after the client authenticated still moves
        // it (an exchange's time, `last_exchange_at`, moves only on success and stays compared).
        if let Some(agents) = body.get_mut("agents").and_then(Value::as_array_mut) {
            for agent in agents.iter_mut().filter_map(Value::as_object_mut) {
                agent.remove("last_authenticated_at");
            }
        }
        if let Some(events) = body.get_mut("events").and_then(Value::as_array_mut) {
            events.retain(|e| {
                !e["action"]
                    .as_str()
                    .is_some_and(|action| action.ends_with(".refused"))
            });
        }
        snapshot.insert(path.to_owned(), body);
    }
    let revocations = server.state.revocations.entries().await.unwrap();
    snapshot.insert(
        "revocations".into(),
        Value::String(format!("{revocations:?}")),
    );
    Value::Object(snapshot)
}

/// A value: one of the genuine tokens, a protocol constant, a JWT-shaped string, or anything.
fn value(tokens: Vec<String>) -> impl Strategy<Value = String> {
    let jwt_part = "[A-Za-z0-9_-]{0,40}";
    prop_oneof![
        2 => proptest::sample::select(tokens),
        2 => proptest::sample::select(vec![
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
            "urn:ietf:params:oauth:grant-type:client_credentials".to_owned(),
            "urn:ietf:params:oauth:token-type:id_token".to_owned(),
            "urn:ietf:params:oauth:token-type:access_token".to_owned(),
            "urn:ietf:params:oauth:token-type:jwt".to_owned(),
            "urn:ietf:params:oauth:token-type:id-jag".to_owned(),
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            CAL.to_owned(),
            "agent:booking-tool".to_owned(),
            "agent:helper".to_owned(),
            "agent:assistant".to_owned(),
            "calendar.read calendar.write".to_owned(),
            "access_token".to_owned(),
            "refresh_token".to_owned(),
            "assistant".to_owned(),
            r#"[{"type":"mandate_delegation","audience":"https://calendar.example.com","scopes":["calendar.read"]}]"#.to_owned(),
        ]),
        2 => (jwt_part, jwt_part, jwt_part).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        2 => (
            proptest::sample::select(vec!["ES256", "RS256", "HS256", "none", "EdDSA", "PS256"]),
            ".{0,30}",
            any::<bool>(),
            ".{0,60}",
        )
            .prop_map(|(alg, kid, crit, payload)| {
                let mut header = serde_json::json!({"alg": alg, "kid": kid});
                if crit {
                    header["crit"] = serde_json::json!(["exp"]);
                }
                format!(
                    "{}.{}.{}",
                    URL_SAFE_NO_PAD.encode(header.to_string()),
                    URL_SAFE_NO_PAD.encode(payload),
                    URL_SAFE_NO_PAD.encode([0u8; 64])
                )
            }),
        1 => ".{0,80}",
        1 => proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "grant_type", "subject_token", "subject_token_type", "actor_token",
            "actor_token_type", "audience", "resource", "scope", "requested_token_type",
            "authorization_details", "assertion", "token", "token_type_hint", "client_id",
            "client_secret", "client_assertion", "client_assertion_type",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
        1 => ".{0,12}",
    ]
}

/// The client authentication a request carries, as an `Authorization` header value.
fn authorization() -> impl Strategy<Value = Option<String>> {
    let basic =
        |id: &str, secret: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    prop_oneof![
        Just(None),
        Just(Some(basic("assistant", "assistant-secret"))),
        Just(Some(basic("booking-tool", "booking-secret"))),
        Just(Some(basic("calendar-api", "calendar-secret"))),
        Just(Some(basic("assistant", "wrong-secret"))),
        Just(Some(format!("Bearer {PUSH_TOKEN}"))),
        "[ -~]{0,60}".prop_map(Some),
        "[A-Za-z0-9+/=]{0,40}".prop_map(|s| Some(format!("Basic {s}"))),
    ]
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(Some("application/x-www-form-urlencoded".to_owned())),
        1 => Just(Some("application/x-www-form-urlencoded; charset=utf-8".to_owned())),
        1 => Just(Some("application/json".to_owned())),
        1 => Just(Some("application/secevent+jwt".to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

/// A well-formed request of each endpoint, built from the genuine tokens: the starting point of
/// the mutated bodies, so that cases also reach the accepting paths.
fn templates(tokens: &[String]) -> Vec<Vec<(String, String)>> {
    let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
    let exchange = "urn:ietf:params:oauth:grant-type:token-exchange";
    let urn = |t: &str| format!("urn:ietf:params:oauth:token-type:{t}");
    let mut all = Vec::new();
    for (token, kind, audience) in [
        (&tokens[2], "id_token", CAL),
        (&tokens[2], "id_token", "agent:booking-tool"),
        (&tokens[0], "access_token", CAL),
        (&tokens[0], "access_token", "agent:helper"),
    ] {
        all.push(vec![
            pair("grant_type", exchange),
            pair("subject_token", token),
            pair("subject_token_type", &urn(kind)),
            pair("audience", audience),
        ]);
    }
    for token in tokens {
        all.push(vec![pair("token", token)]);
        all.push(vec![
            pair("token", token),
            pair("token_type_hint", "access_token"),
        ]);
    }
    all
}

/// A template with one pair dropped, one replaced and some added.
fn mutated(tokens: Vec<String>) -> impl Strategy<Value = Vec<(String, String)>> {
    let templates = templates(&tokens);
    (
        proptest::sample::select(templates),
        proptest::option::of(any::<prop::sample::Index>()),
        proptest::option::weighted(0.3, (any::<prop::sample::Index>(), value(tokens.clone()))),
        proptest::collection::vec((name(), value(tokens)), 0..2),
    )
        .prop_map(|(mut pairs, drop, replace, extra)| {
            if let Some(index) = drop {
                if pairs.len() > 1 && index.index(4) == 0 {
                    pairs.remove(index.index(pairs.len()));
                }
            }
            if let Some((index, value)) = replace {
                let i = index.index(pairs.len());
                pairs[i].1 = value;
            }
            pairs.extend(extra);
            pairs
        })
}

/// A request body: a mutated well-formed request, a form of arbitrary pairs, or raw bytes.
fn body(tokens: Vec<String>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => mutated(tokens.clone()).prop_map(|pairs| form_body(&pairs).into_bytes()),
        4 => proptest::collection::vec((name(), value(tokens)), 0..8).prop_map(|pairs| {
            form_body(&pairs).into_bytes()
        }),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
    ]
}

fn form_body(pairs: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One generated request to a public endpoint.
#[derive(Debug, Clone)]
struct PublicRequest {
    path: &'static str,
    authorization: Option<String>,
    content_type: Option<String>,
    extra_header: (String, String),
    body: Vec<u8>,
}

/// A request each endpoint accepts as it stands: an exchange by the agent its subject token
/// allows, or an introspection or revocation by the resource server the tokens are for. A third
/// of the cases are these, so that the accepting paths (and the state they change) are exercised
/// in every run, not only by the rare mutation that happens to stay valid.
fn well_formed(
    paths: Vec<&'static str>,
    tokens: Vec<String>,
) -> impl Strategy<Value = PublicRequest> {
    let basic =
        |id: &str, secret: &str| format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
    let templates = templates(&tokens);
    let mut requests = Vec::new();
    for path in paths {
        if path.starts_with("/ssf/") {
            // Each SET of the fixture, as its issuer pushes it.
            for set in &tokens[3..] {
                requests.push(PublicRequest {
                    path,
                    authorization: Some(format!("Bearer {PUSH_TOKEN}")),
                    content_type: Some("application/secevent+jwt".to_owned()),
                    extra_header: ("x-case".to_owned(), "well-formed".to_owned()),
                    body: set.clone().into_bytes(),
                });
            }
            continue;
        }
        let candidates: Vec<(String, &Vec<(String, String)>)> = if path == "/token" {
            // templates() lists the exchanges first: two of the ID token by the assistant, two
            // of the hand-off by booking-tool.
            let agents = [
                basic("assistant", "assistant-secret"),
                basic("assistant", "assistant-secret"),
                basic("booking-tool", "booking-secret"),
                basic("booking-tool", "booking-secret"),
            ];
            agents.into_iter().zip(&templates[..4]).collect()
        } else {
            templates[4..]
                .iter()
                .map(|pairs| (basic("calendar-api", "calendar-secret"), pairs))
                .collect()
        };
        for (authorization, pairs) in candidates {
            requests.push(PublicRequest {
                path,
                authorization: Some(authorization),
                content_type: Some("application/x-www-form-urlencoded".to_owned()),
                extra_header: ("x-case".to_owned(), "well-formed".to_owned()),
                body: form_body(pairs).into_bytes(),
            });
        }
    }
    proptest::sample::select(requests)
}

fn public_request(
    paths: Vec<&'static str>,
    tokens: Vec<String>,
) -> impl Strategy<Value = PublicRequest> {
    prop_oneof![
        1 => well_formed(paths.clone(), tokens.clone()),
        2 => arbitrary_request(paths, tokens),
    ]
}

fn arbitrary_request(
    paths: Vec<&'static str>,
    tokens: Vec<String>,
) -> impl Strategy<Value = PublicRequest> {
    (
        proptest::sample::select(paths),
        authorization(),
        content_type(),
        ("x-[a-z]{1,10}", "[ -~]{0,40}"),
        body(tokens),
    )
        .prop_map(
            |(path, authorization, content_type, extra_header, body)| PublicRequest {
                path,
                authorization,
                content_type,
                extra_header,
                body,
            },
        )
}

async fn send_public(server: &TestServer, request: &PublicRequest) -> reqwest::StatusCode {
    let mut builder = server
        .http
        .post(server.url(request.path))
        .header(&request.extra_header.0, &request.extra_header.1)
        .body(request.body.clone());
    if let Some(authorization) = &request.authorization {
        builder = builder.header("authorization", authorization);
    }
    if let Some(content_type) = &request.content_type {
        builder = builder.header("content-type", content_type);
    }
    // A transport error here is a dropped connection: a panicked worker.
    builder.send().await.unwrap().status()
}

fn carries_a_genuine_token(request: &PublicRequest, tokens: &[String]) -> bool {
    let body = String::from_utf8_lossy(&request.body);
    tokens.iter().any(|t| body.contains(t.as_str()))
}

/// Counts the statuses seen, printed at the end (`--nocapture`) so a run shows what it reached.
#[derive(Default)]
struct Statuses(std::sync::Mutex<std::collections::BTreeMap<u16, usize>>);

impl Statuses {
    fn record(&self, status: reqwest::StatusCode) {
        *self.0.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    }

    fn print(&self, what: &str) {
        eprintln!("{what}: statuses {:?}", self.0.lock().unwrap());
    }

    /// How many requests were answered 2xx.
    fn accepted(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(status, _)| (200..300).contains(*status))
            .map(|(_, count)| count)
            .sum()
    }
}

/// The invariants above are about what an accepted request may change: a run in which almost
/// nothing was accepted would have checked them against nothing. A third of the cases are
/// well-formed; at least one in twenty must have been accepted.
fn assert_accepted_often_enough(statuses: &Statuses, what: &str) {
    let cases = usize::try_from(config().cases).unwrap();
    let accepted = statuses.accepted();
    assert!(
        accepted * 20 >= cases,
        "{what}: only {accepted} of {cases} requests were accepted"
    );
}

fn run_public(paths: Vec<&'static str>) {
    let fixture = fixture();
    let mut runner = TestRunner::new(config());
    let tokens = fixture.tokens.clone();
    let statuses = Statuses::default();
    runner
        .run(&public_request(paths.clone(), tokens.clone()), |request| {
            fixture.runtime.block_on(async {
                let before = state(&fixture.server).await;
                let status = send_public(&fixture.server, &request).await;
                statuses.record(status);
                let after = state(&fixture.server).await;
                prop_assert!(!status.is_server_error(), "{status} for {request:?}");
                if before != after {
                    // Only an accepted exchange, or a revocation of a genuine token by a
                    // client, changes anything; introspection never does.
                    prop_assert!(
                        status.is_success(),
                        "a refused request changed state: {status}"
                    );
                    prop_assert!(request.path != "/introspect", "introspection changed state");
                    prop_assert!(
                        request.path == "/token"
                            || request.path.starts_with("/ssf/")
                            || carries_a_genuine_token(&request, &tokens),
                        "state changed without a genuine token"
                    );
                }
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();
    statuses.print(&paths.join(" "));
    assert_accepted_often_enough(&statuses, &paths.join(" "));
    fixture.runtime.block_on(fixture.server.stop());
}

#[test]
fn token_endpoint_never_fails_or_changes_state_when_refusing() {
    run_public(vec!["/token"]);
}

#[test]
fn introspection_and_revocation_never_fail_or_change_state_when_refusing() {
    run_public(vec!["/introspect", "/revoke"]);
}

/// The Shared Signals receiver: whatever arrives, never a 5xx, and nothing changes unless a
/// genuine SET of the corp issuer was accepted.
#[test]
fn shared_signals_never_fail_or_change_state_when_refusing() {
    run_public(vec!["/ssf/receive/corp"]);
}

/// One generated admin request.
#[derive(Debug, Clone)]
struct AdminRequest {
    method: Method,
    path: String,
    bearer: Option<String>,
    if_match: Option<String>,
    body: Vec<u8>,
}

fn admin_request() -> impl Strategy<Value = AdminRequest> {
    let segment = prop_oneof![
        Just("booking-tool".to_owned()),
        Just("helper".to_owned()),
        Just("corp%7Calice".to_owned()),
        Just("chn_unknown".to_owned()),
        "[a-zA-Z0-9_.%-]{0,20}",
    ];
    let routes: Vec<(Method, &'static str)> = vec![
        (Method::GET, "/admin/agents"),
        (Method::POST, "/admin/agents"),
        (Method::GET, "/admin/agents/{}"),
        (Method::PATCH, "/admin/agents/{}"),
        (Method::POST, "/admin/agents/{}/secret"),
        (Method::POST, "/admin/agents/{}/suspend"),
        (Method::POST, "/admin/agents/{}/retire"),
        (Method::POST, "/admin/agents/{}/activate"),
        (Method::GET, "/admin/agents/{}/chains"),
        (Method::GET, "/admin/consents"),
        (Method::POST, "/admin/consents"),
        (Method::DELETE, "/admin/consents/{}"),
        (Method::GET, "/admin/chains"),
        (Method::GET, "/admin/chains/{}"),
        (Method::POST, "/admin/chains/{}/revoke"),
        (Method::POST, "/admin/hops/{}/revoke"),
        (Method::POST, "/admin/subjects/{}/revoke"),
        (Method::GET, "/admin/policies"),
        (Method::PUT, "/admin/policies"),
        (Method::POST, "/admin/policies/explain"),
        (Method::GET, "/admin/audit"),
        (Method::GET, "/admin/openapi.json"),
        (Method::GET, "/admin/{}"),
    ];
    let any_method = proptest::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ]);
    let route = (
        proptest::sample::select(routes),
        prop_oneof![4 => Just(None), 1 => any_method.prop_map(Some)],
        segment,
        "(\\?[a-z_]{1,8}=[ -~&&[^#]]{0,12}){0,2}",
    )
        .prop_map(|((method, template), other, segment, query)| {
            let segment =
                url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>();
            (
                other.unwrap_or(method),
                format!("{}{query}", template.replace("{}", &segment)),
            )
        });
    let json_body = prop_oneof![
        Just(b"{}".to_vec()),
        Just(br#"{"client_id":"x","kind":"agent","owners":["a@b"],"auth_method":"client_secret_basic"}"#.to_vec()),
        Just(br#"{"rows":[]}"#.to_vec()),
        Just(br#"{"overlap_secs":0}"#.to_vec()),
        ".{0,80}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    (
        route,
        prop_oneof![
            Just(None),
            Just(Some(ADMIN_READER.to_owned())),
            Just(Some(ADMIN_OPS.to_owned())),
            "[!-~]{0,40}".prop_map(Some),
        ],
        prop_oneof![
            Just(None),
            Just(Some("\"1\"".to_owned())),
            "[ -~]{0,8}".prop_map(Some)
        ],
        json_body,
    )
        .prop_map(|((method, path), bearer, if_match, body)| AdminRequest {
            method,
            path,
            bearer,
            if_match,
            body,
        })
}

#[test]
fn admin_api_never_fails_or_changes_state_when_refusing() {
    let fixture = fixture();
    let mut runner = TestRunner::new(config());
    let statuses = Statuses::default();
    runner
        .run(&admin_request(), |request| {
            fixture.runtime.block_on(async {
                let server = &fixture.server;
                let before = state(server).await;
                let mut builder = server
                    .http
                    .request(request.method.clone(), server.admin_url(&request.path))
                    .header("content-type", "application/json")
                    .body(request.body.clone());
                if let Some(bearer) = &request.bearer {
                    builder = builder.bearer_auth(bearer);
                }
                if let Some(if_match) = &request.if_match {
                    builder = builder.header("if-match", if_match);
                }
                let status = builder.send().await.unwrap().status();
                statuses.record(status);
                let after = state(server).await;
                prop_assert!(!status.is_server_error(), "{status} for {request:?}");
                if before != after {
                    prop_assert!(
                        status.is_success(),
                        "a refused request changed state: {status}"
                    );
                    // No credential here may manage; only the revoke role changes anything.
                    prop_assert_eq!(request.bearer.as_deref(), Some(ADMIN_OPS));
                }
                Ok::<(), TestCaseError>(())
            })
        })
        .unwrap();
    statuses.print("/admin");
    fixture.runtime.block_on(fixture.server.stop());
}
