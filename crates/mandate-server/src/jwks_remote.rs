//! The key set of a trusted issuer configured with `jwks_uri` (DESIGN.md section 10): fetched over
//! HTTPS, cached, and re-fetched when it ages or when a token names a `kid` it lacks.
//!
//! Fetching a URL is an SSRF surface, so the rules of PROTOCOLS.md section 6.2 (RFC 9700 §4.x) and
//! RFC 8725 §3 apply: only the URI an operator configured for an issuer is ever fetched (never a
//! `jku`/`x5u` from a token header), https only (http on loopback for tests and development), no
//! redirects, a timeout on the whole exchange, a cap on the body that is enforced while reading,
//! and at most one re-fetch per interval however many unknown `kid`s arrive. The document is
//! parsed with [`VerifyingKeySet::from_jwks`], so keys that do not fit the issuer's configured
//! algorithms are refused rather than used.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mandate_model::{Monotonic, SystemMonotonic};
use mandate_token::{Algorithm, VerifyingKeySet};
use serde_json::Value;
use url::Url;

/// Why a remote key set could not be obtained.
///
/// The variants say where it failed so that an operator reading the log can tell a
/// misconfiguration (`NotAllowed`, `Http`, `Invalid`) from an unreachable IdP (`Timeout`,
/// `Network`) or a hostile or broken response (`TooLarge`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksFetchError {
    /// The URI is not `https` (nor `http` on a loopback host), has no host, or carries
    /// credentials: PROTOCOLS.md section 6.2 allows https JWKS only.
    #[error("JWKS URI refused: use https:// (http:// only on loopback) without credentials")]
    NotAllowed,
    /// The server did not answer in full within the configured timeout.
    #[error("JWKS fetch timed out")]
    Timeout,
    /// The body was larger than the configured maximum; reading stopped there.
    #[error("JWKS response exceeds the size limit")]
    TooLarge,
    /// The server answered with a status other than 2xx (redirects are not followed).
    #[error("JWKS fetch answered HTTP {0}")]
    Http(u16),
    /// The body is not JSON, not a JWKS, or holds a key unusable with the issuer's algorithms.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
    /// Connection, TLS or protocol failure.
    #[error("JWKS fetch failed: {0}")]
    Network(String),
}

/// Bounds on fetching one remote JWKS.
///
/// They exist so that a slow, huge or flapping IdP — or an attacker sending tokens with random
/// `kid`s — cannot tie up mandate's workers or make it hammer the IdP (PROTOCOLS.md section 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Limit on one whole fetch: connecting, TLS, headers and body.
    pub timeout: Duration,
    /// Largest body accepted, counted while reading (Content-Length is not trusted alone).
    pub max_bytes: usize,
    /// At most one fetch per this interval when a token names an unknown `kid`, and after a
    /// failed fetch (so an outage does not turn every request into an outbound call).
    pub min_refresh_interval: Duration,
    /// A cached set older than this is re-fetched; it is still served after a failed re-fetch
    /// until twice this age, so a brief IdP outage does not stop token exchange.
    pub max_age: Duration,
}

impl Default for FetchLimits {
    /// 5 s timeout, 256 KiB body, one refresh per minute, one-hour cache: an IdP's JWKS is a few
    /// KiB and changes on key rotation, which IdPs announce well ahead of use.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            min_refresh_interval: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        }
    }
}

/// A fetched key set and what is needed to answer questions about it without locking the fetch.
struct Cached {
    keys: Arc<VerifyingKeySet>,
    /// The `kid`s in `keys` ([`VerifyingKeySet`] does not expose a lookup outside its crate).
    kids: HashSet<String>,
    fetched_at: Instant,
}

/// What the fetch lock protects: when the last attempt finished and, if it failed, why.
#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<JwksFetchError>,
}

impl FetchState {
    fn attempted_within(&self, interval: Duration, now: Instant) -> bool {
        self.last_attempt
            .is_some_and(|at| now.saturating_duration_since(at) < interval)
    }
}

