//! # Cross-app access: an agent reaches a SaaS app through the enterprise IdP, end to end
//!
//! Two mandate servers run in this process, each playing one side of cross-app access
//! (the Identity Assertion JWT Authorization Grant, "ID-JAG"):
//!
//! * **the enterprise IdP broker** (`idp`): the company's mandate. It trusts the company's
//!   identity provider (a local test key, issuer `https://corp.example.com`, alias `corp`) and
//!   knows the SaaS app's authorization server: which resources and scopes may be asked of it,
//!   and which client id the company's `assistant` agent has there (`assistant-at-saas`);
//! * **the SaaS app's authorization server** (`saas`): the vendor's mandate. It trusts the
//!   broker's published keys for ID-JAGs only (alias `ent`) and issues access tokens for the
//!   SaaS app's API, `https://files.example.com`.
//!
//! The story:
//!
//! 1. alice signs in to the assistant: her ID token from the local test identity provider;
//! 2. the assistant exchanges it at the broker (RFC 8693, `requested_token_type=
//!    urn:ietf:params:oauth:token-type:id-jag`) for an ID-JAG addressed to the SaaS AS: a
//!    short-lived `oauth-id-jag+jwt` naming alice, the assistant's client id *there*, the
//!    resource and the scopes;
//! 3. the assistant redeems the ID-JAG at the SaaS AS (RFC 7523 `jwt-bearer` grant) and gets an
//!    ordinary access token for the SaaS API, with itself as the actor in `act`;
//! 4. the SaaS API, protected by the `mandate-verify` SDK (an actix-web route taking
//!    [`Authenticated`]), accepts it;
//! 5. the ID-JAG is single use: redeeming it a second time is refused with `invalid_grant`.
//!
//! ```text
//! cargo run --example cross_app_access
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::{ensure, Context as _};
use mandate_model::{Audience, AuthMethod, ClientId, IssuerAlias, ScopeSet};
use mandate_server::config::{
    Acceptance, ConfigSource, IdJagResourceServerSettings, PolicySettings, TrustedIssuerSettings,
};
use mandate_server::{AppState, BuildOptions, Listeners, RunningServer, Signals};
use mandate_testkit::{
    agent_with_secret, body_json, claims_of, delegation_settings, empty_settings, exchange_form,
    header_of, id_token_claims, now, resource_server, ClientAuth, KeyKind, TestKey, TestServer,
    CORP,
};
use mandate_verify::actix::{require_scope, Authenticated};
use mandate_verify::Verifier;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The SaaS app's API: its identifier, the audience of the SaaS AS's tokens for it.
const FILES: &str = "https://files.example.com";
const FILES_READ: &str = "files.read";
/// RFC 8693 requested token type for an ID-JAG.
const ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// RFC 7523 grant type the SaaS AS redeems the ID-JAG with.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The assistant's registration at the SaaS AS (demo values only).
const SAAS_CLIENT_ID: &str = "assistant-at-saas";
const SAAS_CLIENT_SECRET: &str = "assistant-at-saas-secret-demo-only";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Everything is local and takes well under a few seconds; the bound only keeps a broken
    // build from hanging whoever runs it (or `tests/cross_app_example.rs`).
    tokio::time::timeout(Duration::from_secs(30), run())
        .await
        .context("the example did not finish within 30 s")?
}

async fn run() -> anyhow::Result<()> {
    narrate("Set up the company's identity provider: a local ES256 test key (issuer `https://corp.example.com`, alias `corp`).");
    let corp_key = TestKey::generate(KeyKind::Es256, Some("corp-1"))?;
    println!("corp's public JWKS: {}", pretty(&corp_key.jwks())?);

    // The broker's configuration names the SaaS AS's issuer, and the SaaS AS's names the
    // broker's keys: bind the SaaS AS's ports first, start it once the broker is up.
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let saas_listeners = Listeners::bind(loopback, loopback)?;
    let saas_public = saas_listeners.public.local_addr()?;
    let saas_admin = saas_listeners.admin.local_addr()?;
    let saas_issuer = format!("http://{saas_public}");

    narrate("Start mandate #1, the enterprise IdP broker: it trusts corp and may issue ID-JAGs for the SaaS AS.");
    let idp = TestServer::spawn(idp_settings(&corp_key, &saas_issuer)?).await?;
    println!("IdP broker is listening on {} (its issuer)", idp.base);

    narrate("Start mandate #2, the SaaS app's authorization server: it trusts the broker's JWKS for ID-JAGs only.");
    let saas = match start_saas(&idp, saas_listeners, saas_public, saas_admin, &saas_issuer).await {
        Ok(saas) => saas,
        Err(error) => {
            idp.stop().await;
            return Err(error);
        }
    };
    println!("SaaS AS is listening on {saas_issuer} (its issuer)");

    narrate("Start the SaaS app's API: an actix-web route protected by mandate-verify, keys discovered from the SaaS AS.");
    let api = match FilesApi::start(&saas_issuer).await {
        Ok(api) => api,
        Err(error) => {
            saas.stop().await;
            idp.stop().await;
            return Err(error);
        }
    };
    println!("the SaaS API ({FILES}) is listening on {}", api.base);

    // Stop everything whatever happened, then report.
    let outcome = story(&idp, &corp_key, &saas_issuer, &api).await;
    api.stop().await;
    saas.stop().await;
    idp.stop().await;
    outcome?;
    println!("\nDone: the SaaS API, the SaaS AS and the IdP broker stopped.");
    Ok(())
}

