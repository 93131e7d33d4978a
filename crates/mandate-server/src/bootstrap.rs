//! Building the server's state from validated settings: the configured clients and issuers,
//! the stores (memory or Redis), the seeds and the services. Files named in the configuration
//! are read here, and a failure names the key that pointed at them.

use std::sync::Arc;

use mandate_model::{Clock, SystemClock};
use mandate_store::redis_store::Instrumented;
use mandate_store::{
    Client, ClientRegistry, MemoryClientRegistry, MemoryRateLimiter, MemoryReplayCache,
    RateLimiter, ReplayCache,
};
use mandate_token::{Algorithm, VerifyingKeySet};
use serde_json::Value;

use crate::chain_id::ChainIdKey;
use crate::client_auth::ClientAuthenticator;
use crate::config::{
    ConfigError, ConfigSource, ConsentSettings, Settings, StoreKind, StoreUrl, ValidatedSettings,
};
use crate::discovery::discovery_document;
use crate::jwks_remote::{FetchLimits, RemoteJwks};
use crate::keys::{load_keys, read_secret, read_text, KeyRing};
use crate::state::{AdminCredential, AppState, BuildOptions, TrustedIssuer};
use mandate_chain::{ConsentGrant, ConsentStore, Ledger, Policy, PolicyRow, PolicyStore};
use mandate_revocation::{MemoryRevocations, RevocationStore};
use mandate_store::{
    MemoryConsentStore, MemoryLedger, MemoryPolicyStore, RedisClientRegistry, RedisConsentStore,
    RedisLedger, RedisPolicyStore, RedisRateLimiter, RedisReplayCache,
};

