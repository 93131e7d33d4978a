//! The operator's contract (DESIGN.md section 10): one typed tree, read from one TOML file with
//! `MANDATE__…` environment overrides, checked as a whole before anything starts.
//!
//! `config/mandate.toml` at the top of the repository is the annotated reference: every key below
//! is there with its default.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, IssuerAlias, ScopeSet, SecretHash,
    Subject,
};
use mandate_store::UpstreamId;
use mandate_token::{Algorithm, SigningAlgorithm};
use serde::{Deserialize, Deserializer};
use url::Url;

pub use mandate_core::grants::{Acceptance, IdJagResourceServer as IdJagResourceServerSettings};

/// The environment prefix of configuration overrides: `MANDATE__ISSUER`,
/// `MANDATE__TOKENS__MAX_CHAIN_DEPTH`. Other `MANDATE_…` variables are not configuration.
pub const ENV_PREFIX: &str = "MANDATE__";

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `iss` of every token and the metadata issuer; endpoints live under it.
    #[serde(default = "defaults::issuer")]
    pub issuer: String,
    /// The public listener (token, discovery, JWKS, health).
    #[serde(default = "defaults::listen")]
    pub listen: SocketAddr,
    /// The admin listener; never served on the public one.
    #[serde(default = "defaults::admin_listen")]
    pub admin_listen: SocketAddr,
    /// Where state lives.
    #[serde(default)]
    pub store: StoreSettings,
    /// mandate's signing keys.
    #[serde(default)]
    pub signing: SigningSettings,
    /// Token lifetimes and chain bounds.
    #[serde(default)]
    pub tokens: TokenSettings,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitSettings,
    /// Admin API credentials.
    #[serde(default)]
    pub admin: AdminSettings,
    /// Identity providers whose tokens mandate accepts.
    #[serde(default)]
    pub trusted_issuers: Vec<TrustedIssuerSettings>,
    /// Clients seeded into an empty store.
    #[serde(default)]
    pub clients: Vec<ClientSettings>,
    /// Policy rows seeded into an empty store.
    #[serde(default)]
    pub policies: Vec<PolicySettings>,
    /// Stored consent grants seeded into an empty store.
    #[serde(default)]
    pub consents: Vec<ConsentSettings>,
    /// Cross-app access (ID-JAG), IdP half.
    #[serde(default)]
    pub id_jag: IdJagSettings,
    /// Participation gates seeded into a store that never held any.
    #[serde(default)]
    pub participation_gates: Vec<GateSettings>,
    /// Agent lifecycle policy.
    #[serde(default)]
    pub lifecycle: LifecycleSettings,
    /// DPoP at the token endpoint.
    #[serde(default)]
    pub dpop: DpopConfig,
    /// How log lines are written.
    #[serde(default)]
    pub log: LogSettings,
    /// Native TLS on both listeners.
    #[serde(default)]
    pub tls: TlsSettings,
    /// OTLP trace export (the `otlp` build feature).
    #[serde(default)]
    pub otel: OtelSettings,
    /// The tamper-evident journal of the ledger (docs/EVIDENCE.md).
    #[serde(default)]
    pub journal: JournalSettings,
}

/// `[otel]` (docs/OPERATIONS.md "Traces"): the request span and the exchange's step spans,
/// exported over OTLP/HTTP (protobuf) to a collector. Off unless `endpoint` is given; a build
/// without the `otlp` feature refuses an endpoint rather than ignore it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtelSettings {
    /// The collector's OTLP/HTTP address, `http(s)://host:4318`: spans are posted to its
    /// `/v1/traces`, or to the URL as given when it has a path.
    pub endpoint: Option<url::Url>,
    /// The `service.name` resource attribute. Default `mandate`.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0. A request that continues a caller's trace
    /// (`propagate`) follows the caller's sampling decision instead. Default 1.0.
    pub sample_ratio: f64,
    /// How long one export request may take, in milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// Continue the trace of an incoming W3C `traceparent` header (the request span becomes its
    /// child). Off by default: a caller could otherwise pick trace ids and sampling.
    pub propagate: bool,
}

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: "mandate".into(),
            sample_ratio: 1.0,
            timeout_ms: 10_000,
            propagate: false,
        }
    }
}

