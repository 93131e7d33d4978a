//! The benchmark's world: keys and a configuration file written to a temporary directory, the
//! subject tokens (one user each) and the request bodies the load driver sends.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mandate_model::SecretHash;
use mandate_testkit::{random_secret, KeyKind, TestKey};
use mandate_token::{SigningAlgorithm, SigningKey};
use rand::RngCore;
use serde_json::json;
use tempfile::TempDir;

/// mandate's issuer in the benchmark configuration. A configuration on Redis must have an
/// `https://` issuer; nothing is fetched from it.
pub const ISSUER: &str = "https://mandate.bench.example";
/// The trusted identity provider whose ID tokens are the subject tokens.
pub const IDP: &str = "https://idp.bench.example";
/// The app every exchange targets.
pub const APP: &str = "https://calendar.bench.example";
/// The agent that authenticates with `client_secret_basic`.
pub const BASIC_AGENT: &str = "bench-basic";
/// The agent that authenticates with `private_key_jwt`.
pub const PKJWT_AGENT: &str = "bench-pkjwt";
/// The resource server that introspects.
pub const RESOURCE_SERVER: &str = "bench-calendar";

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which store the server runs on.
#[derive(Debug, Clone)]
pub enum Store {
    /// The embedded memory store.
    Memory,
    /// Redis at this URL.
    Redis(String),
}

/// Keys, secrets and the configuration directory.
#[derive(Debug)]
pub struct World {
    dir: TempDir,
    /// The identity provider's key (signs the subject tokens).
    pub idp_key: TestKey,
    /// The `private_key_jwt` agent's key (signs client assertions).
    pub agent_key: TestKey,
    /// The basic agent's secret.
    pub basic_secret: String,
    /// The resource server's secret.
    pub rs_secret: String,
    /// The signing key's PEM, as the server loads it.
    pub signing_pem: Vec<u8>,
}

impl World {
    /// New keys and secrets, and the key files in a fresh temporary directory.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory")?;
        let idp_key = TestKey::generate(KeyKind::Es256, Some("idp-1"))?;
        let agent_key = TestKey::generate(KeyKind::Es256, Some("agent-1"))?;
        let signing_pem = SigningKey::generate_pem(SigningAlgorithm::Es256)?.to_vec();
        std::fs::write(dir.path().join("signing.pem"), &signing_pem)?;
        let mut chain_key = [0u8; 32];
        rand::rng().fill_bytes(&mut chain_key);
        std::fs::write(dir.path().join("chain-id.key"), chain_key)?;
        std::fs::write(
            dir.path().join("idp.jwks.json"),
            serde_json::to_vec(&idp_key.jwks())?,
        )?;
        std::fs::write(
            dir.path().join("agent.jwks.json"),
            serde_json::to_vec(&agent_key.jwks())?,
        )?;
        Ok(Self {
            dir,
            idp_key,
            agent_key,
            basic_secret: random_secret(),
            rs_secret: random_secret(),
            signing_pem,
        })
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `mandate-<name>.toml` for `store` listening on `listen` (admin on `admin`), with
    /// `extra_policy_rows` rows for other agents (ten apps each) before the benchmark's own, and
    /// returns its path. Rate limiting is off (0): the benchmark measures the exchange.
    pub fn write_config(
        &self,
        name: &str,
        store: &Store,
        listen: SocketAddr,
        admin: SocketAddr,
        extra_policy_rows: usize,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.dir.path();
        let store_section = match store {
            Store::Memory => "kind = \"memory\"\n".to_owned(),
            Store::Redis(url) => format!("kind = \"redis\"\nurl = \"{url}\"\n"),
        };
        let hash = |secret: &str| String::from(SecretHash::of(secret));
        let agent_jwks = dir.join("agent.jwks.json");
        let mut others = String::new();
        for agent in 0..extra_policy_rows.div_ceil(10) {
            others.push_str(&format!(
                "[[clients]]\nclient_id = \"other-agent-{agent}\"\nkind = \"agent\"\n\
                 owners = [\"bench@example.com\"]\nauth_method = \"private_key_jwt\"\n\
                 jwks_file = \"{}\"\n\n",
                agent_jwks.display()
            ));
        }
        for row in 0..extra_policy_rows {
            let (agent, app) = (row / 10, row % 10);
            others.push_str(&format!(
                "[[policies]]\nactor = \"other-agent-{agent}\"\n\
                 audience = \"https://app-{app}.other.example\"\nscopes = [\"read\", \"write\"]\n\n"
            ));
        }
        let config = format!(
            r#"# Written by mandate-bench.
issuer = "{ISSUER}"
listen = "{listen}"
admin_listen = "{admin}"

[store]
{store_section}
[signing]
algorithm = "ES256"
key_file = "{signing}"

[tokens]
access_token_ttl_secs = 300
chain_id_key_file = "{chain}"

[limits]
token_requests_per_client_per_sec = 0

[[admin.credentials]]
name = "bench"
role = "read"
secret_hash = "{admin_hash}"

[[trusted_issuers]]
issuer = "{IDP}"
alias = "idp"
jwks_file = "{idp_jwks}"
algorithms = ["ES256"]
accept = ["id_token"]
max_token_age_secs = 3600

[[clients]]
client_id = "{BASIC_AGENT}"
kind = "agent"
owners = ["bench@example.com"]
auth_method = "client_secret_basic"
secret_hash = "{basic_hash}"

[[clients]]
client_id = "{PKJWT_AGENT}"
kind = "agent"
owners = ["bench@example.com"]
auth_method = "private_key_jwt"
jwks_file = "{agent_jwks}"

[[clients]]
client_id = "{RESOURCE_SERVER}"
kind = "resource_server"
owners = ["bench@example.com"]
auth_method = "client_secret_basic"
secret_hash = "{rs_hash}"
audiences = ["{APP}"]

{others}[[policies]]
actor = "{BASIC_AGENT}"
audience = "{APP}"
scopes = ["calendar.read", "calendar.write"]

[[policies]]
actor = "{PKJWT_AGENT}"
audience = "{APP}"
scopes = ["calendar.read", "calendar.write"]
"#,
            signing = dir.join("signing.pem").display(),
            chain = dir.join("chain-id.key").display(),
            idp_jwks = dir.join("idp.jwks.json").display(),
            agent_jwks = agent_jwks.display(),
            admin_hash = hash(&random_secret()),
            basic_hash = hash(&self.basic_secret),
            rs_hash = hash(&self.rs_secret),
        );
        let path = dir.join(format!("mandate-{name}.toml"));
        std::fs::write(&path, config)?;
        Ok(path)
    }

