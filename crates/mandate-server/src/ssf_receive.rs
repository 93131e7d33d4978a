//! Shared Signals from trusted issuers (OpenID SSF 1.0, CAEP 1.0, RISC 1.0): an issuer configured
//! with `ssf_push_token_hash` pushes Security Event Tokens (RFC 8417) to
//! `POST /ssf/receive/<alias>` (RFC 8935). A SET that says a user's sessions or credentials are
//! gone revokes that user's delegations here (`subject:<alias|sub> @ T`, through the revocation
//! service, audited); an event mandate does not act on is acknowledged and ignored; a SET that
//! does not verify is refused with RFC 8935's error codes and changes nothing (docs/SSF.md).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use mandate_model::Subject;
use mandate_store::AuditEvent;
use mandate_token::{OneOrMany, UnverifiedJws};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::state::{AppState, IssuerVerifyError, TrustedIssuer};

/// The largest SET accepted, in bytes.
pub const MAX_SET_BYTES: usize = 16 * 1024;

/// The `typ` of a SET (RFC 8417 §2.3).
const TYP_SECEVENT: &str = "secevent+jwt";

const CAEP: &str = "https://schemas.openid.net/secevent/caep/event-type/";
const RISC: &str = "https://schemas.openid.net/secevent/risc/event-type/";

/// The events that end a user's delegations here: the user's sessions or credentials at the
/// issuer are gone, so nothing derived from them may stay usable.
fn revokes_the_user(event_type: &str) -> Option<&'static str> {
    let name = event_type
        .strip_prefix(CAEP)
        .map(|name| ("caep", name))
        .or_else(|| event_type.strip_prefix(RISC).map(|name| ("risc", name)))?;
    match name {
        ("caep", "session-revoked") => Some("CAEP session-revoked"),
        ("caep", "credential-change") => Some("CAEP credential-change"),
        ("risc", "account-disabled") => Some("RISC account-disabled"),
        ("risc", "account-purged") => Some("RISC account-purged"),
        ("risc", "sessions-revoked") => Some("RISC sessions-revoked"),
        _ => None,
    }
}

/// Why a SET was refused: RFC 8935 §2.4's codes.
#[derive(Debug, thiserror::Error)]
enum SetError {
    /// The transmitter did not authenticate (no such receiver, or a wrong token).
    #[error("the transmitter could not be authenticated")]
    AuthenticationFailed,
    /// Not a SET, or one whose claims or events break the rules.
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// The signature does not verify with the issuer's keys and algorithms.
    #[error("the SET is not signed by a key of its issuer")]
    InvalidKey,
    /// `iss` is not the issuer this endpoint receives from.
    #[error("the SET issuer is not the transmitter of this endpoint")]
    InvalidIssuer,
    /// `aud` does not name mandate.
    #[error("the SET audience is not this server")]
    InvalidAudience,
    /// The issuer's keys or mandate's store could not be reached: retry.
    #[error("the receiver cannot process SETs right now")]
    Unavailable,
}

impl SetError {
    /// The RFC 8935 error code.
    fn code(&self) -> &'static str {
        match self {
            Self::AuthenticationFailed => "authentication_failed",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidKey => "invalid_key",
            Self::InvalidIssuer => "invalid_issuer",
            Self::InvalidAudience => "invalid_audience",
            Self::Unavailable => "temporarily_unavailable",
        }
    }

    fn response(&self) -> HttpResponse {
        let (status, code) =
            match self {
                Self::AuthenticationFailed => (StatusCode::UNAUTHORIZED, "authentication_failed"),
                Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                Self::InvalidKey => (StatusCode::BAD_REQUEST, "invalid_key"),
                Self::InvalidIssuer => (StatusCode::BAD_REQUEST, "invalid_issuer"),
                Self::InvalidAudience => (StatusCode::BAD_REQUEST, "invalid_audience"),
                Self::Unavailable => return HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, "5"))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .json(
                        json!({"err": "temporarily_unavailable", "description": self.to_string()}),
                    ),
            };
        let mut response = HttpResponse::build(status);
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        if status == StatusCode::UNAUTHORIZED {
            response.insert_header((header::WWW_AUTHENTICATE, r#"Bearer realm="mandate-ssf""#));
        }
        response.json(json!({"err": code, "description": self.to_string()}))
    }
}

