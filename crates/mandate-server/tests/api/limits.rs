//! `[limits]` (DESIGN.md section 10) over real HTTP: request heads (431) and bodies (413, admin
//! JSON included) bounded on both listeners, slow clients cut off (408) and stuck handlers
//! answered (503) after `request_timeout_secs`, and the per-client budget (429) charged at
//! `/introspect` and `/revoke` as at `/token`, shared by two nodes on one Redis. Each limit is
//! also shown not to touch honest traffic just under it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use mandate_server::config::{ConfigSource, StoreKind, StoreUrl};
use mandate_server::{AppState, BuildOptions, Listeners, Signals};
use mandate_store::{RateDecision, RateLimiter, StoreError};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, delegation_auth, delegation_settings, KeyKind, TestKey, TestServer, ADMIN_OPS,
};
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn corp() -> TestKey {
    TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap()
}

/// `Authorization: Basic …` of a client of `delegation_settings`.
fn basic_header(client: &str) -> String {
    let mandate_testkit::ClientAuth::Basic(id, secret) = delegation_auth(client) else {
        unreachable!()
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
    format!("Basic {encoded}")
}

/// The host and port of a base URL (`http://127.0.0.1:1234` → `127.0.0.1:1234`).
fn authority(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// A raw HTTP/1.1 response: status, head, body (by `Content-Length`).
#[derive(Debug)]
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response from `stream`; `None` when the connection closed before a whole head.
async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> Option<RawResponse> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buffer[head_end..]).into_owned();
    Some(RawResponse { status, head, body })
}

