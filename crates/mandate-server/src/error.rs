//! The one place that knows HTTP status codes for the OAuth endpoints: every domain error becomes
//! an [`OAuthError`], which renders as an RFC 6749 §5.2 body.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The RFC 6749 §5.2 (and extension) error codes mandate answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Missing, duplicated or malformed parameter; refused subject token (RFC 8693 §2.2.2).
    InvalidRequest,
    /// Client authentication failed.
    InvalidClient,
    /// An assertion grant is invalid (RFC 7523 §3.1).
    InvalidGrant,
    /// The client may not use this grant.
    UnauthorizedClient,
    /// Unknown `grant_type`.
    UnsupportedGrantType,
    /// Scope beyond what is allowed.
    InvalidScope,
    /// Audience or resource not allowed (RFC 8707, RFC 8693).
    InvalidTarget,
    /// A bad, replayed or missing DPoP proof (RFC 9449 §5).
    InvalidDpopProof,
    /// The DPoP proof must carry the server's nonce (RFC 9449 §8), given in `DPoP-Nonce`.
    UseDpopNonce,
    /// Rate limited.
    SlowDown,
    /// The store cannot be reached.
    TemporarilyUnavailable,
    /// An internal fault.
    ServerError,
}

/// Written as [`ErrorCode::as_str`], the one place that spells the codes.
impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl ErrorCode {
    /// The code as it is written in an error response.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::ServerError => "server_error",
        }
    }
}

/// An OAuth error response: a code, a fixed safe description, and how it travels over HTTP.
///
/// Descriptions are written by mandate, never copied from input: they must not echo secrets or
/// token contents (DESIGN.md section 5).
#[derive(Debug, Clone)]
pub struct OAuthError {
    code: ErrorCode,
    description: Cow<'static, str>,
    status: StatusCode,
    basic_challenge: bool,
    retry_after: Option<u64>,
    dpop_nonce: Option<String>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorCode,
    error_description: &'a str,
}

impl OAuthError {
    /// An error with the status that goes with its code.
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        let status = match code {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::SlowDown => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            code,
            description: description.into(),
            status,
            basic_challenge: false,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    /// `invalid_request`.
    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    /// `invalid_client`.
    pub fn invalid_client(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClient, description)
    }

    /// `temporarily_unavailable`, with a `Retry-After` of one second.
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the authorization server cannot reach its store; retry shortly",
        )
        .with_retry_after(1)
    }

    /// `temporarily_unavailable` because the store failed during `operation`: the cause is
    /// logged (it is never sent), the client is told to retry.
    pub fn store_down(operation: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, operation, "store unavailable");
        Self::unavailable()
    }

    /// The same error with another HTTP status (413, 405, 415 for request-shape refusals).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// Marks that the client tried HTTP Basic: the answer carries a Basic challenge
    /// (RFC 6749 §5.2).
    pub fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

/// The one mapping of a grant's domain error to its OAuth answer. A store failure and an
/// internal fault are logged here with their cause, which the client never sees.
impl From<mandate_core::GrantError> for OAuthError {
    fn from(error: mandate_core::GrantError) -> Self {
        use mandate_core::GrantError;
        match error {
            GrantError::InvalidRequest(description) => Self::invalid_request(description),
            GrantError::InvalidGrant(description) => {
                Self::new(ErrorCode::InvalidGrant, description)
            }
            GrantError::InvalidTarget(description) => {
                Self::new(ErrorCode::InvalidTarget, description)
            }
            GrantError::InvalidScope(description) => {
                Self::new(ErrorCode::InvalidScope, description)
            }
            GrantError::InvalidDpopProof(description) => {
                Self::new(ErrorCode::InvalidDpopProof, description)
            }
            GrantError::UseDpopNonce { nonce } => {
                let mut error = Self::new(
                    ErrorCode::UseDpopNonce,
                    "the DPoP proof must carry the nonce in the DPoP-Nonce header",
                );
                error.dpop_nonce = Some(nonce);
                error
            }
            GrantError::Unavailable { operation, cause } => Self::store_down(operation, &cause),
            GrantError::Internal { description, cause } => {
                tracing::error!(%cause, "{description}");
                Self::new(ErrorCode::ServerError, description)
            }
        }
    }
}

/// The answer to a stream operation's domain error.
impl From<mandate_core::SsfError> for OAuthError {
    fn from(error: mandate_core::SsfError) -> Self {
        use mandate_core::SsfError;
        match error {
            SsfError::NotFound => {
                OAuthError::invalid_request("stream not found").with_status(StatusCode::NOT_FOUND)
            }
            SsfError::NotAResourceServer => OAuthError::invalid_request(
                "only resource servers may manage Shared Signals streams",
            )
            .with_status(StatusCode::FORBIDDEN),
            SsfError::Limit(message) => {
                OAuthError::invalid_request(message).with_status(StatusCode::CONFLICT)
            }
            SsfError::BadSubject(message) => OAuthError::invalid_request(message),
            SsfError::Unavailable(cause) => OAuthError::store_down("Shared Signals", &cause),
            SsfError::Internal(cause) => {
                tracing::error!(%cause, "Shared Signals");
                OAuthError::new(
                    ErrorCode::ServerError,
                    "the security event could not be signed",
                )
            }
        }
    }
}

impl From<mandate_core::ParticipationError> for OAuthError {
    fn from(error: mandate_core::ParticipationError) -> Self {
        use mandate_core::ParticipationError;
        match error {
            ParticipationError::NotAResourceServer => {
                OAuthError::invalid_request(error.to_string()).with_status(StatusCode::FORBIDDEN)
            }
            ParticipationError::Invalid(message) => OAuthError::invalid_request(message),
            // Gates are changed on the admin listener only.
            ParticipationError::NotAnAppAudience(_) | ParticipationError::NoGate(_) => {
                OAuthError::invalid_request(error.to_string())
            }
            ParticipationError::TooMany => {
                OAuthError::invalid_request(error.to_string()).with_status(StatusCode::CONFLICT)
            }
            ParticipationError::Unavailable(cause) => {
                OAuthError::store_down("participation", &cause)
            }
        }
    }
}

impl std::fmt::Display for OAuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.description)
    }
}

impl ResponseError for OAuthError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        no_store(&mut response);
        // HTTP requires a challenge on every 401; RFC 6749 §5.2 requires Basic when Basic was used.
        if self.basic_challenge || self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="mandate""#));
        }
        if let Some(seconds) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if let Some(nonce) = &self.dpop_nonce {
            if let Ok(value) = HeaderValue::from_str(nonce) {
                response.insert_header(("DPoP-Nonce", value));
            }
        }
        response.json(Body {
            error: self.code,
            error_description: &self.description,
        })
    }
}

/// `Cache-Control: no-store` and `Pragma: no-cache`, required on responses that carry tokens or
/// credentials and sent on every OAuth endpoint response (RFC 6749 §5.1).
pub fn no_store(response: &mut actix_web::HttpResponseBuilder) {
    response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    response.insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
}
