//! Development mode (DESIGN.md section 10): `mandate serve` without `--config`. A memory store,
//! an ephemeral signing key, demo agents, policies and a demo issuer, loopback only. Its secrets
//! are fixed and public so that a newcomer can try the server with `curl`; none of this is
//! reachable from a configuration file.

use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, ScopeSet, SecretHash,
};
use mandate_token::{SigningAlgorithm, SigningKey};
use rand::distr::{Alphanumeric, SampleString};

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
    /// A `manage` admin secret generated at start-up.
    pub admin_secret: String,
}

/// The development settings and extras.
pub fn development_settings() -> Result<(Settings, DevExtras), ConfigError> {
    let fail = |message: String| ConfigError::Invalid {
        source_name: "development defaults".into(),
        key: "signing".into(),
        message,
    };
    let mut settings = Settings::from_toml("")?;
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

    let admin_secret = Alphanumeric.sample_string(&mut rand::rng(), 32);
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
        },
    ))
}