impl AppState {
    /// Validates `settings` for `source`, loads keys and seeds the in-memory store.
    pub async fn build(
        settings: Settings,
        source: ConfigSource,
        options: BuildOptions,
    ) -> Result<Self, ConfigError> {
        let settings = ValidatedSettings::try_from((settings, source))?;
        // Before anything is counted: the recorder is the process's, installed once.
        crate::metrics::install();
        let source = settings.source().clone();
        let invalid = |key: String, message: String| ConfigError::Invalid {
            source_name: source.to_string(),
            key,
            message,
        };
        let clock = options.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let monotonic = options
            .monotonic
            .unwrap_or_else(|| Arc::new(mandate_model::SystemMonotonic));

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
                dpop: client.dpop,
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
                    RemoteJwks::new(uri, algorithms.clone(), FetchLimits::default())
                        .map_err(|e| {
                            invalid(format!("trusted_issuers[{i}].jwks_uri"), e.to_string())
                        })?
                        .with_monotonic(Arc::clone(&monotonic)),
                ),
                None => None,
            };
            let ssf_poll_token = match &issuer.ssf_poll_token_file {
                Some(path) => {
                    let key = format!("trusted_issuers[{i}].ssf_poll_token_file");
                    let token = read_text(path, &key, &invalid)?.trim().to_owned();
                    if token.is_empty() {
                        return Err(invalid(key, format!("{} is empty", path.display())));
                    }
                    Some(zeroize::Zeroizing::new(token))
                }
                None => None,
            };
            trusted_issuers.push(Arc::new(TrustedIssuer {
                settings: issuer.clone(),
                keys,
                remote,
                ssf_poll_token,
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
        }
        .journaled(clock.clone());
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
        let rows: Vec<PolicyRow> = settings.policy_rows().to_vec();
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
        let node_id = format!(
            "node-{}",
            crate::chain_id::new_hop_id().0.trim_start_matches("hop_")
        );
        let participation = Arc::new(mandate_core::ParticipationService::new(
            mandate_core::ParticipationPorts {
                participants: backends.participation.clone(),
                gates: backends.gates.clone(),
                clients: backends.clients.clone(),
                streams: backends.ssf_streams.clone(),
                audit: audit.clone(),
            },
            clock.clone(),
            node_id.clone(),
        ));
        // `[[participation_gates]]` are checked always and seed a store that never held a
        // gate; once an admin changed the gates (even removing all of them), the store's win.
        let gates = settings
            .participation_gates
            .iter()
            .enumerate()
            .map(|(i, g)| {
                participation
                    .gate_of(g.gate(), "config")
                    .map_err(|e| invalid(format!("participation_gates[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if !gates.is_empty() {
            let count = gates.len();
            let seeded = participation
                .seed_gates(&gates)
                .await
                .map_err(|e| invalid("participation_gates".into(), e.to_string()))?;
            if !seeded {
                tracing::info!("participation_gates: the store's gates win; the {count} configuration gates are skipped");
            }
        }
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
        )
        .with_max_chain_depth(tokens.max_chain_depth);
        let ids: Arc<dyn mandate_core::IdGenerator> = options
            .ids
            .clone()
            .unwrap_or_else(|| Arc::new(mandate_core::RandomIds));
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
            ids.clone(),
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
                gate: participation.clone(),
            },
            clock.clone(),
            mandate_core::ExplainSettings {
                issuer: settings.issuer.clone(),
                ttl_secs: i64::from(settings.tokens.access_token_ttl_secs),
                max_chain_depth: settings.tokens.max_chain_depth,
            },
        );
        let tls = match (&settings.tls.cert_file, &settings.tls.key_file) {
            (Some(cert), Some(key)) => Some(
                crate::tls::Tls::load(cert, key)
                    .map_err(|e| invalid("tls".into(), e.to_string()))?,
            ),
            _ => None,
        };
        crate::metrics::keys_loaded(&keys);
        let keys = KeyRing::new(keys);
        let chain_key = Arc::new(chain_key);
        let trusted_issuers = Arc::new(trusted_issuers);
        let mut grants = mandate_core::GrantService::new(
            mandate_core::GrantPorts {
                clients: clients.clone(),
                revocations: backends.revocations.clone(),
                consents: consents.clone(),
                ledger: backends.ledger.clone(),
                policies: policies.clone(),
                replay: replay.clone(),
                audit: audit.clone(),
                issuers: mandate_core::grants::TrustedIssuers::new(
                    trusted_issuers
                        .iter()
                        .map(|ti| Arc::clone(ti) as Arc<dyn mandate_core::grants::UpstreamIssuer>)
                        .collect(),
                ),
                keys: keys.clone(),
                chain_key: chain_key.clone(),
                gate: participation.clone(),
            },
            mandate_core::GrantSettings {
                issuer: settings.issuer.clone(),
                access_token_ttl_secs: settings.tokens.access_token_ttl_secs,
                id_jag_ttl_secs: settings.tokens.id_jag_ttl_secs,
                max_chain_depth: settings.tokens.max_chain_depth,
                clock_skew_secs: settings.tokens.clock_skew_secs,
                resource_servers: settings.id_jag.resource_servers.clone(),
                dpop: mandate_core::grants::DpopSettings {
                    require_nonce: settings.dpop.require_nonce,
                    ..mandate_core::grants::DpopSettings::for_endpoint(settings.token_endpoint())
                },
            },
            clock.clone(),
            ids.clone(),
        );
        let ssf = mandate_core::SsfTransmitter::new(
            backends.ssf_streams.clone(),
            clients.clone(),
            backends.ledger.clone(),
            keys.clone(),
            audit.clone(),
            clock.clone(),
            mandate_core::TransmitterSettings {
                issuer: settings.issuer.clone(),
                queue_cap: SSF_QUEUE_CAP,
                live_window_secs: lifetimes.live_window_secs(),
            },
        );
        let pause = options.exchange_pause.map(|pause| {
            Arc::new(crate::state::PauseWithState {
                pause,
                state: std::sync::OnceLock::new(),
            })
        });
        if let Some(pause) = &pause {
            grants = grants.with_hook(pause.clone());
        }
        let authority = mandate_core::AuthorityService::new(
            mandate_core::AuthorityPorts {
                ledger: backends.ledger.clone(),
                revocations: backends.revocations.clone(),
                consents: consents.clone(),
                clients: clients.clone(),
                policies: policies.clone(),
            },
            lifetimes.live_window_secs(),
        );
        let evidence = mandate_core::JournalService::new(
            backends.journal.clone(),
            keys.clone(),
            settings.issuer.clone(),
            clock.clone(),
        );
        let state = Self {
            settings: Arc::new(settings),
            tls,
            keys,
            clients,
            rate_limiter,
            replay,
            authenticator,
            admin_credentials: Arc::new(admin_credentials),
            trusted_issuers,
            ledger: backends.ledger,
            evidence,
            journal: backends.journal,
            consents,
            policies,
            chain_key,
            demo_idp: options.demo_idp,
            revocations: backends.revocations,
            audit,
            feed_hubs: Arc::new(crate::feed::FeedHubs::default()),
            usage: Arc::new(mandate_core::UsageTracker::new(
                backends.last_use.clone(),
                clock.clone(),
            )),
            participation,
            authority,
            node_id,
            clock,
            discovery: Arc::new(discovery),
            ids,
            revocation,
            consent_grants,
            agents,
            policy_rows,
            grants,
            ssf,
        };
        if let Some(pause) = pause {
            // Only tests give a pause; the state it holds keeps itself alive, which they can
            // afford.
            let _ = pause.state.set(state.clone());
        }
        Ok(state)
    }
}

/// Most Security Event Tokens queued per Shared Signals stream; beyond it the oldest are dropped
/// and counted (`mandate ssf streams` shows both).
const SSF_QUEUE_CAP: u64 = 10_000;

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
    ssf_streams: Arc<dyn mandate_store::SsfStreamStore>,
    participation: Arc<dyn mandate_store::ParticipationStore>,
    gates: Arc<dyn mandate_store::GateStore>,
    last_use: Arc<dyn mandate_store::LastUseStore>,
    journal: Arc<dyn mandate_store::Journal>,
}

