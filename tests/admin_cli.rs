//! The admin CLI (`mandate clients|chains|revoke|consents|policies|audit`): the real binary
//! against a real server on loopback, checking what it prints and its exit codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::process::Output;

use mandate_server::config::{AdminCredentialSettings, AdminRole};
use mandate_testkit::{
    claims_of, delegation_issue, delegation_settings, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS, ADMIN_READER, CAL, CORP,
};
use serde_json::Value;

/// A `manage` credential added to the delegation world.
const ADMIN_MANAGE: &str = "manage-secret-0123456789abcdefghijklm";

struct World {
    server: TestServer,
    corp: TestKey,
}

async fn world() -> World {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.admin.credentials.push(AdminCredentialSettings {
        name: "platform-admin".into(),
        role: AdminRole::Manage,
        secret_hash: mandate_model::SecretHash::of(ADMIN_MANAGE),
    });
    let server = TestServer::spawn(settings).await.unwrap();
    World { server, corp }
}

/// A chain for alice: the assistant's own calendar token (a root), and its hand-off to the booking
/// tool (another root) which the booking tool exchanged for a calendar token.
struct Chain {
    id: String,
    assistant: String,
    handoff: String,
    booking: String,
}

impl World {
    async fn chain(&self) -> Chain {
        let id_token = self
            .corp
            .sign(None, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let assistant = delegation_issue(&self.server, &id_token, "id_token", CAL, "assistant")
            .await
            .unwrap();
        let handoff = delegation_issue(
            &self.server,
            &id_token,
            "id_token",
            "agent:booking-tool",
            "assistant",
        )
        .await
        .unwrap();
        let booking = delegation_issue(&self.server, &handoff, "access_token", CAL, "booking-tool")
            .await
            .unwrap();
        let jti = |token: &str| claims_of(token)["jti"].as_str().unwrap().to_owned();
        Chain {
            id: claims_of(&handoff)["chain_id"].as_str().unwrap().to_owned(),
            assistant: jti(&assistant),
            handoff: jti(&handoff),
            booking: jti(&booking),
        }
    }

    /// Runs `mandate <args> --url <admin>` with `secret` (when given) in MANDATE_ADMIN_SECRET.
    async fn mandate(&self, secret: Option<&str>, args: &[&str]) -> Run {
        run(secret, args, Some(&self.server.admin_url(""))).await
    }
}

async fn run(secret: Option<&str>, args: &[&str], url: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mandate"));
    command
        .env_remove("MANDATE_ADMIN_SECRET")
        .env_remove("MANDATE_ADMIN_URL")
        .env_remove("MANDATE_LOG")
        .args(args);
    if let Some(url) = url {
        command.args(["--url", url]);
    }
    if let Some(secret) = secret {
        command.env("MANDATE_ADMIN_SECRET", secret);
    }
    let output = command.output().await.unwrap();
    Run::from(output)
}

/// The value of a `name  value` line of a record.
#[track_caller]
fn field<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|line| {
            line.strip_prefix(name)
                .filter(|rest| rest.starts_with("  "))
                .map(str::trim)
        })
        .unwrap_or_else(|| panic!("no {name} line in:\n{out}"))
}

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    fn success(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.success())
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}): {self:#?}"))
    }

    #[track_caller]
    fn never_shows(&self, secret: &str) {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "the credential was printed: {self:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_list_and_show_print_aligned_tables_and_json() {
    let world = world().await;
    let run = world
        .mandate(Some(ADMIN_READER), &["clients", "list"])
        .await;
    let out = run.success();
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CLIENT_ID     KIND"), "{out}");
    let assistant = lines.iter().find(|l| l.starts_with("assistant ")).unwrap();
    let calendar = lines
        .iter()
        .find(|l| l.starts_with("calendar-api "))
        .unwrap();
    // Aligned: every row's KIND column starts where the header's does.
    let kind_column = lines[0].find("KIND").unwrap();
    assert_eq!(&assistant[kind_column..kind_column + 6], "agent ");
    assert_eq!(&calendar[kind_column..kind_column + 15], "resource_server");
    assert!(assistant.contains("active"), "{out}");
    run.never_shows(ADMIN_READER);

    let show = world
        .mandate(Some(ADMIN_READER), &["clients", "show", "booking-tool"])
        .await;
    let out = show.success();
    assert_eq!(field(out, "client_id"), "booking-tool", "{out}");
    assert_eq!(field(out, "owners"), "owner@example.com", "{out}");
    assert_eq!(
        field(out, "created_at").split(" by ").nth(1),
        Some("config"),
        "{out}"
    );

    let json = world
        .mandate(Some(ADMIN_READER), &["clients", "list", "--json"])
        .await
        .json();
    let ids: Vec<&str> = json["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"assistant") && ids.contains(&"mail-api"),
        "{json}"
    );

    let missing = world
        .mandate(Some(ADMIN_READER), &["clients", "show", "nobody"])
        .await;
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(missing.stderr.contains("404") && missing.stderr.contains("not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_credential_it_exits_3_and_sends_nothing() {
    let world = world().await;
    let run = world.mandate(None, &["chains", "show", "chn_x"]).await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("MANDATE_ADMIN_SECRET"), "{run:#?}");
    assert!(run.stdout.is_empty());
    // Nothing reached the server: no refused authentication was audited either way, and an
    // empty secret counts as none.
    let empty = world.mandate(Some("  "), &["audit"]).await;
    assert_eq!(empty.code, Some(3), "{empty:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_credential_exits_1_with_the_401_message_and_is_never_printed() {
    let world = world().await;
    let wrong = "wrong-secret-that-must-never-be-echoed";
    let run = world.mandate(Some(wrong), &["clients", "list"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("401"), "{run:#?}");
    assert!(run.stderr.contains("unauthenticated"), "{run:#?}");
    assert!(
        run.stderr.contains("an admin credential is required"),
        "{run:#?}"
    );
    run.never_shows(wrong);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn there_is_no_flag_for_the_secret() {
    let world = world().await;
    for flag in ["--secret", "--credential", "--token"] {
        let run = world
            .mandate(Some(ADMIN_OPS), &["chains", "list", flag, ADMIN_OPS])
            .await;
        assert_eq!(run.code, Some(2), "{flag}: {run:#?}");
        assert!(run.stderr.contains("unexpected argument"), "{run:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_cannot_revoke_and_nothing_changes() {
    let world = world().await;
    let chain = world.chain().await;
    for args in [
        vec!["chains", "revoke", chain.id.as_str()],
        vec!["revoke", "hop", chain.handoff.as_str()],
        vec!["revoke", "subject", "corp|alice"],
    ] {
        let run = world.mandate(Some(ADMIN_READER), &args).await;
        assert_eq!(run.code, Some(1), "{args:?}: {run:#?}");
        assert!(run.stderr.contains("403"), "{run:#?}");
        assert!(run.stderr.contains("forbidden"), "{run:#?}");
        assert!(run.stderr.contains("'revoke' role"), "{run:#?}");
    }
    let tree = world
        .mandate(Some(ADMIN_READER), &["chains", "show", &chain.id])
        .await;
    let out = tree.success();
    assert_eq!(out.matches("✓ live").count(), 3, "{out}");
    assert!(!out.contains('✗'), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_chain_exits_1_with_not_found() {
    let world = world().await;
    let run = world
        .mandate(Some(ADMIN_READER), &["chains", "show", "chn_doesnotexist"])
        .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("404"), "{run:#?}");
    assert!(run.stderr.contains("not_found"), "{run:#?}");
    assert!(run.stdout.is_empty());
    // Dot segments would be resolved away by the URL rules (`chains show ..` reading the chain
    // list, `revoke hop ..` posting to /admin/revoke): refused before anything is sent.
    for args in [["chains", "show", ".."], ["revoke", "hop", "."]] {
        let run = world.mandate(Some(ADMIN_OPS), &args).await;
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(run.stderr.contains("is not an id"), "{run:#?}");
        assert!(run.stdout.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_show_draws_the_tree_and_revoking_the_chain_marks_every_hop() {
    let world = world().await;
    let chain = world.chain().await;
    let run = world
        .mandate(Some(ADMIN_READER), &["chains", "show", &chain.id])
        .await;
    let out = run.success();
    assert!(
        out.starts_with(&format!(
            "chain {} · subject corp|alice · 3 hop(s)\n",
            chain.id
        )),
        "{out}"
    );
    // The booking tool's hop is drawn under the hand-off it came from, one level deeper.
    let handoff_line = out
        .lines()
        .find(|l| l.contains(&chain.handoff))
        .unwrap()
        .to_owned();
    let booking_line = out
        .lines()
        .find(|l| l.contains(&chain.booking))
        .unwrap()
        .to_owned();
    let column = |line: &str, needle: &str| line.find(needle).unwrap();
    assert!(
        column(&booking_line, "hop") > column(&handoff_line, "hop"),
        "{out}"
    );
    assert!(booking_line.contains("└─ "), "{out}");
    assert!(
        out.contains("client booking-tool · actors assistant → booking-tool"),
        "{out}"
    );
    assert!(
        out.contains("audience agent:booking-tool · passes https://calendar.example.com:"),
        "{out}"
    );
    assert!(
        out.contains(&format!("audience {CAL} · scopes calendar.read")),
        "{out}"
    );
    assert_eq!(out.matches("✓ live").count(), 3, "{out}");

    let revoke = world
        .mandate(
            Some(ADMIN_OPS),
            &["chains", "revoke", &chain.id, "--reason", "laptop stolen"],
        )
        .await;
    let out = revoke.success();
    assert!(out.starts_with("REVOKED  ID"), "{out}");
    assert!(out.contains(&format!("chain    {}", chain.id)), "{out}");
    assert!(out.contains("hops revoked: 3"), "{out}");
    revoke.never_shows(ADMIN_OPS);

    let tree = world
        .mandate(Some(ADMIN_READER), &["chains", "show", &chain.id])
        .await;
    let out = tree.success();
    let mark = format!("✗ revoked (chain {})", chain.id);
    assert_eq!(out.matches(&mark).count(), 3, "{out}");
    assert!(!out.contains("✓ live"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_hop_kills_its_subtree_only_and_revoke_subject_answers_what_it_wrote() {
    let world = world().await;
    let chain = world.chain().await;
    let run = world
        .mandate(Some(ADMIN_OPS), &["revoke", "hop", &chain.handoff])
        .await;
    let out = run.success();
    assert!(
        out.contains(&format!("hop      {}", chain.handoff)),
        "{out}"
    );
    assert!(out.contains("hops revoked: 2"), "{out}");
    assert!(out.contains(&chain.booking), "{out}");

    let tree = world
        .mandate(Some(ADMIN_READER), &["chains", "show", &chain.id])
        .await;
    let out = tree.success();
    let line_of = |jti: &str| out.lines().find(|l| l.contains(jti)).unwrap().to_owned();
    let mark = format!("✗ revoked (hop {})", chain.handoff);
    assert!(line_of(&chain.handoff).contains(&mark), "{out}");
    assert!(line_of(&chain.booking).contains(&mark), "{out}");
    assert!(line_of(&chain.assistant).contains("✓ live"), "{out}");

    let subject = world
        .mandate(
            Some(ADMIN_OPS),
            &["revoke", "subject", "corp|alice", "--json"],
        )
        .await
        .json();
    let entries = subject["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "subject" && e["id"] == "corp|alice"),
        "{subject}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_the_api_answer_as_is() {
    let world = world().await;
    let chain = world.chain().await;
    let cli = world
        .mandate(Some(ADMIN_READER), &["chains", "show", &chain.id, "--json"])
        .await
        .json();
    let api: Value = world
        .server
        .admin_get(&format!("/admin/chains/{}", chain.id), Some(ADMIN_READER))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cli, api);
    assert_eq!(cli["chain_id"], chain.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_each_action_with_the_credential_name() {
    let world = world().await;
    let chain = world.chain().await;
    world
        .mandate(Some(ADMIN_OPS), &["revoke", "hop", &chain.handoff])
        .await
        .success();
    let run = world.mandate(Some(ADMIN_READER), &["audit"]).await;
    let out = run.success();
    assert!(out.starts_with("AT"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("revoke.hop"))
        .unwrap_or_else(|| panic!("no revoke.hop event: {out}"));
    assert!(line.contains("ops-oncall"), "{out}");
    assert!(line.contains(&chain.handoff), "{out}");
    let json = world
        .mandate(Some(ADMIN_READER), &["audit", "--json", "--limit", "1"])
        .await
        .json();
    assert_eq!(json["events"].as_array().unwrap().len(), 1, "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_file_must_be_private() {
    let world = world().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.secret");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(format!("{ADMIN_READER}\n# the first line is the secret\n").as_bytes())
        .unwrap();
    let path_text = path.to_str().unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The file wins over the environment.
    let run = world
        .mandate(
            Some("wrong-env-secret"),
            &["clients", "list", "--credential-file", path_text],
        )
        .await;
    assert!(run.success().contains("assistant"), "{run:#?}");

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = world
        .mandate(None, &["clients", "list", "--credential-file", path_text])
        .await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains("chmod 600"), "{run:#?}");
    run.never_shows(ADMIN_READER);

    let run = world
        .mandate(
            None,
            &[
                "clients",
                "list",
                "--credential-file",
                "/nonexistent/secret",
            ],
        )
        .await;
    assert_eq!(run.code, Some(3), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_3() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let run = run(Some(ADMIN_OPS), &["chains", "list"], Some(&url)).await;
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(
        run.stderr.contains("cannot reach the admin API"),
        "{run:#?}"
    );
    run.never_shows(ADMIN_OPS);
    // The default URL comes from MANDATE_ADMIN_URL when set.
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_mandate"));
    let output = command
        .args(["audit"])
        .env("MANDATE_ADMIN_SECRET", ADMIN_OPS)
        .env("MANDATE_ADMIN_URL", &url)
        .output()
        .await
        .unwrap();
    let run = Run::from(output);
    assert_eq!(run.code, Some(3), "{run:#?}");
    assert!(run.stderr.contains(&url), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// Commands over the endpoints of docs/ADMIN-API.md that manage agents, consents and policies.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_add_prints_the_secret_once_and_walks_the_lifecycle() {
    let world = world().await;
    let run = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "clients",
                "add",
                "travel-agent",
                "--kind",
                "agent",
                "--owner",
                "travel-team@example.com",
                "--owner",
                "alice@example.com",
                "--description",
                "Books trips",
                "--auth-method",
                "client_secret_basic",
                "--upstream",
                "https://corp.example.com=0oa1travel",
            ],
        )
        .await;
    let out = run.success().to_owned();
    assert!(out.starts_with("registered travel-agent\n"), "{out}");
    assert_eq!(field(&out, "state"), "staged", "{out}");
    assert_eq!(
        field(&out, "upstream_ids"),
        "https://corp.example.com=0oa1travel",
        "{out}"
    );
    assert_eq!(
        field(&out, "owners"),
        "travel-team@example.com, alice@example.com",
        "{out}"
    );
    assert!(
        field(&out, "created_at").ends_with(" by platform-admin"),
        "{out}"
    );
    let secret_line = out
        .lines()
        .find(|l| l.starts_with("client_secret"))
        .unwrap_or_else(|| panic!("no secret printed: {out}"));
    let secret = secret_line.split_whitespace().nth(1).unwrap();
    assert!(secret.len() >= 32, "{secret_line}");
    assert!(run.stderr.contains("shown only this once"), "{run:#?}");
    run.never_shows(ADMIN_MANAGE);
    // Never shown again.
    let show = world
        .mandate(Some(ADMIN_READER), &["clients", "show", "travel-agent"])
        .await;
    assert!(!show.success().contains(secret), "{show:#?}");

    // The same id again: refused, nothing changes.
    let again = world
        .mandate(
            Some(ADMIN_MANAGE),
            &["clients", "add", "travel-agent", "--owner", "x@example.com"],
        )
        .await;
    assert_eq!(again.code, Some(1), "{again:#?}");
    assert!(
        again.stderr.contains("409") && again.stderr.contains("conflict"),
        "{again:#?}"
    );

    let run = world
        .mandate(Some(ADMIN_MANAGE), &["clients", "activate", "travel-agent"])
        .await;
    assert!(
        run.success().starts_with("travel-agent is now active\n"),
        "{run:#?}"
    );
    // The printed secret is the one that authenticates: with it the exchange gets past client
    // authentication (and is refused for want of a policy row), with another it does not.
    let id_token = world
        .corp
        .sign(None, &id_token_claims(CORP, "alice", "travel-agent"))
        .unwrap();
    for (presented, expected) in [(secret, 400), ("not-the-secret", 401)] {
        let form = mandate_testkit::exchange_form(&id_token, "id_token", CAL, &[]);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let auth = mandate_testkit::ClientAuth::Basic("travel-agent".into(), presented.into());
        let response = world.server.token(&pairs, &auth).await.unwrap();
        assert_eq!(response.status().as_u16(), expected, "{presented}");
    }

    for (command, state) in [
        ("suspend", "suspended"),
        ("activate", "active"),
        ("retire", "retired"),
    ] {
        let run = world
            .mandate(Some(ADMIN_MANAGE), &["clients", command, "travel-agent"])
            .await;
        assert!(
            run.success()
                .starts_with(&format!("travel-agent is now {state}\n")),
            "{command}: {run:#?}"
        );
    }
    let refused = world
        .mandate(Some(ADMIN_MANAGE), &["clients", "activate", "travel-agent"])
        .await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("invalid_transition"),
        "{refused:#?}"
    );
    let listed = world
        .mandate(
            Some(ADMIN_READER),
            &["clients", "list", "--state", "retired"],
        )
        .await;
    let out = listed.success();
    assert!(out.contains("travel-agent"), "{out}");
    assert!(!out.contains("assistant"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_an_agent_answers_what_was_revoked() {
    let world = world().await;
    world.chain().await;
    let run = world
        .mandate(Some(ADMIN_OPS), &["clients", "suspend", "booking-tool"])
        .await;
    let out = run.success();
    assert!(out.starts_with("booking-tool is now suspended\n"), "{out}");
    assert!(out.contains("agent    booking-tool"), "{out}");
    // A reader may not.
    let run = world
        .mandate(Some(ADMIN_READER), &["clients", "activate", "booking-tool"])
        .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("403"), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_list_filters_and_pages() {
    let world = world().await;
    let chain = world.chain().await;
    let run = world
        .mandate(
            Some(ADMIN_READER),
            &["chains", "list", "--subject", "corp|alice"],
        )
        .await;
    let out = run.success();
    assert!(out.starts_with("CHAIN_ID"), "{out}");
    let line = out.lines().find(|l| l.contains(&chain.id)).unwrap();
    assert!(
        line.contains("✓ live") && line.contains("corp|alice"),
        "{out}"
    );
    let none = world
        .mandate(
            Some(ADMIN_READER),
            &["chains", "list", "--subject", "corp|bob"],
        )
        .await;
    assert_eq!(none.success(), "no chains\n");
    let bad = world
        .mandate(
            Some(ADMIN_READER),
            &["chains", "list", "--status", "sleeping"],
        )
        .await;
    assert_eq!(bad.code, Some(2), "{bad:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_add_list_and_withdraw() {
    let world = world().await;
    let expires = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let added = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "consents",
                "add",
                "--subject",
                "corp|alice",
                "--actor",
                "assistant",
                "--audience",
                CAL,
                "--scope",
                "calendar.read",
                "--expires-at",
                &expires,
                "--json",
            ],
        )
        .await
        .json();
    let id = added["consent"]["id"].as_str().unwrap().to_owned();
    let listed = world
        .mandate(
            Some(ADMIN_READER),
            &["consents", "list", "--subject", "corp|alice"],
        )
        .await;
    let out = listed.success();
    assert!(out.starts_with("ID"), "{out}");
    let line = out.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        line.contains("assistant") && line.contains("calendar.read"),
        "{out}"
    );

    let withdrawn = world
        .mandate(Some(ADMIN_MANAGE), &["consents", "withdraw", &id])
        .await;
    let out = withdrawn.success();
    assert!(out.starts_with(&format!("withdrew {id}\n")), "{out}");
    assert!(out.contains(&format!("consent  {id}")), "{out}");
    let listed = world
        .mandate(Some(ADMIN_READER), &["consents", "list"])
        .await;
    assert!(!listed.success().contains(&id), "{listed:#?}");
    // A reader may not add.
    let refused = world
        .mandate(
            Some(ADMIN_READER),
            &[
                "consents",
                "add",
                "--subject",
                "corp|alice",
                "--actor",
                "assistant",
                "--audience",
                CAL,
                "--scope",
                "calendar.read",
                "--expires-at",
                &expires,
            ],
        )
        .await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("403"), "{refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_get_put_with_the_version_read_and_explain() {
    let world = world().await;
    let got = world
        .mandate(Some(ADMIN_READER), &["policies", "get"])
        .await;
    let out = got.success();
    assert!(out.starts_with("version "), "{out}");
    assert!(out.contains("ACTOR"), "{out}");
    assert!(out.contains("booking-tool  agent:helper"), "{out}");

    // The edit cycle: get --json, change, put the file (its version guards the write).
    let mut document = world
        .mandate(Some(ADMIN_READER), &["policies", "get", "--json"])
        .await
        .json();
    let version = document["version"].as_u64().unwrap();
    document["rows"]
        .as_array_mut()
        .unwrap()
        .retain(|row| row["actor"] != "helper");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policies.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let put = world
        .mandate(Some(ADMIN_MANAGE), &["policies", "put", file])
        .await;
    let out = put.success();
    assert!(
        out.starts_with(&format!("version {}\n", version + 1)),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.starts_with("helper ")), "{out}");
    assert!(out.lines().any(|l| l.starts_with("booking-tool ")), "{out}");

    // The same file again: its version is stale now, and nothing changes.
    let stale = world
        .mandate(Some(ADMIN_MANAGE), &["policies", "put", file])
        .await;
    assert_eq!(stale.code, Some(1), "{stale:#?}");
    assert!(stale.stderr.contains("412"), "{stale:#?}");
    assert!(stale.stderr.contains("precondition_failed"), "{stale:#?}");
    let now = world
        .mandate(Some(ADMIN_READER), &["policies", "get", "--json"])
        .await
        .json();
    assert_eq!(now["version"].as_u64(), Some(version + 1));

    // A file that is not JSON is a usage error; nothing is sent.
    std::fs::write(dir.path().join("bad.json"), "actor = 'x'").unwrap();
    let bad = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "policies",
                "put",
                dir.path().join("bad.json").to_str().unwrap(),
            ],
        )
        .await;
    assert_eq!(bad.code, Some(2), "{bad:#?}");

    let allowed = world
        .mandate(
            Some(ADMIN_READER),
            &[
                "policies",
                "explain",
                "--agent",
                "assistant",
                "--subject-token-type",
                "id_token",
                "--audience",
                CAL,
                "--scope",
                "calendar.read",
            ],
        )
        .await;
    let out = allowed.success();
    assert_eq!(field(out, "decision"), "✓ allowed", "{out}");
    assert!(
        field(out, "row").starts_with("assistant → https://calendar.example.com ["),
        "{out}"
    );
    assert_eq!(field(out, "scopes"), "calendar.read", "{out}");
    let refused = world
        .mandate(
            Some(ADMIN_READER),
            &[
                "policies",
                "explain",
                "--agent",
                "assistant",
                "--subject-token-type",
                "id_token",
                "--audience",
                "https://unknown.example.com",
            ],
        )
        .await;
    let out = refused.success();
    assert_eq!(field(out, "decision"), "✗ refused", "{out}");
    assert_eq!(field(out, "error"), "invalid_target", "{out}");
}

#[tokio::test]
async fn ssf_streams_shows_each_stream_and_its_queue() {
    let w = world().await;
    let run = w.mandate(Some(ADMIN_READER), &["ssf", "streams"]).await;
    assert_eq!(run.success(), "no streams\n");
    // The calendar's resource server creates a poll stream; a hop of its audience is revoked.
    let created: Value = w
        .server
        .http
        .post(w.server.url("/ssf/streams"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .json(&serde_json::json!({"delivery": {"method": "urn:ietf:rfc:8936"},
            "events_requested": ["https://schemas.openid.net/secevent/caep/event-type/session-revoked"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stream = created["stream_id"].as_str().unwrap().to_owned();
    let chain = w.chain().await;
    w.mandate(Some(ADMIN_OPS), &["revoke", "hop", &chain.assistant])
        .await
        .success();
    let run = w.mandate(Some(ADMIN_READER), &["ssf", "streams"]).await;
    let out = run.success();
    let row = out
        .lines()
        .find(|line| line.starts_with(&stream))
        .unwrap_or_else(|| panic!("no row for {stream}:\n{out}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[1..7],
        ["calendar-api", CAL, "poll", "enabled", "1", "0"],
        "{out}"
    );
    let json = w
        .mandate(Some(ADMIN_READER), &["ssf", "streams", "--json"])
        .await
        .json();
    assert_eq!(json["streams"][0]["pending"], 1);
    assert!(json["streams"][0].get("authorization_header").is_none());
}

#[tokio::test]
async fn clients_update_patches_and_rotate_secret_prints_the_new_one_once() {
    let world = world().await;
    let run = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "clients",
                "update",
                "assistant",
                "--owner",
                "new-team@example.com",
                "--description",
                "Answers mail and books meetings",
                "--expires-at",
                "2099-01-01T00:00:00Z",
                "--dpop",
                "required",
            ],
        )
        .await;
    let out = run.success().to_owned();
    assert_eq!(field(&out, "owners"), "new-team@example.com", "{out}");
    assert_eq!(
        field(&out, "description"),
        "Answers mail and books meetings",
        "{out}"
    );
    let shown = world
        .mandate(
            Some(ADMIN_READER),
            &["clients", "show", "assistant", "--json"],
        )
        .await;
    let agent: Value = serde_json::from_str(shown.success()).unwrap();
    assert_eq!(agent["dpop"], "required", "{agent}");
    assert_eq!(agent["expires_at"], "2099-01-01T00:00:00Z", "{agent}");
    // --no-expiry clears it; nothing to change is a usage error (exit 2), sent nowhere.
    let cleared = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "clients",
                "update",
                "assistant",
                "--no-expiry",
                "--dpop",
                "allowed",
                "--json",
            ],
        )
        .await;
    let agent: Value = serde_json::from_str(cleared.success()).unwrap();
    assert!(agent["expires_at"].is_null(), "{agent}");
    let nothing = world
        .mandate(Some(ADMIN_MANAGE), &["clients", "update", "assistant"])
        .await;
    assert_eq!(nothing.code, Some(2), "{nothing:#?}");
    // A reader cannot change it.
    let refused = world
        .mandate(
            Some(ADMIN_READER),
            &["clients", "update", "assistant", "--description", "x"],
        )
        .await;
    assert_eq!(refused.code, Some(1), "{refused:#?}");
    assert!(refused.stderr.contains("forbidden"), "{refused:#?}");

    // Rotation: the new secret authenticates, and with no overlap the old one stops at once.
    let run = world
        .mandate(
            Some(ADMIN_MANAGE),
            &[
                "clients",
                "rotate-secret",
                "booking-tool",
                "--overlap-secs",
                "0",
            ],
        )
        .await;
    let out = run.success().to_owned();
    assert!(run.stderr.contains("shown only this once"), "{run:#?}");
    let secret = field(&out, "client_secret").to_owned();
    assert!(secret.len() >= 43, "{out}");
    for (presented, expected) in [(secret.as_str(), 400), ("booking-secret", 401)] {
        let response = world
            .server
            .token(
                &[("grant_type", "client_credentials")],
                &mandate_testkit::ClientAuth::Basic("booking-tool".into(), presented.into()),
            )
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), expected, "{presented}");
    }
}

#[tokio::test]
async fn secrets_generate_prints_a_url_safe_secret_and_its_hash() {
    let first = run(None, &["secrets", "generate", "--json"], None).await;
    let second = run(None, &["secrets", "generate", "--json"], None).await;
    let first: Value = serde_json::from_str(first.success()).unwrap();
    let second: Value = serde_json::from_str(second.success()).unwrap();
    let secret = first["client_secret"].as_str().unwrap();
    assert_eq!(secret.len(), 43, "256 bits in base64url: {secret}");
    assert!(secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    assert_ne!(first["client_secret"], second["client_secret"]);
    // The hash is the one the configuration's `secret_hash` wants for this secret.
    assert_eq!(
        first["secret_hash"],
        mandate_model::SecretHash::of(secret).to_string()
    );
    let text = run(None, &["secrets", "generate"], None).await;
    let out = text.success();
    assert!(field(out, "secret_hash").starts_with("sha256:"), "{out}");
    assert_eq!(field(out, "client_secret").len(), 43, "{out}");
}
