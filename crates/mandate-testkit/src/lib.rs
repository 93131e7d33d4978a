//! The test kit: a port-0 harness that starts the real mandate app in-process over real HTTP,
//! and helpers to make keys, sign client assertions and mint test JWTs (including the malformed
//! and hostile ones the security tests need).

/// Private Redis servers (the dependency-free `mandate-redis-test` crate).
pub use mandate_redis_test as redis;

use std::net::SocketAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::alg::ec::{EcCurve, EcKeyPair};
use josekit::jwk::alg::ed::{EdCurve, EdKeyPair};
use josekit::jwk::alg::rsa::RsaKeyPair;
use josekit::jwk::KeyPair;
use josekit::jws::{self, JwsSigner};
use mandate_model::{Audience, AuthMethod, ClientId, ClientKind, ClientState, SecretHash};
use mandate_server::config::{ClientSettings, ConfigSource};
use mandate_server::{AppState, BuildOptions, Listeners, RunningServer, Settings, Signals};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// A running mandate on free loopback ports.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>`, also the issuer.
    pub base: String,
    /// `http://127.0.0.1:<admin port>`.
    pub admin_base: String,
    /// The server's state (settings, keys, registry).
    pub state: AppState,
    /// An HTTP client.
    pub http: reqwest::Client,
    running: Option<RunningServer>,
}

/// How a test request authenticates its client.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// No client authentication.
    None,
    /// HTTP Basic.
    Basic(String, String),
    /// `client_id` + `client_secret` in the form.
    Post(String, String),
    /// `client_assertion` (and `client_id` when given).
    Assertion {
        /// Sent as `client_id` when present.
        client_id: Option<String>,
        /// The assertion JWT.
        jwt: String,
    },
}

impl TestServer {
    /// Starts the app with `settings` on free ports. The issuer becomes the public address.
    pub async fn spawn(settings: Settings) -> anyhow::Result<Self> {
        Self::spawn_with(settings, BuildOptions::default()).await
    }

    /// Starts the app with `settings` and build options (a fixed clock, say).
    pub async fn spawn_with(mut settings: Settings, options: BuildOptions) -> anyhow::Result<Self> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let listeners = Listeners::bind(loopback, loopback)?;
        let public = listeners.public.local_addr()?;
        let admin = listeners.admin.local_addr()?;
        settings.listen = public;
        settings.admin_listen = admin;
        // Issuers living under the server's own issuer (development mode's demo issuer) move
        // with it.
        let new_issuer = format!("http://{public}");
        for trusted in &mut settings.trusted_issuers {
            if let Some(rest) = trusted.issuer.strip_prefix(&settings.issuer) {
                trusted.issuer = format!("{new_issuer}{rest}");
            }
        }
        settings.issuer = new_issuer;
        let state = AppState::build(settings, ConfigSource::Programmatic, options).await?;
        let running = mandate_server::start(state.clone(), listeners, Signals::Ignore)?;
        Ok(Self {
            base: format!("http://{public}"),
            admin_base: format!("http://{admin}"),
            state,
            http: reqwest::Client::builder().build()?,
            running: Some(running),
        })
    }

    /// A public URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin URL.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin_base)
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        &self.base
    }

    /// POSTs a form to a public path with the given client authentication.
    pub async fn post_form(
        &self,
        path: &str,
        params: &[(&str, &str)],
        auth: &ClientAuth,
    ) -> anyhow::Result<reqwest::Response> {
        let mut form: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut request = self.http.post(self.url(path));
        match auth {
            ClientAuth::None => {}
            ClientAuth::Basic(id, secret) => request = request.basic_auth(id, Some(secret)),
            ClientAuth::Post(id, secret) => {
                form.push(("client_id".into(), id.clone()));
                form.push(("client_secret".into(), secret.clone()));
            }
            ClientAuth::Assertion { client_id, jwt } => {
                if let Some(id) = client_id {
                    form.push(("client_id".into(), id.clone()));
                }
                form.push((
                    "client_assertion_type".into(),
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion".into(), jwt.clone()));
            }
        }
        Ok(request.form(&form).send().await?)
    }

    /// POSTs to `/token`.
    pub async fn token(
        &self,
        params: &[(&str, &str)],
        auth: &ClientAuth,
    ) -> anyhow::Result<reqwest::Response> {
        self.post_form("/token", params, auth).await
    }

    /// GETs a public path and parses JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(self.url(path))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// GETs an admin path with an optional bearer secret.
    pub async fn admin_get(
        &self,
        path: &str,
        secret: Option<&str>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut request = self.http.get(self.admin_url(path));
        if let Some(secret) = secret {
            request = request.bearer_auth(secret);
        }
        Ok(request.send().await?)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
    }
}

/// Empty settings: defaults, no clients, no issuers.
pub fn empty_settings() -> Settings {
    match Settings::from_toml("") {
        Ok(settings) => settings,
        Err(error) => unreachable_settings(error),
    }
}

#[expect(clippy::panic, reason = "test kit: empty settings always parse")]
fn unreachable_settings(error: mandate_server::ConfigError) -> Settings {
    panic!("empty settings must parse: {error}")
}

/// A random secret of 32 alphanumeric characters.
pub fn random_secret() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// An active agent that authenticates with a secret.
pub fn agent_with_secret(
    id: &str,
    secret: &str,
    method: AuthMethod,
) -> anyhow::Result<ClientSettings> {
    Ok(ClientSettings {
        dpop: Default::default(),
        client_id: ClientId::parse(id)?,
        kind: ClientKind::Agent,
        owners: vec!["owner@example.com".into()],
        description: format!("test agent {id}"),
        expires_at: None,
        state: ClientState::Active,
        auth_method: method,
        jwks_file: None,
        jwks: None,
        secret_hash: Some(SecretHash::of(secret)),
        upstream_ids: vec![],
        audiences: vec![],
    })
}

/// An active agent that authenticates with `private_key_jwt` against `jwks`.
pub fn agent_with_keys(id: &str, jwks: Value) -> anyhow::Result<ClientSettings> {
    Ok(ClientSettings {
        auth_method: AuthMethod::PrivateKeyJwt,
        secret_hash: None,
        jwks: Some(jwks),
        ..agent_with_secret(id, "unused", AuthMethod::PrivateKeyJwt)?
    })
}

/// An active resource server owning `audience`.
pub fn resource_server(id: &str, secret: &str, audience: &str) -> anyhow::Result<ClientSettings> {
    Ok(ClientSettings {
        kind: ClientKind::ResourceServer,
        audiences: vec![Audience::parse(audience)?],
        ..agent_with_secret(id, secret, AuthMethod::ClientSecretBasic)?
    })
}

/// The key algorithms tests sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Es256,
    /// RSA 2048, RS256.
    Rs256,
    /// RSA 2048, PS256.
    Ps256,
    /// Ed25519.
    EdDsa,
}

