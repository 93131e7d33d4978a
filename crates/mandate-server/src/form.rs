//! Reading the `application/x-www-form-urlencoded` bodies of the OAuth endpoints
//! (PROTOCOLS.md section 0.1): content type checked, size bounded, duplicates detected.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

use mandate_model::ScopeSet;

use crate::error::{ErrorCode, OAuthError};

/// Parameters that may legitimately repeat (RFC 8693 §2.1, RFC 8707 §2).
const REPEATABLE: [&str; 2] = ["resource", "audience"];

/// A parsed form body. Empty values count as absent; a non-repeatable parameter sent twice is an
/// error when it is read.
#[derive(Debug, Default, Clone)]
pub struct Form {
    params: HashMap<String, Vec<String>>,
}

impl Form {
    /// Reads and parses the body of `request`, refusing a wrong content type (400), a body larger
    /// than `limit` (413) and a body that is not UTF-8 (400).
    pub async fn read(
        request: &HttpRequest,
        mut payload: web::Payload,
        limit: usize,
    ) -> Result<Self, OAuthError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let essence = content_type.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "the request body must be application/x-www-form-urlencoded",
            ));
        }
        let too_large = || {
            OAuthError::invalid_request("the request body is too large")
                .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        };
        if let Some(length) = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if length > limit {
                return Err(too_large());
            }
        }
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|_| OAuthError::invalid_request("the request body could not be read"))?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Self::parse(&body)
    }

    /// Parses a body already in memory.
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        if std::str::from_utf8(body).is_err() {
            return Err(OAuthError::invalid_request("the request body is not UTF-8"));
        }
        let mut params: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if value.is_empty() {
                continue;
            }
            // RFC 6749 Appendix A: no parameter of these endpoints admits a control character
            // (ids and secrets are VSCHAR, scopes NQCHAR, audiences and resources URIs, tokens
            // base64url). Refused here, none can reach a log line or a stored record.
            if value.chars().any(char::is_control) {
                return Err(OAuthError::invalid_request(if is_safe_name(&name) {
                    format!("the parameter '{name}' holds a control character")
                } else {
                    "a parameter holds a control character".to_owned()
                }));
            }
            params
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Self { params })
    }

    /// The single value of `name`; `invalid_request` if it was sent more than once.
    pub fn single(&self, name: &'static str) -> Result<Option<&str>, OAuthError> {
        match self.params.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([value]) => Ok(Some(value.as_str())),
            Some(_) if REPEATABLE.contains(&name) => Err(OAuthError::invalid_request(format!(
                "only one '{name}' value is supported"
            ))),
            Some(_) => Err(OAuthError::invalid_request(format!(
                "the parameter '{name}' is repeated"
            ))),
        }
    }

    /// The required single value of `name`.
    pub fn required(&self, name: &'static str) -> Result<&str, OAuthError> {
        self.single(name)?.ok_or_else(|| {
            OAuthError::invalid_request(format!("the parameter '{name}' is missing"))
        })
    }

    /// The single value of a repeatable target parameter (`resource`, `audience`), when mandate
    /// takes one at most: sent twice is `invalid_target` with `too_many` (RFC 8707 §2).
    pub fn one_target(
        &self,
        name: &str,
        too_many: &'static str,
    ) -> Result<Option<String>, OAuthError> {
        match self.all(name) {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(OAuthError::new(ErrorCode::InvalidTarget, too_many)),
        }
    }

    /// The `scope` parameter, parsed: malformed is `invalid_scope` (RFC 6749 §3.3).
    pub fn scope(&self) -> Result<Option<ScopeSet>, OAuthError> {
        self.single("scope")?
            .map(ScopeSet::parse)
            .transpose()
            .map_err(|_| OAuthError::new(ErrorCode::InvalidScope, "scope is malformed"))
    }

    /// Every value of a repeatable parameter.
    pub fn all(&self, name: &str) -> &[String] {
        self.params.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// Refuses any repeated parameter, whether or not this endpoint reads it, so that an
    /// ambiguous request is never half-understood (PROTOCOLS.md section 0.1).
    pub fn refuse_duplicates(&self) -> Result<(), OAuthError> {
        match self
            .params
            .iter()
            .find(|(name, values)| values.len() > 1 && !REPEATABLE.contains(&name.as_str()))
        {
            Some((name, _)) if is_safe_name(name) => Err(OAuthError::invalid_request(format!(
                "the parameter '{name}' is repeated"
            ))),
            Some(_) => Err(OAuthError::invalid_request("a parameter is repeated")),
            None => Ok(()),
        }
    }
}

/// Parameter names are echoed in error descriptions only when they are plain identifiers.
fn is_safe_name(name: &str) -> bool {
    name.len() <= 40 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_are_absent() {
        let form = Form::parse(b"scope=&grant_type=x").unwrap();
        assert_eq!(form.single("scope").unwrap(), None);
        assert_eq!(form.single("grant_type").unwrap(), Some("x"));
    }

    #[test]
    fn duplicates_are_refused_except_repeatable_ones() {
        let form = Form::parse(b"grant_type=a&grant_type=b&resource=x&resource=y").unwrap();
        assert!(form.single("grant_type").is_err());
        assert!(form.refuse_duplicates().is_err());
        assert_eq!(form.all("resource").len(), 2);
        let form = Form::parse(b"resource=x&resource=y").unwrap();
        assert!(form.refuse_duplicates().is_ok());
    }

    #[test]
    fn percent_encoding_is_decoded() {
        let form = Form::parse(b"a=urn%3Aietf%3Ax+y").unwrap();
        assert_eq!(form.single("a").unwrap(), Some("urn:ietf:x y"));
    }

    #[test]
    fn control_characters_are_refused_in_any_value() {
        for body in [
            &b"audience=https%3A%2F%2Fapp.example.com%2F%0AINFO+forged"[..],
            b"client_id=agent%0D%0Aforged",
            b"resource=https%3A%2F%2Fapp.example.com%2F%1B%5B31m",
            b"scope=read%09write",
        ] {
            let error = Form::parse(body).unwrap_err();
            assert_eq!(error.code(), crate::error::ErrorCode::InvalidRequest);
        }
    }

    #[test]
    fn non_utf8_is_refused() {
        assert!(Form::parse(&[b'a', b'=', 0xff]).is_err());
    }
}
