//! The issuer's keys: a static JWKS, or one fetched from `jwks_uri` (found by RFC 8414 discovery
//! or given), cached and re-fetched when a token names a `kid` the cache lacks.
//!
//! Fetching a URL is an SSRF and denial-of-service surface (PROTOCOLS.md sections 6.1 and 6.2,
//! RFC 8725 §3.10), so: only the URI from configuration or from the issuer's own metadata is
//! fetched (never a `jku`/`x5u` from a token header); https only, http on loopback for tests and
//! development; no redirects; a timeout on the whole exchange; a body cap enforced while reading;
//! at most one re-fetch per refresh floor however many unknown `kid`s arrive.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use mandate_model::Monotonic;

use mandate_token::{Algorithm, VerifyingKey, VerifyingKeySet};
use serde_json::Value;
use url::Url;

use crate::VerifyError;

/// Limit on one whole fetch (connect, TLS, headers, body), and the largest metadata or JWKS body
/// read: the shared policy's defaults (mandate-fetch).
fn bounds() -> mandate_fetch::FetchBounds {
    mandate_fetch::FetchBounds::default()
}
/// RFC 8414 §3: the well-known suffix inserted between host and issuer path.
const WELL_KNOWN: &str = "/.well-known/oauth-authorization-server";

/// Refuses URLs that are not https (or http on a loopback host), have no host, or carry
/// credentials or a fragment: the shared fetch policy (mandate-fetch), with its reason as text.
pub(crate) fn checked_url(uri: &str) -> Result<Url, String> {
    mandate_fetch::checked_url(uri).map_err(|e| match e {
        mandate_fetch::FetchError::NotAllowed(reason) => reason.to_owned(),
        other => other.to_string(),
    })
}

/// RFC 8414 §3.1: the metadata URL of `issuer`, with the well-known segment inserted between
/// the host and the issuer's path (`https://as/t1` → `https://as/.well-known/…/t1`).
pub(crate) fn metadata_url(issuer: &str) -> Result<Url, VerifyError> {
    let mut url =
        checked_url(issuer).map_err(|m| VerifyError::Discovery(format!("issuer: {m}")))?;
    if url.query().is_some() {
        return Err(VerifyError::Discovery(
            "issuer: an issuer has no query (RFC 8414 §2)".into(),
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{WELL_KNOWN}{path}"));
    Ok(url)
}

/// The HTTP client for metadata and keys, under the shared fetch policy: no redirects, a
/// timeout, our own user agent.
pub(crate) fn http_client() -> Result<reqwest::Client, VerifyError> {
    mandate_fetch::http_client(
        bounds(),
        false,
        concat!("mandate-verify/", env!("CARGO_PKG_VERSION")),
    )
    .map_err(|e| VerifyError::Keys(format!("HTTP client: {e}")))
}

/// GETs `url` as JSON, bounded in time as a whole and in size while reading.
async fn get_json(client: &reqwest::Client, url: &Url, accept: &str) -> Result<Value, String> {
    let body = mandate_fetch::fetch(client, url, accept, bounds())
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|_| "the response is not JSON".to_owned())
}

/// RFC 8414 discovery: fetches the metadata, checks that its `issuer` is identical to the one
/// the URL was built from (§3.3: this is what stops one server impersonating another), and
/// returns its `jwks_uri`.
pub(crate) async fn discover_jwks_uri(
    client: &reqwest::Client,
    issuer: &str,
) -> Result<Url, VerifyError> {
    let url = metadata_url(issuer)?;
    let metadata = get_json(client, &url, "application/json")
        .await
        .map_err(|m| VerifyError::Discovery(format!("{url}: {m}")))?;
    let announced = metadata.get("issuer").and_then(Value::as_str);
    if announced != Some(issuer) {
        return Err(VerifyError::Discovery(format!(
            "{url}: the metadata's issuer is not '{issuer}'"
        )));
    }
    let jwks_uri = metadata
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or_else(|| VerifyError::Discovery(format!("{url}: no jwks_uri")))?;
    checked_url(jwks_uri).map_err(|m| VerifyError::Discovery(format!("jwks_uri: {m}")))
}

/// One parsed key set and the `kid`s in it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) keys: VerifyingKeySet,
    kids: HashSet<String>,
    fetched_at: Instant,
}

impl Snapshot {
    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.kids.contains(kid)
    }

    /// Keys of a fetched JWKS. Keys that are marked `use: enc`, or that fit none of the allowed
    /// algorithms (an unknown `kty`, an RSA key when only ES256 is allowed), are skipped rather
    /// than failing the whole set (RFC 7517 §5: ignore what cannot be used); a set with no usable
    /// key at all is an error.
    fn from_fetched(
        document: &Value,
        algorithms: &[Algorithm],
        fetched_at: Instant,
    ) -> Result<Self, String> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "not a JWK set".to_owned())?;
        let mut built = Vec::new();
        for key in keys {
            let Some(map) = key.as_object() else { continue };
            if map.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            match VerifyingKey::from_jwk(map, algorithms) {
                Ok(key) => built.push(key),
                Err(error) => tracing::debug!(%error, "skipping a published key"),
            }
        }
        if built.is_empty() {
            return Err("no key usable with the allowed algorithms".into());
        }
        let keys = VerifyingKeySet::new(built).map_err(|e| e.to_string())?;
        Ok(Self::of(keys, fetched_at))
    }

    fn of(keys: VerifyingKeySet, fetched_at: Instant) -> Self {
        Self {
            kids: keys.kids(),
            keys,
            fetched_at,
        }
    }
}

