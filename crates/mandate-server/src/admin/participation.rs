//! `GET /admin/participation`: per audience, its owners, its live verifiers, their modes and
//! lag, its Shared Signals streams, its gate and the verdict; `/admin/participation/gates`: the
//! gates themselves (docs/GOVERNANCE.md).

use actix_web::http::header::CACHE_CONTROL;
use actix_web::{web, HttpRequest, HttpResponse};
use mandate_core::NewGate;
use mandate_store::Requirement;
use serde::Deserialize;
use serde_json::json;

use super::{json_body, query, AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/participation", web::get().to(participation))
        .route("/participation/gates", web::get().to(gates))
        .route("/participation/gates", web::put().to(set_gate))
        .route("/participation/gates", web::delete().to(remove_gate));
}

async fn participation(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let audiences = state.participation.map().await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "audiences": audiences })))
}

/// `GET /admin/participation/gates`: every gate with its audience's verdict now.
async fn gates(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let gates = state.participation.gates().await?;
    Ok(HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(json!({ "gates": gates })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GateBody {
    audience: String,
    require: Requirement,
    #[serde(default)]
    dry_run: bool,
}

/// `PUT /admin/participation/gates`: sets one audience's gate.
async fn set_gate(
    caller: AdminCaller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let body: GateBody = json_body(&body)?;
    let gate = NewGate {
        audience: body.audience,
        require: body.require,
        dry_run: body.dry_run,
    };
    let decision = state.participation.set_gate(gate, &caller.name).await?;
    Ok(HttpResponse::Ok().json(json!({ "gate": decision })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AudienceQuery {
    audience: String,
}

/// `DELETE /admin/participation/gates?audience=`: removes one audience's gate.
async fn remove_gate(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let AudienceQuery { audience } = query(request.query_string())?;
    state
        .participation
        .remove_gate(&audience, &caller.name)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "removed": audience })))
}
