//! Key rotation (DESIGN.md sections 9 and 11, docs/KEYS.md): `mandate keys rotate`, a running
//! `mandate serve --config` that reloads its keys on SIGHUP, and the same reload in process
//! through `AppState::reload_keys`. The invariants: a next key is published before it signs; after
//! promotion the old key stays published, so the tokens it signed still verify downstream, at
//! `/introspect` and as subject tokens; once it is dropped they do not; a failed reload changes
//! nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mandate_model::SecretHash;
use mandate_server::config::{ConfigError, ConfigSource};
use mandate_server::state::KeyReloadError;
use mandate_server::{AppState, BuildOptions, Settings};
use mandate_testkit::{
    body_json, claims_of, delegation_auth, delegation_exchange, delegation_issue,
    delegation_settings, exchange_form, header_of, id_token_claims, ClientAuth, KeyKind, TestKey,
    TestServer, CAL, CORP,
};
use mandate_token::{SigningAlgorithm, SigningKey};
use mandate_verify::Verifier;
use reqwest::StatusCode;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/// Writes a new key to `dir/name` and returns its path and `kid`.
fn write_key(dir: &Path, name: &str, algorithm: SigningAlgorithm) -> (PathBuf, String) {
    let pem = SigningKey::generate_pem(algorithm).unwrap();
    let kid = SigningKey::from_pkcs8_pem(algorithm, &pem)
        .unwrap()
        .kid()
        .to_owned();
    let path = dir.join(name);
    std::fs::write(&path, &*pem).unwrap();
    (path, kid)
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_owned()
}

/// Verifies `token` as a downstream app of [`CAL`] would, with `jwks` as its key set.
async fn verifies_downstream(issuer: &str, jwks: &Value, token: &str) -> bool {
    Verifier::builder(issuer, CAL)
        .jwks(jwks.clone())
        .build()
        .await
        .unwrap()
        .verify(token)
        .await
        .is_ok()
}

fn corp() -> TestKey {
    TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap()
}

