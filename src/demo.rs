//! `mandate demo` (DESIGN.md section 11): the whole story in one process, narrated.
//!
//! It starts mandate in development mode on free loopback ports (memory store, ephemeral keys,
//! the demo agents and identity provider of `mandate_server::dev`) and a small calendar app
//! protected by `mandate-verify`, which follows mandate's revocation feed (`GET /revocations`,
//! the way apps without access to mandate's Redis do). Then: alice signs in to the assistant,
//! the assistant gets a calendar token and hands work to the booking agent, the booking agent
//! gets its own calendar token, the app accepts both; an administrator revokes the assistant's
//! hand-off hop through the admin API, and the app refuses the booking agent's token.
//!
//! Nothing is kept: every secret is this run's (the demo agents' are the public development
//! ones), and everything stops when the story ends. No log output: the narrative is the output.

use std::io::IsTerminal as _;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{bail, ensure, Context as _};
use clap::Args;
use mandate_model::IssuerAlias;
use mandate_server::config::ConfigSource;
use mandate_server::{dev, AppState, BuildOptions, Listeners, RunningServer, Signals};
use mandate_verify::actix::{require_scope, Authenticated};
use mandate_verify::{Feed, FeedConfig, Verifier};
use reqwest::header::WWW_AUTHENTICATE;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::admin_cli::{chain_tree, outcome};
use crate::decode::Decoded;

/// The last line of a demo that went as it should (tests match it).
pub const FINAL_LINE: &str =
    "The end: the calendar app refused the booking agent's token after the assistant's hop was revoked.";

/// The whole story may take this long before it counts as failed (it takes a few seconds).
const STORY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the app may take to see a heartbeat at start-up, or a revocation afterwards.
const PROPAGATION_WITHIN: Duration = Duration::from_secs(10);

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const HANDOFF: &str = "agent:booking-tool";
/// The calendar app's resource server client in development mode.
const CALENDAR_CLIENT: &str = "calendar-api";

/// `mandate demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// No colours (also when standard output is not a terminal, or NO_COLOR is set).
    #[arg(long)]
    no_color: bool,
}