impl OtelSettings {
    /// Where spans are posted: the endpoint's `/v1/traces`, or the endpoint itself when it names
    /// a path (a collector behind a prefix).
    pub fn traces_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_ref()?;
        Some(if endpoint.path() == "/" {
            format!("{}v1/traces", endpoint.as_str())
        } else {
            endpoint.to_string()
        })
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(endpoint) = &self.endpoint {
            if !cfg!(feature = "otlp") {
                return Err((
                    "endpoint",
                    "this build has no OTLP export: build with `--features otlp`, or remove [otel] endpoint".into(),
                ));
            }
            if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
                return Err(("endpoint", "must be an http:// or https:// URL".into()));
            }
            if !endpoint.username().is_empty() || endpoint.password().is_some() {
                return Err((
                    "endpoint",
                    "must not carry credentials (they would end up in logs)".into(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(("sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return Err(("timeout_ms", "must be between 1 and 60000".into()));
        }
        if self.service_name.trim().is_empty() {
            return Err(("service_name", "must not be empty".into()));
        }
        Ok(())
    }
}

/// `[tls]` (docs/OPERATIONS.md "TLS"): both listeners serve HTTPS with this certificate when
/// both files are given; SIGHUP reloads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The certificate chain, PEM, leaf first.
    #[serde(deserialize_with = "optional_path")]
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "optional_path")]
    pub key_file: Option<PathBuf>,
}

/// `[log]` (docs/OPERATIONS.md "Logs"). Which lines are written is `MANDATE_LOG` (an
/// `EnvFilter`, default `info`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `text` (default: one human-readable line per event) or `json` (one JSON object per line,
    /// for a log collector).
    pub format: LogFormat,
}

/// A log line's format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields`, and the spans.
    Json,
}

/// `[dpop]` (docs/DPOP.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpopConfig {
    /// Require the server's nonce in every proof (RFC 9449 §8): a proof without the current
    /// one is answered `use_dpop_nonce` with a `DPoP-Nonce` header; every token response carries
    /// it. Nonces change every five minutes and are the same on every node sharing the
    /// chain-id key. Default false.
    pub require_nonce: bool,
}

/// `[lifecycle]`: what mandate does by itself about agents (docs/GOVERNANCE.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// Suspend active agents unused for this many days (last authentication or exchange, or,
    /// never used, registration), checked hourly by every node; 0 (the default) never does.
    pub suspend_unused_agents_after_days: u32,
}

mod defaults {
    use std::net::SocketAddr;

    pub fn issuer() -> String {
        "http://127.0.0.1:8080".into()
    }
    pub fn listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8080))
    }
    pub fn admin_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 8081))
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `memory` (one process) or `redis`.
    #[serde(default)]
    pub kind: StoreKind,
    /// Redis URL, or a list of node URLs for Redis Cluster.
    #[serde(default)]
    pub url: Option<StoreUrl>,
    /// The memory store's ledger keeps at most this many hops, forgetting the oldest first.
    #[serde(default = "default_memory_max_hops")]
    pub memory_max_hops: usize,
}

fn default_memory_max_hops() -> usize {
    mandate_store::DEFAULT_MEMORY_MAX_HOPS
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            kind: StoreKind::default(),
            url: None,
            memory_max_hops: default_memory_max_hops(),
        }
    }
}

/// `[journal]`: how the journal is sealed, checkpointed and bounded (docs/EVIDENCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalSettings {
    /// How often each node seals what was appended (Redis; the memory journal seals at once).
    pub seal_interval_ms: u64,
    /// How often a signed checkpoint of the head is stored and logged, when the head moved.
    pub checkpoint_interval_secs: u64,
    /// The memory store's journal keeps at most this many entries, forgetting the oldest first.
    pub memory_max_entries: usize,
}

impl Default for JournalSettings {
    fn default() -> Self {
        Self {
            seal_interval_ms: 200,
            checkpoint_interval_secs: 60,
            memory_max_entries: 100_000,
        }
    }
}

/// Which store backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In-process memory: one node only.
    #[default]
    Memory,
    /// Redis (or Redis Cluster): any number of nodes.
    Redis,
}

/// One Redis URL or the node URLs of a cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StoreUrl {
    /// A single Redis server.
    One(String),
    /// Redis Cluster nodes.
    Cluster(Vec<String>),
}

/// `[signing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSettings {
    /// `ES256` or `EdDSA`.
    #[serde(default = "default_algorithm")]
    pub algorithm: SigningAlgorithm,
    /// PKCS#8 PEM of the key that signs; absent means an ephemeral key (development only).
    #[serde(default, deserialize_with = "optional_path")]
    pub key_file: Option<PathBuf>,
    /// The next key: published, not yet signing.
    #[serde(default, deserialize_with = "optional_path")]
    pub next_key_file: Option<PathBuf>,
    /// Retired keys: published until their tokens have expired.
    #[serde(default)]
    pub retired_key_files: Vec<PathBuf>,
}

fn default_algorithm() -> SigningAlgorithm {
    SigningAlgorithm::Es256
}

impl Default for SigningSettings {
    fn default() -> Self {
        Self {
            algorithm: default_algorithm(),
            key_file: None,
            next_key_file: None,
            retired_key_files: Vec::new(),
        }
    }
}

/// `[tokens]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenSettings {
    /// Lifetime of issued access tokens.
    pub access_token_ttl_secs: u32,
    /// Lifetime of issued ID-JAGs.
    pub id_jag_ttl_secs: u32,
    /// The most hops a chain may have.
    pub max_chain_depth: u32,
    /// Allowed clock difference for `exp`, `nbf`, `iat`.
    pub clock_skew_secs: u32,
    /// How long hop records are kept.
    pub ledger_retention_secs: u64,
    /// The secret for deriving chain ids; the same on every node.
    #[serde(deserialize_with = "optional_path")]
    pub chain_id_key_file: Option<PathBuf>,
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 300,
            id_jag_ttl_secs: 300,
            max_chain_depth: 5,
            clock_skew_secs: 60,
            ledger_retention_secs: 2_592_000,
            chain_id_key_file: None,
        }
    }
}