impl Backends {
    /// The same stores, with every hop and every audit event also appended to the journal.
    fn journaled(mut self, clock: Arc<dyn Clock>) -> Self {
        self.ledger = Arc::new(mandate_store::JournaledLedger::new(
            self.ledger,
            self.journal.clone(),
            clock,
        ));
        self.audit = Arc::new(mandate_store::JournaledAudit::new(
            self.audit,
            self.journal.clone(),
        ));
        self
    }

    fn memory(settings: &Settings, clock: Arc<dyn Clock>) -> Self {
        tracing::warn!(
            max_hops = settings.store.memory_max_hops,
            max_journal_entries = settings.journal.memory_max_entries,
            "the memory store keeps at most this many hops and journal entries, forgetting the \
             oldest first: export the ledger before they go (docs/EVIDENCE.md), or use Redis"
        );
        Self {
            journal: Arc::new(mandate_store::MemoryJournal::new(
                settings.journal.memory_max_entries,
            )),
            clients: Arc::new(MemoryClientRegistry::new()),
            policies: Arc::new(MemoryPolicyStore::new()),
            replay: Arc::new(MemoryReplayCache::new()),
            rate_limiter: Arc::new(MemoryRateLimiter::new(
                settings.limits.token_requests_per_client_per_sec,
                clock.clone(),
            )),
            ledger: Arc::new(
                MemoryLedger::new(settings.tokens.ledger_retention_secs)
                    .with_max_hops(settings.store.memory_max_hops),
            ),
            consents: Arc::new(MemoryConsentStore::new()),
            revocations: Arc::new(MemoryRevocations::new(clock)),
            ssf_streams: Arc::new(mandate_store::MemorySsfStreams::new()),
            participation: Arc::new(mandate_store::MemoryParticipation::new()),
            gates: Arc::new(mandate_store::MemoryGates::new()),
            last_use: Arc::new(mandate_store::MemoryLastUse::new()),
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
                Ok(Self::over_redis(Instrumented(connection), settings).await)
            }
            Some(StoreUrl::Cluster(urls)) => {
                let connection = mandate_store::redis_store::connect_cluster(urls)
                    .await
                    .map_err(|e| format!("cannot connect to Redis Cluster: {e}"))?;
                Ok(Self::over_redis(Instrumented(connection), settings).await)
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
            ssf_streams: Arc::new(mandate_store::RedisSsfStreams::new(connection.clone())),
            participation: Arc::new(mandate_store::RedisParticipation::new(connection.clone())),
            gates: Arc::new(mandate_store::RedisGates::new(connection.clone())),
            last_use: Arc::new(mandate_store::RedisLastUse::new(connection.clone())),
            revocations: Arc::new(revocations),
            journal: Arc::new(mandate_store::RedisJournal::new(connection.clone())),
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
    mandate_core::content_id(
        &consent.subject,
        &consent.actor,
        &consent.audience,
        &consent.scopes,
    )
}
