use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::KeyPair;
use josekit::jws::{self, JwsSigner};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::jwk::{thumbprint, KeyError, VerifyingKey, VerifyingKeySet};
use crate::{Algorithm, JwtError, UnverifiedJws, Verified};

/// The algorithms mandate signs its own tokens with (DESIGN.md section 4: ES256 by default,
/// EdDSA by configuration; never HMAC, never `none`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    /// ECDSA P-256 SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// Ed25519.
    #[serde(rename = "EdDSA")]
    EdDsa,
}

impl SigningAlgorithm {
    /// The verification algorithm of the same name.
    pub fn algorithm(self) -> Algorithm {
        match self {
            SigningAlgorithm::Es256 => Algorithm::Es256,
            SigningAlgorithm::EdDsa => Algorithm::EdDsa,
        }
    }

    /// The JWA name.
    pub fn name(self) -> &'static str {
        self.algorithm().name()
    }

    /// Parses `ES256` or `EdDSA`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            _ => None,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A published public key: its JWK (public members, `kid` = RFC 7638 thumbprint, `use`, `alg`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    algorithm: SigningAlgorithm,
    jwk: Map<String, Value>,
}

impl PublicKey {
    /// The `kid`.
    pub fn kid(&self) -> &str {
        self.jwk
            .get("kid")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    /// The JWK as published.
    pub fn jwk(&self) -> &Map<String, Value> {
        &self.jwk
    }

    /// Reads the public half of a PKCS#8 PEM private key (for next and retired keys, which are
    /// published but do not sign).
    pub fn from_pkcs8_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        Ok(KeyMaterial::from_pem(algorithm, pem)?.public)
    }

    /// Like [`from_pkcs8_pem`](Self::from_pkcs8_pem), falling back to the other algorithm: a
    /// staged next key may bring a change of algorithm, and a retired key may be of the
    /// algorithm used before one. The error is the one for `preferred`.
    pub fn from_pkcs8_pem_any(preferred: SigningAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let other = match preferred {
            SigningAlgorithm::Es256 => SigningAlgorithm::EdDsa,
            SigningAlgorithm::EdDsa => SigningAlgorithm::Es256,
        };
        Self::from_pkcs8_pem(preferred, pem)
            .or_else(|error| Self::from_pkcs8_pem(other, pem).map_err(|_| error))
    }

    fn from_key_pair(algorithm: SigningAlgorithm, pair: &dyn KeyPair) -> Result<Self, KeyError> {
        let public = pair.to_jwk_public_key();
        let mut jwk: Map<String, Value> = public.as_ref().clone();
        // Keep exactly the public members of the key type, then add our own metadata.
        jwk.retain(|k, _| matches!(k.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"));
        let kid = thumbprint(&jwk)?;
        jwk.insert("kid".into(), Value::String(kid));
        jwk.insert("use".into(), Value::String("sig".into()));
        jwk.insert("alg".into(), Value::String(algorithm.name().into()));
        Ok(Self { algorithm, jwk })
    }
}

struct KeyMaterial {
    signer: Box<dyn JwsSigner>,
    public: PublicKey,
}

impl KeyMaterial {
    fn from_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let invalid = |e: josekit::JoseError| {
            KeyError::Invalid(format!(
                "not a PKCS#8 PEM {} private key ({e})",
                algorithm.name()
            ))
        };
        match algorithm {
            SigningAlgorithm::Es256 => {
                let pair = EcKeyPair::from_pem(pem, Some(EcCurve::P256)).map_err(invalid)?;
                let signer = jws::ES256.signer_from_pem(pem).map_err(invalid)?;
                Ok(Self {
                    signer: Box::new(signer),
                    public: PublicKey::from_key_pair(algorithm, &pair)?,
                })
            }
            SigningAlgorithm::EdDsa => {
                let pair = EdKeyPair::from_pem(pem).map_err(invalid)?;
                if pair.curve() != EdCurve::Ed25519 {
                    return Err(KeyError::Invalid("EdDSA keys must be Ed25519".into()));
                }
                let signer = jws::EdDSA.signer_from_pem(pem).map_err(invalid)?;
                Ok(Self {
                    signer: Box::new(signer),
                    public: PublicKey::from_key_pair(algorithm, &pair)?,
                })
            }
        }
    }
}

/// mandate's signing key. The private key lives inside OpenSSL and is never printed: `Debug`
/// shows only the `kid`.
pub struct SigningKey {
    signer: Box<dyn JwsSigner>,
    public: PublicKey,
}

#[derive(Serialize)]
struct OutgoingHeader<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

impl SigningKey {
    /// Generates a new key and returns it as PKCS#8 PEM (zeroized when dropped).
    pub fn generate_pem(algorithm: SigningAlgorithm) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let failed =
            |e: josekit::JoseError| KeyError::Invalid(format!("key generation failed: {e}"));
        let pem = match algorithm {
            SigningAlgorithm::Es256 => EcKeyPair::generate(EcCurve::P256)
                .map_err(failed)?
                .to_pem_private_key(),
            SigningAlgorithm::EdDsa => EdKeyPair::generate(EdCurve::Ed25519)
                .map_err(failed)?
                .to_pem_private_key(),
        };
        Ok(Zeroizing::new(pem))
    }

