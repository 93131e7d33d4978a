//! `/admin/policies`: the policy rows and their version (the `ETag`), replaced only by a caller
//! that read the current version (`If-Match`, RFC 9110 §13.1.1), and explain.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use mandate_chain::{Explanation, HopId, Policy, PolicyRow};
use mandate_core::{ExplainAnswer, ExplainQuestion, ExplainedToken};
use mandate_model::{Audience, ClientId, ScopeSet, Subject};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/policies", web::get().to(show))
        .route("/policies", web::put().to(replace))
        .route("/policies/explain", web::post().to(explain_exchange));
}

/// A row as the admin API shows and takes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowView {
    actor: String,
    audience: String,
    scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_depth: Option<u32>,
}

impl From<&PolicyRow> for RowView {
    fn from(row: &PolicyRow) -> Self {
        Self {
            actor: row.actor.to_string(),
            audience: row.audience.to_string(),
            scopes: row.scopes.iter().map(str::to_owned).collect(),
            max_depth: row.max_depth,
        }
    }
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

fn policy_answer(status: StatusCode, policy: &Policy, version: u64) -> HttpResponse {
    let rows: Vec<RowView> = policy.rows().iter().map(RowView::from).collect();
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::ETAG, etag(version)))
        .json(json!({ "version": version, "rows": rows }))
}

/// The rows and version as `GET /admin/policies` answers them.
pub(crate) async fn policy_document(state: &AppState) -> Result<serde_json::Value, AdminError> {
    let (policy, version) = state.policy_rows.current().await?;
    let rows: Vec<RowView> = policy.rows().iter().map(RowView::from).collect();
    Ok(json!({ "version": version, "rows": rows }))
}

/// The answer of `POST /admin/policies/explain` to the JSON `body`.
pub(crate) async fn explain_document(
    state: &AppState,
    body: &[u8],
) -> Result<serde_json::Value, AdminError> {
    let body: ExplainBody = serde_json::from_slice(body)
        .map_err(|e| AdminError::bad_request(format!("invalid body: {e}")))?;
    explain_request(state, body.try_into()?).await
}

/// `GET /admin/policies`: the rows (rows of one actor and audience merged, as they are
/// enforced) and the version, also as the `ETag`.
async fn show(caller: AdminCaller, state: web::Data<AppState>) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let (policy, version) = state.policy_rows.current().await?;
    Ok(policy_answer(StatusCode::OK, &policy, version))
}

/// The version a PUT was written against: `If-Match: "n"`. Absent: 428; anything but one
/// strong tag naming a version (a list, `*`, a weak tag): 400, as mandate's ETags are
/// single strong versions and `*` would defeat the lost-update check.
fn expected_version(request: &HttpRequest) -> Result<u64, AdminError> {
    let mut values = request.headers().get_all(header::IF_MATCH);
    let (Some(value), None) = (values.next(), values.next()) else {
        if request.headers().contains_key(header::IF_MATCH) {
            return Err(AdminError::bad_request(
                "If-Match must name exactly one version",
            ));
        }
        return Err(AdminError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
            "PUT /admin/policies needs If-Match with the version read (its ETag)",
        ));
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|v| v.strip_prefix('"'))
        .and_then(|v| v.strip_suffix('"'))
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            AdminError::bad_request(r#"If-Match must be one version as its ETag gives it: "<n>""#)
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplaceBody {
    rows: Vec<serde_json::Value>,
}

/// Parses every row: well-formed names, scopes and depth. The first bad row is named by its
/// index; the rules on rows (registered agents, scopes, depth) are the service's.
fn parse_rows(body: &[u8]) -> Result<Vec<PolicyRow>, AdminError> {
    let body: ReplaceBody = serde_json::from_slice(body).map_err(|e| {
        AdminError::bad_request(format!("invalid body: {e}; expected {{\"rows\": [Row…]}}"))
    })?;
    let mut rows = Vec::with_capacity(body.rows.len());
    for (i, value) in body.rows.into_iter().enumerate() {
        let bad = |message: String| AdminError::bad_request(format!("rows[{i}]: {message}"));
        let view: RowView = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        rows.push(PolicyRow {
            actor: ClientId::parse(&view.actor).map_err(|e| bad(e.to_string()))?,
            audience: Audience::parse(&view.audience).map_err(|e| bad(e.to_string()))?,
            scopes: ScopeSet::from_tokens(&view.scopes).map_err(|e| bad(e.to_string()))?,
            max_depth: view.max_depth,
        });
    }
    Ok(rows)
}

/// `PUT /admin/policies`: replaces every row if `If-Match` names the current version.
async fn replace(
    caller: AdminCaller,
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Manage)?;
    let expected = expected_version(&request)?;
    let rows = parse_rows(&body)?;
    let policy = Policy::new(rows.clone());
    let version = state
        .policy_rows
        .replace(rows, expected, &caller.name)
        .await?;
    Ok(policy_answer(StatusCode::OK, &policy, version))
}

/// The explain body (docs/ADMIN-API.md, "Policies").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainBody {
    agent: String,
    subject_token_type: String,
    audience: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    parent_hop: Option<String>,
}

/// The kind of subject token, by its short name or its URN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Upstream,
    AccessToken,
    IdJag,
}

/// The explain request, parsed.
#[derive(Debug)]
struct ExplainRequest {
    agent: ClientId,
    kind: TokenKind,
    audience: Audience,
    scope: Option<ScopeSet>,
    subject: Option<Subject>,
    parent_hop: Option<HopId>,
}

impl TryFrom<ExplainBody> for ExplainRequest {
    type Error = AdminError;