/// Whether the peer has closed `stream` (EOF or reset) within `within`.
async fn closed_within<R: AsyncRead + Unpin>(stream: &mut R, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// A request head of exactly `size` bytes (request line and header lines, without the blank
/// line that ends it): `GET /jwks` padded with an `x-pad` header.
fn head_of_size(size: usize) -> String {
    let fixed = "GET /jwks HTTP/1.1\r\nhost: mandate\r\nconnection: close\r\nx-pad: \r\n";
    let head = format!(
        "GET /jwks HTTP/1.1\r\nhost: mandate\r\nconnection: close\r\nx-pad: {}\r\n",
        "a".repeat(size - fixed.len())
    );
    assert_eq!(head.len(), size);
    head
}

async fn send_raw(base: &str, bytes: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(authority(base)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_response(&mut stream).await.expect("a response")
}

#[tokio::test]
async fn request_heads_are_bounded_to_max_header_bytes() {
    let mut settings = delegation_settings(&corp());
    settings.limits.max_header_bytes = 4096;
    let server = TestServer::spawn(settings).await.unwrap();
    // Exactly at the limit: served.
    let at_limit = format!("{}\r\n", head_of_size(4096));
    let response = send_raw(&server.base, at_limit.as_bytes()).await;
    assert_eq!(response.status, 200, "{}", response.head);
    assert!(response.body.contains("keys"));
    // One byte over: 431 before any handler, in the OAuth error shape, connection closed.
    let over = format!("{}\r\n", head_of_size(4097));
    let response = send_raw(&server.base, over.as_bytes()).await;
    assert_eq!(response.status, 431, "{}", response.head);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(response
        .head
        .to_ascii_lowercase()
        .contains("connection: close"));
    // The admin listener too, before authentication, in its own error shape.
    let response = server
        .http
        .get(server.admin_url("/admin/agents"))
        .bearer_auth(ADMIN_OPS)
        .header("x-pad", "a".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(body_json(response).await["error"], "header_too_large");
    let response = server
        .http
        .get(server.admin_url("/admin/agents"))
        .bearer_auth(ADMIN_OPS)
        .header("x-pad", "a".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A long query string counts: it is part of the head.
    let response = server
        .http
        .get(server.url(&format!("/jwks?{}", "q".repeat(5000))))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    server.stop().await;
}

#[tokio::test]
async fn admin_json_bodies_are_bounded_to_max_body_bytes() {
    let mut settings = delegation_settings(&corp());
    settings.limits.max_body_bytes = 2048;
    let server = TestServer::spawn(settings).await.unwrap();
    let path = "/admin/subjects/corp%7Calice/revoke";
    // A reason padded with JSON whitespace to `size` bytes.
    let body_of = |size: usize| {
        let fixed = r#"{"reason":"limits test"}"#;
        let body = format!(
            r#"{{"reason":"limits test"{}}}"#,
            " ".repeat(size - fixed.len())
        );
        assert_eq!(body.len(), size);
        body
    };
    let post = |body: reqwest::Body| {
        server
            .http
            .post(server.admin_url(path))
            .bearer_auth(ADMIN_OPS)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Announced over the limit: 413 before authentication or reading, admin error shape.
    let response = server
        .http
        .post(server.admin_url(path))
        .header("content-type", "application/json")
        .body(body_of(2049))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_json(response).await["error"], "payload_too_large");
    // Chunked (no Content-Length): bounded while read.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body_of(4096)
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = post(reqwest::Body::wrap_stream(futures_util::stream::iter(
        chunks,
    )))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Exactly at the limit, chunked or not: served.
    let response = post(body_of(2048).into()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body_of(2048)
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = post(reqwest::Body::wrap_stream(futures_util::stream::iter(
        chunks,
    )))
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    server.stop().await;
}

/// Writes `pieces` one after the other, `gap` apart, ignoring write errors (the server may have
/// closed the connection).
async fn dribble(stream: &mut tokio::net::tcp::OwnedWriteHalf, pieces: &[&[u8]], gap: Duration) {
    for piece in pieces {
        if stream.write_all(piece).await.is_err() {
            return;
        }
        tokio::time::sleep(gap).await;
    }
}

async fn timeout_server(secs: u64) -> TestServer {
    let mut settings = delegation_settings(&corp());
    settings.limits.request_timeout_secs = secs;
    TestServer::spawn(settings).await.unwrap()
}

#[tokio::test]
async fn a_slow_head_is_cut_off_and_an_honest_one_served() {
    let server = timeout_server(2).await;
    // Slow-loris: one header line every 250 ms, for up to 12 s. The server answers 408 and
    // closes the connection after 2 s, long before the client would have finished.
    let stream = TcpStream::connect(authority(&server.base)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let mut pieces: Vec<&[u8]> = vec![b"GET /jwks HTTP/1.1\r\nhost: mandate\r\n"];
        pieces.extend(std::iter::repeat_n(&b"x-slow: 1\r\n"[..], 48));
        dribble(&mut write, &pieces, Duration::from_millis(250)).await;
    });
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(15), read.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("the slow connection was never closed"),
        }
    }
    let closed_after = started.elapsed();
    writer.abort();
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    assert!(
        closed_after < Duration::from_secs(10),
        "closed after {closed_after:?}: the server did not cut the slow head off"
    );
    // An honest client whose head arrives in pieces within the timeout is served.
    let stream = TcpStream::connect(authority(&server.base)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let pieces: [&[u8]; 3] = [
        b"GET /jwks HTTP/1.1\r\n",
        b"host: mandate\r\n",
        b"connection: close\r\n\r\n",
    ];
    dribble(&mut write, &pieces, Duration::from_millis(300)).await;
    let mut answer = String::new();
    read.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_is_cut_off() {
    let server = timeout_server(2).await;
    let mut stream = TcpStream::connect(authority(&server.base)).await.unwrap();
    stream
        .write_all(b"GET /jwks HTTP/1.1\r\nhost: mandate\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut stream).await.expect("a first response");
    assert_eq!(first.status, 200);
    // The second request on the same connection trickles in.
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let mut pieces: Vec<&[u8]> = vec![b"GET /jwks HTTP/1.1\r\nhost: mandate\r\n"];
        pieces.extend(std::iter::repeat_n(&b"x-slow: 1\r\n"[..], 48));
        dribble(&mut write, &pieces, Duration::from_millis(250)).await;
    });
    let mut chunk = [0u8; 1024];
    let started = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(15), read.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("the slow kept-alive connection was never closed"),
        }
    }
    writer.abort();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "closed after {:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_slow_body_is_cut_off_and_an_honest_one_served() {
    let server = timeout_server(2).await;
    let body = b"grant_type=urn%3Aexample%3Aunknown&padding=".to_vec();
    let padded: Vec<u8> = body
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 200 - body.len()))
        .collect();
    let head = format!(
        "POST /token HTTP/1.1\r\nhost: mandate\r\nauthorization: {}\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: 200\r\n\r\n",
        basic_header("assistant")
    );
    // 10 bytes every 250 ms: the whole body would take 5 s; at 2 s the server answers 408 and
    // closes the connection.
    let mut stream = TcpStream::connect(authority(&server.base)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let slow_body = padded.clone();
    let writer = tokio::spawn(async move {
        let pieces: Vec<&[u8]> = slow_body.chunks(10).collect();
        dribble(&mut write, &pieces, Duration::from_millis(250)).await;
    });
    let started = Instant::now();
    let answer = read_response(&mut read).await.expect("an answer");
    assert_eq!(answer.status, 408, "{}", answer.head);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered after {:?}: the slow body was not cut off",
        started.elapsed()
    );
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(closed_within(&mut read, Duration::from_secs(3)).await);
    writer.abort();
    // The same body in pieces that arrive within the timeout is served (and refused for its
    // grant type, which is the answer an honest client of an unknown grant gets).
    let stream = TcpStream::connect(authority(&server.base)).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let pieces: Vec<&[u8]> = padded.chunks(50).collect();
    dribble(&mut write, &pieces, Duration::from_millis(150)).await;
    let answer = read_response(&mut read).await.expect("an answer");
    assert_eq!(answer.status, 400, "{}", answer.head);
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["error"], "unsupported_grant_type");
    server.stop().await;
}