fn id_token(corp: &TestKey) -> String {
    corp.sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// In process, through AppState::reload_keys

struct Node {
    server: TestServer,
    corp: TestKey,
    dir: tempfile::TempDir,
    a: PathBuf,
    a_kid: String,
}

async fn node() -> Node {
    let corp = corp();
    let dir = tempfile::tempdir().unwrap();
    let (a, a_kid) = write_key(dir.path(), "a.pem", SigningAlgorithm::Es256);
    let mut settings = delegation_settings(&corp);
    settings.signing.key_file = Some(a.clone());
    let server = TestServer::spawn(settings).await.unwrap();
    Node {
        server,
        corp,
        dir,
        a,
        a_kid,
    }
}

impl Node {
    /// The running settings with another `[signing]`.
    fn signing(&self, key_file: &Path, next: Option<&Path>, retired: &[&Path]) -> Settings {
        let mut settings = Settings::clone(&self.server.state.settings);
        settings.signing.key_file = Some(key_file.to_owned());
        settings.signing.next_key_file = next.map(Path::to_owned);
        settings.signing.retired_key_files = retired.iter().map(|p| p.to_path_buf()).collect();
        settings
    }

    /// A hand-off to the booking tool and the calendar token it exchanges it for.
    async fn calendar_token(&self) -> (String, String) {
        let handoff = delegation_issue(
            &self.server,
            &id_token(&self.corp),
            "id_token",
            "agent:booking-tool",
            "assistant",
        )
        .await
        .unwrap();
        let calendar =
            delegation_issue(&self.server, &handoff, "access_token", CAL, "booking-tool")
                .await
                .unwrap();
        (handoff, calendar)
    }

    async fn jwks(&self) -> Value {
        self.server.get_json("/jwks").await.unwrap()
    }

    async fn introspection_active(&self, token: &str) -> bool {
        let response = self
            .server
            .post_form(
                "/introspect",
                &[("token", token)],
                &delegation_auth("calendar-api"),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        body_json(response).await["active"].as_bool().unwrap()
    }
}

#[tokio::test]
async fn a_staged_key_is_published_before_it_signs_and_a_retired_key_until_it_is_dropped() {
    let node = node().await;
    let issuer = node.server.issuer().to_owned();
    let (b, b_kid) = write_key(node.dir.path(), "b.pem", SigningAlgorithm::Es256);
    let (handoff_a, calendar_a) = node.calendar_token().await;
    assert_eq!(kid_of(&calendar_a), node.a_kid);

    // 1. Stage: published, not signing.
    let reload = node
        .server
        .state
        .reload_keys(&node.signing(&node.a, Some(&b), &[]))
        .unwrap();
    assert_eq!(reload.active_kid, node.a_kid);
    assert!(!reload.unstaged && !reload.dropped_previous && reload.ignored.is_empty());
    assert_eq!(
        kids(&node.jwks().await),
        [node.a_kid.clone(), b_kid.clone()]
    );
    let (_, calendar_staged) = node.calendar_token().await;
    assert_eq!(
        kid_of(&calendar_staged),
        node.a_kid,
        "a staged key never signs"
    );

    // 2. Promote: the new key signs, the old one stays published.
    let reload = node
        .server
        .state
        .reload_keys(&node.signing(&b, None, &[&node.a]))
        .unwrap();
    assert_eq!(
        (reload.previous_kid.as_str(), reload.active_kid.as_str()),
        (node.a_kid.as_str(), b_kid.as_str())
    );
    assert!(!reload.unstaged, "b was published before it signed");
    assert!(!reload.dropped_previous);
    let (_, calendar_b) = node.calendar_token().await;
    assert_eq!(kid_of(&calendar_b), b_kid);
    let jwks = node.jwks().await;
    assert_eq!(kids(&jwks), [b_kid.clone(), node.a_kid.clone()]);
    assert!(verifies_downstream(&issuer, &jwks, &calendar_a).await);
    assert!(verifies_downstream(&issuer, &jwks, &calendar_b).await);
    assert!(node.introspection_active(&calendar_a).await);
    // mandate verifies its own subject tokens with the published set: the old key's hand-off is
    // still exchanged, and the new key signs the result.
    let calendar_again = delegation_issue(
        &node.server,
        &handoff_a,
        "access_token",
        CAL,
        "booking-tool",
    )
    .await
    .unwrap();
    assert_eq!(kid_of(&calendar_again), b_kid);

    // 3. Retire: the old key's tokens are refused everywhere.
    node.server
        .state
        .reload_keys(&node.signing(&b, None, &[]))
        .unwrap();
    let jwks = node.jwks().await;
    assert_eq!(kids(&jwks), [b_kid.as_str()]);
    assert!(!node.introspection_active(&calendar_a).await);
    let (status, body) = delegation_exchange(
        &node.server,
        &handoff_a,
        "access_token",
        CAL,
        "booking-tool",
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert!(!verifies_downstream(&issuer, &jwks, &calendar_a).await);
    assert!(node.introspection_active(&calendar_b).await);
}

#[tokio::test]
async fn a_failed_reload_keeps_the_keys_in_force() {
    let node = node().await;
    let dir = node.dir.path();
    let (b, _) = write_key(dir, "b.pem", SigningAlgorithm::Es256);
    let (ed, _) = write_key(dir, "ed.pem", SigningAlgorithm::EdDsa);
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN PRIVATE KEY-----\nnot a key\n").unwrap();
    let missing = dir.join("missing.pem");
    node.server
        .state
        .reload_keys(&node.signing(&node.a, Some(&b), &[]))
        .unwrap();
    let before = node.jwks().await;
    let (_, calendar_before) = node.calendar_token().await;

    let mut no_key_file = node.signing(&b, None, &[&node.a]);
    no_key_file.signing.key_file = None;
    let mut invalid_elsewhere = node.signing(&b, None, &[&node.a]);
    invalid_elsewhere.issuer = "ftp://mandate.example.com".into();
    let cases: Vec<(&str, Settings, &str)> = vec![
        (
            "unreadable key_file",
            node.signing(&missing, None, &[&node.a]),
            "signing.key_file",
        ),
        (
            "key_file not a key",
            node.signing(&garbage, None, &[&node.a]),
            "signing.key_file",
        ),
        // algorithm = ES256 with an Ed25519 key_file.
        (
            "algorithm mismatch",
            node.signing(&ed, None, &[&node.a]),
            "signing.key_file",
        ),
        (
            "next key not a key",
            node.signing(&node.a, Some(&garbage), &[]),
            "signing.next_key_file",
        ),
        (
            "retired key not a key",
            node.signing(&b, None, &[&node.a, &garbage]),
            "signing.retired_key_files[1]",
        ),
        (
            "a key published twice",
            node.signing(&b, None, &[&b]),
            "signing",
        ),
        ("invalid setting elsewhere", invalid_elsewhere, "issuer"),
    ];
    for (case, settings, key) in cases {
        match node.server.state.reload_keys(&settings) {
            Err(KeyReloadError::Config(ConfigError::Invalid { key: named, .. })) => {
                assert_eq!(named, key, "{case}")
            }
            other => panic!("{case}: {other:?}"),
        }
        assert_eq!(node.jwks().await, before, "{case}: /jwks unchanged");
    }
    assert!(matches!(
        node.server.state.reload_keys(&no_key_file),
        Err(KeyReloadError::NoKeyFile)
    ));
    assert_eq!(node.jwks().await, before);

    // Still signing with the old key, still accepting its tokens.
    let (_, calendar_after) = node.calendar_token().await;
    assert_eq!(kid_of(&calendar_after), node.a_kid);
    assert!(node.introspection_active(&calendar_before).await);
}

#[tokio::test]
async fn promoting_a_key_that_was_never_staged_is_reported() {
    let node = node().await;
    let (b, b_kid) = write_key(node.dir.path(), "b.pem", SigningAlgorithm::Es256);
    let (_, calendar_a) = node.calendar_token().await;
    // Skips the staging step and drops the old key at once: allowed, but both are reported.
    let reload = node
        .server
        .state
        .reload_keys(&node.signing(&b, None, &[]))
        .unwrap();
    assert!(reload.unstaged);
    assert!(reload.dropped_previous);
    assert_eq!(reload.published, [b_kid.as_str()]);
    let (_, calendar_b) = node.calendar_token().await;
    assert_eq!(kid_of(&calendar_b), b_kid);
    assert!(!node.introspection_active(&calendar_a).await);
}

#[tokio::test]
async fn changes_outside_signing_are_reported_and_not_applied() {
    let node = node().await;
    let (b, _) = write_key(node.dir.path(), "b.pem", SigningAlgorithm::Es256);
    let mut settings = node.signing(&node.a, Some(&b), &[]);
    settings.tokens.access_token_ttl_secs = 60;
    settings.policies.clear();
    let reload = node.server.state.reload_keys(&settings).unwrap();
    assert_eq!(reload.ignored, ["tokens", "policies"]);
    assert_eq!(kids(&node.jwks().await).len(), 2, "[signing] was applied");
    let (_, calendar) = node.calendar_token().await;
    let claims = claims_of(&calendar);
    // 300 s at most, less only by the parent grant's remaining life (the ID token was minted a
    // moment ago), and far above the 60 s the ignored change asked for.
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        (290..=300).contains(&lifetime),
        "the lifetime in force is the one the node started with: {lifetime}"
    );
}

#[tokio::test]
async fn a_rotation_may_change_the_algorithm() {
    let node = node().await;
    let issuer = node.server.issuer().to_owned();
    let (ed, ed_kid) = write_key(node.dir.path(), "ed.pem", SigningAlgorithm::EdDsa);
    let (_, calendar_es) = node.calendar_token().await;
    // Staged while ES256 signs.
    node.server
        .state
        .reload_keys(&node.signing(&node.a, Some(&ed), &[]))
        .unwrap();
    let jwks = node.jwks().await;
    assert_eq!(jwks["keys"][1]["alg"], "EdDSA");
    assert_eq!(kid_of(&node.calendar_token().await.1), node.a_kid);
    // Promoted together with the algorithm.
    let mut promoted = node.signing(&ed, None, &[&node.a]);
    promoted.signing.algorithm = SigningAlgorithm::EdDsa;
    let reload = node.server.state.reload_keys(&promoted).unwrap();
    assert!(!reload.unstaged);
    let (_, calendar_ed) = node.calendar_token().await;
    assert_eq!(header_of(&calendar_ed)["alg"], "EdDSA");
    assert_eq!(kid_of(&calendar_ed), ed_kid);
    let jwks = node.jwks().await;
    assert!(verifies_downstream(&issuer, &jwks, &calendar_es).await);
    assert!(verifies_downstream(&issuer, &jwks, &calendar_ed).await);
    assert!(node.introspection_active(&calendar_es).await);
    assert!(node.introspection_active(&calendar_ed).await);
}

#[tokio::test]
async fn only_a_node_started_from_a_file_reloads_from_one() {
    let node = node().await;
    assert!(matches!(
        node.server.state.reload_keys_from_file(),
        Err(KeyReloadError::NoFile(_))
    ));
    let (settings, _) = mandate_server::dev::development_settings().unwrap();
    let development = AppState::build(settings, ConfigSource::Development, BuildOptions::default())
        .await
        .unwrap();
    let kid = development.keys.current().active().kid().to_owned();
    assert!(matches!(
        development.reload_keys_from_file(),
        Err(KeyReloadError::NoFile(_))
    ));
    assert_eq!(development.keys.current().active().kid(), kid);
}

#[tokio::test]
async fn a_node_started_from_a_file_reloads_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, a_kid) = write_key(dir.path(), "a.pem", SigningAlgorithm::Es256);
    let (b, b_kid) = write_key(dir.path(), "b.pem", SigningAlgorithm::Es256);
    let path = dir.path().join("mandate.toml");
    std::fs::write(&path, signing_section(&a, None, &[])).unwrap();
    let state = AppState::build(
        Settings::load(&path).unwrap(),
        ConfigSource::File(path.clone()),
        BuildOptions::default(),
    )
    .await
    .unwrap();
    std::fs::write(&path, signing_section(&a, Some(&b), &[])).unwrap();
    let reload = state.reload_keys_from_file().unwrap();
    assert_eq!(reload.published, [a_kid.clone(), b_kid.clone()]);
    assert!(reload.ignored.is_empty());
    // An unreadable file changes nothing.
    std::fs::write(&path, "[signing]\nkey_fil = \"typo\"\n").unwrap();
    assert!(matches!(
        state.reload_keys_from_file(),
        Err(KeyReloadError::Config(ConfigError::Load(_)))
    ));
    std::fs::remove_file(&path).unwrap();
    assert!(state.reload_keys_from_file().is_err());
    let published: Vec<String> = state
        .keys
        .current()
        .published()
        .map(|k| k.kid().to_owned())
        .collect();
    assert_eq!(published, [a_kid, b_kid]);
}

