//! The admin console (docs/CONSOLE.md): server-rendered pages under `/console` on the admin
//! listener only, drawn from the same documents the admin API answers and changing state through
//! the same functions, with the same roles. No script at all, so the Content-Security-Policy
//! allows none; no request leaves for anywhere else (the stylesheet is served from here).
//!
//! Signing in takes a named admin credential; the session is a cookie (`HttpOnly`,
//! `SameSite=Strict`, `Secure` on TLS). Every form that changes something carries the
//! session's CSRF token, and its `Origin` (when the browser sends one, as they do on POST) must
//! be this listener's.

mod graph;
mod pages;
pub mod session;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use crate::admin::{AdminCaller, AdminError};
use crate::config::AdminRole;
pub use session::Sessions;
use session::{Session, COOKIE};

/// Registers the console's routes (on the admin listener only).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/console")
            .route("", web::get().to(pages::home))
            .route("/", web::get().to(pages::home))
            .route("/static/console.css", web::get().to(stylesheet))
            .route("/signin", web::get().to(pages::signin_form))
            .route("/signin", web::post().to(pages::signin))
            .route("/signout", web::post().to(pages::signout))
            .route("/agents", web::get().to(pages::agents))
            .route("/agents/{id}", web::get().to(pages::agent))
            .route(
                "/agents/{id}/{action}",
                web::get().to(pages::transition_preview),
            )
            .route(
                "/agents/{id}/{action}",
                web::post().to(pages::transition_confirm),
            )
            .route("/chains", web::get().to(pages::chains))
            .route("/chains/{id}", web::get().to(pages::chain))
            .route(
                "/revoke/{grain}/{target}",
                web::get().to(pages::revoke_preview),
            )
            .route(
                "/revoke/{grain}/{target}",
                web::post().to(pages::revoke_confirm),
            )
            .route("/audit", web::get().to(pages::audit))
            .route("/policies", web::get().to(pages::policies))
            .default_service(web::to(pages::not_found)),
    );
}

/// No script, no frames, nothing from elsewhere; forms post only here.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("../../templates/console/console.css"))
}

/// The header bar of a signed-in page.
#[derive(Debug, Clone)]
pub(crate) struct Nav {
    pub name: String,
    pub role: String,
    pub csrf: String,
    pub can_revoke: bool,
    pub can_manage: bool,
}

impl From<&Session> for Nav {
    fn from(session: &Session) -> Self {
        Self {
            name: session.name.clone(),
            role: session.role.to_string(),
            csrf: session.csrf.clone(),
            can_revoke: session.role.allows(AdminRole::Revoke),
            can_manage: session.role.allows(AdminRole::Manage),
        }
    }
}

/// What a console handler answers instead of a page.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Not signed in: to the sign-in page.
    SignIn,
    /// A page saying what went wrong, with its status.
    Page(StatusCode, String),
}

impl From<AdminError> for Refusal {
    fn from(error: AdminError) -> Self {
        Self::Page(error.status(), error.message().to_owned())
    }
}

impl actix_web::ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn => StatusCode::SEE_OTHER,
            Self::Page(status, _) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn => HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/console/signin"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .finish(),
            Self::Page(status, message) => page(
                *status,
                &pages::MessagePage {
                    nav: None,
                    title: status.canonical_reason().unwrap_or("Error").to_owned(),
                    message: message.clone(),
                },
            ),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SignIn => f.write_str("not signed in"),
            Self::Page(status, message) => write!(f, "{status}: {message}"),
        }
    }
}

/// `template` rendered as an HTML answer with `status`, the CSP and no caching.
pub(crate) fn page(status: StatusCode, template: &impl Template) -> HttpResponse {
    match template.render() {
        Ok(html) => HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            // Not `no-referrer`: with it browsers send `Origin: null` on form posts, which the
            // origin check must refuse.
            .insert_header(("Referrer-Policy", "same-origin"))
            .body(html),
        Err(error) => {
            tracing::error!(%error, "console page not rendered");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// A 303 to `location` (after a change: the browser then GETs the result).
pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn sessions(request: &HttpRequest) -> Result<&Sessions, Refusal> {
    request
        .app_data::<web::Data<Sessions>>()
        .map(|data| data.get_ref())
        .ok_or_else(|| Refusal::Page(StatusCode::SERVICE_UNAVAILABLE, "no sessions".into()))
}

/// The request's session, or a refusal to the sign-in page.
pub(crate) fn session(request: &HttpRequest) -> Result<Session, Refusal> {
    let id = request.cookie(COOKIE).ok_or(Refusal::SignIn)?;
    sessions(request)?.find(id.value()).ok_or(Refusal::SignIn)
}

/// Whether the request's `Origin` (and `Sec-Fetch-Site`), when sent, say it comes from this
/// listener's own pages.
fn same_origin(request: &HttpRequest) -> bool {
    let site_ok = request
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| site == "same-origin" || site == "none");
    let origin_ok = match request.headers().get(header::ORIGIN) {
        None => true,
        Some(origin) => {
            let info = request.connection_info();
            let expected = format!("{}://{}", info.scheme(), info.host());
            origin.to_str().is_ok_and(|o| o == expected)
        }
    };
    site_ok && origin_ok
}

/// The session of a request that changes something: signed in, from this listener's pages,
/// carrying the session's CSRF token, with the role `needed`.
pub(crate) fn changing(
    request: &HttpRequest,
    csrf: &str,
    needed: AdminRole,
) -> Result<(Session, AdminCaller), Refusal> {
    let session = session(request)?;
    if !same_origin(request) || !session.csrf_matches(csrf) {
        tracing::info!(target: "audit", admin = %session.name, path = %request.path(), "console change refused: CSRF check");
        return Err(Refusal::Page(
            StatusCode::FORBIDDEN,
            "this form is not one this console gave you (its CSRF token or origin does not match): \
             reload the page and try again"
                .into(),
        ));
    }
    let caller = session.caller();
    caller.require(needed)?;
    Ok((session, caller))
}

/// The session cookie for `id` (empty and expired to sign out).
pub(crate) fn session_cookie(request: &HttpRequest, id: &str) -> Cookie<'static> {
    let secure = request.connection_info().scheme() == "https";
    let mut cookie = Cookie::build(COOKIE, id.to_owned())
        .path("/console")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish();
    if id.is_empty() {
        cookie.make_removal();
    }
    cookie
}
