//! The admin listener (DESIGN.md section 8): named credentials with nested roles, JSON errors
//! with a code and a message. Nothing here is routed on the public listener.

use std::future::{ready, Ready};

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::config::AdminRole;
use crate::state::AppState;

pub(crate) mod agents;
mod audit;
pub(crate) mod chains;
mod consents;
mod errors;
mod ledger;
pub(crate) mod participation;
pub(crate) mod policies;
mod ssf;

/// An admin API error: `{"error": code, "message": text}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AdminError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message, as the API answers it.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: no credential, or an unknown one.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "an admin credential is required (Authorization: Bearer <secret>)",
        )
    }

    /// 403: the credential's role does not allow this.
    pub fn forbidden(needed: AdminRole) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this action needs the '{needed}' role"),
        )
    }

    /// 404.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }

    /// 409 `conflict`: creating something whose id exists (or a change that lost too many races).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 409 `invalid_transition`: the lifecycle state machine does not allow this.
    pub fn invalid_transition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "invalid_transition", message)
    }

    /// 503 because the store failed: the cause is logged, never sent.
    pub fn store_down(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(%cause, "store unavailable for the admin API");
        Self::unavailable()
    }

    /// 503 `unavailable`, saying why.
    pub fn unavailable_because(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the store cannot be reached",
        )
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="mandate-admin""#));
        }
        response.json(json!({"error": self.code, "message": self.message}))
    }
}

/// The authenticated admin caller: the credential's name and role.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The credential's name (what the audit stream records).
    pub name: String,
    /// Its role.
    pub role: AdminRole,
}

impl AdminCaller {
    /// Refuses with 403 unless the caller's role includes `needed`.
    pub fn require(&self, needed: AdminRole) -> Result<(), AdminError> {
        if self.role.allows(needed) {
            Ok(())
        } else {
            tracing::info!(target: "audit", admin = %self.name, needed = %needed, "admin action refused: role");
            Err(AdminError::forbidden(needed))
        }
    }
}

impl FromRequest for AdminCaller {
    type Error = AdminError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(authenticate(request))
    }
}

fn authenticate(request: &HttpRequest) -> Result<AdminCaller, AdminError> {
    let state = request
        .app_data::<web::Data<AppState>>()
        .ok_or_else(AdminError::unavailable)?;
    // One credential per request: with two headers a proxy and mandate could each read another.
    if request
        .headers()
        .get_all(header::AUTHORIZATION)
        .nth(1)
        .is_some()
    {
        return Err(AdminError::unauthenticated());
    }
    let secret = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(AdminError::unauthenticated)?;
    // Every credential is compared (each in constant time) so that timing does not tell which
    // one matched or how many there are before it.
    let mut found = None;
    for credential in state.admin_credentials.iter() {
        if credential.secret_hash.matches(secret) && found.is_none() {
            found = Some(credential);
        }
    }
    let credential = found.ok_or_else(|| {
        tracing::info!(target: "audit", "admin authentication failed");
        AdminError::unauthenticated()
    })?;
    Ok(AdminCaller {
        name: credential.name.clone(),
        role: credential.role,
    })
}

/// A required JSON body, with a precise error when it does not parse.
pub(crate) fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(AdminError::bad_request("a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| AdminError::bad_request(format!("invalid body: {e}")))
}

/// An optional JSON body: absent or blank is the default.
pub(crate) fn optional_body<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    json_body(body)
}

/// The optional body of an action that revokes or changes state: `{"reason": "…"}`, recorded
/// with the revocation entries and in the audit stream.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

/// The reason given in `body`, or `default`; at most 500 characters.
pub(crate) fn reason(body: &[u8], default: &str) -> Result<String, AdminError> {
    let parsed: ReasonBody = optional_body(body)?;
    let reason = parsed.reason.unwrap_or_else(|| default.to_owned());
    if reason.chars().count() > 500 {
        return Err(AdminError::bad_request(
            "reason is longer than 500 characters",
        ));
    }
    Ok(reason)
}

/// The query of an action that revokes: only `dry_run`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DryRunQuery {
    #[serde(default)]
    dry_run: bool,
}

/// Whether the query asks for a dry run (docs/ADMIN-API.md, "Dry runs"): `dry_run=true` answers
/// what the action would do and changes nothing, `false` or no query does it. Any other value,
/// and any other parameter, is 400: a misspelt `dry_run` must not fall through to the real
/// revocation.
pub(crate) fn dry_run(query_string: &str) -> Result<bool, AdminError> {
    Ok(query::<DryRunQuery>(query_string)?.dry_run)
}

/// A query string into `T`, with a precise error when it does not parse.
pub(crate) fn query<T: DeserializeOwned>(query_string: &str) -> Result<T, AdminError> {
    web::Query::<T>::from_query(query_string)
        .map(web::Query::into_inner)
        .map_err(|e| AdminError::bad_request(format!("invalid query: {e}")))
}

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .configure(agents::routes)
            .configure(consents::routes)
            .configure(chains::routes)
            .configure(policies::routes)
            .configure(audit::routes)
            .configure(ledger::routes)
            .configure(ssf::routes)
            .configure(participation::routes)
            .route("/openapi.json", web::get().to(openapi)),
    )
    .route("/metrics", web::get().to(crate::metrics::scrape))
    .default_service(web::to(|| async {
        AdminError::not_found("no such admin endpoint").error_response()
    }));
}

/// The OpenAPI 3.1 description of this API (docs/ADMIN-API.md in machine-readable form), kept
/// as a file beside the handlers so that a change to the API shows up in review next to it.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi(caller: AdminCaller) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("application/json")
        .body(OPENAPI))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        assert!(AdminRole::Manage.allows(AdminRole::Revoke));
        assert!(AdminRole::Manage.allows(AdminRole::Read));
        assert!(AdminRole::Revoke.allows(AdminRole::Read));
        assert!(!AdminRole::Read.allows(AdminRole::Revoke));
        assert!(!AdminRole::Revoke.allows(AdminRole::Manage));
    }
}
