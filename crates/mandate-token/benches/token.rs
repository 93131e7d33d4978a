//! Micro-benchmarks of mandate-token (docs/BENCHMARKS.md): signing and verifying an access token
//! with each configured algorithm, and the claims of a 3-deep `act` chain to and from JSON.
//!
//! ```sh
//! cargo bench -p mandate-token --bench token
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark program"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mandate_token::{
    AccessTokenClaims, Act, Algorithm, SigningAlgorithm, SigningKey, UnverifiedJws, VerifyingKeySet,
};

/// A calendar token three hops down: helper ← booking-tool ← assistant.
fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        cnf: None,
        iss: "https://mandate.example.com".into(),
        sub: "corp|alice".into(),
        aud: "https://calendar.example.com".into(),
        client_id: "helper".into(),
        scope: Some("calendar.read".into()),
        authorization_details: None,
        iat: 1_764_316_800,
        nbf: 1_764_316_800,
        exp: 1_764_317_100,
        jti: "hop_01JDAAAAAAAAAAAAAAAAAAAAAA".into(),
        act: Act::from_current_first(&["helper".into(), "booking-tool".into(), "assistant".into()])
            .unwrap(),
        chain_id: "chn_01JCAAAAAAAAAAAAAAAAAAAAAA".into(),
        ancestors: vec![
            "hop_01JBAAAAAAAAAAAAAAAAAAAAAA".into(),
            "hop_01JCAAAAAAAAAAAAAAAAAAAAAA".into(),
        ],
    }
}

fn sign_and_verify(c: &mut Criterion) {
    let claims = claims();
    for algorithm in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
        let key = SigningKey::generate(algorithm).unwrap();
        let keys = VerifyingKeySet::from_jwks(
            &serde_json::json!({ "keys": [key.public_key().jwk()] }),
            &[algorithm.algorithm()],
        )
        .unwrap();
        let token = key.sign("at+jwt", &claims).unwrap();
        c.bench_function(&format!("sign access token {algorithm}"), |b| {
            b.iter(|| key.sign("at+jwt", black_box(&claims)).unwrap())
        });
        c.bench_function(&format!("verify access token {algorithm}"), |b| {
            b.iter(|| {
                let jws = UnverifiedJws::parse(black_box(&token)).unwrap();
                jws.verify(&keys, &[algorithm.algorithm()]).unwrap()
            })
        });
        c.bench_function(&format!("verify + parse claims {algorithm}"), |b| {
            b.iter(|| {
                let jws = UnverifiedJws::parse(black_box(&token)).unwrap();
                jws.verify(&keys, &Algorithm::ALL)
                    .unwrap()
                    .claims::<AccessTokenClaims>()
                    .unwrap()
            })
        });
    }
}

fn claims_json(c: &mut Criterion) {
    let claims = claims();
    let json = serde_json::to_vec(&claims).unwrap();
    c.bench_function("claims to JSON (3-deep act)", |b| {
        b.iter(|| serde_json::to_vec(black_box(&claims)).unwrap())
    });
    c.bench_function("claims to JSON via serde_json::Value (3-deep act)", |b| {
        b.iter(|| {
            let value = serde_json::to_value(black_box(&claims)).unwrap();
            serde_json::to_vec(&value).unwrap()
        })
    });
    c.bench_function("claims from JSON (3-deep act)", |b| {
        b.iter(|| serde_json::from_slice::<AccessTokenClaims>(black_box(&json)).unwrap())
    });
}

criterion_group!(benches, sign_and_verify, claims_json);
criterion_main!(benches);
