//! The SDK for apps (resource servers) that accept mandate access tokens: is this agent's token
//! genuine, meant for this app, unexpired, and is no hop of its delegation chain revoked?
//!
//! ```no_run
//! # async fn run() -> Result<(), mandate_verify::VerifyError> {
//! use std::sync::Arc;
//! use mandate_verify::{Direct, Verifier};
//!
//! let verifier = Verifier::builder("https://mandate.example.com", "https://calendar.example.com")
//!     .discover() // RFC 8414 metadata → jwks_uri, fetched, cached, re-fetched on rotation
//! #   ;
//! # #[cfg(feature = "redis")]
//! # let verifier = verifier
//!     .revocation(Arc::new(Direct::redis("redis://calendar-ro:…@redis.internal:6379").await?))
//! #   ;
//! # let verifier = verifier
//!     .build()
//!     .await?;
//! # let token = "";
//! let token = verifier.verify(token).await?;
//! token.require_scope("calendar.read")?;
//! println!("{} acting for {}", token.current_actor(), token.subject());
//! # Ok(()) }
//! ```
//!
//! [`Verifier::verify`] checks, in this order (RFC 9068 §4, RFC 8725, PROTOCOLS.md 4.5 and 6.1):
//! the size bound ([`mandate_token::MAX_TOKEN_BYTES`]); `typ` is `at+jwt` (or
//! `application/at+jwt`); `alg` is on the allow-list (never `none` or HMAC; a key is only used
//! with algorithms of its own type); the signature, with the key the `kid` names (an unknown
//! `kid` re-fetches a fetched JWKS, at most once per refresh floor, so a key rotation on the
//! server needs no restart of the app); `iss` equals the issuer; `aud` is this app (a string, or
//! an array containing it); `exp`, `nbf` and `iat` with the clock skew; then the revocation
//! source, with every hop, the chain, every agent and the subject of the token.
//!
//! **Without a revocation source nothing is checked for revocation**: a revoked token is accepted
//! until it expires. That is only for tests and offline tools; production apps pass
//! [`VerifierBuilder::revocation`].
//!
//! Apps that cannot reach mandate's Redis use [`Feed`]: mandate's `GET /revocations` server-sent
//! events, read in the background into an in-process copy that fails closed.
//!
//! The optional `actix-web` feature adds an extractor answering RFC 6750 errors, the `tower`
//! feature a layer doing the same for axum and other tower stacks (both through [`bearer`]); the
//! `redis` feature adds `Direct::redis`. [`ProtectedResource`] is an app's RFC 9728 metadata,
//! which both integrations serve and name in their challenges. By default this crate depends on no web framework (STYLE.md
//! guideline 1), and it never depends on the mandate server: token ← revocation ← verify.

#![warn(missing_docs)]

#[cfg(feature = "actix-web")]
pub mod actix;
pub mod bearer;
pub mod dpop;
mod error;
mod feed;
mod keys;
pub mod report;
pub mod resource;
mod revocation;
mod token;
#[cfg(feature = "tower")]
pub mod tower;

use std::sync::Arc;
use std::time::Duration;

use mandate_model::SystemClock;
use mandate_token::{urn, JwtError, TimeError, TimeWindow, UnverifiedJws, Verified};
use serde_json::{Map, Value};

#[cfg(feature = "actix-web")]
pub use actix::Authenticated;
pub use bearer::{bearer_token, BearerError};
pub use dpop::Presented;
pub use error::VerifyError;
pub use feed::{Feed, FeedConfig, FeedStats};
pub use mandate_model::{Clock, ManualMonotonic, Monotonic, ScopeSet, SystemMonotonic};
#[cfg(feature = "redis")]
pub use mandate_revocation::{FollowerConfig, FollowerError};
pub use mandate_revocation::{RevocationKind, TokenFacts, Verdict};
pub use mandate_token::{AccessTokenClaims, Algorithm};
pub use resource::ProtectedResource;
#[cfg(feature = "redis")]
pub use revocation::Followed;
pub use revocation::{Direct, RevocationSource};
pub use token::VerifiedToken;

use keys::{KeySource, RemoteJwks};

