//! # A downstream app protected by `mandate-verify`, end to end
//!
//! A small actix-web "calendar" API accepts mandate access tokens through the `mandate-verify`
//! SDK: the [`Authenticated`] extractor verifies every request's bearer token (signature with
//! keys discovered from mandate's RFC 8414 metadata, `iss`, `aud`, lifetime), and the verifier
//! runs in **`Followed` mode**: a background task follows mandate's revocation stream in Redis,
//! so checking a token's whole delegation chain for revocations costs no network call at all.
//!
//! The story:
//!
//! 1. alice signs in to the assistant (her ID token from a local test identity provider);
//! 2. the assistant hands part of the work to the booking tool (a hand-off token for audience
//!    `agent:booking-tool`, passing on only `calendar.read`);
//! 3. the booking tool exchanges the hand-off for a calendar token of its own: the token names
//!    alice as `sub` and both agents in its nested `act` claim;
//! 4. the calendar app accepts it on `GET /events` and prints who acts for whom; a request
//!    without a token gets 401 (`WWW-Authenticate: Bearer` naming the metadata), and `POST /events`, which needs
//!    `calendar.write`, gets 403 `insufficient_scope`;
//! 5. an administrator revokes the assistant's hand-off hop on mandate's admin API; the app
//!    learns it from the revocation stream alone and refuses the booking tool's token (401
//!    `invalid_token`), typically within milliseconds.
//!
//! Everything runs in this process on loopback: a private `redis-server` (started by
//! `mandate_testkit::redis::RedisServer` on a free port, with its own temporary directory), the
//! real mandate server on it (`mandate_testkit::TestServer`), and the app on `127.0.0.1:0`.
//! It needs Debian's `redis-server` package (`apt-get install redis-server`), as the tests do.
//!
//! ```text
//! cargo run --example downstream_app
//! ```
//!
//! The app also serves its RFC 9728 protected resource metadata at
//! `/.well-known/oauth-protected-resource`, naming mandate as its authorization server, so an
//! agent that meets the app can find out where to get a token for it. In production the app is
//! served at its identifier (`https://calendar.example.com`); here it listens on a loopback port
//! but keeps that identifier, which is the audience mandate's tokens for it carry.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, ensure, Context as _};
use mandate_server::config::{StoreKind, StoreUrl};
use mandate_testkit::redis::RedisServer;
use mandate_testkit::{
    body_json, claims_of, delegation_settings, exchange_form, id_token_claims, ClientAuth, KeyKind,
    TestKey, TestServer, ADMIN_OPS, CAL, CORP,
};
use mandate_verify::actix::{metadata_resource, require_scope, Authenticated};
use mandate_verify::ProtectedResource;
use mandate_verify::{Followed, FollowerConfig, VerifiedToken, Verifier};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The calendar app's identifier: its audience in mandate's tokens and its RFC 9728 `resource`.
const CALENDAR: &str = CAL;
/// The hand-off audience: work the assistant passes on to the booking tool.
const TO_BOOKING_TOOL: &str = "agent:booking-tool";
/// The scopes the calendar app knows.
const READ: &str = "calendar.read";
const WRITE: &str = "calendar.write";

/// How long the app waits for its follower's first snapshot at start-up.
const FOLLOWER_READY_WITHIN: Duration = Duration::from_secs(5);
/// How long the story waits for the app to refuse a revoked token before calling it a failure.
const REFUSAL_WITHIN: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The whole story takes a few seconds; the bound only keeps a broken build from hanging
    // whoever runs it (or `tests/downstream_example.rs`).
    tokio::time::timeout(Duration::from_secs(30), run())
        .await
        .context("the example did not finish within 30 s")?
}

