//! Everything a running server holds, built once from validated [`Settings`]. Files named in the
//! configuration (keys, JWKS) are read here, and a failure names the key that pointed at them.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use mandate_model::{ClientKind, Clock, SecretHash, SystemClock};
use mandate_store::{
    Client, ClientRegistry, MemoryClientRegistry, MemoryRateLimiter, MemoryReplayCache,
    RateDecision, RateLimiter, ReplayCache,
};
use mandate_token::{Algorithm, KeySet, PublicKey, SigningKey, VerifyingKeySet};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::chain_id::ChainIdKey;
use crate::client_auth::{ClientAuthenticator, PresentedCredentials};
use crate::config::{
    AdminRole, ConfigError, ConfigSource, ConsentSettings, Settings, StoreKind, StoreUrl,
    TrustedIssuerSettings,
};
use crate::error::{ErrorCode, OAuthError};
use crate::jwks_remote::{FetchLimits, RemoteJwks};
use mandate_chain::{ConsentGrant, ConsentStore, Ledger, Policy, PolicyRow, PolicyStore};
use mandate_revocation::{MemoryRevocations, RevocationStore};
use mandate_store::{
    MemoryConsentStore, MemoryLedger, MemoryPolicyStore, RedisClientRegistry, RedisConsentStore,
    RedisLedger, RedisPolicyStore, RedisRateLimiter, RedisReplayCache,
};

/// A trusted issuer with its keys: loaded from a file or inline, or fetched from `jwks_uri`.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Its configuration.
    pub settings: TrustedIssuerSettings,
    /// Its keys, when they come from a file or inline.
    pub keys: Option<VerifyingKeySet>,
    /// Its keys, when they come from `jwks_uri`.
    pub remote: Option<RemoteJwks>,
}

impl TrustedIssuer {
    /// The algorithms this issuer's tokens may use.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.settings
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_name(a))
            .collect()
    }
}

/// A named admin credential.
#[derive(Debug, Clone)]
pub struct AdminCredential {
    /// Its name, recorded with every action.
    pub name: String,
    /// Its role.
    pub role: AdminRole,
    /// The hash of its secret.
    pub secret_hash: SecretHash,
}

/// The shared state of both listeners.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The validated configuration.
    pub settings: Arc<Settings>,
    /// Where it came from.
    pub source: ConfigSource,
    /// mandate's keys: signing key, published set and JWKS, swapped whole on reload.
    pub keys: KeyRing,
    /// The client registry.
    pub clients: Arc<dyn ClientRegistry>,
    /// Per-client request budgets.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// Single-use identifiers (ID-JAG `jti`s; client assertions go through the authenticator).
    pub replay: Arc<dyn ReplayCache>,
    /// Client authentication.
    pub authenticator: ClientAuthenticator,
    /// Admin credentials.
    pub admin_credentials: Arc<Vec<AdminCredential>>,
    /// Trusted issuers.
    pub trusted_issuers: Arc<Vec<Arc<TrustedIssuer>>>,
    /// The hop ledger.
    pub ledger: Arc<dyn Ledger>,
    /// Stored consent grants.
    pub consents: Arc<dyn ConsentStore>,
    /// The policy rows, read from the store on each use (admins change them at run time).
    pub policies: Arc<dyn PolicyStore>,
    /// Derives chain ids.
    pub chain_key: Arc<ChainIdKey>,
    /// Development mode's demo identity provider key, when it runs.
    pub demo_idp: Option<Arc<SigningKey>>,
    /// The revocation list.
    pub revocations: Arc<dyn RevocationStore>,
    /// A test seam between recording a hop and the second revocation check.
    pub exchange_pause: Option<Arc<dyn ExchangePause>>,
    /// This node's name in heartbeats.
    pub node_id: String,
    /// The audit stream.
    pub audit: Arc<dyn crate::audit::AuditLog>,
    /// The node's revocation-feed fan-out (`GET /revocations`).
    pub feed_hubs: Arc<crate::feed::FeedHubs>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// The RFC 8414 document, built once.
    pub discovery: Arc<Value>,
    /// Revocation at every grain (mandate-core).
    pub revocation: mandate_core::RevocationService,
    /// Consent grants as administrators manage them (mandate-core).
    pub consent_grants: mandate_core::ConsentService,
    /// The agent registry and lifecycle (mandate-core).
    pub agents: mandate_core::AgentService,
    /// The policy rows as administrators change and question them (mandate-core).
    pub policy_rows: mandate_core::PolicyService,
}

