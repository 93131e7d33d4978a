use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::{Algorithm, JwtError, VerifyingKeySet};

/// The largest compact JWS mandate will look at. Real ID tokens and assertions are a few KiB;
/// anything far larger is refused before any decoding or cryptography.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The deepest nesting of arrays and objects accepted in a header or in claims. mandate's deepest
/// legitimate structure is a token's nested `act` chain: at most `tokens.max_chain_depth` (32)
/// levels inside the claims object. A signed token from a trusted issuer is still input: without
/// a bound, a few KiB of `[[[[…` cost a parser's stack and time on every verification.
pub const MAX_JSON_DEPTH: usize = 40;

/// Refuses JSON nested deeper than [`MAX_JSON_DEPTH`], before it is parsed. Brackets inside
/// strings do not count; the text need not be valid JSON (the parser judges that after).
pub fn check_json_depth(json: &[u8]) -> Result<(), JwtError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(JwtError::Malformed("JSON nested too deeply"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The members of a JOSE header that mandate reads. Everything else is ignored, and in particular
/// `jwk`, `jku`, `x5u` and `x5c` are never used to find a key (RFC 8725 §3.10).
#[derive(Debug, Clone, Deserialize)]
pub struct Header {
    /// The algorithm the token claims; only ever checked against an allow-list.
    pub alg: String,
    /// The explicit type.
    #[serde(default)]
    pub typ: Option<String>,
    /// The key id: a lookup key only.
    #[serde(default)]
    pub kid: Option<String>,
    /// Critical extensions: present at all means refused, as none is understood.
    #[serde(default)]
    pub crit: Option<Value>,
}

impl Header {
    /// Whether `typ` is `expected`, compared case-sensitively after removing an optional
    /// `application/` prefix (RFC 7515 §4.1.9, decision D5).
    pub fn typ_is(&self, expected: &str) -> bool {
        self.typ.as_deref().map(strip_application) == Some(expected)
    }

    /// Whether the token carries an explicit `typ` of another kind than those in `own`
    /// (RFC 8725 §3.12: each validator refuses the other kinds' types).
    pub fn typ_is_foreign_explicit(&self, own: &[&str]) -> bool {
        match self.typ.as_deref().map(strip_application) {
            None => false,
            // Every explicit type in use (urn::EXPLICIT_TYPS and any future one) is `…+jwt`.
            Some(typ) => typ.ends_with("+jwt") && !own.contains(&typ),
        }
    }
}

fn strip_application(typ: &str) -> &str {
    typ.strip_prefix("application/").unwrap_or(typ)
}

/// A compact JWS split and decoded, its signature not yet checked.
#[derive(Debug, Clone)]
pub struct UnverifiedJws<'a> {
    header: Header,
    signing_input: &'a str,
    payload_b64: &'a str,
    signature: Vec<u8>,
}

/// A JWS whose signature has been verified by a trusted key.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The header.
    pub header: Header,
    /// The algorithm that verified the signature.
    pub algorithm: Algorithm,
    /// The `kid` of the key that verified it, if that key has one.
    pub kid: Option<String>,
    payload: Vec<u8>,
}

impl Verified {
    /// The payload parsed into claims of type `T`.
    pub fn claims<T: DeserializeOwned>(&self) -> Result<T, JwtError> {
        parse_claims(&self.payload)
    }
}

fn parse_claims<T: DeserializeOwned>(payload: &[u8]) -> Result<T, JwtError> {
    // The payload must be a JSON object (RFC 7519 §7.2 step 10).
    if payload.first() != Some(&b'{') {
        return Err(JwtError::Malformed("claims are not a JSON object"));
    }
    check_json_depth(payload)?;
    serde_json::from_slice(payload).map_err(|e| JwtError::Claims(e.to_string()))
}