/// Where the keys come from.
pub(crate) enum KeySource {
    /// Given at build time; never refreshed.
    Static(Arc<Snapshot>),
    /// Fetched from `jwks_uri`.
    Remote(Arc<RemoteJwks>),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(snapshot) => f
                .debug_struct("Static")
                .field("keys", &snapshot.keys.len())
                .finish(),
            Self::Remote(remote) => remote.fmt(f),
        }
    }
}

impl KeySource {
    /// A static JWKS, parsed strictly: a key that cannot be used is a configuration error the
    /// app's operator should see at start-up.
    pub(crate) fn from_static(
        document: &Value,
        algorithms: &[Algorithm],
    ) -> Result<Self, VerifyError> {
        let keys = VerifyingKeySet::from_jwks(document, algorithms)
            .map_err(|e| VerifyError::Keys(e.to_string()))?;
        // A static set never ages: its fetch time is never read.
        Ok(Self::Static(Arc::new(Snapshot::of(keys, Instant::now()))))
    }

    /// The keys to verify with now. A remote set older than its maximum age is re-fetched in the
    /// background (the current set keeps serving meanwhile).
    pub(crate) fn current(&self) -> Arc<Snapshot> {
        match self {
            Self::Static(snapshot) => Arc::clone(snapshot),
            Self::Remote(remote) => {
                let snapshot = remote.cached();
                if remote.age(&snapshot) > remote.max_age {
                    RemoteJwks::refresh_in_background(remote);
                }
                snapshot
            }
        }
    }

    /// Called when a token names `kid` and `seen` lacks it: for a fetched set, re-fetch (at most
    /// once per refresh floor) and return the newer set if there is one.
    pub(crate) async fn after_unknown_kid(
        &self,
        kid: &str,
        seen: &Arc<Snapshot>,
    ) -> Option<Arc<Snapshot>> {
        match self {
            Self::Static(_) => None,
            Self::Remote(remote) => {
                let latest = remote.refresh_for_unknown_kid(kid).await;
                (!Arc::ptr_eq(&latest, seen)).then_some(latest)
            }
        }
    }
}

/// A JWKS fetched from a URI, cached, re-fetched on an unknown `kid` (at most once per floor)
/// and when older than its maximum age.
pub(crate) struct RemoteJwks {
    url: Url,
    client: reqwest::Client,
    algorithms: Vec<Algorithm>,
    floor: Duration,
    max_age: Duration,
    time: Arc<dyn Monotonic>,
    cache: RwLock<Arc<Snapshot>>,
    /// When the last fetch was attempted. Held across a fetch, so concurrent callers wait for
    /// that one fetch instead of starting their own.
    last_attempt: tokio::sync::Mutex<Instant>,
}

impl fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.cached();
        f.debug_struct("RemoteJwks")
            .field("jwks_uri", &self.url.as_str())
            .field("keys", &cached.keys.len())
            .field("age", &self.age(&cached))
            .field("refresh_floor", &self.floor)
            .field("max_age", &self.max_age)
            .finish()
    }
}

impl RemoteJwks {
    /// Fetches the set once: a verifier that cannot get its keys at start-up fails to build.
    pub(crate) async fn fetch_initial(
        url: Url,
        client: reqwest::Client,
        algorithms: Vec<Algorithm>,
        floor: Duration,
        max_age: Duration,
        time: Arc<dyn Monotonic>,
    ) -> Result<Self, VerifyError> {
        let snapshot = fetch(&client, &url, &algorithms, time.as_ref())
            .await
            .map_err(|m| VerifyError::Keys(format!("{url}: {m}")))?;
        tracing::info!(jwks_uri = %url, keys = snapshot.keys.len(), "fetched the issuer's keys");
        Ok(Self {
            url,
            client,
            algorithms,
            floor,
            max_age,
            last_attempt: tokio::sync::Mutex::new(time.now()),
            time,
            cache: RwLock::new(Arc::new(snapshot)),
        })
    }