/// Runs the demo; 0 when the story ended as it should.
pub fn run(args: &DemoArgs) -> ExitCode {
    let colour =
        !args.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut narrator = Narrator { colour, step: 0 };
    let result = runtime.block_on(async {
        tokio::time::timeout(STORY_TIMEOUT, demo(&mut narrator))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the demo did not finish within 60 s")))
    });
    // Whatever still runs (mandate's listeners) ends with the process.
    runtime.shutdown_background();
    match result {
        Ok(()) => {
            println!("\n{}", narrator.paint(GREEN, FINAL_LINE));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\ndemo failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

const GREEN: &str = "32";
const RED: &str = "31";
const BOLD: &str = "1";
const DIM: &str = "2";

/// Prints the story.
struct Narrator {
    colour: bool,
    step: usize,
}

impl Narrator {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    fn step(&mut self, title: &str) {
        self.step += 1;
        println!("\n{}", self.paint(BOLD, &format!("{}. {title}", self.step)));
    }

    fn say(&self, text: &str) {
        println!("   {text}");
    }

    fn ok(&self, text: &str) {
        println!("   {} {text}", self.paint(GREEN, "✓"));
    }

    fn refused(&self, text: &str) {
        println!("   {} {text}", self.paint(RED, "✗"));
    }

    /// A block of text (a chain tree), indented.
    fn block(&self, text: &str) {
        let bar = self.paint(DIM, "│");
        for line in text.lines() {
            println!("   {bar} {line}");
        }
    }
}

async fn demo(narrator: &mut Narrator) -> anyhow::Result<()> {
    println!("mandate demo: an assistant acts for alice, hands work to a booking agent, and an");
    println!("administrator takes it back. Everything runs in this process, on loopback; nothing");
    println!("is kept.");

    narrator.step("Start mandate (development mode: memory store, ephemeral keys, demo agents).");
    let (mandate, state, admin_secret) = start_mandate().await?;
    let issuer = state.settings.issuer.clone();
    narrator.say(&format!(
        "issuer {issuer}, admin API on http://{}",
        mandate.admin_addr
    ));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()?;

    narrator.step("Start the calendar app, protected by mandate-verify.");
    let app = match CalendarApp::start(&issuer).await {
        Ok(app) => app,
        Err(error) => {
            drop(mandate);
            return Err(error);
        }
    };
    narrator.say(&format!(
        "it accepts tokens for {} at {}, and follows mandate's revocation feed",
        dev::DEMO_APP,
        app.base
    ));

    let story = Story {
        narrator,
        http: &http,
        issuer: &issuer,
        admin: format!("http://{}", mandate.admin_addr),
        admin_secret: &admin_secret,
        app: &app,
    };
    let result = story.tell().await;
    app.stop().await;
    // No graceful stop of mandate: the process ends next, and a graceful stop would wait out its
    // whole timeout for the revocation feed's streaming response, whose reader has gone.
    drop(mandate);
    result
}

/// Development settings on free loopback ports, with the demo issuer's users under the alias
/// `corp` (so alice is `corp|alice`); the running server, its state and the admin secret.
async fn start_mandate() -> anyhow::Result<(RunningServer, AppState, String)> {
    let (mut settings, extras) = dev::development_settings()?;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(loopback, loopback).context("binding loopback ports")?;
    let public = listeners.public.local_addr()?;
    settings.listen = public;
    settings.admin_listen = listeners.admin.local_addr()?;
    let issuer = format!("http://{public}");
    for trusted in &mut settings.trusted_issuers {
        if let Some(rest) = trusted.issuer.strip_prefix(&settings.issuer) {
            trusted.issuer = format!("{issuer}{rest}");
            trusted.alias = IssuerAlias::parse("corp")?;
        }
    }
    settings.issuer = issuer;
    let options = BuildOptions {
        demo_idp: Some(extras.demo_issuer_key.clone()),
        ..BuildOptions::default()
    };
    let state = AppState::build(settings, ConfigSource::Development, options).await?;
    let running = mandate_server::start(state.clone(), listeners, Signals::Ignore)
        .context("starting mandate")?;
    Ok((running, state, extras.admin_secret))
}

/// The demo agents' credentials (public development secrets).
fn secret_of(client: &str) -> anyhow::Result<&'static str> {
    dev::DEMO_SECRETS
        .iter()
        .find(|(id, _)| *id == client)
        .map(|(_, secret)| *secret)
        .with_context(|| format!("no development secret for {client}"))
}

struct Story<'a> {
    narrator: &'a mut Narrator,
    http: &'a reqwest::Client,
    issuer: &'a str,
    admin: String,
    admin_secret: &'a str,
    app: &'a CalendarApp,
}

impl Story<'_> {
    async fn tell(self) -> anyhow::Result<()> {
        let Story {
            narrator,
            http,
            issuer,
            admin,
            admin_secret,
            app,
        } = self;
        let mandate = Mandate { http, issuer };

        narrator.step(
            "alice signs in to the assistant: the demo identity provider issues an ID token.",
        );
        let response = http
            .post(format!("{issuer}/demo-idp/token"))
            .form(&[("sub", "alice"), ("client_id", "assistant")])
            .send()
            .await?;
        let body = json_of(response, "the demo identity provider").await?;
        let id_token = body["id_token"]
            .as_str()
            .context("no id_token from the demo identity provider")?
            .to_owned();
        narrator.say(&format!(
            "an ID token for alice, issued to the assistant by {issuer}/demo-idp (alias corp: she is corp|alice)"
        ));

        narrator.step("The assistant exchanges it for a calendar token (RFC 8693).");
        let assistant_token = mandate
            .exchange("assistant", &id_token, ID_TOKEN, dev::DEMO_APP, None)
            .await?;
        narrator.block(&Decoded::parse(&assistant_token)?.to_chain_summary());

        narrator.step("The assistant hands work to the booking agent: a token for agent:booking-tool, passing on calendar.read only.");
        let handoff = mandate
            .exchange(
                "assistant",
                &id_token,
                ID_TOKEN,
                HANDOFF,
                Some("calendar.read"),
            )
            .await?;
        narrator.block(&Decoded::parse(&handoff)?.to_chain_summary());
        let handoff_claims = claims_of(&handoff)?;
        let handoff_jti = handoff_claims["jti"]
            .as_str()
            .context("the hand-off token has no jti")?
            .to_owned();
        let chain_id = handoff_claims["chain_id"]
            .as_str()
            .context("the hand-off token has no chain_id")?
            .to_owned();

        narrator.step(
            "The booking agent exchanges the hand-off for its own calendar token: one more actor.",
        );
        let booking_token = mandate
            .exchange("booking-tool", &handoff, ACCESS_TOKEN, dev::DEMO_APP, None)
            .await?;
        narrator.block(&Decoded::parse(&booking_token)?.to_chain_summary());

        narrator.step("The calendar app accepts both tokens.");
        for (who, token) in [
            ("the assistant's", &assistant_token),
            ("the booking agent's", &booking_token),
        ] {
            let (status, body) = app.events_when_ready(http, token).await?;
            ensure!(
                status == StatusCode::OK,
                "the calendar app refused {who} token: {status} {body}"
            );
            narrator.ok(&format!(
                "GET /events with {who} token → {status}: {}",
                body["who"].as_str().unwrap_or("?")
            ));
        }

        narrator.step("The administrator looks at the chain (GET /admin/chains/{id}).");
        let tree = admin_json(http, &admin, admin_secret, "GET", &["chains", &chain_id]).await?;
        narrator.block(&chain_tree(&tree));

        narrator.step("The administrator revokes the assistant's hand-off hop (POST /admin/hops/{jti}/revoke).");
        let answer = admin_json(
            http,
            &admin,
            admin_secret,
            "POST",
            &["hops", &handoff_jti, "revoke"],
        )
        .await?;
        let revoked_at = Instant::now();
        narrator.block(&outcome(&answer));
        narrator.say("the chain now:");
        let tree = admin_json(http, &admin, admin_secret, "GET", &["chains", &chain_id]).await?;
        narrator.block(&chain_tree(&tree));

        narrator.step("The calendar app learns it from the revocation feed.");
        let (status, _) = app.events(http, &assistant_token).await?;
        ensure!(
            status == StatusCode::OK,
            "the assistant's own calendar token (not derived from the hand-off) was refused: {status}"
        );
        narrator.ok(&format!(
            "the assistant's own calendar token is still accepted ({status}): it does not derive from the revoked hop"
        ));
        let (status, challenge) = app.refused_within(http, &booking_token).await?;
        let waited = revoked_at.elapsed();
        narrator.refused(&format!(
            "the booking agent's token is refused: {status}, WWW-Authenticate: {challenge} ({} ms after the admin API answered)",
            waited.as_millis()
        ));
        ensure!(
            challenge.contains("invalid_token"),
            "expected an invalid_token challenge, got {challenge}"
        );

        narrator.step("The booking agent tries to exchange the revoked hand-off again.");
        let (status, body) = mandate
            .try_exchange("booking-tool", &handoff, ACCESS_TOKEN, dev::DEMO_APP, None)
            .await?;
        ensure!(
            status == StatusCode::BAD_REQUEST,
            "mandate did not refuse the revoked hand-off: {status} {body}"
        );
        narrator.refused(&format!(
            "mandate refuses: {status} {} ({})",
            body["error"].as_str().unwrap_or("?"),
            body["error_description"].as_str().unwrap_or("")
        ));
        Ok(())
    }
}

