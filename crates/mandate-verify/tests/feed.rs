//! `Feed` mode against a real mandate over HTTP (the test kit's in-process server): the app
//! reads `GET /revocations` as the resource server `calendar-api`; a revocation made at mandate
//! is enforced within the staleness bound; the feed reconnects and resumes without missing a
//! revocation made while it was away; it fails closed when mandate stops; and it refuses to start
//! with credentials mandate refuses. Once on the memory store, once on a private Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_testkit::{
    claims_of, delegation_settings, id_token_claims, KeyKind, TestKey, TestServer, ADMIN_OPS, CAL,
    CORP,
};
use mandate_verify::{Feed, FeedConfig, RevocationKind, VerifiedToken, Verifier, VerifyError};
use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};

const CONFIG: FeedConfig = FeedConfig {
    staleness_bound: Duration::from_millis(2500),
    reconnect_delay: Duration::from_millis(200),
};

/// The assistant hands work to the booking tool, which exchanges the hand-off for a calendar
/// token. Returns (hand-off, calendar token).
async fn handoff_chain(server: &TestServer, corp: &TestKey) -> (String, String) {
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let handoff = issue(
        server,
        &id_token,
        "id_token",
        "agent:booking-tool",
        "assistant",
    )
    .await;
    let calendar = issue(server, &handoff, "access_token", CAL, "booking-tool").await;
    (handoff, calendar)
}

async fn admin_revoke(server: &TestServer, path: &str) {
    let response = server
        .http
        .post(server.admin_url(path))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

fn jti(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

async fn connect(url: &str) -> Feed {
    let feed = Feed::connect(url, "calendar-api", "calendar-secret", CONFIG)
        .await
        .unwrap();
    assert!(feed.ready(Duration::from_secs(5)).await, "no snapshot");
    feed
}

async fn verifier(server: &TestServer, feed: &Feed) -> Verifier {
    Verifier::builder(server.issuer(), CAL)
        .discover()
        .revocation(Arc::new(feed.clone()))
        .build()
        .await
        .unwrap()
}

/// Polls `verify` until `done` holds for its result, failing after `within`.
async fn poll_until(
    verifier: &Verifier,
    token: &str,
    within: Duration,
    done: impl Fn(&Result<VerifiedToken, VerifyError>) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let result = verifier.verify(token).await;
        if done(&result) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "not within {within:?}: {result:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn revoked_hop(jti: String) -> impl Fn(&Result<VerifiedToken, VerifyError>) -> bool {
    move |result| matches!(result, Err(VerifyError::Revoked { kind: RevocationKind::Hop, id }) if *id == jti)
}

fn unavailable(result: &Result<VerifiedToken, VerifyError>) -> bool {
    matches!(result, Err(VerifyError::RevocationUnavailable(_)))
}

/// Stops the server once the feeds closed by the test are gone from it (it notices at its next
/// write to them, a heartbeat; an open feed would hold the graceful shutdown for its timeout).
async fn stop(server: TestServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mandate_server::feed::open_feeds(&server.state) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn revocations_are_enforced_within_the_bound_and_a_stopped_mandate_fails_closed() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let feed = connect(&server.url("/revocations")).await;
    let verifier = verifier(&server, &feed).await;

    let (handoff, calendar) = handoff_chain(&server, &corp).await;
    // The first heartbeat makes the copy fresh.
    poll_until(&verifier, &calendar, Duration::from_secs(5), Result::is_ok).await;

    // An admin revocation reaches the app within the bound.
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&calendar))).await;
    poll_until(
        &verifier,
        &calendar,
        CONFIG.staleness_bound,
        revoked_hop(jti(&calendar)),
    )
    .await;
    // So does one of an ancestor, for everything below it.
    let mail = issue(&server, &handoff, "access_token", CAL, "booking-tool").await;
    verifier.verify(&mail).await.unwrap();
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&handoff))).await;
    poll_until(
        &verifier,
        &mail,
        CONFIG.staleness_bound,
        revoked_hop(jti(&handoff)),
    )
    .await;
    let stats = feed.stats();
    assert_eq!((stats.snapshots, stats.connections), (1, 1), "{stats:?}");
    assert!(stats.entries >= 2, "{stats:?}");

    // mandate stops: its heartbeats end, and once the newest is older than the bound nothing
    // verifies — not even a token that was never revoked.
    let (_, live) = handoff_chain(&server, &corp).await;
    verifier.verify(&live).await.unwrap();
    let stopping = tokio::spawn(server.stop());
    poll_until(
        &verifier,
        &live,
        CONFIG.staleness_bound + Duration::from_secs(5),
        unavailable,
    )
    .await;
    // The stream it had open is cut at the end of mandate's graceful shutdown; the feed cannot
    // reconnect, and verifications stay refused.
    stopping.await.unwrap();
    tokio::time::sleep(CONFIG.reconnect_delay * 2).await;
    assert!(unavailable(&verifier.verify(&live).await));
    assert!(feed.stats().errors >= 1);
}

