//! # Agents exchanging tokens through mandate, end to end
//!
//! Alice signs in to an AI assistant. The assistant trades her ID token for a calendar token
//! (RFC 8693 token exchange), then hands part of the work to a booking tool, which trades that
//! hand-off for a calendar token of its own. Every hop adds one actor to the token's nested `act`
//! claim, so the calendar API can see the whole chain: the booking tool, acting for the
//! assistant, acting for alice. Finally the booking tool asks for more than it was handed
//! (`calendar.write` from a `calendar.read` hand-off) and mandate refuses with `invalid_scope`.
//!
//! Everything runs in this process on loopback: a local test identity provider (an ES256 key whose
//! JWKS is configured inline as trusted issuer `https://idp.example.com`, alias `corp`) and the
//! real mandate server started on free ports by `mandate_testkit::TestServer`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --example agent_exchange
//! ```
//!
//! ## Why the client side is built from `oauth2`'s parts rather than one of its grants
//!
//! The `oauth2` crate (v5) has no RFC 8693 grant, and one cannot be bolted onto its existing
//! request builders: each of them (`exchange_client_credentials()`, `exchange_code()`, …) writes
//! its own fixed `grant_type`, and `add_extra_param` can only append, so adding
//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` would send the parameter twice,
//! which mandate (like RFC 6749 §3.2) refuses with `invalid_request`. `Client` also keeps its
//! secret private, so an extension trait on it could not authenticate the request.
//!
//! So [`TokenExchangeRequest`] extends `oauth2` through its public API instead, shaped like its
//! built-in request builders: the credentials are oauth2's `ClientId`, `ClientSecret` and
//! `AuthType` (Basic credentials form-encoded first, RFC 6749 §2.3.1, as oauth2 does), the
//! request is an `oauth2::HttpRequest` sent through oauth2's `AsyncHttpClient` implementation for
//! its `oauth2::reqwest` re-export, and the answer is parsed into oauth2's `StandardTokenResponse`
//! (with an `ExtraTokenFields` type for RFC 8693's `issued_token_type`) or its
//! `BasicErrorResponse`, returned as oauth2's `RequestTokenError`. The calling code therefore
//! handles a token exchange, and its refusals, exactly as it would a built-in grant.

use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use mandate_model::{Audience, AuthMethod, IssuerAlias, ScopeSet};
use mandate_server::config::{Acceptance, PolicySettings, TrustedIssuerSettings};
use mandate_server::Settings;
use mandate_testkit::{
    agent_with_secret, empty_settings, id_token_claims, resource_server, KeyKind, TestKey,
    TestServer,
};
use oauth2::basic::{BasicErrorResponse, BasicErrorResponseType, BasicTokenType};
use oauth2::http::{header, HeaderValue, Method, StatusCode};
use oauth2::url::form_urlencoded;
use oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, ExtraTokenFields, HttpRequest, HttpResponse,
    RequestTokenError, Scope, StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The local identity provider alice signs in with.
const IDP: &str = "https://idp.example.com";
/// The calendar API's audience.
const CALENDAR: &str = "https://calendar.example.com";
/// The hand-off audience: work passed on to the booking tool.
const TO_BOOKING_TOOL: &str = "agent:booking-tool";

const ASSISTANT_SECRET: &str = "assistant-secret-for-this-demo-only";
const BOOKING_SECRET: &str = "booking-tool-secret-for-this-demo-only";
const CALENDAR_SECRET: &str = "calendar-api-secret-for-this-demo-only";

const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Everything is local, so this finishes in well under a second; the bound only keeps a
    // broken build from hanging whoever runs it (or `tests/examples.rs`).
    tokio::time::timeout(Duration::from_secs(30), run())
        .await
        .context("the example did not finish within 30 s")?
}

async fn run() -> anyhow::Result<()> {
    narrate("Set up a local identity provider: an ES256 key, trusted by mandate as issuer `https://idp.example.com` (alias `corp`) through an inline JWKS.");
    let idp_key = TestKey::generate(KeyKind::Es256, Some("idp-key-1"))?;
    println!("IdP public JWKS: {}", pretty(&idp_key.jwks())?);

    narrate("Start mandate in-process with two agents, one resource server and three policy rows.");
    let server = TestServer::spawn(settings(&idp_key)?).await?;
    println!("mandate is listening on {} (its issuer)", server.base);

    // Stop the server whatever happened, then report.
    let outcome = demo(&server, &idp_key).await;
    server.stop().await;
    outcome?;
    println!("\nDone: mandate stopped.");
    Ok(())
}