/// The default signature algorithms: what mandate signs with (DESIGN.md section 4).
pub const DEFAULT_ALGORITHMS: [Algorithm; 2] = [Algorithm::Es256, Algorithm::EdDsa];
/// The default clock skew, in seconds (RFC 8725 practice; PROTOCOLS.md 6.1).
pub const DEFAULT_CLOCK_SKEW_SECS: i64 = 60;
/// The largest clock skew accepted: a larger one is clamped to this. Revocation entries outlive
/// the tokens they cover by exactly this much, so no skew a verifier may set lets a revoked
/// token through after its entry has lapsed.
pub const MAX_CLOCK_SKEW_SECS: i64 = mandate_revocation::MAX_VERIFIER_CLOCK_SKEW_SECS;
/// The default refresh floor: at most one JWKS re-fetch per this interval on unknown `kid`s.
pub const DEFAULT_REFRESH_FLOOR: Duration = Duration::from_secs(30);
/// The default age after which a fetched JWKS is re-fetched in the background (mandate serves
/// it with `Cache-Control: max-age=300`), so that keys the server stops publishing stop being
/// trusted.
pub const DEFAULT_JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// The default limit on one revocation check; past it the token is refused (fail closed).
pub const DEFAULT_REVOCATION_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest token lifetime accepted (`exp` − `iat`): mandate's own maximum access token
/// lifetime (`tokens.access_token_ttl_secs` ≤ 86400).
pub const MAX_LIFETIME_SECS: i64 = 86_400;
/// The deepest `act` nesting accepted: mandate's own maximum chain depth
/// (`tokens.max_chain_depth` ≤ 32).
pub const MAX_ACT_DEPTH: usize = 32;

/// Verifies mandate access tokens for one app (one audience) from one issuer.
///
/// Cheap to clone (an `Arc` inside): build one at start-up and share it; the JWKS cache and its
/// refresh floor are shared by every clone.
#[derive(Clone, Debug)]
pub struct Verifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    issuer: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    skew: i64,
    keys: KeySource,
    revocation: Option<Arc<dyn RevocationSource>>,
    revocation_timeout: Duration,
    clock: Arc<dyn Clock>,
    proofs: dpop::ProofState,
}

#[derive(Debug)]
enum KeyConfig {
    Static(Value),
    Discover,
    Uri(String),
}

/// Configures a [`Verifier`]: start from [`Verifier::builder`], name where the keys come from
/// ([`jwks`](Self::jwks), [`discover`](Self::discover) or [`jwks_uri`](Self::jwks_uri)), add a
/// [`revocation`](Self::revocation) source, then [`build`](Self::build).
#[derive(Debug)]
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    keys: Vec<KeyConfig>,
    algorithms: Vec<Algorithm>,
    skew: i64,
    refresh_floor: Duration,
    jwks_max_age: Duration,
    revocation: Option<Arc<dyn RevocationSource>>,
    revocation_timeout: Duration,
    clock: Arc<dyn Clock>,
    time: Arc<dyn Monotonic>,
}

