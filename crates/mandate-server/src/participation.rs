//! `POST /participation`: a verifier (an SDK instance, a gateway) of a resource server says what
//! it is and how it follows revocations (docs/GOVERNANCE.md). The decision and the store are
//! mandate-core's `ParticipationService`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::OAuthError;
use crate::state::AppState;

/// Largest report body.
const MAX_BODY_BYTES: usize = 4 * 1024;

/// Takes one report; answers how long it counts and when to report again.
pub async fn report(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let owner = crate::ssf_transmit::caller(&state, &request).await?;
    if body.len() > MAX_BODY_BYTES {
        return Err(OAuthError::invalid_request("the report is too large")
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let report: mandate_core::Report = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::invalid_request(format!("the report is not the expected JSON: {e}"))
    })?;
    state.participation.report(&owner, report).await?;
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "expires_in": mandate_core::participation::REPORT_TTL_MS / 1000,
            "report_every": mandate_core::participation::REPORT_EVERY_SECS,
        })))
}
