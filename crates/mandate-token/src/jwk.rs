use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::Jwk;
use josekit::jws::JwsVerifier;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Algorithm;

/// Members that must never appear in a published or registered public key.
pub(crate) const PRIVATE_MEMBERS: [&str; 9] = ["d", "p", "q", "dp", "dq", "qi", "k", "oth", "r"];

/// Why a JWK or JWKS was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The document is not a JWKS (`{"keys":[…]}`) or a key is not a JSON object.
    #[error("not a JWK set: {0}")]
    NotAJwks(String),
    /// A key carries private members; a public key set must not.
    #[error("key {0} contains private key members")]
    PrivateMembers(String),
    /// A key has no usable algorithm for its type, or its type is unsupported.
    #[error("key {0} is not usable for signature verification: {1}")]
    Unusable(String, String),
    /// Two keys share a `kid`.
    #[error("two keys share kid '{0}'")]
    DuplicateKid(String),
    /// The set has no key at all.
    #[error("the key set is empty")]
    Empty,
    /// A PEM or key could not be read or generated.
    #[error("invalid key: {0}")]
    Invalid(String),
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url): the hash of the required public members in
/// lexicographic order, without whitespace. mandate uses it as the `kid` of its own keys.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, KeyError> {
    let member = |name: &str| -> Result<&str, KeyError> {
        jwk.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::Invalid(format!("JWK member '{name}' missing")))
    };
    let kty = member("kty")?;
    let required: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        other => return Err(KeyError::Invalid(format!("unsupported kty '{other}'"))),
    };
    // The members are inserted in lexicographic order (so the result is the same whether or not
    // serde_json's preserve_order feature is on somewhere in the build), and to_string writes no
    // whitespace: exactly RFC 7638's canonical form.
    let mut canonical = Map::new();
    for name in required {
        canonical.insert((*name).to_owned(), Value::String(member(name)?.to_owned()));
    }
    let json = Value::Object(canonical).to_string();
    Ok(URL_SAFE_NO_PAD.encode(Sha256::digest(json.as_bytes())))
}

/// One public key that verifies signatures, with the algorithms it may be used with.
pub struct VerifyingKey {
    kid: Option<String>,
    verifiers: Vec<(Algorithm, Box<dyn JwsVerifier>)>,
}

impl VerifyingKey {
    /// Builds a verifier for each algorithm in `allowed` that fits the key's type (and its `alg`
    /// member, when the JWK has one). A key none of whose algorithms is allowed is refused.
    pub fn from_jwk(jwk: &Map<String, Value>, allowed: &[Algorithm]) -> Result<Self, KeyError> {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
        let label = kid.clone().unwrap_or_else(|| "without kid".to_owned());
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(KeyError::PrivateMembers(label));
        }
        let parsed = Jwk::from_map(jwk.clone())
            .map_err(|e| KeyError::Unusable(label.clone(), e.to_string()))?;
        let kty = parsed.key_type().to_owned();
        let crv = jwk.get("crv").and_then(Value::as_str);
        let jwk_alg = parsed.algorithm().map(str::to_owned);
        if let Some(alg) = &jwk_alg {
            if Algorithm::from_name(alg).is_none() {
                return Err(KeyError::Unusable(
                    label,
                    format!("algorithm '{alg}' is not accepted"),
                ));
            }
        }
        let mut verifiers = Vec::new();
        for alg in allowed {
            let (want_kty, want_crv) = alg.key_type();
            if want_kty != kty || (want_crv.is_some() && want_crv != crv) {
                continue;
            }
            if jwk_alg.as_deref().is_some_and(|a| a != alg.name()) {
                continue;
            }
            let verifier = alg
                .verifier(&parsed)
                .map_err(|e| KeyError::Unusable(label.clone(), e.to_string()))?;
            verifiers.push((*alg, verifier));
        }
        if verifiers.is_empty() {
            return Err(KeyError::Unusable(
                label,
                format!("no allowed algorithm fits key type {kty}"),
            ));
        }
        Ok(Self { kid, verifiers })
    }

    /// The key's `kid`, if it has one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The verifier for `alg`, if this key may be used with it.
    pub(crate) fn verifier(&self, alg: Algorithm) -> Option<&dyn JwsVerifier> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v.as_ref())
    }

    /// The algorithms this key verifies.
    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.verifiers.iter().map(|(a, _)| *a)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms().collect::<Vec<_>>())
            .finish()
    }
}

