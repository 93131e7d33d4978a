//! The `mandate` binary: serve with a file, configuration errors, graceful shutdown, keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn mandate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_mandate"));
    command.env_remove("MANDATE_LOG");
    command
}

fn config_file(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("mandate.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

/// Starts `mandate serve --config FILE` and returns the child and its public address, read from
/// the line it prints once listening.
fn serve(config: &Path, env: &[(&str, &str)]) -> (Child, String) {
    serve_logging_to(config, env, Stdio::null())
}

/// As [`serve`], with the server's log (its stderr) going to `log`.
fn serve_logging_to(config: &Path, env: &[(&str, &str)], log: Stdio) -> (Child, String) {
    let mut child = mandate()
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let address = serve::listening_address(&mut child);
    (child, address)
}

/// Sends SIGTERM and waits for the server to exit; its exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_with_timeout(child, Duration::from_secs(20))
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            child.kill().unwrap();
            panic!("the server did not stop within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LOOPBACK: &str = "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn serve_with_a_file_answers_discovery_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), LOOPBACK);
    let (mut child, address) = serve(
        &config,
        &[("MANDATE__ISSUER", "http://127.0.0.1:9999/tenant")],
    );
    // The environment override reached the issuer, and the metadata path follows RFC 8414 §3.1.
    let document: serde_json::Value = reqwest::get(format!(
        "http://{address}/.well-known/oauth-authorization-server/tenant"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(document["issuer"], "http://127.0.0.1:9999/tenant");
    assert_eq!(
        document["token_endpoint"],
        "http://127.0.0.1:9999/tenant/token"
    );
    let jwks: serde_json::Value = reqwest::get(format!("http://{address}/tenant/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let exit = terminate(&mut child);
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

/// The log goes through a writer thread: every line queued before the process exits is written,
/// and a log that is not a terminal holds no colour escape codes.
#[tokio::test]
async fn the_log_is_complete_at_exit_and_plain_when_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), LOOPBACK);
    let log_path = dir.path().join("mandate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut child, address) = serve_logging_to(&config, &[], log.into());
    for _ in 0..20 {
        let answer = reqwest::get(format!("http://{address}/jwks"))
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
    assert!(terminate(&mut child).success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    let access_lines = log
        .lines()
        .filter(|line| line.contains("request finished") && line.contains("/jwks"))
        .count();
    assert_eq!(access_lines, 20, "{log}");
    assert!(
        log.lines().last().unwrap_or("").contains("stopped"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "escape codes in a log file: {log}");
}

/// `[log] format = "json"`: every line is one JSON object; the access line carries the request's
/// span (id, method, path, status); a secret sent by a client appears nowhere.
#[tokio::test]
async fn the_json_log_is_one_object_per_line_with_the_request_span() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!("{LOOPBACK}\n[log]\nformat = \"json\"\n"),
    );
    let log_path = dir.path().join("mandate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut child, address) = serve_logging_to(&config, &[], log.into());
    let answer = reqwest::Client::new()
        .post(format!("http://{address}/token"))
        .basic_auth("nobody", Some("a-secret-that-must-not-be-logged"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(terminate(&mut child).success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(!log.contains("a-secret-that-must-not-be-logged"), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(lines
        .iter()
        .all(|l| l["timestamp"].is_string() && l["level"].is_string()));
    let access = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request finished")
        .unwrap_or_else(|| panic!("no access line: {log}"));
    assert_eq!(access["span"]["path"], "/token", "{access}");
    assert_eq!(access["span"]["method"], "POST", "{access}");
    assert_eq!(access["fields"]["status"], 401, "{access}");
    assert!(
        access["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{access}"
    );
    assert_eq!(
        lines.last().unwrap()["fields"]["message"],
        "stopped",
        "{log}"
    );
}

/// Review finding 3, against the real binary and its real log: client-supplied text with a
/// newline or an ANSI escape (a Basic client id, a posted client id, an audience) must not start
/// a line of its own or colour the log.
#[tokio::test]
async fn client_supplied_text_cannot_forge_log_lines() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), LOOPBACK);
    let log_path = dir.path().join("mandate.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let (mut child, address) = serve_logging_to(&config, &[], log.into());
    let http = reqwest::Client::new();
    let token = format!("http://{address}/token");
    let forged_id = "x\nFORGED audit: admin action\u{1b}[31m";
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:secret", forged_id.replace('\n', "%0A")));
    let basic_raw = base64::engine::general_purpose::STANDARD.encode(format!("{forged_id}:secret"));
    for header in [basic, basic_raw] {
        let answer = http
            .post(&token)
            .header("authorization", format!("Basic {header}"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    for form in [
        vec![("client_id", forged_id), ("client_secret", "secret")],
        vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("audience", "https://app.example.com/\nFORGED line"),
        ],
    ] {
        let answer = http.post(&token).form(&form).send().await.unwrap();
        assert!(answer.status().is_client_error());
    }
    assert!(terminate(&mut child).success());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("/token"), "the requests were logged: {log}");
    assert!(
        !log.lines().any(|line| line.starts_with("FORGED")),
        "a forged line: {log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "an escape code reached the log: {log}"
    );
}

#[test]
fn invalid_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("[tokens]\nmax_chain_depht = 3\n", "max_chain_depht"),
        ("issuer = \"ftp://x\"\n", "issuer"),
        ("listen = \"0.0.0.0:0\"\n", "signing.key_file"),
        (
            "[signing]\nkey_file = \"/nonexistent.pem\"\n",
            "signing.key_file",
        ),
    ] {
        let config = config_file(dir.path(), text);
        let output = mandate()
            .args(["serve", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    // An unknown environment override is an unknown key too.
    let config = config_file(dir.path(), LOOPBACK);
    let output = mandate()
        .args(["serve", "--config"])
        .arg(&config)
        .env("MANDATE__TOKENS__NO_SUCH_KEY", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no_such_key"));
    // Lists come from the file only: a variable cannot add a manage credential, an issuer with
    // keys of its choosing or a client, in any spelling figment would take.
    for (name, value) in [
        (
            "MANDATE__ADMIN__CREDENTIALS",
            r#"[{name="intruder",role="manage",secret_hash="sha256:00"}]"#,
        ),
        (
            "MANDATE__TRUSTED_ISSUERS",
            r#"[{issuer="https://evil.example"}]"#,
        ),
        ("MANDATE__ADMIN", r#"{credentials=[]}"#),
        ("MANDATE__CLIENTS__0__CLIENT_ID", "intruder"),
        ("MANDATE__ADMIN__CREDENTIALS", "[]"),
        (
            "mandate__admin__credentials",
            r#"[{name="intruder",role="manage",secret_hash="sha256:00"}]"#,
        ),
    ] {
        let output = mandate()
            .args(["serve", "--config"])
            .arg(&config)
            .env(name, value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    // A missing file.
    let output = mandate()
        .args(["serve", "--config", "/nonexistent/mandate.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn development_mode_moves_only_on_loopback_and_takes_no_short_admin_secret() {
    for (args, secret, needle) in [
        (&["--listen", "0.0.0.0:18080"][..], None, "loopback"),
        (&["--admin-listen", "192.0.2.1:18081"][..], None, "loopback"),
        (&["--listen", "127.0.0.1:0"][..], None, "with a port"),
        (&[][..], Some("short"), "at least 16 characters"),
    ] {
        let mut command = mandate();
        command
            .arg("serve")
            .args(args)
            .env_remove("MANDATE_ADMIN_SECRET");
        if let Some(secret) = secret {
            command.env("MANDATE_ADMIN_SECRET", secret);
        }
        let output = command.output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    // The flags are development mode's: a deployment's listeners are in its file.
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), LOOPBACK);
    let output = mandate()
        .args(["serve", "--listen", "127.0.0.1:18080", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be used with"));
}

#[test]
fn keys_generate_writes_a_private_file_once() {
    let dir = tempfile::tempdir().unwrap();
    for alg in ["ES256", "EdDSA"] {
        let path = dir.path().join(format!("{alg}.pem"));
        let output = mandate()
            .args(["keys", "generate", "--alg", alg, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read_to_string(&path).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8 PEM");
        // The printed kid is the thumbprint, not key material.
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!stdout.contains("PRIVATE"));
        // Never overwritten.
        let again = mandate()
            .args(["keys", "generate", "--alg", alg, "--out"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), pem);
    }
}

#[tokio::test]
async fn a_generated_key_signs_what_jwks_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("signing.pem");
    let output = mandate()
        .args(["keys", "generate", "--alg", "EdDSA", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(output.status.success());
    let kid = String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_owned();
    let config = config_file(
        dir.path(),
        &format!(
            "{LOOPBACK}[signing]\nalgorithm = \"EdDSA\"\nkey_file = \"{}\"\n",
            key.display()
        ),
    );
    let (mut child, address) = serve(&config, &[]);
    let jwks: serde_json::Value = reqwest::get(format!("http://{address}/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A token with a dummy signature: `token decode` verifies nothing, so none is needed.
fn unsigned_token(claims: &serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"at+jwt"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

fn decode_output(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = mandate()
        .args(["token", "decode"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn token_decode_shows_the_chain_and_verifies_nothing() {
    let key = mandate_token::SigningKey::generate(mandate_token::SigningAlgorithm::Es256).unwrap();
    let claims = serde_json::json!({
        "iss": "https://mandate.example.com",
        "sub": "corp|alice",
        "aud": "https://calendar.example.com",
        "client_id": "booking-tool",
        "scope": "calendar.read",
        "iat": 1764316800, "nbf": 1764316800, "exp": 1764317100,
        "jti": "hop_01JD",
        "act": { "sub": "booking-tool", "act": { "sub": "assistant" } },
        "chain_id": "chn_01JC",
        "ancestors": ["hop_01JC"],
    });
    let token = key.sign("at+jwt", &claims).unwrap();

    // Human-readable.
    let output = decode_output(&[&token], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.starts_with("NOT VERIFIED"), "{stdout}");
    assert!(stdout.contains(key.kid()), "the header is shown: {stdout}");
    let line = |needle: &str| {
        stdout
            .lines()
            .position(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}: {stdout}"))
    };
    let subject = line("(subject)");
    let first = line("(acted first)");
    let current = line("(current actor)");
    assert!(subject < first && first < current, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[subject].contains("corp|alice"), "{stdout}");
    assert!(lines[first].contains("└─ assistant"), "{stdout}");
    assert!(lines[current].contains("└─ booking-tool"), "{stdout}");
    // Each actor is indented one level more than the one before.
    let indent = |line: &str| line.find('└').unwrap();
    assert!(indent(lines[first]) < indent(lines[current]), "{stdout}");
    assert!(stdout.contains("chn_01JC"), "{stdout}");
    assert!(
        stdout.contains("1764317100 (2025-11-28T08:05:00Z)"),
        "{stdout}"
    );

    // For scripts.
    let output = decode_output(&["--json", &token], None);
    assert!(output.status.success());
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["verified"], false);
    assert_eq!(
        document["chain"],
        serde_json::json!(["corp|alice", "assistant", "booking-tool"])
    );
    assert_eq!(document["claims"], claims);
    assert_eq!(document["header"]["kid"], key.kid());

    // From standard input, so the token stays off the command line.
    let output = decode_output(&["-"], Some(&format!("  {token}\n")));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let from_stdin = String::from_utf8(output.stdout).unwrap();
    assert_eq!(from_stdin, stdout);
    let output = decode_output(&["--json", "-"], Some(&token));
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document["chain"][2], "booking-tool");

    // Without `act`.
    let plain = unsigned_token(&serde_json::json!({"sub": "corp|alice"}));
    let output = decode_output(&[&plain], None);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("chain: no act claim (not a delegated token)"));
}

#[test]
fn token_decode_refuses_garbage_and_bounds_the_tree() {
    for garbage in ["garbage", "a.b", "!!!.e30.c2ln", ""] {
        let output = decode_output(&[garbage], None);
        assert_eq!(output.status.code(), Some(1), "{garbage}");
        assert!(output.stdout.is_empty(), "{garbage}");
        assert!(
            String::from_utf8_lossy(&output.stderr).starts_with("error: "),
            "{garbage}"
        );
    }
    let output = decode_output(&["-"], Some("not a token\n"));
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("error"));

    // 39 levels of `act` (with the claims object, the deepest nesting a token may have):
    // agent-0 is the current actor (outermost), agent-38 the first.
    let mut act = serde_json::json!({"sub": "agent-38"});
    for level in (0..38).rev() {
        act = serde_json::json!({"sub": format!("agent-{level}"), "act": act});
    }
    let token = unsigned_token(&serde_json::json!({"sub": "corp|alice", "act": act}));
    let output = decode_output(&[&token], None);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let chain = stdout.split("chain:\n").nth(1).unwrap();
    assert!(chain.contains("… (7 more levels not shown)"), "{stdout}");
    let tree: Vec<&str> = chain
        .lines()
        .take_while(|line| line.starts_with("  "))
        .collect();
    assert_eq!(tree.len(), 1 + 1 + 32, "{stdout}");
    assert!(tree[2].contains("└─ agent-31"), "{stdout}");
    assert!(
        tree[33].contains("└─ agent-0 ") && tree[33].contains("(current actor)"),
        "{stdout}"
    );
    assert!(!chain.contains("agent-32 "), "{stdout}");
    assert!(!chain.contains("(acted first)"), "{stdout}");
    // The JSON form keeps the whole chain, first actor to current.
    let output = decode_output(&["--json", &token], None);
    let document: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let entries = document["chain"].as_array().unwrap();
    assert_eq!(entries.len(), 40);
    assert_eq!(entries[1], "agent-38");
    assert_eq!(entries[39], "agent-0");
    // One level more is past the nesting bound: refused, as mandate refuses it.
    let deeper =
        unsigned_token(&serde_json::json!({"sub": "corp|alice", "act": {"sub": "x", "act": act}}));
    let output = decode_output(&[&deeper], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nested too deeply"));
}

/// `mandate redis acl`: the printed user can read the revocation list and stream of a real Redis
/// and can neither write nor delete anything, nor read other keys.
#[tokio::test]
async fn the_redis_acl_user_is_read_only() {
    let redis = mandate_testkit::redis::RedisServer::start().await.unwrap();
    let output = mandate()
        .args(["redis", "acl", "--user", "verifier"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let rule = stdout
        .lines()
        .find(|l| l.starts_with("ACL SETUSER"))
        .unwrap();
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("#   password "))
        .unwrap()
        .trim()
        .to_owned();
    let args: Vec<&str> = rule.split_whitespace().collect();
    assert_eq!(redis.cli(&args).unwrap().trim(), "OK");
    redis
        .cli(&["SET", "{mandate:rev}:hop:h1", "entry"])
        .unwrap();
    redis
        .cli(&[
            "XADD",
            "{mandate:rev}:stream",
            "*",
            "kind",
            "hop",
            "id",
            "h1",
        ])
        .unwrap();
    redis.cli(&["SET", "mandate:ledger:secret", "x"]).unwrap();
    let port = redis.port().to_string();
    let as_verifier = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "--user",
                "verifier",
                "--pass",
                &password,
                "--no-auth-warning",
            ])
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert_eq!(
        as_verifier(&["GET", "{mandate:rev}:hop:h1"]).trim(),
        "entry"
    );
    assert!(as_verifier(&["XRANGE", "{mandate:rev}:stream", "-", "+"]).contains("h1"));
    assert!(as_verifier(&["TIME"]).lines().count() >= 2);
    for denied in [
        vec!["SET", "{mandate:rev}:hop:h1", "gone"],
        vec!["DEL", "{mandate:rev}:hop:h1"],
        vec!["UNLINK", "{mandate:rev}:hop:h1"],
        vec!["XADD", "{mandate:rev}:stream", "*", "kind", "hop"],
        vec!["XTRIM", "{mandate:rev}:stream", "MAXLEN", "0"],
        vec!["EXPIRE", "{mandate:rev}:hop:h1", "1"],
        vec!["GET", "mandate:ledger:secret"],
        vec!["FLUSHALL"],
        vec![
            "EVAL",
            "return redis.call('del', KEYS[1])",
            "1",
            "{mandate:rev}:hop:h1",
        ],
        vec!["CONFIG", "SET", "appendonly", "no"],
        vec!["ACL", "SETUSER", "verifier", "+@all"],
    ] {
        let answer = as_verifier(&denied);
        assert!(answer.contains("NOPERM"), "{denied:?} → {answer}");
    }
    // Nothing changed.
    assert_eq!(
        redis.cli(&["GET", "{mandate:rev}:hop:h1"]).unwrap().trim(),
        "entry"
    );
    assert_eq!(
        redis.cli(&["XLEN", "{mandate:rev}:stream"]).unwrap().trim(),
        "1"
    );
}
