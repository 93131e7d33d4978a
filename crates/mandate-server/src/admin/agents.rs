//! `/admin/agents`: agents and resource servers (docs/ADMIN-API.md, "Agents and resource
//! servers"). Each handler parses, calls one function of [`crate::agents`], audits and answers.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat, Utc};
use mandate_model::{ClientId, ClientKind, ClientState, Transition};
use mandate_store::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{json_body, optional_body, reason, AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;
use mandate_core::ssf::key_change;
use mandate_core::{AgentPatch, CredentialChange, NewAgent};

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/agents", web::get().to(list_agents))
        .route("/agents", web::post().to(create_agent))
        .route("/agents/{id}", web::get().to(show_agent))
        .route("/agents/{id}", web::patch().to(update_agent))
        .route("/agents/{id}/secret", web::post().to(rotate_secret))
        .route("/agents/{id}/suspend", web::post().to(suspend_agent))
        .route("/agents/{id}/retire", web::post().to(retire_agent))
        .route("/agents/{id}/activate", web::post().to(activate_agent));
}

/// A JSON answer; admin answers are never cached (docs/ADMIN-API.md).
pub(super) fn answer(status: StatusCode, body: impl Serialize) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

pub(super) fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
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
    /// `allowed` or `required` (RFC 9449 binding).
    dpop: mandate_model::DpopPolicy,
    keys: Vec<Value>,
    secret: Option<Value>,
    created_at: Option<String>,
    created_by: Option<&'a str>,
    updated_at: Option<String>,
    updated_by: Option<&'a str>,
    /// Its last successful authentication, to within a minute.
    last_authenticated_at: Option<String>,
    /// Its last token exchange, to within a minute.
    last_exchange_at: Option<String>,
}

impl AgentView<'_> {
    fn with_use(mut self, used: Option<&mandate_store::LastUse>) -> Self {
        let at = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis).map(instant);
        if let Some(used) = used {
            self.last_authenticated_at = at(used.authenticated_at_ms);
            self.last_exchange_at = at(used.exchange_at_ms);
        }
        self
    }
}

async fn last_uses(
    state: &AppState,
) -> Result<std::collections::HashMap<String, mandate_store::LastUse>, AdminError> {
    state
        .usage
        .all()
        .await
        .map_err(|e| AdminError::store_down(&e))
}

impl<'a> From<&'a Client> for AgentView<'a> {
    fn from(client: &'a Client) -> Self {
        // What identifies each key, never its material.
        let keys = client
            .jwks
            .as_ref()
            .and_then(|jwks| jwks["keys"].as_array())
            .map(|keys| {
                keys.iter()
                    .map(|key| json!({"kid": key["kid"], "kty": key["kty"], "alg": key["alg"]}))
                    .collect()
            })
            .unwrap_or_default();
        let secret = client.secret_hash.as_ref().map(|_| {
            json!({
                "rotated_at": client.secret_rotated_at.map(instant),
                "previous_valid_until": client.previous_secret.as_ref().map(|p| instant(p.valid_until)),
            })
        });
        Self {
            client_id: client.id.as_str(),
            kind: client.kind.to_string(),
            state: client.state.to_string(),
            owners: &client.owners,
            description: &client.description,
            auth_method: client.auth_method.as_str(),
            expires_at: client.expires_at.map(instant),
            upstream_ids: &client.upstream_ids,
            audiences: client.audiences.iter().map(ToString::to_string).collect(),
            dpop: client.dpop,
            keys,
            secret,
            created_at: client.created_at.map(instant),
            created_by: client.created_by.as_deref(),
            updated_at: client.updated_at.map(instant),
            updated_by: client.updated_by.as_deref(),
            last_authenticated_at: None,
            last_exchange_at: None,
        }
    }
}

