//! What DPoP costs an exchange (docs/BENCHMARKS.md, "DPoP"): the token-exchange domain function
//! on the memory store, without and with a DPoP proof (checked, its `jti` spent, the token and
//! hop bound), in alternating rounds of the same run, printing each round and the ratio. Proofs
//! are made before the clock starts: their signature is the agent's cost, not mandate's.
//!
//! ```sh
//! cargo bench -p mandate-server --bench dpop
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program"
)]

use std::time::{Duration, Instant};

use mandate_core::grants::{AccessTokenRequest, SubjectTokenType};
use mandate_model::{Audience, ScopeSet};
use mandate_server::client_auth::PresentedCredentials;
use mandate_server::{AppState, BuildOptions, ConfigSource};
use mandate_testkit::{delegation_settings, id_token_claims, KeyKind, TestKey, CAL, CORP};
use mandate_token::{SigningAlgorithm, SigningKey};
use serde_json::json;

const PER_ROUND: usize = 2_000;
const ROUNDS: usize = 3;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.limits.token_requests_per_client_per_sec = 0;
    let token_endpoint = settings.token_endpoint();
    let state = runtime
        .block_on(AppState::build(
            settings,
            ConfigSource::Programmatic,
            BuildOptions::default(),
        ))
        .unwrap();
    let client = runtime
        .block_on(
            state
                .authenticator
                .authenticate(&PresentedCredentials::Basic {
                    client_id: "assistant".into(),
                    secret: "assistant-secret".into(),
                }),
        )
        .unwrap();
    let subjects: Vec<String> = (0..500)
        .map(|i| {
            corp.sign(
                None,
                &id_token_claims(CORP, &format!("user-{i}"), "assistant"),
            )
            .unwrap()
        })
        .collect();
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let request = |i: usize, dpop: Option<String>| AccessTokenRequest {
        subject_token: subjects[i % subjects.len()].clone(),
        subject_token_type: SubjectTokenType::IdToken,
        target: Audience::parse(CAL).unwrap(),
        scope: Some(ScopeSet::parse("calendar.read").unwrap()),
        details: None,
        dpop,
    };
    let mut serial = 0usize;
    let mut round = |with_dpop: bool| -> Duration {
        let requests: Vec<AccessTokenRequest> = (0..PER_ROUND)
            .map(|i| {
                serial += 1;
                let proof = with_dpop.then(|| {
                    key.sign_dpop_proof(&json!({"jti": format!("bench-{serial}"), "htm": "POST",
                        "htu": token_endpoint, "iat": mandate_testkit::now()}))
                        .unwrap()
                });
                request(i, proof)
            })
            .collect();
        let started = Instant::now();
        runtime.block_on(async {
            for request in requests {
                let exchanged = state.grants.exchange(&client, request).await.unwrap();
                assert_eq!(exchanged.bound, with_dpop);
            }
        });
        started.elapsed()
    };
    // Warm-up, then alternate.
    round(false);
    round(true);
    let (mut bearer, mut bound) = (Duration::ZERO, Duration::ZERO);
    for r in 0..ROUNDS {
        let without = round(false);
        let with = round(true);
        println!(
            "round {r}: bearer {:.1} µs/exchange, DPoP {:.1} µs/exchange",
            micros(without),
            micros(with)
        );
        bearer += without;
        bound += with;
    }
    println!(
        "exchange, ID token -> app, memory store: bearer {:.1} µs, DPoP-bound {:.1} µs; DPoP/bearer = {:.2}",
        micros(bearer) / ROUNDS as f64,
        micros(bound) / ROUNDS as f64,
        bound.as_secs_f64() / bearer.as_secs_f64()
    );
}

fn micros(round: Duration) -> f64 {
    round.as_secs_f64() * 1e6 / PER_ROUND as f64
}
