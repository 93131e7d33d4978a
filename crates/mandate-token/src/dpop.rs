//! RFC 9449 DPoP proofs: the checks of §4.3 that need no store (the `jti` replay check is the
//! caller's, through its replay cache), the key's thumbprint (`jkt`), and the access-token hash
//! (`ath`).
//!
//! A proof carries its own public key in the header's `jwk`: the one place mandate uses a
//! header-supplied key, and only to check that whoever sent the proof holds the key the token is
//! (or will be) bound to. The key must be public, of an allowed asymmetric algorithm's type, and
//! verify the proof's signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::jwk::{thumbprint, VerifyingKey, PRIVATE_MEMBERS};
use crate::{Algorithm, JwtError, UnverifiedJws};

/// The `typ` of a DPoP proof.
pub const TYP_DPOP: &str = "dpop+jwt";
/// The largest proof looked at: a proof is a header with one public key and five short claims.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// The longest `jti` accepted.
const MAX_JTI: usize = 256;
/// Proof keys kept built at once: past it the cache starts over.
const KEY_CACHE_CAP: usize = 10_000;

/// Proof keys already built, by thumbprint, algorithm and the JWK's own `alg`: an agent proves
/// with the same key request after request, and building a verifier from a JWK costs more than
/// checking a signature. Bounded; shared by every proof a server checks.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<KeyName, Arc<VerifyingKey>>>,
}

/// A cached key's name: its thumbprint, the algorithm it verifies, the JWK's own `alg`.
type KeyName = (String, Algorithm, Option<String>);

impl KeyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The verifier of `jwk` (thumbprint `jkt`) for `algorithm`, built once.
    fn key(
        &self,
        jwk: &Map<String, Value>,
        jkt: &str,
        algorithm: Algorithm,
    ) -> Result<Arc<VerifyingKey>, DpopError> {
        let member_alg = jwk.get("alg").and_then(Value::as_str).map(str::to_owned);
        let entry = (jkt.to_owned(), algorithm, member_alg);
        if let Some(key) = self.keys.lock().ok().and_then(|k| k.get(&entry).cloned()) {
            return Ok(key);
        }
        let key = Arc::new(VerifyingKey::from_jwk(jwk, &[algorithm]).map_err(|_| DpopError::Key)?);
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= KEY_CACHE_CAP {
                keys.clear();
            }
            keys.insert(entry, Arc::clone(&key));
        }
        Ok(key)
    }
}

/// Why a proof was refused (RFC 9449 `invalid_dpop_proof`). The messages are mandate's own and
/// never repeat the proof's content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a compact JWS of bounded size, or a header or payload that is not JSON.
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    /// `alg` is `none`, symmetric, unknown or not allowed.
    #[error("the DPoP proof's algorithm is not accepted")]
    Algorithm,
    /// No `jwk`, a private key, or a key unusable with the proof's `alg`.
    #[error("the DPoP proof's jwk must be a public key usable with its alg")]
    Key,
    /// The signature does not verify with the proof's own key.
    #[error("the DPoP proof's signature does not verify")]
    Signature,
    /// A required claim is missing or of the wrong type.
    #[error("the DPoP proof lacks {0}")]
    Missing(&'static str),
    /// `htm` is not the request's method.
    #[error("the DPoP proof is for another HTTP method")]
    Method,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof is for another URL")]
    Url,
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof was not issued within the accepted window")]
    Time,
    /// `ath` is not the hash of the presented access token.
    #[error("the DPoP proof's ath does not match the access token")]
    AccessTokenHash,
    /// `nonce` is missing or not the server's.
    #[error("the DPoP proof's nonce is missing or not current")]
    Nonce,
}

/// What the request the proof comes with must be.
#[derive(Debug, Clone, Copy)]
pub struct ProofRequest<'a> {
    /// The request's method (`POST`).
    pub method: &'a str,
    /// The request's URL as the server knows itself (scheme, host, path; query and fragment are
    /// ignored on both sides).
    pub url: &'a str,
    /// The access token presented with it, at a resource server (the proof then needs `ath`).
    pub access_token: Option<&'a str>,
    /// The nonce the server requires, if any.
    pub nonce: Option<&'a str>,
}