/// A rate limiter that never answers: a store that neither replies nor fails.
#[derive(Debug)]
struct StuckLimiter;

#[async_trait::async_trait]
impl RateLimiter for StuckLimiter {
    async fn acquire(&self, _key: &str) -> Result<RateDecision, StoreError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_stuck_handler_is_answered_503_at_the_deadline() {
    let mut settings = delegation_settings(&corp());
    settings.limits.request_timeout_secs = 1;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(loopback, loopback).unwrap();
    let public = listeners.public.local_addr().unwrap();
    settings.listen = public;
    settings.admin_listen = listeners.admin.local_addr().unwrap();
    settings.issuer = format!("http://{public}");
    let mut state = AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions::default(),
    )
    .await
    .unwrap();
    state.rate_limiter = Arc::new(StuckLimiter);
    let running = mandate_server::start(state, listeners, Signals::Ignore).unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let response = http
        .post(format!("http://{public}/introspect"))
        .header("authorization", basic_header("calendar-api"))
        .form(&[("token", "anything")])
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        body_json(response).await["error"],
        "temporarily_unavailable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    // Requests that do not touch the stuck part are served as before.
    let response = http
        .get(format!("http://{public}/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    running.stop().await;
}

/// `count` requests of `caller` alternating between `/introspect` and `/revoke` (of a token that
/// is not one, which both answer with 200), on the servers in turn; the statuses.
async fn spend(servers: &[&TestServer], caller: &str, count: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for i in 0..count {
        let server = servers[i % servers.len()];
        let path = if i % 2 == 0 { "/introspect" } else { "/revoke" };
        let response = server
            .post_form(path, &[("token", "not-a-token")], &delegation_auth(caller))
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry_after >= 1);
            assert_eq!(body_json(response).await["error"], "slow_down");
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn revoke_and_introspect_spend_the_clients_budget() {
    let mut settings = delegation_settings(&corp());
    settings.limits.token_requests_per_client_per_sec = 3;
    let server = TestServer::spawn(settings).await.unwrap();
    // The burst (one second's worth) is served; beyond it, 429 at either endpoint.
    let statuses = spend(&[&server], "booking-tool", 3).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let revoke = server
        .post_form(
            "/revoke",
            &[("token", "not-a-token")],
            &delegation_auth("booking-tool"),
        )
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(revoke.headers().contains_key("retry-after"));
    // The budget is the client's, across endpoints: /token is spent too.
    let token = server
        .token(&[("grant_type", "x")], &delegation_auth("booking-tool"))
        .await
        .unwrap();
    assert_eq!(token.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another client is not affected.
    let statuses = spend(&[&server], "helper", 3).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn two_nodes_on_one_redis_share_the_budget_at_introspect_and_revoke() {
    let redis = RedisServer::start().await.unwrap();
    let corp = corp();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let mut settings = delegation_settings(&corp);
        settings.store.kind = StoreKind::Redis;
        settings.store.url = Some(StoreUrl::One(redis.url()));
        settings.limits.token_requests_per_client_per_sec = 4;
        nodes.push(TestServer::spawn(settings).await.unwrap());
    }
    let servers = [&nodes[0], &nodes[1]];
    // Four a second across both nodes: the first four (two per node) are served, and of the
    // next eight most are refused, on both nodes.
    let statuses = spend(&servers, "calendar-api", 12).await;
    let (burst, rest) = statuses.split_at(4);
    assert!(burst.iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    let limited: Vec<usize> = rest
        .iter()
        .enumerate()
        .filter(|(_, s)| **s == StatusCode::TOO_MANY_REQUESTS)
        .map(|(i, _)| (i + 4) % 2)
        .collect();
    assert!(limited.len() >= 5, "only {limited:?} limited: {statuses:?}");
    assert!(
        limited.contains(&0) && limited.contains(&1),
        "both nodes refuse once the shared budget is spent: {statuses:?}"
    );
    // Honest traffic under the rate is never refused: 3 a second for two seconds, after the
    // bucket has refilled.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..6 {
        let statuses = spend(&servers, "calendar-api", 1).await;
        assert_eq!(statuses, [StatusCode::OK]);
        tokio::time::sleep(Duration::from_millis(333)).await;
    }
    for node in nodes {
        node.stop().await;
    }
}

#[tokio::test]
async fn header_limits_actix_cannot_honour_are_refused_at_start_up() {
    let mut settings = delegation_settings(&corp());
    settings.limits.max_header_bytes = 100_000;
    let error = AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("limits.max_header_bytes"),
        "{error}"
    );
    let mut settings = delegation_settings(&corp());
    settings.limits.max_header_bytes = mandate_server::config::MAX_HEADER_BYTES_CEILING;
    AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions::default(),
    )
    .await
    .unwrap();
}
