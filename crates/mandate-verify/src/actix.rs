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
//!
//! With a [`ProtectedResource`] in the app data (and [`metadata_resource`] serving it), every
//! challenge also names its URL as `resource_metadata` (RFC 9728 §5.1).

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};

use crate::dpop::OwnedPresented;
pub use crate::BearerError;
use crate::{ProtectedResource, VerifiedToken, Verifier};

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
        let metadata = req.app_data::<web::Data<ProtectedResource>>().cloned();
        let request = presented(req, metadata.as_ref().map(|m| m.get_ref()));
        let refuse = move |error: BearerError| -> actix_web::Error {
            Refusal {
                error,
                metadata: metadata.clone(),
            }
            .into()
        };
        Box::pin(async move {
            let Some(verifier) = verifier else {
                tracing::error!(
                    "Authenticated used without web::Data<Verifier> in the app data: \
                     register it with App::app_data(web::Data::new(verifier))"
                );
                return Err(refuse(BearerError::Misconfigured));
            };
            request
                .verify(&verifier)
                .await
                .map(Authenticated)
                .map_err(refuse)
        })
    }
}

/// The request's credentials, method and URL: the app's origin as its metadata names it (behind
/// a proxy the connection's own address is not what the client addressed), else the host and
/// scheme the request arrived with.
fn presented(req: &HttpRequest, metadata: Option<&ProtectedResource>) -> OwnedPresented {
    let values = |name| {
        req.headers()
            .get_all(name)
            .map(|v: &HeaderValue| v.as_bytes().to_vec())
            .collect()
    };
    let origin = match metadata {
        Some(metadata) => metadata.origin().to_owned(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    };
    OwnedPresented {
        authorization: values(header::AUTHORIZATION),
        dpop: values(header::HeaderName::from_static("dpop")),
        method: req.method().as_str().to_owned(),
        url: format!("{origin}{}", req.path()),
    }
}

/// `Ok` when `token` grants `scope`; otherwise an error answering 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope", scope="<scope>"` (RFC 6750 §3.1).
pub fn require_scope(token: &VerifiedToken, scope: &str) -> Result<(), actix_web::Error> {
    token
        .require_scope(scope)
        .map_err(|error| BearerError::from(error).into())
}

/// An RFC 6750 refusal naming the app's metadata URL when it has one.
#[derive(Debug)]
struct Refusal {
    error: BearerError,
    metadata: Option<web::Data<ProtectedResource>>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        respond(&self.error, self.metadata.as_ref().map(|m| m.url()))
    }
}

fn respond(error: &BearerError, resource_metadata: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::build(error.status_code());
    if let Some(challenge) = error.challenge_with(resource_metadata) {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response.insert_header((header::WWW_AUTHENTICATE, value));
        }
    }
    response.finish()
}

impl ResponseError for BearerError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        respond(self, None)
    }
}

/// The RFC 9728 metadata document of `metadata`, served at its path:
/// `App::new().app_data(web::Data::new(metadata.clone())).service(metadata_resource(metadata))`.
/// With the metadata in the app data, [`Authenticated`]'s challenges carry its URL as
/// `resource_metadata` (RFC 9728 §5.1), as the MCP authorization spec requires of MCP servers.
pub fn metadata_resource(metadata: ProtectedResource) -> actix_web::Resource {
    let document = metadata.document();
    web::resource(metadata.path()).route(web::get().to(move || {
        let document = document.clone();
        async move {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "max-age=3600"))
                .json(document)
        }
    }))
}