impl Verifier {
    /// Starts configuring a verifier for tokens from `issuer` (mandate's issuer, exactly as in
    /// its metadata and its tokens' `iss`) meant for `audience` (this app's own identifier, as
    /// registered with mandate: an absolute `https://` URI).
    pub fn builder(issuer: &str, audience: &str) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: Vec::new(),
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            skew: DEFAULT_CLOCK_SKEW_SECS,
            refresh_floor: DEFAULT_REFRESH_FLOOR,
            jwks_max_age: DEFAULT_JWKS_MAX_AGE,
            revocation: None,
            revocation_timeout: DEFAULT_REVOCATION_TIMEOUT,
            clock: Arc::new(SystemClock),
            time: Arc::new(SystemMonotonic),
        }
    }

    /// The issuer tokens must come from.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// This app's identifier, which tokens' `aud` must name.
    pub fn audience(&self) -> &str {
        &self.inner.audience
    }

    /// How revocations are followed: the source's mode (`followed`, `direct`, `feed`), or
    /// `none` without a source.
    pub fn revocation_mode(&self) -> &'static str {
        self.inner.revocation.as_ref().map_or("none", |s| s.mode())
    }

    /// The age of the revocation source's view, for sources that keep a copy.
    pub fn revocation_view_age(&self) -> Option<Duration> {
        self.inner.revocation.as_ref().and_then(|s| s.view_age())
    }

    /// Verifies `token` (the compact JWS from `Authorization: Bearer`, without the scheme). A
    /// DPoP-bound token is refused here ([`VerifyError::DpopRequired`]): it is accepted only with
    /// its proof, through [`Verifier::verify_presented`].
    ///
    /// Every refusal is logged at debug level (never the token itself).
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let result = self.verify_bearer(token).await;
        self.log_refusal(&result);
        result
    }

    /// [`Verifier::verify`] without the log line.
    pub(crate) async fn verify_bearer(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let verified = self.check(token).await?;
        if verified.jkt().is_some() {
            return Err(VerifyError::DpopRequired);
        }
        Ok(verified)
    }

    /// Every refusal is logged at debug level, once (never the token itself).
    pub(crate) fn log_refusal(&self, result: &Result<VerifiedToken, VerifyError>) {
        if let Err(error) = result {
            tracing::debug!(%error, audience = %self.inner.audience, "access token refused");
        }
    }

    pub(crate) fn now_secs(&self) -> i64 {
        self.inner.clock.now_secs()
    }

    pub(crate) fn skew(&self) -> i64 {
        self.inner.skew
    }

    pub(crate) fn proof_state(&self) -> &dpop::ProofState {
        &self.inner.proofs
    }

    /// Every check but the binding's.
    pub(crate) async fn check(&self, token: &str) -> Result<VerifiedToken, VerifyError> {
        let inner = &*self.inner;
        // Size bound and shape: MAX_TOKEN_BYTES is checked before anything is decoded.
        let jws = UnverifiedJws::parse(token).map_err(|_| VerifyError::Malformed)?;
        let header = jws.header();
        // RFC 9068 §4: typ first, so that no other kind of JWT is ever looked at further.
        if !header.typ_is(urn::TYP_ACCESS_TOKEN) {
            return Err(VerifyError::WrongType);
        }
        if header.crit.is_some() {
            return Err(VerifyError::Malformed);
        }
        // The allow-list decides, never the header alone (RFC 8725 §3.1): `none` and HS* have no
        // Algorithm at all.
        if !Algorithm::from_name(&header.alg).is_some_and(|alg| inner.algorithms.contains(&alg)) {
            return Err(VerifyError::Algorithm);
        }
        let verified = self.verify_signature(&jws).await?;
        let (claims, scopes, actors) = self.check_claims(&verified)?;
        if let Some(source) = &inner.revocation {
            let facts = TokenFacts::of_access_token_with_actors(&claims, &actors);
            let verdict = tokio::time::timeout(inner.revocation_timeout, source.verdict(&facts))
                .await
                .map_err(|_| VerifyError::RevocationUnavailable("timed out".into()))
                .and_then(|answer| answer);
            match verdict {
                Ok(Verdict::Live) => {}
                Ok(Verdict::Revoked { kind, id }) => return Err(VerifyError::Revoked { kind, id }),
                Err(error) => {
                    tracing::warn!(%error, "revocation status unavailable; refusing the token");
                    return Err(error);
                }
            }
        }
        Ok(VerifiedToken::new(claims, scopes, actors))
    }

    /// The signature, with the key the `kid` names; an unknown `kid` re-fetches a fetched key
    /// set once (within the refresh floor) and tries again.
    async fn verify_signature(&self, jws: &UnverifiedJws<'_>) -> Result<Verified, VerifyError> {
        let inner = &*self.inner;
        let snapshot = inner.keys.current();
        let first = jws.verify(&snapshot.keys, &inner.algorithms);
        let result = match (first, jws.header().kid.as_deref()) {
            (Err(JwtError::UnknownKey), Some(kid)) if !snapshot.has_kid(kid) => {
                match inner.keys.after_unknown_kid(kid, &snapshot).await {
                    Some(newer) => jws.verify(&newer.keys, &inner.algorithms),
                    None => Err(JwtError::UnknownKey),
                }
            }
            (result, _) => result,
        };
        result.map_err(|error| match error {
            JwtError::UnknownKey => VerifyError::UnknownKey,
            JwtError::BadSignature => VerifyError::Signature,
            JwtError::AlgorithmNotAllowed(_) => VerifyError::Algorithm,
            _ => VerifyError::Malformed,
        })
    }

    /// `iss`, `aud`, the time claims, then the shape of a mandate access token.
    fn check_claims(
        &self,
        verified: &Verified,
    ) -> Result<(AccessTokenClaims, ScopeSet, Vec<String>), VerifyError> {
        let inner = &*self.inner;
        let mut claims: Map<String, Value> =
            verified.claims().map_err(|_| VerifyError::Malformed)?;
        // RFC 8725 §3.8: exactly the issuer whose keys verified the signature.
        if claims.get("iss").and_then(Value::as_str) != Some(inner.issuer.as_str()) {
            return Err(VerifyError::Issuer);
        }
        // RFC 9068 §4, RFC 8725 §3.9: this app, compared exactly; a string or an array member.
        let ours = |v: &Value| v.as_str() == Some(inner.audience.as_str());
        let aud_ok = match claims.get("aud") {
            Some(Value::Array(values)) => values.iter().any(ours),
            Some(value) => ours(value),
            None => false,
        };
        if !aud_ok {
            return Err(VerifyError::Audience);
        }
        // NumericDates must be integers (DESIGN.md section 4): 1.5 or "1" is malformed.
        let number = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(value) => value.as_i64().map(Some).ok_or(VerifyError::Malformed),
        };
        let window = TimeWindow {
            now: inner.clock.now_secs(),
            skew: inner.skew,
        };
        window
            .check(
                number("exp")?,
                number("nbf")?,
                number("iat")?,
                MAX_LIFETIME_SECS,
            )
            .map_err(|error| match error {
                TimeError::Expired => VerifyError::Expired,
                TimeError::NotYetValid | TimeError::IssuedInFuture => VerifyError::NotYetValid,
                _ => VerifyError::Malformed,
            })?;
        // The app sees its own identifier as the audience, also when the token carried several.
        claims.insert("aud".into(), Value::String(inner.audience.clone()));
        let claims: AccessTokenClaims =
            serde_json::from_value(Value::Object(claims)).map_err(|_| VerifyError::Malformed)?;
        let required = [
            &claims.sub,
            &claims.client_id,
            &claims.jti,
            &claims.chain_id,
        ];
        if required.iter().any(|value| value.is_empty())
            || claims.act.depth(MAX_ACT_DEPTH) > MAX_ACT_DEPTH
        {
            return Err(VerifyError::Malformed);
        }
        let scopes = match claims.scope.as_deref() {
            Some(scope) => ScopeSet::parse(scope).map_err(|_| VerifyError::Malformed)?,
            None => ScopeSet::new(),
        };
        let actors = claims
            .act
            .actors(MAX_ACT_DEPTH)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Ok((claims, scopes, actors))
    }
}

