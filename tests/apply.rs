//! `mandate apply --config FILE [--dry-run] [--prune]`: the real binary against a real server on
//! loopback. The dry run prints the difference and changes nothing; applying makes the
//! deployment hold what the file says (secrets by their hash, policy rows, grants by their
//! content id); applying again is a no-op; pruning removes what the file does not name; a
//! conflict changes nothing at all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};

use mandate_model::SecretHash;
use mandate_server::Settings;
use mandate_testkit::{KeyKind, TestKey, TestServer, CAL, CORP};
use serde_json::Value;

const ADMIN: &str = "gitops-secret-0123456789abcdefghijklmnop";

/// The part every file shares: an admin credential and the corporate issuer.
fn head(dir: &Path) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[admin.credentials]]
name = "gitops"
role = "manage"
secret_hash = "{admin}"

[[trusted_issuers]]
issuer = "{CORP}"
alias = "corp"
jwks_file = "{jwks}"
algorithms = ["ES256"]
"#,
        admin = SecretHash::of(ADMIN),
        jwks = dir.join("corp.json").display(),
    )
}

fn agent(id: &str, description: &str, owners: &str, secret: &str, method: &str) -> String {
    format!(
        r#"
[[clients]]
client_id = "{id}"
kind = "agent"
owners = [{owners}]
description = "{description}"
state = "active"
auth_method = "{method}"
secret_hash = "{hash}"
"#,
        hash = SecretHash::of(secret)
    )
}

fn calendar_api() -> String {
    format!(
        r#"
[[clients]]
client_id = "calendar-api"
kind = "resource_server"
owners = ["calendar@example.com"]
description = "Calendar"
state = "active"
auth_method = "client_secret_basic"
secret_hash = "{hash}"
audiences = ["{CAL}"]
"#,
        hash = SecretHash::of("calendar-secret")
    )
}

fn policy(actor: &str, scopes: &str) -> String {
    let scopes: Vec<String> = scopes.split(' ').map(|s| format!("\"{s}\"")).collect();
    format!(
        "\n[[policies]]\nactor = \"{actor}\"\naudience = \"{CAL}\"\nscopes = [{}]\n",
        scopes.join(", ")
    )
}

fn consent(actor: &str, scopes: &str) -> String {
    let scopes: Vec<String> = scopes.split(' ').map(|s| format!("\"{s}\"")).collect();
    format!(
        "\n[[consents]]\nsubject = \"corp|alice\"\nactor = \"{actor}\"\naudience = \"{CAL}\"\nscopes = [{}]\nexpires_at = \"2099-01-01T00:00:00Z\"\n",
        scopes.join(", ")
    )
}

/// What the deployment starts from.
fn seed(dir: &Path) -> String {
    [
        head(dir),
        agent(
            "assistant",
            "Assistant",
            r#""team@example.com""#,
            "assistant-secret",
            "client_secret_basic",
        ),
        agent(
            "legacy-bot",
            "Old",
            r#""team@example.com""#,
            "legacy-secret",
            "client_secret_basic",
        ),
        calendar_api(),
        policy("assistant", "calendar.read"),
        policy("legacy-bot", "calendar.read"),
    ]
    .concat()
}

/// What the team wants: the assistant described anew, owned by two and with a new secret, a new
/// report bot with a grant from alice, the assistant allowed to write; the legacy bot gone.
fn wanted(dir: &Path) -> String {
    wanted_with(dir, "client_secret_basic")
}