/// The shortest ledger retention: twice the longest access-token lifetime (86,400 s), so that a
/// hop's record outlives every token derived from it.
const MIN_LEDGER_RETENTION_SECS: u64 = 172_800;

/// The largest `limits.max_header_bytes` accepted: actix-http's parser refuses request heads of
/// 128 KiB or more by itself, so a larger setting could not be honoured.
pub const MAX_HEADER_BYTES_CEILING: usize = 65_536;

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Per-client requests per second (bursts of the same size) at `/token`, `/revoke`,
    /// `/introspect` and `/revocations`, charged to the authenticated client and shared by every
    /// node through the store; 0 disables the limit. Over it: 429 `slow_down` with `Retry-After`.
    pub token_requests_per_client_per_sec: u32,
    /// Largest accepted request body on either listener (forms and admin JSON): 413 beyond it.
    pub max_body_bytes: usize,
    /// Largest accepted request head (request line and header lines) on either listener: 431
    /// beyond it. At most [`MAX_HEADER_BYTES_CEILING`]: actix-http refuses larger heads itself.
    pub max_header_bytes: usize,
    /// Time allowed to receive a request's head (408 and the connection closed after it), and
    /// then again to receive its body (408) and answer it (503 when the store is stuck).
    pub request_timeout_secs: u64,
    /// Cap of the audit stream.
    pub audit_stream_max: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            token_requests_per_client_per_sec: 100,
            max_body_bytes: 65_536,
            max_header_bytes: 16_384,
            request_timeout_secs: 10,
            audit_stream_max: 1_000_000,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Named admin credentials.
    #[serde(default)]
    pub credentials: Vec<AdminCredentialSettings>,
}

/// `[[admin.credentials]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminCredentialSettings {
    /// Recorded in the audit stream for every action taken with it.
    pub name: String,
    /// What it may do.
    pub role: AdminRole,
    /// `sha256:` of the secret.
    pub secret_hash: SecretHash,
}

/// Admin roles. They nest: `manage` ⊇ `revoke` ⊇ `read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminRole {
    /// Look at everything.
    Read,
    /// Also revoke chains, hops, subjects and suspend agents.
    Revoke,
    /// Also change agents, policies and consents.
    Manage,
}

impl AdminRole {
    /// Whether this role may do what `needed` allows.
    pub fn allows(self, needed: AdminRole) -> bool {
        self >= needed
    }
}

impl fmt::Display for AdminRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminRole::Read => "read",
            AdminRole::Revoke => "revoke",
            AdminRole::Manage => "manage",
        })
    }
}

/// `[[trusted_issuers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerSettings {
    /// The issuer identifier; tokens must carry it as `iss`.
    pub issuer: String,
    /// Namespaces its subjects: `alias|sub`.
    pub alias: IssuerAlias,
    /// Use `sub` unprefixed (at most one issuer).
    #[serde(default)]
    pub subject_as_is: bool,
    /// A JWKS file.
    #[serde(default, deserialize_with = "optional_path")]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (https only, except loopback).
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// An inline JWKS (a TOML table with a `keys` array).
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// What this issuer signs with; nothing else is accepted.
    #[serde(default = "default_issuer_algorithms")]
    pub algorithms: Vec<String>,
    /// What its tokens may be used as.
    #[serde(default = "default_acceptance")]
    pub accept: Vec<Acceptance>,
    /// Upper bound on a token's age and lifetime.
    #[serde(default = "default_max_token_age")]
    pub max_token_age_secs: u32,
    /// Let the same client re-present an ID-JAG until it expires (else single use).
    #[serde(default)]
    pub id_jag_reuse: bool,
    /// This issuer may push Shared Signals (RFC 8935) to `/ssf/receive/<alias>`, authenticating
    /// with this bearer token, stored as its hash. Unset: it may not.
    #[serde(default)]
    pub ssf_push_token_hash: Option<SecretHash>,
    /// This issuer's RFC 8936 poll endpoint: mandate fetches its SETs from there (https only,
    /// except loopback). Unset: mandate does not poll it.
    #[serde(default)]
    pub ssf_poll_url: Option<String>,
    /// The bearer token mandate polls with, read from this file (required with `ssf_poll_url`).
    #[serde(default, deserialize_with = "optional_path")]
    pub ssf_poll_token_file: Option<PathBuf>,
}

fn default_issuer_algorithms() -> Vec<String> {
    vec!["RS256".into()]
}

fn default_acceptance() -> Vec<Acceptance> {
    vec![Acceptance::IdToken, Acceptance::Jwt]
}

fn default_max_token_age() -> u32 {
    3600
}

