//! Redis killed under a steady exchange load (issue 9, item 5).
//!
//! A mandate node on a private Redis (AOF, `appendfsync always`) serves a steady exchange load
//! from several tasks (each round: an ID token exchanged for a hand-off to `booking-tool`, which
//! the booking tool exchanges for a calendar token) while a revoker revokes earlier tokens, half
//! through RFC 7009 `/revoke` and half through the admin API. Redis is killed (SIGKILL) and, after
//! a while, started again on the same data directory, with the load and the revocations kept on
//! throughout. Afterwards:
//!
//! - every token the load received has its hop in the ledger (and in the admin chain tree);
//! - while Redis was down nothing was issued and every refusal was 503;
//! - no token whose revocation was answered 200 (before, during or after the outage), nor any
//!   token derived from it, is accepted by a verifier in `Direct` mode or by `/introspect`,
//!   while the other tokens still are;
//! - a successful exchange was served within 2 s of Redis accepting connections again.
//!
//! The short form (CI) runs the load for 15 s (5 s before the outage, 5 s down, 5 s after).
//! `MANDATE_FAULT_SECS=300 cargo test -p mandate-server --test fault -- --nocapture` runs a long
//! form (a third each); the figures are printed either way (docs/OPERATIONS.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, claims_of, delegation_auth, delegation_exchange, delegation_settings,
    id_token_claims, KeyKind, TestKey, TestServer, ADMIN_OPS, CAL, CORP,
};
use mandate_verify::{Direct, Verifier, VerifyError};
use reqwest::StatusCode;

/// How many tasks keep the load on.
const LOAD_TASKS: usize = 4;
/// How often the revoker revokes a token.
const REVOKE_EVERY: Duration = Duration::from_millis(200);
/// Tokens younger than this are not revoked (the load exchanges a hand-off at once; revoking it
/// first would make that exchange a legitimate 400).
const REVOKE_MIN_AGE: Duration = Duration::from_millis(500);
/// The recovery-time contract of issue 9.
const RECOVERY_BOUND: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `agent:booking-tool`, requested by the assistant.
    HandOff,
    /// The calendar token the booking tool derived from a hand-off.
    App,
}

#[derive(Debug, Clone)]
struct Issued {
    token: String,
    jti: String,
    chain: String,
    ancestors: Vec<String>,
    kind: Kind,
    at: Instant,
}

