//! Development mode's demo identity provider: mints ID tokens for made-up users, so that a
//! newcomer can try an exchange with `curl`. Registered only when the server runs in development
//! mode (`mandate serve` without `--config`); never reachable from a configuration file.

use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mandate_model::ClientId;
use rand::RngCore;
use serde_json::json;

use crate::error::{no_store, OAuthError};
use crate::form::Form;
use crate::state::AppState;

/// How long demo ID tokens live.
const DEMO_ID_TOKEN_SECS: i64 = 600;

/// `POST /demo-idp/token` with `sub` and `client_id`: an ID token for that user, issued to that
/// client, signed by the demo issuer's key.
pub async fn mint(
    state: web::Data<AppState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, OAuthError> {
    let Some(key) = &state.demo_idp else {
        return Ok(HttpResponse::NotFound().finish());
    };
    let form = Form::read(&request, payload, state.settings.limits.max_body_bytes).await?;
    let sub = form.required("sub")?;
    if sub.len() > 64 || sub.contains('|') || sub.chars().any(char::is_control) {
        return Err(OAuthError::invalid_request(
            "sub must be a short plain user name",
        ));
    }
    let client_id = ClientId::parse(form.required("client_id")?)
        .map_err(|_| OAuthError::invalid_request("client_id is not a valid client id"))?;
    let now = state.clock.now_secs();
    let mut jti = [0u8; 16];
    rand::rng().fill_bytes(&mut jti);
    let claims = json!({
        "iss": format!("{}/demo-idp", state.settings.issuer),
        "sub": sub,
        "aud": client_id.as_str(),
        "iat": now,
        "exp": now + DEMO_ID_TOKEN_SECS,
        "jti": URL_SAFE_NO_PAD.encode(jti),
    });
    let id_token = key.sign("JWT", &claims).map_err(|e| {
        tracing::error!(error = %e, "demo ID token signing failed");
        OAuthError::new(crate::error::ErrorCode::ServerError, "signing failed")
    })?;
    let mut response = HttpResponse::Ok();
    no_store(&mut response);
    Ok(response.json(json!({ "id_token": id_token, "expires_in": DEMO_ID_TOKEN_SECS })))
}
