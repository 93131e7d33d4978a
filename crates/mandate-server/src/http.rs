//! The public listener's routes. Handlers parse, call one domain function and map its error.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpMessage as _, HttpRequest, HttpResponse, ResponseError as _};
use mandate_store::Client;
use serde_json::json;
use tracing::Instrument as _;

use crate::client_auth::PresentedCredentials;
use crate::error::{no_store, OAuthError};
use crate::exchange::{exchange, TokenExchangeRequest};
use crate::form::Form;
use crate::grant::GrantKind;
use crate::state::AppState;

/// Registers the public routes under the issuer's path (`/` for an issuer without a path), and
/// the metadata at `/.well-known/oauth-authorization-server<issuer path>` (RFC 8414 §3.1).
pub fn configure(state: &AppState) -> impl FnOnce(&mut web::ServiceConfig) {
    let issuer_path = url::Url::parse(&state.settings.issuer)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    let demo_idp = state.demo_idp.is_some();
    move |cfg: &mut web::ServiceConfig| {
        if demo_idp {
            cfg.route(
                &format!("{issuer_path}/demo-idp/token"),
                web::post().to(crate::demo_idp::mint),
            );
        }
        cfg.route(
            &format!("/.well-known/oauth-authorization-server{issuer_path}"),
            web::get().to(discovery),
        )
        .route(
            &format!("/.well-known/ssf-configuration{issuer_path}"),
            web::get().to(crate::ssf_transmit::configuration),
        )
        .service(
            web::scope(&issuer_path)
                .configure(crate::ssf_transmit::routes)
                .route("/jwks", web::get().to(jwks))
                .route("/healthz", web::get().to(healthz))
                .route("/livez", web::get().to(livez))
                .route("/readyz", web::get().to(healthz))
                .route("/revocations", web::get().to(crate::feed::revocations))
                .route(
                    "/participation",
                    web::post().to(crate::participation::report),
                )
                .route(
                    "/ssf/receive/{alias}",
                    web::post().to(crate::ssf_receive::receive),
                )
                .service(
                    web::resource("/token")
                        .route(web::post().to(token))
                        .default_service(web::to(post_only)),
                )
                .service(
                    web::resource("/revoke")
                        .route(web::post().to(revoke))
                        .default_service(web::to(post_only)),
                )
                .service(
                    web::resource("/introspect")
                        .route(web::post().to(introspect))
                        .default_service(web::to(post_only)),
                ),
        )
        .default_service(web::to(not_found));
    }
}

async fn discovery(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, jwks_cache_control()))
        .json(state.discovery.as_ref())
}

/// The keys in force, reloaded on SIGHUP. Verifiers may cache the document for `max-age`: that
/// is why a next key is staged (published) at least this long before it signs (docs/KEYS.md).
async fn jwks(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, jwks_cache_control()))
        .json(state.keys.current().jwks())
}

/// How long verifiers may cache `/jwks` and the metadata that points at it.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

fn jwks_cache_control() -> String {
    format!("public, max-age={JWKS_MAX_AGE_SECS}")
}

/// `GET /livez` (Kubernetes liveness): the process serves requests. It reads nothing, so that a
/// store outage never gets a healthy node restarted.
async fn livez() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "status": "ok" }))
}

/// `GET /readyz` (Kubernetes readiness), also `GET /healthz`: 200 while the store answers (the
/// client registry and the revocation list), else 503, so that a load balancer sends no exchange
/// to a node that would refuse it. (A node without a signing key does not start at all.)
async fn healthz(state: web::Data<AppState>) -> HttpResponse {
    let store_ready =
        state.clients.clients().await.is_ok() && state.revocations.ping().await.is_ok();
    let status = if store_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({
        "status": if store_ready { "ok" } else { "degraded" },
        "store": if store_ready { "ready" } else { "unavailable" },
    }))
}

