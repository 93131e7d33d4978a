//! Revocation latency to a Shared Signals push receiver: from the admin revocation's 200 to the
//! SET's arrival at a receiver on loopback, p50 and p99, next to the admin revocation's own round
//! trip measured in the same run (the baseline). Memory store, then Redis (a private
//! `redis-server`, `appendfsync always`).
//!
//! ```sh
//! cargo bench -p mandate-server --bench ssf_push            # 200 revocations per store
//! cargo bench -p mandate-server --bench ssf_push -- 500     # another count
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark that prints its figures and fails loudly"
)]

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::{
    claims_of, delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS, CAL, CORP,
};
use serde_json::json;
use tokio::sync::mpsc;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

async fn measure(store: &str, rounds: usize, redis: Option<&mandate_testkit::redis::RedisServer>) {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.limits.token_requests_per_client_per_sec = 0;
    if let Some(redis) = redis {
        settings.store.kind = StoreKind::Redis;
        settings.store.url = Some(StoreUrl::One(redis.url()));
    }
    let server = TestServer::spawn(settings).await.unwrap();

    let (arrived, mut arrivals) = mpsc::unbounded_channel::<Instant>();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let receiver = HttpServer::new(move || {
        let arrived = arrived.clone();
        App::new().route(
            "/ssf",
            web::post().to(move || {
                let arrived = arrived.clone();
                async move {
                    let _ = arrived.send(Instant::now());
                    HttpResponse::Accepted().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let receiver_handle = receiver.handle();
    tokio::spawn(receiver);
    let created = server
        .http
        .post(server.url("/ssf/streams"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&json!({
            "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": format!("http://127.0.0.1:{port}/ssf")},
            "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let (mut round_trips, mut latencies) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let token = delegation_issue(&server, &id_token, "id_token", CAL, "assistant")
            .await
            .unwrap();
        let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
        let sent = Instant::now();
        let answer = server
            .http
            .post(server.admin_url(&format!("/admin/hops/{jti}/revoke")))
            .bearer_auth(ADMIN_OPS)
            .json(&json!({"reason": "bench"}))
            .send()
            .await
            .unwrap();
        let answered = Instant::now();
        assert_eq!(answer.status(), 200);
        let arrival = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("the SET arrives")
            .unwrap();
        round_trips.push(answered - sent);
        latencies.push(arrival.saturating_duration_since(answered));
    }
    round_trips.sort();
    latencies.sort();
    let (rtt50, lat50) = (percentile(&round_trips, 0.5), percentile(&latencies, 0.5));
    println!(
        "{store:6} {rounds} revocations | admin revocation round trip p50 {} p99 {} | 200 → receiver p50 {} p99 {} | p50 ratio {:.2}",
        ms(rtt50),
        ms(percentile(&round_trips, 0.99)),
        ms(lat50),
        ms(percentile(&latencies, 0.99)),
        lat50.as_secs_f64() / rtt50.as_secs_f64(),
    );
    receiver_handle.stop(true).await;
    server.stop().await;
}

fn main() {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        measure("memory", rounds, None).await;
        let redis = mandate_testkit::redis::RedisServer::start().await.unwrap();
        measure("redis", rounds, Some(&redis)).await;
    });
}
