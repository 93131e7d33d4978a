//! Soak (issue 9, item 5): the real `mandate serve --config` binary on a private Redis, driven at
//! saturation by concurrent clients (each round: an ID token exchanged for a hand-off, the hand-off
//! exchanged for a calendar token, that token introspected; every 25th round also revokes it),
//! while its resident memory (`VmRSS`) is sampled every second.
//!
//! The short form (CI, 10 s) checks that every answer is a success and that RSS stays under a
//! generous sanity bound. The long form, `MANDATE_SOAK_SECS=300 cargo test --release --test soak
//! -- --nocapture`, also asserts that memory is flat (the end within 25 % + 8 MiB of the middle)
//! and prints the figures recorded in docs/OPERATIONS.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::collections::BTreeMap;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_model::SecretHash;
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{id_token_claims, KeyKind, TestKey, CAL, CORP};
use reqwest::StatusCode;

/// Concurrent clients.
const CLIENTS: usize = 8;
/// RSS the short form must stay under, whatever the build.
const SANITY_BOUND_KIB: u64 = 512 * 1024;
/// The issuer of the soaked node (https, as a node on Redis requires).
const ISSUER: &str = "https://mandate.soak.example";

fn soak_secs() -> u64 {
    std::env::var("MANDATE_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|secs| *secs >= 5)
        .unwrap_or(10)
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// A deployment-shaped configuration: Redis store, persistent keys, admin credentials, the
/// delegation world of the test kit, and no rate limit (saturation is the point).
fn config(dir: &Path, redis: &RedisServer, corp: &TestKey) -> std::path::PathBuf {
    let key = dir.join("signing.pem");
    std::fs::write(
        &key,
        &*mandate_token::SigningKey::generate_pem(mandate_token::SigningAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let chain_key = dir.join("chain-id.key");
    std::fs::write(&chain_key, [42u8; 32]).unwrap();
    let jwks = dir.join("corp.jwks.json");
    std::fs::write(&jwks, corp.jwks().to_string()).unwrap();
    let client = |id: &str, kind: &str, secret: &str, extra: &str| {
        format!(
            "[[clients]]\nclient_id = \"{id}\"\nkind = \"{kind}\"\nowners = [\"ops@example.com\"]\n\
             auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n{extra}\n",
            SecretHash::of(secret)
        )
    };
    let text = format!(
        "issuer = \"{ISSUER}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\n\n\
         [signing]\nkey_file = {}\n\n\
         [tokens]\nchain_id_key_file = {}\n\n\
         [limits]\ntoken_requests_per_client_per_sec = 0\n\n\
         [[admin.credentials]]\nname = \"soak\"\nrole = \"read\"\nsecret_hash = \"{}\"\n\n\
         [[trusted_issuers]]\nissuer = \"{CORP}\"\nalias = \"corp\"\njwks_file = {}\n\
         algorithms = [\"ES256\"]\n\n{}{}{}\
         [[policies]]\nactor = \"assistant\"\naudience = \"agent:booking-tool\"\n\
         scopes = [\"calendar.read\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n\n\
         [[policies]]\nactor = \"booking-tool\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n",
        redis.url(),
        toml_path(&key),
        toml_path(&chain_key),
        SecretHash::of("soak-admin-secret-0123456789abcdefgh"),
        toml_path(&jwks),
        client("assistant", "agent", "assistant-secret", ""),
        client("booking-tool", "agent", "booking-secret", ""),
        client(
            "calendar-api",
            "resource_server",
            "calendar-secret",
            &format!("audiences = [\"{CAL}\"]\n")
        ),
    );
    let path = dir.join("mandate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The running binary; killed when dropped.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mandate"))
            .env_remove("MANDATE_LOG")
            .args(["serve", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let address = serve::listening_address(&mut child);
        Self {
            child,
            base: format!("http://{address}"),
        }
    }

    /// Resident memory, KiB (`VmRSS` of /proc/<pid>/status).
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default)]
struct Tally {
    statuses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    rounds: AtomicU64,
}

impl Tally {
    fn count(&self, what: &'static str, status: StatusCode) {
        *self
            .statuses
            .lock()
            .unwrap()
            .entry((what, status.as_u16()))
            .or_default() += 1;
    }
}

async fn post(
    http: &reqwest::Client,
    url: String,
    client: (&str, &str),
    form: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let response = http
        .post(url)
        .basic_auth(client.0, Some(client.1))
        .form(form)
        .send()
        .await
        .expect("the node answers");
    let status = response.status();
    (status, response.json().await.unwrap_or_default())
}

const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

async fn client_loop(base: String, corp: Arc<TestKey>, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let http = reqwest::Client::new();
    let assistant = ("assistant", "assistant-secret");
    let booking = ("booking-tool", "booking-secret");
    let calendar = ("calendar-api", "calendar-secret");
    while !stop.load(Ordering::Relaxed) {
        let round = tally.rounds.fetch_add(1, Ordering::Relaxed);
        let grant = corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let (status, body) = post(
            &http,
            format!("{base}/token"),
            assistant,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", &grant),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:id_token",
                ),
                ("audience", "agent:booking-tool"),
            ],
        )
        .await;
        tally.count("exchange", status);
        let Some(handoff) = body["access_token"].as_str() else {
            continue;
        };
        let (status, body) = post(
            &http,
            format!("{base}/token"),
            booking,
            &[
                ("grant_type", EXCHANGE),
                ("subject_token", handoff),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("audience", CAL),
            ],
        )
        .await;
        tally.count("exchange", status);
        let Some(app) = body["access_token"].as_str() else {
            continue;
        };
        let (status, body) = post(
            &http,
            format!("{base}/introspect"),
            calendar,
            &[("token", app)],
        )
        .await;
        tally.count("introspect", status);
        assert_eq!(body["active"], true, "a fresh token is inactive");
        if round % 25 == 0 {
            let (status, _) =
                post(&http, format!("{base}/revoke"), booking, &[("token", app)]).await;
            tally.count("revoke", status);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_flat_at_saturation() {
    let secs = soak_secs();
    let redis = RedisServer::start().await.unwrap();
    let corp = Arc::new(TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&config(dir.path(), &redis, &corp));
    let idle = served.rss_kib();

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            tokio::spawn(client_loop(
                served.base.clone(),
                corp.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, u64)> = Vec::new();
    for second in 1..=secs {
        tokio::time::sleep_until((started + Duration::from_secs(second)).into()).await;
        samples.push((
            second,
            served.rss_kib(),
            tally.rounds.load(Ordering::Relaxed),
        ));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed();

    let statuses = tally.statuses.lock().unwrap().clone();
    let rounds = tally.rounds.load(Ordering::Relaxed);
    // Start: after a tenth of the run (at least 2 s), once pools, caches and allocator arenas
    // have warmed up; middle; end.
    let at = |second: u64| {
        samples
            .iter()
            .find(|(s, _, _)| *s >= second)
            .map(|(_, rss, _)| *rss)
            .unwrap()
    };
    let (start, middle, end) = (at((secs / 10).max(2)), at(secs / 2), at(secs));
    let peak = samples.iter().map(|(_, rss, _)| *rss).max().unwrap();
    let requests: u64 = statuses.values().sum();
    println!(
        "soak: {secs} s, {CLIENTS} clients, {rounds} rounds, {requests} requests ({:.0}/s)",
        requests as f64 / elapsed.as_secs_f64()
    );
    println!("soak: answers {statuses:?}");
    println!(
        "soak: RSS idle {idle} KiB, start {start} KiB, middle {middle} KiB, end {end} KiB, \
         peak {peak} KiB"
    );
    let every = (secs / 10).max(1);
    let trace: Vec<String> = samples
        .iter()
        .filter(|(s, _, _)| s % every == 0)
        .map(|(s, rss, rounds)| format!("{s}s:{rss}KiB/{rounds}r"))
        .collect();
    println!("soak: samples {}", trace.join(" "));

    assert!(
        statuses.keys().all(|(_, status)| *status == 200),
        "answers other than 200 at saturation: {statuses:?}"
    );
    assert!(rounds > 0);
    assert!(peak < SANITY_BOUND_KIB, "RSS {peak} KiB");
    if secs >= 120 {
        assert!(
            end <= middle + middle / 4 + 8 * 1024,
            "memory grew from {middle} KiB to {end} KiB in the second half"
        );
    }
    // The node is still healthy and consistent afterwards.
    let health = reqwest::get(format!("{}/healthz", served.base))
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