/// `[[clients]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// `[a-z0-9][a-z0-9._-]{0,63}`.
    pub client_id: ClientId,
    /// `agent` or `resource_server`.
    pub kind: ClientKind,
    /// Who answers for it (at least one).
    pub owners: Vec<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// No authentication after this instant.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Lifecycle state.
    #[serde(default = "default_state")]
    pub state: ClientState,
    /// How it authenticates.
    pub auth_method: AuthMethod,
    /// For `private_key_jwt`: a JWKS file.
    #[serde(default, deserialize_with = "optional_path")]
    pub jwks_file: Option<PathBuf>,
    /// For `private_key_jwt`: an inline JWKS.
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
    /// For the secret methods.
    #[serde(default)]
    pub secret_hash: Option<SecretHash>,
    /// How upstream issuers know this agent.
    #[serde(default)]
    pub upstream_ids: Vec<UpstreamId>,
    /// For resource servers: the audiences they own.
    #[serde(default)]
    pub audiences: Vec<Audience>,
    /// `required`: an agent's token requests, or the tokens for a resource server's audiences,
    /// must be DPoP-bound. Default `allowed`.
    #[serde(default)]
    pub dpop: mandate_model::DpopPolicy,
}

impl PolicySettings {
    /// The row this entry stands for.
    pub fn row(&self) -> mandate_chain::PolicyRow {
        mandate_chain::PolicyRow {
            actor: self.actor.clone(),
            audience: self.audience.clone(),
            scopes: self.scopes.clone(),
            max_depth: self.max_depth,
        }
    }
}

fn default_state() -> ClientState {
    ClientState::Active
}

/// `[[policies]]`: deny by default; every hop needs a row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// The acting agent.
    pub actor: ClientId,
    /// An app URI or `agent:<id>`.
    pub audience: Audience,
    /// The scopes this row allows.
    pub scopes: ScopeSet,
    /// At most this many hops on any path through this row.
    #[serde(default)]
    pub max_depth: Option<u32>,
}

/// `[[participation_gates]]`: what an app audience's verifiers must do before tokens are issued
/// for it (docs/GOVERNANCE.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSettings {
    /// The app audience.
    pub audience: Audience,
    /// `follows_revocations`, `verifies` or `none`.
    pub require: mandate_store::Requirement,
    /// Only audit what would be refused.
    #[serde(default)]
    pub dry_run: bool,
}

impl GateSettings {
    /// The gate to set.
    pub fn gate(&self) -> mandate_core::NewGate {
        mandate_core::NewGate {
            audience: self.audience.to_string(),
            require: self.require,
            dry_run: self.dry_run,
        }
    }
}

/// `[[consents]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentSettings {
    /// The user.
    pub subject: Subject,
    /// The agent the user consented to.
    pub actor: ClientId,
    /// Where.
    pub audience: Audience,
    /// What.
    pub scopes: ScopeSet,
    /// Until when.
    pub expires_at: DateTime<Utc>,
}

/// `[id_jag]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdJagSettings {
    /// Resource authorization servers this mandate issues ID-JAGs for.
    #[serde(default)]
    pub resource_servers: Vec<IdJagResourceServerSettings>,
}

/// Empty strings stand for "not set" (`next_key_file = ""` in the reference file).
fn optional_path<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<PathBuf>, D::Error> {
    let value: Option<String> = Option::deserialize(deserializer)?;
    Ok(value.filter(|s| !s.is_empty()).map(PathBuf::from))
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// `mandate serve` without `--config`: built-in development settings.
    Development,
    /// `--config FILE`.
    File(PathBuf),
    /// Built in code (tests, embedding).
    Programmatic,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Development => f.write_str("development defaults"),
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Programmatic => f.write_str("programmatic settings"),
        }
    }
}

/// Configuration that passed every check for its source: what the server is built from and runs
/// on. The only way to one is [`TryFrom`] a raw [`Settings`] (the file's schema) and the
/// [`ConfigSource`] it came from, so no part of the server sees settings that were not checked,
/// and what the checks parse (the policy rows) is kept rather than parsed again.
#[derive(Debug, Clone)]
pub struct ValidatedSettings {
    settings: Settings,
    source: ConfigSource,
    policy_rows: Vec<mandate_chain::PolicyRow>,
}

impl TryFrom<(Settings, ConfigSource)> for ValidatedSettings {
    type Error = ConfigError;

    fn try_from((settings, source): (Settings, ConfigSource)) -> Result<Self, ConfigError> {
        settings.check(&source)?;
        let policy_rows = settings.policies.iter().map(PolicySettings::row).collect();
        Ok(Self {
            settings,
            source,
            policy_rows,
        })
    }
}

impl ValidatedSettings {
    /// Where the settings came from (which unsafe combinations were refused depends on it).
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The `[[policies]]` rows, checked.
    pub fn policy_rows(&self) -> &[mandate_chain::PolicyRow] {
        &self.policy_rows
    }
}

