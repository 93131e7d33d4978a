//! `/admin/chains`, `/admin/hops`, `/admin/subjects`: reading chains and revoking at each grain.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat};
use mandate_chain::{ChainId, ChainPage, ChainStart, HopRecord};
use mandate_model::{Audience, ClientId, Subject};
use serde::Serialize;
use serde_json::json;

use mandate_core::ssf::Grain;
use mandate_core::Target;

use super::agents::answer;
use super::{dry_run, reason, AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chains", web::get().to(list_chains))
        .route("/agents/{id}/chains", web::get().to(agent_chains))
        .route("/chains/{id}", web::get().to(show_chain))
        .route("/chains/{id}/revoke", web::post().to(revoke_chain))
        .route("/hops/{jti}/revoke", web::post().to(revoke_hop))
        .route("/subjects/{sub}/revoke", web::post().to(revoke_subject))
        .route(
            "/subjects/{sub}/authority",
            web::get().to(subject_authority),
        );
}

/// `GET /admin/subjects/{sub}/authority`: which agents can act for the user now, and which
/// apps that reaches (docs/GOVERNANCE.md).
async fn subject_authority(
    caller: AdminCaller,
    state: web::Data<AppState>,
    subject: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let subject = Subject::parse(&subject)
        .map_err(|e| AdminError::bad_request(format!("invalid subject: {e}")))?;
    let authority = state.authority.of(&subject).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(authority))
}

async fn revoke_chain(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let dry_run = dry_run(request.query_string())?;
    let reason = reason(&body, "revoked by an administrator")?;
    if dry_run {
        return preview(&state, &caller, Target::Chain(id.to_string()), &reason).await;
    }
    let outcome = state
        .revocation
        .revoke_chain(&id, &reason, &caller.name)
        .await?;
    signal(&state, &outcome, Grain::Chain(&id), &reason).await?;
    Ok(answer(actix_web::http::StatusCode::OK, outcome))
}

async fn revoke_hop(
    caller: AdminCaller,
    state: web::Data<AppState>,
    jti: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let dry_run = dry_run(request.query_string())?;
    let reason = reason(&body, "revoked by an administrator")?;
    if dry_run {
        return preview(&state, &caller, Target::Hop(jti.to_string()), &reason).await;
    }
    let outcome = state
        .revocation
        .revoke_hop(&jti, &reason, &caller.name)
        .await?;
    signal(&state, &outcome, Grain::Hop, &reason).await?;
    Ok(answer(actix_web::http::StatusCode::OK, outcome))
}

/// The dry run of a revocation at `target`: what it would write and kill; no entry, no audit
/// event, no Shared Signal.
async fn preview(
    state: &AppState,
    caller: &AdminCaller,
    target: Target,
    reason: &str,
) -> Result<HttpResponse, AdminError> {
    let preview = state
        .revocation
        .preview(&target, reason, &caller.name)
        .await?;
    Ok(answer(actix_web::http::StatusCode::OK, preview))
}

/// Queues the Shared Signals a revocation raises before it is answered, so that a crash after
/// the answer loses none. The revocation stands if this fails; the answer is then 503 and the
/// administrator's retry (a revocation is idempotent) queues them again.
pub(super) async fn signal(
    state: &AppState,
    outcome: &mandate_core::RevocationOutcome,
    grain: Grain<'_>,
    reason: &str,
) -> Result<(), AdminError> {
    state.ssf.raise(grain, outcome, reason).await?;
    Ok(())
}

async fn revoke_subject(
    caller: AdminCaller,
    state: web::Data<AppState>,
    subject: web::Path<String>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Revoke)?;
    let dry_run = dry_run(request.query_string())?;
    let reason = reason(&body, "revoked by an administrator")?;
    if dry_run {
        return preview(
            &state,
            &caller,
            Target::Subject(subject.to_string()),
            &reason,
        )
        .await;
    }
    let outcome = state
        .revocation
        .revoke_subject(&subject, &reason, &caller.name)
        .await?;
    signal(&state, &outcome, Grain::Subject(&subject), &reason).await?;
    Ok(answer(actix_web::http::StatusCode::OK, outcome))
}

/// `GET /admin/chains/{id}`: the chain as a tree of hops, each with its status and evidence.
async fn show_chain(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    Ok(answer(
        actix_web::http::StatusCode::OK,
        chain_tree(&state, &id).await?,
    ))
}

