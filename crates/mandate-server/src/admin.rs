//! The admin listener (DESIGN.md section 8): named credentials with nested roles, JSON errors
//! with a code and a message. Nothing here is routed on the public listener.

use std::future::{ready, Ready};

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use mandate_model::ClientId;
use mandate_store::Client;
use serde::Serialize;
use serde_json::json;

use crate::config::AdminRole;
use crate::state::AppState;

/// An admin API error: `{"error": code, "message": text}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl AdminError {
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

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .route("/agents", web::get().to(list_agents))
            .route("/agents/{id}", web::get().to(show_agent))
            .route("/chains/{id}", web::get().to(show_chain))
            .route("/chains/{id}/revoke", web::post().to(revoke_chain))
            .route("/hops/{jti}/revoke", web::post().to(revoke_hop))
            .route("/subjects/{sub}/revoke", web::post().to(revoke_subject))
            .route("/audit", web::get().to(audit)),
    )
    .default_service(web::to(|| async {
        AdminError::not_found("no such admin endpoint").error_response()
    }));
}

/// An agent or resource server as the admin API shows it: never a secret or its hash.
#[derive(Serialize)]
struct AgentView<'a> {
    client_id: &'a str,
    kind: String,
    state: String,
    owners: &'a [String],
    description: &'a str,
    auth_method: &'a str,
    expires_at: Option<String>,
    upstream_ids: &'a [mandate_store::UpstreamId],
    audiences: Vec<String>,
    key_count: usize,
}

impl<'a> From<&'a Client> for AgentView<'a> {
    fn from(client: &'a Client) -> Self {
        Self {
            client_id: client.id.as_str(),
            kind: client.kind.to_string(),
            state: client.state.to_string(),
            owners: &client.owners,
            description: &client.description,
            auth_method: client.auth_method.as_str(),
            expires_at: client.expires_at.map(|t| t.to_rfc3339()),
            upstream_ids: &client.upstream_ids,
            audiences: client.audiences.iter().map(ToString::to_string).collect(),
            key_count: client.keys.as_ref().map_or(0, |k| k.len()),
        }
    }
}

async fn list_agents(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let clients = state
        .clients
        .clients()
        .await
        .map_err(|_| AdminError::unavailable())?;
    let views: Vec<AgentView<'_>> = clients
        .iter()
        .map(|c| AgentView::from(c.as_ref()))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "agents": views })))
}

async fn show_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let id = ClientId::parse(&id).map_err(|e| AdminError::bad_request(e.to_string()))?;
    let client = state
        .clients
        .client(&id)
        .await
        .map_err(|_| AdminError::unavailable())?
        .ok_or_else(|| AdminError::not_found(format!("no client '{id}'")))?;
    Ok(HttpResponse::Ok().json(AgentView::from(client.as_ref())))
}

/// The optional body of a revocation: `{"reason": "…"}`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

fn reason_from(body: &[u8]) -> Result<String, AdminError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("revoked by an administrator".into());
    }
    let parsed: RevokeBody = serde_json::from_slice(body)
        .map_err(|e| AdminError::bad_request(format!("invalid JSON body: {e}")))?;
    let reason = parsed
        .reason
        .unwrap_or_else(|| "revoked by an administrator".into());
    if reason.len() > 500 {
        return Err(AdminError::bad_request(
            "reason is longer than 500 characters",
        ));
    }
    Ok(reason)
}

impl From<crate::revocation::RevokeError> for AdminError {
    fn from(error: crate::revocation::RevokeError) -> Self {
        use crate::revocation::RevokeError;
        match error {
            RevokeError::NotFound(what) => AdminError::not_found(format!("no {what}")),
            RevokeError::Invalid(message) => AdminError::bad_request(message),
            RevokeError::Unavailable(cause) => {
                tracing::warn!(%cause, "revocation store unavailable");
                AdminError::unavailable()
            }
        }
    }
}