/// The broker: corp trusted (`delegation_settings`: agent `assistant`, …), plus one ID-JAG
/// resource-server row for the SaaS AS.
fn idp_settings(corp_key: &TestKey, saas_issuer: &str) -> anyhow::Result<mandate_server::Settings> {
    let mut settings = delegation_settings(corp_key);
    settings.id_jag.resource_servers = vec![IdJagResourceServerSettings {
        issuer: saas_issuer.to_owned(),
        // The assistant is `assistant` here and `assistant-at-saas` at the SaaS AS.
        client_ids: BTreeMap::from([(ClientId::parse("assistant")?, SAAS_CLIENT_ID.to_owned())]),
        resources: vec![Audience::parse(FILES)?],
        scopes: ScopeSet::parse("files.read files.write")?,
    }];
    Ok(settings)
}

/// The SaaS AS: trusts the broker (inline copy of its JWKS) for ID-JAGs, knows the assistant's
/// registration there and the files API, and lets the assistant have `files.read` on it.
async fn start_saas(
    idp: &TestServer,
    listeners: Listeners,
    public: SocketAddr,
    admin: SocketAddr,
    saas_issuer: &str,
) -> anyhow::Result<RunningServer> {
    let jwks = idp.get_json("/jwks").await?;
    let alg = jwks["keys"][0]["alg"]
        .as_str()
        .unwrap_or("ES256")
        .to_owned();
    let mut settings = empty_settings();
    settings.listen = public;
    settings.admin_listen = admin;
    settings.issuer = saas_issuer.to_owned();
    settings.trusted_issuers = vec![TrustedIssuerSettings {
        issuer: idp.issuer().to_owned(),
        alias: IssuerAlias::parse("ent")?,
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(jwks),
        algorithms: vec![alg],
        accept: vec![Acceptance::IdJag],
        max_token_age_secs: 3600,
        // Each ID-JAG is redeemed once.
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }];
    settings.clients = vec![
        agent_with_secret(
            SAAS_CLIENT_ID,
            SAAS_CLIENT_SECRET,
            AuthMethod::ClientSecretBasic,
        )?,
        resource_server("files-api", "files-api-secret-demo-only", FILES)?,
    ];
    settings.policies = vec![PolicySettings {
        actor: ClientId::parse(SAAS_CLIENT_ID)?,
        audience: Audience::parse(FILES)?,
        scopes: ScopeSet::parse(FILES_READ)?,
        max_depth: None,
    }];
    // The default store: in memory.
    let state = AppState::build(
        settings,
        ConfigSource::Programmatic,
        BuildOptions::default(),
    )
    .await?;
    Ok(mandate_server::start(state, listeners, Signals::Ignore)?)
}

// ---------------------------------------------------------------------------------------------
// The SaaS app's API: what the vendor writes.
// ---------------------------------------------------------------------------------------------