    /// A fresh key that exists only in memory (development mode).
    pub fn generate(algorithm: SigningAlgorithm) -> Result<Self, KeyError> {
        let pem = Self::generate_pem(algorithm)?;
        Self::from_pkcs8_pem(algorithm, &pem)
    }

    /// Loads a PKCS#8 PEM private key for `algorithm`; a key of another type is refused.
    pub fn from_pkcs8_pem(algorithm: SigningAlgorithm, pem: &[u8]) -> Result<Self, KeyError> {
        let material = KeyMaterial::from_pem(algorithm, pem)?;
        Ok(Self {
            signer: material.signer,
            public: material.public,
        })
    }

    /// The public key, as published.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The `kid`.
    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    /// The algorithm.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.public.algorithm
    }

    /// Signs `claims` as a compact JWS with header `{"alg","typ","kid"}`.
    ///
    /// Claims are serialised straight from their typed form, so NumericDates stay integers.
    pub fn sign<C: Serialize + ?Sized>(&self, typ: &str, claims: &C) -> Result<String, JwtError> {
        let header = OutgoingHeader {
            alg: self.algorithm().name(),
            typ,
            kid: self.kid(),
        };
        let header_json =
            serde_json::to_vec(&header).map_err(|e| JwtError::Signing(e.to_string()))?;
        let claims_json =
            serde_json::to_vec(claims).map_err(|e| JwtError::Signing(e.to_string()))?;
        let mut token = String::with_capacity(
            (header_json.len() + claims_json.len()) * 4 / 3 + self.signer.signature_len() * 2,
        );
        URL_SAFE_NO_PAD.encode_string(&header_json, &mut token);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        let signature = self
            .signer
            .sign(token.as_bytes())
            .map_err(|e| JwtError::Signing(e.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }
}

impl SigningKey {
    /// Signs `claims` as an RFC 9449 DPoP proof: header `{"typ": "dpop+jwt", "alg", "jwk"}`,
    /// the key's public JWK in the header (without its `kid`), as an agent sends it.
    pub fn sign_dpop_proof<C: Serialize + ?Sized>(&self, claims: &C) -> Result<String, JwtError> {
        let mut jwk = self.public_key().jwk().clone();
        jwk.remove("kid");
        let header = serde_json::json!({
            "typ": crate::dpop::TYP_DPOP,
            "alg": self.algorithm().name(),
            "jwk": jwk,
        });
        let header_json =
            serde_json::to_vec(&header).map_err(|e| JwtError::Signing(e.to_string()))?;
        let claims_json =
            serde_json::to_vec(claims).map_err(|e| JwtError::Signing(e.to_string()))?;
        let mut token = URL_SAFE_NO_PAD.encode(&header_json);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims_json, &mut token);
        let signature = self.sign_bytes(token.as_bytes())?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// The raw signature of `input` (tests build deliberately broken tokens with it).
    pub(crate) fn sign_bytes(&self, input: &[u8]) -> Result<Vec<u8>, JwtError> {
        self.signer
            .sign(input)
            .map_err(|e| JwtError::Signing(e.to_string()))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

/// mandate's keys: the one that signs, the next one (published before it signs), and retired
/// ones (published until every token they signed has expired) — DESIGN.md section 9.
///
/// The JWKS document and the verifying keys are built once here, so that a node swapping in a
/// reloaded set swaps all three together and never publishes one set while verifying with another.
#[derive(Debug)]
pub struct KeySet {
    active: SigningKey,
    next: Option<PublicKey>,
    retired: Vec<PublicKey>,
    verifying: VerifyingKeySet,
    algorithms: Vec<Algorithm>,
    jwks: Value,
}

impl KeySet {
    /// A key set; `kid`s must be distinct.
    pub fn new(
        active: SigningKey,
        next: Option<PublicKey>,
        retired: Vec<PublicKey>,
    ) -> Result<Self, KeyError> {
        let published: Vec<&PublicKey> = std::iter::once(active.public_key())
            .chain(next.iter())
            .chain(retired.iter())
            .collect();
        let mut seen = std::collections::HashSet::new();
        for key in &published {
            if !seen.insert(key.kid().to_owned()) {
                return Err(KeyError::DuplicateKid(key.kid().to_owned()));
            }
        }
        let verifying = VerifyingKeySet::new(
            published
                .iter()
                .map(|key| VerifyingKey::from_jwk(key.jwk(), &[key.algorithm().algorithm()]))
                .collect::<Result<Vec<_>, _>>()?,
        )?;
        let mut algorithms: Vec<Algorithm> = Vec::with_capacity(2);
        for key in &published {
            let algorithm = key.algorithm().algorithm();
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        let jwks = serde_json::json!({
            "keys": published
                .iter()
                .map(|key| Value::Object(key.jwk().clone()))
                .collect::<Vec<_>>(),
        });
        Ok(Self {
            active,
            next,
            retired,
            verifying,
            algorithms,
            jwks,
        })
    }

    /// The key that signs.
    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// The staged next key, if any.
    pub fn next(&self) -> Option<&PublicKey> {
        self.next.as_ref()
    }

    /// The retired keys.
    pub fn retired(&self) -> &[PublicKey] {
        &self.retired
    }

    /// Every published public key: active first, then next, then retired.
    pub fn published(&self) -> impl Iterator<Item = &PublicKey> {
        std::iter::once(self.active.public_key())
            .chain(self.next.iter())
            .chain(self.retired.iter())
    }

    /// Whether a key with this `kid` is published.
    pub fn publishes(&self, kid: &str) -> bool {
        self.published().any(|key| key.kid() == kid)
    }

    /// The JWKS document (RFC 7517): public members only.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The published keys as a verifying key set, for checking mandate's own tokens.
    pub fn verifying_keys(&self) -> &VerifyingKeySet {
        &self.verifying
    }

    /// The algorithms of the published keys: what mandate's own tokens may be signed with.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Verifies a token signed by one of the published keys, with that key's algorithm only.
    pub fn verify(&self, jws: &UnverifiedJws<'_>) -> Result<Verified, JwtError> {
        jws.verify(&self.verifying, &self.algorithms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Claims {
        sub: String,
        iat: i64,
    }

    fn round_trip(algorithm: SigningAlgorithm) {
        let key = SigningKey::generate(algorithm).unwrap();
        let set = KeySet::new(key, None, vec![]).unwrap();
        let claims = Claims {
            sub: "corp|alice".into(),
            iat: 1_764_316_800,
        };
        let token = set.active().sign("at+jwt", &claims).unwrap();
        let jws = UnverifiedJws::parse(&token).unwrap();
        assert!(jws.header().typ_is("at+jwt"));
        assert_eq!(jws.header().kid.as_deref(), Some(set.active().kid()));
        let verified = jws
            .verify(set.verifying_keys(), &[algorithm.algorithm()])
            .unwrap();
        assert_eq!(verified.claims::<Claims>().unwrap(), claims);
    }

    #[test]
    fn es256_round_trip() {
        round_trip(SigningAlgorithm::Es256);
    }

    #[test]
    fn eddsa_round_trip() {
        round_trip(SigningAlgorithm::EdDsa);
    }

    #[test]
    fn jwks_has_public_members_and_thumbprint_kid() {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let next = PublicKey::from_pkcs8_pem(
            SigningAlgorithm::EdDsa,
            &SigningKey::generate_pem(SigningAlgorithm::EdDsa).unwrap(),
        )
        .unwrap();
        let set = KeySet::new(key, Some(next), vec![]).unwrap();
        let jwks = set.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for key in keys {
            let map = key.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(!map.contains_key(private));
            }
            assert_eq!(map["use"], "sig");
            let mut public = map.clone();
            public.remove("kid");
            assert_eq!(map["kid"].as_str().unwrap(), thumbprint(&public).unwrap());
        }
    }

    #[test]
    fn a_pem_of_the_wrong_type_is_refused() {
        let ed = SigningKey::generate_pem(SigningAlgorithm::EdDsa).unwrap();
        assert!(SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &ed).is_err());
        assert!(SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, b"garbage").is_err());
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let ours = KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap();
        let theirs = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let token = theirs
            .sign(
                "at+jwt",
                &Claims {
                    sub: "x".into(),
                    iat: 0,
                },
            )
            .unwrap();
        let jws = UnverifiedJws::parse(&token).unwrap();
        // Their kid is unknown to us.
        assert_eq!(
            jws.verify(ours.verifying_keys(), &Algorithm::ALL)
                .unwrap_err(),
            JwtError::UnknownKey
        );
    }

    #[test]
    fn header_supplied_keys_and_urls_are_never_used() {
        // RFC 8725 §3.10: an attacker signs with its own key and points at it from the header
        // (`jwk`, `jku`, `x5u`, `x5c`), reusing our `kid`. Only our key set decides.
        let ours = KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap();
        let attacker = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let honest = attacker
            .sign(
                "at+jwt",
                &Claims {
                    sub: "x".into(),
                    iat: 0,
                },
            )
            .unwrap();
        let (_, rest) = honest.split_once('.').unwrap();
        let header = serde_json::json!({
            "alg": "ES256",
            "typ": "at+jwt",
            "kid": ours.active().kid(),
            "jwk": Value::Object(attacker.public_key().jwk().clone()),
            "jku": "https://attacker.example/jwks",
            "x5u": "https://attacker.example/cert",
            "x5c": ["MIIB"],
        });
        let (payload, _) = rest.split_once('.').unwrap();
        let input = format!("{}.{payload}", URL_SAFE_NO_PAD.encode(header.to_string()));
        let signature = attacker.signer.sign(input.as_bytes()).unwrap();
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature));
        let jws = UnverifiedJws::parse(&forged).unwrap();
        assert_eq!(
            jws.verify(ours.verifying_keys(), &Algorithm::ALL)
                .unwrap_err(),
            JwtError::BadSignature
        );
    }

    #[test]
    fn a_key_set_verifies_with_every_published_key_and_nothing_else() {
        let old = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let next_pem = SigningKey::generate_pem(SigningAlgorithm::EdDsa).unwrap();
        let next = SigningKey::from_pkcs8_pem(SigningAlgorithm::EdDsa, &next_pem).unwrap();
        let claims = Claims {
            sub: "corp|alice".into(),
            iat: 1,
        };
        let by_old = old.sign("at+jwt", &claims).unwrap();
        let by_next = next.sign("at+jwt", &claims).unwrap();
        let old_public = old.public_key().clone();
        // Staged: the old key signs, the next one is published.
        let staged = KeySet::new(
            old,
            Some(PublicKey::from_pkcs8_pem_any(SigningAlgorithm::Es256, &next_pem).unwrap()),
            vec![],
        )
        .unwrap();
        assert!(staged.publishes(next.kid()));
        assert_eq!(
            staged.algorithms(),
            &[Algorithm::Es256, Algorithm::EdDsa],
            "the staged key's algorithm is accepted for the staged key only"
        );
        for token in [&by_old, &by_next] {
            staged
                .verify(&UnverifiedJws::parse(token).unwrap())
                .unwrap();
        }
        // Promoted, then the old key dropped: its tokens no longer verify.
        let promoted = KeySet::new(next, None, vec![old_public]).unwrap();
        promoted
            .verify(&UnverifiedJws::parse(&by_old).unwrap())
            .unwrap();
        let dropped = KeySet::new(
            SigningKey::from_pkcs8_pem(SigningAlgorithm::EdDsa, &next_pem).unwrap(),
            None,
            vec![],
        )
        .unwrap();
        assert_eq!(dropped.algorithms(), &[Algorithm::EdDsa]);
        // Refused before any key is looked up: no published key uses ES256 any more.
        assert_eq!(
            dropped
                .verify(&UnverifiedJws::parse(&by_old).unwrap())
                .unwrap_err(),
            JwtError::AlgorithmNotAllowed("ES256".into())
        );
        assert_eq!(dropped.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_key_may_not_be_published_twice() {
        let pem = SigningKey::generate_pem(SigningAlgorithm::Es256).unwrap();
        let active = SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem).unwrap();
        let again = PublicKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem).unwrap();
        assert!(matches!(
            KeySet::new(active, Some(again.clone()), vec![]),
            Err(KeyError::DuplicateKid(_))
        ));
        let active = SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem).unwrap();
        assert!(matches!(
            KeySet::new(active, None, vec![again]),
            Err(KeyError::DuplicateKid(_))
        ));
    }

    #[test]
    fn either_algorithm_is_read_but_garbage_is_not() {
        let ed = SigningKey::generate_pem(SigningAlgorithm::EdDsa).unwrap();
        let public = PublicKey::from_pkcs8_pem_any(SigningAlgorithm::Es256, &ed).unwrap();
        assert_eq!(public.algorithm(), SigningAlgorithm::EdDsa);
        let error = PublicKey::from_pkcs8_pem_any(SigningAlgorithm::Es256, b"garbage").unwrap_err();
        assert!(error.to_string().contains("ES256"), "{error}");
    }

    #[test]
    fn debug_never_shows_key_material() {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains(key.kid()));
        assert!(!shown.contains("PRIVATE"));
    }
}
