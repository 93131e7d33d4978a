//! `GET /admin/audit`: the audit stream, newest first, filtered by action and actor.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::audit::AuditFilter;
use crate::config::AdminRole;
use crate::state::AppState;

/// The default and the largest page (docs/ADMIN-API.md, "Audit").
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit));
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

/// The query, checked: a limit within 1..=1000, filters that are not empty.
fn parse(query_string: &str) -> Result<(AuditFilter, usize), AdminError> {
    let query = super::query::<AuditQuery>(query_string)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(AdminError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let non_empty = |name: &str, value: Option<String>| match value {
        Some(v) if v.is_empty() => {
            Err(AdminError::bad_request(format!("{name} must not be empty")))
        }
        other => Ok(other),
    };
    Ok((
        AuditFilter {
            action: non_empty("action", query.action)?,
            actor: non_empty("actor", query.actor)?,
        },
        limit,
    ))
}

async fn audit(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let (filter, limit) = parse(request.query_string())?;
    let events = state.audit.recent(&filter, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "audit stream unavailable");
        AdminError::unavailable()
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({ "events": events })))
}
