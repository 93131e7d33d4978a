//! DPoP at the token endpoint (RFC 9449 §5, docs/DPOP.md): a `DPoP` proof on a grant is checked
//! against the token endpoint, its `jti` spent once everything else has passed, and the issued
//! token bound to its key. A hop is never less bound than the token it is exchanged from.

use std::borrow::Cow;

use mandate_token::dpop::{
    verify_proof, DpopError, KeyCache, ProofPolicy, ProofRequest, VerifiedProof,
};
use mandate_token::Algorithm;

use super::{GrantError, GrantService, Refusals};

/// How proofs are accepted at the token endpoint.
#[derive(Debug, Clone)]
pub struct DpopSettings {
    /// The token endpoint's URL: every proof's `htu`.
    pub token_endpoint: String,
    /// The proof algorithms accepted (`dpop_signing_alg_values_supported`).
    pub algorithms: Vec<Algorithm>,
    /// How old a proof may be, seconds.
    pub max_age_secs: i64,
    /// Proof keys already built (shared by every clone of the settings).
    pub keys: std::sync::Arc<KeyCache>,
    /// Require the server's nonce in every proof (RFC 9449 §8, `[dpop] require_nonce`).
    pub require_nonce: bool,
}

/// How long one nonce is handed out; the previous one is still accepted, so a nonce lives
/// between one and two of these.
const NONCE_PERIOD_SECS: i64 = 300;

impl DpopSettings {
    /// Proofs for `token_endpoint` of ES256, ES384, EdDSA, RS256 and PS256 keys, at most five
    /// minutes old.
    pub fn for_endpoint(token_endpoint: String) -> Self {
        Self {
            token_endpoint,
            algorithms: vec![
                Algorithm::Es256,
                Algorithm::Es384,
                Algorithm::EdDsa,
                Algorithm::Rs256,
                Algorithm::Ps256,
            ],
            max_age_secs: 300,
            keys: std::sync::Arc::default(),
            require_nonce: false,
        }
    }
}

/// A proof checked but not yet spent.
#[derive(Debug)]
pub(super) struct Proof(VerifiedProof);

impl Proof {
    /// The thumbprint of its key.
    pub(super) fn jkt(&self) -> &str {
        &self.0.jkt
    }
}

fn refused(error: &DpopError) -> GrantError {
    GrantError::InvalidDpopProof(Cow::Owned(error.to_string()))
}

impl GrantService {
    /// Checks the grant's `DPoP` header, if any (RFC 9449 §4.3, except the `jti`'s single use:
    /// [`GrantService::spend_proof`] does that once the grant is decided).
    pub(super) fn check_proof(
        &self,
        proof: Option<&str>,
        refusals: &Refusals,
    ) -> Result<Option<Proof>, GrantError> {
        let Some(proof) = proof else {
            return Ok(None);
        };
        let dpop = &self.settings.dpop;
        let request = ProofRequest {
            method: "POST",
            url: &dpop.token_endpoint,
            access_token: None,
            nonce: None,
        };
        let policy = ProofPolicy {
            algorithms: &dpop.algorithms,
            now: self.clock.now().timestamp(),
            max_age_secs: dpop.max_age_secs,
            skew_secs: i64::from(self.settings.clock_skew_secs),
        };
        let verified = verify_proof(proof, &request, &policy, &dpop.keys)
            .map_err(|error| refusals.refuse(&error, refused(&error)))?;
        if dpop.require_nonce {
            let bucket = policy.now.div_euclid(NONCE_PERIOD_SECS);
            let accepted = [bucket, bucket - 1].map(|b| self.ports.chain_key.dpop_nonce(b));
            if !verified
                .nonce
                .as_deref()
                .is_some_and(|n| accepted.iter().any(|a| a == n))
            {
                let [nonce, _] = accepted;
                return Err(refusals.refuse(
                    &"DPoP proof without the current nonce",
                    GrantError::UseDpopNonce { nonce },
                ));
            }
        }
        Ok(Some(Proof(verified)))
    }

    /// The nonce proofs must carry now, when nonces are required (every token response hands it
    /// over in `DPoP-Nonce`).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.settings.dpop.require_nonce.then(|| {
            let bucket = self.clock.now().timestamp().div_euclid(NONCE_PERIOD_SECS);
            self.ports.chain_key.dpop_nonce(bucket)
        })
    }

    /// A proof is required: the subject token is bound (a hop is never less bound than its
    /// parent), or the ID-JAG is.
    pub(super) fn require_proof<'p>(
        proof: Option<&'p Proof>,
        why: &'static str,
        refusals: &Refusals,
    ) -> Result<&'p Proof, GrantError> {
        proof.ok_or_else(|| refusals.refuse(&why, GrantError::InvalidDpopProof(Cow::Borrowed(why))))
    }

    /// The DPoP policy (`dpop = "required"`): an agent that must prove, or a target app whose
    /// resource server wants bound tokens, gets nothing without a proof.
    pub(super) fn require_policy_proof(
        &self,
        client: &mandate_store::Client,
        target_requires: bool,
        proof: Option<&Proof>,
        refusals: &Refusals,
    ) -> Result<(), GrantError> {
        if client.dpop == mandate_model::DpopPolicy::Required {
            Self::require_proof(
                proof,
                "this agent's tokens must be DPoP-bound: the request needs a DPoP proof",
                refusals,
            )?;
        }
        if target_requires {
            Self::require_proof(
                proof,
                "tokens for this audience must be DPoP-bound: the request needs a DPoP proof",
                refusals,
            )?;
        }
        Ok(())
    }

    /// Spends the proof's `jti` (remembered for the proof's acceptance window, per key): a
    /// replayed proof is refused. Called last, so that a refused grant leaves its proof unspent.
    pub(super) async fn spend_proof(
        &self,
        proof: Option<&Proof>,
        now: i64,
        refusals: &Refusals,
    ) -> Result<(), GrantError> {
        let Some(Proof(proof)) = proof else {
            return Ok(());
        };
        let skew = i64::from(self.settings.clock_skew_secs);
        let until = proof.iat + self.settings.dpop.max_age_secs + skew + 1;
        let key = format!("dpop:{}:{}", proof.jkt, proof.jti);
        let first = self
            .ports
            .replay
            .first_use(&key, until, now)
            .await
            .map_err(|e| GrantError::unavailable("checking the DPoP proof", e))?;
        if first {
            Ok(())
        } else {
            let why = "the DPoP proof has been used already";
            Err(refusals.refuse(&why, GrantError::InvalidDpopProof(Cow::Borrowed(why))))
        }
    }
}
