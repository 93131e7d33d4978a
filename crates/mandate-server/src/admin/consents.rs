//! `/admin/consents`: stored consent grants (docs/ADMIN-API.md, "Consent grants").

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use mandate_chain::ConsentGrant;
use mandate_model::{ClientId, Subject};
use serde::Deserialize;
use serde_json::{json, Value};

use super::agents::{answer, instant};
use super::{json_body, reason};
use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;
use mandate_core::NewConsent;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/consents", web::get().to(list_consents))
        .route("/consents", web::post().to(create_consent))
        .route("/consents/{id}", web::delete().to(withdraw_consent));
}

fn view(grant: &ConsentGrant) -> Value {
    let expires_at = DateTime::<Utc>::from_timestamp(grant.expires_at, 0).map(instant);
    json!({
        "id": grant.id,
        "subject": grant.subject,
        "actor": grant.actor,
        "audience": grant.audience,
        "scopes": grant.scopes.iter().collect::<Vec<_>>(),
        "expires_at": expires_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    actor: Option<String>,
}

async fn list_consents(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let query = super::query::<ListQuery>(request.query_string())?;
    let subject = query
        .subject
        .map(|s| Subject::parse(&s))
        .transpose()
        .map_err(|e| AdminError::bad_request(format!("subject: {e}")))?;
    let actor = query
        .actor
        .map(|a| ClientId::parse(&a))
        .transpose()
        .map_err(|e| AdminError::bad_request(format!("actor: {e}")))?;
    let grants = state
        .consent_grants
        .list(subject.as_ref(), actor.as_ref())
        .await?;
    let views: Vec<Value> = grants.iter().map(view).collect();
    Ok(answer(StatusCode::OK, json!({ "consents": views })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /admin/consents[?dry_run=true]`: 201 and the grant; a dry run answers 200 and the
/// grant it would store, and stores nothing.
async fn create_consent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let query = super::query::<CreateQuery>(request.query_string())?;
    let request: NewConsent = json_body(&body)?;
    let grant = state
        .consent_grants
        .create(request, &caller.name, query.dry_run)
        .await?;
    let status = if query.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(answer(status, json!({ "consent": view(&grant) })))
}

async fn withdraw_consent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let reason = reason(&body, "consent withdrawn by an administrator")?;
    let outcome = state
        .consent_grants
        .withdraw(&id, &reason, &caller.name)
        .await?;
    let grain = mandate_core::ssf::Grain::Consent;
    super::chains::signal(&state, &outcome, grain, &reason).await?;
    Ok(answer(
        StatusCode::OK,
        json!({ "withdrawn": id.as_str(), "revocation": outcome }),
    ))
}