/// The claims of a SET that mandate reads (RFC 8417 §2.2, the SSF profile).
#[derive(Debug, Deserialize)]
struct SetClaims {
    iss: Option<String>,
    jti: Option<String>,
    iat: Option<i64>,
    aud: Option<OneOrMany<String>>,
    sub_id: Option<Value>,
    events: Option<Map<String, Value>>,
    // The SSF profile forbids both, so that a SET is never taken for an ID token or an access
    // token (and none of those for a SET).
    sub: Option<Value>,
    exp: Option<Value>,
}

/// `POST /ssf/receive/{alias}`.
pub async fn receive(
    request: HttpRequest,
    state: web::Data<AppState>,
    alias: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    match accept(&request, &state, &alias, &body).await {
        Ok(()) => HttpResponse::Accepted()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(error) => {
            tracing::info!(target: "audit", alias = %mandate_model::log_safe(&alias), reason = %error, "Shared Signals SET refused");
            error.response()
        }
    }
}

async fn accept(
    request: &HttpRequest,
    state: &AppState,
    alias: &str,
    body: &[u8],
) -> Result<(), SetError> {
    let issuer = authenticate(request, state, alias)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !content_type.eq_ignore_ascii_case("application/secevent+jwt") {
        return Err(SetError::InvalidRequest(
            "the body must be a SET, application/secevent+jwt",
        ));
    }
    if body.len() > MAX_SET_BYTES {
        return Err(SetError::InvalidRequest("the SET is too large"));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| SetError::InvalidRequest("the SET is not a compact JWS"))?
        .trim();
    process_set(state, issuer, text).await
}