/// A key pair for signing test JWTs.
#[derive(Debug)]
pub struct TestKey {
    kind: KeyKind,
    signer: Box<dyn JwsSigner>,
    public_jwk: serde_json::Map<String, Value>,
    public_pem: Vec<u8>,
    /// The `kid` published with the key (None: published without one).
    pub kid: Option<String>,
}

impl TestKey {
    /// A new key published with `kid`.
    pub fn generate(kind: KeyKind, kid: Option<&str>) -> anyhow::Result<Self> {
        let (signer, pair): (Box<dyn JwsSigner>, Box<dyn KeyPair>) = match kind {
            KeyKind::Es256 => {
                let pair = EcKeyPair::generate(EcCurve::P256)?;
                (
                    Box::new(jws::ES256.signer_from_jwk(&pair.to_jwk_key_pair())?),
                    Box::new(pair),
                )
            }
            KeyKind::Rs256 => {
                let pair = RsaKeyPair::generate(2048)?;
                (
                    Box::new(jws::RS256.signer_from_jwk(&pair.to_jwk_key_pair())?),
                    Box::new(pair),
                )
            }
            KeyKind::Ps256 => {
                let pair = RsaKeyPair::generate(2048)?;
                (
                    Box::new(jws::PS256.signer_from_jwk(&pair.to_jwk_key_pair())?),
                    Box::new(pair),
                )
            }
            KeyKind::EdDsa => {
                let pair = EdKeyPair::generate(EdCurve::Ed25519)?;
                (
                    Box::new(jws::EdDSA.signer_from_jwk(&pair.to_jwk_key_pair())?),
                    Box::new(pair),
                )
            }
        };
        let mut public_jwk = pair.to_jwk_public_key().as_ref().clone();
        public_jwk.retain(|k, _| matches!(k.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"));
        if let Some(kid) = kid {
            public_jwk.insert("kid".into(), Value::String(kid.into()));
        }
        Ok(Self {
            kind,
            signer,
            public_jwk,
            public_pem: pair.to_pem_public_key(),
            kid: kid.map(str::to_owned),
        })
    }

    /// The JWA name of this key's algorithm.
    pub fn alg(&self) -> &'static str {
        match self.kind {
            KeyKind::Es256 => "ES256",
            KeyKind::Rs256 => "RS256",
            KeyKind::Ps256 => "PS256",
            KeyKind::EdDsa => "EdDSA",
        }
    }

    /// The public JWK.
    pub fn public_jwk(&self) -> Value {
        Value::Object(self.public_jwk.clone())
    }

    /// A JWKS holding just this key.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk()] })
    }