/// The verifying keys of one trusted issuer, fetched from its configured `jwks_uri`.
///
/// Share one per issuer (in an `Arc`) across all requests: the cache and the fetch lock are what
/// keep mandate to one outbound request per refresh, whatever the request rate. Only the URI given
/// to [`RemoteJwks::new`] is ever fetched; nothing in a token can change it (RFC 8725 §3.10 and
/// PROTOCOLS.md section 6.1: header-supplied `jku`/`x5u` are ignored).
pub struct RemoteJwks {
    url: Url,
    algorithms: Vec<Algorithm>,
    limits: FetchLimits,
    client: reqwest::Client,
    time: Arc<dyn Monotonic>,
    cache: RwLock<Option<Cached>>,
    /// Held across a fetch, so concurrent callers wait for one fetch instead of each starting
    /// their own (no thundering herd on the IdP).
    fetch: tokio::sync::Mutex<FetchState>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.read_cache(|c| (c.keys.len(), self.age(c)));
        f.debug_struct("RemoteJwks")
            .field("uri", &self.url.as_str())
            .field("algorithms", &self.algorithms)
            .field("limits", &self.limits)
            .field("cached_keys", &cached.map(|(n, _)| n))
            .field("cache_age", &cached.map(|(_, age)| age))
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// Refuses (`NotAllowed`) a URI that is not https, except http on a loopback host.
    ///
    /// Checked here, at configuration time, so that a plain-http JWKS — whose keys anyone on the
    /// path could replace — is a start-up error rather than a runtime surprise (PROTOCOLS.md
    /// section 6.2: https only). URIs with user-info are refused too: credentials do not belong in
    /// configuration that is logged and shown.
    pub fn new(
        uri: &str,
        algorithms: Vec<Algorithm>,
        limits: FetchLimits,
    ) -> Result<Self, JwksFetchError> {
        let url = mandate_fetch::checked_url(uri).map_err(|_| JwksFetchError::NotAllowed)?;
        let client = mandate_fetch::http_client(
            bounds(&limits),
            url.scheme() == "https",
            concat!("mandate/", env!("CARGO_PKG_VERSION")),
        )?;
        Ok(Self {
            url,
            algorithms,
            limits,
            client,
            time: Arc::new(SystemMonotonic),
            cache: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    /// Measures the cache's age and the refresh interval with `time` (tests move it instead of
    /// sleeping); the default is the process's monotonic clock.
    #[must_use]
    pub fn with_monotonic(mut self, time: Arc<dyn Monotonic>) -> Self {
        self.time = time;
        self
    }

    fn age(&self, cached: &Cached) -> Duration {
        self.time.now().saturating_duration_since(cached.fetched_at)
    }

    /// The cached key set, fetched on first use and re-fetched when older than `max_age`.
    ///
    /// If a re-fetch fails, the previous set is served until it is twice `max_age` old (an IdP
    /// outage should not stop exchanges at once), and the next attempt waits
    /// `min_refresh_interval`; with nothing usable cached, the fetch error is returned.
    pub async fn keys(&self) -> Result<Arc<VerifyingKeySet>, JwksFetchError> {
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        let mut state = self.fetch.lock().await;
        // Another caller may have fetched while this one waited for the lock.
        if let Some(keys) = self.fresh() {
            return Ok(keys);
        }
        if state.attempted_within(self.limits.min_refresh_interval, self.time.now()) {
            if let Some(error) = &state.last_error {
                return self.usable().ok_or_else(|| error.clone());
            }
        }
        self.fetch_and_store(&mut state).await
    }

    /// Called when a token names a `kid` the cached set lacks: re-fetch, but at most once per
    /// `min_refresh_interval` (otherwise return the cached set unchanged, so an attacker sending
    /// random kids cannot make mandate hammer the IdP).
    ///
    /// An IdP that rotates keys starts signing with a new `kid`; this is how mandate learns it
    /// without waiting for `max_age` (RFC 7517 §5, OIDC Core §10.1.1).
    pub async fn refresh_for_unknown_kid(&self) -> Result<Arc<VerifyingKeySet>, JwksFetchError> {
        let mut state = self.fetch.lock().await;
        if state.attempted_within(self.limits.min_refresh_interval, self.time.now()) {
            if let Some(keys) = self.usable() {
                return Ok(keys);
            }
            if let Some(error) = &state.last_error {
                return Err(error.clone());
            }
        }
        self.fetch_and_store(&mut state).await
    }

    /// How old the cached set is (`None` before the first fetch succeeded).
    pub fn cache_age(&self) -> Option<Duration> {
        self.read_cache(|c| self.age(c))
    }

    /// Whether the cached set has a key with this kid (false if nothing is cached yet).
    ///
    /// Lets a verifier decide between [`RemoteJwks::keys`] and
    /// [`RemoteJwks::refresh_for_unknown_kid`] without waiting on a fetch in progress.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.read_cache(|c| c.kids.contains(kid)).unwrap_or(false)
    }

    fn read_cache<T>(&self, f: impl FnOnce(&Cached) -> T) -> Option<T> {
        // A poisoned lock only means a panic elsewhere while holding it; the data (an Option
        // replaced whole) is still consistent.
        let guard = self.cache.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(f)
    }

    /// The cached set if it is younger than `max_age`.
    fn fresh(&self) -> Option<Arc<VerifyingKeySet>> {
        self.cached_within(self.limits.max_age)
    }

    /// The cached set if it may still be served after a failed re-fetch.
    fn usable(&self) -> Option<Arc<VerifyingKeySet>> {
        self.cached_within(self.limits.max_age.saturating_mul(2))
    }

    fn cached_within(&self, age: Duration) -> Option<Arc<VerifyingKeySet>> {
        self.read_cache(|c| (self.age(c) <= age).then(|| Arc::clone(&c.keys)))
            .flatten()
    }

    /// Fetches, records the attempt and, on success, replaces the cache. Called with the fetch
    /// lock held.
    async fn fetch_and_store(
        &self,
        state: &mut FetchState,
    ) -> Result<Arc<VerifyingKeySet>, JwksFetchError> {
        let result = self.fetch_once().await;
        let now = self.time.now();
        state.last_attempt = Some(now);
        match result {
            Ok((keys, kids)) => {
                state.last_error = None;
                let keys = Arc::new(keys);
                tracing::info!(jwks_uri = %self.url, keys = keys.len(), "fetched issuer JWKS");
                let mut guard = self.cache.write().unwrap_or_else(|e| e.into_inner());
                *guard = Some(Cached {
                    keys: Arc::clone(&keys),
                    kids,
                    fetched_at: now,
                });
                Ok(keys)
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                match self.usable() {
                    Some(keys) => {
                        let age = self.read_cache(|c| self.age(c).as_secs());
                        tracing::warn!(
                            jwks_uri = %self.url,
                            %error,
                            cached_age_secs = age,
                            "JWKS re-fetch failed; serving the cached key set"
                        );
                        Ok(keys)
                    }
                    None => {
                        tracing::warn!(jwks_uri = %self.url, %error, "JWKS fetch failed");
                        Err(error)
                    }
                }
            }
        }
    }

    /// One GET of the JWKS under the shared fetch policy (mandate-fetch).
    async fn fetch_once(&self) -> Result<(VerifyingKeySet, HashSet<String>), JwksFetchError> {
        let body = mandate_fetch::fetch(
            &self.client,
            &self.url,
            "application/jwk-set+json, application/json",
            bounds(&self.limits),
        )
        .await?;
        let document: Value = serde_json::from_slice(&body)
            .map_err(|e| JwksFetchError::Invalid(format!("not JSON: {e}")))?;
        let keys = VerifyingKeySet::from_jwks(&document, &self.algorithms)
            .map_err(|e| JwksFetchError::Invalid(e.to_string()))?;
        let kids = keys.kids();
        Ok((keys, kids))
    }
}

fn bounds(limits: &FetchLimits) -> mandate_fetch::FetchBounds {
    mandate_fetch::FetchBounds {
        timeout: limits.timeout,
        max_bytes: limits.max_bytes,
    }
}

impl From<mandate_fetch::FetchError> for JwksFetchError {
    fn from(error: mandate_fetch::FetchError) -> Self {
        use mandate_fetch::FetchError;
        match error {
            FetchError::NotAllowed(_) => JwksFetchError::NotAllowed,
            FetchError::Timeout => JwksFetchError::Timeout,
            FetchError::TooLarge(_) => JwksFetchError::TooLarge,
            FetchError::Http(status) => JwksFetchError::Http(status),
            FetchError::Network(message) => JwksFetchError::Network(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mandate_model::ManualMonotonic;
    use mandate_token::{SigningAlgorithm, SigningKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the test server answers to the n-th request (counting from 0).
    struct Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
        delay: Duration,
        content_length: bool,
    }

    impl Reply {
        fn json(body: String) -> Self {
            Self {
                status: 200,
                headers: vec![("Content-Type", "application/json".to_owned())],
                body: body.into_bytes(),
                delay: Duration::ZERO,
                content_length: true,
            }
        }

        fn status(status: u16) -> Self {
            Self {
                status,
                headers: Vec::new(),
                body: Vec::new(),
                delay: Duration::ZERO,
                content_length: true,
            }
        }
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1:0: one request per connection, then close.
    struct TestServer {
        base: String,
        hits: Arc<AtomicUsize>,
    }

    impl TestServer {
        async fn start(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let hits = Arc::new(AtomicUsize::new(0));
            let reply = Arc::new(reply);
            let counter = Arc::clone(&hits);
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let reply = Arc::clone(&reply);
                    let counter = Arc::clone(&counter);
                    tokio::spawn(async move {
                        let mut request = Vec::new();
                        let mut buf = [0_u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match socket.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let r = reply(counter.fetch_add(1, Ordering::SeqCst));
                        tokio::time::sleep(r.delay).await;
                        let mut head =
                            format!("HTTP/1.1 {} Test\r\nConnection: close\r\n", r.status);
                        for (name, value) in &r.headers {
                            head.push_str(&format!("{name}: {value}\r\n"));
                        }
                        if r.content_length {
                            head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
                        }
                        head.push_str("\r\n");
                        // The client may hang up early (size limit): ignore write errors.
                        let _ = socket.write_all(head.as_bytes()).await;
                        let _ = socket.write_all(&r.body).await;
                        let _ = socket.shutdown().await;
                    });
                }
            });
            Self { base, hits }
        }

        fn uri(&self) -> String {
            format!("{}/jwks", self.base)
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    fn ec_jwks() -> (String, String) {
        let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
        let jwks = serde_json::json!({ "keys": [key.public_key().jwk()] });
        (jwks.to_string(), key.kid().to_owned())
    }

    fn es256() -> Vec<Algorithm> {
        vec![Algorithm::Es256]
    }

    fn limits(min_refresh_ms: u64, max_age_ms: u64) -> FetchLimits {
        FetchLimits {
            min_refresh_interval: Duration::from_millis(min_refresh_ms),
            max_age: Duration::from_millis(max_age_ms),
            ..FetchLimits::default()
        }
    }

    #[tokio::test]
    async fn first_use_fetches_then_the_cache_serves() {
        let (jwks, kid) = ec_jwks();
        let server = TestServer::start(move |_| Reply::json(jwks.clone())).await;
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert!(!remote.has_kid(&kid), "nothing cached yet");
        assert_eq!(server.hits(), 0, "new() does not fetch");

        let first = remote.keys().await.unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(server.hits(), 1);
        let second = remote.keys().await.unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(server.hits(), 1);

        assert!(remote.has_kid(&kid));
        assert!(!remote.has_kid("someone-else"));
        let debug = format!("{remote:?}");
        assert!(debug.contains(&server.uri()) && debug.contains("cached_keys: Some(1)"));
    }

    #[tokio::test]
    async fn concurrent_first_use_fetches_once() {
        let (jwks, _) = ec_jwks();
        let server = TestServer::start(move |_| Reply {
            delay: Duration::from_millis(100),
            ..Reply::json(jwks.clone())
        })
        .await;
        let remote =
            Arc::new(RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap());
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let remote = Arc::clone(&remote);
            tasks.push(tokio::spawn(async move { remote.keys().await }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap().len(), 1);
        }
        assert_eq!(server.hits(), 1);
    }

    #[tokio::test]
    async fn unknown_kid_refresh_is_rate_limited() {
        let (jwks, _) = ec_jwks();
        let server = TestServer::start(move |_| Reply::json(jwks.clone())).await;
        let time = Arc::new(ManualMonotonic::default());
        let remote = RemoteJwks::new(&server.uri(), es256(), limits(60_000, 3_600_000))
            .unwrap()
            .with_monotonic(time.clone());

        let first = remote.keys().await.unwrap();
        assert_eq!(server.hits(), 1);
        let unchanged = remote.refresh_for_unknown_kid().await.unwrap();
        assert!(Arc::ptr_eq(&first, &unchanged));
        for _ in 0..10 {
            remote.refresh_for_unknown_kid().await.unwrap();
        }
        assert_eq!(server.hits(), 1, "no fetch within min_refresh_interval");
        time.advance(Duration::from_millis(59_999));
        remote.refresh_for_unknown_kid().await.unwrap();
        assert_eq!(server.hits(), 1, "no fetch within min_refresh_interval");

        time.advance(Duration::from_millis(1));
        let refreshed = remote.refresh_for_unknown_kid().await.unwrap();
        assert_eq!(server.hits(), 2);
        assert!(!Arc::ptr_eq(&first, &refreshed));
        remote.refresh_for_unknown_kid().await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn unknown_kid_refresh_picks_up_a_rotated_key() {
        let (old, old_kid) = ec_jwks();
        let (new, new_kid) = ec_jwks();
        let server =
            TestServer::start(move |n| Reply::json(if n == 0 { old.clone() } else { new.clone() }))
                .await;
        let remote = RemoteJwks::new(&server.uri(), es256(), limits(0, 3_600_000)).unwrap();
        remote.keys().await.unwrap();
        assert!(remote.has_kid(&old_kid) && !remote.has_kid(&new_kid));
        remote.refresh_for_unknown_kid().await.unwrap();
        assert!(remote.has_kid(&new_kid) && !remote.has_kid(&old_kid));
    }

    #[tokio::test]
    async fn an_old_cache_is_refetched() {
        let (jwks, _) = ec_jwks();
        let server = TestServer::start(move |_| Reply::json(jwks.clone())).await;
        let time = Arc::new(ManualMonotonic::default());
        let remote = RemoteJwks::new(&server.uri(), es256(), limits(0, 3_600_000))
            .unwrap()
            .with_monotonic(time.clone());
        remote.keys().await.unwrap();
        time.advance(Duration::from_secs(3600));
        remote.keys().await.unwrap();
        assert_eq!(server.hits(), 1, "not older than max_age yet");
        time.advance(Duration::from_millis(1));
        remote.keys().await.unwrap();
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn a_failed_refetch_serves_the_cache_until_twice_max_age() {
        let (jwks, _) = ec_jwks();
        let server = TestServer::start(move |n| {
            if n == 0 {
                Reply::json(jwks.clone())
            } else {
                Reply::status(500)
            }
        })
        .await;
        let time = Arc::new(ManualMonotonic::default());
        let remote = RemoteJwks::new(&server.uri(), es256(), limits(0, 3_600_000))
            .unwrap()
            .with_monotonic(time.clone());
        let first = remote.keys().await.unwrap();

        time.advance(Duration::from_secs(3601)); // older than max_age, < 2 × max_age
        let stale = remote.keys().await.unwrap();
        assert!(Arc::ptr_eq(&first, &stale));
        assert_eq!(server.hits(), 2);
        time.advance(Duration::from_secs(3599)); // exactly 2 × max_age: still served
        assert!(Arc::ptr_eq(&first, &remote.keys().await.unwrap()));
        assert_eq!(server.hits(), 3);

        time.advance(Duration::from_millis(1)); // older than 2 × max_age
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(500));
        assert_eq!(server.hits(), 4);
    }

    #[tokio::test]
    async fn a_failure_with_nothing_cached_is_an_error_and_is_not_retried_at_once() {
        let server = TestServer::start(|_| Reply::status(500)).await;
        let time = Arc::new(ManualMonotonic::default());
        let remote = RemoteJwks::new(&server.uri(), es256(), limits(60_000, 3_600_000))
            .unwrap()
            .with_monotonic(time.clone());
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(500));
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(500));
        assert_eq!(
            remote.refresh_for_unknown_kid().await.unwrap_err(),
            JwksFetchError::Http(500)
        );
        assert_eq!(server.hits(), 1);
        time.advance(Duration::from_secs(60));
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(500));
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_too_large() {
        let big = vec![b' '; 300 * 1024];
        // Without Content-Length (read until close): caught while reading.
        let streamed = big.clone();
        let server = TestServer::start(move |_| Reply {
            body: streamed.clone(),
            content_length: false,
            ..Reply::status(200)
        })
        .await;
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::TooLarge);

        // With an honest Content-Length: refused before reading.
        let server = TestServer::start(move |_| Reply {
            body: big.clone(),
            ..Reply::status(200)
        })
        .await;
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::TooLarge);

        // A body exactly at the limit is read.
        let (jwks, _) = ec_jwks();
        let exact = jwks.len();
        let server = TestServer::start(move |_| Reply {
            content_length: false,
            ..Reply::json(jwks.clone())
        })
        .await;
        let limits = FetchLimits {
            max_bytes: exact,
            ..FetchLimits::default()
        };
        let remote = RemoteJwks::new(&server.uri(), es256(), limits).unwrap();
        assert_eq!(remote.keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_slow_server_times_out() {
        let (jwks, _) = ec_jwks();
        let server = TestServer::start(move |_| Reply {
            delay: Duration::from_secs(3),
            ..Reply::json(jwks.clone())
        })
        .await;
        let limits = FetchLimits {
            timeout: Duration::from_millis(300),
            ..FetchLimits::default()
        };
        let remote = RemoteJwks::new(&server.uri(), es256(), limits).unwrap();
        let started = Instant::now();
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Timeout);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_server_error_is_reported_with_its_status() {
        let server = TestServer::start(|_| Reply::status(500)).await;
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(500));
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (jwks, _) = ec_jwks();
        let target = Arc::new(std::sync::OnceLock::new());
        let location = Arc::clone(&target);
        let server = TestServer::start(move |n| {
            if n == 0 {
                Reply {
                    headers: vec![("Location", location.get().cloned().unwrap_or_default())],
                    ..Reply::status(302)
                }
            } else {
                Reply::json(jwks.clone())
            }
        })
        .await;
        target.set(format!("{}/elsewhere", server.base)).unwrap();
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert_eq!(remote.keys().await.unwrap_err(), JwksFetchError::Http(302));
        assert_eq!(server.hits(), 1, "the Location was not fetched");
    }

    #[tokio::test]
    async fn only_https_or_loopback_http_is_allowed() {
        let new = |uri: &str| RemoteJwks::new(uri, es256(), FetchLimits::default());
        for refused in [
            "http://example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "file:///etc/passwd",
            "https://user:secret@idp.example.com/jwks",
            "not a uri",
            "",
        ] {
            assert_eq!(
                new(refused).unwrap_err(),
                JwksFetchError::NotAllowed,
                "{refused}"
            );
        }
        for allowed in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:1/jwks",
            "http://localhost:8080/jwks",
            "http://[::1]:8080/jwks",
        ] {
            assert!(new(allowed).is_ok(), "{allowed}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_network_error() {
        // Bind and drop a listener to get a local port with nobody behind it.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let remote = RemoteJwks::new(
            &format!("http://127.0.0.1:{port}/jwks"),
            es256(),
            FetchLimits::default(),
        )
        .unwrap();
        assert!(matches!(
            remote.keys().await.unwrap_err(),
            JwksFetchError::Network(_)
        ));
    }

    #[tokio::test]
    async fn keys_unusable_with_the_issuer_algorithms_are_invalid() {
        // RFC 7638 §3.1's example RSA key, offered to an issuer configured for ES256 only.
        let rsa = serde_json::json!({ "keys": [{
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "kid": "2011-04-29"
        }]})
        .to_string();
        let server = TestServer::start(move |_| Reply::json(rsa.clone())).await;
        let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
        assert!(matches!(
            remote.keys().await.unwrap_err(),
            JwksFetchError::Invalid(_)
        ));
        assert!(!remote.has_kid("2011-04-29"));
    }

    #[tokio::test]
    async fn a_body_that_is_not_a_jwks_is_invalid() {
        for body in ["<html>hello</html>", "[]", "{\"keys\":[]}"] {
            let server = TestServer::start(move |_| Reply::json(body.to_owned())).await;
            let remote = RemoteJwks::new(&server.uri(), es256(), FetchLimits::default()).unwrap();
            assert!(
                matches!(remote.keys().await.unwrap_err(), JwksFetchError::Invalid(_)),
                "{body}"
            );
        }
    }
}
