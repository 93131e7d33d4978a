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

/// The `jti`s of proofs seen, per key, until their window closes.
#[derive(Debug, Default)]
pub(crate) struct ProofReplay {
    seen: Mutex<HashMap<String, i64>>,
    /// Proof keys already built.
    keys: KeyCache,
}

impl ProofReplay {
    /// Whether `key` is new at `now` (then remembered until `until`).
    fn first_use(&self, key: String, until: i64, now: i64) -> Result<bool, VerifyError> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| VerifyError::DpopProof("proof cache unusable".into()))?;
        if seen.len() >= PROOF_CACHE_CAP {
            seen.retain(|_, until| *until > now);
            if seen.len() >= PROOF_CACHE_CAP {
                return Err(VerifyError::DpopProof("too many proofs in flight".into()));
            }
        }
        match seen.get(&key) {
            Some(expiry) if *expiry > now => Ok(false),
            _ => {
                seen.insert(key, until);
                Ok(true)
            }
        }
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
            Scheme::Bearer => self.verify(token).await,
            Scheme::Dpop => self.verify_bound(token, presented).await,
        };
        result.map_err(|error| {
            tracing::debug!(%error, audience = %self.audience(), "access token refused");
            BearerError::from(error)
        })
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
            &self.proof_replay().keys,
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
            .proof_replay()
            .first_use(format!("{}:{}", proof.jkt, proof.jti), until, now)?
        {
            return Err(VerifyError::DpopProof("the proof was used already".into()));
        }
        Ok(verified)
    }
}