impl VerifierBuilder {
    /// Static keys: a JWKS document (`{"keys":[…]}`, public keys only), never refreshed. Every
    /// key must be usable with the allowed algorithms (a typo should fail at start-up).
    pub fn jwks(mut self, jwks: Value) -> Self {
        self.keys.push(KeyConfig::Static(jwks));
        self
    }

    /// Keys from the issuer's RFC 8414 metadata: `build` GETs
    /// `{origin}/.well-known/oauth-authorization-server{issuer path}`, checks that its `issuer`
    /// is identical to the configured one, and fetches its `jwks_uri` (https only; http on
    /// loopback). The key set is cached, re-fetched when a token names an unknown `kid` (at most
    /// once per [`refresh_floor`](Self::refresh_floor)) and when older than
    /// [`jwks_max_age`](Self::jwks_max_age).
    pub fn discover(mut self) -> Self {
        self.keys.push(KeyConfig::Discover);
        self
    }

    /// Keys fetched from this URI, as [`discover`](Self::discover) does but without the metadata
    /// request.
    pub fn jwks_uri(mut self, uri: &str) -> Self {
        self.keys.push(KeyConfig::Uri(uri.to_owned()));
        self
    }

    /// The signature algorithms accepted; default [`DEFAULT_ALGORITHMS`] (ES256 and EdDSA, what
    /// mandate signs with). There is no way to allow `none` or HMAC.
    pub fn algorithms(mut self, algs: &[Algorithm]) -> Self {
        self.algorithms = algs.to_vec();
        self
    }