/// mandate's configuration, built in code (a `mandate.toml` would say the same).
fn settings(idp_key: &TestKey) -> anyhow::Result<Settings> {
    let mut settings = empty_settings();
    settings.trusted_issuers = vec![TrustedIssuerSettings {
        issuer: IDP.into(),
        alias: IssuerAlias::parse("corp")?,
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(idp_key.jwks()),
        algorithms: vec![idp_key.alg().into()],
        accept: vec![Acceptance::IdToken],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }];
    settings.clients = vec![
        agent_with_secret("assistant", ASSISTANT_SECRET, AuthMethod::ClientSecretBasic)?,
        agent_with_secret("booking-tool", BOOKING_SECRET, AuthMethod::ClientSecretPost)?,
        resource_server("calendar-api", CALENDAR_SECRET, CALENDAR)?,
    ];
    settings.policies = vec![
        policy("assistant", CALENDAR, "calendar.read calendar.write")?,
        policy("assistant", TO_BOOKING_TOOL, "calendar.read calendar.write")?,
        policy("booking-tool", CALENDAR, "calendar.read calendar.write")?,
    ];
    for row in &settings.policies {
        println!(
            "policy: {} may obtain {} for {}",
            row.actor, row.scopes, row.audience
        );
    }
    Ok(settings)
}

fn policy(actor: &str, audience: &str, scopes: &str) -> anyhow::Result<PolicySettings> {
    Ok(PolicySettings {
        actor: mandate_model::ClientId::parse(actor)?,
        audience: Audience::parse(audience)?,
        scopes: ScopeSet::parse(scopes)?,
        max_depth: None,
    })
}

async fn demo(server: &TestServer, idp_key: &TestKey) -> anyhow::Result<()> {
    // oauth2's re-exported reqwest; no redirects, as oauth2 advises for token endpoints.
    let http = oauth2::reqwest::Client::builder()
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;
    let token_url = TokenUrl::new(server.url("/token"))?;
    let assistant = AgentClient {
        client_id: ClientId::new("assistant".into()),
        client_secret: ClientSecret::new(ASSISTANT_SECRET.into()),
        auth_type: AuthType::BasicAuth,
        token_url: token_url.clone(),
    };
    let booking_tool = AgentClient {
        client_id: ClientId::new("booking-tool".into()),
        client_secret: ClientSecret::new(BOOKING_SECRET.into()),
        auth_type: AuthType::RequestBody,
        token_url,
    };

    narrate("Alice signs in to the assistant: the identity provider issues her an ID token whose audience is the assistant.");
    let id_token = idp_key.sign(None, &id_token_claims(IDP, "alice", "assistant"))?;
    show_jwt("alice's ID token (from the IdP)", &id_token)?;

    narrate("Step 1. The assistant (client_secret_basic) exchanges alice's ID token for a calendar token.");
    let calendar_token = accept(
        "assistant → calendar",
        assistant
            .exchange_token(&id_token, TOKEN_TYPE_ID_TOKEN)
            .set_audience(CALENDAR)
            .request_async(&http)
            .await,
    )?;
    show_response(&calendar_token)?;

    narrate("Step 2. The assistant hands work to the booking tool: a token for audience `agent:booking-tool`, passing on only calendar.read.");
    let handoff = accept(
        "assistant → agent:booking-tool",
        assistant
            .exchange_token(&id_token, TOKEN_TYPE_ID_TOKEN)
            .set_audience(TO_BOOKING_TOOL)
            .add_scope(Scope::new("calendar.read".into()))
            .request_async(&http)
            .await,
    )?;
    show_response(&handoff)?;

    narrate("Step 3. The booking tool (client_secret_post) exchanges the hand-off for its own calendar token: the chain grows by one actor.");
    let booking_calendar = accept(
        "booking-tool → calendar",
        booking_tool
            .exchange_token(handoff.access_token().secret(), TOKEN_TYPE_ACCESS_TOKEN)
            .set_audience(CALENDAR)
            .request_async(&http)
            .await,
    )?;
    show_response(&booking_calendar)?;

    narrate("Step 4. The booking tool asks for calendar.write from the calendar.read hand-off; mandate must refuse.");
    let widened = booking_tool
        .exchange_token(handoff.access_token().secret(), TOKEN_TYPE_ACCESS_TOKEN)
        .set_audience(CALENDAR)
        .add_scope(Scope::new("calendar.write".into()))
        .request_async(&http)
        .await;
    match widened {
        Err(RequestTokenError::ServerResponse(refusal))
            if *refusal.error() == BasicErrorResponseType::InvalidScope =>
        {
            println!(
                "refused as expected: error = {}, error_description = {}",
                refusal.error(),
                refusal.error_description().map_or("(none)", String::as_str)
            );
        }
        Err(other) => {
            println!("unexpected failure: {}", describe(&other));
            bail!("expected invalid_scope, got another error");
        }
        Ok(_) => bail!("mandate issued calendar.write from a calendar.read hand-off"),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// RFC 8693 on top of oauth2's public API.
// ---------------------------------------------------------------------------------------------

/// RFC 8693 §2.2.1 fields beyond RFC 6749's, carried by oauth2's `StandardTokenResponse`.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct TokenExchangeFields {
    /// The type of the issued token (here always an access token).
    issued_token_type: String,
    /// On a hand-off: the (audience, scopes) pairs it passes on (RFC 9396).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authorization_details: Option<Value>,
}

impl ExtraTokenFields for TokenExchangeFields {}

/// A successful token-exchange response.
type TokenExchangeResponse = StandardTokenResponse<TokenExchangeFields, BasicTokenType>;

/// What a token-exchange request can fail with, in oauth2's own error type.
type TokenExchangeError<RE> = RequestTokenError<RE, BasicErrorResponse>;

/// An agent's registration at mandate's token endpoint. (oauth2's `Client` keeps its secret to
/// itself, so the exchange needs the credentials here.)
#[derive(Debug)]
struct AgentClient {
    client_id: ClientId,
    client_secret: ClientSecret,
    auth_type: AuthType,
    token_url: TokenUrl,
}

impl AgentClient {
    /// Starts an RFC 8693 exchange of `subject_token` (of type `subject_token_type`, a URN).
    fn exchange_token<'a>(
        &'a self,
        subject_token: &'a str,
        subject_token_type: &'a str,
    ) -> TokenExchangeRequest<'a> {
        TokenExchangeRequest {
            client: self,
            subject_token,
            subject_token_type,
            audience: None,
            scopes: Vec::new(),
        }
    }
}