    /// The standard header for this key: `alg`, `kid` when it has one, and `typ` when given.
    pub fn header(&self, typ: Option<&str>) -> Value {
        let mut header = json!({ "alg": self.alg() });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        header
    }

    /// Signs `claims` under exactly `header` (which may lie about `alg`: the signature is always
    /// made with this key's own algorithm).
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> anyhow::Result<String> {
        let input = format!("{}.{}", b64_json(header), b64_json(claims));
        let signature = self.signer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Signs `claims` with the standard header.
    pub fn sign(&self, typ: Option<&str>, claims: &Value) -> anyhow::Result<String> {
        self.sign_raw(&self.header(typ), claims)
    }

    /// The key-confusion attack: an HS256 token whose HMAC key is this key's public PEM (what a
    /// naive library would use as the "secret" when it trusts the header's `alg`).
    pub fn hs256_confused(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = json!({ "alg": "HS256" });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        let input = format!("{}.{}", b64_json(&header), b64_json(claims));
        let signer = jws::HS256.signer_from_bytes(&self.public_pem)?;
        let signature = signer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The order n of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The malleability attack on ECDSA: the same ES256 token with its signature `(r, s)` replaced
/// by `(r, n - s)`, which verifies under the same key, made without the key. The signing input is
/// untouched; only the token's spelling changes.
pub fn es256_signature_twin(token: &str) -> anyhow::Result<String> {
    let (input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("not a compact JWS"))?;
    let signature = URL_SAFE_NO_PAD.decode(signature)?;
    anyhow::ensure!(signature.len() == 64, "not an ES256 signature");
    let mut twin = signature.clone();
    // n - s, byte by byte from the least significant end; s < n, so nothing is borrowed at the top.
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(P256_ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        twin[32 + i] = u8::try_from(digit)?;
    }
    anyhow::ensure!(twin != signature, "s = n/2 has no distinct twin");
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(twin)))
}

/// An unsigned token with `alg: none`.
pub fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none"})),
        b64_json(claims)
    )
}

/// base64url of a JSON value.
pub fn b64_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// Now, in seconds since the epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a valid `private_key_jwt` assertion: iss = sub = `client_id`, `aud`, a fresh
/// `jti`, issued now, expiring in a minute.
pub fn assertion_claims(client_id: &str, aud: &str) -> Value {
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "jti": random_secret(),
        "iat": now(),
        "exp": now() + 60,
    })
}

/// The parsed JSON body of a response (or `Null` when it has none).
pub async fn body_json(response: reqwest::Response) -> Value {
    response.json().await.unwrap_or(Value::Null)
}

/// The claims of an ID token from `issuer` for `sub`, issued to `aud`, issued now and valid ten
/// minutes, with a fresh `jti`.
pub fn id_token_claims(issuer: &str, sub: &str, aud: &str) -> Value {
    json!({
        "iss": issuer,
        "sub": sub,
        "aud": aud,
        "iat": now(),
        "exp": now() + 600,
        "jti": random_secret(),
    })
}

/// The form of an RFC 8693 exchange of `subject_token` (of `subject_token_type`, the URN's last
/// segment: `id_token`, `jwt`, `access_token`) for `audience`, plus extra parameters.
pub fn exchange_form<'a>(
    subject_token: &'a str,
    subject_token_type: &'a str,
    audience: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, String)> {
    let mut form = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", subject_token.to_owned()),
        (
            "subject_token_type",
            format!("urn:ietf:params:oauth:token-type:{subject_token_type}"),
        ),
        ("audience", audience.to_owned()),
    ];
    form.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    form
}

