//! The `mandate` binary: serve with a file, configuration errors, graceful shutdown, keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::{BufRead, BufReader, Write};
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
    let mut child = mandate()
        .args(["serve", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned();
    (child, address)
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
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
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
    // A missing file.
    let output = mandate()
        .args(["serve", "--config", "/nonexistent/mandate.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
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
