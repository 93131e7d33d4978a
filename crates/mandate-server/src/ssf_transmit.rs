//! mandate as a Shared Signals transmitter on the wire (SSF 1.0; docs/SSF.md): the metadata, the
//! stream management endpoints a resource server uses for its own streams, RFC 8936 polling, and
//! the RFC 8935 push deliverer. What the streams are and which SETs a revocation raises is
//! mandate-core's `SsfTransmitter`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use mandate_core::ssf::{SsfTransmitter, EVENTS_SUPPORTED};
use mandate_core::StreamRequest;
use mandate_store::{Client, Delivery, SsfStream, StreamStatus};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::client_auth::PresentedCredentials;
use crate::error::OAuthError;
use crate::form::Form;
use crate::state::AppState;

/// Most SETs one push round sends to one stream.
const PUSH_BATCH: u64 = 50;
/// Most SETs one poll answers.
const MAX_EVENTS_PER_POLL: u64 = 100;
/// How long a poll without `returnImmediately` waits for an event.
const LONG_POLL: Duration = Duration::from_secs(10);
/// Largest stream-management or poll request body.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes, under the issuer's path.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/ssf/streams")
            .route(web::get().to(read_streams))
            .route(web::post().to(create_stream))
            .route(web::patch().to(update_stream))
            .route(web::put().to(replace_stream))
            .route(web::delete().to(delete_stream)),
    )
    .service(
        web::resource("/ssf/status")
            .route(web::get().to(read_status))
            .route(web::post().to(update_status)),
    )
    .route("/ssf/verify", web::post().to(verify))
    .route("/ssf/subjects:add", web::post().to(add_subject))
    .route("/ssf/subjects:remove", web::post().to(remove_subject))
    .route("/ssf/poll/{stream_id}", web::post().to(poll));
}

/// `GET /.well-known/ssf-configuration` (SSF 1.0 §7.1), path-inserted like RFC 8414.
pub async fn configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuer = state.settings.issuer.trim_end_matches('/');
    HttpResponse::Ok().json(json!({
        "spec_version": "1_0",
        "issuer": state.settings.issuer,
        "jwks_uri": format!("{issuer}/jwks"),
        "delivery_methods_supported": [mandate_store::ssf::DELIVERY_PUSH, mandate_store::ssf::DELIVERY_POLL],
        "configuration_endpoint": format!("{issuer}/ssf/streams"),
        "status_endpoint": format!("{issuer}/ssf/status"),
        "verification_endpoint": format!("{issuer}/ssf/verify"),
        "add_subject_endpoint": format!("{issuer}/ssf/subjects:add"),
        "remove_subject_endpoint": format!("{issuer}/ssf/subjects:remove"),
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:7617"}],
        "default_subjects": "ALL",
    }))
}

/// The client calling, authenticated with HTTP Basic (its client secret) and charged against
/// its rate budget.
pub(crate) async fn caller(
    state: &AppState,
    request: &HttpRequest,
) -> Result<std::sync::Arc<Client>, OAuthError> {
    let credentials = PresentedCredentials::from_request(request, &Form::parse(b"")?)?;
    let client = state.authenticate_client(&credentials).await?;
    state.charge_rate_limit(client.id.as_str()).await?;
    Ok(client)
}

fn json_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, OAuthError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(OAuthError::invalid_request("the request body is too large")
            .with_status(actix_web::http::StatusCode::PAYLOAD_TOO_LARGE));
    }
    serde_json::from_slice(body)
        .map_err(|_| OAuthError::invalid_request("the request body is not the expected JSON"))
}