/// How proofs are judged.
#[derive(Debug, Clone, Copy)]
pub struct ProofPolicy<'a> {
    /// The algorithms accepted (asymmetric only: [`Algorithm`] has no other).
    pub algorithms: &'a [Algorithm],
    /// Now, seconds.
    pub now: i64,
    /// How old a proof may be, seconds.
    pub max_age_secs: i64,
    /// How far in the future its `iat` may be, seconds (clock skew).
    pub skew_secs: i64,
}

/// A proof that passed every check but the `jti` replay check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The RFC 7638 thumbprint of its key: what a token bound to it carries as `cnf.jkt`.
    pub jkt: String,
    /// Its `jti`, to be remembered until `iat + max_age` by the caller.
    pub jti: String,
    /// Its `iat`.
    pub iat: i64,
    /// Its `nonce`, if any (for a server that checks nonces itself, e.g. among several).
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct ProofHeader {
    jwk: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<Value>,
    htm: Option<Value>,
    htu: Option<Value>,
    iat: Option<Value>,
    ath: Option<Value>,
    nonce: Option<Value>,
}

fn string<'a>(value: Option<&'a Value>, name: &'static str) -> Result<&'a str, DpopError> {
    value
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(DpopError::Missing(name))
}

/// `base64url(SHA-256(access_token))`: the `ath` of a proof sent with `access_token`.
pub fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A URL as DPoP compares it (RFC 9449 §4.3 step 9, RFC 3986 §6.2.2–6.2.3): scheme and host in
/// lower case, the scheme's default port dropped, an empty path as `/`, query and fragment
/// removed. `None` for anything but an absolute `http` or `https` URL.
pub fn normalize_htu(url: &str) -> Option<String> {
    let url = url.split(['?', '#']).next()?;
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => ":443",
        "http" => ":80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let mut host = authority.to_ascii_lowercase();
    if let Some(stripped) = host.strip_suffix(default_port) {
        host = stripped.to_owned();
    }
    Some(format!("{scheme}://{host}{path}"))
}

