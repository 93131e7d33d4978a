//! Everything a running server holds: the validated configuration, the stores, the services and
//! the keys. It is built in `bootstrap.rs`; the keys live in `keys.rs`, the metadata in
//! `discovery.rs`.

use std::sync::Arc;

use mandate_model::{ClientKind, Clock, SecretHash};
use mandate_store::{Client, ClientRegistry, RateDecision, RateLimiter, ReplayCache};
use mandate_token::{Algorithm, SigningKey, VerifyingKeySet};
use serde_json::Value;
use tracing::Instrument as _;

use crate::chain_id::ChainIdKey;
use crate::client_auth::{ClientAuthenticator, PresentedCredentials};
use crate::config::{AdminRole, TrustedIssuerSettings, ValidatedSettings};
use crate::error::{ErrorCode, OAuthError};
use crate::jwks_remote::RemoteJwks;
use mandate_chain::{ConsentStore, Ledger, PolicyStore};
use mandate_revocation::RevocationStore;

/// A trusted issuer with its keys: loaded from a file or inline, or fetched from `jwks_uri`.
#[derive(Debug)]
pub struct TrustedIssuer {
    /// Its configuration.
    pub settings: TrustedIssuerSettings,
    /// Its keys, when they come from a file or inline.
    pub keys: Option<VerifyingKeySet>,
    /// Its keys, when they come from `jwks_uri`.
    pub remote: Option<RemoteJwks>,
    /// The bearer token mandate polls its Shared Signals with (`ssf_poll_token_file`).
    pub ssf_poll_token: Option<zeroize::Zeroizing<String>>,
}

pub use mandate_core::grants::IssuerVerifyError;

impl TrustedIssuer {
    /// Verifies `jws` with this issuer's keys and configured algorithms only. With remote keys,
    /// an unknown `kid` refreshes the set once (rate-limited inside: the issuer may have rotated)
    /// before it fails. The one key path of subject tokens, ID-JAGs and Shared Signals.
    pub async fn verify(
        &self,
        jws: &mandate_token::UnverifiedJws<'_>,
    ) -> Result<mandate_token::Verified, IssuerVerifyError> {
        let algorithms = self.algorithms();
        if let Some(keys) = &self.keys {
            return jws
                .verify(keys, &algorithms)
                .map_err(IssuerVerifyError::Signature);
        }
        let Some(remote) = &self.remote else {
            return Err(IssuerVerifyError::KeysUnavailable(
                "no keys configured".into(),
            ));
        };
        let keys = remote
            .keys()
            .await
            .map_err(|e| IssuerVerifyError::KeysUnavailable(e.to_string()))?;
        match jws.verify(&keys, &algorithms) {
            Err(mandate_token::JwtError::UnknownKey) => {
                let keys = remote
                    .refresh_for_unknown_kid()
                    .await
                    .map_err(|e| IssuerVerifyError::KeysUnavailable(e.to_string()))?;
                jws.verify(&keys, &algorithms)
                    .map_err(IssuerVerifyError::Signature)
            }
            other => other.map_err(IssuerVerifyError::Signature),
        }
    }

    /// The algorithms this issuer's tokens may use.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        self.settings
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_name(a))
            .collect()
    }
}

#[async_trait::async_trait]
impl mandate_core::grants::UpstreamIssuer for TrustedIssuer {
    fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    fn alias(&self) -> &mandate_model::IssuerAlias {
        &self.settings.alias
    }

    fn accepts(&self, what: crate::config::Acceptance) -> bool {
        self.settings.accept.contains(&what)
    }

    fn subject_as_is(&self) -> bool {
        self.settings.subject_as_is
    }

    fn max_token_age_secs(&self) -> u32 {
        self.settings.max_token_age_secs
    }

    fn id_jag_reuse(&self) -> bool {
        self.settings.id_jag_reuse
    }

