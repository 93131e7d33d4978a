//! Participation reports: a verifier tells mandate what it is, for which audiences, and how it
//! follows revocations (with the age of its view), so that an administrator can see which apps
//! actually follow revocations before enforcing a control that depends on it
//! (docs/GOVERNANCE.md). Reporting needs the app's `resource_server` credentials; it never
//! affects verification.
//!
//! ```no_run
//! # async fn run(verifier: mandate_verify::Verifier) -> Result<(), mandate_verify::VerifyError> {
//! use mandate_verify::report::{ReportConfig, Reporter};
//!
//! let config = ReportConfig::new("https://mandate.example.com/participation", "calendar-api", "…secret…");
//! let reporter = Reporter::spawn(&[&verifier], config)?; // reports every 30 s until dropped
//! # drop(reporter); Ok(()) }
//! ```

use std::time::Duration;

use serde_json::json;
use url::Url;

use crate::{Verifier, VerifyError};

/// How often a report is sent by default (mandate keeps one for two minutes).
pub const DEFAULT_REPORT_EVERY: Duration = Duration::from_secs(30);
/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and as whom to report.
#[derive(Clone)]
pub struct ReportConfig {
    endpoint: String,
    client_id: String,
    client_secret: String,
    /// `sdk` (default) or `gateway`.
    pub kind: &'static str,
    /// This instance's name, unique among the app's instances (default: `<node>-<pid>`).
    pub instance: String,
    /// The host it runs on (default: `$HOSTNAME`, else `unknown`).
    pub node: String,
    /// The interval between reports (default 30 s).
    pub every: Duration,
}

impl std::fmt::Debug for ReportConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("ReportConfig")
            .field("endpoint", &self.endpoint)
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field("instance", &self.instance)
            .field("every", &self.every)
            .finish()
    }
}

impl ReportConfig {
    /// Reports to mandate's `endpoint` (`https://…/participation`; `http` only on loopback) as
    /// the resource server `client_id` with `client_secret`.
    pub fn new(endpoint: &str, client_id: &str, client_secret: &str) -> Self {
        let node = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        let node: String = node
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || ".-_".contains(*c))
            .take(48)
            .collect();
        Self {
            endpoint: endpoint.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            kind: "sdk",
            instance: format!("{node}-{}", std::process::id()),
            node,
            every: DEFAULT_REPORT_EVERY,
        }
    }
}

/// Sends reports in the background until dropped.
#[derive(Debug)]
pub struct Reporter {
    task: tokio::task::AbortHandle,
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One report for `verifiers`: their audiences, the first one's revocation mode and view age.
fn body(verifiers: &[Verifier], config: &ReportConfig) -> serde_json::Value {
    let mut audiences: Vec<String> = Vec::new();
    for verifier in verifiers {
        if !audiences.iter().any(|a| a == verifier.audience()) {
            audiences.push(verifier.audience().to_owned());
        }
    }
    let first = verifiers.first();
    let mode = first.map_or("none", Verifier::revocation_mode);
    let lag = first
        .and_then(Verifier::revocation_view_age)
        .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
    json!({
        "instance": config.instance,
        "kind": config.kind,
        "mode": mode,
        "audiences": audiences,
        "node": config.node,
        "version": env!("CARGO_PKG_VERSION"),
        "lag_ms": lag,
    })
}

async fn send(
    client: &reqwest::Client,
    url: &Url,
    config: &ReportConfig,
    verifiers: &[Verifier],
) -> Result<(), String> {
    let encode =
        |s: &str| -> String { url::form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let response = client
        .post(url.clone())
        .basic_auth(
            encode(&config.client_id),
            Some(encode(&config.client_secret)),
        )
        .json(&body(verifiers, config))
        .timeout(REPORT_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    match response.status().as_u16() {
        200 => Ok(()),
        status => Err(format!("mandate answered {status}")),
    }
}

impl Reporter {
    /// Sends one report now, then one every `config.every`, for `verifiers` (which should share
    /// one revocation source, as a gateway's do). Fails only on an unacceptable endpoint URL;
    /// a report mandate refuses is logged and retried at the next interval.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn spawn(verifiers: &[&Verifier], config: ReportConfig) -> Result<Self, VerifyError> {
        let url = crate::keys::checked_url(&config.endpoint)
            .map_err(|m| VerifyError::Discovery(format!("participation endpoint: {m}")))?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mandate-verify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VerifyError::Discovery(format!("participation: HTTP client: {e}")))?;
        let verifiers: Vec<Verifier> = verifiers.iter().map(|v| (*v).clone()).collect();
        let task = tokio::spawn(async move {
            loop {
                if let Err(error) = send(&client, &url, &config, &verifiers).await {
                    tracing::warn!(%error, "participation report not accepted");
                }
                tokio::time::sleep(config.every).await;
            }
        });
        Ok(Self {
            task: task.abort_handle(),
        })
    }
}