/// Read-only access to the checked values: a validated configuration cannot be changed into one
/// that was not checked.
impl std::ops::Deref for ValidatedSettings {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// Why the configuration cannot be used. Each message names the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed, or a key is unknown or of the wrong type.
    #[error("configuration error: {0}")]
    Load(String),
    /// A value is invalid, or values contradict each other.
    #[error("configuration error in {source_name}: {key}: {message}")]
    Invalid {
        /// The file (or "development defaults").
        source_name: String,
        /// The key, e.g. `clients[2].client_id`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The combination is unsafe outside development (DESIGN.md section 10).
    #[error("configuration refused in {source_name}: {message}")]
    Unsafe {
        /// The file.
        source_name: String,
        /// Why it is unsafe and what to do.
        message: String,
    },
}

/// The settings that are lists of tables, as `SECTION__KEY` below the prefix.
const TABLE_LISTS: [&str; 6] = [
    "TRUSTED_ISSUERS",
    "CLIENTS",
    "POLICIES",
    "CONSENTS",
    "ADMIN__CREDENTIALS",
    "ID_JAG__RESOURCE_SERVERS",
];

/// Refuses `MANDATE__…` variables that are not a scalar key: more than `SECTION__KEY` deep, or
/// holding a table or an array of tables (an array of scalars, such as a cluster's URLs, is a
/// value). The environment may tune a value; lists (admin credentials,
/// clients, trusted issuers, policies) come from the file only (DESIGN.md section 10), or a
/// variable could add a `manage` credential or an issuer with keys of its own choosing. Values
/// are read the way the environment provider reads them, so what passes here is what it takes.
///
/// figment matches the prefix and the keys without regard to case (`mandate__clients` is taken
/// as `MANDATE__CLIENTS`), so this check does too. The lists of tables are refused by name as
/// well as by value: `[]` holds no table, and would empty the list.
fn only_scalar_overrides(
    variables: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in variables {
        let Some(key) = name
            .get(..ENV_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
            .and_then(|_| name.get(ENV_PREFIX.len()..))
        else {
            continue;
        };
        let key = key.to_ascii_uppercase();
        let refuse = |why: &str| {
            Err(ConfigError::Load(format!(
                "environment variable {name}: {why}; lists and tables can only be set in the configuration file"
            )))
        };
        if key.split("__").count() > 2 {
            return refuse("only MANDATE__<KEY> and MANDATE__<SECTION>__<KEY> override the file");
        }
        if TABLE_LISTS.contains(&key.as_str()) {
            return refuse("this setting is a list of tables");
        }
        use figment::value::Value;
        let holds_a_table = |values: &[Value]| {
            values
                .iter()
                .any(|v| matches!(v, Value::Dict(..) | Value::Array(..)))
        };
        match value.parse::<Value>() {
            Ok(Value::Dict(..)) => return refuse("a table is not a scalar value"),
            // A list of scalars (a cluster's URLs) is a value; a list of tables is a list.
            Ok(Value::Array(_, values)) if holds_a_table(&values) => {
                return refuse("an array of tables is not a scalar value");
            }
            _ => {}
        }
    }
    Ok(())
}

impl Settings {
    /// Reads `path` and the `MANDATE__…` environment overrides (scalars only). Nothing else is
    /// read.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::Load(format!(
                "cannot read configuration file {}",
                path.display()
            )));
        }
        only_scalar_overrides(std::env::vars())?;
        Figment::new()
            .merge(Toml::file_exact(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"))
            .extract()
            .map_err(|e| {
                ConfigError::Load(
                    e.into_iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            })
    }

    /// Parses TOML text (no environment): for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Figment::new()
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// The token endpoint URL.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// Checks every value and their combinations. `source` decides whether the unsafe
    /// combinations of DESIGN.md section 10 are refused (they are for files).
    fn check(&self, source: &ConfigSource) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            message,
        };

        check_issuer_url(&self.issuer).map_err(|m| invalid("issuer".into(), m))?;
        if self.issuer.ends_with('/') {
            return Err(invalid(
                "issuer".into(),
                "must not end with '/' (endpoints are appended to it)".into(),
            ));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(invalid(
                "admin_listen".into(),
                "must differ from listen: the admin API never shares the public listener".into(),
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls".into(),
                "cert_file and key_file go together: give both, or neither for plain HTTP".into(),
            ));
        }
        self.otel
            .check()
            .map_err(|(key, message)| invalid(format!("otel.{key}"), message))?;
        self.validate_store(source)?;
        self.validate_tokens(source)?;

        let mut admin_names = HashSet::new();
        for (i, credential) in self.admin.credentials.iter().enumerate() {
            if credential.name.trim().is_empty() || !admin_names.insert(credential.name.as_str()) {
                return Err(invalid(
                    format!("admin.credentials[{i}].name"),
                    "must be non-empty and unique".into(),
                ));
            }
            // The audit stream and the Shared Signals' `initiating_entity` tell an
            // administrator from a client (RFC 7009) or an IdP's signal by these prefixes.
            if ["client:", "ssf:", "system:"]
                .iter()
                .any(|prefix| credential.name.starts_with(prefix))
            {
                return Err(invalid(
                    format!("admin.credentials[{i}].name"),
                    "must not start with `client:`, `ssf:` or `system:`, which name clients, identity providers and mandate itself in the audit stream".into(),
                ));
            }
        }

        let mut aliases = HashSet::new();
        let mut issuers = HashSet::new();
        let mut as_is = 0;
        for (i, ti) in self.trusted_issuers.iter().enumerate() {
            let key = |k: &str| format!("trusted_issuers[{i}].{k}");
            check_issuer_url(&ti.issuer).map_err(|m| invalid(key("issuer"), m))?;
            if ti.issuer == self.issuer {
                return Err(invalid(
                    key("issuer"),
                    "mandate's own issuer cannot be a trusted issuer".into(),
                ));
            }
            if !issuers.insert(ti.issuer.as_str()) {
                return Err(invalid(key("issuer"), "listed twice".into()));
            }
            if !aliases.insert(ti.alias.as_str()) {
                return Err(invalid(
                    key("alias"),
                    format!("'{}' is used twice", ti.alias),
                ));
            }
            if ti.subject_as_is {
                as_is += 1;
                if as_is > 1 {
                    return Err(invalid(
                        key("subject_as_is"),
                        "at most one trusted issuer may use subjects as-is".into(),
                    ));
                }
            }
            let sources = [
                ti.jwks_file.is_some(),
                ti.jwks_uri.is_some(),
                ti.jwks.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(invalid(
                    key("jwks_file"),
                    "exactly one of jwks_file, jwks_uri and jwks is required".into(),
                ));
            }
            if let Some(uri) = &ti.jwks_uri {
                check_issuer_url(uri).map_err(|m| invalid(key("jwks_uri"), m))?;
            }
            if ti.algorithms.is_empty() {
                return Err(invalid(
                    key("algorithms"),
                    "must list at least one algorithm".into(),
                ));
            }
            for alg in &ti.algorithms {
                if Algorithm::from_name(alg).is_none() {
                    return Err(invalid(
                        key("algorithms"),
                        format!("'{alg}' is not accepted (asymmetric algorithms only)"),
                    ));
                }
            }
            if ti.accept.is_empty() {
                return Err(invalid(
                    key("accept"),
                    "must list at least one token kind".into(),
                ));
            }
            if ti.max_token_age_secs == 0 {
                return Err(invalid(
                    key("max_token_age_secs"),
                    "must be positive".into(),
                ));
            }
            if let Some(url) = &ti.ssf_poll_url {
                mandate_fetch::checked_url(url)
                    .map_err(|e| invalid(key("ssf_poll_url"), e.to_string()))?;
            }
            if ti.ssf_poll_url.is_some() != ti.ssf_poll_token_file.is_some() {
                return Err(invalid(
                    key("ssf_poll_token_file"),
                    "ssf_poll_url and ssf_poll_token_file go together".into(),
                ));
            }
        }

        let mut client_ids = HashMap::new();
        for (i, client) in self.clients.iter().enumerate() {
            let key = |k: &str| format!("clients[{i}].{k}");
            if client_ids.insert(&client.client_id, client.kind).is_some() {
                return Err(invalid(
                    key("client_id"),
                    format!("'{}' is registered twice", client.client_id),
                ));
            }
            // The registration rules the admin API applies, from the one place they are written.
            let rule = |field: &str| {
                let key = key(field);
                move |e: crate::agents::AgentError| invalid(key, e.to_string())
            };
            crate::agents::check_owners(&client.owners).map_err(rule("owners"))?;
            crate::agents::check_description(&client.description).map_err(rule("description"))?;
            crate::agents::check_owned_audiences(client.kind, &client.audiences)
                .map_err(rule("audiences"))?;
            let trusted: Vec<&str> = issuers.iter().copied().collect();
            crate::agents::check_upstream_ids(client.kind, &client.upstream_ids, &trusted)
                .map_err(rule("upstream_ids"))?;
            match client.auth_method {
                AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
                    if client.secret_hash.is_none() {
                        return Err(invalid(
                            key("secret_hash"),
                            format!("required for auth_method = \"{}\"", client.auth_method),
                        ));
                    }
                    if client.jwks_file.is_some() || client.jwks.is_some() {
                        return Err(invalid(
                            key("jwks_file"),
                            "keys are only for auth_method = \"private_key_jwt\"".into(),
                        ));
                    }
                }
                AuthMethod::PrivateKeyJwt => {
                    if client.jwks_file.is_some() == client.jwks.is_some() {
                        return Err(invalid(
                            key("jwks_file"),
                            "private_key_jwt needs exactly one of jwks_file and jwks".into(),
                        ));
                    }
                    if client.secret_hash.is_some() {
                        return Err(invalid(
                            key("secret_hash"),
                            "a private_key_jwt client has no secret".into(),
                        ));
                    }
                }
            }
        }
        let is_agent = |id: &ClientId| client_ids.get(id) == Some(&ClientKind::Agent);

        for (i, policy) in self.policies.iter().enumerate() {
            policy
                .row()
                .check(is_agent)
                .map_err(|e| invalid(format!("policies[{i}].{}", e.field()), e.to_string()))?;
        }
        for (i, consent) in self.consents.iter().enumerate() {
            let key = |k: &str| format!("consents[{i}].{k}");
            if !is_agent(&consent.actor) {
                return Err(invalid(
                    key("actor"),
                    format!("'{}' is not a registered agent", consent.actor),
                ));
            }
            if consent
                .subject
                .alias()
                .is_some_and(|a| !aliases.contains(a))
            {
                return Err(invalid(
                    key("subject"),
                    "its alias names no trusted issuer".into(),
                ));
            }
        }
        let mut resource_servers = HashSet::new();
        for (i, ras) in self.id_jag.resource_servers.iter().enumerate() {
            let key = |k: &str| format!("id_jag.resource_servers[{i}].{k}");
            check_issuer_url(&ras.issuer).map_err(|m| invalid(key("issuer"), m))?;
            if !resource_servers.insert(ras.issuer.as_str()) {
                return Err(invalid(key("issuer"), "listed twice".into()));
            }
            if ras.resources.is_empty() || ras.scopes.is_empty() {
                return Err(invalid(
                    key("resources"),
                    "resources and scopes must not be empty".into(),
                ));
            }
            for agent in ras.client_ids.keys() {
                if !is_agent(agent) {
                    return Err(invalid(
                        key("client_ids"),
                        format!("'{agent}' is not a registered agent"),
                    ));
                }
            }
            if ras.resources.iter().any(|r| r.agent().is_some()) {
                return Err(invalid(key("resources"), "resources are app URIs".into()));
            }
        }

        if matches!(source, ConfigSource::File(_)) {
            self.refuse_unsafe(source)?;
        }
        Ok(())
    }

    fn validate_store(&self, source: &ConfigSource) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key: key.into(),
            message,
        };
        if self.store.memory_max_hops == 0 {
            return Err(invalid(
                "store.memory_max_hops",
                "must be at least 1".into(),
            ));
        }
        if self.journal.memory_max_entries == 0 {
            return Err(invalid(
                "journal.memory_max_entries",
                "must be at least 1".into(),
            ));
        }
        if self.journal.seal_interval_ms == 0 || self.journal.seal_interval_ms > 60_000 {
            return Err(invalid(
                "journal.seal_interval_ms",
                "must be between 1 and 60000".into(),
            ));
        }
        if self.journal.checkpoint_interval_secs == 0 {
            return Err(invalid(
                "journal.checkpoint_interval_secs",
                "must be at least 1".into(),
            ));
        }
        match (&self.store.kind, &self.store.url) {
            (StoreKind::Memory, _) => Ok(()),
            (StoreKind::Redis, None) => Err(invalid(
                "store.url",
                "required when store.kind = \"redis\"".into(),
            )),
            (StoreKind::Redis, Some(url)) => {
                let urls: Vec<&String> = match url {
                    StoreUrl::One(u) => vec![u],
                    StoreUrl::Cluster(us) => us.iter().collect(),
                };
                if urls.is_empty() {
                    return Err(invalid("store.url", "lists no node".into()));
                }
                for u in urls {
                    let ok = Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "redis" | "rediss"));
                    if !ok {
                        return Err(invalid(
                            "store.url",
                            format!("'{u}' is not a redis:// or rediss:// URL"),
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    fn validate_tokens(&self, source: &ConfigSource) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            source_name: source.to_string(),
            key: key.into(),
            message: message.into(),
        };
        let t = &self.tokens;
        if t.access_token_ttl_secs == 0 || t.access_token_ttl_secs > 86_400 {
            return Err(invalid(
                "tokens.access_token_ttl_secs",
                "must be between 1 and 86400",
            ));
        }
        if t.id_jag_ttl_secs == 0 || t.id_jag_ttl_secs > 3_600 {
            return Err(invalid(
                "tokens.id_jag_ttl_secs",
                "must be between 1 and 3600",
            ));
        }
        if t.max_chain_depth == 0 || t.max_chain_depth > 32 {
            return Err(invalid(
                "tokens.max_chain_depth",
                "must be between 1 and 32",
            ));
        }
        if i64::from(t.clock_skew_secs) > mandate_revocation::MAX_VERIFIER_CLOCK_SKEW_SECS {
            return Err(invalid("tokens.clock_skew_secs", "must be at most 300"));
        }
        // A hop record must outlive every token it can be the parent of: the Redis ledger
        // expires each record this long after it was written (docs/REDIS.md).
        if t.ledger_retention_secs < MIN_LEDGER_RETENTION_SECS {
            return Err(invalid(
                "tokens.ledger_retention_secs",
                "must be at least 172800 (two days: longer than any token lifetime)",
            ));
        }
        let l = &self.limits;
        if l.max_body_bytes < 1024 {
            return Err(invalid("limits.max_body_bytes", "must be at least 1024"));
        }
        if l.max_header_bytes < 1024 || l.max_header_bytes > MAX_HEADER_BYTES_CEILING {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be between 1024 and 65536",
            ));
        }
        if l.request_timeout_secs == 0 {
            return Err(invalid("limits.request_timeout_secs", "must be positive"));
        }
        Ok(())
    }

    /// DESIGN.md section 10: a shared store or a reachable listener is a deployment, and a
    /// deployment needs persistent keys, admin credentials and an https issuer.
    fn refuse_unsafe(&self, source: &ConfigSource) -> Result<(), ConfigError> {
        let exposed = !self.listen.ip().is_loopback() || !self.admin_listen.ip().is_loopback();
        let shared = self.store.kind == StoreKind::Redis;
        if !exposed && !shared {
            return Ok(());
        }
        let why = if shared {
            "with store.kind = \"redis\""
        } else {
            "with a listener outside loopback"
        };
        let refuse = |message: String| ConfigError::Unsafe {
            source_name: source.to_string(),
            message,
        };
        if self.signing.key_file.is_none() {
            return Err(refuse(format!(
                "{why}, signing.key_file is required (an ephemeral key would differ per node and \
                 restart); create one with `mandate keys generate`"
            )));
        }
        if self.tokens.chain_id_key_file.is_none() {
            return Err(refuse(format!(
                "{why}, tokens.chain_id_key_file is required (chain ids must be the same on every node)"
            )));
        }
        if self.admin.credentials.is_empty() {
            return Err(refuse(format!(
                "{why}, at least one [[admin.credentials]] is required"
            )));
        }
        if !self.issuer.starts_with("https://") {
            return Err(refuse(format!("{why}, the issuer must be an https:// URL")));
        }
        if let Some(ti) = self
            .trusted_issuers
            .iter()
            .find(|ti| !ti.issuer.starts_with("https://"))
        {
            return Err(refuse(format!(
                "{why}, trusted issuer '{}' must be an https:// URL",
                ti.issuer
            )));
        }
        Ok(())
    }
}

