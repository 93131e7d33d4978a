//! `GET /admin/ssf/streams`: every Shared Signals stream mandate transmits to, with its queue.

use actix_web::{web, HttpResponse};
use mandate_store::Delivery;
use serde_json::json;

use super::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ssf/streams", web::get().to(streams));
}

async fn streams(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let streams: Vec<_> = state
        .ssf
        .all()
        .await?
        .into_iter()
        .map(|(stream, depth)| {
            let (method, endpoint) = match &stream.delivery {
                Delivery::Push { endpoint_url, .. } => ("push", Some(endpoint_url.clone())),
                Delivery::Poll { .. } => ("poll", None),
            };
            json!({
                "stream_id": stream.stream_id,
                "owner": stream.owner,
                "aud": stream.aud,
                "delivery": method,
                "endpoint_url": endpoint,
                "status": stream.status,
                "reason": stream.reason,
                "events_requested": stream.events_requested,
                "pending": depth.pending,
                "dropped": depth.dropped,
                "created_at": stream.created_at,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "streams": streams })))
}