    /// `n` ID tokens issued to `agent`, one user each (`user-0` …), valid for the issuer's
    /// maximum age (an hour), each with its own `jti` (so each starts its own chain).
    pub fn subject_tokens(&self, agent: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let now = now();
        (0..n)
            .map(|i| {
                self.idp_key.sign(
                    None,
                    &json!({
                        "iss": IDP,
                        "sub": format!("user-{i}"),
                        "aud": agent,
                        "iat": now,
                        "exp": now + 3600,
                        "jti": random_secret(),
                        "email": format!("user-{i}@example.com"),
                    }),
                )
            })
            .collect()
    }

    /// A fresh single-use client assertion for the `private_key_jwt` agent.
    pub fn client_assertion(&self) -> anyhow::Result<String> {
        let now = now();
        self.agent_key.sign(
            None,
            &json!({
                "iss": PKJWT_AGENT,
                "sub": PKJWT_AGENT,
                "aud": ISSUER,
                "jti": random_secret(),
                "iat": now,
                "exp": now + 600,
            }),
        )
    }

    /// The `Authorization` header of the basic agent.
    pub fn basic_agent_auth(&self) -> String {
        basic(BASIC_AGENT, &self.basic_secret)
    }

    /// The `Authorization` header of the resource server.
    pub fn resource_server_auth(&self) -> String {
        basic(RESOURCE_SERVER, &self.rs_secret)
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The form body of an exchange of `subject_token` for [`APP`].
pub fn exchange_body(subject_token: &str) -> String {
    form(&[
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ID_TOKEN),
        ("audience", APP),
    ])
}

/// The form body of an exchange authenticated by a client assertion.
pub fn exchange_body_with_assertion(subject_token: &str, assertion: &str) -> String {
    form(&[
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", subject_token),
        ("subject_token_type", ID_TOKEN),
        ("audience", APP),
        ("client_id", PKJWT_AGENT),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", assertion),
    ])
}

/// The form body of an introspection of `token`.
pub fn introspect_body(token: &str) -> String {
    form(&[("token", token), ("token_type_hint", "access_token")])
}

fn form(pairs: &[(&str, &str)]) -> String {
    // Every value here is a URN, an https URI or a JWT: only `:` and `/` need escaping.
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace(':', "%3A").replace('/', "%2F")))
        .collect::<Vec<_>>()
        .join("&")
}

/// Two free loopback addresses (bound, read, released: a small window in which another process
/// could take them, acceptable for a benchmark).
pub fn free_addresses() -> anyhow::Result<(SocketAddr, SocketAddr)> {
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?, b.local_addr()?))
}