// ---------------------------------------------------------------------------------------------
// The real binary: `mandate keys rotate` and SIGHUP

fn mandate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.env_remove("MANDATE_LOG");
    command
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

fn signing_section(key_file: &Path, next: Option<&Path>, retired: &[&Path]) -> String {
    let retired: Vec<String> = retired.iter().map(|p| toml_path(p)).collect();
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[signing]\nkey_file = {}\n\
         next_key_file = {}\nretired_key_files = [{}]\n",
        toml_path(key_file),
        next.map(toml_path).unwrap_or_else(|| "\"\"".into()),
        retired.join(", "),
    )
}

/// The delegation world of the test kit, as a configuration file.
fn world_file(dir: &Path, corp: &TestKey, signing: &str, access_ttl: u32) -> String {
    let jwks = dir.join("corp.jwks.json");
    std::fs::write(&jwks, corp.jwks().to_string()).unwrap();
    let agent = |id: &str, secret: &str| {
        format!(
            "[[clients]]\nclient_id = \"{id}\"\nkind = \"agent\"\nowners = [\"ops@example.com\"]\n\
             auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n\n",
            SecretHash::of(secret)
        )
    };
    format!(
        "{signing}\n[tokens]\naccess_token_ttl_secs = {access_ttl}\n\n\
         [[trusted_issuers]]\nissuer = \"{CORP}\"\nalias = \"corp\"\njwks_file = {}\n\
         algorithms = [\"ES256\"]\n\n{}{}\
         [[clients]]\nclient_id = \"calendar-api\"\nkind = \"resource_server\"\n\
         owners = [\"ops@example.com\"]\nauth_method = \"client_secret_basic\"\n\
         secret_hash = \"{}\"\naudiences = [\"{CAL}\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"agent:booking-tool\"\n\
         scopes = [\"calendar.read\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n\n\
         [[policies]]\nactor = \"booking-tool\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n",
        toml_path(&jwks),
        agent("assistant", "assistant-secret"),
        agent("booking-tool", "booking-secret"),
        SecretHash::of("calendar-secret"),
    )
}