/// An RFC 8693 token-exchange request, in the style of oauth2's request builders.
#[derive(Debug)]
struct TokenExchangeRequest<'a> {
    client: &'a AgentClient,
    subject_token: &'a str,
    subject_token_type: &'a str,
    audience: Option<&'a str>,
    scopes: Vec<Scope>,
}

impl<'a> TokenExchangeRequest<'a> {
    /// The one target: an app URI or `agent:<id>`.
    fn set_audience(mut self, audience: &'a str) -> Self {
        self.audience = Some(audience);
        self
    }

    /// Narrows the request to `scope` (absent: everything the hop may have).
    fn add_scope(mut self, scope: Scope) -> Self {
        self.scopes.push(scope);
        self
    }

    /// Sends the request with any oauth2 HTTP client and parses the answer.
    async fn request_async<'c, C>(
        self,
        http_client: &'c C,
    ) -> Result<TokenExchangeResponse, TokenExchangeError<C::Error>>
    where
        C: AsyncHttpClient<'c>,
    {
        let request = self.prepare_request().map_err(|error| {
            RequestTokenError::Other(format!("failed to prepare request: {error}"))
        })?;
        let response = http_client
            .call(request)
            .await
            .map_err(RequestTokenError::Request)?;
        parse_response(&response)
    }

    /// The form-encoded POST, authenticated the way the client is registered.
    fn prepare_request(&self) -> Result<HttpRequest, oauth2::http::Error> {
        let client = self.client;
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", GRANT_TOKEN_EXCHANGE)
            .append_pair("subject_token", self.subject_token)
            .append_pair("subject_token_type", self.subject_token_type);
        if let Some(audience) = self.audience {
            form.append_pair("audience", audience);
        }
        if !self.scopes.is_empty() {
            let scope: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
            form.append_pair("scope", &scope.join(" "));
        }
        let mut builder = oauth2::http::Request::builder()
            .method(Method::POST)
            .uri(client.token_url.as_str())
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        match client.auth_type {
            AuthType::BasicAuth => {
                // RFC 6749 §2.3.1: form-encode id and secret, then Basic-encode them.
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect();
                let id: String = encode(client.client_id.as_str());
                let secret: String = encode(client.client_secret.secret());
                let credentials = STANDARD.encode(format!("{id}:{secret}"));
                builder = builder.header(header::AUTHORIZATION, format!("Basic {credentials}"));
            }
            // `AuthType` is non-exhaustive; everything else sends the secret in the body.
            _ => {
                form.append_pair("client_id", client.client_id.as_str())
                    .append_pair("client_secret", client.client_secret.secret());
            }
        }
        builder.body(form.finish().into_bytes())
    }
}

