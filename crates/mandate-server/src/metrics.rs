//! Prometheus metrics (docs/OPERATIONS.md "Metrics"), served at `GET /metrics` on the admin
//! listener (role `read`).
//!
//! What happens is counted where it happens, through the `metrics` facade: requests here, grants,
//! refusals and revocations in mandate-core, Redis round trips in mandate-store. What is a state
//! rather than an event (open feeds, queued Shared Signals, key-set ages) is read when Prometheus
//! scrapes. Every label has a bounded set of values: routes are the registered patterns, never
//! paths; agents are counted by what they did, never by their id.
//!
//! The recorder is process-wide (one process, one set of series, as Prometheus expects). It is
//! installed when the first server state is built; a process that installed another recorder
//! first keeps it, and `/metrics` then says so (503).

use std::sync::OnceLock;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::admin::{AdminCaller, AdminError};
use crate::config::AdminRole;
use crate::state::AppState;

/// Latency buckets (seconds): from a cached JWKS answer (tens of µs) to the request timeout.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder the first time; its handle, unless another recorder was
/// installed before.
pub fn install() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            metrics::gauge!("mandate_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .as_ref()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "mandate_http_requests_total",
        "HTTP requests answered, by listener, route pattern, method and status"
    );
    describe_histogram!(
        "mandate_http_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's head to its answer, by listener and route pattern"
    );
    describe_counter!(
        "mandate_tokens_issued_total",
        "Tokens issued at /token, by grant, what was issued and its binding"
    );
    describe_counter!(
        "mandate_grant_refusals_total",
        "Grants refused at /token, by grant, OAuth error code and the rule that refused"
    );
    describe_counter!(
        "mandate_revocations_total",
        "Revocation entries written, by kind and by who asked (admin, client, ssf, system)"
    );
    describe_histogram!(
        "mandate_store_command_duration_seconds",
        Unit::Seconds,
        "Redis round trips (a command or a pipeline), by what was sent"
    );
    describe_counter!(
        "mandate_store_errors_total",
        "Redis round trips that failed, by what was sent"
    );
    describe_gauge!(
        "mandate_revocation_heartbeat_timestamp_seconds",
        Unit::Seconds,
        "When this node last wrote its heartbeat to the revocation stream (followers fail closed without heartbeats)"
    );
    describe_gauge!(
        "mandate_revocation_feed_connections",
        "Open GET /revocations feeds on this node"
    );
    describe_gauge!(
        "mandate_ssf_queued_sets",
        "Shared Signals SETs waiting for their receivers, by delivery method"
    );
    describe_gauge!(
        "mandate_ssf_streams",
        "Shared Signals streams, by delivery method and status"
    );
    describe_counter!(
        "mandate_ssf_push_total",
        "Shared Signals push deliveries, by outcome"
    );
    describe_gauge!(
        "mandate_trusted_issuer_jwks_age_seconds",
        Unit::Seconds,
        "Age of each trusted issuer's fetched key set (it is re-fetched after an hour)"
    );
    describe_gauge!(
        "mandate_signing_key_loaded_timestamp_seconds",
        Unit::Seconds,
        "When the signing keys in force were loaded (start-up or SIGHUP): signing keys do not expire, rotate them on a schedule"
    );
    describe_gauge!(
        "mandate_signing_keys_published",
        "Keys published at /jwks (the active one, a staged next key, retired ones)"
    );
    describe_gauge!(
        "mandate_build_info",
        "Always 1; the version of the running mandate"
    );
}

/// Counts and times every request of `listener` (outermost middleware, so refusals of the
/// request limits count too).
pub(crate) async fn observe(
    listener: &'static str,
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(request.method());
    let result = next.call(request).await;
    let (status, route) = match &result {
        Ok(response) => (response.status(), response.request().match_pattern()),
        Err(error) => (error.as_response_error().status_code(), None),
    };
    let route = route.unwrap_or_else(|| "unmatched".to_owned());
    metrics::counter!(
        "mandate_http_requests_total",
        "listener" => listener,
        "route" => route.clone(),
        "method" => method,
        "status" => status.as_str().to_owned(),
    )
    .increment(1);
    metrics::histogram!(
        "mandate_http_request_duration_seconds",
        "listener" => listener,
        "route" => route,
    )
    .record(started.elapsed().as_secs_f64());
    result
}

/// The methods mandate serves, and `other` (a method label must not take any string a client
/// sends).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// `GET /metrics` (admin listener, role `read`): the Prometheus text format.
pub(crate) async fn scrape(
    caller: AdminCaller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AdminError> {
    caller.require(AdminRole::Read)?;
    let handle = install().ok_or_else(|| {
        AdminError::unavailable_because("another metrics recorder is installed in this process")
    })?;
    read_states(&state).await;
    handle.run_upkeep();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render()))
}

/// Sets the gauges that describe a state, read now.
async fn read_states(state: &AppState) {
    metrics::gauge!("mandate_revocation_feed_connections")
        .set(count(crate::feed::open_feeds(state)));
    for issuer in state.trusted_issuers.iter() {
        if let Some(age) = issuer.remote.as_ref().and_then(|r| r.cache_age()) {
            metrics::gauge!(
                "mandate_trusted_issuer_jwks_age_seconds",
                "issuer" => issuer.settings.alias.to_string(),
            )
            .set(age.as_secs_f64());
        }
    }
    // A store that does not answer leaves the last values: the store's own errors are counted.
    if let Ok(streams) = state.ssf.all().await {
        let mut queued = std::collections::BTreeMap::<&'static str, u64>::new();
        let mut by_status = std::collections::BTreeMap::<(&'static str, &'static str), u64>::new();
        for (stream, depth) in &streams {
            let delivery = match stream.delivery {
                mandate_store::Delivery::Push { .. } => "push",
                mandate_store::Delivery::Poll { .. } => "poll",
            };
            *queued.entry(delivery).or_default() += depth.pending;
            let status = match stream.status {
                mandate_store::StreamStatus::Enabled => "enabled",
                mandate_store::StreamStatus::Paused => "paused",
                mandate_store::StreamStatus::Disabled => "disabled",
            };
            *by_status.entry((delivery, status)).or_default() += 1;
        }
        for delivery in ["push", "poll"] {
            metrics::gauge!("mandate_ssf_queued_sets", "delivery" => delivery)
                .set(count(queued.get(delivery).copied().unwrap_or(0)));
        }
        for ((delivery, status), streams) in by_status {
            metrics::gauge!("mandate_ssf_streams", "delivery" => delivery, "status" => status)
                .set(count(streams));
        }
    }
}

/// Records when the keys in force were loaded and how many are published. (No `kid` label: a
/// series per key would outlive the key and still say it is in force.)
pub(crate) fn keys_loaded(keys: &mandate_token::KeySet) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!("mandate_signing_key_loaded_timestamp_seconds").set(now);
    metrics::gauge!("mandate_signing_keys_published").set(count(keys.published().count()));
}

fn count(n: impl TryInto<u32>) -> f64 {
    n.try_into().map_or(f64::from(u32::MAX), f64::from)
}