fn client_id(id: &str) -> Result<ClientId, AdminError> {
    ClientId::parse(id).map_err(|e| AdminError::bad_request(e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

async fn list_agents(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let query = super::query::<ListQuery>(request.query_string())?;
    let kind = query
        .kind
        .map(|k| k.parse::<ClientKind>())
        .transpose()
        .map_err(|_| AdminError::bad_request("kind is agent or resource_server"))?;
    let client_state = query
        .state
        .map(|s| s.parse::<ClientState>())
        .transpose()
        .map_err(|_| AdminError::bad_request("state is staged, active, suspended or retired"))?;
    let clients = state.agents.list(kind, client_state).await?;
    let uses = last_uses(&state).await?;
    let views: Vec<AgentView<'_>> = clients
        .iter()
        .map(|c| AgentView::from(c.as_ref()).with_use(uses.get(c.id.as_str())))
        .collect();
    Ok(answer(StatusCode::OK, json!({ "agents": views })))
}

async fn create_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let request: NewAgent = json_body(&body)?;
    let created = state.agents.create(request, &caller.name).await?;
    let client = &created.client;
    let mut body = json!({ "agent": AgentView::from(client.as_ref()) });
    if let Some(secret) = &created.secret {
        body["client_secret"] = json!(secret.as_str());
    }
    Ok(answer(StatusCode::CREATED, body))
}

async fn show_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    Ok(answer(StatusCode::OK, agent_document(&state, &id).await?))
}

/// The agent `id` as `GET /admin/agents/{id}` answers it.
pub(crate) async fn agent_document(state: &AppState, id: &str) -> Result<Value, AdminError> {
    let client = state.agents.show(&client_id(id)?).await?;
    let uses = last_uses(state).await?;
    let view = AgentView::from(client.as_ref()).with_use(uses.get(client.id.as_str()));
    Ok(json!(view))
}

/// Every agent and resource server as `GET /admin/agents` answers them.
pub(crate) async fn agents_document(state: &AppState) -> Result<Value, AdminError> {
    let clients = state.agents.list(None, None).await?;
    let uses = last_uses(state).await?;
    let views: Vec<AgentView<'_>> = clients
        .iter()
        .map(|c| AgentView::from(c.as_ref()).with_use(uses.get(c.id.as_str())))
        .collect();
    Ok(json!({ "agents": views }))
}

/// The role each lifecycle transition needs, as the admin API enforces it.
pub(crate) fn role_for(transition: Transition) -> AdminRole {
    match transition {
        Transition::Suspend => AdminRole::Revoke,
        Transition::Retire | Transition::Activate => AdminRole::Manage,
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpdateQuery {
    #[serde(default)]
    dry_run: bool,
}

/// `PATCH /admin/agents/{id}[?dry_run=true]`: the agent and `changed`, the fields whose values
/// differed (none: nothing was written). A dry run answers the same and writes nothing.
async fn update_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let query = super::query::<UpdateQuery>(request.query_string())?;
    let id = client_id(&id)?;
    let patch: AgentPatch = json_body(&body)?;
    let before = match patch.jwks {
        Some(_) => Some(state.agents.show(&id).await?),
        None => None,
    };
    let updated = state
        .agents
        .update(&id, &patch, &caller.name, query.dry_run)
        .await?;
    let client = &updated.client;
    if !query.dry_run {
        if let Some(before) = before {
            let change = key_change(before.jwks.as_ref(), client.jwks.as_ref());
            if let Some(change) = change {
                credential_changed(&state, &id, CredentialChange::Keys(change)).await;
            }
        }
        if updated.changed.contains(&"secret_hash") {
            credential_changed(&state, &id, CredentialChange::SecretRotated).await;
        }
    }
    Ok(answer(
        StatusCode::OK,
        UpdatedView {
            agent: AgentView::from(client.as_ref()),
            changed: &updated.changed,
        },
    ))
}

/// The agent with the fields a PATCH changed, in one object.
#[derive(Serialize)]
struct UpdatedView<'a> {
    #[serde(flatten)]
    agent: AgentView<'a>,
    changed: &'a [&'static str],
}

/// Tells the Shared Signals receivers concerned; the change itself has landed whatever happens
/// here, so a failure is logged, not answered.
async fn credential_changed(state: &AppState, id: &ClientId, change: CredentialChange) {
    let at_ms = state.clock.now().timestamp_millis();
    if let Err(error) = state
        .ssf
        .credential_changed(id.as_str(), change, at_ms)
        .await
    {
        tracing::warn!(%error, agent = %id, "the credential-change Shared Signal could not be queued");
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    overlap_secs: Option<u64>,
}

async fn rotate_secret(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let id = client_id(&id)?;
    let request: RotateBody = optional_body(&body)?;
    let (_, rotated) = state
        .agents
        .rotate_secret(&id, request.overlap_secs, &caller.name)
        .await?;
    // The new secret is answered whatever happens here: it is shown only once.
    credential_changed(&state, &id, CredentialChange::SecretRotated).await;
    let until = rotated.previous_valid_until.map(instant);
    Ok(answer(
        StatusCode::OK,
        json!({
            "client_secret": rotated.secret.as_str(),
            "previous_valid_until": until,
        }),
    ))
}

/// A lifecycle transition, or with `?dry_run=true` what it would do: the agent as it would be
/// and, for suspension and retirement, their revocation's preview; nothing written, audited or
/// signalled.
async fn move_agent(
    caller: &AdminCaller,
    state: &AppState,
    id: &str,
    request: &HttpRequest,
    body: &[u8],
    transition: Transition,
) -> Result<HttpResponse, AdminError> {
    let dry_run = super::dry_run(request.query_string())?;
    let reason = match transition {
        Transition::Suspend => reason(body, "agent suspended by an administrator")?,
        Transition::Retire => reason(body, "agent retired by an administrator")?,
        Transition::Activate => reason(body, "agent activated by an administrator")?,
    };
    Ok(answer(
        StatusCode::OK,
        transition_as(caller, state, id, transition, &reason, dry_run).await?,
    ))
}

/// A lifecycle transition by `caller`, as the admin API makes it (its role is checked by the
/// caller): with `dry_run`, the agent as it would be and the revocation preview; otherwise the
/// transition, its revocation signalled, and the agent.
pub(crate) async fn transition_as(
    caller: &AdminCaller,
    state: &AppState,
    id: &str,
    transition: Transition,
    reason: &str,
    dry_run: bool,
) -> Result<Value, AdminError> {
    let id = client_id(id)?;
    let reason = reason.to_owned();
    if dry_run {
        let preview = state
            .agents
            .preview_transition(&id, transition, &reason, &caller.name)
            .await?;
        let mut body = json!({
            "dry_run": true,
            "agent": AgentView::from(preview.client.as_ref()),
        });
        if let Some(revocation) = preview.revocation {
            body["revocation"] = json!(revocation);
        }
        return Ok(body);
    }
    let (client, revocation) = state
        .agents
        .transition(&id, transition, &reason, &caller.name)
        .await?;
    if let Some(revocation) = &revocation {
        let grain = mandate_core::ssf::Grain::Agent(id.as_str());
        super::chains::signal(state, revocation, grain, &reason).await?;
    }
    let mut body = json!({ "agent": AgentView::from(client.as_ref()) });
    if let Some(revocation) = revocation {
        body["revocation"] = json!(revocation);
    }
    Ok(body)
}

async fn suspend_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    move_agent(&caller, &state, &id, &request, &body, Transition::Suspend).await
}

async fn retire_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    move_agent(&caller, &state, &id, &request, &body, Transition::Retire).await
}

async fn activate_agent(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    move_agent(&caller, &state, &id, &request, &body, Transition::Activate).await
}