/// The claims of a compact JWT, without verification (for assertions in tests).
pub fn claims_of(token: &str) -> Value {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The header of a compact JWT.
pub fn header_of(token: &str) -> Value {
    token
        .split('.')
        .next()
        .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// The corporate issuer of [`delegation_settings`].
pub const CORP: &str = "https://corp.example.com";
/// The calendar app.
pub const CAL: &str = "https://calendar.example.com";
/// The mail app.
pub const MAIL: &str = "https://mail.example.com";
/// The files app of [`resource_as_settings`].
pub const FILES: &str = "https://files.example.com";
/// The secret of `assistant-at-ras`, the agent of [`resource_as_settings`].
pub const RAS_SECRET: &str = "assistant-at-ras-secret-0123456789ab";

#[expect(clippy::expect_used, reason = "static test data always parses")]
/// A resource authorization server for cross-app access at `issuer`: it trusts `idp` (alias
/// `ent`) for ID-JAGs signed by the keys of `jwks` with `algorithms`; its agent
/// `assistant-at-ras` ([`RAS_SECRET`], client_secret_basic) may get `files.read` at [`FILES`],
/// which `files-api` (secret `files-secret`) owns.
pub fn resource_as_settings(
    issuer: &str,
    idp: &str,
    jwks: Value,
    algorithms: Vec<String>,
) -> Settings {
    let mut ras = empty_settings();
    ras.issuer = issuer.to_owned();
    ras.trusted_issuers = vec![mandate_server::config::TrustedIssuerSettings {
        issuer: idp.to_owned(),
        alias: mandate_model::IssuerAlias::parse("ent").expect("static test data"),
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(jwks),
        algorithms,
        accept: vec![mandate_server::config::Acceptance::IdJag],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }];
    ras.clients = vec![
        agent_with_secret(
            "assistant-at-ras",
            RAS_SECRET,
            AuthMethod::ClientSecretBasic,
        )
        .expect("static test data"),
        resource_server("files-api", "files-secret", FILES).expect("static test data"),
    ];
    ras.policies = vec![mandate_server::config::PolicySettings {
        actor: mandate_model::ClientId::parse("assistant-at-ras").expect("static test data"),
        audience: mandate_model::Audience::parse(FILES).expect("static test data"),
        scopes: mandate_model::ScopeSet::parse("files.read").expect("static test data"),
        max_depth: None,
    }];
    ras
}

/// The `revoke` admin secret of [`delegation_settings`].
pub const ADMIN_OPS: &str = "ops-secret-0123456789abcdefghijklmnop";
/// The `read` admin secret of [`delegation_settings`].
pub const ADMIN_READER: &str = "reader-secret-0123456789abcdefghijkl";

#[expect(clippy::expect_used, reason = "static test data always parses")]
/// A delegation world: trusted issuer `corp` (alias `corp`, ES256, `key`), agents `assistant`,
/// `booking-tool` and `helper` (client_secret_basic, secrets `<name>-secret` with `booking-tool`'s
/// being `booking-secret`), resource servers for [`CAL`] and [`MAIL`], policies allowing
/// assistant → calendar, mail and `agent:booking-tool`; booking-tool → calendar, mail and
/// `agent:helper`; helper → calendar; admin credentials `ops-oncall` (revoke, [`ADMIN_OPS`]) and
/// `auditor` (read, [`ADMIN_READER`]).
pub fn delegation_settings(corp: &TestKey) -> Settings {
    let mut settings = empty_settings();
    settings.trusted_issuers = vec![mandate_server::config::TrustedIssuerSettings {
        issuer: CORP.into(),
        alias: mandate_model::IssuerAlias::parse("corp").expect("static test data"),
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(corp.jwks()),
        algorithms: vec!["ES256".into()],
        accept: vec![
            mandate_server::config::Acceptance::IdToken,
            mandate_server::config::Acceptance::Jwt,
        ],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }];
    settings.clients = vec![
        agent_with_secret(
            "assistant",
            "assistant-secret",
            AuthMethod::ClientSecretBasic,
        )
        .expect("static test data"),
        agent_with_secret(
            "booking-tool",
            "booking-secret",
            AuthMethod::ClientSecretBasic,
        )
        .expect("static test data"),
        agent_with_secret("helper", "helper-secret", AuthMethod::ClientSecretBasic)
            .expect("static test data"),
        resource_server("calendar-api", "calendar-secret", CAL).expect("static test data"),
        resource_server("mail-api", "mail-secret", MAIL).expect("static test data"),
    ];
    let row = |actor: &str, audience: &str, scopes: &str| mandate_server::config::PolicySettings {
        actor: mandate_model::ClientId::parse(actor).expect("static test data"),
        audience: mandate_model::Audience::parse(audience).expect("static test data"),
        scopes: mandate_model::ScopeSet::parse(scopes).expect("static test data"),
        max_depth: None,
    };
    settings.policies = vec![
        row("assistant", CAL, "calendar.read calendar.write"),
        row("assistant", MAIL, "mail.read"),
        row(
            "assistant",
            "agent:booking-tool",
            "calendar.read calendar.write mail.read",
        ),
        row("booking-tool", CAL, "calendar.read calendar.write"),
        row("booking-tool", MAIL, "mail.read"),
        row("booking-tool", "agent:helper", "calendar.read"),
        row("helper", CAL, "calendar.read"),
    ];
    for (name, role, secret) in [
        (
            "ops-oncall",
            mandate_server::config::AdminRole::Revoke,
            ADMIN_OPS,
        ),
        (
            "auditor",
            mandate_server::config::AdminRole::Read,
            ADMIN_READER,
        ),
    ] {
        settings
            .admin
            .credentials
            .push(mandate_server::config::AdminCredentialSettings {
                name: name.into(),
                role,
                secret_hash: mandate_model::SecretHash::of(secret),
            });
    }
    settings
}

/// The client authentication of a client of [`delegation_settings`] (HTTP Basic with its secret).
#[expect(
    clippy::panic,
    reason = "a test naming a client the world does not have is a test bug"
)]
pub fn delegation_auth(client: &str) -> ClientAuth {
    let secret = match client {
        "assistant" => "assistant-secret",
        "booking-tool" => "booking-secret",
        "helper" => "helper-secret",
        "calendar-api" => "calendar-secret",
        "mail-api" => "mail-secret",
        other => panic!("no such client in delegation_settings: {other}"),
    };
    ClientAuth::Basic(client.into(), secret.into())
}