    async fn verify(
        &self,
        jws: &mandate_token::UnverifiedJws<'_>,
    ) -> Result<mandate_token::Verified, IssuerVerifyError> {
        TrustedIssuer::verify(self, jws).await
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
    pub settings: Arc<ValidatedSettings>,
    /// mandate's keys: signing key, published set and JWKS, swapped whole on reload.
    pub keys: KeyRing,
    /// The listeners' TLS (`[tls]`), its certificate swapped on reload.
    pub tls: Option<crate::tls::Tls>,
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
    /// The tamper-evident journal of the ledger and the audit stream (docs/EVIDENCE.md).
    pub journal: Arc<dyn mandate_store::Journal>,
    /// Reading, exporting and verifying the journal (mandate-core).
    pub evidence: mandate_core::JournalService,
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
    /// Where hop and consent ids come from (random, unless a test gives its own).
    pub ids: Arc<dyn mandate_core::IdGenerator>,
    /// Revocation at every grain (mandate-core).
    pub revocation: mandate_core::RevocationService,
    /// Consent grants as administrators manage them (mandate-core).
    pub consent_grants: mandate_core::ConsentService,
    /// The agent registry and lifecycle (mandate-core).
    pub agents: mandate_core::AgentService,
    /// The policy rows as administrators change and question them (mandate-core).
    pub policy_rows: mandate_core::PolicyService,
    /// Shared Signals streams and the events revocations raise for them (mandate-core).
    pub ssf: mandate_core::SsfTransmitter,
    /// When each client was last used (mandate-core).
    pub usage: Arc<mandate_core::UsageTracker>,
    /// Which apps take part, and how (mandate-core).
    pub participation: Arc<mandate_core::ParticipationService>,
    /// Users' standing authority (mandate-core).
    pub authority: mandate_core::AuthorityService,
    /// The token endpoint's grants: exchange, ID-JAG issuance and redemption (mandate-core).
    pub grants: mandate_core::GrantService,
}

/// Optional replacements for what [`AppState::build`] would otherwise create.
#[derive(Debug, Default)]
pub struct BuildOptions {
    /// The clock (default: the system clock).
    pub clock: Option<Arc<dyn Clock>>,
    /// The monotonic clock of cache ages and refresh intervals: trusted issuers' fetched key
    /// sets (default: the process's).
    pub monotonic: Option<Arc<dyn mandate_model::Monotonic>>,
    /// The ids of hops and consent grants (default: random).
    pub ids: Option<Arc<dyn mandate_core::IdGenerator>>,
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

/// An [`ExchangePause`] as the grants' hook: it hands the pause the whole state, which exists
/// only once the grants are built, so the state is given to it right after.
#[derive(Debug)]
pub(crate) struct PauseWithState {
    pub(crate) pause: Arc<dyn ExchangePause>,
    pub(crate) state: std::sync::OnceLock<AppState>,
}

#[async_trait::async_trait]
impl mandate_core::HopRecordedHook for PauseWithState {
    async fn after_hop_recorded(&self, hop: &mandate_chain::HopRecord) {
        if let Some(state) = self.state.get() {
            self.pause.after_hop_recorded(state, hop).await;
        }
    }
}

impl AppState {
    /// Authenticates any active client (revocation and introspection take resource servers too).
    pub async fn authenticate_client(
        &self,
        credentials: &PresentedCredentials,
    ) -> Result<Arc<Client>, OAuthError> {
        let used_basic = credentials.used_basic();
        let span = tracing::debug_span!("mandate.client_auth", client_id = tracing::field::Empty);
        let client = self
            .authenticator
            .authenticate(credentials)
            .instrument(span.clone())
            .await
            .map_err(|error| {
            tracing::info!(target: "audit", credentials = ?credentials, reason = %error, "client authentication failed");
            error.into_oauth(used_basic)
        })?;
        span.record("client_id", client.id.as_str());
        self.usage
            .seen(client.id.as_str(), mandate_store::UseKind::Authenticated)
            .await;
        Ok(client)
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

pub use crate::discovery::discovery_document;
pub use crate::keys::{KeyReload, KeyReloadError, KeyRing};