/// The chain `id` as `GET /admin/chains/{id}` answers it (the console draws the same document).
pub(crate) async fn chain_tree(
    state: &AppState,
    id: &str,
) -> Result<serde_json::Value, AdminError> {
    let hops = state
        .ledger
        .chain(&mandate_chain::ChainId(id.to_string()))
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    if hops.is_empty() {
        return Err(AdminError::not_found(format!("no chain {id}")));
    }
    let mut views = Vec::with_capacity(hops.len());
    for hop in &hops {
        let (status, revoked_by) = hop_status(state, hop).await?;
        views.push((hop, status.as_str(), revoked_by));
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
        let mut view = json!({
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
        });
        // RFC 9449: the key the hop's token is bound to, when it is.
        if let (Some(jkt), Some(object)) = (&hop.jkt, view.as_object_mut()) {
            object.insert("jkt".into(), json!(jkt));
        }
        view
    }
    let roots: Vec<serde_json::Value> = views
        .iter()
        .filter(|(h, _, _)| h.parent.is_none())
        .map(|(h, s, r)| node(h, s, r, &views))
        .collect();
    Ok(json!({ "chain_id": id, "hops": hops.len(), "roots": roots }))
}

/// A hop's status: `revoked` when the revocation list covers it (with the entry that does),
/// else `expired` once its `exp` has passed on the store's clock, else `live`.
async fn hop_status(
    state: &AppState,
    hop: &HopRecord,
) -> Result<(Status, Option<serde_json::Value>), AdminError> {
    let checked = state
        .revocations
        .check(&crate::revocation::facts_of_hop(hop))
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    Ok(match checked.verdict {
        mandate_revocation::Verdict::Revoked { kind, id } => {
            (Status::Revoked, Some(json!({"kind": kind, "id": id})))
        }
        mandate_revocation::Verdict::Live if hop.expires_at * 1000 <= checked.now_ms => {
            (Status::Expired, None)
        }
        mandate_revocation::Verdict::Live => (Status::Live, None),
    })
}

/// The status of a hop, and of a chain: `live` while any hop is live, `revoked` when none is
/// live and one was revoked, `expired` otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Live,
    Revoked,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Live => "live",
            Status::Revoked => "revoked",
            Status::Expired => "expired",
        }
    }
}

/// The default and the largest page of chains (docs/ADMIN-API.md).
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;
/// How many chains of the index one request reads from the ledger at most. A filter that
/// matches little then answers a short page with a cursor rather than walking the whole ledger.
const SCAN_MAX: usize = 5_000;
/// How many index entries are fetched at a time.
const INDEX_BATCH: usize = 100;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainsQuery {
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
}

/// A parsed chain listing: which chains, and which page of them.
#[derive(Debug)]
struct ChainListing {
    subject: Option<Subject>,
    agent: Option<ClientId>,
    audience: Option<Audience>,
    status: Option<Status>,
    since: Option<i64>,
    until: Option<i64>,
    after: Option<ChainStart>,
    limit: usize,
}

impl TryFrom<ChainsQuery> for ChainListing {
    type Error = AdminError;

    fn try_from(query: ChainsQuery) -> Result<Self, AdminError> {
        let bad = |name: &str, e: &dyn std::fmt::Display| {
            AdminError::bad_request(format!("invalid {name}: {e}"))
        };
        let instant = |name: &str, value: Option<String>| {
            value
                .map(|v| {
                    DateTime::parse_from_rfc3339(&v)
                        .map(|t| t.timestamp())
                        .map_err(|e| bad(name, &e))
                })
                .transpose()
        };
        let status = query
            .status
            .map(|s| match s.as_str() {
                "live" => Ok(Status::Live),
                "revoked" => Ok(Status::Revoked),
                "expired" => Ok(Status::Expired),
                _ => Err(AdminError::bad_request(
                    "invalid status: expected live, revoked or expired",
                )),
            })
            .transpose()?;
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AdminError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        let since = instant("since", query.since)?;
        let until = instant("until", query.until)?;
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(AdminError::bad_request("since is after until"));
            }
        }
        Ok(Self {
            subject: query
                .subject
                .map(|s| Subject::parse(&s).map_err(|e| bad("subject", &e)))
                .transpose()?,
            agent: query
                .agent
                .map(|a| ClientId::parse(&a).map_err(|e| bad("agent", &e)))
                .transpose()?,
            audience: query
                .audience
                .map(|a| Audience::parse(&a).map_err(|e| bad("audience", &e)))
                .transpose()?,
            status,
            since,
            until,
            after: query.cursor.as_deref().map(decode_cursor).transpose()?,
            limit,
        })
    }
}

