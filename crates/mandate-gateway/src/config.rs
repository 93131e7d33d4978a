//! The gateway's configuration: a small TOML file (docs/GATEWAY.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::routes::Route;

/// The largest request body proxy mode forwards by default (8 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// The default staleness bound of the revocation view (mandate nodes beat once a second).
pub const DEFAULT_STALENESS_BOUND_SECS: u64 = 3;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong (with the key, where the parser names it).
        message: String,
    },
    /// A value is not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `routes[0].prefix`.
        key: String,
        /// Why.
        message: String,
    },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// How the gateway sits beside the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every request is a check: nginx `auth_request`, Traefik ForwardAuth, Envoy `ext_authz`.
    ForwardAuth,
    /// A reverse proxy in front of the app.
    Proxy,
}

/// Where the gateway learns of revocations. Each fails closed once its view is older than the
/// staleness bound.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "source", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RevocationConfig {
    /// Follow mandate's revocation stream in Redis (as the read-only ACL user).
    Redis {
        /// `redis://user:password@host:port/db`.
        url: String,
        /// Seconds; default 3.
        #[serde(default = "default_staleness")]
        staleness_bound_secs: u64,
    },
    /// Follow mandate's `GET /revocations` feed as a resource server.
    Feed {
        /// `https://mandate.example.com/revocations`.
        url: String,
        /// The resource server's client id at mandate.
        client_id: String,
        /// A file holding its secret (read once at start).
        client_secret_file: PathBuf,
        /// Seconds; default 3.
        #[serde(default = "default_staleness")]
        staleness_bound_secs: u64,
    },
}

impl RevocationConfig {
    /// The staleness bound.
    pub fn staleness_bound(&self) -> Duration {
        let secs = match self {
            Self::Redis {
                staleness_bound_secs,
                ..
            }
            | Self::Feed {
                staleness_bound_secs,
                ..
            } => *staleness_bound_secs,
        };
        Duration::from_secs(secs)
    }
}

fn default_staleness() -> u64 {
    DEFAULT_STALENESS_BOUND_SECS
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

/// One `[[routes]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, starting with `/`.
    pub prefix: String,
    /// The audience tokens must name.
    pub audience: String,
    /// Scopes required of every request under the prefix.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The RFC 9728 resource identifier (default: the audience).
    #[serde(default)]
    pub resource: Option<String>,
    /// Scopes published as `scopes_supported` (default: the required ones).
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// The upstream of this route in proxy mode (default: the top-level `upstream`).
    #[serde(default)]
    pub upstream: Option<String>,
}

/// `[report]`: participation reports to mandate (docs/GOVERNANCE.md), as the routes'
/// `resource_server` client.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// The resource server's client id.
    pub client_id: String,
    /// A file holding its secret.
    pub client_secret_file: PathBuf,
    /// mandate's participation endpoint (default: the issuer's `/participation`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// This gateway's instance name (default: host and process id).
    #[serde(default)]
    pub instance: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// `forward-auth` or `proxy`.
    pub mode: Mode,
    /// mandate's issuer, exactly as in its tokens' `iss`.
    pub issuer: String,
    /// The JWKS URL; default: discovered from the issuer's RFC 8414 metadata.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The default upstream in proxy mode: `http://host:port`.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The largest request body proxy mode forwards.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Where revocations come from.
    pub revocation: RevocationConfig,
    /// The protected routes (at least one).
    pub routes: Vec<RouteConfig>,
    /// Participation reports (optional).
    #[serde(default)]
    pub report: Option<ReportSettings>,
}