/// Optional replacements for what [`AppState::build`] would otherwise create.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// The clock (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
    /// Serve the development demo identity provider, signing with this key.
    pub demo_idp: Option<Arc<SigningKey>>,
    /// Called after an exchange has recorded its hop and before the second revocation check
    /// (tests use it to land a revocation exactly there).
    pub exchange_pause: Option<Arc<dyn ExchangePause>>,
}

/// A pause point inside the exchange, for tests of the revocation race (DESIGN.md section 6).
#[async_trait::async_trait]
pub trait ExchangePause: Send + Sync + std::fmt::Debug {
    /// Runs after `hop` is recorded and before the exchange checks the revocation list again.
    async fn after_hop_recorded(&self, state: &AppState, hop: &mandate_chain::HopRecord);
}

impl AppState {
    /// Validates `settings` for `source`, loads keys and seeds the in-memory store.
    pub async fn build(
        settings: Settings,
        source: ConfigSource,
        options: BuildOptions,
    ) -> Result<Self, ConfigError> {
        settings.validate(&source)?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            message,
        };
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));

        let keys = load_keys(&settings, &invalid)?;

        // The configured clients, built (their key files read) before the store is reached, so
        // that a mistake in the file is reported as such; they seed the store further down.
        let mut configured_clients = Vec::with_capacity(settings.clients.len());
        for (i, client) in settings.clients.iter().enumerate() {
            let (jwks, keys) = match (&client.jwks_file, &client.jwks) {
                (Some(path), _) => {
                    let key = format!("clients[{i}].jwks_file");
                    let text = read_text(path, &key, &invalid)?;
                    let document: Value = serde_json::from_str(&text).map_err(|e| {
                        invalid(key.clone(), format!("{}: not JSON: {e}", path.display()))
                    })?;
                    let keys = VerifyingKeySet::from_jwks(&document, &Algorithm::ALL)
                        .map_err(|e| invalid(key, e.to_string()))?;
                    (Some(document), Some(keys))
                }
                (None, Some(document)) => {
                    let keys = VerifyingKeySet::from_jwks(document, &Algorithm::ALL)
                        .map_err(|e| invalid(format!("clients[{i}].jwks"), e.to_string()))?;
                    (Some(document.clone()), Some(keys))
                }
                (None, None) => (None, None),
            };
            configured_clients.push(Client {
                id: client.client_id.clone(),
                kind: client.kind,
                // Trimmed as the admin API stores them (validation has passed them already).
                owners: crate::agents::check_owners(&client.owners)
                    .map_err(|e| invalid(format!("clients[{i}].owners"), e.to_string()))?,
                description: client.description.clone(),
                state: client.state,
                expires_at: client.expires_at,
                auth_method: client.auth_method,
                secret_hash: client.secret_hash.clone(),
                keys,
                jwks,
                upstream_ids: client.upstream_ids.clone(),
                audiences: client.audiences.clone(),
                previous_secret: None,
                secret_rotated_at: None,
                created_at: Some(clock.now()),
                created_by: Some(crate::agents::CREATED_BY_CONFIG.into()),
                updated_at: Some(clock.now()),
                updated_by: Some(crate::agents::CREATED_BY_CONFIG.into()),
                revision: 0,
            });
        }

        let mut trusted_issuers = Vec::with_capacity(settings.trusted_issuers.len());
        for (i, issuer) in settings.trusted_issuers.iter().enumerate() {
            let algorithms: Vec<Algorithm> = issuer
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::from_name(a))
                .collect();
            let keys = match (&issuer.jwks_file, &issuer.jwks) {
                (Some(path), _) => {
                    let key = format!("trusted_issuers[{i}].jwks_file");
                    let text = read_text(path, &key, &invalid)?;
                    Some(
                        VerifyingKeySet::from_jwks_json(&text, &algorithms)
                            .map_err(|e| invalid(key, e.to_string()))?,
                    )
                }
                (None, Some(document)) => Some(
                    VerifyingKeySet::from_jwks(document, &algorithms).map_err(|e| {
                        invalid(format!("trusted_issuers[{i}].jwks"), e.to_string())
                    })?,
                ),
                (None, None) => None,
            };
            let remote = match &issuer.jwks_uri {
                Some(uri) => Some(
                    RemoteJwks::new(uri, algorithms.clone(), FetchLimits::default()).map_err(
                        |e| invalid(format!("trusted_issuers[{i}].jwks_uri"), e.to_string()),
                    )?,
                ),
                None => None,
            };
            trusted_issuers.push(Arc::new(TrustedIssuer {
                settings: issuer.clone(),
                keys,
                remote,
            }));
        }

        let admin_credentials = settings
            .admin
            .credentials
            .iter()
            .map(|c| AdminCredential {
                name: c.name.clone(),
                role: c.role,
                secret_hash: c.secret_hash.clone(),
            })
            .collect();

        let backends = match settings.store.kind {
            StoreKind::Memory => Backends::memory(&settings, clock.clone()),
            StoreKind::Redis => Backends::redis(&settings)
                .await
                .map_err(|e| invalid("store.url".into(), e))?,
        };
        let replay = backends.replay.clone();
        let rate_limiter = backends.rate_limiter.clone();
        // `[[clients]]` seed the store; a client the store already has is the store's (an
        // admin may have changed it) and its row is skipped (DESIGN.md section 10).
        let clients = backends.clients.clone();
        for (i, client) in configured_clients.into_iter().enumerate() {
            let id = client.id.clone();
            let added = clients
                .insert_if_absent(client)
                .await
                .map_err(|e| invalid(format!("clients[{i}]"), e.to_string()))?;
            if !added {
                tracing::info!(
                    "clients[{i}] ('{id}'): the store already has this client; the configuration row is skipped"
                );
            }
        }
        let authenticator = ClientAuthenticator::new(
            clients.clone(),
            replay.clone(),
            clock.clone(),
            &settings.issuer,
            settings.tokens.clock_skew_secs,
        );
        let chain_key = match &settings.tokens.chain_id_key_file {
            Some(path) => {
                let bytes = read_secret(path, "tokens.chain_id_key_file", &invalid)?;
                ChainIdKey::from_bytes(bytes).map_err(|e| {
                    invalid(
                        "tokens.chain_id_key_file".into(),
                        format!("{}: {e}", path.display()),
                    )
                })?
            }
            None => ChainIdKey::generate(),
        };
        // `[[consents]]` seed grants the store does not hold. A grant an admin withdrew is gone
        // from the store but its `consent:<id>` entry lives until the grant's expiry: it is not
        // seeded again (it would be listed as live, though no exchange could use it).
        let consents = backends.consents.clone();
        for (i, consent) in settings.consents.iter().enumerate() {
            let id = consent_id(consent);
            let withdrawn = backends
                .revocations
                .check(&mandate_revocation::TokenFacts {
                    consents: vec![id.clone()],
                    ..mandate_revocation::TokenFacts::default()
                })
                .await
                .map_err(|e| invalid(format!("consents[{i}]"), e.to_string()))?;
            if matches!(
                withdrawn.verdict,
                mandate_revocation::Verdict::Revoked { .. }
            ) {
                tracing::info!(
                    consent = %id,
                    "consents[{i}]: withdrawn by an admin; the configuration row is skipped"
                );
                continue;
            }
            let grant = ConsentGrant {
                id: id.clone(),
                subject: consent.subject.clone(),
                actor: consent.actor.clone(),
                audience: consent.audience.clone(),
                scopes: consent.scopes.clone(),
                expires_at: consent.expires_at.timestamp(),
            };
            let added = consents
                .insert_if_absent(grant)
                .await
                .map_err(|e| invalid(format!("consents[{i}]"), e.to_string()))?;
            if !added {
                tracing::info!(
                    consent = %id,
                    "consents[{i}]: the store already holds this grant, which wins; the configuration row is skipped"
                );
            }
        }
        // `[[policies]]` seed a store that holds no policy; once it holds one (even one an
        // admin emptied), the store's wins and the rows of the file are skipped. A file
        // without rows seeds nothing, so that rows added to it later still seed the store.
        let policies = backends.policies.clone();
        let rows: Vec<PolicyRow> = settings
            .policies
            .iter()
            .map(crate::config::PolicySettings::row)
            .collect();
        if !rows.is_empty() {
            let file_policy = Policy::new(rows.clone());
            let seeded = policies
                .seed_if_empty(rows)
                .await
                .map_err(|e| invalid("policies".into(), e.to_string()))?;
            if !seeded {
                let (stored, version) = policies
                    .policy()
                    .await
                    .map_err(|e| invalid("policies".into(), e.to_string()))?;
                let rows = settings.policies.len();
                if *stored == file_policy {
                    tracing::info!(
                        "policies: the store already holds this policy (version {version}); the {rows} configuration rows are skipped"
                    );
                } else {
                    tracing::info!(
                        "policies: the store holds a different policy (version {version}, {} rows), which wins; the {rows} configuration rows are skipped",
                        stored.rows().len()
                    );
                }
            }
        }
        let audit = backends.audit.clone();
        let discovery = discovery_document(&settings);
        let tokens = &settings.tokens;
        let lifetimes = mandate_core::EntryLifetimes::new(
            tokens.clock_skew_secs,
            tokens.access_token_ttl_secs.max(tokens.id_jag_ttl_secs),
            trusted_issuers
                .iter()
                .map(|ti: &Arc<TrustedIssuer>| ti.settings.max_token_age_secs)
                .max()
                .unwrap_or(0),
        );
        let revocation = mandate_core::RevocationService::new(
            backends.revocations.clone(),
            backends.ledger.clone(),
            audit.clone(),
            lifetimes,
        );
        let consent_grants = mandate_core::ConsentService::new(
            consents.clone(),
            clients.clone(),
            revocation.clone(),
            audit.clone(),
            clock.clone(),
            Arc::new(mandate_core::RandomIds),
        );
        let agents = mandate_core::AgentService::new(
            clients.clone(),
            revocation.clone(),
            audit.clone(),
            clock.clone(),
            trusted_issuers
                .iter()
                .map(|ti: &Arc<TrustedIssuer>| ti.settings.issuer.clone())
                .collect(),
        );
        let policy_rows = mandate_core::PolicyService::new(
            mandate_core::PolicyPorts {
                policies: policies.clone(),
                clients: clients.clone(),
                consents: consents.clone(),
                ledger: backends.ledger.clone(),
                revocations: backends.revocations.clone(),
                audit: audit.clone(),
            },
            clock.clone(),
            mandate_core::ExplainSettings {
                issuer: settings.issuer.clone(),
                ttl_secs: i64::from(settings.tokens.access_token_ttl_secs),
                max_chain_depth: settings.tokens.max_chain_depth,
            },
        );
        Ok(Self {
            settings: Arc::new(settings),
            source,
            keys: KeyRing::new(keys),
            clients,
            rate_limiter,
            replay,
            authenticator,
            admin_credentials: Arc::new(admin_credentials),
            trusted_issuers: Arc::new(trusted_issuers),
            ledger: backends.ledger,
            consents,
            policies,
            chain_key: Arc::new(chain_key),
            demo_idp: options.demo_idp,
            revocations: backends.revocations,
            exchange_pause: options.exchange_pause,
            audit,
            feed_hubs: Arc::new(crate::feed::FeedHubs::default()),
            node_id: format!(
                "node-{}",
                crate::chain_id::new_hop_id().0.trim_start_matches("hop_")
            ),
            clock,
            discovery: Arc::new(discovery),
            revocation,
            consent_grants,
            agents,
            policy_rows,
        })
    }

    /// Authenticates any active client (revocation and introspection take resource servers too).
    pub async fn authenticate_client(
        &self,
        credentials: &PresentedCredentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let used_basic = credentials.used_basic();
        self.authenticator.authenticate(credentials).await.map_err(|error| {
            tracing::info!(target: "audit", credentials = ?credentials, reason = %error, "client authentication failed");
            error.into_oauth(used_basic)
        })
    }

    /// The claims of `token` if it is a genuine, unexpired mandate access token (signature by a
    /// published key, `typ` at+jwt, our issuer). Revocation is not checked here.
    pub fn own_token_claims(&self, token: &str) -> Option<mandate_token::AccessTokenClaims> {
        let jws = mandate_token::UnverifiedJws::parse(token).ok()?;
        if !jws.header().typ_is(mandate_token::urn::TYP_ACCESS_TOKEN) {
            return None;
        }
        let claims: mandate_token::AccessTokenClaims =
            self.keys.current().verify(&jws).ok()?.claims().ok()?;
        let window = mandate_token::TimeWindow {
            now: self.clock.now_secs(),
            skew: i64::from(self.settings.tokens.clock_skew_secs),
        };
        (claims.iss == self.settings.issuer
            && window
                .check(Some(claims.exp), Some(claims.nbf), Some(claims.iat), 86_400)
                .is_ok())
        .then_some(claims)
    }

    /// Authenticates the client of a token-endpoint request; only agents may go on.
    pub async fn authenticate_agent(
        &self,
        credentials: &PresentedCredentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let client = self.authenticate_client(credentials).await?;
        if client.kind != ClientKind::Agent {
            tracing::info!(target: "audit", client_id = %client.id, "a resource server tried the token endpoint");
            let error = OAuthError::invalid_client("only agents may request tokens");
            return Err(if credentials.used_basic() {
                error.with_basic_challenge()
            } else {
                error
            });
        }
        Ok(client)
    }

    /// Spends one request of `client_id`'s budget.
    pub async fn charge_rate_limit(&self, client_id: &str) -> Result<(), OAuthError> {
        match self.rate_limiter.acquire(client_id).await {
            Ok(RateDecision::Allowed) => Ok(()),
            Ok(RateDecision::Limited { retry_after_secs }) => Err(OAuthError::new(
                ErrorCode::SlowDown,
                "too many requests from this client; slow down",
            )
            .with_retry_after(retry_after_secs)),
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable");
                Err(OAuthError::unavailable())
            }
        }
    }
}

