//! `/admin/chains`, `/admin/hops`, `/admin/subjects`: reading chains and revoking at each grain.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::{record_action, AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/chains/{id}", web::get().to(show_chain))
        .route("/chains/{id}/revoke", web::post().to(revoke_chain))
        .route("/hops/{jti}/revoke", web::post().to(revoke_hop))
        .route("/subjects/{sub}/revoke", web::post().to(revoke_subject));
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
