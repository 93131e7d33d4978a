//! The cryptographic ceiling: how many times a second this machine can do the signature work of
//! one request, on all its cores, with nothing else (no HTTP, no JSON beyond the JOSE header, no
//! store). The operations are mandate-token's own (`UnverifiedJws::verify`, `SigningKey::sign`)
//! on tokens of the sizes the server sees and makes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_token::{Algorithm, SigningKey, UnverifiedJws, VerifyingKeySet};

/// The tokens and keys of one request's signature work.
#[derive(Debug)]
pub struct CryptoInputs {
    /// A subject token (an ID token from the trusted issuer).
    pub subject_token: String,
    /// Its issuer's keys.
    pub idp_keys: VerifyingKeySet,
    /// A client assertion.
    pub assertion: String,
    /// The agent's keys.
    pub agent_keys: VerifyingKeySet,
    /// The claims of an access token as the server issues them.
    pub access_claims: serde_json::Value,
    /// An access token as the server issues it.
    pub access_token: String,
    /// mandate's signing key.
    pub signing_key: SigningKey,
    /// mandate's published keys.
    pub mandate_keys: VerifyingKeySet,
}

/// Per-operation costs (one core) and the machine-wide rates of each request's signature work.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Threads used for the machine-wide rates (the available parallelism).
    pub threads: usize,
    /// One ES256 verification of the subject token, µs, one core.
    pub verify_us: f64,
    /// One ES256 signature of an access token, µs, one core.
    pub sign_us: f64,
    /// verify + sign per second, all cores: the `client_secret_basic` exchange ceiling.
    pub exchange_basic: f64,
    /// verify (assertion) + verify + sign per second, all cores: the `private_key_jwt` ceiling.
    pub exchange_pkjwt: f64,
    /// One verification of an access token per second, all cores: the introspection ceiling.
    pub introspect: f64,
}

fn sign(i: &CryptoInputs) -> bool {
    i.signing_key.sign("at+jwt", &i.access_claims).is_ok()
}

fn verify(token: &str, keys: &VerifyingKeySet) -> bool {
    UnverifiedJws::parse(token)
        .and_then(|jws| jws.verify(keys, &[Algorithm::Es256]))
        .is_ok()
}

/// Measures the ceiling, spending about `per_measure` on each of its five measures.
pub fn measure(inputs: CryptoInputs, per_measure: Duration) -> anyhow::Result<Ceiling> {
    anyhow::ensure!(
        verify(&inputs.subject_token, &inputs.idp_keys)
            && verify(&inputs.assertion, &inputs.agent_keys)
            && verify(&inputs.access_token, &inputs.mandate_keys),
        "the ceiling's tokens do not verify"
    );
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1);
    let inputs = Arc::new(inputs);

    let verify_rate = rate(&inputs, 1, per_measure, |i| {
        verify(&i.subject_token, &i.idp_keys)
    });
    let sign_rate = rate(&inputs, 1, per_measure, sign);
    let exchange_basic = rate(&inputs, threads, per_measure, |i| {
        verify(&i.subject_token, &i.idp_keys) && sign(i)
    });
    let exchange_pkjwt = rate(&inputs, threads, per_measure, |i| {
        verify(&i.assertion, &i.agent_keys) && verify(&i.subject_token, &i.idp_keys) && sign(i)
    });
    let introspect = rate(&inputs, threads, per_measure, |i| {
        verify(&i.access_token, &i.mandate_keys)
    });
    Ok(Ceiling {
        threads,
        verify_us: 1e6 / verify_rate.max(1e-9),
        sign_us: 1e6 / sign_rate.max(1e-9),
        exchange_basic,
        exchange_pkjwt,
        introspect,
    })
}

/// Runs `op` on `threads` threads for `duration`; successful operations per second.
fn rate(
    inputs: &Arc<CryptoInputs>,
    threads: usize,
    duration: Duration,
    op: impl Fn(&CryptoInputs) -> bool + Send + Sync + Copy + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let inputs = inputs.clone();
            let stop = stop.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut count = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if op(&inputs) {
                        count += 1;
                    }
                }
                done.fetch_add(count, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = handle.join();
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
