//! The console's pages. Each reads the document the admin API answers (agents, chains, a chain's
//! tree, a revocation's dry run, the audit stream, the policy) and renders it; each change goes
//! through the function the admin API's endpoint calls, after the same role check.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use mandate_core::Target;
use mandate_model::Transition;
use serde::Deserialize;
use serde_json::Value;

use super::graph::{self, Layout};
use super::{changing, page, see_other, session, session_cookie, sessions, Nav, Refusal};
use crate::admin::{agents as admin_agents, chains as admin_chains, policies as admin_policies};
use crate::audit::AuditFilter;
use crate::config::AdminRole;
use crate::state::AppState;

type Answer = Result<HttpResponse, Refusal>;

fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn list(value: &Value, key: &str) -> String {
    value[key]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// A page with a title and a message (errors, the public not-found).
#[derive(Template)]
#[template(path = "console/message.html")]
pub(crate) struct MessagePage {
    pub nav: Option<Nav>,
    pub title: String,
    pub message: String,
}

pub(crate) async fn not_found() -> HttpResponse {
    page(
        StatusCode::NOT_FOUND,
        &MessagePage {
            nav: None,
            title: "Not found".into(),
            message: "There is no such console page.".into(),
        },
    )
}

pub(crate) async fn home(request: HttpRequest) -> Answer {
    session(&request)?;
    Ok(see_other("/console/agents"))
}

#[derive(Template)]
#[template(path = "console/signin.html")]
struct SignInPage {
    nav: Option<Nav>,
    error: Option<String>,
}

pub(crate) async fn signin_form() -> HttpResponse {
    page(
        StatusCode::OK,
        &SignInPage {
            nav: None,
            error: None,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    name: String,
    secret: String,
}

pub(crate) async fn signin(
    request: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<SignInForm>,
) -> Answer {
    if !super::same_origin(&request) {
        return Err(Refusal::Page(
            StatusCode::FORBIDDEN,
            "sign in from this console's own page".into(),
        ));
    }
    // Every credential is compared, each in constant time, as the API does.
    let mut found = None;
    for credential in state.admin_credentials.iter() {
        let matches = credential.secret_hash.matches(&form.secret);
        if matches && credential.name == form.name && found.is_none() {
            found = Some(credential);
        }
    }
    let Some(credential) = found else {
        tracing::info!(target: "audit", "console sign-in failed");
        return Ok(page(
            StatusCode::UNAUTHORIZED,
            &SignInPage {
                nav: None,
                error: Some("No admin credential has that name and secret.".into()),
            },
        ));
    };
    let id = sessions(&request)?.start(&credential.name, credential.role);
    tracing::info!(target: "audit", admin = %credential.name, "console sign-in");
    let mut answer = see_other("/console/agents");
    answer
        .add_cookie(&session_cookie(&request, &id))
        .map_err(|e| Refusal::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(answer)
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn signout(request: HttpRequest, form: web::Form<CsrfForm>) -> Answer {
    let (_, _) = changing(&request, &form.csrf, AdminRole::Read)?;
    if let Some(cookie) = request.cookie(super::session::COOKIE) {
        sessions(&request)?.end(cookie.value());
    }
    let mut answer = see_other("/console/signin");
    answer
        .add_cookie(&session_cookie(&request, ""))
        .map_err(|e| Refusal::Page(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(answer)
}

struct ClientRow {
    id: String,
    state: String,
    owners: String,
    last_used: String,
    audiences: String,
    verdict: String,
}

#[derive(Template)]
#[template(path = "console/agents.html")]
struct AgentsPage {
    nav: Option<Nav>,
    agents: Vec<ClientRow>,
    servers: Vec<ClientRow>,
}

/// Each audience's participation verdict (docs/GOVERNANCE.md).
async fn verdicts(state: &AppState) -> Result<HashMap<String, String>, Refusal> {
    let map = state
        .participation
        .map()
        .await
        .map_err(crate::admin::AdminError::from)?;
    Ok(map
        .into_iter()
        .map(|a| {
            let verdict = serde_json::to_value(a.verdict)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            (a.audience, verdict)
        })
        .collect())
}

fn client_row(agent: &Value, verdicts: &HashMap<String, String>) -> ClientRow {
    let last = [
        text(agent, "last_exchange_at"),
        text(agent, "last_authenticated_at"),
    ]
    .into_iter()
    .find(|t| !t.is_empty())
    .unwrap_or_else(|| "never".into());
    let audiences: Vec<String> = agent["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let verdict = audiences
        .iter()
        .map(|a| verdicts.get(a).cloned().unwrap_or_else(|| "silent".into()))
        .collect::<Vec<_>>()
        .join(", ");
    ClientRow {
        id: text(agent, "client_id"),
        state: text(agent, "state"),
        owners: list(agent, "owners"),
        last_used: last,
        audiences: audiences.join(", "),
        verdict,
    }
}

pub(crate) async fn agents(request: HttpRequest, state: web::Data<AppState>) -> Answer {
    let session = session(&request)?;
    let document = admin_agents::agents_document(&state).await?;
    let verdicts = verdicts(&state).await?;
    let (mut agents, mut servers) = (Vec::new(), Vec::new());
    for agent in document["agents"].as_array().into_iter().flatten() {
        let row = client_row(agent, &verdicts);
        if text(agent, "kind") == "resource_server" {
            servers.push(row);
        } else {
            agents.push(row);
        }
    }
    Ok(page(
        StatusCode::OK,
        &AgentsPage {
            nav: Some(Nav::from(&session)),
            agents,
            servers,
        },
    ))
}

struct ChainRow {
    id: String,
    subject: String,
    agents: String,
    audiences: String,
    hops: String,
    started_at: String,
    status: String,
}

fn chain_rows(document: &Value) -> Vec<ChainRow> {
    document["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ChainRow {
            id: text(c, "chain_id"),
            subject: text(c, "subject"),
            agents: list(c, "agents"),
            audiences: list(c, "audiences"),
            hops: text(c, "hops"),
            started_at: text(c, "started_at"),
            status: text(c, "status"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "console/agent.html")]
struct AgentPage {
    nav: Option<Nav>,
    id: String,
    kind: String,
    state: String,
    owners: String,
    description: String,
    auth_method: String,
    last_used: String,
    created: String,
    updated: String,
    chains: Vec<ChainRow>,
}

pub(crate) async fn agent(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Answer {
    let session = session(&request)?;
    let agent = admin_agents::agent_document(&state, &id).await?;
    let row = client_row(&agent, &HashMap::new());
    let query = serde_urlencoded::to_string([("agent", id.as_str())]).unwrap_or_default();
    let chains = admin_chains::chain_listing(&state, &query).await?;
    Ok(page(
        StatusCode::OK,
        &AgentPage {
            nav: Some(Nav::from(&session)),
            id: row.id,
            kind: text(&agent, "kind"),
            state: row.state,
            owners: row.owners,
            description: text(&agent, "description"),
            auth_method: text(&agent, "auth_method"),
            last_used: row.last_used,
            created: format!(
                "{} by {}",
                text(&agent, "created_at"),
                text(&agent, "created_by")
            ),
            updated: format!(
                "{} by {}",
                text(&agent, "updated_at"),
                text(&agent, "updated_by")
            ),
            chains: chain_rows(&chains),
        },
    ))
}

#[derive(Template)]
#[template(path = "console/chains.html")]
struct ChainsPage {
    nav: Option<Nav>,
    subject: String,
    agent: String,
    audience: String,
    status: String,
    since: String,
    until: String,
    chains: Vec<ChainRow>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct ChainFilters {
    #[serde(default)]
    subject: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    cursor: String,
}

pub(crate) async fn chains(
    request: HttpRequest,
    state: web::Data<AppState>,
    filters: web::Query<ChainFilters>,
) -> Answer {
    let session = session(&request)?;
    // The API's own filters, as the API parses them (empty fields are left out).
    let pairs: Vec<(&str, &str)> = [
        ("subject", filters.subject.as_str()),
        ("agent", filters.agent.as_str()),
        ("audience", filters.audience.as_str()),
        ("status", filters.status.as_str()),
        ("since", filters.since.as_str()),
        ("until", filters.until.as_str()),
        ("cursor", filters.cursor.as_str()),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .collect();
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    let document = admin_chains::chain_listing(&state, &query).await?;
    let next = document["next_cursor"].as_str().map(|cursor| {
        let mut pairs: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| *k != "cursor")
            .copied()
            .collect();
        pairs.push(("cursor", cursor));
        format!(
            "/console/chains?{}",
            serde_urlencoded::to_string(&pairs).unwrap_or_default()
        )
    });
    Ok(page(
        StatusCode::OK,
        &ChainsPage {
            nav: Some(Nav::from(&session)),
            subject: filters.subject.clone(),
            agent: filters.agent.clone(),
            audience: filters.audience.clone(),
            status: filters.status.clone(),
            since: filters.since.clone(),
            until: filters.until.clone(),
            chains: chain_rows(&document),
            next,
        },
    ))
}

#[derive(Template)]
#[template(path = "console/chain.html")]
struct ChainPage {
    nav: Option<Nav>,
    chain_id: String,
    subject: String,
    graph: Layout,
    live: usize,
    expires: HashMap<String, String>,
}

pub(crate) async fn chain(
    request: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Answer {
    let session = session(&request)?;
    let document = admin_chains::chain_tree(&state, &id).await?;
    let graph = graph::layout(&document);
    let mut expires = HashMap::new();
    fn walk(hop: &Value, expires: &mut HashMap<String, String>) {
        let at = hop["expires_at"]
            .as_i64()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        expires.insert(text(hop, "jti"), at);
        for child in hop["children"].as_array().into_iter().flatten() {
            walk(child, expires);
        }
    }
    let roots = document["roots"].as_array().cloned().unwrap_or_default();
    for root in &roots {
        walk(root, &mut expires);
    }
    let subject = roots
        .first()
        .map(|r| text(r, "subject"))
        .unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        &ChainPage {
            nav: Some(Nav::from(&session)),
            chain_id: id.to_string(),
            subject,
            live: graph.hops.iter().filter(|h| h.status == "live").count(),
            graph,
            expires,
        },
    ))
}

struct DoomedHop {
    jti: String,
    chain_id: String,
    actors: String,
    audience: String,
    status: String,
}

#[derive(Template)]
#[template(path = "console/preview.html")]
struct PreviewPage {
    nav: Option<Nav>,
    title: String,
    action: String,
    allowed: bool,
    needed: String,
    hops: Vec<DoomedHop>,
    chains: usize,
    live: usize,
    entries: String,
    agent_state: Option<String>,
}

fn doomed(preview: &Value) -> (Vec<DoomedHop>, usize, usize, String) {
    let hops: Vec<DoomedHop> = preview["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| DoomedHop {
            jti: text(h, "hop"),
            chain_id: text(h, "chain_id"),
            actors: list(h, "actors"),
            audience: text(h, "audience"),
            status: h["status"]
                .get("status")
                .and_then(Value::as_str)
                .map_or_else(|| text(h, "status"), str::to_owned),
        })
        .collect();
    let chains = preview["chains_revoked"].as_array().map_or(0, Vec::len);
    let live = hops.iter().filter(|h| h.status == "live").count();
    let entries = preview["entries"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|entry| format!("{}:{}", text(entry, "kind"), text(entry, "id")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    (hops, chains, live, entries)
}

/// A revocation's grain and target from the path.
fn target(grain: &str, value: &str) -> Result<Target, Refusal> {
    match grain {
        "hop" => Ok(Target::Hop(value.to_owned())),
        "chain" => Ok(Target::Chain(value.to_owned())),
        "subject" => Ok(Target::Subject(value.to_owned())),
        _ => Err(Refusal::Page(
            StatusCode::NOT_FOUND,
            "a revocation is of a hop, a chain or a subject".into(),
        )),
    }
}

pub(crate) async fn revoke_preview(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Answer {
    let session = session(&request)?;
    let (grain, value) = path.into_inner();
    let target = target(&grain, &value)?;
    let caller = session.caller();
    // The dry run is the API's: the same plan the revocation then carries out.
    let preview =
        admin_chains::revoke_as(&state, &caller, target, "previewed in the console", true).await?;
    let (hops, chains, live, entries) = doomed(&preview);
    let nav = Nav::from(&session);
    Ok(page(
        StatusCode::OK,
        &PreviewPage {
            title: format!("Revoke {grain} {value}"),
            action: request.path().to_owned(),
            allowed: nav.can_revoke,
            needed: AdminRole::Revoke.to_string(),
            nav: Some(nav),
            hops,
            chains,
            live,
            entries,
            agent_state: None,
        },
    ))
}

#[derive(Deserialize)]
pub(crate) struct ConfirmForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

fn reason_of(form: &ConfirmForm, default: &str) -> Result<String, Refusal> {
    let reason = form.reason.trim();
    if reason.chars().count() > 500 {
        return Err(Refusal::Page(
            StatusCode::BAD_REQUEST,
            "the reason is longer than 500 characters".into(),
        ));
    }
    Ok(if reason.is_empty() {
        default.to_owned()
    } else {
        reason.to_owned()
    })
}

pub(crate) async fn revoke_confirm(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ConfirmForm>,
) -> Answer {
    let (_, caller) = changing(&request, &form.csrf, AdminRole::Revoke)?;
    let (grain, value) = path.into_inner();
    let target = target(&grain, &value)?;
    // Where to go afterwards: the chain of the hop, the chain, or the user's chains.
    let back = match &target {
        Target::Hop(jti) => state
            .ledger
            .hop(&mandate_chain::HopId(jti.clone()))
            .await
            .ok()
            .flatten()
            .map(|hop| format!("/console/chains/{}", hop.chain_id)),
        Target::Chain(id) => Some(format!("/console/chains/{id}")),
        Target::Subject(subject) => Some(format!(
            "/console/chains?{}",
            serde_urlencoded::to_string([("subject", subject.as_str())]).unwrap_or_default()
        )),
        Target::Agent(_) => None,
    };
    let reason = reason_of(&form, "revoked by an administrator in the console")?;
    admin_chains::revoke_as(&state, &caller, target, &reason, false).await?;
    Ok(see_other(
        &back.unwrap_or_else(|| "/console/chains".to_owned()),
    ))
}

fn transition_of(action: &str) -> Result<Transition, Refusal> {
    match action {
        "suspend" => Ok(Transition::Suspend),
        "retire" => Ok(Transition::Retire),
        "activate" => Ok(Transition::Activate),
        _ => Err(Refusal::Page(
            StatusCode::NOT_FOUND,
            "an agent is suspended, retired or activated".into(),
        )),
    }
}

pub(crate) async fn transition_preview(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Answer {
    let session = session(&request)?;
    let (id, action) = path.into_inner();
    let transition = transition_of(&action)?;
    let caller = session.caller();
    let preview = admin_agents::transition_as(
        &caller,
        &state,
        &id,
        transition,
        "previewed in the console",
        true,
    )
    .await?;
    let (hops, chains, live, entries) = doomed(&preview["revocation"]);
    let needed = admin_agents::role_for(transition);
    Ok(page(
        StatusCode::OK,
        &PreviewPage {
            title: format!("{action} agent {id}"),
            action: request.path().to_owned(),
            allowed: session.role.allows(needed),
            needed: needed.to_string(),
            nav: Some(Nav::from(&session)),
            hops,
            chains,
            live,
            entries,
            agent_state: Some(text(&preview["agent"], "state")),
        },
    ))
}

pub(crate) async fn transition_confirm(
    request: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ConfirmForm>,
) -> Answer {
    let (id, action) = path.into_inner();
    let transition = transition_of(&action)?;
    let (_, caller) = changing(&request, &form.csrf, admin_agents::role_for(transition))?;
    let reason = reason_of(&form, &format!("agent {action} in the console"))?;
    admin_agents::transition_as(&caller, &state, &id, transition, &reason, false).await?;
    Ok(see_other(&format!(
        "/console/agents/{}",
        form_urlencoded_segment(&id)
    )))
}

/// `id` as one path segment (client ids are URL-safe; anything else is encoded).
fn form_urlencoded_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

struct AuditRow {
    at: String,
    actor: String,
    action: String,
    target: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    action: String,
    actor: String,
    events: Vec<AuditRow>,
}

#[derive(Deserialize, Default)]
pub(crate) struct AuditFilters {
    #[serde(default)]
    action: String,
    #[serde(default)]
    actor: String,
}

pub(crate) async fn audit(
    request: HttpRequest,
    state: web::Data<AppState>,
    filters: web::Query<AuditFilters>,
) -> Answer {
    let session = session(&request)?;
    let filter = AuditFilter {
        action: (!filters.action.is_empty()).then(|| filters.action.clone()),
        actor: (!filters.actor.is_empty()).then(|| filters.actor.clone()),
    };
    let events = state
        .audit
        .recent(&filter, 200)
        .await
        .map_err(|e| Refusal::Page(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let events = events
        .into_iter()
        .map(|e| AuditRow {
            at: chrono::DateTime::from_timestamp_millis(e.at)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
        })
        .collect();
    Ok(page(
        StatusCode::OK,
        &AuditPage {
            nav: Some(Nav::from(&session)),
            action: filters.action.clone(),
            actor: filters.actor.clone(),
            events,
        },
    ))
}

struct PolicyRow {
    actor: String,
    audience: String,
    scopes: String,
    max_depth: String,
}

#[derive(Template)]
#[template(path = "console/policies.html")]
struct PoliciesPage {
    nav: Option<Nav>,
    version: String,
    rows: Vec<PolicyRow>,
    question: ExplainFields,
    answer: Option<String>,
    allowed: Option<bool>,
}

#[derive(Deserialize, Default, Clone)]
pub(crate) struct ExplainFields {
    #[serde(default)]
    agent: String,
    #[serde(default)]
    subject_token_type: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    scope: String,
}

pub(crate) async fn policies(
    request: HttpRequest,
    state: web::Data<AppState>,
    question: web::Query<ExplainFields>,
) -> Answer {
    let session = session(&request)?;
    let document = admin_policies::policy_document(&state).await?;
    let rows = document["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| PolicyRow {
            actor: text(r, "actor"),
            audience: text(r, "audience"),
            scopes: list(r, "scopes"),
            max_depth: text(r, "max_depth"),
        })
        .collect();
    // Explain, as `POST /admin/policies/explain` does, when a question was asked.
    let (answer, allowed) = if question.agent.is_empty() {
        (None, None)
    } else {
        let mut body = serde_json::json!({
            "agent": question.agent,
            "subject_token_type": if question.subject_token_type.is_empty() { "id_token" } else { question.subject_token_type.as_str() },
            "audience": question.audience,
        });
        if !question.scope.is_empty() {
            body["scope"] = Value::String(question.scope.clone());
        }
        match admin_policies::explain_document(&state, body.to_string().as_bytes()).await {
            Ok(answer) => (
                Some(serde_json::to_string_pretty(&answer).unwrap_or_default()),
                answer["allowed"].as_bool(),
            ),
            Err(error) => (Some(error.message().to_owned()), Some(false)),
        }
    };
    Ok(page(
        StatusCode::OK,
        &PoliciesPage {
            nav: Some(Nav::from(&session)),
            version: text(&document, "version"),
            rows,
            question: question.into_inner(),
            answer,
            allowed,
        },
    ))
}
