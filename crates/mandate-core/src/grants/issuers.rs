//! The trusted upstream issuers as the grants see them: what each may be used for, and a way to
//! verify a JWS with its keys. Where the keys come from (a file, inline, or fetched from its
//! `jwks_uri` under the fetch policy) is the server's business.

use std::sync::Arc;

use mandate_model::IssuerAlias;
use mandate_token::{JwtError, UnverifiedJws, Verified};
use serde::Deserialize;

/// What a trusted issuer's tokens may be used as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Acceptance {
    /// ID tokens as subject tokens.
    #[serde(rename = "id_token")]
    IdToken,
    /// Other JWTs as subject tokens.
    #[serde(rename = "jwt")]
    Jwt,
    /// ID-JAGs at the jwt-bearer grant (resource-AS half).
    #[serde(rename = "id-jag")]
    IdJag,
}

/// Why a token could not be verified with a trusted issuer's keys.
#[derive(Debug, thiserror::Error)]
pub enum IssuerVerifyError {
    /// Signature, key or algorithm.
    #[error("{0}")]
    Signature(JwtError),
    /// The issuer's keys could not be fetched.
    #[error("issuer keys unavailable: {0}")]
    KeysUnavailable(String),
}

/// A trusted issuer (`[[trusted_issuers]]`).
#[async_trait::async_trait]
pub trait UpstreamIssuer: Send + Sync + std::fmt::Debug {
    /// Its issuer identifier; its tokens carry it as `iss`.
    fn issuer(&self) -> &str;
    /// Namespaces its subjects: `alias|sub`.
    fn alias(&self) -> &IssuerAlias;
    /// Whether its tokens may be used as `what`.
    fn accepts(&self, what: Acceptance) -> bool;
    /// Whether its `sub` is used unprefixed.
    fn subject_as_is(&self) -> bool;
    /// The oldest (or longest-lived) token of it accepted.
    fn max_token_age_secs(&self) -> u32;
    /// Whether its ID-JAGs may be presented again by the same client (decision D2).
    fn id_jag_reuse(&self) -> bool;
    /// Verifies `jws` with its keys and configured algorithms only.
    async fn verify(&self, jws: &UnverifiedJws<'_>) -> Result<Verified, IssuerVerifyError>;
}

/// The trusted issuers, looked up by `iss`.
#[derive(Debug, Clone, Default)]
pub struct TrustedIssuers(Arc<Vec<Arc<dyn UpstreamIssuer>>>);

impl TrustedIssuers {
    /// These issuers.
    pub fn new(issuers: Vec<Arc<dyn UpstreamIssuer>>) -> Self {
        Self(Arc::new(issuers))
    }

    /// The issuer whose identifier is `iss`.
    pub fn find(&self, iss: &str) -> Option<&Arc<dyn UpstreamIssuer>> {
        self.0.iter().find(|issuer| issuer.issuer() == iss)
    }
}