/// [`wanted`], with the assistant authenticating by `method`.
fn wanted_with(dir: &Path, method: &str) -> String {
    [
        head(dir),
        agent(
            "assistant",
            "Assistant, v2",
            r#""team@example.com", "sre@example.com""#,
            "assistant-rotated",
            method,
        ),
        agent(
            "report-bot",
            "Reports",
            r#""data@example.com""#,
            "report-secret",
            "client_secret_post",
        ),
        calendar_api(),
        policy("assistant", "calendar.read calendar.write"),
        policy("report-bot", "calendar.read"),
        consent("report-bot", "calendar.read"),
    ]
    .concat()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

struct World {
    server: TestServer,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    std::fs::write(dir.path().join("corp.json"), corp.jwks().to_string()).unwrap();
    let settings = Settings::from_toml(&seed(dir.path())).unwrap();
    let server = TestServer::spawn(settings).await.unwrap();
    World {
        server,
        dir,
        http: reqwest::Client::new(),
    }
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl World {
    async fn apply(&self, file: &Path, flags: &[&str]) -> Run {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
            .env_remove("MANDATE_ADMIN_URL")
            .env_remove("MANDATE_LOG")
            .env("MANDATE_ADMIN_SECRET", ADMIN)
            .args(["apply", "--config"])
            .arg(file)
            .args(flags)
            .args(["--url", &self.server.admin_url("")])
            .output()
            .await
            .unwrap();
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    async fn admin(&self, path: &str) -> Value {
        let answer = self
            .http
            .get(self.server.admin_url(path))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json().await.unwrap()
    }

    /// Everything apply may change, to tell whether anything did.
    async fn snapshot(&self) -> Value {
        let mut agents = self.admin("/admin/agents").await;
        // The last use moves when a test authenticates; it is not configuration.
        for agent in agents["agents"].as_array_mut().unwrap() {
            let agent = agent.as_object_mut().unwrap();
            agent.remove("last_authenticated_at");
            agent.remove("last_exchange_at");
        }
        serde_json::json!({
            "agents": agents,
            "policies": self.admin("/admin/policies").await,
            "consents": self.admin("/admin/consents").await,
        })
    }

    async fn agent(&self, id: &str) -> Value {
        self.admin(&format!("/admin/agents/{id}")).await
    }

    /// Whether `client` authenticates with `secret` (RFC 7009 answers 200 to any authenticated
    /// client, 401 otherwise).
    async fn authenticates(&self, client: &str, secret: &str, basic: bool) -> bool {
        let request = self.http.post(self.server.url("/revoke"));
        let request = if basic {
            request
                .basic_auth(client, Some(secret))
                .form(&[("token", "x")])
        } else {
            request.form(&[
                ("token", "x"),
                ("client_id", client),
                ("client_secret", secret),
            ])
        };
        let status = request.send().await.unwrap().status();
        assert!(status == 200 || status == 401, "{status}");
        status == 200
    }
}

#[tokio::test]
async fn a_dry_run_prints_the_difference_and_changes_nothing() {
    let world = world().await;
    let file = write(world.dir.path(), "wanted.toml", &wanted(world.dir.path()));
    let before = world.snapshot().await;
    let run = world.apply(&file, &["--dry-run"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let out = &run.stdout;
    for line in [
        "+ client report-bot (agent, client_secret_post, active)",
        "~ client assistant: owners, description, secret_hash",
        "~ policies",
        &format!("    ~ assistant → {CAL}: calendar.read calendar.write (was assistant → {CAL}: calendar.read)"),
        &format!("    + report-bot → {CAL}: calendar.read"),
        "+ consent cns_",
        "2 to add, 2 to change, 0 to remove",
        "dry run: nothing was changed",
    ] {
        assert!(out.contains(line), "{line:?} missing from\n{out}");
    }
    assert!(
        !out.contains("legacy-bot"),
        "no prune, nothing said of it:\n{out}"
    );
    assert_eq!(
        world.snapshot().await,
        before,
        "a dry run changed something"
    );
    assert!(
        world
            .authenticates("assistant", "assistant-secret", true)
            .await
    );
}

#[tokio::test]
async fn apply_then_again_is_a_no_op_and_prune_removes_what_the_file_does_not_name() {
    let world = world().await;
    let file = write(world.dir.path(), "wanted.toml", &wanted(world.dir.path()));

    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("applied"), "{}", run.stdout);

    // The registrations, by the file's secret hashes: the old secret stops, the new one works.
    let report = world.agent("report-bot").await;
    assert_eq!(report["state"], "active");
    assert_eq!(report["auth_method"], "client_secret_post");
    assert_eq!(report["owners"], serde_json::json!(["data@example.com"]));
    assert!(
        world
            .authenticates("report-bot", "report-secret", false)
            .await
    );
    let assistant = world.agent("assistant").await;
    assert_eq!(assistant["description"], "Assistant, v2");
    assert_eq!(
        assistant["owners"],
        serde_json::json!(["team@example.com", "sre@example.com"])
    );
    assert!(
        !world
            .authenticates("assistant", "assistant-secret", true)
            .await
    );
    assert!(
        world
            .authenticates("assistant", "assistant-rotated", true)
            .await
    );
    // The policy: the file's rows and, without prune, the row the file does not name.
    let rows = world.admin("/admin/policies").await["rows"].clone();
    let row = |actor: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["actor"] == actor)
            .map(|r| r["scopes"].clone())
    };
    assert_eq!(
        row("assistant"),
        Some(serde_json::json!(["calendar.read", "calendar.write"]))
    );
    assert_eq!(
        row("report-bot"),
        Some(serde_json::json!(["calendar.read"]))
    );
    assert_eq!(
        row("legacy-bot"),
        Some(serde_json::json!(["calendar.read"]))
    );
    // The grant, under its content id: the id `mandate serve` would seed it with.
    let consents = world.admin("/admin/consents").await["consents"].clone();
    assert_eq!(consents.as_array().unwrap().len(), 1, "{consents}");
    let id = mandate_core::content_id(&"corp|alice", &"report-bot", &CAL, &"calendar.read");
    assert_eq!(consents[0]["id"], id.as_str());
    assert_eq!(world.agent("legacy-bot").await["state"], "active");

    // Again: nothing to do, nothing done, nothing audited.
    let before = world.snapshot().await;
    let audit = world.admin("/admin/audit").await["events"].clone();
    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(run.stdout, "no changes\n");
    assert_eq!(world.snapshot().await, before);
    assert_eq!(world.admin("/admin/audit").await["events"], audit);

    // An admin's own grant, not in the file.
    let added = world
        .http
        .post(world.server.admin_url("/admin/consents"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({
            "subject": "corp|bob", "actor": "assistant", "audience": CAL,
            "scopes": ["calendar.read"], "expires_at": "2099-01-01T00:00:00Z"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);

    // Prune: the legacy bot is retired, its row dropped, bob's grant withdrawn.
    let run = world.apply(&file, &["--prune", "--dry-run"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    for line in [
        "- client legacy-bot (retired: every live token it appears in dies)",
        &format!("    - legacy-bot → {CAL}: calendar.read"),
        "- consent cns_",
        "corp|bob lets assistant use",
        "0 to add, 1 to change, 2 to remove",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing from\n{}",
            run.stdout
        );
    }
    assert_eq!(world.agent("legacy-bot").await["state"], "active");
    let run = world.apply(&file, &["--prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(world.agent("legacy-bot").await["state"], "retired");
    assert!(
        !world
            .authenticates("legacy-bot", "legacy-secret", true)
            .await
    );
    let rows = world.admin("/admin/policies").await["rows"].clone();
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let consents = world.admin("/admin/consents").await["consents"].clone();
    assert_eq!(consents.as_array().unwrap().len(), 1, "{consents}");
    let run = world.apply(&file, &["--prune"]).await;
    assert_eq!(run.stdout, "no changes\n", "{run:#?}");

    // A grant the file names but an admin withdrew is not created again.
    let withdrawn = world
        .http
        .delete(world.server.admin_url(&format!("/admin/consents/{id}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(withdrawn.status(), 200);
    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout
            .contains(&format!("· consent {id} (corp|alice lets report-bot use")),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("withdrawn by an admin; not created again"));
    assert!(run.stdout.contains("no changes"), "{}", run.stdout);
    let consents = world.admin("/admin/consents").await["consents"].clone();
    assert_eq!(consents.as_array().unwrap().len(), 0, "{consents}");
}

#[tokio::test]
async fn a_conflict_changes_nothing_and_a_suspension_is_not_undone() {
    let world = world().await;
    // The file asks for a method the assistant cannot change to, among changes that could be
    // made.
    let text = wanted_with(world.dir.path(), "client_secret_post");
    let file = write(world.dir.path(), "conflict.toml", &text);
    let before = world.snapshot().await;
    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stdout.contains(
            "! client assistant: auth_method (stored client_secret_basic, file client_secret_post) differ; they never change"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("nothing was changed"), "{}", run.stdout);
    assert!(run.stderr.contains("conflict"), "{}", run.stderr);
    assert_eq!(
        world.snapshot().await,
        before,
        "a conflicting apply changed something"
    );

    // An incident suspension survives a pipeline applying the file again.
    let suspended = world
        .http
        .post(world.server.admin_url("/admin/agents/legacy-bot/suspend"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"reason": "incident"}))
        .send()
        .await
        .unwrap();
    assert_eq!(suspended.status(), 200);
    let file = write(world.dir.path(), "seed.toml", &seed(world.dir.path()));
    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stdout.contains(
            "· client legacy-bot: stored suspended, file active; apply does not change lifecycle states"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(world.agent("legacy-bot").await["state"], "suspended");

    // A file mandate serve would refuse is refused here too, before the server is asked.
    let file = write(
        world.dir.path(),
        "bad.toml",
        "[tokens]\nmax_chain_depht = 3\n",
    );
    let run = world.apply(&file, &[]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("max_chain_depht"), "{}", run.stderr);
}