/// Verifies one SET of `issuer` and acts on it: the checks and effects shared by push and poll.
async fn process_set(state: &AppState, issuer: &TrustedIssuer, text: &str) -> Result<(), SetError> {
    let jws = UnverifiedJws::parse(text)
        .map_err(|_| SetError::InvalidRequest("the SET is not a compact JWS"))?;
    if !jws.header().typ_is(TYP_SECEVENT) {
        return Err(SetError::InvalidRequest(
            "the SET's typ must be secevent+jwt",
        ));
    }
    if jws.header().crit.is_some() {
        return Err(SetError::InvalidRequest("crit is not supported"));
    }
    let verified = issuer.verify(&jws).await.map_err(|e| match e {
        IssuerVerifyError::Signature(_) => SetError::InvalidKey,
        IssuerVerifyError::KeysUnavailable(cause) => {
            tracing::warn!(%cause, "a transmitter's keys are unavailable");
            SetError::Unavailable
        }
    })?;
    let claims: SetClaims = verified
        .claims()
        .map_err(|_| SetError::InvalidRequest("the SET's claims are malformed"))?;
    if claims.iss.as_deref() != Some(issuer.settings.issuer.as_str()) {
        return Err(SetError::InvalidIssuer);
    }
    let names_mandate = claims
        .aud
        .as_ref()
        .is_some_and(|aud| aud.as_slice().iter().any(|a| *a == state.settings.issuer));
    if !names_mandate {
        return Err(SetError::InvalidAudience);
    }
    if claims.sub.is_some() || claims.exp.is_some() {
        return Err(SetError::InvalidRequest(
            "a SET carries neither sub nor exp (SSF 1.0): the subject goes in sub_id",
        ));
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(SetError::InvalidRequest(
            "jti is required (1 to 256 characters)",
        ))?;
    let now = state.clock.now_secs();
    let skew = i64::from(state.settings.tokens.clock_skew_secs);
    let max_age = i64::from(issuer.settings.max_token_age_secs);
    let iat = claims
        .iat
        .ok_or(SetError::InvalidRequest("iat is required"))?;
    if iat > now + skew || iat < now - max_age - skew {
        return Err(SetError::InvalidRequest(
            "iat is outside the window this issuer's tokens are accepted in",
        ));
    }
    let events = claims
        .events
        .filter(|events| !events.is_empty())
        .ok_or(SetError::InvalidRequest("events is required and not empty"))?;
    // Decide everything before anything changes: a SET either acts whole or is refused whole.
    let mut actions = Vec::new();
    let mut ignored = Vec::new();
    for (event_type, payload) in &events {
        match revokes_the_user(event_type) {
            Some(name) => {
                let subject = subject_of(issuer, claims.sub_id.as_ref(), payload)?;
                actions.push((name, subject));
            }
            None => ignored.push(event_type.as_str()),
        }
    }
    // Single use: a replayed SET (or a second delivery of one) changes nothing more. Recorded
    // before the revocation is written, and released if the write fails, so that the
    // transmitter's retry of the same SET is not taken for a replay.
    let replay_key = format!("ssf:{}:{jti}", issuer.settings.alias);
    let first = state
        .replay
        .first_use(&replay_key, iat + max_age + skew + 1, now)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "replay cache unavailable");
            SetError::Unavailable
        })?;
    let by = format!("ssf:{}", issuer.settings.alias);
    let outcome = if !first {
        "already received: nothing done".to_owned()
    } else {
        let mut done = Vec::new();
        for (name, subject) in &actions {
            let reason = format!("{name} from {}", issuer.settings.issuer);
            // The user's revocation is passed on to mandate's own receivers too; if either write
            // fails, the SET is released and its transmitter's retry does both again (each is
            // idempotent for a receiver deduping by subject).
            let written = match state
                .revocation
                .revoke_subject(subject.as_str(), &reason, &by)
                .await
            {
                Ok(outcome) => state
                    .ssf
                    .raise(
                        mandate_core::ssf::Grain::Subject(subject.as_str()),
                        &outcome,
                        &reason,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            if let Err(error) = written {
                tracing::warn!(%error, "a Shared Signals revocation could not be written; the transmitter will retry");
                if let Err(error) = state.replay.release(&replay_key).await {
                    tracing::error!(%error, jti = %mandate_model::log_safe(&jti), "a Shared Signals SET is recorded but its revocation is not written; revoke the subject by hand");
                }
                return Err(SetError::Unavailable);
            }
            done.push(format!("{name}: revoked {subject}"));
        }
        if !ignored.is_empty() {
            done.push(format!("ignored {}", ignored.join(", ")));
        }
        done.join("; ")
    };
    let at = state.clock.now().timestamp_millis();
    state
        .audit
        .record(AuditEvent::new(at, by, "ssf.received", jti, outcome))
        .await;
    Ok(())
}

/// How often mandate polls each issuer configured with `ssf_poll_url`.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
/// The most SETs asked for in one poll.
const POLL_MAX_EVENTS: usize = 100;

/// Polls every issuer configured with `ssf_poll_url` (RFC 8936) every [`POLL_INTERVAL`], for as
/// long as the node runs. Each SET received is verified and acted on as a pushed one; those
/// processed are acknowledged with the next request (made at once), those refused are reported
/// in `setErrs`, and those that could not be processed (store down) are neither, so the
/// transmitter delivers them again. Several nodes may poll: the shared replay cache makes a SET
/// act once.
pub async fn poll_issuers(state: AppState) {
    let pollers: Vec<(std::sync::Arc<TrustedIssuer>, url::Url, String)> = state
        .trusted_issuers
        .iter()
        .filter_map(|issuer| {
            let url = issuer.settings.ssf_poll_url.as_deref()?;
            let token = issuer.ssf_poll_token.as_ref()?;
            let url = mandate_fetch::checked_url(url).ok()?;
            Some((issuer.clone(), url, token.to_string()))
        })
        .collect();
    if pollers.is_empty() {
        return;
    }
    let Ok(client) = mandate_fetch::http_client(
        mandate_fetch::FetchBounds::default(),
        false,
        concat!("mandate/", env!("CARGO_PKG_VERSION")),
    ) else {
        tracing::error!("no HTTP client for Shared Signals polling");
        return;
    };
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Vec<Acknowledgements> = pollers
        .iter()
        .map(|_| Acknowledgements::default())
        .collect();
    loop {
        interval.tick().await;
        for ((issuer, url, token), pending) in pollers.iter().zip(pending.iter_mut()) {
            // Until a poll brings nothing (and has carried the last acknowledgements).
            for _ in 0..10 {
                match poll_once(&state, issuer, &client, url, token, pending).await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(issuer = %issuer.settings.issuer, %error, "Shared Signals poll failed");
                        break;
                    }
                }
            }
        }
    }
}

/// What the next poll of one issuer reports back.
#[derive(Debug, Default)]
struct Acknowledgements {
    ack: Vec<String>,
    errors: Map<String, Value>,
}