/// An RFC 8693 exchange at `server` by `client` of [`delegation_settings`]; the status and body.
pub async fn delegation_exchange(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    client: &str,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let form = exchange_form(token, kind, audience, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server.token(&pairs, &delegation_auth(client)).await?;
    let status = response.status();
    Ok((status, body_json(response).await))
}

/// Like [`delegation_exchange`], and the issued token; an error unless the exchange succeeded.
pub async fn delegation_issue(
    server: &TestServer,
    token: &str,
    kind: &str,
    audience: &str,
    client: &str,
) -> anyhow::Result<String> {
    let (status, body) = delegation_exchange(server, token, kind, audience, client).await?;
    match body["access_token"].as_str() {
        Some(token) if status == reqwest::StatusCode::OK => Ok(token.to_owned()),
        _ => anyhow::bail!("exchange refused: {status} {body}"),
    }
}

/// Security finding 1 (SECURITY.md), against any store: an ID token without `jti`, re-spelled
/// with its ECDSA signature twin, is the same grant — it joins the same chain while the chain
/// lives, and starts nothing once an admin revoked the chain. `server` runs
/// [`delegation_settings`] with `corp` as the corporate issuer's key.
pub async fn assert_signature_twin_is_the_same_grant(
    server: &TestServer,
    corp: &TestKey,
) -> anyhow::Result<()> {
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    claims
        .as_object_mut()
        .ok_or_else(|| anyhow::anyhow!("claims are an object"))?
        .remove("jti");
    let grant = corp.sign(None, &claims)?;
    let twin = es256_signature_twin(&grant)?;
    anyhow::ensure!(twin != grant, "the twin is another spelling");
    let first = delegation_issue(server, &grant, "id_token", CAL, "assistant").await?;
    // The twin verifies (so a server keyed on the token's bytes would see a new grant) ...
    let second = delegation_issue(server, &twin, "id_token", MAIL, "assistant").await?;
    let chain = claims_of(&first)["chain_id"].clone();
    anyhow::ensure!(
        claims_of(&second)["chain_id"] == chain,
        "the twin started another chain: {chain} vs {}",
        claims_of(&second)["chain_id"]
    );
    let chain = chain
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("the token has a chain_id"))?;
    let response = server
        .http
        .post(server.admin_url(&format!("/admin/chains/{chain}/revoke")))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "revoke: {}",
        response.status()
    );
    // ... and once the chain is revoked neither spelling, nor the twin of the twin, starts one.
    for token in [&grant, &twin, &es256_signature_twin(&twin)?] {
        let (status, body) =
            delegation_exchange(server, token, "id_token", CAL, "assistant").await?;
        anyhow::ensure!(
            status == reqwest::StatusCode::BAD_REQUEST && body["error"] == "invalid_request",
            "a spelling of the revoked grant was exchanged: {status} {body}"
        );
    }
    Ok(())
}