impl GatewayConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file_error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
        let config: Self = toml::from_str(&text).map_err(|e| file_error(e.to_string()))?;
        config.routes()?;
        Ok(config)
    }

    /// The routes, checked: prefixes start with `/` and are unique, audiences and resources are
    /// absolute URIs, proxy mode names an `http(s)` upstream for every route.
    pub fn routes(&self) -> Result<Vec<Route>, ConfigError> {
        if self.routes.is_empty() {
            return Err(invalid("routes", "at least one [[routes]] is required"));
        }
        let mut routes: Vec<Route> = Vec::with_capacity(self.routes.len());
        for (i, route) in self.routes.iter().enumerate() {
            let key = |k: &str| format!("routes[{i}].{k}");
            if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
                return Err(invalid(
                    key("prefix"),
                    "a path starting with `/`, without query",
                ));
            }
            if routes
                .iter()
                .any(|r| r.prefix.trim_end_matches('/') == route.prefix.trim_end_matches('/'))
            {
                return Err(invalid(key("prefix"), "appears twice"));
            }
            absolute(&route.audience).map_err(|m| invalid(key("audience"), m))?;
            let resource = route
                .resource
                .clone()
                .unwrap_or_else(|| route.audience.clone());
            absolute(&resource).map_err(|m| invalid(key("resource"), m))?;
            let upstream = route.upstream.clone().or_else(|| self.upstream.clone());
            if self.mode == Mode::Proxy {
                let Some(upstream) = &upstream else {
                    return Err(invalid(key("upstream"), "proxy mode needs an upstream"));
                };
                check_upstream(upstream).map_err(|m| invalid(key("upstream"), m))?;
            }
            routes.push(Route {
                prefix: route.prefix.clone(),
                audience: route.audience.clone(),
                scopes: route.scopes.clone(),
                resource,
                upstream: upstream.map(|u| u.trim_end_matches('/').to_owned()),
            });
        }
        Ok(routes)
    }
}

fn absolute(uri: &str) -> Result<(), String> {
    match url::Url::parse(uri) {
        Ok(url) if url.has_host() && url.query().is_none() && url.fragment().is_none() => Ok(()),
        _ => Err(format!(
            "`{uri}` is not an absolute URI without query or fragment"
        )),
    }
}

fn check_upstream(upstream: &str) -> Result<(), String> {
    match url::Url::parse(upstream) {
        Ok(url)
            if matches!(url.scheme(), "http" | "https")
                && url.has_host()
                && url.path().trim_end_matches('/').is_empty()
                && url.query().is_none() =>
        {
            Ok(())
        }
        _ => Err(format!("`{upstream}` is not http(s)://host[:port]")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
listen = "127.0.0.1:9000"
mode = "proxy"
issuer = "https://mandate.example.com"
upstream = "http://127.0.0.1:8080"
[revocation]
source = "redis"
url = "redis://verifier:pw@127.0.0.1:6380"
[[routes]]
prefix = "/"
audience = "https://calendar.example.com"
"#;

    fn parse(text: &str) -> Result<Vec<Route>, ConfigError> {
        let config: GatewayConfig =
            toml::from_str(text).map_err(|e| invalid("file", e.to_string()))?;
        config.routes()
    }

    #[test]
    fn a_small_file_is_enough() {
        let routes = parse(BASE).unwrap();
        assert_eq!(routes[0].resource, "https://calendar.example.com");
        assert_eq!(routes[0].upstream.as_deref(), Some("http://127.0.0.1:8080"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (from, to, key) in [
            ("prefix = \"/\"", "prefix = \"api\"", "routes[0].prefix"),
            (
                "audience = \"https://calendar.example.com\"",
                "audience = \"calendar\"",
                "routes[0].audience",
            ),
            (
                "upstream = \"http://127.0.0.1:8080\"",
                "upstream = \"ftp://x/y\"",
                "routes[0].upstream",
            ),
            (
                "upstream = \"http://127.0.0.1:8080\"\n",
                "",
                "routes[0].upstream",
            ),
        ] {
            let text = BASE.replace(from, to);
            let error = parse(&text).unwrap_err().to_string();
            assert!(error.starts_with(key), "{to}: {error}");
        }
        let twice = format!("{BASE}[[routes]]\nprefix = \"/\"\naudience = \"https://x.example\"\n");
        assert!(parse(&twice).unwrap_err().to_string().contains("twice"));
        let unknown = BASE.replace("mode = \"proxy\"", "mode = \"proxy\"\nmystery = 1");
        assert!(parse(&unknown).unwrap_err().to_string().contains("mystery"));
    }
}