/// One RFC 8936 request: sends the pending acknowledgements and errors, processes what comes
/// back. Whether another request should follow at once (SETs came, so acknowledgements wait).
async fn poll_once(
    state: &AppState,
    issuer: &TrustedIssuer,
    client: &reqwest::Client,
    url: &url::Url,
    token: &str,
    pending: &mut Acknowledgements,
) -> Result<bool, String> {
    let mut body = json!({
        "maxEvents": POLL_MAX_EVENTS,
        "returnImmediately": true,
        "ack": pending.ack,
    });
    if !pending.errors.is_empty() {
        body["setErrs"] = Value::Object(pending.errors.clone());
    }
    let answer = mandate_fetch::post_json(
        client,
        url,
        token,
        &body,
        mandate_fetch::FetchBounds::default(),
    )
    .await
    .map_err(|e| e.to_string())?;
    // Sent: the transmitter has them now.
    pending.ack.clear();
    pending.errors.clear();
    let answer: Value =
        serde_json::from_slice(&answer).map_err(|_| "the poll answer is not JSON".to_owned())?;
    let sets = answer
        .get("sets")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (jti, set) in &sets {
        let Some(text) = set.as_str() else {
            pending.errors.insert(
                jti.clone(),
                json!({"err": "invalid_request", "description": "a SET is a compact JWS string"}),
            );
            continue;
        };
        match process_set(state, issuer, text).await {
            Ok(()) => pending.ack.push(jti.clone()),
            // Not acknowledged: delivered again with a later poll.
            Err(SetError::Unavailable) => {}
            Err(error) => {
                tracing::info!(target: "audit", issuer = %issuer.settings.issuer, reason = %error, "Shared Signals SET refused");
                pending.errors.insert(
                    jti.clone(),
                    json!({"err": error.code(), "description": error.to_string()}),
                );
            }
        }
    }
    Ok(!sets.is_empty())
}

/// The receiver `alias` names, if its issuer may push and the bearer token is its own. Every
/// failure reads the same, so the endpoint tells no one which aliases exist.
fn authenticate<'a>(
    request: &HttpRequest,
    state: &'a AppState,
    alias: &str,
) -> Result<&'a TrustedIssuer, SetError> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let issuer = state
        .trusted_issuers
        .iter()
        .find(|ti| ti.settings.alias.as_str() == alias)
        .map(AsRef::as_ref);
    match (issuer, presented) {
        (Some(issuer), Some(token)) => match &issuer.settings.ssf_push_token_hash {
            Some(hash) if hash.matches(token) => Ok(issuer),
            _ => Err(SetError::AuthenticationFailed),
        },
        _ => Err(SetError::AuthenticationFailed),
    }
}

/// The user an event is about: the SET's `sub_id` (SSF 1.0), else the event's own `subject`
/// (CAEP and RISC before SSF 1.0), as an `iss_sub` identifier (RFC 9493 §3.2.5) of this issuer.
fn subject_of(
    issuer: &TrustedIssuer,
    sub_id: Option<&Value>,
    payload: &Value,
) -> Result<Subject, SetError> {
    let identifier = sub_id
        .or_else(|| payload.get("subject"))
        .ok_or(SetError::InvalidRequest(
            "the event names no subject (sub_id)",
        ))?;
    let member = |name: &str| identifier.get(name).and_then(Value::as_str);
    if member("format") != Some("iss_sub") {
        return Err(SetError::InvalidRequest(
            "the subject must be an iss_sub identifier: mandate knows users by issuer and sub",
        ));
    }
    if member("iss") != Some(issuer.settings.issuer.as_str()) {
        return Err(SetError::InvalidRequest(
            "the subject's iss is not the transmitter: it cannot speak for another issuer's users",
        ));
    }
    let sub = member("sub")
        .filter(|s| !s.is_empty())
        .ok_or(SetError::InvalidRequest("the subject's sub is missing"))?;
    Subject::from_upstream(&issuer.settings.alias, sub, issuer.settings.subject_as_is)
        .map_err(|_| SetError::InvalidRequest("the subject's sub cannot be used for this issuer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_events_that_end_a_users_sessions_or_credentials_revoke() {
        for revoking in [
            "https://schemas.openid.net/secevent/caep/event-type/session-revoked",
            "https://schemas.openid.net/secevent/caep/event-type/credential-change",
            "https://schemas.openid.net/secevent/risc/event-type/account-disabled",
            "https://schemas.openid.net/secevent/risc/event-type/account-purged",
            "https://schemas.openid.net/secevent/risc/event-type/sessions-revoked",
        ] {
            assert!(revokes_the_user(revoking).is_some(), "{revoking}");
        }
        for other in [
            "https://schemas.openid.net/secevent/caep/event-type/token-claims-change",
            "https://schemas.openid.net/secevent/caep/event-type/session-established",
            "https://schemas.openid.net/secevent/risc/event-type/account-enabled",
            "https://schemas.openid.net/secevent/ssf/event-type/verification",
            "https://example.com/caep/event-type/session-revoked",
            "session-revoked",
        ] {
            assert!(revokes_the_user(other).is_none(), "{other}");
        }
    }
}
