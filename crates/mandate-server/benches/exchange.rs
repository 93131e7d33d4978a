//! Micro-benchmarks of the server's hot path without HTTP (docs/BENCHMARKS.md): client
//! authentication by secret and by `private_key_jwt`, and the whole token-exchange domain
//! function (verify the subject token, decide, sign, record the hop, re-check) on the memory
//! store.
//!
//! ```sh
//! cargo bench -p mandate-server --bench exchange
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark program"
)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use mandate_model::{AuthMethod, ClientId};
use mandate_server::client_auth::PresentedCredentials;
use mandate_server::config::PolicySettings;
use mandate_server::exchange::{exchange, TokenExchangeRequest};
use mandate_server::form::Form;
use mandate_server::{AppState, BuildOptions, ConfigSource};
use mandate_testkit::{
    agent_with_keys, agent_with_secret, assertion_claims, delegation_settings, id_token_claims,
    KeyKind, TestKey, CAL, CORP,
};

fn server_bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let agent_key = TestKey::generate(KeyKind::Es256, Some("agent-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.limits.token_requests_per_client_per_sec = 0;
    settings
        .clients
        .push(agent_with_keys("keyed", agent_key.jwks()).unwrap());
    settings.clients.push(
        agent_with_secret(
            "secretive",
            "secretive-secret",
            AuthMethod::ClientSecretBasic,
        )
        .unwrap(),
    );
    settings.policies.push(PolicySettings {
        actor: ClientId::parse("secretive").unwrap(),
        audience: mandate_model::Audience::parse(CAL).unwrap(),
        scopes: mandate_model::ScopeSet::parse("calendar.read").unwrap(),
        max_depth: None,
    });
    let issuer = settings.issuer.clone();
    let state = runtime
        .block_on(AppState::build(
            settings,
            ConfigSource::Programmatic,
            BuildOptions::default(),
        ))
        .unwrap();

    let basic = PresentedCredentials::Basic {
        client_id: "secretive".into(),
        secret: "secretive-secret".into(),
    };
    c.bench_function("client auth client_secret_basic", |b| {
        b.to_async(&runtime)
            .iter(|| async { state.authenticator.authenticate(&basic).await.unwrap() })
    });
    c.bench_function("client auth private_key_jwt (ES256)", |b| {
        b.to_async(&runtime).iter_batched(
            || PresentedCredentials::Assertion {
                client_id: Some("keyed".into()),
                assertion: agent_key
                    .sign(None, &assertion_claims("keyed", &issuer))
                    .unwrap(),
            },
            |credentials| {
                let state = &state;
                async move {
                    state
                        .authenticator
                        .authenticate(&credentials)
                        .await
                        .unwrap()
                }
            },
            BatchSize::SmallInput,
        )
    });

    // One subject token per iteration would cost a signature outside the measure; a pool of
    // users, each exchanged many times (every exchange is still a new hop in the ledger).
    let subjects: Vec<String> = (0..1000)
        .map(|i| {
            corp.sign(
                None,
                &id_token_claims(CORP, &format!("user-{i}"), "secretive"),
            )
            .unwrap()
        })
        .collect();
    let client = runtime
        .block_on(state.authenticator.authenticate(&basic))
        .unwrap();
    let mut next = 0usize;
    c.bench_function("exchange domain function, ID token -> app (memory store)", |b| {
        b.to_async(&runtime).iter_batched(
            || {
                next = (next + 1) % subjects.len();
                let body = format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token={}&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&audience=https%3A%2F%2Fcalendar.example.com",
                    subjects[next]
                );
                TokenExchangeRequest::from_form(&Form::parse(body.as_bytes()).unwrap(), None).unwrap()
            },
            |request| {
                let (state, client) = (&state, &client);
                async move { exchange(&state.grants, client, request).await.unwrap() }
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, server_bench);
criterion_main!(benches);