/// RFC 6749 §5.1 / §5.2: 200 with a token, or an error object.
fn parse_response<RE>(
    response: &HttpResponse,
) -> Result<TokenExchangeResponse, TokenExchangeError<RE>>
where
    RE: std::error::Error + 'static,
{
    let body = response.body().as_slice();
    if response.status() != StatusCode::OK {
        return Err(match serde_json::from_slice::<BasicErrorResponse>(body) {
            Ok(error) => RequestTokenError::ServerResponse(error),
            Err(_) => RequestTokenError::Other(format!(
                "HTTP {} without an RFC 6749 error object",
                response.status()
            )),
        });
    }
    serde_json::from_slice(body)
        .map_err(|error| RequestTokenError::Other(format!("unreadable token response: {error}")))
}

/// Passes a token through, or prints the RFC 6749 error code and description and fails.
fn accept<RE>(
    what: &str,
    result: Result<TokenExchangeResponse, TokenExchangeError<RE>>,
) -> anyhow::Result<TokenExchangeResponse>
where
    RE: std::error::Error + 'static,
{
    result.map_err(|error| {
        let description = describe(&error);
        println!("exchange {what} failed: {description}");
        anyhow::anyhow!("exchange {what} failed: {description}")
    })
}

/// One line about a failed request; for an OAuth refusal, its RFC 6749 code and description.
fn describe<RE>(error: &TokenExchangeError<RE>) -> String
where
    RE: std::error::Error + 'static,
{
    match error {
        RequestTokenError::ServerResponse(refusal) => format!(
            "error = {}, error_description = {}",
            refusal.error(),
            refusal.error_description().map_or("(none)", String::as_str)
        ),
        RequestTokenError::Request(error) => format!("request failed: {error}"),
        RequestTokenError::Parse(error, _) => format!("unreadable response: {error}"),
        RequestTokenError::Other(error) => error.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// Printing.
// ---------------------------------------------------------------------------------------------

fn narrate(line: &str) {
    println!("\n>>> {line}");
}

fn show_response(response: &TokenExchangeResponse) -> anyhow::Result<()> {
    let scope = response.scopes().map(|scopes| {
        scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    });
    println!(
        "response: token_type = {}, issued_token_type = {}, expires_in = {}, scope = {}",
        response.token_type().as_ref(),
        response.extra_fields().issued_token_type,
        response
            .expires_in()
            .map_or_else(|| "-".to_owned(), |d| format!("{} s", d.as_secs())),
        scope.as_deref().unwrap_or("-"),
    );
    if let Some(details) = &response.extra_fields().authorization_details {
        println!("passes on (authorization_details): {details}");
    }
    let token = response.access_token().secret();
    show_jwt("issued token", token)?;
    println!("actor chain: {}", actor_chain(&jwt_part(token, 1)?)?);
    Ok(())
}

/// Prints a JWT's header and claims (decoded, not verified: this is for reading).
fn show_jwt(label: &str, jwt: &str) -> anyhow::Result<()> {
    println!("{label}, header: {}", pretty(&jwt_part(jwt, 0)?)?);
    println!("{label}, claims: {}", pretty(&jwt_part(jwt, 1)?)?);
    Ok(())
}

/// The subject first, then each actor in the order they joined; RFC 8693 §4.1 nests the current
/// actor outermost, so the `act` chain is read inside out.
fn actor_chain(claims: &Value) -> anyhow::Result<String> {
    let subject = claims["sub"].as_str().context("the token has no `sub`")?;
    let mut actors = Vec::new();
    let mut act = &claims["act"];
    while let Some(actor) = act["sub"].as_str() {
        actors.push(actor);
        act = &act["act"];
    }
    actors.reverse();
    let current = actors.last().copied().unwrap_or("(none)");
    let mut chain = vec![subject];
    chain.extend(actors.iter().copied());
    Ok(format!(
        "{} (current actor: {current}; depth {}; audience {})",
        chain.join(" -> "),
        actors.len(),
        claims["aud"]
    ))
}

/// Decodes part `index` (0: header, 1: claims) of a compact JWT.
fn jwt_part(jwt: &str, index: usize) -> anyhow::Result<Value> {
    let part = jwt.split('.').nth(index).context("not a compact JWT")?;
    let bytes = URL_SAFE_NO_PAD.decode(part)?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn pretty(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}