/// The stores, in memory or in Redis.
struct Backends {
    clients: Arc<dyn ClientRegistry>,
    policies: Arc<dyn PolicyStore>,
    replay: Arc<dyn ReplayCache>,
    rate_limiter: Arc<dyn RateLimiter>,
    ledger: Arc<dyn Ledger>,
    consents: Arc<dyn ConsentStore>,
    revocations: Arc<dyn RevocationStore>,
    audit: Arc<dyn crate::audit::AuditLog>,
}

impl Backends {
    fn memory(settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        Self {
            clients: Arc::new(MemoryClientRegistry::new()),
            policies: Arc::new(MemoryPolicyStore::new()),
            replay: Arc::new(MemoryReplayCache::new()),
            rate_limiter: Arc::new(MemoryRateLimiter::new(
                settings.limits.token_requests_per_client_per_sec,
                clock.clone(),
            )),
            ledger: Arc::new(MemoryLedger::new(settings.tokens.ledger_retention_secs)),
            consents: Arc::new(MemoryConsentStore::new()),
            revocations: Arc::new(MemoryRevocations::new(clock)),
            audit: Arc::new(crate::audit::MemoryAuditLog::new(
                usize::try_from(settings.limits.audit_stream_max).unwrap_or(usize::MAX),
            )),
        }
    }