struct FilesApi {
    /// `http://127.0.0.1:<port>`.
    base: String,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl FilesApi {
    async fn start(saas_issuer: &str) -> anyhow::Result<Self> {
        // Keys from the SaaS AS's RFC 8414 metadata. No revocation source, which is acceptable
        // only because the SaaS AS here runs on the in-memory store: it has no shared revocation
        // list or stream another process could read. In production (mandate on Redis) add
        // `.revocation(...)` (`Followed` or `Direct`), as examples/downstream_app.rs does;
        // without one, revoked tokens are accepted until they expire.
        let verifier = Verifier::builder(saas_issuer, FILES)
            .discover()
            .build()
            .await
            .context("building the verifier")?;
        let verifier = web::Data::new(verifier);
        let listener = TcpListener::bind(("127.0.0.1", 0)).context("binding the API's port")?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(verifier.clone())
                .route("/files", web::get().to(list_files))
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
        // The server's own result no longer matters here.
        let _ = self.task.await;
    }
}

/// `GET /files`: needs `files.read` in a valid token from the SaaS AS for this API.
async fn list_files(auth: Authenticated) -> actix_web::Result<HttpResponse> {
    require_scope(&auth, FILES_READ)?;
    println!(
        "SaaS API: GET /files for {} by {}",
        auth.subject(),
        auth.current_actor()
    );
    Ok(HttpResponse::Ok().json(json!({
        "for": auth.subject(),
        "actor": auth.current_actor(),
        "files": ["q1-plan.docx", "budget.xlsx"],
    })))
}

// ---------------------------------------------------------------------------------------------
// The story: the assistant crosses from the company's IdP to the SaaS app.
// ---------------------------------------------------------------------------------------------

async fn story(
    idp: &TestServer,
    corp_key: &TestKey,
    saas_issuer: &str,
    api: &FilesApi,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    narrate("alice signs in to the assistant: corp issues her an ID token for it.");
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims["auth_time"] = json!(now() - 60);
    let id_token = corp_key.sign(None, &claims)?;
    show_token("ID token", &id_token)?;

    narrate("The assistant asks the IdP broker for an ID-JAG for the SaaS AS (token exchange, requested_token_type id-jag, scope files.read).");
    let form = exchange_form(
        &id_token,
        "id_token",
        saas_issuer,
        &[("requested_token_type", ID_JAG), ("scope", FILES_READ)],
    );
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let auth = ClientAuth::Basic("assistant".into(), "assistant-secret".into());
    let response = idp.token(&pairs, &auth).await?;
    let status = response.status();
    let body = body_json(response).await;
    println!(
        "POST {}/token (token exchange) → {status}\n{}",
        idp.base,
        pretty(&without_token(&body))?
    );
    ensure!(status == StatusCode::OK, "the broker refused: {body}");
    let id_jag = body["access_token"]
        .as_str()
        .context("no ID-JAG in the broker's answer")?
        .to_owned();
    show_token("ID-JAG", &id_jag)?;

    narrate("The assistant redeems the ID-JAG at the SaaS AS as `assistant-at-saas` (jwt-bearer grant).");
    let (status, body) = redeem(&http, saas_issuer, &id_jag).await?;
    println!(
        "POST {saas_issuer}/token (jwt-bearer) → {status}\n{}",
        pretty(&without_token(&body))?
    );
    ensure!(status == StatusCode::OK, "the SaaS AS refused: {body}");
    let access_token = body["access_token"]
        .as_str()
        .context("no access token in the SaaS AS's answer")?
        .to_owned();
    show_token("SaaS access token", &access_token)?;

    narrate("The assistant calls the SaaS API with it: mandate-verify checks it against the SaaS AS's keys.");
    let response = http
        .get(api.url("/files"))
        .bearer_auth(&access_token)
        .send()
        .await?;
    let status = response.status();
    let body = body_json(response).await;
    println!("GET /files → {status}\n{}", pretty(&body)?);
    ensure!(
        status == StatusCode::OK,
        "the SaaS API refused a valid token"
    );

    narrate("Someone replays the same ID-JAG at the SaaS AS: it is single use, so the grant is refused.");
    let (status, body) = redeem(&http, saas_issuer, &id_jag).await?;
    println!(
        "POST {saas_issuer}/token (jwt-bearer, same ID-JAG again) → {status}\n{}",
        pretty(&body)?
    );
    ensure!(
        status == StatusCode::BAD_REQUEST && body["error"] == "invalid_grant",
        "expected 400 invalid_grant, got {status} {body}"
    );
    Ok(())
}

/// The jwt-bearer grant at the SaaS AS, authenticated as the assistant's registration there.
async fn redeem(
    http: &reqwest::Client,
    saas_issuer: &str,
    id_jag: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = http
        .post(format!("{saas_issuer}/token"))
        .basic_auth(SAAS_CLIENT_ID, Some(SAAS_CLIENT_SECRET))
        .form(&[("grant_type", JWT_BEARER), ("assertion", id_jag)])
        .send()
        .await?;
    let status = response.status();
    Ok((status, body_json(response).await))
}

/// Prints a token's header and claims, decoded (not verified).
fn show_token(label: &str, token: &str) -> anyhow::Result<()> {
    println!(
        "{label} header: {}\n{label} claims: {}",
        pretty(&header_of(token))?,
        pretty(&claims_of(token))?
    );
    Ok(())
}

/// A token response with the token itself elided (it is printed decoded instead).
fn without_token(body: &Value) -> Value {
    let mut body = body.clone();
    if let Some(token) = body.get_mut("access_token") {
        *token = json!("…");
    }
    body
}

fn narrate(step: &str) {
    println!("\n== {step}");
}

fn pretty(value: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}
