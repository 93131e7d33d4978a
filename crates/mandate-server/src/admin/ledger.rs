//! `/admin/ledger…`: the journal of the ledger as evidence (docs/EVIDENCE.md) — its bounds, its
//! entries by cursor, its checkpoints, a streamed export (the export format or OCSF) and an
//! online verification. All need the `read` role.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::DateTime;
use futures_util::TryStreamExt as _;
use mandate_core::{Cursor, ExportFormat};
use mandate_journal::Selection;
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

/// The default and the largest page (docs/ADMIN-API.md, "Ledger").
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1_000;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ledger", web::get().to(summary))
        .route("/ledger/entries", web::get().to(entries))
        .route("/ledger/checkpoints", web::get().to(checkpoints))
        .route("/ledger/export", web::get().to(export))
        .route("/ledger/verify", web::get().to(verify));
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SelectionQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    chain: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

impl SelectionQuery {
    fn selection(&self) -> Result<Selection, AdminError> {
        let instant = |name: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|v| {
                    DateTime::parse_from_rfc3339(v)
                        .map(|t| t.timestamp_millis())
                        .map_err(|e| AdminError::bad_request(format!("invalid {name}: {e}")))
                })
                .transpose()
        };
        let non_empty = |name: &str, value: &Option<String>| match value {
            Some(v) if v.is_empty() => {
                Err(AdminError::bad_request(format!("{name} must not be empty")))
            }
            other => Ok(other.clone()),
        };
        let selection = Selection {
            since_ms: instant("since", &self.since)?,
            until_ms: instant("until", &self.until)?,
            chain: non_empty("chain", &self.chain)?,
            subject: non_empty("subject", &self.subject)?,
        };
        if let (Some(s), Some(u)) = (selection.since_ms, selection.until_ms) {
            if s > u {
                return Err(AdminError::bad_request("since is after until"));
            }
        }
        Ok(selection)
    }

    fn limit(&self) -> Result<usize, AdminError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if (1..=MAX_LIMIT).contains(&limit) {
            Ok(limit)
        } else {
            Err(AdminError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )))
        }
    }

    fn refuse(&self, names: &[(&str, bool)]) -> Result<(), AdminError> {
        match names.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(AdminError::bad_request(format!(
                "{name} is not a parameter of this endpoint"
            ))),
            None => Ok(()),
        }
    }
}

fn no_store(mut response: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    response.insert_header((header::CACHE_CONTROL, "no-store"));
    response
}

/// `GET /admin/ledger`: base, head, pending count, latest checkpoint.
async fn summary(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let summary = state
        .evidence
        .summary()
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    Ok(no_store(HttpResponse::Ok()).json(summary))
}

/// `GET /admin/ledger/entries`: entries in journal order, by cursor.
async fn entries(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let query = super::query::<SelectionQuery>(request.query_string())?;
    query.refuse(&[("format", query.format.is_some())])?;
    let selection = query.selection()?;
    let limit = query.limit()?;
    let cursor = match &query.cursor {
        None => Cursor::default(),
        Some(text) => Cursor::parse(text).ok_or_else(|| {
            AdminError::bad_request("invalid cursor: use the `next` of the previous page")
        })?,
    };
    let page = state
        .evidence
        .page(selection, cursor, limit)
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    Ok(no_store(HttpResponse::Ok()).json(page))
}

/// `GET /admin/ledger/checkpoints`: signed checkpoints, oldest first, by cursor (a seq).
async fn checkpoints(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let query = super::query::<SelectionQuery>(request.query_string())?;
    query.refuse(&[
        ("since", query.since.is_some()),
        ("until", query.until.is_some()),
        ("chain", query.chain.is_some()),
        ("subject", query.subject.is_some()),
        ("format", query.format.is_some()),
    ])?;
    let limit = query.limit()?;
    let after = match &query.cursor {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            AdminError::bad_request("invalid cursor: use the `next` of the previous page")
        })?,
    };
    let found = state
        .evidence
        .checkpoints(after, limit)
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|c| c.seq.to_string()))
        .flatten();
    Ok(no_store(HttpResponse::Ok()).json(json!({ "checkpoints": found, "next": next })))
}

/// `GET /admin/ledger/export`: the selection streamed as JSON lines, one store page at a time.
/// A store failure part-way ends the body early: an export without its trailer line is
/// incomplete, and `mandate ledger verify` says so.
async fn export(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let query = super::query::<SelectionQuery>(request.query_string())?;
    query.refuse(&[
        ("limit", query.limit.is_some()),
        ("cursor", query.cursor.is_some()),
    ])?;
    let selection = query.selection()?;
    let format = match query.format.as_deref() {
        None | Some("jsonl") => ExportFormat::Jsonl,
        Some("ocsf") => ExportFormat::Ocsf,
        Some(_) => return Err(AdminError::bad_request("format must be jsonl or ocsf")),
    };
    let lines = state
        .evidence
        .export(selection, format)
        .try_filter(|chunk| std::future::ready(!chunk.is_empty()))
        .map_ok(web::Bytes::from)
        .map_err(|error| {
            tracing::warn!(%error, "ledger export cut short: the store failed");
            std::io::Error::other("the store failed during the export")
        });
    let mut response = no_store(HttpResponse::Ok());
    response.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    ));
    response.insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")));
    Ok(response.streaming(lines))
}

/// `GET /admin/ledger/verify`: the kept journal verified against the store and mandate's keys.
async fn verify(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let report = state
        .evidence
        .verify()
        .await
        .map_err(|e| AdminError::store_down(&e))?;
    Ok(no_store(HttpResponse::Ok()).json(report))
}
