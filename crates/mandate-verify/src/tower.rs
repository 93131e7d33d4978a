//! tower integration (feature `tower`), for axum, hyper and every other tower-based stack: a
//! [`MandateLayer`] that verifies the bearer token of each request, puts the [`VerifiedToken`]
//! in the request's extensions, and answers the RFC 6750 refusals of [`BearerError`] itself.
//!
//! ```no_run
//! # async fn run(verifier: mandate_verify::Verifier) {
//! use axum::{routing::get, Extension, Router};
//! use mandate_verify::tower::MandateLayer;
//! use mandate_verify::{ProtectedResource, VerifiedToken};
//!
//! async fn events(Extension(token): Extension<VerifiedToken>) -> String {
//!     format!("{} for {}", token.current_actor(), token.subject())
//! }
//!
//! let metadata = ProtectedResource::new("https://calendar.example.com", "https://mandate.example.com")
//!     .scopes(["calendar.read"]);
//! let app: Router = Router::new()
//!     .route("/events", get(events))
//!     .layer(MandateLayer::new(verifier).require_scope("calendar.read").metadata(metadata));
//! # }
//! ```
//!
//! With [`metadata`](MandateLayer::metadata), the layer also answers `GET` on the RFC 9728
//! metadata path (without a token) and names the document in every challenge
//! (`resource_metadata`, §5.1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::dpop::OwnedPresented;
use crate::{BearerError, ProtectedResource, VerifiedToken, Verifier};

/// Verifies every request's token with one [`Verifier`]; see the module docs.
#[derive(Clone, Debug)]
pub struct MandateLayer {
    shared: Shared,
}

#[derive(Clone, Debug)]
struct Shared {
    verifier: Verifier,
    scopes: Vec<String>,
    metadata: Option<Metadata>,
}

/// The metadata and its document, serialized once.
#[derive(Clone, Debug)]
struct Metadata {
    resource: ProtectedResource,
    document: String,
}

impl MandateLayer {
    /// A layer verifying tokens with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        Self {
            shared: Shared {
                verifier,
                scopes: Vec::new(),
                metadata: None,
            },
        }
    }

    /// Every request must also carry `scope` (403 `insufficient_scope` otherwise).
    pub fn require_scope(mut self, scope: &str) -> Self {
        self.shared.scopes.push(scope.to_owned());
        self
    }

    /// Serves `metadata` at its path and names it in every challenge.
    pub fn metadata(mut self, metadata: ProtectedResource) -> Self {
        self.shared.metadata = Some(Metadata {
            document: metadata.document().to_string(),
            resource: metadata,
        });
        self
    }
}

impl<S> Layer<S> for MandateLayer {
    type Service = MandateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MandateService {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}

/// The service [`MandateLayer`] wraps around an app.
#[derive(Clone, Debug)]
pub struct MandateService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for MandateService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        Box::pin(async move {
            if let Some(metadata) = &shared.metadata {
                if request.method() == Method::GET
                    && request.uri().path() == metadata.resource.path()
                {
                    return Ok(metadata_response(&metadata.document));
                }
            }
            // What the request presented is copied before any await, so the body need not be
            // `Sync`.
            let presented = presented(&request, shared.metadata.as_ref());
            match authenticate(&shared, &presented).await {
                Ok(token) => {
                    request.extensions_mut().insert(token);
                    inner.call(request).await
                }
                Err(error) => {
                    let url = shared.metadata.as_ref().map(|m| m.resource.url());
                    Ok(refusal(&error, url))
                }
            }
        })
    }
}

/// The request's credentials, method and URL: the origin of the app's metadata when it has one
/// (what clients address behind a proxy), else the request URI's, else `https://` and `Host`.
fn presented<B>(request: &Request<B>, metadata: Option<&Metadata>) -> OwnedPresented {
    let values = |name: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    };
    let uri = request.uri();
    let origin = match (metadata, uri.scheme_str(), uri.authority()) {
        (Some(metadata), _, _) => metadata.resource.origin().to_owned(),
        (None, Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => {
            let host = request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            format!("https://{host}")
        }
    };
    OwnedPresented {
        authorization: values(header::AUTHORIZATION.as_str()),
        dpop: values("dpop"),
        method: request.method().as_str().to_owned(),
        url: format!("{origin}{}", uri.path()),
    }
}

async fn authenticate(
    shared: &Shared,
    presented: &OwnedPresented,
) -> Result<VerifiedToken, BearerError> {
    let verified = presented.verify(&shared.verifier).await?;
    for scope in &shared.scopes {
        verified.require_scope(scope)?;
    }
    Ok(verified)
}

fn metadata_response<B: From<String>>(document: &str) -> Response<B> {
    let mut response = Response::new(B::from(document.to_owned()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=3600"),
    );
    response
}

fn refusal<B: From<String>>(error: &BearerError, resource_metadata: Option<&str>) -> Response<B> {
    let mut response = Response::new(B::from(String::new()));
    *response.status_mut() =
        StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(challenge) = error.challenge_with(resource_metadata) {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}