    async fn redis(settings: &Settings) -> Result<Self, String> {
        match &settings.store.url {
            Some(StoreUrl::One(url)) => {
                let connection = mandate_store::redis_store::connect(url)
                    .await
                    .map_err(|e| format!("cannot connect to Redis: {e}"))?;
                warn_about_redis_settings(connection.clone()).await;
                Ok(Self::over_redis(connection, settings).await)
            }
            Some(StoreUrl::Cluster(urls)) => {
                let connection = mandate_store::redis_store::connect_cluster(urls)
                    .await
                    .map_err(|e| format!("cannot connect to Redis Cluster: {e}"))?;
                Ok(Self::over_redis(connection, settings).await)
            }
            None => Err("required when store.kind = \"redis\"".into()),
        }
    }

    async fn over_redis<C: mandate_store::redis_store::RedisConnection>(
        connection: C,
        settings: &Settings,
    ) -> Self {
        let revocations = mandate_revocation::RedisRevocations::new(connection.clone());
        match revocations.detect_replicas().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                replicas = n,
                "revocations wait for one replica to acknowledge"
            ),
            Err(error) => tracing::warn!(%error, "could not read Redis replication info"),
        }
        // Entries written before the revocation index existed are added to it, so that feed
        // snapshots (which read the index, not the stream) include them.
        match revocations.index_entries().await {
            Ok(records) => tracing::debug!(records, "revocation entries indexed"),
            Err(error) => tracing::warn!(%error, "could not index the revocation entries"),
        }
        let clients = RedisClientRegistry::new(connection.clone());
        // Resource servers registered before the audience-owner sets existed are added to them;
        // until they are, an exchange for their apps is refused (the target looks unowned).
        match clients.index_audience_owners().await {
            Ok(owners) => tracing::debug!(owners, "audience owners indexed"),
            Err(error) => tracing::warn!(%error, "could not index the audience owners"),
        }
        Self {
            clients: Arc::new(clients),
            policies: Arc::new(RedisPolicyStore::new(connection.clone())),
            replay: Arc::new(RedisReplayCache::new(connection.clone())),
            rate_limiter: Arc::new(RedisRateLimiter::new(
                connection.clone(),
                settings.limits.token_requests_per_client_per_sec,
            )),
            ledger: Arc::new(RedisLedger::new(
                connection.clone(),
                settings.tokens.ledger_retention_secs,
            )),
            consents: Arc::new(RedisConsentStore::new(connection.clone())),
            revocations: Arc::new(revocations),
            audit: Arc::new(crate::audit::RedisAuditLog::new(
                connection,
                settings.limits.audit_stream_max,
            )),
        }
    }
}