/// A stream as the receiver reads it (SSF 1.0 §8.1.1). The push `authorization_header` is the
/// receiver's secret and is never read back.
fn stream_json(state: &AppState, stream: &SsfStream) -> Value {
    let issuer = state.settings.issuer.trim_end_matches('/');
    let delivery = match &stream.delivery {
        Delivery::Push { endpoint_url, .. } => {
            json!({"method": mandate_store::ssf::DELIVERY_PUSH, "endpoint_url": endpoint_url})
        }
        Delivery::Poll { .. } => json!({
            "method": mandate_store::ssf::DELIVERY_POLL,
            "endpoint_url": format!("{issuer}/ssf/poll/{}", stream.stream_id),
        }),
    };
    let aud = match stream.aud.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut out = json!({
        "stream_id": stream.stream_id,
        "iss": state.settings.issuer,
        "aud": aud,
        "events_supported": EVENTS_SUPPORTED,
        "events_requested": stream.events_requested,
        "events_delivered": SsfTransmitter::events_delivered(&stream.events_requested),
        "delivery": delivery,
    });
    if let (Some(description), Some(object)) = (&stream.description, out.as_object_mut()) {
        object.insert("description".into(), json!(description));
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryRequest {
    method: String,
    #[serde(default)]
    endpoint_url: Option<String>,
    #[serde(default)]
    authorization_header: Option<String>,
}

impl DeliveryRequest {
    /// The delivery asked for; a push endpoint must pass the fetch policy (https, or http on
    /// loopback; no credentials), and the header must be printable.
    fn parse(self) -> Result<Delivery, OAuthError> {
        match self.method.as_str() {
            mandate_store::ssf::DELIVERY_PUSH => {
                let endpoint_url = self.endpoint_url.ok_or_else(|| {
                    OAuthError::invalid_request("push delivery needs an endpoint_url")
                })?;
                mandate_fetch::checked_url(&endpoint_url).map_err(|e| {
                    OAuthError::invalid_request(format!(
                        "the push endpoint_url is not allowed: {e}"
                    ))
                })?;
                if let Some(header) = &self.authorization_header {
                    if header.is_empty()
                        || header.len() > 4096
                        || header.chars().any(|c| c.is_control())
                    {
                        return Err(OAuthError::invalid_request(
                            "authorization_header must be 1-4096 printable characters",
                        ));
                    }
                }
                Ok(Delivery::Push {
                    endpoint_url,
                    authorization_header: self.authorization_header,
                })
            }
            mandate_store::ssf::DELIVERY_POLL => {
                if self.endpoint_url.is_some() || self.authorization_header.is_some() {
                    return Err(OAuthError::invalid_request(
                        "poll delivery takes no endpoint_url or authorization_header: the transmitter names its endpoint",
                    ));
                }
                Ok(Delivery::Poll { endpoint_url: None })
            }
            _ => Err(OAuthError::invalid_request("unsupported delivery method")),
        }
    }
}

#[derive(Deserialize)]
struct StreamBody {
    #[serde(default)]
    stream_id: Option<String>,
    #[serde(default)]
    delivery: Option<DeliveryRequest>,
    #[serde(default)]
    events_requested: Option<Vec<String>>,
    #[serde(default)]
    description: Option<String>,
    // Members the transmitter sets are accepted on input and ignored (SSF 1.0 §8.1.1.1).
    #[serde(flatten)]
    _rest: Map<String, Value>,
}

fn check_events(events: &[String]) -> Result<(), OAuthError> {
    if events.len() > 32 || events.iter().any(|e| e.len() > 256) {
        return Err(OAuthError::invalid_request("events_requested is too large"));
    }
    Ok(())
}

fn check_description(description: Option<&String>) -> Result<(), OAuthError> {
    if description.is_some_and(|d| d.len() > 512 || d.chars().any(char::is_control)) {
        return Err(OAuthError::invalid_request(
            "description must be at most 512 printable characters",
        ));
    }
    Ok(())
}

async fn create_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: StreamBody = json_body(&body)?;
    let delivery = body
        .delivery
        .ok_or_else(|| OAuthError::invalid_request("delivery is required"))?
        .parse()?;
    let events_requested = body.events_requested.unwrap_or_default();
    check_events(&events_requested)?;
    check_description(body.description.as_ref())?;
    let stream = state
        .ssf
        .create(
            &owner,
            StreamRequest {
                events_requested,
                delivery,
                description: body.description,
            },
        )
        .await?;
    Ok(HttpResponse::Created().json(stream_json(&state, &stream)))
}

#[derive(Deserialize)]
struct StreamQuery {
    stream_id: Option<String>,
}

impl StreamQuery {
    fn required(&self) -> Result<&str, OAuthError> {
        self.stream_id
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("stream_id is required"))
    }
}

async fn read_streams(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    Ok(match &query.stream_id {
        Some(id) => HttpResponse::Ok().json(stream_json(&state, &state.ssf.get(&owner, id).await?)),
        None => {
            let streams = state.ssf.list(&owner).await?;
            HttpResponse::Ok().json(
                streams
                    .iter()
                    .map(|s| stream_json(&state, s))
                    .collect::<Vec<_>>(),
            )
        }
    })
}

