use std::fmt;

use josekit::jwk::Jwk;
use josekit::jws::{self, JwsVerifier};

use crate::JwtError;

/// The asymmetric JWS algorithms mandate verifies. There is deliberately no `none` and no HMAC
/// variant: a token naming either is refused before any key is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// ECDSA P-256 SHA-256.
    Es256,
    /// ECDSA P-384 SHA-384.
    Es384,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    Rs512,
    /// RSASSA-PSS SHA-256.
    Ps256,
    /// RSASSA-PSS SHA-384.
    Ps384,
    /// RSASSA-PSS SHA-512.
    Ps512,
    /// Ed25519.
    EdDsa,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::Es256,
        Algorithm::Es384,
        Algorithm::Rs256,
        Algorithm::Rs384,
        Algorithm::Rs512,
        Algorithm::Ps256,
        Algorithm::Ps384,
        Algorithm::Ps512,
        Algorithm::EdDsa,
    ];

    /// The JWA name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Es384 => "ES384",
            Algorithm::Rs256 => "RS256",
            Algorithm::Rs384 => "RS384",
            Algorithm::Rs512 => "RS512",
            Algorithm::Ps256 => "PS256",
            Algorithm::Ps384 => "PS384",
            Algorithm::Ps512 => "PS512",
            Algorithm::EdDsa => "EdDSA",
        }
    }

    /// The algorithm for a JWA name; `None` for `none`, HMAC and anything unknown.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// The JWK key type (and curve) this algorithm needs: `kty` must match before a verifier is
    /// built, so that a key is only ever used with algorithms of its own family.
    pub fn key_type(self) -> (&'static str, Option<&'static str>) {
        match self {
            Algorithm::Es256 => ("EC", Some("P-256")),
            Algorithm::Es384 => ("EC", Some("P-384")),
            Algorithm::Rs256
            | Algorithm::Rs384
            | Algorithm::Rs512
            | Algorithm::Ps256
            | Algorithm::Ps384
            | Algorithm::Ps512 => ("RSA", None),
            Algorithm::EdDsa => ("OKP", Some("Ed25519")),
        }
    }

    /// Builds a verifier for `jwk` (public members only are read). josekit checks `kty`, `crv`,
    /// `use`, `key_ops`, a JWK `alg` that names another algorithm, and RSA keys under 2048 bits.
    pub(crate) fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, JwtError> {
        let built: Result<Box<dyn JwsVerifier>, _> = match self {
            Algorithm::Es256 => jws::ES256.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Es384 => jws::ES384.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Rs256 => jws::RS256.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Rs384 => jws::RS384.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Rs512 => jws::RS512.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Ps256 => jws::PS256.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Ps384 => jws::PS384.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::Ps512 => jws::PS512.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
            Algorithm::EdDsa => jws::EdDSA.verifier_from_jwk(jwk).map(|v| Box::new(v) as _),
        };
        built.map_err(|e| JwtError::UnusableKey(e.to_string()))
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_hmac_have_no_algorithm() {
        for name in [
            "none", "None", "NONE", "HS256", "HS384", "HS512", "", "ES256K",
        ] {
            assert_eq!(Algorithm::from_name(name), None, "{name}");
        }
        for alg in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(alg.name()), Some(alg));
        }
    }
}
