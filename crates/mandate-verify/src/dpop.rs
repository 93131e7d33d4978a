//! RFC 9449 at the app: a DPoP-bound token is accepted only as `Authorization: DPoP <token>`
//! with a `DPoP` proof for this very request (method, URL, the token's hash), fresh, never seen
//! before, and signed by the key the token is bound to. A bound token presented as `Bearer` is
//! refused; an unbound one is accepted either way.

use std::collections::HashMap;
use std::sync::Mutex;

use mandate_token::dpop::{verify_proof, KeyCache, ProofPolicy, ProofRequest};
use mandate_token::Algorithm;

use crate::bearer::{presented_token, Scheme};
use crate::{BearerError, VerifiedToken, Verifier, VerifyError};

/// The proof algorithms accepted: those mandate accepts at its token endpoint.
pub const DPOP_ALGORITHMS: [Algorithm; 5] = [
    Algorithm::Es256,
    Algorithm::Es384,
    Algorithm::EdDsa,
    Algorithm::Rs256,
    Algorithm::Ps256,
];
/// How old a proof may be, seconds.
pub const PROOF_MAX_AGE_SECS: i64 = 300;
/// Proofs remembered at once (their `jti`s, until their window closes): past it, new proofs are
/// refused until older ones expire (fail closed rather than forget).
pub const PROOF_CACHE_CAP: usize = 100_000;

/// What a request presented, as any HTTP stack can hand it over.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The values of its `Authorization` headers.
    pub authorization: &'a [&'a [u8]],
    /// The values of its `DPoP` headers.
    pub dpop: &'a [&'a [u8]],
    /// Its method (`GET`).
    pub method: &'a str,
    /// Its URL as the client addressed it (scheme, host, path; query ignored).
    pub url: &'a str,
}

/// What a request presented, owned: the integrations copy it out of the request before their
/// futures run, so that neither the request nor its body need outlive them.
#[cfg(any(feature = "actix-web", feature = "tower"))]
#[derive(Debug)]
pub(crate) struct OwnedPresented {
    /// The values of its `Authorization` headers.
    pub(crate) authorization: Vec<Vec<u8>>,
    /// The values of its `DPoP` headers.
    pub(crate) dpop: Vec<Vec<u8>>,
    /// Its method.
    pub(crate) method: String,
    /// Its public URL (origin and path).
    pub(crate) url: String,
}

#[cfg(any(feature = "actix-web", feature = "tower"))]
impl OwnedPresented {
    /// [`Verifier::verify_presented`] on what was copied.
    pub(crate) async fn verify(&self, verifier: &Verifier) -> Result<VerifiedToken, BearerError> {
        let authorization: Vec<&[u8]> = self.authorization.iter().map(Vec::as_slice).collect();
        let dpop: Vec<&[u8]> = self.dpop.iter().map(Vec::as_slice).collect();
        verifier
            .verify_presented(&Presented {
                authorization: &authorization,
                dpop: &dpop,
                method: &self.method,
                url: &self.url,
            })
            .await
    }
}

/// What a verifier keeps of proofs: the `jti`s seen, per key, until their window closes, and
/// the proof keys already built.
#[derive(Debug, Default)]
pub(crate) struct ProofState {
    seen: Mutex<HashMap<String, i64>>,
    /// Proof keys already built.
    keys: KeyCache,
}

impl ProofState {
    /// Whether `key` is new at `now` (then remembered until `until`).
    fn first_use(&self, key: String, until: i64, now: i64) -> Result<bool, VerifyError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| VerifyError::DpopProof("proof cache unusable".into()))?;
        if seen.get(&key).is_some_and(|expiry| *expiry > now) {
            return Ok(false);
        }
        if seen.len() >= PROOF_CACHE_CAP {
            seen.retain(|_, until| *until > now);
            if seen.len() >= PROOF_CACHE_CAP {
                return Err(VerifyError::DpopProof("too many proofs in flight".into()));
            }
        }
        seen.insert(key, until);
        Ok(true)
    }
}

impl Verifier {
    /// Verifies what a request presented: `Authorization: Bearer <token>` (an unbound token), or
    /// `Authorization: DPoP <token>` with one `DPoP` proof (RFC 9449 §7). The refusal is the
    /// answer to give ([`BearerError`]); its reason is logged at debug level.
    pub async fn verify_presented(
        &self,
        presented: &Presented<'_>,
    ) -> Result<VerifiedToken, BearerError> {
        let (scheme, token) = presented_token(presented.authorization.iter().copied())?;
        let result = match scheme {
            Scheme::Bearer => self.verify_bearer(token).await,
            Scheme::Dpop => self.verify_bound(token, presented).await,
        };
        self.log_refusal(&result);
        result.map_err(BearerError::from)
    }

    async fn verify_bound(
        &self,
        token: &str,
        presented: &Presented<'_>,
    ) -> Result<VerifiedToken, VerifyError> {
        let proof = match presented.dpop {
            [one] => std::str::from_utf8(one)
                .map_err(|_| VerifyError::DpopProof("the DPoP header is not text".into()))?,
            [] => return Err(VerifyError::DpopProof("no DPoP header".into())),
            _ => return Err(VerifyError::DpopProof("more than one DPoP header".into())),
        };
        let now = self.now_secs();
        let proof = verify_proof(
            proof,
            &ProofRequest {
                method: presented.method,
                url: presented.url,
                access_token: Some(token),
                nonce: None,
            },
            &ProofPolicy {
                algorithms: &DPOP_ALGORITHMS,
                now,
                max_age_secs: PROOF_MAX_AGE_SECS,
                skew_secs: self.skew(),
            },
            &self.proof_state().keys,
        )
        .map_err(|e| VerifyError::DpopProof(e.to_string()))?;
        let verified = self.check(token).await?;
        if verified.jkt() != Some(proof.jkt.as_str()) {
            return Err(VerifyError::DpopProof(
                "the proof is not by the key the token is bound to".into(),
            ));
        }
        // Spent last: a proof for a refused token stays unspent.
        let until = proof.iat + PROOF_MAX_AGE_SECS + self.skew() + 1;
        if !self
            .proof_state()
            .first_use(format!("{}:{}", proof.jkt, proof.jti), until, now)?
        {
            return Err(VerifyError::DpopProof("the proof was used already".into()));
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_is_used_once_within_its_window_and_the_cache_fails_closed_when_full() {
        let state = ProofState::default();
        assert!(state.first_use("k:a".into(), 100, 10).unwrap());
        assert!(!state.first_use("k:a".into(), 100, 50).unwrap(), "replayed");
        // Past its window the entry no longer counts (the proof itself is stale by then).
        assert!(state.first_use("k:a".into(), 200, 100).unwrap());
        // Full of live entries: a new proof is refused, not a remembered one forgotten.
        for i in 1..PROOF_CACHE_CAP {
            assert!(state.first_use(format!("k:{i}"), 1_000, 150).unwrap());
        }
        assert!(matches!(
            state.first_use("k:new".into(), 1_000, 150),
            Err(VerifyError::DpopProof(_))
        ));
        assert!(
            !state.first_use("k:a".into(), 1_000, 150).unwrap(),
            "still remembered"
        );
        // Once they expire, room is made again.
        assert!(state.first_use("k:new".into(), 2_000, 1_000).unwrap());
    }
}