    /// The allowed clock difference for `exp`, `nbf` and `iat`, in seconds; default 60, clamped
    /// to `0..=300`.
    pub fn clock_skew(mut self, secs: i64) -> Self {
        self.skew = secs.clamp(0, MAX_CLOCK_SKEW_SECS);
        self
    }

    /// At most one JWKS re-fetch per this interval when tokens name unknown `kid`s (so tokens
    /// with random `kid`s cannot make the app hammer the issuer); default 30 s.
    pub fn refresh_floor(mut self, floor: Duration) -> Self {
        self.refresh_floor = floor;
        self
    }

    /// A fetched JWKS older than this is re-fetched in the background (failures keep the cached
    /// set); default 300 s.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// Where revocations are checked, e.g. `Arc::new(Direct(store))`.
    ///
    /// **Default: none. Without a source, revoked tokens — a revoked hop, chain, agent or user —
    /// are accepted until they expire.** Leave it out only in tests and offline tools.
    pub fn revocation(mut self, source: Arc<dyn RevocationSource>) -> Self {
        self.revocation = Some(source);
        self
    }

    /// The limit on one revocation check; past it the token is refused with
    /// [`VerifyError::RevocationUnavailable`]. Default 3 s.
    pub fn revocation_timeout(mut self, timeout: Duration) -> Self {
        self.revocation_timeout = timeout;
        self
    }

    /// The clock `exp`, `nbf` and `iat` are checked against (tests); default the system clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The monotonic clock the key set's age and the refresh floor are measured with (tests);
    /// default the process's.
    pub fn monotonic(mut self, time: Arc<dyn Monotonic>) -> Self {
        self.time = time;
        self
    }

    /// Builds the verifier. With [`discover`](Self::discover) or [`jwks_uri`](Self::jwks_uri)
    /// this fetches the metadata and the keys now, so an app whose issuer is unreachable or
    /// misconfigured fails at start-up ([`VerifyError::Discovery`], [`VerifyError::Keys`]).
    pub async fn build(self) -> Result<Verifier, VerifyError> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(VerifyError::Keys(
                "the issuer and the audience must not be empty".into(),
            ));
        }
        if self.algorithms.is_empty() {
            return Err(VerifyError::Keys("no signature algorithm allowed".into()));
        }
        let mut configs = self.keys;
        let config = match (configs.pop(), configs.is_empty()) {
            (Some(config), true) => config,
            (None, _) => {
                return Err(VerifyError::Keys(
                    "no key source: call jwks, discover or jwks_uri".into(),
                ))
            }
            (Some(_), false) => {
                return Err(VerifyError::Keys(
                    "more than one key source: call only one of jwks, discover and jwks_uri".into(),
                ))
            }
        };
        let keys = match config {
            KeyConfig::Static(document) => KeySource::from_static(&document, &self.algorithms)?,
            KeyConfig::Discover | KeyConfig::Uri(_) => {
                let client = keys::http_client()?;
                let url = match config {
                    KeyConfig::Uri(uri) => keys::checked_url(&uri)
                        .map_err(|m| VerifyError::Keys(format!("jwks_uri: {m}")))?,
                    _ => keys::discover_jwks_uri(&client, &self.issuer).await?,
                };
                let remote = RemoteJwks::fetch_initial(
                    url,
                    client,
                    self.algorithms.clone(),
                    self.refresh_floor,
                    self.jwks_max_age,
                    Arc::clone(&self.time),
                )
                .await?;
                KeySource::Remote(Arc::new(remote))
            }
        };
        if self.revocation.is_none() {
            tracing::warn!(
                audience = %self.audience,
                "mandate-verify built WITHOUT a revocation source: revoked tokens are accepted \
                 until they expire"
            );
        }
        Ok(Verifier {
            inner: Arc::new(Inner {
                issuer: self.issuer,
                audience: self.audience,
                algorithms: self.algorithms,
                skew: self.skew,
                keys,
                revocation: self.revocation,
                revocation_timeout: self.revocation_timeout,
                clock: self.clock,
                proofs: dpop::ProofState::default(),
            }),
        })
    }
}