async fn change_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
    replace: bool,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: StreamBody = json_body(&body)?;
    let stream_id = body
        .stream_id
        .ok_or_else(|| OAuthError::invalid_request("stream_id is required"))?;
    if replace && body.delivery.is_none() {
        return Err(OAuthError::invalid_request("delivery is required"));
    }
    let delivery = body.delivery.map(DeliveryRequest::parse).transpose()?;
    if let Some(events) = &body.events_requested {
        check_events(events)?;
    }
    check_description(body.description.as_ref())?;
    let (events, description) = (body.events_requested, body.description);
    let stream = state
        .ssf
        .update(&owner, &stream_id, |stream| {
            if let Some(delivery) = delivery {
                stream.delivery = delivery;
            }
            if replace || events.is_some() {
                stream.events_requested = events.unwrap_or_default();
            }
            if replace || description.is_some() {
                stream.description = description;
            }
        })
        .await?;
    Ok(HttpResponse::Ok().json(stream_json(&state, &stream)))
}

async fn update_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    change_stream(state, request, body, false).await
}

async fn replace_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    change_stream(state, request, body, true).await
}

async fn delete_stream(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let id = query.required()?;
    state.ssf.delete(&owner, id).await?;
    Ok(HttpResponse::NoContent().finish())
}

fn status_json(stream: &SsfStream) -> Value {
    let mut out = json!({"stream_id": stream.stream_id, "status": stream.status});
    if let (Some(reason), Some(object)) = (&stream.reason, out.as_object_mut()) {
        object.insert("reason".into(), json!(reason));
    }
    out
}

async fn read_status(
    state: web::Data<AppState>,
    request: HttpRequest,
    query: web::Query<StreamQuery>,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let id = query.required()?;
    Ok(HttpResponse::Ok().json(status_json(&state.ssf.get(&owner, id).await?)))
}

#[derive(Deserialize)]
struct StatusBody {
    stream_id: String,
    status: StreamStatus,
    #[serde(default)]
    reason: Option<String>,
}

async fn update_status(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: StatusBody = json_body(&body)?;
    check_description(body.reason.as_ref())?;
    let stream = state
        .ssf
        .set_status(&owner, &body.stream_id, body.status, body.reason)
        .await?;
    Ok(HttpResponse::Ok().json(status_json(&stream)))
}

#[derive(Deserialize)]
struct VerifyBody {
    stream_id: String,
    #[serde(default)]
    state: Option<String>,
}

async fn verify(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: VerifyBody = json_body(&body)?;
    check_description(body.state.as_ref())?;
    state
        .ssf
        .verify(&owner, &body.stream_id, body.state)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Deserialize)]
struct SubjectBody {
    stream_id: String,
    subject: Value,
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "SSF's hint whether the receiver verified the subject; mandate names subjects itself"
    )]
    verified: Option<bool>,
}

async fn change_subject(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
    add: bool,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: SubjectBody = json_body(&body)?;
    state
        .ssf
        .change_subject(&owner, &body.stream_id, &body.subject, add)
        .await?;
    Ok(HttpResponse::Ok().finish())
}

/// `POST /ssf/subjects:add` (SSF 1.0 §8.1.3.2): events about the user are sent again.
async fn add_subject(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    change_subject(state, request, body, true).await
}

