//! mandate's verifying gateway: lets any app, in any language, accept mandate tokens by
//! configuration. In front of the app as a reverse proxy, or beside its proxy as a forward-auth
//! check (nginx `auth_request`, Traefik ForwardAuth, Envoy `ext_authz`), it verifies each
//! request's token with [`mandate_verify`] (RFC 9068 checks, the audience of the request's route,
//! revocations followed from Redis or mandate's feed, failing closed when that view is stale)
//! and tells the app who is calling in `X-Mandate-*` headers that no caller can forge.
//! docs/GATEWAY.md is the operator's guide.

pub mod config;
pub mod gate;
pub mod identity;
pub mod routes;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use mandate_verify::{
    Feed, FeedConfig, Followed, FollowerConfig, RevocationSource, TokenFacts, VerifyError,
};

use config::{GatewayConfig, RevocationConfig};

/// How long start-up waits for the first revocation snapshot.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// mandate's keys or the revocation source could not be reached.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A secret file could not be read.
    #[error("{0}")]
    Secret(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// A client secret from its file, without the line end editors add.
fn read_secret(path: &std::path::Path) -> Result<String, StartError> {
    std::fs::read_to_string(path)
        .map(|secret| secret.trim().to_owned())
        .map_err(|e| StartError::Secret(format!("{}: {e}", path.display())))
}

/// Opens the revocation source the configuration names and waits until it can decide (its first
/// snapshot and a heartbeat are in), so that the gateway does not refuse live tokens while it
/// starts.
pub async fn revocation_source(
    config: &RevocationConfig,
) -> Result<Arc<dyn RevocationSource>, StartError> {
    let source = open_source(config).await?;
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    loop {
        match source.verdict(&TokenFacts::default()).await {
            Ok(_) => return Ok(source),
            Err(error) if tokio::time::Instant::now() >= deadline => return Err(error.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn open_source(config: &RevocationConfig) -> Result<Arc<dyn RevocationSource>, StartError> {
    let bound = config.staleness_bound();
    match config {
        RevocationConfig::Redis { url, .. } => {
            let follower = FollowerConfig {
                staleness_bound: bound,
                block: Duration::from_secs(1).min(bound / 2),
            };
            Ok(Arc::new(
                Followed::redis(url, follower, READY_WITHIN).await?,
            ))
        }
        RevocationConfig::Feed {
            url,
            client_id,
            client_secret_file,
            ..
        } => {
            let secret = read_secret(client_secret_file)?;
            let feed_config = FeedConfig {
                staleness_bound: bound,
                ..FeedConfig::default()
            };
            let feed = Feed::connect(url, client_id, &secret, feed_config).await?;
            if !feed.ready(READY_WITHIN).await {
                feed.stop();
                return Err(VerifyError::RevocationUnavailable(
                    "the revocation feed sent no snapshot".into(),
                )
                .into());
            }
            Ok(Arc::new(feed))
        }
    }
}

/// Everything the HTTP side needs, built from `config`.
pub async fn build(config: &GatewayConfig) -> Result<server::Gateway, StartError> {
    let routes = config.routes()?;
    let revocation = revocation_source(&config.revocation).await?;
    let gate = gate::Gate::build(
        &config.issuer,
        config.jwks_uri.as_deref(),
        routes,
        revocation,
    )
    .await?;
    let reporter = match &config.report {
        Some(report) => Some(reporter(config, report, &gate)?),
        None => None,
    };
    Ok(server::Gateway {
        gate,
        mode: config.mode,
        client: server::upstream_client().map_err(|e| StartError::Client(e.to_string()))?,
        max_body_bytes: config.max_body_bytes,
        reporter,
    })
}

/// Participation reports for every route's audience, as `kind: gateway`.
fn reporter(
    config: &GatewayConfig,
    report: &config::ReportSettings,
    gate: &gate::Gate,
) -> Result<mandate_verify::report::Reporter, StartError> {
    let secret = read_secret(&report.client_secret_file)?;
    let endpoint = report
        .endpoint
        .clone()
        .unwrap_or_else(|| format!("{}/participation", config.issuer.trim_end_matches('/')));
    let mut settings =
        mandate_verify::report::ReportConfig::new(&endpoint, &report.client_id, &secret);
    settings.kind = "gateway";
    if let Some(instance) = &report.instance {
        settings.instance = instance.clone();
    }
    Ok(mandate_verify::report::Reporter::spawn(
        &gate.verifiers(),
        settings,
    )?)
}