    fn try_from(body: ExplainBody) -> Result<Self, AdminError> {
        let bad = |name: &str, e: &dyn std::fmt::Display| {
            AdminError::bad_request(format!("invalid {name}: {e}"))
        };
        let short = body
            .subject_token_type
            .strip_prefix("urn:ietf:params:oauth:token-type:")
            .unwrap_or(&body.subject_token_type);
        let kind = match short {
            "id_token" | "jwt" => TokenKind::Upstream,
            "access_token" => TokenKind::AccessToken,
            "id-jag" => TokenKind::IdJag,
            _ => {
                return Err(AdminError::bad_request(
                    "subject_token_type must be id_token, jwt, access_token or id-jag",
                ))
            }
        };
        let subject = body
            .subject
            .map(|s| Subject::parse(&s).map_err(|e| bad("subject", &e)))
            .transpose()?;
        if subject.is_some() && kind != TokenKind::Upstream {
            return Err(AdminError::bad_request(
                "subject applies to id_token and jwt subject tokens only",
            ));
        }
        let parent_hop = match (kind, body.parent_hop) {
            (TokenKind::AccessToken, Some(hop)) if !hop.is_empty() => Some(HopId(hop)),
            (TokenKind::AccessToken, _) => {
                return Err(AdminError::bad_request(
                    "parent_hop is required for an access_token subject token",
                ))
            }
            (_, Some(_)) => {
                return Err(AdminError::bad_request(
                    "parent_hop applies to access_token subject tokens only",
                ))
            }
            (_, None) => None,
        };
        Ok(Self {
            agent: ClientId::parse(&body.agent).map_err(|e| bad("agent", &e))?,
            kind,
            audience: Audience::parse(&body.audience).map_err(|e| bad("audience", &e))?,
            scope: body
                .scope
                .map(|s| ScopeSet::parse(&s).map_err(|e| bad("scope", &e)))
                .transpose()?,
            subject,
            parent_hop,
        })
    }
}

impl From<ExplainRequest> for ExplainQuestion {
    fn from(request: ExplainRequest) -> Self {
        let token = match (request.kind, request.parent_hop) {
            (TokenKind::AccessToken, Some(parent_hop)) => {
                ExplainedToken::AccessToken { parent_hop }
            }
            (TokenKind::IdJag, _) => ExplainedToken::IdJag,
            _ => ExplainedToken::Upstream {
                subject: request.subject,
            },
        };
        Self {
            agent: request.agent,
            token,
            audience: request.audience,
            scope: request.scope,
        }
    }
}

fn refused(error: &str, rule: &str, message: &str) -> serde_json::Value {
    json!({"allowed": false, "error": error, "rule": rule, "message": message})
}

/// Explains an exchange through the policy service and renders its answer.
async fn explain_request(
    state: &AppState,
    request: ExplainRequest,
) -> Result<serde_json::Value, AdminError> {
    let question = ExplainQuestion::from(request);
    let explained = state.policy_rows.explain(&question).await?;
    let mut answer = match explained.answer {
        ExplainAnswer::Refused {
            error,
            rule,
            message,
        } => refused(error, rule, &message),
        ExplainAnswer::Decided(Explanation::Allowed(allowed)) => {
            let evidence: Vec<String> = allowed
                .evidence
                .iter()
                .map(|e| {
                    let kind = serde_json::to_value(e.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    // An ID-JAG's reference is a JSON object of the imagined grant: not shown.
                    if e.kind == mandate_chain::EvidenceKind::IdJag || e.reference.is_empty() {
                        kind
                    } else {
                        format!("{kind}:{}", e.reference)
                    }
                })
                .collect();
            let authority: Vec<serde_json::Value> = allowed
                .authority
                .pairs()
                .map(|(audience, scopes)| json!({"audience": audience, "scopes": scopes}))
                .collect();
            json!({
                "allowed": true,
                "row": RowView::from(&allowed.row),
                "evidence": evidence,
                "scopes": allowed.scopes(),
                "authority": authority,
                "max_depth": allowed.max_depth,
            })
        }
        ExplainAnswer::Decided(Explanation::Refused { refusal, error }) => {
            refused(error, refusal.rule(), &refusal.to_string())
        }
    };
    if let (Some(hand_off), Some(object)) = (&explained.hand_off, answer.as_object_mut()) {
        let cap: Vec<serde_json::Value> = hand_off
            .cap
            .pairs()
            .map(|(audience, scopes)| json!({"audience": audience, "scopes": scopes}))
            .collect();
        object.insert("row".into(), json!(RowView::from(&hand_off.row)));
        object.insert("hand_off_cap".into(), json!(cap));
        object.insert(
            "hint".into(),
            json!(format!(
                "a hand-off passes on only what {} may get itself for each app (its own rows), \
                 bounded by the hand-off row (and, below a mandate token, by what that token \
                 carries)",
                hand_off.row.actor
            )),
        );
    }
    if let (Some(gate), Some(object)) = (explained.gate, answer.as_object_mut()) {
        object.insert(
            "gate".into(),
            json!({
                "require": gate.gate.require,
                "dry_run": gate.gate.dry_run,
                "verdict": gate.verdict,
                "met": gate.met,
            }),
        );
    }
    Ok(answer)
}

/// `POST /admin/policies/explain`.
async fn explain_exchange(
    caller: AdminCaller,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let body: ExplainBody = serde_json::from_slice(&body)
        .map_err(|e| AdminError::bad_request(format!("invalid body: {e}")))?;
    let answer = explain_request(&state, body.try_into()?).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer))
}