/// The public keys of one party (a client, a trusted issuer, or mandate itself).
#[derive(Debug, Default)]
pub struct VerifyingKeySet {
    keys: Vec<VerifyingKey>,
}

impl VerifyingKeySet {
    /// A set of already-built keys; `kid`s must be unique.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, KeyError> {
        let mut seen = std::collections::HashSet::new();
        for key in &keys {
            if let Some(kid) = key.kid() {
                if !seen.insert(kid.to_owned()) {
                    return Err(KeyError::DuplicateKid(kid.to_owned()));
                }
            }
        }
        Ok(Self { keys })
    }

    /// Parses a JWKS document, keeping signature keys usable with one of `allowed`.
    ///
    /// Keys marked `use: enc` are skipped (RFC 7517 §4.2). Any other key that cannot be used is an
    /// error rather than silently dropped, so that a typo in a registered key is seen at once.
    pub fn from_jwks(document: &Value, allowed: &[Algorithm]) -> Result<Self, KeyError> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeyError::NotAJwks("expected an object with a 'keys' array".into()))?;
        let mut built = Vec::with_capacity(keys.len());
        for key in keys {
            let map = key
                .as_object()
                .ok_or_else(|| KeyError::NotAJwks("a key is not a JSON object".into()))?;
            if map.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            built.push(VerifyingKey::from_jwk(map, allowed)?);
        }
        if built.is_empty() {
            return Err(KeyError::Empty);
        }
        Self::new(built)
    }

    /// Parses a JWKS from its JSON text.
    pub fn from_jwks_json(json: &str, allowed: &[Algorithm]) -> Result<Self, KeyError> {
        let document: Value =
            serde_json::from_str(json).map_err(|e| KeyError::NotAJwks(e.to_string()))?;
        Self::from_jwks(&document, allowed)
    }

    /// The keys a token with this `kid` (or without one) may have been signed with.
    ///
    /// With a `kid`, only the key bearing exactly that `kid`; without one, every key — DESIGN.md
    /// section 5 asks for assertions without `kid` to be tried against each registered key.
    pub(crate) fn candidates<'a>(
        &'a self,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a VerifyingKey> + 'a {
        self.keys
            .iter()
            .filter(move |key| kid.is_none() || key.kid() == kid)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The `kid`s of the keys held (a key without one has none to list): what a fetcher checks
    /// an unknown `kid` against before it refreshes.
    pub fn kids(&self) -> std::collections::HashSet<String> {
        self.keys
            .iter()
            .filter_map(VerifyingKey::kid)
            .map(str::to_owned)
            .collect()
    }

    /// Whether the set has no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk: Value = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn private_members_are_refused() {
        let jwk = serde_json::json!({"kty":"EC","crv":"P-256","x":"a","y":"b","d":"c"});
        assert!(matches!(
            VerifyingKey::from_jwk(jwk.as_object().unwrap(), &Algorithm::ALL),
            Err(KeyError::PrivateMembers(_))
        ));
    }

    #[test]
    fn symmetric_keys_are_unusable() {
        let jwk = serde_json::json!({"kty":"oct","k":"c2VjcmV0"});
        assert!(VerifyingKey::from_jwk(jwk.as_object().unwrap(), &Algorithm::ALL).is_err());
        let jwk = serde_json::json!({"kty":"oct","alg":"HS256"});
        assert!(VerifyingKey::from_jwk(jwk.as_object().unwrap(), &Algorithm::ALL).is_err());
    }

    #[test]
    fn a_jwks_must_be_one() {
        assert!(VerifyingKeySet::from_jwks_json("[]", &Algorithm::ALL).is_err());
        assert!(VerifyingKeySet::from_jwks_json("{\"keys\":[]}", &Algorithm::ALL).is_err());
    }
}
