//! A Shared Signals receiver written independently of mandate (Python, jwcrypto:
//! `tests/ssf/receiver.py`), as the calendar app would run one, against the real `mandate serve`
//! on a private Redis: it creates a push stream and a poll stream, an admin revokes tokens, and the
//! receiver gets SETs it verifies against mandate's JWKS naming exactly the revoked tokens of its
//! audience, nothing about the mail app's; mandate killed with SIGKILL right after a revocation's
//! 200 and started again delivers the queued SETs, to a receiver that was down meanwhile and
//! receives them when it returns.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use serve::Killed;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mandate_model::SecretHash;
use mandate_redis_test::RedisServer;
use serde_json::Value;

const IDP: &str = "https://idp.python.example";
const ISSUER: &str = "https://mandate.ssf.example";
const CAL: &str = "https://calendar.example.com";
const MAIL: &str = "https://mail.example.com";
const OPS: &str = "ops-secret-0123456789abcdefghijklmnop";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ssf")
        .join(name)
}

fn python_idp(args: &[&str]) -> String {
    let output = Command::new("python3")
        .arg(script("transmitter.py"))
        .args(args)
        .output()
        .expect("python3 runs (the tests need python3 with jwcrypto: pip install jwcrypto)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn config(dir: &Path, redis: &RedisServer, port: u16, admin_port: u16) -> std::path::PathBuf {
    let key = dir.join("signing.pem");
    std::fs::write(
        &key,
        &*mandate_token::SigningKey::generate_pem(mandate_token::SigningAlgorithm::Es256).unwrap(),
    )
    .unwrap();
    let chain_key = dir.join("chain-id.key");
    std::fs::write(&chain_key, [7u8; 32]).unwrap();
    let client = |id: &str, kind: &str, secret: &str, extra: &str| {
        format!(
            "[[clients]]\nclient_id = \"{id}\"\nkind = \"{kind}\"\nowners = [\"ops@example.com\"]\n\
             auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n{extra}\n",
            SecretHash::of(secret)
        )
    };
    let text = format!(
        "issuer = \"{ISSUER}\"\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\n\n\
         [signing]\nkey_file = {:?}\n\n\
         [tokens]\nchain_id_key_file = {:?}\n\n\
         [[admin.credentials]]\nname = \"ops\"\nrole = \"revoke\"\nsecret_hash = \"{}\"\n\n\
         [[trusted_issuers]]\nissuer = \"{IDP}\"\nalias = \"py\"\njwks_file = {:?}\n\
         algorithms = [\"ES256\"]\n\n{}{}{}\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{MAIL}\"\nscopes = [\"mail.read\"]\n",
        redis.url(),
        key.display().to_string(),
        chain_key.display().to_string(),
        SecretHash::of(OPS),
        dir.join("jwks.json").display().to_string(),
        client("assistant", "agent", "assistant-secret", ""),
        client("calendar-api", "resource_server", "calendar-secret", &format!("audiences = [\"{CAL}\"]")),
        client("mail-api", "resource_server", "mail-secret", &format!("audiences = [\"{MAIL}\"]")),
    );
    let path = dir.join("mandate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path) -> Killed {
    serve::serve_config(config).0
}

/// The Python receiver; returns it with its two stream ids once it is ready.
fn receiver(
    base: &str,
    port: u16,
    out: &Path,
    streams: Option<&(String, String)>,
) -> (Killed, (String, String)) {
    let mut command = Command::new("python3");
    command
        .arg(script("receiver.py"))
        .args(["run", base, ISSUER, "calendar-api", "calendar-secret", CAL])
        .arg(port.to_string())
        .arg(out);
    if let Some((push, poll)) = streams {
        command.args([push, poll]);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ready"), "receiver said: {line}");
    (Killed(child), (words[1].to_owned(), words[2].to_owned()))
}

async fn token_for(http: &reqwest::Client, base: &str, id_token: &str, audience: &str) -> String {
    let answer: Value = http
        .post(format!("{base}/token"))
        .basic_auth("assistant", Some("assistant-secret"))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("audience", audience),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned()
}

fn jti(token: &str) -> String {
    mandate_testkit::claims_of(token)["jti"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn revoke(http: &reqwest::Client, admin: &str, token: &str) {
    let response = http
        .post(format!("{admin}/admin/hops/{}/revoke", jti(token)))
        .bearer_auth(OPS)
        .json(&serde_json::json!({"reason": "incident 7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// What the receiver verified so far: (via, the jti its subject names).
fn received(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let record: Value = serde_json::from_str(line).unwrap();
            (
                record["via"].as_str().unwrap().to_owned(),
                record["claims"]["sub_id"]["jti"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned(),
            )
        })
        .collect()
}

async fn wait_for(out: &Path, jti: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = received(out);
        let via = |how: &str| seen.iter().any(|(v, j)| v == how && j == jti);
        if via("push") && via("poll") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no SET for {jti} by push and poll: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_independent_receiver_gets_each_revocation_of_its_tokens_across_a_crash() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    python_idp(&["keygen", &dir_text]);
    let (port, admin_port, push_port) = (free_port(), free_port(), free_port());
    let config = config(dir.path(), &redis, port, admin_port);
    let (base, admin) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{admin_port}"),
    );
    let mut mandate = serve(&config);
    let http = reqwest::Client::new();
    let out = dir.path().join("received.jsonl");

    let id_token = python_idp(&["id-token", &dir_text, IDP, "alice", "assistant"]);
    let calendar = token_for(&http, &base, &id_token, CAL).await;
    let mail = token_for(&http, &base, &id_token, MAIL).await;
    let (python, streams) = receiver(&base, push_port, &out, None);

    // The mail app's token is revoked first: the calendar's receiver hears nothing of it.
    revoke(&http, &admin, &mail).await;
    revoke(&http, &admin, &calendar).await;
    wait_for(&out, &jti(&calendar)).await;
    assert!(
        received(&out).iter().all(|(_, j)| *j == jti(&calendar)),
        "{:?}",
        received(&out)
    );

    // The receiver goes down; a revocation is answered 200 and mandate is killed at once.
    drop(python);
    let later = token_for(&http, &base, &id_token, CAL).await;
    revoke(&http, &admin, &later).await;
    mandate.0.kill().unwrap();
    mandate.0.wait().unwrap();
    mandate = serve(&config);
    // The receiver returns: the queued SET reaches it, pushed and polled.
    let (_python, same) = receiver(&base, push_port, &out, Some(&streams));
    assert_eq!(same, streams);
    wait_for(&out, &jti(&later)).await;
    let seen = received(&out);
    assert_eq!(seen.len(), 4, "each SET once per stream: {seen:?}");
    drop(mandate);
}
