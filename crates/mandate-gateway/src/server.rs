//! The gateway's HTTP side: the forward-auth check, the reverse proxy, and the RFC 9728
//! metadata of every route.

use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::config::Mode;
use crate::gate::{Decision, Gate};
use crate::identity;

/// What every request needs.
#[derive(Debug)]
pub struct Gateway {
    /// The routes and their verifiers.
    pub gate: Gate,
    /// Forward-auth or proxy.
    pub mode: Mode,
    /// The client proxy mode forwards with (no redirects followed, no environment proxies).
    pub client: reqwest::Client,
    /// The largest request body forwarded.
    pub max_body_bytes: usize,
    /// Sends participation reports while the gateway runs.
    pub reporter: Option<mandate_verify::report::Reporter>,
}

/// The upstream client: redirects are the app's answer to pass on, never to follow.
pub fn upstream_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
}

/// Every path goes to [`handle`].
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.default_service(web::to(handle));
}

/// The nginx `auth_request` subrequest names the original URI in this header (our snippet sets
/// it); Traefik ForwardAuth sends `X-Forwarded-Uri`; Envoy's `ext_authz` sends the original path
/// as the check's own path.
const ORIGINAL_URI: [&str; 2] = ["x-original-uri", "x-forwarded-uri"];

async fn handle(
    request: HttpRequest,
    payload: web::Payload,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    if request.method() == Method::GET {
        if let Some(document) = gateway.gate.metadata(request.path()) {
            return HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "max-age=3600"))
                .json(document);
        }
    }
    match gateway.mode {
        Mode::ForwardAuth => check(&request, &gateway).await,
        Mode::Proxy => proxy(&request, payload, &gateway).await,
    }
}

/// The path a forward-auth check is about.
fn original_path(request: &HttpRequest) -> String {
    ORIGINAL_URI
        .iter()
        .find_map(|name| request.headers().get(*name)?.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| request.uri().path().to_owned())
}

/// nginx's snippet names the original method in this header; Traefik sends
/// `X-Forwarded-Method`; Envoy checks with the original method itself.
const ORIGINAL_METHOD: [&str; 2] = ["x-original-method", "x-forwarded-method"];

async fn decide(request: &HttpRequest, path: &str, gateway: &Gateway) -> Decision {
    let values = |name| -> Vec<&[u8]> {
        request
            .headers()
            .get_all(name)
            .map(HeaderValue::as_bytes)
            .collect()
    };
    let authorization = values(header::AUTHORIZATION);
    let dpop = values(header::HeaderName::from_static("dpop"));
    let method = match gateway.mode {
        Mode::ForwardAuth => ORIGINAL_METHOD
            .iter()
            .find_map(|name| request.headers().get(*name)?.to_str().ok())
            .unwrap_or(request.method().as_str()),
        Mode::Proxy => request.method().as_str(),
    };
    gateway
        .gate
        .decide(&crate::gate::Checked {
            path,
            method,
            authorization: &authorization,
            dpop: &dpop,
        })
        .await
}

/// Forward-auth: 200 with the identity headers, or the refusal.
async fn check(request: &HttpRequest, gateway: &Gateway) -> HttpResponse {
    let path = original_path(request);
    match decide(request, &path, gateway).await {
        Decision::Allow { headers, .. } => {
            let mut response = HttpResponse::Ok();
            response.insert_header((header::CACHE_CONTROL, "no-store"));
            for (name, value) in headers {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    response.insert_header((name, value));
                }
            }
            response.finish()
        }
        decision => refusal(decision, StatusCode::FORBIDDEN),
    }
}

/// A refusal: the RFC 6750 answer, or `unrouted` for a path no route covers.
fn refusal(decision: Decision, unrouted: StatusCode) -> HttpResponse {
    match decision {
        Decision::Deny {
            error,
            resource_metadata,
        } => {
            let status =
                StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = HttpResponse::build(status);
            response.insert_header((header::CACHE_CONTROL, "no-store"));
            if let Some(challenge) = error.challenge_with(Some(&resource_metadata)) {
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            response.finish()
        }
        Decision::Unrouted | Decision::Allow { .. } => HttpResponse::build(unrouted).finish(),
    }
}

/// Headers that describe one connection, not the request (RFC 9110 §7.6.1), and those the
/// client rebuilds.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Whether `name` is hop-by-hop, also by being listed in the message's `Connection` header.
fn hop_by_hop(name: &str, connection: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || connection.iter().any(|c| c.eq_ignore_ascii_case(name))
}

/// The header names a message's `Connection` header values list, lower-cased.
fn connection_tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Proxy mode: verify, then forward to the route's upstream with the identity headers (and no
/// `X-Mandate-*` header of the caller's).
async fn proxy(request: &HttpRequest, payload: web::Payload, gateway: &Gateway) -> HttpResponse {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let (headers, upstream) = match decide(request, &target, gateway).await {
        Decision::Allow { headers, upstream } => (headers, upstream),
        decision => return refusal(decision, StatusCode::NOT_FOUND),
    };
    let Some(upstream) = upstream else {
        return HttpResponse::NotFound().finish();
    };
    let body = match payload.to_bytes_limited(gateway.max_body_bytes).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => return HttpResponse::BadRequest().finish(),
        Err(_) => return HttpResponse::PayloadTooLarge().finish(),
    };
    let Ok(method) = reqwest::Method::from_bytes(request.method().as_str().as_bytes()) else {
        return HttpResponse::MethodNotAllowed().finish();
    };
    let mut forwarded = reqwest::header::HeaderMap::new();
    let connection = connection_tokens(
        request
            .headers()
            .get_all(header::CONNECTION)
            .map(HeaderValue::as_bytes),
    );
    for (name, value) in request.headers() {
        let name = name.as_str();
        if hop_by_hop(name, &connection) || name == "host" || identity::is_reserved(name) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            forwarded.append(name, value);
        }
    }
    for (name, value) in headers {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
            forwarded.insert(name, value);
        }
    }
    let (host, scheme) = {
        let info = request.connection_info();
        (info.host().to_owned(), info.scheme().to_owned())
    };
    if let Ok(host) = reqwest::header::HeaderValue::from_str(&host) {
        forwarded.insert("x-forwarded-host", host);
    }
    if let Ok(proto) = reqwest::header::HeaderValue::from_str(&scheme) {
        forwarded.insert("x-forwarded-proto", proto);
    }
    if let Some(peer) = request.peer_addr() {
        let chain = match request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(earlier) => format!("{earlier}, {}", peer.ip()),
            None => peer.ip().to_string(),
        };
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&chain) {
            forwarded.insert("x-forwarded-for", value);
        }
    }
    let sent = gateway
        .client
        .request(method, format!("{upstream}{target}"))
        .headers(forwarded)
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%error, %upstream, "the upstream did not answer");
            return HttpResponse::BadGateway().finish();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = HttpResponse::build(status);
    let connection = connection_tokens(
        answer
            .headers()
            .get_all(reqwest::header::CONNECTION)
            .iter()
            .map(reqwest::header::HeaderValue::as_bytes),
    );
    for (name, value) in answer.headers() {
        if hop_by_hop(name.as_str(), &connection) {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) {
            response.append_header((name, value));
        }
    }
    response.streaming(answer.bytes_stream())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_headers_are_hop_by_hop() {
        let connection = vec!["x-session".to_owned()];
        assert!(hop_by_hop("x-session", &connection));
        assert!(hop_by_hop("transfer-encoding", &[]));
        assert!(!hop_by_hop("authorization", &connection));
    }
}