/// A running `mandate serve --config`, its log lines, and its address; killed when dropped.
struct Served {
    child: Child,
    address: String,
    logs: mpsc::Receiver<String>,
    http: reqwest::Client,
}

impl Served {
    fn start(config: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = mandate()
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let address = serve::listening_address(&mut child);
        Self {
            child,
            address,
            logs,
            http: reqwest::Client::new(),
        }
    }

    /// Sends SIGHUP and returns the log line with the reload's outcome (and those before it).
    fn hangup(&self) -> Vec<String> {
        // Only what this reload logs.
        self.logs.try_iter().for_each(drop);
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .logs
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no reload outcome logged; saw {seen:#?}"));
            let done = line.contains("signing keys reloaded")
                || line.contains("signing keys NOT reloaded");
            seen.push(line);
            if done {
                // The warnings of a reload follow its outcome line on the same thread.
                std::thread::sleep(Duration::from_millis(200));
                seen.extend(self.logs.try_iter());
                return seen;
            }
        }
    }

    async fn jwks(&self) -> Value {
        self.http
            .get(format!("http://{}/jwks", self.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, String)], client: &str) -> (StatusCode, Value) {
        let ClientAuth::Basic(id, secret) = delegation_auth(client) else {
            panic!("the test kit's clients use HTTP Basic")
        };
        let response = self
            .http
            .post(format!("http://{}/{path}", self.address))
            .basic_auth(id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    async fn exchange(
        &self,
        subject: &str,
        kind: &str,
        audience: &str,
        client: &str,
    ) -> (StatusCode, Value) {
        self.post(
            "token",
            &exchange_form(subject, kind, audience, &[]),
            client,
        )
        .await
    }

    async fn issue(&self, subject: &str, kind: &str, audience: &str, client: &str) -> String {
        let (status, body) = self.exchange(subject, kind, audience, client).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn calendar_token(&self, corp: &TestKey) -> (String, String) {
        let handoff = self
            .issue(
                &id_token(corp),
                "id_token",
                "agent:booking-tool",
                "assistant",
            )
            .await;
        let calendar = self
            .issue(&handoff, "access_token", CAL, "booking-tool")
            .await;
        (handoff, calendar)
    }

    async fn active(&self, token: &str) -> bool {
        let (status, body) = self
            .post("introspect", &[("token", token.to_owned())], "calendar-api")
            .await;
        assert_eq!(status, StatusCode::OK);
        body["active"].as_bool().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mandate keys rotate --config FILE --dir DIR`: the new key's path and `kid`, and the output.
fn rotate(config: &Path, dir: &Path) -> (PathBuf, String, String) {
    let output = mandate()
        .args(["keys", "rotate", "--config"])
        .arg(config)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first: Vec<&str> = stdout.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(first[..3], ["wrote", "ES256", "key"], "{stdout}");
    (PathBuf::from(first[5]), first[3].to_owned(), stdout)
}

#[test]
fn keys_rotate_writes_a_private_key_once_and_prints_the_procedure() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write_key(dir.path(), "a.pem", SigningAlgorithm::Es256);
    let (old, _) = write_key(dir.path(), "old.pem", SigningAlgorithm::Es256);
    let config = dir.path().join("mandate.toml");
    let mut text = signing_section(&a, None, &[&old]);
    text.push_str("\n[tokens]\naccess_token_ttl_secs = 900\nclock_skew_secs = 30\n");
    std::fs::write(&config, text).unwrap();

    let (path, kid, stdout) = rotate(&config, dir.path());
    assert_eq!(path.parent(), Some(dir.path()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read(&path).unwrap();
    assert_eq!(
        SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &pem)
            .unwrap()
            .kid(),
        kid
    );
    assert!(!stdout.contains("PRIVATE"), "no key material is printed");
    // The configuration's own paths and lifetimes.
    let stage = stdout.split("1. Stage").nth(1).unwrap();
    assert!(
        stage.contains(&format!("next_key_file = {}", toml_path(&path))),
        "{stdout}"
    );
    assert!(
        stage.contains(&format!("key_file = {}", toml_path(&a))),
        "{stdout}"
    );
    let promote = stdout.split("2. Promote").nth(1).unwrap();
    assert!(
        promote.contains(&format!(
            "retired_key_files = [{}, {}]",
            toml_path(&a),
            toml_path(&old)
        )),
        "{stdout}"
    );
    assert!(promote.contains("at least 300 s"), "{stdout}");
    // max(900, 300) + 30.
    assert!(stdout.contains("at least 930 s"), "{stdout}");

    // --out never overwrites.
    let again = mandate()
        .args(["keys", "rotate", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read(&path).unwrap(), pem);
    // --dir and --out together are a usage error.
    let both = mandate()
        .args(["keys", "rotate", "--dir", "x", "--out", "y"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    // An unusable configuration is an error, and no key is written.
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    let broken = mandate()
        .args([
            "keys",
            "rotate",
            "--config",
            "/nonexistent/mandate.toml",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!broken.status.success());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
}

#[tokio::test]
async fn sighup_stages_promotes_and_retires_keys_in_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let corp = corp();
    let a = dir.path().join("a.pem");
    let generated = mandate()
        .args(["keys", "generate", "--out"])
        .arg(&a)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let a_kid = String::from_utf8_lossy(&generated.stdout)
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    let config = dir.path().join("mandate.toml");
    let write = |signing: String, access_ttl: u32| {
        std::fs::write(&config, world_file(dir.path(), &corp, &signing, access_ttl)).unwrap()
    };
    write(signing_section(&a, None, &[]), 300);
    // Reloads read the environment the node started with: this override is not a change.
    let served = Served::start(&config, &[("MANDATE__TOKENS__CLOCK_SKEW_SECS", "30")]);
    let issuer = "http://127.0.0.1:8080";
    assert_eq!(kids(&served.jwks().await), [a_kid.as_str()]);
    let (handoff_a, calendar_a) = served.calendar_token(&corp).await;
    assert_eq!(kid_of(&calendar_a), a_kid);

    // 1. Stage the key `mandate keys rotate` wrote.
    let (b, b_kid, _) = rotate(&config, dir.path());
    write(signing_section(&a, Some(&b), &[]), 300);
    let log = served.hangup();
    assert!(
        log.iter().any(|l| l.contains("signing keys reloaded")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("outside [signing]")),
        "the MANDATE__ override was applied again: {log:#?}"
    );
    assert_eq!(kids(&served.jwks().await), [a_kid.clone(), b_kid.clone()]);
    assert_eq!(kid_of(&served.calendar_token(&corp).await.1), a_kid);

    // 2. Promote.
    write(signing_section(&b, None, &[&a]), 300);
    let log = served.hangup();
    assert!(
        log.iter().any(|l| l.contains("signing keys reloaded")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("WARN")), "{log:#?}");
    let (_, calendar_b) = served.calendar_token(&corp).await;
    assert_eq!(kid_of(&calendar_b), b_kid);
    let jwks = served.jwks().await;
    assert_eq!(kids(&jwks), [b_kid.clone(), a_kid.clone()]);
    assert!(verifies_downstream(issuer, &jwks, &calendar_a).await);
    assert!(served.active(&calendar_a).await);
    assert_eq!(
        kid_of(
            &served
                .issue(&handoff_a, "access_token", CAL, "booking-tool")
                .await
        ),
        b_kid
    );

    // A reload that fails keeps serving with the keys in force.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a key").unwrap();
    write(signing_section(&garbage, None, &[&a]), 300);
    let log = served.hangup();
    assert!(
        log.iter()
            .any(|l| l.contains("signing keys NOT reloaded") && l.contains("signing.key_file")),
        "{log:#?}"
    );
    assert_eq!(served.jwks().await, jwks);
    assert_eq!(kid_of(&served.calendar_token(&corp).await.1), b_kid);
    assert!(served.active(&calendar_a).await);

    // 3. Retire the old key; a change outside [signing] is logged and not applied.
    write(signing_section(&b, None, &[]), 60);
    let log = served.hangup();
    assert!(
        log.iter().any(|l| l.contains("signing keys reloaded")),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("outside [signing]") && l.contains("tokens")),
        "{log:#?}"
    );
    let jwks = served.jwks().await;
    assert_eq!(kids(&jwks), [b_kid.as_str()]);
    assert!(!served.active(&calendar_a).await);
    let (status, body) = served
        .exchange(&handoff_a, "access_token", CAL, "booking-tool")
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request"))
    );
    assert!(!verifies_downstream(issuer, &jwks, &calendar_a).await);
    let claims = claims_of(&served.calendar_token(&corp).await.1);
    // Not the 60 s of the edited file: 300 s, less only by the ID token's remaining life.
    let lifetime = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!(
        (290..=300).contains(&lifetime),
        "access_token_ttl_secs needs a restart: {lifetime}"
    );
}