/// Checks `proof` (the `DPoP` header's value) for `request` under `policy`: RFC 9449 §4.3 steps
/// 2–11 except the `jti` replay check (step 12's uniqueness), which needs a store.
pub fn verify_proof(
    proof: &str,
    request: &ProofRequest<'_>,
    policy: &ProofPolicy<'_>,
    keys: &KeyCache,
) -> Result<VerifiedProof, DpopError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(DpopError::Malformed);
    }
    let jws = UnverifiedJws::parse(proof).map_err(|_| DpopError::Malformed)?;
    if !jws.header().typ_is(TYP_DPOP) {
        return Err(DpopError::WrongType);
    }
    if jws.header().crit.is_some() {
        return Err(DpopError::Malformed);
    }
    let algorithm = Algorithm::from_name(&jws.header().alg)
        .filter(|alg| policy.algorithms.contains(alg))
        .ok_or(DpopError::Algorithm)?;
    // The header is read again for its `jwk`, which the generic header deliberately ignores.
    let header_b64 = proof.split('.').next().ok_or(DpopError::Malformed)?;
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| DpopError::Malformed)?;
    let header: ProofHeader =
        serde_json::from_slice(&header_json).map_err(|_| DpopError::Malformed)?;
    let mut jwk = header.jwk.ok_or(DpopError::Key)?;
    // A `kid` in the key is a label only; it must not make the key unfindable.
    jwk.remove("kid");
    // A private key is refused before the cache is asked: a cached verifier of the same public
    // key must not let it through.
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(DpopError::Key);
    }
    let jkt = thumbprint(&jwk).map_err(|_| DpopError::Key)?;
    let key = keys.key(&jwk, &jkt, algorithm)?;
    let verified = jws
        .verify_with(&key, algorithm)
        .map_err(|error| match error {
            JwtError::BadSignature => DpopError::Signature,
            _ => DpopError::Key,
        })?;
    let claims: ProofClaims = verified.claims().map_err(|_| DpopError::Malformed)?;
    let jti = string(claims.jti.as_ref(), "jti")?;
    if jti.len() > MAX_JTI {
        return Err(DpopError::Missing("jti"));
    }
    let htm = string(claims.htm.as_ref(), "htm")?;
    let htu = string(claims.htu.as_ref(), "htu")?;
    let iat = claims
        .iat
        .as_ref()
        .and_then(Value::as_i64)
        .ok_or(DpopError::Missing("iat"))?;
    if htm != request.method {
        return Err(DpopError::Method);
    }
    match (normalize_htu(htu), normalize_htu(request.url)) {
        (Some(presented), Some(expected)) if presented == expected => {}
        _ => return Err(DpopError::Url),
    }
    if iat > policy.now + policy.skew_secs || iat < policy.now - policy.max_age_secs {
        return Err(DpopError::Time);
    }
    if let Some(access_token) = request.access_token {
        let ath = string(claims.ath.as_ref(), "ath")?;
        if ath != access_token_hash(access_token) {
            return Err(DpopError::AccessTokenHash);
        }
    }
    if let Some(nonce) = request.nonce {
        if claims.nonce.as_ref().and_then(Value::as_str) != Some(nonce) {
            return Err(DpopError::Nonce);
        }
    }
    Ok(VerifiedProof {
        jkt,
        jti: jti.to_owned(),
        iat,
        nonce: claims
            .nonce
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SigningAlgorithm, SigningKey};
    use serde_json::json;

    const URL: &str = "https://mandate.example.com/token";
    /// One cache for the refusal cases: a key built for an earlier case must not let a broken
    /// later one through.
    static CACHE: std::sync::LazyLock<KeyCache> = std::sync::LazyLock::new(KeyCache::new);
    const NOW: i64 = 1_900_000_000;

    fn policy() -> ProofPolicy<'static> {
        ProofPolicy {
            algorithms: &[Algorithm::Es256, Algorithm::EdDsa],
            now: NOW,
            max_age_secs: 300,
            skew_secs: 60,
        }
    }

    fn request() -> ProofRequest<'static> {
        ProofRequest {
            method: "POST",
            url: URL,
            access_token: None,
            nonce: None,
        }
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// A proof signed by `key` with `header` and `claims` as given.
    fn signed(key: &SigningKey, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = key.sign_bytes(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    fn header(key: &SigningKey) -> Value {
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.public_key().jwk()})
    }

    fn claims() -> Value {
        json!({"jti": "p-1", "htm": "POST", "htu": URL, "iat": NOW})
    }

    fn es256() -> SigningKey {
        SigningKey::generate(SigningAlgorithm::Es256).unwrap()
    }

    #[test]
    fn a_good_proof_gives_its_keys_thumbprint() {
        let key = es256();
        let proof = signed(&key, &header(&key), &claims());
        let verified = verify_proof(&proof, &request(), &policy(), &KeyCache::new()).unwrap();
        assert_eq!(verified.jkt, thumbprint(key.public_key().jwk()).unwrap());
        assert_eq!((verified.jti.as_str(), verified.iat), ("p-1", NOW));
        // Query, fragment, case and the default port do not matter.
        let mut other = claims();
        other["htu"] = json!("HTTPS://Mandate.Example.com:443/token?x=1#f");
        verify_proof(
            &signed(&key, &header(&key), &other),
            &request(),
            &policy(),
            &KeyCache::new(),
        )
        .unwrap();
    }

    #[test]
    fn every_broken_part_is_refused() {
        let key = es256();
        // The key is in the cache before the broken proofs come.
        verify_proof(
            &signed(&key, &header(&key), &claims()),
            &request(),
            &policy(),
            &CACHE,
        )
        .unwrap();
        let with = |edit: &dyn Fn(&mut Value, &mut Value)| {
            let (mut h, mut c) = (header(&key), claims());
            edit(&mut h, &mut c);
            verify_proof(&signed(&key, &h, &c), &request(), &policy(), &CACHE).unwrap_err()
        };
        assert_eq!(with(&|h, _| h["typ"] = json!("JWT")), DpopError::WrongType);
        assert_eq!(with(&|h, _| h["typ"] = json!(null)), DpopError::WrongType);
        assert_eq!(with(&|h, _| h["alg"] = json!("none")), DpopError::Algorithm);
        assert_eq!(
            with(&|h, _| h["alg"] = json!("HS256")),
            DpopError::Algorithm
        );
        assert_eq!(
            with(&|h, _| h["alg"] = json!("RS256")),
            DpopError::Algorithm
        );
        assert_eq!(
            with(&|h, _| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
            DpopError::Key
        );
        // A private key in the header is refused, not used.
        assert_eq!(with(&|h, _| h["jwk"]["d"] = json!("AAAA")), DpopError::Key);
        assert_eq!(
            with(&|h, _| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
            DpopError::Key
        );
        assert_eq!(with(&|_, c| c["htm"] = json!("GET")), DpopError::Method);
        assert_eq!(
            with(&|_, c| c["htu"] = json!("https://mandate.example.com/revoke")),
            DpopError::Url
        );
        assert_eq!(
            with(&|_, c| c["htu"] = json!("https://evil.example.com/token")),
            DpopError::Url
        );
        assert_eq!(
            with(&|_, c| c["htu"] = json!("http://mandate.example.com/token")),
            DpopError::Url
        );
        assert_eq!(with(&|_, c| c["iat"] = json!(NOW - 301)), DpopError::Time);
        assert_eq!(with(&|_, c| c["iat"] = json!(NOW + 61)), DpopError::Time);
        for claim in ["jti", "htm", "htu", "iat"] {
            assert!(
                matches!(
                    with(&|_, c| {
                        c.as_object_mut().unwrap().remove(claim);
                    }),
                    DpopError::Missing(_)
                ),
                "{claim}"
            );
        }
        assert_eq!(with(&|h, _| h["crit"] = json!(["x"])), DpopError::Malformed);
    }

    #[test]
    fn a_proof_signed_by_another_key_than_its_jwk_is_refused() {
        let (key, other) = (es256(), es256());
        let cache = KeyCache::new();
        // Even with the named key's verifier already built.
        verify_proof(
            &signed(&key, &header(&key), &claims()),
            &request(),
            &policy(),
            &cache,
        )
        .unwrap();
        let proof = signed(&other, &header(&key), &claims());
        assert_eq!(
            verify_proof(&proof, &request(), &policy(), &cache),
            Err(DpopError::Signature)
        );
    }

    #[test]
    fn at_a_resource_server_the_proof_names_the_token_and_the_nonce() {
        let key = es256();
        let token = "eyJ.access.token";
        let at_rs = ProofRequest {
            method: "GET",
            url: "https://calendar.example.com/events",
            access_token: Some(token),
            nonce: Some("n-1"),
        };
        let mut c = json!({"jti": "p-2", "htm": "GET", "htu": "https://calendar.example.com/events",
                           "iat": NOW, "ath": access_token_hash(token), "nonce": "n-1"});
        verify_proof(
            &signed(&key, &header(&key), &c),
            &at_rs,
            &policy(),
            &KeyCache::new(),
        )
        .unwrap();
        c["ath"] = json!(access_token_hash("another.token"));
        assert_eq!(
            verify_proof(
                &signed(&key, &header(&key), &c),
                &at_rs,
                &policy(),
                &KeyCache::new()
            ),
            Err(DpopError::AccessTokenHash)
        );
        c["ath"] = json!(access_token_hash(token));
        c["nonce"] = json!("n-0");
        assert_eq!(
            verify_proof(
                &signed(&key, &header(&key), &c),
                &at_rs,
                &policy(),
                &KeyCache::new()
            ),
            Err(DpopError::Nonce)
        );
    }

    #[test]
    fn eddsa_proofs_verify_and_oversized_or_garbled_ones_do_not() {
        let key = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
        let h = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.public_key().jwk()});
        verify_proof(
            &signed(&key, &h, &claims()),
            &request(),
            &policy(),
            &KeyCache::new(),
        )
        .unwrap();
        assert_eq!(
            verify_proof(
                &"a".repeat(MAX_PROOF_BYTES + 1),
                &request(),
                &policy(),
                &KeyCache::new()
            ),
            Err(DpopError::Malformed)
        );
        assert_eq!(
            verify_proof("not.a.jwt", &request(), &policy(), &KeyCache::new()),
            Err(DpopError::Malformed)
        );
    }

    #[test]
    fn urls_normalize_as_dpop_compares_them() {
        assert_eq!(
            normalize_htu("https://A.example.com:443").as_deref(),
            Some("https://a.example.com/")
        );
        assert_eq!(
            normalize_htu("http://localhost:8080/token?q").as_deref(),
            Some("http://localhost:8080/token")
        );
        assert_eq!(normalize_htu("ftp://a.example.com/"), None);
        assert_eq!(normalize_htu("https://user@a.example.com/"), None);
        assert_eq!(normalize_htu("/token"), None);
    }
}
