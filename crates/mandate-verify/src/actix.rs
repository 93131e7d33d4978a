//! actix-web integration (feature `actix-web`): the [`Authenticated`] extractor and RFC 6750
//! error responses.
//!
//! ```no_run
//! use actix_web::{web, App, HttpResponse};
//! use mandate_verify::actix::{require_scope, Authenticated};
//! use mandate_verify::Verifier;
//!
//! async fn events(auth: Authenticated) -> actix_web::Result<HttpResponse> {
//!     require_scope(&auth, "calendar.read")?;
//!     Ok(HttpResponse::Ok().body(format!("{} for {}", auth.current_actor(), auth.subject())))
//! }
//!
//! fn app(verifier: Verifier) -> App<
//!     impl actix_web::dev::ServiceFactory<
//!         actix_web::dev::ServiceRequest,
//!         Config = (),
//!         Response = actix_web::dev::ServiceResponse,
//!         Error = actix_web::Error,
//!         InitError = (),
//!     >,
//! > {
//!     App::new()
//!         .app_data(web::Data::new(verifier))
//!         .route("/events", web::get().to(events))
//! }
//! ```
//!
//! Responses say no more than RFC 6750 §3 does — the error code, never why a token was refused
//! (the reason goes to the log at debug level):
//!
//! | situation | status | `WWW-Authenticate` |
//! |---|---|---|
//! | no `Authorization` header, or another scheme (§3.1: no error code) | 401 | `Bearer` |
//! | more than one `Authorization` header | 400 | `Bearer error="invalid_request"` |
//! | malformed, wrongly signed, foreign, expired or revoked token | 401 | `Bearer error="invalid_token"` |
//! | valid token without the scope ([`require_scope`]) | 403 | `Bearer error="insufficient_scope", scope="…"` |
//! | revocation status (or the keys) unavailable: fail closed | 503 | — |
//! | no `web::Data<Verifier>` in the app data (a wiring bug) | 500 | — |

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use mandate_model::ScopeSet;

use crate::{VerifiedToken, Verifier, VerifyError};

/// The verified token of a request that presented `Authorization: Bearer <mandate token>`.
///
/// Extracting it verifies the token with the `web::Data<Verifier>` in the app data; a request
/// without a valid token never reaches the handler (see the module docs for the responses).
#[derive(Debug, Clone)]
pub struct Authenticated(pub VerifiedToken);

impl Authenticated {
    /// The verified token.
    pub fn into_inner(self) -> VerifiedToken {
        self.0
    }
}

impl Deref for Authenticated {
    type Target = VerifiedToken;

    fn deref(&self) -> &VerifiedToken {
        &self.0
    }
}

impl FromRequest for Authenticated {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let verifier = req.app_data::<web::Data<Verifier>>().cloned();
        let credentials = bearer_token(req);
        Box::pin(async move {
            let Some(verifier) = verifier else {
                tracing::error!(
                    "Authenticated used without web::Data<Verifier> in the app data: \
                     register it with App::app_data(web::Data::new(verifier))"
                );
                return Err(BearerError::Misconfigured.into());
            };
            let token = credentials?;
            match verifier.verify(&token).await {
                Ok(verified) => Ok(Authenticated(verified)),
                Err(error) => Err(BearerError::from(error).into()),
            }
        })
    }
}

/// The bearer token of the request (RFC 6750 §2.1: the `Authorization` header only; tokens in
/// the query or the body are not read).
fn bearer_token(req: &HttpRequest) -> Result<String, BearerError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        // §2: more than one way (here: more than one header) of presenting a token.
        return Err(BearerError::InvalidRequest);
    }
    let value = value.to_str().map_err(|_| BearerError::InvalidToken)?;
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    // RFC 7235 §2.1: the scheme is case-insensitive. Another scheme is no bearer credential at
    // all (§3.1: answer without an error code).
    if !scheme.eq_ignore_ascii_case("Bearer") {
        return Err(BearerError::Missing);
    }
    let token = credentials.trim_matches(' ');
    if !is_token68(token) {
        return Err(BearerError::InvalidToken);
    }
    Ok(token.to_owned())
}

/// RFC 6750 §2.1 `b64token`: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=".
fn is_token68(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// `Ok` when `token` grants `scope`; otherwise an error answering 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"` (RFC 6750 §3.1).
pub fn require_scope(token: &VerifiedToken, scope: &str) -> Result<(), actix_web::Error> {
    token
        .require_scope(scope)
        .map_err(|error| BearerError::from(error).into())
}

/// An RFC 6750 error response. Build one from a [`VerifyError`] to answer as the extractor
/// does when verifying by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// No bearer credentials: 401, `WWW-Authenticate: Bearer`.
    Missing,
    /// A malformed request (several `Authorization` headers): 400 `invalid_request`.
    InvalidRequest,
    /// The token is not acceptable: 401 `invalid_token`.
    InvalidToken,
    /// The token lacks this scope: 403 `insufficient_scope`.
    InsufficientScope(String),
    /// The verifier cannot decide (revocation status or keys unavailable): 503, fail closed.
    Unavailable,
    /// The app is wired wrongly (no `web::Data<Verifier>`): 500.
    Misconfigured,
}

impl From<VerifyError> for BearerError {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::InsufficientScope(scope) => Self::InsufficientScope(scope),
            VerifyError::RevocationUnavailable(_)
            | VerifyError::Keys(_)
            | VerifyError::Discovery(_) => Self::Unavailable,
            VerifyError::Malformed
            | VerifyError::WrongType
            | VerifyError::Algorithm
            | VerifyError::Signature
            | VerifyError::UnknownKey
            | VerifyError::Issuer
            | VerifyError::Audience
            | VerifyError::Expired
            | VerifyError::NotYetValid
            | VerifyError::Revoked { .. } => Self::InvalidToken,
        }
    }
}

impl fmt::Display for BearerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "bearer token required",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Unavailable => "token verification unavailable",
            Self::Misconfigured => "token verification not configured",
        })
    }
}

impl BearerError {
    /// The `WWW-Authenticate` challenge, for the statuses RFC 6750 §3 gives one.
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Missing => Some("Bearer".into()),
            Self::InvalidRequest => Some(r#"Bearer error="invalid_request""#.into()),
            Self::InvalidToken => Some(r#"Bearer error="invalid_token""#.into()),
            Self::InsufficientScope(scope) => {
                // Only a well-formed scope token goes into the quoted string (RFC 6749 §3.3
                // excludes '"' and '\'), so the header cannot be broken by the app's input.
                let valid = ScopeSet::from_tokens([scope.as_str()]).is_ok();
                Some(if valid {
                    format!(r#"Bearer error="insufficient_scope", scope="{scope}""#)
                } else {
                    r#"Bearer error="insufficient_scope""#.into()
                })
            }
            Self::Unavailable | Self::Misconfigured => None,
        }
    }
}

impl ResponseError for BearerError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Missing | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest => StatusCode::BAD_REQUEST,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Misconfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let Some(challenge) = self.challenge() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
        }
        response.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token68_shapes() {
        for ok in ["abc", "a.b.c", "a-b_c~d+e/f==", "eyJ0.eyJ1.sig"] {
            assert!(is_token68(ok), "{ok}");
        }
        for bad in ["", "==", "a b", "a\"b", "a,b", "ä"] {
            assert!(!is_token68(bad), "{bad}");
        }
    }

    #[test]
    fn insufficient_scope_never_breaks_the_header() {
        let challenge = BearerError::InsufficientScope("x\" error=\"y".into()).challenge();
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope""#)
        );
    }
}
