//! Development mode (DESIGN.md section 10): `mandate serve` without `--config`. A memory store,
//! an ephemeral signing key, demo agents, policies and a demo issuer, loopback only. Its secrets
//! are fixed and public so that a newcomer can try the server with `curl`; none of this is
//! reachable from a configuration file.

use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, ScopeSet, SecretHash,
};
use mandate_token::{SigningAlgorithm, SigningKey};
use rand::distr::{Alphanumeric, SampleString};
use std::net::SocketAddr;

use crate::config::{
    Acceptance, AdminCredentialSettings, AdminRole, ClientSettings, ConfigError, PolicySettings,
    Settings, TrustedIssuerSettings,
};

/// The demo agents' secrets: public on purpose, development mode only.
pub const DEMO_SECRETS: [(&str, &str); 3] = [
    ("assistant", "assistant-dev-secret"),
    ("booking-tool", "booking-tool-dev-secret"),
    ("calendar-api", "calendar-api-dev-secret"),
];

/// The demo app the policies point at.
pub const DEMO_APP: &str = "https://calendar.example.com";

/// What development mode adds beyond settings: the demo issuer's signing key and a generated
/// admin secret, both printed in the banner or used by the demo.
#[derive(Debug)]
pub struct DevExtras {
    /// The key the demo issuer signs ID tokens with.
    pub demo_issuer_key: std::sync::Arc<SigningKey>,
    /// The `manage` admin secret: generated at start-up, or the one given.
    pub admin_secret: String,
    /// Whether the admin secret was given (the banner then does not print it).
    pub admin_secret_given: bool,
}

/// What a developer may change in development mode, from `mandate serve`'s flags and
/// environment: where it listens (loopback only) and the admin secret (so that a script can know
/// it before the server starts). Nothing else: a deployment is written in a file.
#[derive(Debug, Default)]
pub struct DevOverrides {
    /// The public listener; the issuer follows it (`http://<listen>`).
    pub listen: Option<SocketAddr>,
    /// The admin listener.
    pub admin_listen: Option<SocketAddr>,
    /// The `manage` admin secret, instead of a generated one.
    pub admin_secret: Option<String>,
}

/// The shortest admin secret development mode takes from its environment.
pub const MIN_DEV_ADMIN_SECRET_LEN: usize = 16;

/// The development settings and extras, with the defaults (127.0.0.1:8080 and :8081, a
/// generated admin secret).
pub fn development_settings() -> Result<(Settings, DevExtras), ConfigError> {
    development_settings_with(DevOverrides::default())
}

/// The development settings and extras, with `overrides`. A listener outside loopback, a port 0
/// for the public listener (the issuer must name its port) or a short admin secret is refused.
pub fn development_settings_with(
    overrides: DevOverrides,
) -> Result<(Settings, DevExtras), ConfigError> {
    let refuse = |key: &str, message: String| ConfigError::Invalid {
        source_name: "development defaults".into(),
        key: key.into(),
        message,
    };
    let fail = |message: String| refuse("signing", message);
    let mut settings = Settings::from_toml("")?;
    if let Some(listen) = overrides.listen {
        if !listen.ip().is_loopback() || listen.port() == 0 {
            return Err(refuse(
                "listen",
                format!("{listen}: development mode listens on a loopback address with a port"),
            ));
        }
        settings.listen = listen;
        settings.issuer = format!("http://{listen}");
    }
    if let Some(admin_listen) = overrides.admin_listen {
        if !admin_listen.ip().is_loopback() {
            return Err(refuse(
                "admin_listen",
                format!("{admin_listen}: development mode listens on loopback only"),
            ));
        }
        settings.admin_listen = admin_listen;
    }
    let demo_issuer_key =
        SigningKey::generate(SigningAlgorithm::Es256).map_err(|e| fail(e.to_string()))?;
    let demo_jwk = serde_json::Value::Object(demo_issuer_key.public_key().jwk().clone());
    settings.trusted_issuers.push(TrustedIssuerSettings {
        issuer: format!("{}/demo-idp", settings.issuer),
        alias: mandate_model::IssuerAlias::parse("demo").map_err(|e| fail(e.to_string()))?,
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: None,
        jwks: Some(serde_json::json!({ "keys": [demo_jwk] })),
        algorithms: vec!["ES256".into()],
        accept: vec![Acceptance::IdToken, Acceptance::Jwt],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    });

    let id = |s: &str| ClientId::parse(s).map_err(|e| fail(e.to_string()));
    let scopes =
        ScopeSet::parse("calendar.read calendar.write").map_err(|e| fail(e.to_string()))?;
    let app = Audience::parse(DEMO_APP).map_err(|e| fail(e.to_string()))?;
    for (client_id, secret) in DEMO_SECRETS {
        let kind = if client_id == "calendar-api" {
            ClientKind::ResourceServer
        } else {
            ClientKind::Agent
        };
        settings.clients.push(ClientSettings {
            dpop: Default::default(),
            client_id: id(client_id)?,
            kind,
            owners: vec!["dev@localhost".into()],
            description: format!("development demo {kind}"),
            expires_at: None,
            state: ClientState::Active,
            auth_method: if client_id == "booking-tool" {
                AuthMethod::ClientSecretPost
            } else {
                AuthMethod::ClientSecretBasic
            },
            jwks_file: None,
            jwks: None,
            secret_hash: Some(SecretHash::of(secret)),
            upstream_ids: vec![],
            audiences: if kind == ClientKind::ResourceServer {
                vec![app.clone()]
            } else {
                vec![]
            },
        });
    }
    let handoff = Audience::parse("agent:booking-tool").map_err(|e| fail(e.to_string()))?;
    for (actor, audience) in [
        ("assistant", app.clone()),
        ("assistant", handoff),
        ("booking-tool", app),
    ] {
        settings.policies.push(PolicySettings {
            actor: id(actor)?,
            audience,
            scopes: scopes.clone(),
            max_depth: Some(3),
        });
    }

    let admin_secret_given = overrides.admin_secret.is_some();
    let admin_secret = match overrides.admin_secret {
        Some(secret) if secret.len() < MIN_DEV_ADMIN_SECRET_LEN => {
            return Err(refuse(
                "admin secret",
                format!(
                    "the admin secret from the environment must have at least \
                     {MIN_DEV_ADMIN_SECRET_LEN} characters (`mandate secrets generate` makes one)"
                ),
            ))
        }
        Some(secret) => secret,
        None => Alphanumeric.sample_string(&mut rand::rng(), 32),
    };
    settings.admin.credentials.push(AdminCredentialSettings {
        name: "dev-admin".into(),
        role: AdminRole::Manage,
        secret_hash: SecretHash::of(&admin_secret),
    });
    Ok((
        settings,
        DevExtras {
            demo_issuer_key: std::sync::Arc::new(demo_issuer_key),
            admin_secret,
            admin_secret_given,
        },
    ))
}