/// mandate needs a Redis that neither evicts (a dropped revocation entry would un-revoke) nor
/// forgets on restart (AOF). Managed services may forbid CONFIG: then nothing is said.
async fn warn_about_redis_settings(
    mut connection: mandate_store::redis_store::PerThreadConnection,
) {
    let policy: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut connection)
        .await;
    if let Ok(values) = policy {
        if values.get(1).is_some_and(|p| p != "noeviction") {
            tracing::warn!(policy = ?values.get(1), "Redis may evict keys (maxmemory-policy is not noeviction): revocations and ledger entries could be lost");
        }
    }
    let aof: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(&mut connection)
        .await;
    if let Ok(values) = aof {
        if values.get(1).is_some_and(|v| v != "yes") {
            tracing::warn!("Redis persistence is off (appendonly no): a restart of Redis loses revocations and the ledger");
        }
    }
}

/// A stable id for a configured consent grant, so that re-seeding finds it again.
fn consent_id(consent: &ConsentSettings) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(
        format!(
            "{}\n{}\n{}\n{}",
            consent.subject, consent.actor, consent.audience, consent.scopes
        )
        .as_bytes(),
    );
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("cns_{hex}")
}

/// mandate's own keys in force. A reload (SIGHUP) replaces the whole [`KeySet`] at once, so the
/// key that signs, the `/jwks` document and the set mandate verifies its own tokens with always
/// agree. Readers take an `Arc` and let go of the lock at once: no lock is held across an await.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<KeySet>>>,
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(keys))),
        }
    }

    /// The keys in force now. A request takes them once and uses that snapshot throughout.
    pub fn current(&self) -> Arc<KeySet> {
        // The lock guards only an assignment, which cannot panic: poisoning carries no meaning.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `keys` in force and returns the keys they replace.
    fn replace(&self, keys: Arc<KeySet>) -> Arc<KeySet> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, keys)
    }
}

