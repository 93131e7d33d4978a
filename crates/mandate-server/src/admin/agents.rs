//! `/admin/agents`: agents and resource servers.

use actix_web::{web, HttpResponse};
use mandate_model::ClientId;
use mandate_store::Client;
use serde::Serialize;
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/agents", web::get().to(list_agents))
        .route("/agents/{id}", web::get().to(show_agent));
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