impl<'a> UnverifiedJws<'a> {
    /// Splits and decodes a compact JWS. Nothing here is trusted yet.
    pub fn parse(token: &'a str) -> Result<Self, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLarge(MAX_TOKEN_BYTES));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated segments"));
        };
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        if header_json.first() != Some(&b'{') {
            return Err(JwtError::Malformed("header is not a JSON object"));
        }
        check_json_depth(&header_json)?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|_| JwtError::Malformed("header is not a valid JOSE header"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        // The payload is decoded only after verification, but must be base64url now.
        if !payload_b64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(JwtError::Malformed("payload is not base64url"));
        }
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        Ok(Self {
            header,
            signing_input,
            payload_b64,
            signature,
        })
    }

    /// The header, untrusted.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// `header.payload` as sent: exactly what the issuer signed. This, not the whole compact
    /// token, is a token's identity: an ECDSA signature `(r, s)` has a twin `(r, n - s)` that
    /// verifies as well, so whoever holds a token can make another spelling of it without the key.
    pub fn signing_input(&self) -> &'a str {
        self.signing_input
    }

    /// Verifies the signature with `keys`, accepting only algorithms in `allowed`.
    ///
    /// The header's `alg` must name an algorithm in `allowed` (so `none` and HMAC never pass);
    /// the key is chosen by `kid` when there is one, else every key is tried; a key is only used
    /// with an algorithm of its own type. `crit` is refused outright.
    pub fn verify(
        &self,
        keys: &VerifyingKeySet,
        allowed: &[Algorithm],
    ) -> Result<Verified, JwtError> {
        if self.header.crit.is_some() {
            return Err(JwtError::CriticalHeader);
        }
        let algorithm = Algorithm::from_name(&self.header.alg)
            .filter(|alg| allowed.contains(alg))
            .ok_or_else(|| JwtError::AlgorithmNotAllowed(sanitize(&self.header.alg)))?;
        let mut tried_any = false;
        for key in keys.candidates(self.header.kid.as_deref()) {
            let Some(verifier) = key.verifier(algorithm) else {
                continue;
            };
            tried_any = true;
            if verifier
                .verify(self.signing_input.as_bytes(), &self.signature)
                .is_ok()
            {
                let payload = URL_SAFE_NO_PAD
                    .decode(self.payload_b64)
                    .map_err(|_| JwtError::Malformed("payload is not base64url"))?;
                return Ok(Verified {
                    header: self.header.clone(),
                    algorithm,
                    kid: key.kid().map(str::to_owned),
                    payload,
                });
            }
        }
        Err(if tried_any {
            JwtError::BadSignature
        } else {
            JwtError::UnknownKey
        })
    }

    /// Verifies the signature with `key` and `algorithm` alone (a DPoP proof's own key), with
    /// the same refusals as [`UnverifiedJws::verify`] but no `kid` lookup.
    pub(crate) fn verify_with(
        &self,
        key: &crate::VerifyingKey,
        algorithm: Algorithm,
    ) -> Result<Verified, JwtError> {
        if self.header.crit.is_some() {
            return Err(JwtError::CriticalHeader);
        }
        if Algorithm::from_name(&self.header.alg) != Some(algorithm) {
            return Err(JwtError::AlgorithmNotAllowed(sanitize(&self.header.alg)));
        }
        let verifier = key.verifier(algorithm).ok_or(JwtError::UnknownKey)?;
        verifier
            .verify(self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwtError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload_b64)
            .map_err(|_| JwtError::Malformed("payload is not base64url"))?;
        Ok(Verified {
            header: self.header.clone(),
            algorithm,
            kid: None,
            payload,
        })
    }

    /// The claims without any verification. Only for display (`mandate token decode`) and for
    /// choosing which key set to verify with; never for a decision.
    pub fn dangerous_unverified_claims<T: DeserializeOwned>(&self) -> Result<T, JwtError> {
        let payload = URL_SAFE_NO_PAD
            .decode(self.payload_b64)
            .map_err(|_| JwtError::Malformed("payload is not base64url"))?;
        parse_claims(&payload)
    }
}

/// Header values end up in error messages and logs: keep them short and printable.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .take(16)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn parse_refuses_malformed_shapes() {
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.e30.AA"] {
            assert!(UnverifiedJws::parse(bad).is_err(), "{bad}");
        }
        let not_object = format!("{}.{}.", b64("[1]"), b64("{}"));
        assert!(UnverifiedJws::parse(&not_object).is_err());
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            UnverifiedJws::parse(&huge).unwrap_err(),
            JwtError::TooLarge(MAX_TOKEN_BYTES)
        );
    }

    #[test]
    fn json_nested_past_the_bound_is_refused_in_the_header_and_the_claims() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        // 5,000 levels fit in the size bound: refused in the header before it is parsed.
        let header = format!(r#"{{"alg":"ES256","x":{}}}"#, nested(5000));
        let token = format!("{}.{}.AA", b64(&header), b64("{}"));
        assert!(token.len() < MAX_TOKEN_BYTES);
        assert_eq!(
            UnverifiedJws::parse(&token).unwrap_err(),
            JwtError::Malformed("JSON nested too deeply")
        );
        // The bound itself passes; one more level does not (the header object is a level).
        let at_bound = format!(r#"{{"alg":"ES256","x":{}}}"#, nested(MAX_JSON_DEPTH - 1));
        assert!(UnverifiedJws::parse(&format!("{}.{}.AA", b64(&at_bound), b64("{}"))).is_ok());
        let past = format!(r#"{{"alg":"ES256","x":{}}}"#, nested(MAX_JSON_DEPTH));
        assert!(UnverifiedJws::parse(&format!("{}.{}.AA", b64(&past), b64("{}"))).is_err());
        // Claims: checked before they are parsed, whatever the type they are read into.
        let claims = format!(r#"{{"sub":"x","deep":{}}}"#, nested(5000));
        assert_eq!(
            parse_claims::<Value>(claims.as_bytes()).unwrap_err(),
            JwtError::Malformed("JSON nested too deeply")
        );
        // Brackets inside strings, escaped quotes included, are not nesting.
        let text = format!(r#"{{"sub":"\"{}"}}"#, "[".repeat(5000));
        assert!(parse_claims::<Value>(text.as_bytes()).is_ok());
    }

    #[test]
    fn alg_none_is_refused_before_any_key() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"x"}"#));
        let jws = UnverifiedJws::parse(&token).unwrap();
        let keys = VerifyingKeySet::default();
        assert!(matches!(
            jws.verify(&keys, &Algorithm::ALL),
            Err(JwtError::AlgorithmNotAllowed(_))
        ));
    }

    #[test]
    fn crit_is_refused() {
        let token = format!(
            "{}.{}.AA",
            b64(r#"{"alg":"ES256","crit":["exp"],"exp":1}"#),
            b64("{}")
        );
        let jws = UnverifiedJws::parse(&token).unwrap();
        assert_eq!(
            jws.verify(&VerifyingKeySet::default(), &Algorithm::ALL)
                .unwrap_err(),
            JwtError::CriticalHeader
        );
    }

    #[test]
    fn typ_comparison_follows_d5() {
        let header = |typ: &str| Header {
            alg: "ES256".into(),
            typ: Some(typ.into()),
            kid: None,
            crit: None,
        };
        assert!(header("at+jwt").typ_is("at+jwt"));
        assert!(header("application/at+jwt").typ_is("at+jwt"));
        assert!(!header("AT+JWT").typ_is("at+jwt"));
        assert!(header("at+jwt").typ_is_foreign_explicit(&["JWT"]));
        assert!(header("dpop+jwt").typ_is_foreign_explicit(&[]));
        assert!(!header("JWT").typ_is_foreign_explicit(&[]));
    }
}
