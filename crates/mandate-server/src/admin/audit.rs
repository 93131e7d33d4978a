//! `GET /admin/audit`: the audit stream, newest first.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit));
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