/// `POST /token`: read the form, authenticate the agent, charge its budget, dispatch the grant.
async fn token(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OAuthError> {
    let form = Form::read(&request, payload, state.settings.limits.max_body_bytes).await?;
    form.refuse_duplicates()?;
    let credentials = PresentedCredentials::from_request(&request, &form)?;
    let client = state.authenticate_agent(&credentials).await?;
    state.charge_rate_limit(client.id.as_str()).await?;
    let dpop = dpop_proof(&request)?;
    let grant = GrantKind::parse(form.required("grant_type")?, &state.settings)?;
    let span = tracing::debug_span!(
        "mandate.grant",
        grant = grant.name(),
        client_id = client.id.as_str(),
        error = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let (trace, traceparent) = request_trace(&request);
    let answer = mandate_core::within_request(
        trace,
        grant_response(&state, &client, grant, &form, dpop).instrument(span.clone()),
    )
    .await;
    if let Err(error) = &answer {
        span.record("error", error.code().as_str());
        span.record("otel.status_code", "error");
    }
    // The caller's traceparent comes back with the answer, refusal or token, so that it can
    // join its trace with the hop recorded (docs/EVIDENCE.md "Correlation").
    let mut response = answer.unwrap_or_else(|error| error.error_response());
    if let Some(value) = traceparent {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static("traceparent"),
            value,
        );
    }
    Ok(response)
}

/// The request's id and its W3C `traceparent` (only a valid one, which is also handed back).
fn request_trace(
    request: &HttpRequest,
) -> (
    mandate_chain::RequestTrace,
    Option<actix_web::http::header::HeaderValue>,
) {
    let id = request
        .extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let mut values = request.headers().get_all("traceparent");
    // W3C Trace Context: more than one traceparent is as good as none.
    let valid = match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(mandate_chain::RequestTrace::valid_traceparent)
            .map(|_| value.clone()),
        _ => None,
    };
    let trace = mandate_chain::RequestTrace {
        id,
        traceparent: valid
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    (trace, valid)
}

/// The grant's answer: the grant run, the agent's use noted.
async fn grant_response(
    state: &AppState,
    client: &Client,
    grant: GrantKind,
    form: &Form,
    dpop: Option<String>,
) -> Result<HttpResponse, OAuthError> {
    match grant {
        GrantKind::TokenExchange => {
            let request = TokenExchangeRequest::from_form(form, dpop)?;
            let response = exchange(&state.grants, client, request).await?;
            state
                .usage
                .seen(client.id.as_str(), mandate_store::UseKind::Exchange)
                .await;
            Ok(with_dpop_nonce(ok_no_store(), state).json(response))
        }
        GrantKind::JwtBearer => {
            let request = crate::id_jag::redeem_request(form, dpop)?;
            let response = crate::id_jag::redeem(&state.grants, client, request).await?;
            state
                .usage
                .seen(client.id.as_str(), mandate_store::UseKind::Exchange)
                .await;
            Ok(with_dpop_nonce(ok_no_store(), state).json(response))
        }
    }
}

/// With `[dpop] require_nonce`, every token response hands over the current nonce (RFC 9449
/// §8.2), so that clients need not be refused to learn the next one.
fn with_dpop_nonce(
    mut response: actix_web::HttpResponseBuilder,
    state: &AppState,
) -> actix_web::HttpResponseBuilder {
    if let Some(nonce) = state.grants.dpop_nonce() {
        response.insert_header(("DPoP-Nonce", nonce));
    }
    response
}

/// The request's `DPoP` proof (RFC 9449 §4.3 step 1: at most one header, a string).
fn dpop_proof(request: &HttpRequest) -> Result<Option<String>, OAuthError> {
    let mut values = request.headers().get_all("dpop");
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => value.to_str().map(|v| Some(v.to_owned())).map_err(|_| {
            OAuthError::new(
                crate::error::ErrorCode::InvalidDpopProof,
                "the DPoP header is not a JWT",
            )
        }),
        (Some(_), Some(_)) => Err(OAuthError::new(
            crate::error::ErrorCode::InvalidDpopProof,
            "at most one DPoP header is allowed",
        )),
    }
}

/// The common front of the form endpoints that take client authentication: read the form
/// (content type, size, duplicates), authenticate the client, charge its budget.
async fn authenticated_form(
    state: &AppState,
    request: &HttpRequest,
    payload: web::Payload,
) -> Result<(Form, std::sync::Arc<mandate_store::Client>), OAuthError> {
    let form = Form::read(request, payload, state.settings.limits.max_body_bytes).await?;
    form.refuse_duplicates()?;
    let credentials = PresentedCredentials::from_request(request, &form)?;
    let client = state.authenticate_client(&credentials).await?;
    state.charge_rate_limit(client.id.as_str()).await?;
    Ok((form, client))
}

/// A 200 that must not be cached (RFC 6749 §5.1, RFC 7662 §4).
fn ok_no_store() -> actix_web::HttpResponseBuilder {
    let mut ok = HttpResponse::Ok();
    no_store(&mut ok);
    ok
}

/// `POST /revoke` (RFC 7009): an agent revokes a token it requested — its hop and subtree.
/// Anything else is 200 and changes nothing (decision D8); see
/// [`AppState::revoke_own_token`].
async fn revoke(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OAuthError> {
    let (form, client) = authenticated_form(&state, &request, payload).await?;
    state
        .revoke_own_token(&client, form.required("token")?)
        .await?;
    Ok(ok_no_store().finish())
}

/// `POST /introspect` (RFC 7662): any authenticated client asks about a token; the decision,
/// including who may see what, is [`crate::introspect::introspect`]'s.
async fn introspect(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OAuthError> {
    let (form, client) = authenticated_form(&state, &request, payload).await?;
    // `token_type_hint` is ignored: mandate introspects only its own access tokens.
    let answer = crate::introspect::introspect(&state, &client, form.required("token")?).await?;
    state.participation.introspected(&client).await;
    Ok(ok_no_store().json(answer.to_json()))
}

async fn post_only(request: HttpRequest) -> HttpResponse {
    let mut response = HttpResponse::MethodNotAllowed();
    no_store(&mut response);
    response.insert_header((header::ALLOW, "POST"));
    if request.method() == Method::HEAD {
        return response.finish();
    }
    response.json(json!({
        "error": "invalid_request",
        "error_description": "this endpoint accepts only POST",
    }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": "not_found"}))
}