/// Why a key reload was refused. The keys in force stay in force.
#[derive(Debug, thiserror::Error)]
pub enum KeyReloadError {
    /// The node was not started from a configuration file.
    #[error("no configuration file to re-read (configuration from {0})")]
    NoFile(String),
    /// The file, or the keys it names, cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `[signing] key_file` is not set; a reload never makes an ephemeral key.
    #[error(
        "signing.key_file is not set: a reload needs a key file (it never makes an ephemeral key)"
    )]
    NoKeyFile,
}

/// What a successful key reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyReload {
    /// The `kid` that signed before.
    pub previous_kid: String,
    /// The `kid` that signs now.
    pub active_kid: String,
    /// Every published `kid`, active first.
    pub published: Vec<String>,
    /// The signing key was not published before this reload (the staging step was skipped):
    /// verifiers with a cached JWKS refuse its tokens until they re-fetch.
    pub unstaged: bool,
    /// The key that signed before is no longer published: mandate and verifiers refuse the
    /// tokens it signed, even unexpired ones.
    pub dropped_previous: bool,
    /// Settings outside `[signing]` that differ from those the node started with; they are not
    /// applied (that needs a restart).
    pub ignored: Vec<&'static str>,
}

impl AppState {
    /// Re-reads the configuration file this node was started with (the same loading as start-up,
    /// `MANDATE__…` overrides included) and reloads its keys: what SIGHUP does. Nothing but
    /// `[signing]` is applied. A failure is logged and leaves the keys in force.
    pub fn reload_keys_from_file(&self) -> Result<KeyReload, KeyReloadError> {
        let outcome = match &self.source {
            ConfigSource::File(path) => Settings::load(path)
                .map_err(KeyReloadError::from)
                .and_then(|settings| self.swap_keys(&settings)),
            other => Err(KeyReloadError::NoFile(other.to_string())),
        };
        log_reload(&outcome);
        outcome
    }

