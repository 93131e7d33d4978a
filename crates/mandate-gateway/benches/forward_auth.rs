//! The gateway's cost, measured in one run: nginx proxying to a fixed-answer upstream without
//! auth (the baseline), the same nginx with `auth_request` to mandate-gateway in forward-auth
//! mode (the repository's block, `deploy/gateway/nginx.conf`), the gateway's checks alone, and
//! the gateway in proxy mode. Each is loaded by the same closed-loop generator (reqwest, a fixed
//! number of connections) for the same time; requests/s, p50 and p99, and each against the
//! baseline. The generator, nginx, the gateway and mandate share the machine's cores.
//!
//! ```sh
//! cargo bench -p mandate-gateway --bench forward_auth              # 16 connections, 5 s each
//! cargo bench -p mandate-gateway --bench forward_auth -- 32 10     # connections, seconds
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "a benchmark that prints its figures and fails loudly"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use mandate_testkit::{
    delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey, TestServer, CAL, CORP,
};

struct Figures {
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

/// `connections` loops, each sending its next request when the last is answered, for `secs`.
async fn load(url: &str, token: &str, connections: usize, secs: u64) -> Figures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, token) = (client.clone(), url.to_owned(), token.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let sent = Instant::now();
                let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(
                    response.status().is_success(),
                    "{url}: {}",
                    response.status()
                );
                response.bytes().await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    Figures {
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let connections: usize = args.first().map_or(16, |a| a.parse().unwrap());
    let secs: u64 = args.get(1).map_or(5, |a| a.parse().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(connections, secs));
}

async fn run(connections: usize, secs: u64) {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let issuer = server.issuer().to_owned();
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let token = delegation_issue(&server, &id_token, "id_token", CAL, "assistant")
        .await
        .unwrap();

    // The upstream: a fixed answer, as cheap as an app gets.
    let upstream_port = support::free_port();
    let upstream = HttpServer::new(|| {
        App::new().default_service(web::to(|| async { HttpResponse::Ok().body("ok") }))
    })
    .workers(1)
    .bind(("127.0.0.1", upstream_port))
    .unwrap()
    .run();
    let upstream_handle = upstream.handle();
    tokio::spawn(upstream);

    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("calendar.secret");
    std::fs::write(&secret, "calendar-secret").unwrap();
    let config = |mode: &str, port: u16| {
        format!(
            "listen = \"127.0.0.1:{port}\"\nmode = \"{mode}\"\nissuer = \"{issuer}\"\n\
             upstream = \"http://127.0.0.1:{upstream_port}\"\n\
             [revocation]\nsource = \"feed\"\nurl = \"{issuer}/revocations\"\n\
             client_id = \"calendar-api\"\nclient_secret_file = \"{}\"\n\
             [[routes]]\nprefix = \"/\"\naudience = \"{CAL}\"\n",
            secret.display()
        )
    };
    let (check_port, proxy_port) = (support::free_port(), support::free_port());
    let _check = support::gateway(
        dir.path(),
        "check",
        &config("forward-auth", check_port),
        check_port,
    );
    let _proxy = support::gateway(
        dir.path(),
        "proxy",
        &config("proxy", proxy_port),
        proxy_port,
    );
    let (auth_port, plain_port) = (support::free_port(), support::free_port());
    let plain = format!(
        "server {{\n listen 127.0.0.1:{plain_port};\n location / {{ proxy_pass http://127.0.0.1:{upstream_port}; }}\n}}\n"
    );
    let _nginx = support::nginx_with(
        dir.path(),
        auth_port,
        &format!("127.0.0.1:{check_port}"),
        &format!("127.0.0.1:{upstream_port}"),
        &plain,
    );
    support::wait_for_port(plain_port, "nginx (plain)");

    println!(
        "mandate-gateway, {connections} connections, {secs} s each (generator, nginx, gateway and mandate on one machine)\n"
    );
    println!("| path | requests/s | p50 | p99 | requests/s vs baseline | added p50 |");
    println!("|---|---|---|---|---|---|");
    let cases = [
        ("nginx → upstream, no auth (baseline)", plain_port),
        ("nginx auth_request → gateway, → upstream", auth_port),
        ("gateway forward-auth checks alone", check_port),
        ("gateway proxy mode → upstream", proxy_port),
    ];
    let mut baseline: Option<Figures> = None;
    for (name, port) in cases {
        let url = format!("http://127.0.0.1:{port}/events");
        // A short warm-up, so connections and caches are in place.
        load(&url, &token, connections, 1).await;
        let figures = load(&url, &token, connections, secs).await;
        let (ratio, added) = match &baseline {
            Some(base) => (
                format!("{:.2}", figures.per_sec / base.per_sec),
                format!("+{}", ms(figures.p50.saturating_sub(base.p50))),
            ),
            None => ("1.00".to_owned(), "—".to_owned()),
        };
        println!(
            "| {name} | {:.0} | {} | {} | {ratio} | {added} |",
            figures.per_sec,
            ms(figures.p50),
            ms(figures.p99)
        );
        if baseline.is_none() {
            baseline = Some(figures);
        }
    }
    upstream_handle.stop(true).await;
    server.stop().await;
}