async fn run() -> anyhow::Result<()> {
    narrate("Start a private Redis: mandate's store, and the revocation stream the app follows.");
    let redis = RedisServer::start().await?;
    println!("redis-server is listening on {}", redis.url());

    narrate("Start mandate on it, trusting a local test identity provider (issuer `https://corp.example.com`, alias `corp`, an ES256 key).");
    let idp_key = TestKey::generate(KeyKind::Es256, Some("corp-1"))?;
    let mut settings = delegation_settings(&idp_key);
    settings.store.kind = StoreKind::Redis;
    settings.store.url = Some(StoreUrl::One(redis.url()));
    let mandate = TestServer::spawn(settings).await?;
    println!(
        "mandate is listening on {} (its issuer), admin API on {}",
        mandate.base, mandate.admin_base
    );

    narrate("Start the calendar app: mandate-verify in Followed mode (keys by discovery, revocations from the stream).");
    let follower_config = FollowerConfig {
        // Fail closed once no mandate heartbeat (one per second) has been seen for 3 s.
        staleness_bound: Duration::from_secs(3),
        block: Duration::from_millis(500),
    };
    // In production: the read-only ACL user that `mandate redis acl` prints, in the URL.
    let followed = Followed::redis(&redis.url(), follower_config, FOLLOWER_READY_WITHIN).await?;
    let app = match CalendarApp::start(&mandate, followed.clone()).await {
        Ok(app) => app,
        Err(error) => {
            followed.0.stop();
            mandate.stop().await;
            return Err(error);
        }
    };
    println!("the calendar app is listening on {}", app.base);

    // Stop everything whatever happened, then report.
    let outcome = story(&mandate, &idp_key, &app, &followed).await;
    app.stop().await;
    followed.0.stop();
    mandate.stop().await;
    drop(redis);
    outcome?;
    println!("\nDone: the calendar app, its follower, mandate and Redis stopped.");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The calendar app: what a downstream app writes.
// ---------------------------------------------------------------------------------------------

/// The running app.
struct CalendarApp {
    /// `http://127.0.0.1:<port>`.
    base: String,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl CalendarApp {
    /// Builds the verifier and serves the app on a free loopback port.
    async fn start(mandate: &TestServer, followed: Followed) -> anyhow::Result<Self> {
        // `discover` reads mandate's RFC 8414 metadata and fetches its JWKS now, so a
        // misconfigured issuer fails here, at start-up, rather than on the first request.
        let verifier = Verifier::builder(mandate.issuer(), CALENDAR)
            .discover()
            .revocation(Arc::new(followed))
            .build()
            .await
            .context("building the verifier")?;
        // RFC 9728 §2: the protected resource metadata, served without authentication; with it
        // in the app data, the extractor's challenges name it (`resource_metadata`).
        let metadata = ProtectedResource::new(CALENDAR, mandate.issuer())
            .scopes([READ, WRITE])
            .name("Calendar (mandate-verify example)");
        let verifier = web::Data::new(verifier);
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the app's port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = HttpServer::new(move || {
            App::new()
                // What the `Authenticated` extractor verifies with.
                .app_data(verifier.clone())
                .app_data(web::Data::new(metadata.clone()))
                .service(metadata_resource(metadata.clone()))
                .route("/events", web::get().to(list_events))
                .route("/events", web::post().to(create_event))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(2)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Self { base, handle, task })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(self) {
        self.handle.stop(true).await;
        // The server's own result (an I/O error while serving) no longer matters here.
        let _ = self.task.await;
    }
}

/// `GET /events`: needs `calendar.read`. A request without a valid, unrevoked token for this
/// app never gets here: the extractor answers 401 (or 503 when revocation status is unknown).
async fn list_events(auth: Authenticated) -> actix_web::Result<HttpResponse> {
    require_scope(&auth, READ)?;
    println!("calendar app: GET /events for {}", who_acts_for_whom(&auth));
    Ok(HttpResponse::Ok().json(json!({
        "for": auth.subject(),
        "actor": auth.current_actor(),
        "acting_for": auth.actors().get(1..).unwrap_or_default(),
        "chain_id": auth.chain_id(),
        "events": [
            { "start": "2026-03-02T09:00:00Z", "title": "Team sync" },
            { "start": "2026-03-04T14:00:00Z", "title": "Dentist" },
        ],
    })))
}

/// `POST /events`: needs `calendar.write`.
async fn create_event(auth: Authenticated) -> actix_web::Result<HttpResponse> {
    require_scope(&auth, WRITE)?;
    println!(
        "calendar app: POST /events for {}",
        who_acts_for_whom(&auth)
    );
    Ok(HttpResponse::Created().json(json!({ "created": true })))
}

/// "corp|alice ← assistant ← booking-tool (current actor), chain chn_…, depth 2": the user,
/// then every agent in the order they acted (`actors()` lists the current one first).
fn who_acts_for_whom(token: &VerifiedToken) -> String {
    let mut parties = vec![token.subject()];
    parties.extend(token.actors().iter().rev().map(String::as_str));
    format!(
        "{} (current actor), chain {}, depth {}",
        parties.join(" ← "),
        token.chain_id(),
        token.depth()
    )
}

// ---------------------------------------------------------------------------------------------
// The story: agents obtain tokens from mandate and call the app; an administrator revokes.
// ---------------------------------------------------------------------------------------------

async fn story(
    mandate: &TestServer,
    idp_key: &TestKey,
    app: &CalendarApp,
    followed: &Followed,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(5))
        .build()?;

    narrate("An agent that meets the app reads its protected resource metadata (RFC 9728), without a token.");
    let response = http
        .get(app.url("/.well-known/oauth-protected-resource"))
        .send()
        .await?;
    let status = response.status();
    let metadata = body_json(response).await;
    println!(
        "GET /.well-known/oauth-protected-resource → {status}\n{}",
        pretty(&metadata)?
    );
    ensure!(status == StatusCode::OK, "the metadata was not served");
    ensure!(
        metadata["authorization_servers"] == json!([mandate.issuer()]),
        "the metadata does not name mandate"
    );

    narrate(
        "alice signs in to the assistant: the identity provider issues her an ID token for it.",
    );
    let id_token = idp_key.sign(None, &id_token_claims(CORP, "alice", "assistant"))?;
    println!("ID token claims: {}", claims_of(&id_token));

    narrate("The assistant hands work to the booking tool: a token for `agent:booking-tool`, passing on only calendar.read.");
    let handoff = exchange(
        mandate,
        ("assistant", "assistant-secret"),
        (&id_token, "id_token"),
        TO_BOOKING_TOOL,
        &[("scope", READ)],
    )
    .await?;
    let handoff_jti = show_token("hand-off", &handoff)?;

    narrate("The booking tool exchanges the hand-off for its own calendar token: one more actor in `act`.");
    let calendar_token = exchange(
        mandate,
        ("booking-tool", "booking-secret"),
        (&handoff, "access_token"),
        CALENDAR,
        &[],
    )
    .await?;
    show_token("booking tool's calendar token", &calendar_token)?;

    narrate("The booking tool calls GET /events with it: the app verifies it (no call to mandate) and accepts.");
    let (status, body) = accepted_when_fresh(&http, app, &calendar_token).await?;
    println!(
        "GET /events (booking tool's token) → {status}\n{}",
        pretty(&body)?
    );
    ensure!(status == StatusCode::OK, "the app refused a valid token");

    narrate("A request without a token: 401 with a `WWW-Authenticate: Bearer` challenge without an error code (RFC 6750 §3.1), naming the metadata (RFC 9728 §5.1).");
    let response = http.get(app.url("/events")).send().await?;
    let (status, challenge) = (response.status(), www_authenticate(&response));
    println!("GET /events (no token) → {status}, WWW-Authenticate: {challenge}");
    ensure!(
        status == StatusCode::UNAUTHORIZED
            && challenge
                == format!(
                    r#"Bearer resource_metadata="{CALENDAR}/.well-known/oauth-protected-resource""#
                ),
        "expected 401 with `WWW-Authenticate: Bearer resource_metadata=…`"
    );

    narrate("The booking tool tries POST /events, which needs calendar.write; its token only has calendar.read.");
    let response = http
        .post(app.url("/events"))
        .bearer_auth(&calendar_token)
        .json(&json!({ "title": "Flight to Lisbon" }))
        .send()
        .await?;
    let (status, challenge) = (response.status(), www_authenticate(&response));
    println!("POST /events (booking tool's token) → {status}, WWW-Authenticate: {challenge}");
    ensure!(
        status == StatusCode::FORBIDDEN && challenge.contains(r#"error="insufficient_scope""#),
        "expected 403 insufficient_scope"
    );

    narrate("The administrator revokes the assistant's hand-off hop on mandate's admin API; the booking tool's token derives from it.");
    let before = followed.0.stats();
    let response = http
        .post(mandate.admin_url(&format!("/admin/hops/{handoff_jti}/revoke")))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await?;
    let revoked_at = Instant::now();
    let status = response.status();
    let answer = body_json(response).await;
    println!(
        "POST /admin/hops/{handoff_jti}/revoke → {status}\n{}",
        pretty(&answer)?
    );
    ensure!(status == StatusCode::OK, "the revocation failed");

    narrate("The app learns of it from the revocation stream alone (its follower), and refuses the booking tool's token.");
    let (status, challenge, delay) = refused_after(&http, app, &calendar_token, revoked_at).await?;
    println!(
        "GET /events (booking tool's token, after the revocation) → {status}, WWW-Authenticate: {challenge}"
    );
    println!(
        "refused after revocation: the app saw it {} ms after the admin API answered, with no call to mandate",
        delay.as_millis()
    );
    let after = followed.0.stats();
    println!(
        "the app's follower: {} → {} live revocation entries, stream position {} → {}, {} snapshot(s)",
        before.entries, after.entries, before.position, after.position, after.snapshots
    );
    ensure!(
        challenge.contains(r#"error="invalid_token""#),
        "expected `invalid_token`"
    );
    Ok(())
}

/// An RFC 8693 exchange at mandate's `/token` by `agent` (client_secret_basic); the token.
async fn exchange(
    mandate: &TestServer,
    (agent, secret): (&str, &str),
    (subject_token, subject_token_type): (&str, &str),
    audience: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<String> {
    let form = exchange_form(subject_token, subject_token_type, audience, extra);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let auth = ClientAuth::Basic(agent.into(), secret.into());
    let response = mandate.token(&pairs, &auth).await?;
    let status = response.status();
    let body = body_json(response).await;
    if status != StatusCode::OK {
        bail!("mandate refused {agent}'s exchange for {audience}: {status} {body}");
    }
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in mandate's answer")
}

/// Prints what matters in a mandate token (decoded, not verified); returns its `jti`.
fn show_token(label: &str, token: &str) -> anyhow::Result<String> {
    let claims = claims_of(token);
    let mut shown = serde_json::Map::new();
    for name in [
        "sub",
        "aud",
        "client_id",
        "scope",
        "authorization_details",
        "act",
        "jti",
        "chain_id",
        "ancestors",
    ] {
        if let Some(value) = claims.get(name) {
            shown.insert(name.into(), value.clone());
        }
    }
    println!("{label}: {}", pretty(&Value::Object(shown))?);
    claims["jti"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("the {label} has no jti"))
}

/// `GET /events` with `token`. Right after start-up the follower may not have seen a heartbeat
/// yet and fail closed (503): then it asks again, for up to 5 s.
async fn accepted_when_fresh(
    http: &reqwest::Client,
    app: &CalendarApp,
    token: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let started = Instant::now();
    loop {
        let response = http
            .get(app.url("/events"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > REFUSAL_WITHIN {
            return Ok((status, body_json(response).await));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `GET /events` with `token` until the app answers 401; the status, the challenge and
/// the time since `since`.
async fn refused_after(
    http: &reqwest::Client,
    app: &CalendarApp,
    token: &str,
    since: Instant,
) -> anyhow::Result<(StatusCode, String, Duration)> {
    loop {
        let response = http
            .get(app.url("/events"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Ok((status, www_authenticate(&response), since.elapsed()));
        }
        if since.elapsed() > REFUSAL_WITHIN {
            bail!(
                "the app still answered {status} {:?} after the revocation",
                REFUSAL_WITHIN
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `WWW-Authenticate` header, or "(none)".
fn www_authenticate(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(none)")
        .to_owned()
}

fn narrate(step: &str) {
    println!("\n== {step}");
}

fn pretty(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}
