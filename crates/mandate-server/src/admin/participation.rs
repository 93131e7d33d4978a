//! `GET /admin/participation`: per audience, its owners, its live verifiers, their modes and
//! lag, its Shared Signals streams, and the verdict (docs/GOVERNANCE.md).

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/participation", web::get().to(participation));
}

async fn participation(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let audiences = state.participation.map().await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({ "audiences": audiences })))
}