impl ChainListing {
    fn from_query(query_string: &str) -> Result<Self, AdminError> {
        super::query::<ChainsQuery>(query_string)?.try_into()
    }

    /// The filters that need no revocation check: subject, agent (the client or any actor of
    /// any hop), audience (of any hop).
    fn admits(&self, hops: &[HopRecord]) -> bool {
        self.subject
            .as_ref()
            .is_none_or(|s| hops.iter().any(|h| &h.subject == s))
            && self.agent.as_ref().is_none_or(|a| {
                hops.iter()
                    .any(|h| &h.client_id == a || h.actors.contains(a))
            })
            && self
                .audience
                .as_ref()
                .is_none_or(|a| hops.iter().any(|h| &h.audience == a))
    }
}

/// The cursor is the position of the last chain of the page, opaque to callers: hex of
/// `<started_at>:<chain_id>`.
fn encode_cursor(start: &ChainStart) -> String {
    format!("{}:{}", start.started_at, start.chain_id)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_cursor(cursor: &str) -> Result<ChainStart, AdminError> {
    let invalid = || AdminError::bad_request("invalid cursor");
    if cursor.len() % 2 != 0 || cursor.len() > 512 {
        return Err(invalid());
    }
    let bytes = (0..cursor.len())
        .step_by(2)
        .map(|i| {
            cursor
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(invalid)?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (at, chain) = text.split_once(':').ok_or_else(invalid)?;
    if chain.is_empty() {
        return Err(invalid());
    }
    Ok(ChainStart {
        started_at: at.parse().map_err(|_| invalid())?,
        chain_id: ChainId(chain.to_owned()),
    })
}

/// `ChainSummary` of docs/ADMIN-API.md.
#[derive(Debug, Serialize)]
struct ChainSummary {
    chain_id: String,
    subject: String,
    root_client_id: String,
    agents: Vec<String>,
    audiences: Vec<String>,
    hops: usize,
    started_at: Option<String>,
    last_issued_at: Option<String>,
    expires_at: Option<String>,
    status: Status,
}

fn rfc3339(secs: i64) -> Option<String> {
    DateTime::from_timestamp(secs, 0).map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

async fn summarize(
    state: &AppState,
    start: &ChainStart,
    hops: &[HopRecord],
) -> Result<ChainSummary, AdminError> {
    let mut any_live = false;
    let mut any_revoked = false;
    for hop in hops {
        match hop_status(state, hop).await?.0 {
            Status::Live => {
                any_live = true;
                break;
            }
            Status::Revoked => any_revoked = true,
            Status::Expired => {}
        }
    }
    let status = if any_live {
        Status::Live
    } else if any_revoked {
        Status::Revoked
    } else {
        Status::Expired
    };
    let mut agents: Vec<String> = Vec::new();
    let mut audiences: Vec<String> = Vec::new();
    for hop in hops {
        for actor in hop.actors.iter().rev() {
            let actor = actor.to_string();
            if !agents.contains(&actor) {
                agents.push(actor);
            }
        }
        let audience = hop.audience.to_string();
        if !audiences.contains(&audience) {
            audiences.push(audience);
        }
    }
    let root = hops
        .iter()
        .filter(|h| h.parent.is_none())
        .min_by_key(|h| h.issued_at);
    Ok(ChainSummary {
        chain_id: start.chain_id.to_string(),
        subject: hops
            .first()
            .map(|h| h.subject.to_string())
            .unwrap_or_default(),
        root_client_id: root.map(|h| h.client_id.to_string()).unwrap_or_default(),
        agents,
        audiences,
        hops: hops.len(),
        started_at: rfc3339(start.started_at),
        last_issued_at: hops.iter().map(|h| h.issued_at).max().and_then(rfc3339),
        expires_at: hops.iter().map(|h| h.expires_at).max().and_then(rfc3339),
        status,
    })
}

/// One page of chains, newest first, and the cursor of the next page (`None` when the index has
/// no chain after this page). The index gives chains by start; their hops, read from the ledger,
/// decide the filters.
async fn list(
    state: &AppState,
    listing: &ChainListing,
) -> Result<(Vec<ChainSummary>, Option<ChainStart>), AdminError> {
    let mut found = Vec::with_capacity(listing.limit.min(INDEX_BATCH));
    let mut after = listing.after.clone();
    let mut scanned = 0usize;
    loop {
        let batch = state
            .ledger
            .chains_by_start(&ChainPage {
                since: listing.since,
                until: listing.until,
                after: after.clone(),
                limit: INDEX_BATCH,
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "ledger unavailable");
                AdminError::unavailable()
            })?;
        let exhausted = batch.len() < INDEX_BATCH;
        let count = batch.len();
        for (i, start) in batch.into_iter().enumerate() {
            scanned += 1;
            after = Some(start.clone());
            let last_of_index = exhausted && i + 1 == count;
            let hops = state.ledger.chain(&start.chain_id).await.map_err(|e| {
                tracing::warn!(error = %e, "ledger unavailable");
                AdminError::unavailable()
            })?;
            // A chain whose records outlived their retention is gone from the listing too.
            if !hops.is_empty() && listing.admits(&hops) {
                let summary = summarize(state, &start, &hops).await?;
                if listing.status.is_none_or(|s| s == summary.status) {
                    found.push(summary);
                }
            }
            if found.len() == listing.limit || scanned >= SCAN_MAX {
                return Ok((found, (!last_of_index).then_some(start)));
            }
        }
        if exhausted {
            return Ok((found, None));
        }
    }
}

async fn answer_listing(
    state: &AppState,
    listing: &ChainListing,
) -> Result<HttpResponse, AdminError> {
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(listing_document(state, listing).await?))
}

async fn listing_document(
    state: &AppState,
    listing: &ChainListing,
) -> Result<serde_json::Value, AdminError> {
    let (chains, next) = list(state, listing).await?;
    Ok(json!({
        "chains": chains,
        "next_cursor": next.as_ref().map(encode_cursor),
    }))
}

/// The chains `GET /admin/chains?<query>` answers (the console lists the same).
pub(crate) async fn chain_listing(
    state: &AppState,
    query: &str,
) -> Result<serde_json::Value, AdminError> {
    listing_document(state, &ChainListing::from_query(query)?).await
}

/// A revocation at `target` by `caller`, as the admin API makes it: with `dry_run`, the preview
/// (nothing written); otherwise the revocation, its Shared Signals queued, and its outcome.
pub(crate) async fn revoke_as(
    state: &AppState,
    caller: &AdminCaller,
    target: Target,
    reason: &str,
    dry_run: bool,
) -> Result<serde_json::Value, AdminError> {
    if dry_run {
        let preview = state
            .revocation
            .preview(&target, reason, &caller.name)
            .await?;
        return Ok(json!(preview));
    }
    let outcome = match &target {
        Target::Hop(jti) => {
            let outcome = state
                .revocation
                .revoke_hop(jti, reason, &caller.name)
                .await?;
            signal(state, &outcome, Grain::Hop, reason).await?;
            outcome
        }
        Target::Chain(id) => {
            let outcome = state
                .revocation
                .revoke_chain(id, reason, &caller.name)
                .await?;
            signal(state, &outcome, Grain::Chain(id), reason).await?;
            outcome
        }
        Target::Subject(subject) => {
            let outcome = state
                .revocation
                .revoke_subject(subject, reason, &caller.name)
                .await?;
            signal(state, &outcome, Grain::Subject(subject), reason).await?;
            outcome
        }
        Target::Agent(_) => {
            return Err(AdminError::bad_request(
                "an agent is revoked by suspending or retiring it",
            ))
        }
    };
    Ok(json!(outcome))
}

/// `GET /admin/chains`: chains, newest first, filtered and paged.
async fn list_chains(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let listing = ChainListing::from_query(request.query_string())?;
    answer_listing(&state, &listing).await
}

/// `GET /admin/agents/{id}/chains`: everything the agent touched, as `?agent={id}` answers.
async fn agent_chains(
    caller: AdminCaller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let id = ClientId::parse(&id).map_err(|e| AdminError::bad_request(e.to_string()))?;
    let mut listing = ChainListing::from_query(request.query_string())?;
    if listing.agent.as_ref().is_some_and(|a| a != &id) {
        return Err(AdminError::bad_request(
            "agent in the query differs from the agent in the path",
        ));
    }
    state
        .clients
        .client(&id)
        .await
        .map_err(|e| AdminError::store_down(&e))?
        .ok_or_else(|| AdminError::not_found(format!("no client '{id}'")))?;
    listing.agent = Some(id);
    answer_listing(&state, &listing).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let start = ChainStart {
            started_at: 1_800_000_000,
            chain_id: ChainId("chn_abc-DEF_1".into()),
        };
        assert_eq!(decode_cursor(&encode_cursor(&start)).unwrap(), start);
        for bad in ["", "zz", "abc", "3a", "31", "313a", &"00".repeat(300)] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