    /// Loads the keys of `settings.signing` and puts them in force, atomically: the signing key,
    /// the published set mandate verifies its own tokens with, and the `/jwks` document. The
    /// whole of `settings` must be valid (a file this node could not start with is not one to
    /// take keys from); settings outside `[signing]` are not applied and are reported in
    /// [`KeyReload::ignored`]. A failure is logged and leaves the keys in force.
    pub fn reload_keys(&self, settings: &Settings) -> Result<KeyReload, KeyReloadError> {
        let outcome = self.swap_keys(settings);
        log_reload(&outcome);
        outcome
    }

    fn swap_keys(&self, settings: &Settings) -> Result<KeyReload, KeyReloadError> {
        settings.validate(&self.source)?;
        if settings.signing.key_file.is_none() {
            return Err(KeyReloadError::NoKeyFile);
        }
        let invalid = |key: String, message: String| ConfigError::Invalid {
            source_name: self.source.to_string(),
            key,
            message,
        };
        let current = Arc::new(load_keys(settings, &invalid)?);
        let ignored = settings_outside_signing_changed(&self.settings, settings);
        let previous = self.keys.replace(Arc::clone(&current));
        let active_kid = current.active().kid().to_owned();
        Ok(KeyReload {
            previous_kid: previous.active().kid().to_owned(),
            unstaged: !previous.publishes(&active_kid),
            dropped_previous: !current.publishes(previous.active().kid()),
            published: current.published().map(|k| k.kid().to_owned()).collect(),
            active_kid,
            ignored,
        })
    }
}

fn log_reload(outcome: &Result<KeyReload, KeyReloadError>) {
    match outcome {
        Ok(reload) => {
            tracing::info!(
                active_kid = %reload.active_kid,
                previous_kid = %reload.previous_kid,
                published = ?reload.published,
                "signing keys reloaded"
            );
            if reload.unstaged {
                tracing::warn!(
                    kid = %reload.active_kid,
                    "the new signing key was not published before it started signing (it was \
                     never staged as signing.next_key_file): verifiers with a cached JWKS refuse \
                     its tokens until they re-fetch"
                );
            }
            if reload.dropped_previous {
                tracing::warn!(
                    kid = %reload.previous_kid,
                    "the key that signed until now is no longer published: its unexpired tokens \
                     are refused; keep it in signing.retired_key_files until they have expired"
                );
            }
            if !reload.ignored.is_empty() {
                tracing::warn!(
                    changed = ?reload.ignored,
                    "the configuration changed outside [signing]: those changes are not applied \
                     (only keys are reloaded); they need a restart"
                );
            }
        }
        Err(error) => {
            tracing::error!(%error, "signing keys NOT reloaded; the keys in force stay");
        }
    }
}