/// An issuer (or JWKS) URL: absolute https, or http on loopback; no query, no fragment.
fn check_issuer_url(value: &str) -> Result<(), String> {
    let url = Url::parse(value).map_err(|_| format!("'{value}' is not an absolute URL"))?;
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => mandate_model::is_loopback_url(&url),
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "'{value}' must be https:// (http:// only on loopback)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("'{value}' must have no query or fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_environment_overrides_scalars_only() {
        // Scalars of every kind pass, and variables without the prefix are not looked at.
        assert!(only_scalar_overrides(vars(&[
            ("MANDATE__ISSUER", "https://id.example.com"),
            ("MANDATE__TOKENS__ACCESS_TOKEN_TTL_SECS", "600"),
            ("MANDATE__LIMITS__RATE_LIMIT", "false"),
            ("MANDATE__STORE__URL", "[\"redis://a\", \"redis://b\"]"),
            ("mandate__signing__retired_key_files", "[]"),
            ("MANDATE_ADMIN_SECRET", "[not configuration]"),
            ("PATH", "/usr/bin"),
        ]))
        .is_ok());
        for refused in [
            ("MANDATE__ADMIN__CREDENTIALS", "[{name=\"x\"}]"),
            ("MANDATE__ADMIN", "{credentials=[]}"),
            ("MANDATE__CLIENTS__0__CLIENT_ID", "x"),
            // An empty list holds no table but would empty the file's.
            ("MANDATE__CLIENTS", "[]"),
            ("MANDATE__ADMIN__CREDENTIALS", "[]"),
            ("MANDATE__ID_JAG__RESOURCE_SERVERS", "[]"),
            // figment takes the prefix and keys in any case.
            ("mandate__admin__credentials", "[{name=\"x\"}]"),
            ("Mandate__Trusted_Issuers", "[]"),
        ] {
            let error = only_scalar_overrides(vars(&[refused])).unwrap_err();
            assert!(error.to_string().contains(refused.0), "{error}");
        }
    }

    #[test]
    fn only_checked_settings_become_validated_and_keep_their_rows() {
        let raw = Settings::from_toml(
            r#"
            [[clients]]
            client_id = "assistant"
            kind = "agent"
            owners = ["alice@example.com"]
            auth_method = "client_secret_basic"
            secret_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

            [[policies]]
            actor = "assistant"
            audience = "https://calendar.example.com"
            scopes = ["calendar.read"]
            "#,
        )
        .unwrap();
        let valid = ValidatedSettings::try_from((raw.clone(), ConfigSource::Programmatic)).unwrap();
        assert_eq!(valid.source(), &ConfigSource::Programmatic);
        assert_eq!(valid.policy_rows(), [raw.policies[0].row()]);
        assert_eq!(valid.issuer, raw.issuer);

        let mut widened = raw;
        widened.policies[0].actor = ClientId::try_from("nobody".to_owned()).unwrap();
        let error = ValidatedSettings::try_from((widened, ConfigSource::Programmatic)).unwrap_err();
        assert!(error.to_string().contains("policies[0].actor"), "{error}");
    }
}
