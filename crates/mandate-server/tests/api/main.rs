//! Tests of the mandate app over real HTTP, through the test kit's port-0 harness.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod admin;
mod admin_agents;
mod admin_audit;
mod admin_chains;
mod admin_consents;
mod admin_dry_run;
mod admin_ledger;
mod admin_openapi;
mod admin_policies;
mod attacks;
mod client_auth;
mod config;
mod discovery;
mod dpop;
mod exchange;
mod feed;
mod id_jag;
mod id_jag_idp;
mod introspection;
mod limits;
mod proptest_http;
mod revocation;
mod ssf_receive;
mod ssf_transmit;
mod token_shell;

use mandate_model::AuthMethod;
use mandate_server::Settings;
use mandate_testkit::{
    agent_with_keys, agent_with_secret, empty_settings, resource_server, KeyKind, TestKey,
};

/// The fixture directory.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Clients used across the tests, and their keys.
#[derive(Debug)]
pub struct World {
    pub settings: Settings,
    pub es_key: TestKey,
    pub rs_key: TestKey,
    pub ed_key_without_kid: TestKey,
}

pub const BASIC_SECRET: &str = "basic-agent-secret-0123456789abcdef";
pub const POST_SECRET: &str = "post-agent-secret-0123456789abcdef";
pub const RS_SECRET: &str = "resource-server-secret-0123456789ab";

/// A world with: `basic-agent` (client_secret_basic), `post-agent` (client_secret_post),
/// `jwt-agent` (private_key_jwt with an ES256 key `es-1` and an RS256 key `rs-1`),
/// `nokid-agent` (private_key_jwt with an Ed25519 key published without kid and the RS256 key
/// without kid), `sleepy-agent` (suspended), `old-agent` (expired), `calendar-api` (resource
/// server).
pub fn world() -> World {
    let es_key = TestKey::generate(KeyKind::Es256, Some("es-1")).unwrap();
    let rs_key = TestKey::generate(KeyKind::Rs256, Some("rs-1")).unwrap();
    let ed_key_without_kid = TestKey::generate(KeyKind::EdDsa, None).unwrap();
    let mut settings = empty_settings();
    settings.clients.push(
        agent_with_secret("basic-agent", BASIC_SECRET, AuthMethod::ClientSecretBasic).unwrap(),
    );
    settings
        .clients
        .push(agent_with_secret("post-agent", POST_SECRET, AuthMethod::ClientSecretPost).unwrap());
    settings.clients.push(
        agent_with_keys(
            "jwt-agent",
            serde_json::json!({"keys": [es_key.public_jwk(), rs_key.public_jwk()]}),
        )
        .unwrap(),
    );
    let mut rs_without_kid = rs_key.public_jwk();
    rs_without_kid.as_object_mut().unwrap().remove("kid");
    settings.clients.push(
        agent_with_keys(
            "nokid-agent",
            serde_json::json!({"keys": [rs_without_kid, ed_key_without_kid.public_jwk()]}),
        )
        .unwrap(),
    );
    let mut sleepy =
        agent_with_secret("sleepy-agent", BASIC_SECRET, AuthMethod::ClientSecretBasic).unwrap();
    sleepy.state = mandate_model::ClientState::Suspended;
    settings.clients.push(sleepy);
    let mut old =
        agent_with_secret("old-agent", BASIC_SECRET, AuthMethod::ClientSecretBasic).unwrap();
    old.expires_at = Some(chrono::Utc::now() - chrono::Duration::days(1));
    settings.clients.push(old);
    settings
        .clients
        .push(resource_server("calendar-api", RS_SECRET, "https://calendar.example.com").unwrap());
    World {
        settings,
        es_key,
        rs_key,
        ed_key_without_kid,
    }
}