/// `POST /ssf/subjects:remove` (SSF 1.0 §8.1.3.3): nothing more is sent about the user.
async fn remove_subject(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    change_subject(state, request, body, false).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PollBody {
    #[serde(default)]
    max_events: Option<u64>,
    #[serde(default)]
    return_immediately: Option<bool>,
    #[serde(default)]
    ack: Vec<String>,
    /// Receivers report SETs they refused (RFC 8936 §2.4); they are logged and removed, as
    /// delivering them again would be refused again.
    #[serde(default)]
    set_errs: Map<String, Value>,
}

/// `POST /ssf/poll/{stream_id}` (RFC 8936): acknowledges, then answers up to `maxEvents` SETs.
async fn poll(
    state: web::Data<AppState>,
    request: HttpRequest,
    stream_id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, OAuthError> {
    let owner = caller(&state, &request).await?;
    let body: PollBody = if body.is_empty() {
        json_body(b"{}")?
    } else {
        json_body(&body)?
    };
    if body.ack.len() > 1_000 || body.set_errs.len() > 1_000 {
        return Err(OAuthError::invalid_request("too many acknowledgements"));
    }
    let mut acks = body.ack;
    for (jti, error) in &body.set_errs {
        tracing::info!(stream = %mandate_model::log_safe(&stream_id), jti = %mandate_model::log_safe(jti), error = %mandate_model::log_safe(&error.to_string()), "a receiver refused a SET");
        acks.push(jti.clone());
    }
    let max = body
        .max_events
        .unwrap_or(MAX_EVENTS_PER_POLL)
        .min(MAX_EVENTS_PER_POLL);
    let deadline = tokio::time::Instant::now() + LONG_POLL;
    let mut first = true;
    loop {
        let (sets, more) = state
            .ssf
            .poll(&owner, &stream_id, if first { &acks } else { &[] }, max)
            .await?;
        first = false;
        let waiting = !body.return_immediately.unwrap_or(false);
        if !sets.is_empty() || max == 0 || !waiting || tokio::time::Instant::now() >= deadline {
            let sets: Map<String, Value> = sets
                .into_iter()
                .map(|queued| (queued.jti, Value::String(queued.set)))
                .collect();
            let mut ok = HttpResponse::Ok();
            crate::error::no_store(&mut ok);
            return Ok(ok.json(json!({"sets": sets, "moreAvailable": more})));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Delivers the push streams' SETs, on every node: each round, a node takes a stream only when
/// it wins the stream's lease for the round (the replay cache, shared on Redis), so each SET is
/// sent by one node at a time; a SET leaves the queue only when its receiver accepts it (2xx), or
/// refuses it with 400 (RFC 8935 §2.3: sending it again would be refused again). A receiver that
/// is down or slow is retried with backoff and delays no revocation: revocations only queue.
pub async fn push_deliverer(state: AppState) {
    let Ok(client) = mandate_fetch::http_client(
        mandate_fetch::FetchBounds::default(),
        false,
        concat!("mandate/", env!("CARGO_PKG_VERSION"), " ssf-push"),
    ) else {
        tracing::error!("the Shared Signals push client could not be built");
        return;
    };
    let mut backoff: std::collections::HashMap<String, (u32, tokio::time::Instant)> =
        std::collections::HashMap::new();
    loop {
        // A SET queued on this node wakes the deliverer at once; those queued on other nodes
        // sharing the store are found within a round.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = state.ssf.queued() => {}
        }
        let work = match state.ssf.push_work().await {
            Ok(work) => work,
            Err(error) => {
                tracing::warn!(%error, "Shared Signals push: store unavailable");
                continue;
            }
        };
        let now = tokio::time::Instant::now();
        for stream in work {
            if backoff
                .get(&stream.stream_id)
                .is_some_and(|(_, until)| *until > now)
            {
                continue;
            }
            let Delivery::Push {
                endpoint_url,
                authorization_header,
            } = &stream.delivery
            else {
                continue;
            };
            let round = state.clock.now_secs() / 5;
            let lease = format!("ssf-push:{}:{round}", stream.stream_id);
            match state
                .replay
                .first_use(&lease, (round + 1) * 5, state.clock.now_secs())
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => continue,
            }
            // Read under the lease: what another node sent and dequeued meanwhile is gone.
            let sets = match state.ssf.waiting(&stream.stream_id, PUSH_BATCH).await {
                Ok(sets) => sets,
                Err(_) => {
                    let _ = state.replay.release(&lease).await;
                    continue;
                }
            };
            let Ok(url) = mandate_fetch::checked_url(endpoint_url) else {
                let _ = state.replay.release(&lease).await;
                continue;
            };
            let mut failed = false;
            for queued in sets {
                let answer = mandate_fetch::post_set(
                    &client,
                    &url,
                    authorization_header.as_deref(),
                    &queued.set,
                    mandate_fetch::FetchBounds::default(),
                )
                .await;
                match answer {
                    Ok(status) if (200..300).contains(&status) || status == 400 => {
                        let outcome = if status == 400 {
                            "refused"
                        } else {
                            "delivered"
                        };
                        metrics::counter!("mandate_ssf_push_total", "outcome" => outcome)
                            .increment(1);
                        if status == 400 {
                            tracing::info!(stream = %stream.stream_id, jti = %queued.jti, "the push receiver refused a SET (400); it is not sent again");
                        }
                        if let Err(error) = state
                            .ssf
                            .acknowledge(&stream.stream_id, &[queued.jti])
                            .await
                        {
                            tracing::warn!(%error, "Shared Signals push: could not dequeue a delivered SET");
                        }
                    }
                    other => {
                        metrics::counter!("mandate_ssf_push_total", "outcome" => "failed")
                            .increment(1);
                        tracing::info!(stream = %stream.stream_id, answer = ?other.map_err(|e| e.to_string()), "Shared Signals push failed; retrying later");
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                let attempts = backoff.get(&stream.stream_id).map_or(0, |(n, _)| *n) + 1;
                let delay = Duration::from_millis(250 * 2u64.pow(attempts.min(7)));
                backoff.insert(stream.stream_id.clone(), (attempts, now + delay));
            } else {
                backoff.remove(&stream.stream_id);
            }
            // The lease is given back so that the next round may take the stream at once.
            let _ = state.replay.release(&lease).await;
        }
    }
}