/// The public side of mandate, as the agents see it.
struct Mandate<'a> {
    http: &'a reqwest::Client,
    issuer: &'a str,
}

impl Mandate<'_> {
    async fn try_exchange(
        &self,
        agent: &str,
        subject_token: &str,
        subject_token_type: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", subject_token_type),
            ("audience", audience),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let secret = secret_of(agent)?;
        // The development agents use both secret methods: the booking tool posts its secret.
        let request = self.http.post(format!("{}/token", self.issuer));
        let request = if agent == "booking-tool" {
            form.push(("client_id", agent));
            form.push(("client_secret", secret));
            request
        } else {
            request.basic_auth(agent, Some(secret))
        };
        let response = request.form(&form).send().await?;
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    async fn exchange(
        &self,
        agent: &str,
        subject_token: &str,
        subject_token_type: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .try_exchange(agent, subject_token, subject_token_type, audience, scope)
            .await?;
        match body["access_token"].as_str() {
            Some(token) if status == StatusCode::OK => Ok(token.to_owned()),
            _ => bail!("mandate refused {agent}'s exchange for {audience}: {status} {body}"),
        }
    }
}

/// A request to the admin API with the demo's admin credential; the JSON answer.
async fn admin_json(
    http: &reqwest::Client,
    admin: &str,
    secret: &str,
    method: &str,
    segments: &[&str],
) -> anyhow::Result<Value> {
    let mut url = reqwest::Url::parse(admin)?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the admin URL cannot take a path"))?
        .pop_if_empty()
        .push("admin")
        .extend(segments);
    let request = match method {
        "POST" => http
            .post(url)
            .json(&json!({"reason": "demo: the assistant's hand-off is withdrawn"})),
        _ => http.get(url),
    };
    let response = request.bearer_auth(secret).send().await?;
    json_of(response, "the admin API").await
}