#[derive(Debug, Default)]
struct Record {
    issued: Vec<Issued>,
    /// Every load request: when it was answered and how.
    answers: Vec<(Instant, StatusCode)>,
    /// Every revocation: the hop, how it was asked for, when it was answered and how.
    revocations: Vec<(String, &'static str, Instant, StatusCode)>,
}

fn fault_secs() -> u64 {
    std::env::var("MANDATE_FAULT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|secs| *secs >= 6)
        .unwrap_or(15)
}

async fn load(
    server: Arc<TestServer>,
    corp: Arc<TestKey>,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let grant = corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let Some(handoff) = exchange(
            &server,
            &record,
            &grant,
            "id_token",
            "agent:booking-tool",
            "assistant",
            Kind::HandOff,
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if exchange(
            &server,
            &record,
            &handoff,
            "access_token",
            CAL,
            "booking-tool",
            Kind::App,
        )
        .await
        .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// One exchange of the load: recorded, and the token when one was issued.
async fn exchange(
    server: &TestServer,
    record: &Mutex<Record>,
    token: &str,
    kind_of_subject: &str,
    audience: &str,
    client: &str,
    kind: Kind,
) -> Option<String> {
    let outcome = delegation_exchange(server, token, kind_of_subject, audience, client).await;
    let at = Instant::now();
    let (status, body) = match outcome {
        Ok(answer) => answer,
        // The node itself never goes away; a transport error would be a finding.
        Err(error) => panic!("the node did not answer: {error:#}"),
    };
    let mut record = record.lock().unwrap();
    record.answers.push((at, status));
    if status != StatusCode::OK {
        return None;
    }
    let issued = body["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&issued);
    record.issued.push(Issued {
        token: issued.clone(),
        jti: claims["jti"].as_str().unwrap().to_owned(),
        chain: claims["chain_id"].as_str().unwrap().to_owned(),
        ancestors: claims["ancestors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        kind,
        at,
    });
    Some(issued)
}

/// Revokes, every [`REVOKE_EVERY`], the newest token old enough that is not revoked yet: app
/// tokens through `/revoke` by the booking tool (their `client_id`), hand-offs through the admin
/// API.
async fn revoker(server: Arc<TestServer>, record: Arc<Mutex<Record>>, stop: Arc<AtomicBool>) {
    let mut asked: HashSet<String> = HashSet::new();
    let mut next_kind = Kind::App;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(REVOKE_EVERY).await;
        let target = {
            let record = record.lock().unwrap();
            record
                .issued
                .iter()
                .rev()
                .find(|i| {
                    i.kind == next_kind
                        && i.at.elapsed() >= REVOKE_MIN_AGE
                        && !asked.contains(&i.jti)
                })
                .cloned()
        };
        let Some(target) = target else { continue };
        asked.insert(target.jti.clone());
        let (how, response) = match target.kind {
            Kind::App => (
                "rfc7009",
                server
                    .post_form(
                        "/revoke",
                        &[("token", target.token.as_str())],
                        &delegation_auth("booking-tool"),
                    )
                    .await
                    .map_err(|e| e.to_string()),
            ),
            Kind::HandOff => (
                "admin",
                server
                    .http
                    .post(server.admin_url(&format!("/admin/hops/{}/revoke", target.jti)))
                    .bearer_auth(ADMIN_OPS)
                    .send()
                    .await
                    .map_err(|e| e.to_string()),
            ),
        };
        let status = response.expect("the node answers").status();
        record
            .lock()
            .unwrap()
            .revocations
            .push((target.jti, how, Instant::now(), status));
        next_kind = match next_kind {
            Kind::App => Kind::HandOff,
            Kind::HandOff => Kind::App,
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_loses_nothing_and_recovers_within_two_seconds() {
    let phase = Duration::from_secs(fault_secs() / 3);
    let mut redis = RedisServer::start().await.unwrap();
    let corp = Arc::new(TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap());
    let mut settings = delegation_settings(&corp);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    settings.limits.token_requests_per_client_per_sec = 0;
    let server = Arc::new(TestServer::spawn(settings).await.unwrap());

    let record = Arc::new(Mutex::new(Record::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..LOAD_TASKS {
        tasks.push(tokio::spawn(load(
            server.clone(),
            corp.clone(),
            record.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(revoker(
        server.clone(),
        record.clone(),
        stop.clone(),
    )));

    tokio::time::sleep(phase).await;
    redis.kill();
    let killed = Instant::now();
    tokio::time::sleep(phase).await;
    let restarting = Instant::now();
    redis.restart().await.unwrap();
    // `restart` returns once the server answers PING: it accepts connections from here on.
    let back = Instant::now();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let record = std::mem::take(&mut *record.lock().unwrap());

    // --- Figures.
    let phase_of = |at: Instant| {
        if at < killed {
            "before"
        } else if at < back {
            "outage"
        } else {
            "after"
        }
    };
    let mut counts: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for (at, status) in &record.answers {
        *counts.entry((phase_of(*at), status.as_u16())).or_default() += 1;
    }
    let first_after = record
        .issued
        .iter()
        .filter(|i| i.at >= back)
        .map(|i| i.at)
        .min()
        .expect("nothing was issued after Redis came back");
    let recovery = first_after - back;
    let during_restart = record
        .revocations
        .iter()
        .filter(|r| r.3 == StatusCode::OK && r.2 >= restarting && r.2 < back)
        .count();
    println!("fault: {during_restart} revocations written between the restart and Redis answering the test's PING");
    let revoked_ok: Vec<&(String, &str, Instant, StatusCode)> = record
        .revocations
        .iter()
        .filter(|r| r.3 == StatusCode::OK)
        .collect();
    println!(
        "fault: load {:?} ({LOAD_TASKS} tasks): {:?} before the kill, Redis down {:?} \
         (its restart took {:?}), {:?} after",
        stopped - started,
        killed - started,
        back - killed,
        back - restarting,
        stopped - back
    );
    println!("fault: answers by phase and status: {counts:?}");
    let mut revocation_counts: BTreeMap<(&str, &str, u16), usize> = BTreeMap::new();
    for (_, how, at, status) in &record.revocations {
        *revocation_counts
            .entry((phase_of(*at), how, status.as_u16()))
            .or_default() += 1;
    }
    println!(
        "fault: {} tokens issued; revocations by phase, route and status: {revocation_counts:?}",
        record.issued.len(),
    );
    println!(
        "fault: first exchange served {} ms after Redis accepted connections again",
        recovery.as_millis()
    );
    println!(
        "fault: {} tokens issued between the restart and Redis answering the test's PING",
        record
            .issued
            .iter()
            .filter(|i| i.at >= restarting && i.at < back)
            .count()
    );

    // --- While Redis was down: nothing issued (a second of grace for requests in flight at the
    // kill), and every refusal, then and at any time, a 503. Down means until the restart began:
    // the new server accepts connections some milliseconds before `restart` has polled it
    // ready, and a node that reconnects at once may serve in between.
    let grace = killed + Duration::from_secs(1);
    assert!(
        !record
            .issued
            .iter()
            .any(|i| i.at > grace && i.at < restarting),
        "a token was issued while Redis was down"
    );
    assert!(
        counts.get(&("outage", 503)).copied().unwrap_or(0) > 0,
        "no request was refused during the outage: {counts:?}"
    );
    assert!(
        counts
            .keys()
            .all(|(_, status)| *status == 200 || *status == 503),
        "answers other than 200 and 503: {counts:?}"
    );
    assert!(counts.contains_key(&("before", 200)) && counts.contains_key(&("after", 200)));
    // A revocation is answered 200 only once written: never while Redis is down. Down ends when
    // its restart begins, as for issuance above: the restarted server accepts writes a few
    // milliseconds before the test has polled it ready, and a revocation waiting on its
    // connection is written then.
    assert!(
        !record
            .revocations
            .iter()
            .any(|r| r.3 == StatusCode::OK && r.2 > grace && r.2 < restarting),
        "a revocation was answered 200 while Redis was down: {:?}",
        record
            .revocations
            .iter()
            .filter(|r| r.3 == StatusCode::OK && r.2 > killed && r.2 < back)
            .map(|r| (
                r.1,
                r.2.duration_since(killed),
                restarting.duration_since(killed)
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        revocation_counts
            .keys()
            .all(|(_, _, status)| *status == 200 || *status == 503),
        "revocations answered other than 200 and 503: {revocation_counts:?}"
    );

    // --- Recovery.
    assert!(
        recovery < RECOVERY_BOUND,
        "the first exchange after Redis came back took {recovery:?}"
    );

    // --- Every issued token has its hop in the ledger.
    let state = &server.state;
    for issued in &record.issued {
        let hop = state
            .ledger
            .hop(&mandate_chain::HopId(issued.jti.clone()))
            .await
            .unwrap();
        assert!(hop.is_some(), "no ledger entry for an issued token");
    }
    // ... and in the admin chain tree (a sample: the chains of the revoked hops and a few more).
    let mut chains: Vec<&Issued> = record
        .issued
        .iter()
        .filter(|i| revoked_ok.iter().any(|r| r.0 == i.jti))
        .take(10)
        .collect();
    chains.extend(record.issued.iter().step_by(record.issued.len() / 10 + 1));
    for issued in chains {
        let response = server
            .admin_get(
                &format!("/admin/chains/{}", issued.chain),
                Some(mandate_testkit::ADMIN_READER),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let tree = body_json(response).await.to_string();
        assert!(
            tree.contains(&issued.jti),
            "hop missing from its chain tree"
        );
    }

    // --- Revocations answered 200 hold: for the token, and for every token derived from it.
    let revoked: HashSet<&str> = revoked_ok.iter().map(|r| r.0.as_str()).collect();
    assert!(!revoked.is_empty(), "no revocation succeeded");
    let is_revoked = |i: &Issued| {
        revoked.contains(i.jti.as_str()) || i.ancestors.iter().any(|a| revoked.contains(a.as_str()))
    };
    let jwks = server.get_json("/jwks").await.unwrap();
    let verifier = Verifier::builder(server.issuer(), CAL)
        .jwks(jwks)
        .revocation(Arc::new(Direct::redis(&redis.url()).await.unwrap()))
        .build()
        .await
        .unwrap();
    let mut refused = 0;
    let mut accepted = 0;
    for issued in record.issued.iter().filter(|i| i.kind == Kind::App) {
        let revoked = is_revoked(issued);
        // Every revoked app token, and a sample of the others.
        if !revoked && accepted >= 200 {
            continue;
        }
        match verifier.verify(&issued.token).await {
            Ok(_) if revoked => panic!("a revoked token was accepted by the verifier"),
            Ok(_) => accepted += 1,
            Err(VerifyError::Revoked { .. }) if revoked => refused += 1,
            Err(error) => panic!("unexpected verdict ({error}) for a token revoked: {revoked}"),
        }
    }
    let mut introspected = 0;
    for issued in record.issued.iter().filter(|i| is_revoked(i)) {
        let caller = match issued.kind {
            Kind::App => "calendar-api",
            Kind::HandOff => "assistant",
        };
        let response = server
            .post_form(
                "/introspect",
                &[("token", issued.token.as_str())],
                &delegation_auth(caller),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"active": false}),
            "a revoked token is active at /introspect"
        );
        introspected += 1;
    }
    // A live token of each kind is still active (the refusals above are not the node refusing
    // everything).
    for kind in [Kind::App, Kind::HandOff] {
        let live = record
            .issued
            .iter()
            .rev()
            .find(|i| i.kind == kind && !is_revoked(i))
            .expect("a live token");
        let caller = if kind == Kind::App {
            "calendar-api"
        } else {
            "assistant"
        };
        let response = server
            .post_form(
                "/introspect",
                &[("token", live.token.as_str())],
                &delegation_auth(caller),
            )
            .await
            .unwrap();
        assert_eq!(body_json(response).await["active"], true);
    }
    println!(
        "fault: verifier refused {refused} revoked app tokens and accepted {accepted} live ones; \
         {introspected} revoked tokens inactive at /introspect"
    );
    assert!(refused > 0 && accepted > 0);

    Arc::try_unwrap(server).unwrap().stop().await;
}