/// The top-level settings other than `[signing]` that differ. Debug output is compared because
/// the settings have no equality of their own; it is never logged (it may hold secret hashes).
fn settings_outside_signing_changed(running: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! compare {
        ($($field:ident),* $(,)?) => {
            $(
                if format!("{:?}", running.$field) != format!("{:?}", new.$field) {
                    changed.push(stringify!($field));
                }
            )*
        };
    }
    compare!(
        issuer,
        listen,
        admin_listen,
        store,
        tokens,
        limits,
        admin,
        trusted_issuers,
        clients,
        policies,
        consents,
        id_jag,
    );
    // A section added to the settings after this list was written is still noticed.
    let mut probe = new.clone();
    probe.signing = running.signing.clone();
    if changed.is_empty() && format!("{probe:?}") != format!("{running:?}") {
        changed.push("other settings");
    }
    changed
}

fn load_keys(
    settings: &Settings,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<KeySet, ConfigError> {
    let algorithm = settings.signing.algorithm;
    let active = match &settings.signing.key_file {
        Some(path) => {
            let pem = read_secret(path, "signing.key_file", invalid)?;
            SigningKey::from_pkcs8_pem(algorithm, &pem).map_err(|e| {
                invalid(
                    "signing.key_file".into(),
                    format!("{}: {e}", path.display()),
                )
            })?
        }
        None => SigningKey::generate(algorithm)
            .map_err(|e| invalid("signing.key_file".into(), e.to_string()))?,
    };
    let next = match &settings.signing.next_key_file {
        Some(path) => {
            let pem = read_secret(path, "signing.next_key_file", invalid)?;
            // The next key may bring a change of algorithm, made at its promotion.
            Some(PublicKey::from_pkcs8_pem_any(algorithm, &pem).map_err(|e| {
                invalid(
                    "signing.next_key_file".into(),
                    format!("{}: {e}", path.display()),
                )
            })?)
        }
        None => None,
    };
    let mut retired = Vec::new();
    for (i, path) in settings.signing.retired_key_files.iter().enumerate() {
        let key = format!("signing.retired_key_files[{i}]");
        let pem = read_secret(path, &key, invalid)?;
        // A retired key may be of the algorithm used before a change of algorithm.
        let public = PublicKey::from_pkcs8_pem_any(algorithm, &pem)
            .map_err(|e| invalid(key, format!("{}: {e}", path.display())))?;
        retired.push(public);
    }
    KeySet::new(active, next, retired).map_err(|e| invalid("signing".into(), e.to_string()))
}

fn read_secret(
    path: &Path,
    key: &str,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| invalid(key.into(), format!("cannot read {}: {e}", path.display())))
}

fn read_text(
    path: &Path,
    key: &str,
    invalid: &impl Fn(String, String) -> ConfigError,
) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| invalid(key.into(), format!("cannot read {}: {e}", path.display())))
}

/// The RFC 8414 metadata for what this server supports now. The trusted-issuer list is never
/// published (PROTOCOLS.md section 2.8).
pub fn discovery_document(settings: &Settings) -> Value {
    let issuer = &settings.issuer;
    let auth_methods: Vec<&str> = mandate_model::AuthMethod::ALL
        .iter()
        .map(|m| m.as_str())
        .collect();
    let algorithms: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": [],
        "grant_types_supported": crate::grant::GrantKind::supported(settings),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algorithms,
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algorithms,
        "authorization_details_types_supported": [mandate_token::DELEGATION_DETAIL_TYPE],
    });
    // ID-JAG -03 §7: the profile, never which issuers are trusted for it.
    if crate::grant::accepts_id_jags(settings) {
        document["authorization_grant_profiles_supported"] =
            json!([mandate_token::urn::GRANT_PROFILE_ID_JAG]);
    }
    // Identity chaining / ID-JAG §7: the IdP half is served when a resource AS is configured.
    if !settings.id_jag.resource_servers.is_empty() {
        document["identity_chaining_requested_token_types_supported"] =
            json!([mandate_token::urn::TOKEN_TYPE_ID_JAG]);
    }
    document
}