#[tokio::test]
async fn credentials_mandate_refuses_are_refused_at_connect() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let url = server.url("/revocations");
    let refused = |result: Result<Feed, VerifyError>, expected: &str| match result {
        Err(VerifyError::RevocationUnavailable(message)) => {
            assert!(message.contains(expected), "{message}");
        }
        other => panic!("{other:?}"),
    };
    refused(
        Feed::connect(&url, "calendar-api", "wrong", CONFIG).await,
        "401",
    );
    refused(
        Feed::connect(&url, "assistant", "assistant-secret", CONFIG).await,
        "403",
    );
    refused(
        Feed::connect(
            "http://mandate.example.com/revocations",
            "calendar-api",
            "calendar-secret",
            CONFIG,
        )
        .await,
        "https",
    );
    refused(
        Feed::connect(
            &server.url("/nowhere"),
            "calendar-api",
            "calendar-secret",
            CONFIG,
        )
        .await,
        "404",
    );
    server.stop().await;
}

/// A TCP proxy in front of mandate that can cut the connections through it and refuse new ones.
struct Proxy {
    addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (refuse, held) = (refusing.clone(), connections.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let relay = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                held.lock().unwrap().push(relay.abort_handle());
            }
        });
        Self {
            addr,
            refusing,
            connections,
            accepting,
        }
    }

    /// Cuts every connection and refuses new ones until [`Self::restore`].
    fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

#[tokio::test]
async fn the_feed_reconnects_and_resumes_without_missing_a_revocation() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let upstream: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let feed = connect(&format!("http://{}/revocations", proxy.addr)).await;
    let verifier = verifier(&server, &feed).await;
    let (_, calendar) = handoff_chain(&server, &corp).await;
    let (_, other) = handoff_chain(&server, &corp).await;
    poll_until(&verifier, &calendar, Duration::from_secs(5), Result::is_ok).await;
    let before = feed.stats();

    // The connection drops; a revocation is made while the app is away.
    proxy.cut();
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&calendar))).await;
    proxy.restore();

    // The feed reconnects from where it was and gets it; no new snapshot was needed.
    poll_until(
        &verifier,
        &calendar,
        Duration::from_secs(15),
        revoked_hop(jti(&calendar)),
    )
    .await;
    poll_until(&verifier, &other, Duration::from_secs(5), Result::is_ok).await;
    let after = feed.stats();
    assert!(after.connections > before.connections, "{after:?}");
    assert!(after.errors > before.errors, "{after:?}");
    assert_eq!(
        after.snapshots, 1,
        "resumed with ?from=, not re-snapshotted: {after:?}"
    );
    feed.stop();
    drop(proxy);
    stop(server).await;
}

#[tokio::test]
async fn the_feed_of_a_redis_backed_mandate() {
    use mandate_server::config::{StoreKind, StoreUrl};
    use mandate_testkit::redis::RedisServer;

    let redis = RedisServer::start().await.unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let server = TestServer::spawn(settings).await.unwrap();
    // A revocation made before the app starts is in its snapshot.
    let (_, earlier) = handoff_chain(&server, &corp).await;
    admin_revoke(&server, &format!("/admin/hops/{}/revoke", jti(&earlier))).await;

    let feed = connect(&server.url("/revocations")).await;
    let verifier = verifier(&server, &feed).await;
    let (handoff, calendar) = handoff_chain(&server, &corp).await;
    poll_until(&verifier, &calendar, Duration::from_secs(5), Result::is_ok).await;
    assert_eq!(
        verifier.verify(&earlier).await.unwrap_err(),
        VerifyError::Revoked {
            kind: RevocationKind::Hop,
            id: jti(&earlier)
        }
    );

    // A chain revocation, made through mandate's Redis, reaches the app within the bound.
    let chain = claims_of(&handoff)["chain_id"].as_str().unwrap().to_owned();
    admin_revoke(&server, &format!("/admin/chains/{chain}/revoke")).await;
    poll_until(&verifier, &calendar, CONFIG.staleness_bound, |result| {
        matches!(result, Err(VerifyError::Revoked { kind: RevocationKind::Chain, id }) if *id == chain)
    })
    .await;
    feed.stop();
    stop(server).await;
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