    /// How long ago `snapshot` was fetched.
    fn age(&self, snapshot: &Snapshot) -> Duration {
        self.time
            .now()
            .saturating_duration_since(snapshot.fetched_at)
    }

    /// How long ago a fetch was last attempted.
    fn since(&self, attempt: Instant) -> Duration {
        self.time.now().saturating_duration_since(attempt)
    }

    fn cached(&self) -> Arc<Snapshot> {
        // A poisoned lock only means a panic elsewhere while holding it; the value (an Arc
        // replaced whole) is still consistent.
        Arc::clone(&self.cache.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn store(&self, snapshot: Snapshot) -> Arc<Snapshot> {
        let snapshot = Arc::new(snapshot);
        *self.cache.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&snapshot);
        snapshot
    }

    /// Re-fetches unless another caller already brought `kid` in or a fetch was attempted within
    /// the floor. A failed fetch keeps the cached set (and is logged): keys do not become less
    /// trustworthy because the server is briefly unreachable.
    async fn refresh_for_unknown_kid(&self, kid: &str) -> Arc<Snapshot> {
        let mut last_attempt = self.last_attempt.lock().await;
        let cached = self.cached();
        if cached.has_kid(kid) || self.since(*last_attempt) < self.floor {
            return cached;
        }
        self.fetch_and_store(&mut last_attempt).await
    }

    async fn fetch_and_store(&self, last_attempt: &mut Instant) -> Arc<Snapshot> {
        let result = fetch(
            &self.client,
            &self.url,
            &self.algorithms,
            self.time.as_ref(),
        )
        .await;
        *last_attempt = self.time.now();
        match result {
            Ok(snapshot) => {
                tracing::info!(
                    jwks_uri = %self.url,
                    keys = snapshot.keys.len(),
                    "re-fetched the issuer's keys"
                );
                self.store(snapshot)
            }
            Err(error) => {
                tracing::warn!(
                    jwks_uri = %self.url,
                    %error,
                    "re-fetching the issuer's keys failed; keeping the cached set"
                );
                self.cached()
            }
        }
    }

    /// Starts one background re-fetch if none is running and the floor allows it.
    fn refresh_in_background(this: &Arc<Self>) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let remote = Arc::clone(this);
        handle.spawn(async move {
            // try_lock: when a fetch is already running, it is the refresh.
            let Ok(mut last_attempt) = remote.last_attempt.try_lock() else {
                return;
            };
            let stale = remote.age(&remote.cached()) > remote.max_age;
            if stale && remote.since(*last_attempt) >= remote.floor {
                remote.fetch_and_store(&mut last_attempt).await;
            }
        });
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &Url,
    algorithms: &[Algorithm],
    time: &dyn Monotonic,
) -> Result<Snapshot, String> {
    let document = get_json(client, url, "application/jwk-set+json, application/json").await?;
    Snapshot::from_fetched(&document, algorithms, time.now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_url_inserts_the_well_known_segment() {
        let url = |issuer: &str| metadata_url(issuer).map(|u| u.to_string());
        assert_eq!(
            url("https://as.example.test").unwrap(),
            "https://as.example.test/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            url("https://as.example.test/").unwrap(),
            "https://as.example.test/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            url("https://as.example.test/t1").unwrap(),
            "https://as.example.test/.well-known/oauth-authorization-server/t1"
        );
        assert_eq!(
            url("http://127.0.0.1:8080/tenants/a").unwrap(),
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server/tenants/a"
        );
        for refused in [
            "http://as.example.test",
            "https://as.example.test/?x=1",
            "https://user:pw@as.example.test",
            "as.example.test",
        ] {
            assert!(url(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn only_https_or_loopback_http() {
        for ok in [
            "https://as.example.test/jwks",
            "http://localhost:1/jwks",
            "http://127.0.0.1:1/jwks",
            "http://[::1]:1/jwks",
        ] {
            assert!(checked_url(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.0.0.1/jwks",
            "file:///etc/passwd",
            "ftp://127.0.0.1/jwks",
            "https://a:b@as.example.test/jwks",
            "https://as.example.test/jwks#x",
        ] {
            assert!(checked_url(refused).is_err(), "{refused}");
        }
    }
}