async fn record_action(
    state: &AppState,
    caller: &AdminCaller,
    action: &str,
    target: &str,
    outcome: &crate::revocation::RevocationOutcome,
) {
    state
        .audit
        .record(crate::audit::AuditEvent {
            at: outcome.entries.first().map_or(0, |e| e.at),
            actor: caller.name.clone(),
            action: action.into(),
            target: target.into(),
            detail: format!(
                "{} entries, {} hops",
                outcome.entries.len(),
                outcome.hops_revoked.len()
            ),
        })
        .await;
}

async fn revoke_chain(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let reason = reason_from(&body)?;
    let outcome = state.revoke_chain(&id, &reason, &caller.name).await?;
    record_action(&state, &caller, "revoke.chain", &id, &outcome).await;
    Ok(HttpResponse::Ok().json(outcome))
}

async fn revoke_hop(
    caller: AdminCaller,
    state: web::Data<AppState>,
    jti: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let reason = reason_from(&body)?;
    let outcome = state.revoke_hop(&jti, &reason, &caller.name).await?;
    record_action(&state, &caller, "revoke.hop", &jti, &outcome).await;
    Ok(HttpResponse::Ok().json(outcome))
}

async fn revoke_subject(
    caller: AdminCaller,
    state: web::Data<AppState>,
    subject: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let reason = reason_from(&body)?;
    let outcome = state
        .revoke_subject(&subject, &reason, &caller.name)
        .await?;
    record_action(&state, &caller, "revoke.subject", &subject, &outcome).await;
    Ok(HttpResponse::Ok().json(outcome))
}

/// `GET /admin/chains/{id}`: the chain as a tree of hops, each with its status and evidence.
async fn show_chain(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let hops = state
        .ledger
        .chain(&mandate_chain::ChainId(id.to_string()))
        .await
        .map_err(|_| AdminError::unavailable())?;
    if hops.is_empty() {
        return Err(AdminError::not_found(format!("no chain {id}")));
    }
    let mut views = Vec::with_capacity(hops.len());
    for hop in &hops {
        let checked = state
            .revocations
            .check(&crate::revocation::facts_of_hop(hop))
            .await
            .map_err(|_| AdminError::unavailable())?;
        let (status, revoked_by) = match checked.verdict {
            mandate_revocation::Verdict::Revoked { kind, id } => {
                ("revoked", Some(json!({"kind": kind, "id": id})))
            }
            mandate_revocation::Verdict::Live if hop.expires_at * 1000 <= checked.now_ms => {
                ("expired", None)
            }
            mandate_revocation::Verdict::Live => ("live", None),
        };
        views.push((hop, status, revoked_by));
    }
    fn node(
        hop: &mandate_chain::HopRecord,
        status: &str,
        revoked_by: &Option<serde_json::Value>,
        all: &[(&mandate_chain::HopRecord, &str, Option<serde_json::Value>)],
    ) -> serde_json::Value {
        let children: Vec<serde_json::Value> = all
            .iter()
            .filter(|(h, _, _)| h.parent.as_ref() == Some(&hop.id))
            .map(|(h, s, r)| node(h, s, r, all))
            .collect();
        json!({
            "jti": hop.id,
            "status": status,
            "revoked_by": revoked_by,
            "depth": hop.depth,
            "client_id": hop.client_id,
            "actors": hop.actors,
            "subject": hop.subject,
            "audience": hop.audience.to_string(),
            "authority": hop.authority.pairs().map(|(a, s)| json!({"audience": a, "scopes": s})).collect::<Vec<_>>(),
            "issued_at": hop.issued_at,
            "expires_at": hop.expires_at,
            "evidence": hop.evidence,
            "upstream": hop.upstream,
            "children": children,
        })
    }
    let roots: Vec<serde_json::Value> = views
        .iter()
        .filter(|(h, _, _)| h.parent.is_none())
        .map(|(h, s, r)| node(h, s, r, &views))
        .collect();
    Ok(HttpResponse::Ok()
        .json(json!({ "chain_id": id.as_str(), "hops": hops.len(), "roots": roots })))
}

#[derive(serde::Deserialize)]
struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(
    caller: AdminCaller,
    state: web::Data<AppState>,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    Ok(HttpResponse::Ok().json(json!({ "events": state.audit.recent(limit).await })))
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
