//! The decision for one request: which route, which verifier, and what the app is told.

use std::sync::Arc;

use mandate_verify::{BearerError, ProtectedResource, RevocationSource, Verifier, VerifyError};
use serde_json::Value;

use crate::routes::{self, Route};

/// One protected route with its verifier (one per audience) and its RFC 9728 metadata.
#[derive(Debug)]
struct Protected {
    route: Route,
    verifier: Verifier,
    metadata: ProtectedResource,
    /// The metadata document, built once.
    document: Value,
}

/// What the gateway answers for a request.
#[derive(Debug)]
pub enum Decision {
    /// The token is good: tell the app these identity headers (and, in proxy mode, send the
    /// request to `upstream`).
    Allow {
        /// The identity headers.
        headers: [(&'static str, String); 4],
        /// The route's upstream.
        upstream: Option<String>,
    },
    /// Refused, with the RFC 6750 answer and the route's metadata URL for the challenge.
    Deny {
        /// What to answer.
        error: BearerError,
        /// The `resource_metadata` of the challenge.
        resource_metadata: String,
    },
    /// No route covers the path: nothing is let through that is not configured.
    Unrouted,
}

/// Every route's verifier.
#[derive(Debug, Clone)]
pub struct Gate {
    routes: Arc<Vec<Protected>>,
}

/// A request as the gateway checks it: the original path (query included), the original
/// method, and the credentials it carried.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    /// The original request's path and query.
    pub path: &'a str,
    /// The original request's method.
    pub method: &'a str,
    /// Its `Authorization` header values.
    pub authorization: &'a [&'a [u8]],
    /// Its `DPoP` header values.
    pub dpop: &'a [&'a [u8]],
}

impl Gate {
    /// Builds one verifier per route, all sharing `revocation`; keys come from `jwks_uri`, or by
    /// discovery from the issuer. Fails when mandate's keys cannot be obtained.
    pub async fn build(
        issuer: &str,
        jwks_uri: Option<&str>,
        routes: Vec<Route>,
        revocation: Arc<dyn RevocationSource>,
    ) -> Result<Self, VerifyError> {
        let mut protected = Vec::with_capacity(routes.len());
        for route in routes {
            let builder = Verifier::builder(issuer, &route.audience);
            let builder = match jwks_uri {
                Some(uri) => builder.jwks_uri(uri),
                None => builder.discover(),
            };
            let verifier = builder.revocation(Arc::clone(&revocation)).build().await?;
            let metadata =
                ProtectedResource::new(&route.resource, issuer).scopes(route.scopes.clone());
            protected.push(Protected {
                route,
                verifier,
                document: metadata.document(),
                metadata,
            });
        }
        Ok(Self {
            routes: Arc::new(protected),
        })
    }

    /// Decides for a request to `path` carrying these `Authorization` header values.
    pub async fn decide(&self, request: &Checked<'_>) -> Decision {
        let path = request.path;
        let Some(protected) = self.route(path) else {
            return Decision::Unrouted;
        };
        let deny = |error: BearerError| Decision::Deny {
            error,
            resource_metadata: protected.metadata.url().to_owned(),
        };
        // The URL a DPoP proof names: the route's public origin (its audience's) and the path,
        // without the query.
        let url = format!(
            "{}{}",
            protected.metadata.origin(),
            path.split(['?', '#']).next().unwrap_or_default()
        );
        let presented = mandate_verify::Presented {
            authorization: request.authorization,
            dpop: request.dpop,
            method: request.method,
            url: &url,
        };
        let verified = match protected.verifier.verify_presented(&presented).await {
            Ok(verified) => verified,
            Err(error) => return deny(error),
        };
        for scope in &protected.route.scopes {
            if let Err(error) = verified.require_scope(scope) {
                return deny(error.into());
            }
        }
        Decision::Allow {
            headers: crate::identity::headers(&verified),
            upstream: protected.route.upstream.clone(),
        }
    }

    /// Every route's verifier (they share one revocation source).
    pub fn verifiers(&self) -> Vec<&Verifier> {
        self.routes.iter().map(|p| &p.verifier).collect()
    }

    /// The RFC 9728 document served at `path`, if a route's metadata lives there.
    pub fn metadata(&self, path: &str) -> Option<&Value> {
        self.routes
            .iter()
            .find(|p| p.metadata.path() == path)
            .map(|p| &p.document)
    }

    fn route(&self, path: &str) -> Option<&Protected> {
        routes::pick(&self.routes, path, |p| p.route.prefix.as_str())
    }
}