async fn json_of(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "{what} answered {status}: {body}");
    Ok(body)
}

fn claims_of(token: &str) -> anyhow::Result<Value> {
    let decoded = Decoded::parse(token)?;
    let json: Value = serde_json::from_str(&decoded.to_json())?;
    Ok(json["claims"].clone())
}

/// The downstream calendar app: an actix-web app whose one route needs a valid, unrevoked
/// mandate token for it with `calendar.read`.
struct CalendarApp {
    base: String,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    feed: Feed,
}

impl CalendarApp {
    async fn start(issuer: &str) -> anyhow::Result<Self> {
        let feed = Feed::connect(
            &format!("{issuer}/revocations"),
            CALENDAR_CLIENT,
            secret_of(CALENDAR_CLIENT)?,
            FeedConfig::default(),
        )
        .await
        .context("opening mandate's revocation feed")?;
        if !feed.ready(PROPAGATION_WITHIN).await {
            feed.stop();
            bail!("the revocation feed sent no snapshot");
        }
        let verifier = Verifier::builder(issuer, dev::DEMO_APP)
            .discover()
            .revocation(Arc::new(feed.clone()))
            .build()
            .await
            .context("building the verifier")?;
        let verifier = web::Data::new(verifier);
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the app's port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(verifier.clone())
                .route("/events", web::get().to(events))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Self {
            base,
            handle,
            task,
            feed,
        })
    }

    async fn events(
        &self,
        http: &reqwest::Client,
        token: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let response = http
            .get(format!("{}/events", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// `GET /events`; right after start-up the feed fails closed (503) until it has seen a
    /// heartbeat, so a 503 is retried for a while.
    async fn events_when_ready(
        &self,
        http: &reqwest::Client,
        token: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let started = Instant::now();
        loop {
            let (status, body) = self.events(http, token).await?;
            if status != StatusCode::SERVICE_UNAVAILABLE || started.elapsed() > PROPAGATION_WITHIN {
                return Ok((status, body));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks with `token` until the app answers 401: the status and its challenge.
    async fn refused_within(
        &self,
        http: &reqwest::Client,
        token: &str,
    ) -> anyhow::Result<(StatusCode, String)> {
        let started = Instant::now();
        loop {
            let response = http
                .get(format!("{}/events", self.base))
                .bearer_auth(token)
                .send()
                .await?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(none)")
                    .to_owned();
                return Ok((status, challenge));
            }
            if started.elapsed() > PROPAGATION_WITHIN {
                bail!("the app still answered {status} after the revocation");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.feed.stop();
        self.handle.stop(true).await;
        // The app's own serving result no longer matters once the story is over.
        let _ = self.task.await;
    }
}

/// `GET /events`: for whom, through which agents (in the order they acted).
async fn events(auth: Authenticated) -> actix_web::Result<HttpResponse> {
    require_scope(&auth, "calendar.read")?;
    let mut parties = vec![auth.subject().to_owned()];
    parties.extend(auth.actors().iter().rev().cloned());
    Ok(HttpResponse::Ok().json(json!({
        "who": format!("{} (chain {})", parties.join(" → "), auth.chain_id()),
        "events": [{"start": "2026-03-02T09:00:00Z", "title": "Team sync"}],
    })))
}
