//! Configuration errors name the key (and the file), and unsafe combinations are refused.

use std::io::Write;

use mandate_server::config::ConfigSource;
use mandate_server::{AppState, BuildOptions, ConfigError, Settings};

use crate::fixture;

fn file_with(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

/// Loads `text` from a file and builds the server state as `mandate serve --config` would.
async fn build(text: &str) -> Result<AppState, String> {
    let file = file_with(text);
    let settings = Settings::load(file.path()).map_err(|e| e.to_string())?;
    AppState::build(
        settings,
        ConfigSource::File(file.path().to_owned()),
        BuildOptions::default(),
    )
    .await
    .map_err(|e| {
        let message = e.to_string();
        assert!(
            message.contains(&file.path().display().to_string()),
            "{message} names the file"
        );
        message
    })
}

async fn refused(text: &str, needles: &[&str]) -> String {
    let message = build(text)
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"));
    for needle in needles {
        assert!(
            message.contains(needle),
            "'{message}' should mention '{needle}'"
        );
    }
    message
}

const AGENT: &str = r#"
[[clients]]
client_id = "travel-agent"
kind = "agent"
owners = ["alice@example.com"]
auth_method = "client_secret_basic"
secret_hash = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
"#;

#[tokio::test]
async fn a_minimal_file_is_accepted() {
    build("").await.unwrap();
    build(AGENT).await.unwrap();
}

#[tokio::test]
async fn unknown_keys_name_the_key_and_the_file() {
    let file = file_with("[signing]\nkey_fil = \"x.pem\"\n");
    let message = Settings::load(file.path()).unwrap_err().to_string();
    assert!(message.contains("key_fil"), "{message}");
    assert!(
        message.contains(&file.path().display().to_string()),
        "{message}"
    );
    let file = file_with("isuer = \"https://x.example.com\"\n");
    let message = Settings::load(file.path()).unwrap_err().to_string();
    assert!(message.contains("isuer"), "{message}");
}

#[tokio::test]
async fn a_missing_file_is_refused() {
    let error = Settings::load(std::path::Path::new("/nonexistent/mandate.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Load(_)));
}

#[tokio::test]
async fn bad_values_name_their_key() {
    refused("issuer = \"not a url\"", &["issuer"]).await;
    refused(
        "issuer = \"http://mandate.example.com\"",
        &["issuer", "https"],
    )
    .await;
    refused("issuer = \"https://mandate.example.com/\"", &["issuer"]).await;
    refused(
        "[signing]\nkey_file = \"/nonexistent/key.pem\"",
        &["signing.key_file", "/nonexistent/key.pem"],
    )
    .await;
    refused("[signing]\nalgorithm = \"HS256\"", &["algorithm"]).await;
    refused("[tokens]\nmax_chain_depth = 0", &["tokens.max_chain_depth"]).await;
    refused(
        "[tokens]\nledger_retention_secs = 3600",
        &["tokens.ledger_retention_secs", "172800"],
    )
    .await;
    let bad_client = AGENT.replace("travel-agent", "Travel Agent");
    refused(&bad_client, &["client_id", "Travel Agent"]).await;
    let bad_key = AGENT
        .replace("client_secret_basic", "private_key_jwt")
        .replace("secret_hash", "jwks_file")
        .replace(
            "\"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"",
            "\"/nonexistent/agent.jwks.json\"",
        );
    refused(
        &bad_key,
        &["clients[0].jwks_file", "/nonexistent/agent.jwks.json"],
    )
    .await;
    let no_secret = AGENT.replace(
        "secret_hash = \"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"",
        "",
    );
    refused(&no_secret, &["clients[0].secret_hash"]).await;
    let both = format!(
        "{AGENT}jwks_file = \"{}\"\n",
        fixture("issuer.jwks.json").display()
    );
    refused(&both, &["clients[0].jwks_file"]).await;
    refused(
        "listen = \"127.0.0.1:7000\"\nadmin_listen = \"127.0.0.1:7000\"\n",
        &["admin_listen"],
    )
    .await;
    // An administrator cannot pass for a client or an identity provider in the audit stream.
    for name in ["client:travel-agent", "ssf:corp", "system:lifecycle"] {
        let admin = ADMIN.replace("name = \"ops\"", &format!("name = \"{name}\""));
        refused(&admin, &["admin.credentials[0].name", "client:"]).await;
    }
}

/// A registration in the file obeys the rules the admin API applies (one set of rules): each
/// owner named, none twice; audiences only for resource servers, none twice.
#[tokio::test]
async fn file_clients_obey_the_admin_registration_rules() {
    let owners = |list: &str| AGENT.replace(r#"["alice@example.com"]"#, list);
    refused(
        &owners(r#"["alice@example.com", " "]"#),
        &["clients[0].owners", "owners[1] is empty"],
    )
    .await;
    refused(
        &owners(r#"["alice@example.com", "alice@example.com"]"#),
        &["clients[0].owners", "listed twice"],
    )
    .await;
    refused(&owners("[]"), &["clients[0].owners", "at least one"]).await;
    let agent_with_audience = format!("{AGENT}audiences = [\"https://calendar.example.com\"]\n");
    refused(
        &agent_with_audience,
        &["clients[0].audiences", "only for resource servers"],
    )
    .await;
    let twice = r#"
[[clients]]
client_id = "calendar-api"
kind = "resource_server"
owners = ["calendar-team@example.com"]
auth_method = "client_secret_basic"
secret_hash = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
audiences = ["https://calendar.example.com", "https://calendar.example.com"]
"#;
    refused(
        twice,
        &["clients[0].audiences", "audiences[1] is listed twice"],
    )
    .await;
    // Owners are stored trimmed, as the admin API stores them.
    let state = build(&owners(r#"[" alice@example.com "]"#)).await.unwrap();
    let client = state
        .clients
        .client(&mandate_model::ClientId::parse("travel-agent").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(client.owners, ["alice@example.com"]);
}

#[tokio::test]
async fn policies_must_name_known_agents_and_valid_audiences() {
    let unknown_actor = format!(
        "{AGENT}\n[[policies]]\nactor = \"ghost\"\naudience = \"https://calendar.example.com\"\nscopes = [\"calendar.read\"]\n"
    );
    refused(&unknown_actor, &["policies[0].actor", "ghost"]).await;
    let bad_audience = format!(
        "{AGENT}\n[[policies]]\nactor = \"travel-agent\"\naudience = \"calendar\"\nscopes = [\"calendar.read\"]\n"
    );
    refused(&bad_audience, &["audience", "calendar"]).await;
    let unknown_handoff = format!(
        "{AGENT}\n[[policies]]\nactor = \"travel-agent\"\naudience = \"agent:ghost\"\nscopes = [\"calendar.read\"]\n"
    );
    refused(&unknown_handoff, &["policies[0].audience", "agent:ghost"]).await;
    let fine = format!(
        "{AGENT}\n[[policies]]\nactor = \"travel-agent\"\naudience = \"https://calendar.example.com\"\nscopes = [\"calendar.read\"]\nmax_depth = 2\n"
    );
    build(&fine).await.unwrap();
}

#[tokio::test]
async fn participation_gates_guard_app_audiences_and_seed_an_unwritten_store() {
    let gate = |audience: &str, require: &str| {
        format!("{AGENT}\n[[participation_gates]]\naudience = \"{audience}\"\nrequire = \"{require}\"\n")
    };
    refused(
        &gate("agent:travel-agent", "verifies"),
        &["participation_gates[0]", "app audience"],
    )
    .await;
    refused(
        &gate("https://calendar.example.com", "sometimes"),
        &["require"],
    )
    .await;
    let state = build(&format!(
        "{}dry_run = true\n",
        gate("https://calendar.example.com", "follows_revocations")
    ))
    .await
    .unwrap();
    let gates = state.participation.gates().await.unwrap();
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].gate.audience, "https://calendar.example.com");
    assert_eq!(
        gates[0].gate.require,
        mandate_store::Requirement::FollowsRevocations
    );
    assert!(gates[0].gate.dry_run);
    assert_eq!(gates[0].gate.set_by, "config");
}

fn issuer(alias: &str, host: &str, as_is: bool) -> String {
    format!(
        "[[trusted_issuers]]\nissuer = \"https://{host}\"\nalias = \"{alias}\"\nsubject_as_is = {as_is}\njwks_file = \"{}\"\nalgorithms = [\"ES256\"]\n",
        fixture("issuer.jwks.json").display()
    )
}

#[tokio::test]
async fn trusted_issuers_are_checked() {
    build(&issuer("corp", "corp.example.com", true))
        .await
        .unwrap();
    let two_as_is =
        issuer("corp", "corp.example.com", true) + &issuer("other", "other.example.com", true);
    refused(&two_as_is, &["trusted_issuers[1].subject_as_is"]).await;
    let same_alias =
        issuer("corp", "corp.example.com", false) + &issuer("corp", "other.example.com", false);
    refused(&same_alias, &["trusted_issuers[1].alias"]).await;
    let hmac = issuer("corp", "corp.example.com", false).replace("[\"ES256\"]", "[\"HS256\"]");
    refused(&hmac, &["trusted_issuers[0].algorithms", "HS256"]).await;
    let none = issuer("corp", "corp.example.com", false).replace("[\"ES256\"]", "[\"none\"]");
    refused(&none, &["trusted_issuers[0].algorithms"]).await;
}

/// The Shared Signals poll endpoint is fetched with a bearer token: only over https (http on
/// loopback), never with credentials in the URL, and only with a token file that holds one.
#[tokio::test]
async fn shared_signals_polling_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("poll.token");
    std::fs::write(&token, "poll-token\n").unwrap();
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "  \n").unwrap();
    let polling = |url: &str, token: Option<&std::path::Path>| {
        let mut text = issuer("corp", "corp.example.com", false);
        text.push_str(&format!("ssf_poll_url = \"{url}\"\n"));
        if let Some(token) = token {
            text.push_str(&format!(
                "ssf_poll_token_file = {:?}\n",
                token.display().to_string()
            ));
        }
        text
    };
    build(&polling("https://corp.example.com/ssf/poll", Some(&token)))
        .await
        .unwrap();
    build(&polling("http://127.0.0.1:9/ssf/poll", Some(&token)))
        .await
        .unwrap();
    for url in [
        "http://corp.example.com/ssf/poll",
        "https://user:pw@corp.example.com/ssf/poll",
        "file:///etc/passwd",
        "https://corp.example.com/ssf/poll#x",
    ] {
        refused(
            &polling(url, Some(&token)),
            &["trusted_issuers[0].ssf_poll_url"],
        )
        .await;
    }
    refused(
        &polling("https://corp.example.com/ssf/poll", None),
        &["trusted_issuers[0].ssf_poll_token_file"],
    )
    .await;
    refused(
        &polling("https://corp.example.com/ssf/poll", Some(&empty)),
        &["trusted_issuers[0].ssf_poll_token_file", "empty"],
    )
    .await;
}

/// A configuration that would be fine on loopback, exposed on all interfaces.
fn exposed(extra: &str) -> String {
    format!("listen = \"0.0.0.0:0\"\nissuer = \"https://mandate.example.com\"\n{extra}")
}

fn keys() -> String {
    format!(
        "[signing]\nkey_file = \"{}\"\n[tokens]\nchain_id_key_file = \"{}\"\n",
        fixture("signing-es256.pem").display(),
        fixture("chain-id.key").display()
    )
}

const ADMIN: &str = "[[admin.credentials]]\nname = \"ops\"\nrole = \"revoke\"\nsecret_hash = \"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"\n";

#[tokio::test]
async fn unsafe_combinations_are_refused() {
    // Exposed without a key file.
    refused(&exposed(ADMIN), &["signing.key_file"]).await;
    // Exposed with a key but no chain-id key.
    let no_chain_key = format!(
        "[signing]\nkey_file = \"{}\"\n{ADMIN}",
        fixture("signing-es256.pem").display()
    );
    refused(&exposed(&no_chain_key), &["chain_id_key_file"]).await;
    // Exposed without admin credentials.
    refused(&exposed(&keys()), &["admin.credentials"]).await;
    // Exposed with an http issuer (loopback http is a valid URL, but not for a deployment).
    let http_issuer = format!(
        "listen = \"0.0.0.0:0\"\nissuer = \"http://127.0.0.1:8080\"\n{}{ADMIN}",
        keys()
    );
    refused(&http_issuer, &["https"]).await;
    // An exposed admin listener counts too.
    let admin_exposed = format!("admin_listen = \"0.0.0.0:0\"\n{ADMIN}");
    refused(&admin_exposed, &["signing.key_file"]).await;
    // A Redis store is a deployment even on loopback.
    refused(
        "[store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379/0\"\n",
        &["store"],
    )
    .await;
    // All present: accepted.
    build(&exposed(&format!("{}{ADMIN}", keys())))
        .await
        .unwrap();
}

#[tokio::test]
async fn development_settings_are_valid_but_not_from_a_file() {
    let (settings, _extras) = mandate_server::dev::development_settings().unwrap();
    assert!(settings.listen.ip().is_loopback() && settings.admin_listen.ip().is_loopback());
    AppState::build(settings, ConfigSource::Development, BuildOptions::default())
        .await
        .unwrap();
}
