//! The ledger as evidence end to end: two `mandate serve` nodes on one private Redis journal
//! their hops and audit events into one hash-linked order, seal it and sign checkpoints; then
//! someone with write access to Redis alters one stored entry, deletes another and swaps two,
//! and `mandate ledger verify` names each, online against the store and offline from a
//! `mandate ledger export` file checked against the JWKS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mandate_model::SecretHash;
use mandate_redis_test::RedisServer;
use mandate_testkit::{id_token_claims, KeyKind, TestKey};
use serde_json::Value;

const IDP: &str = "https://idp.ledger.example";
const ISSUER: &str = "https://mandate.ledger.example";
const CAL: &str = "https://calendar.example.com";
const OPS: &str = "ops-secret-0123456789abcdefghijklmnop";
const ENTRIES: &str = "{mandate:journal}:entries";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The configuration of one node: the shared Redis, key and chain key; its own ports.
fn config(dir: &Path, idp: &TestKey, redis: &RedisServer, node: &str) -> std::path::PathBuf {
    let key = dir.join("signing.pem");
    if !key.exists() {
        std::fs::write(
            &key,
            &*mandate_token::SigningKey::generate_pem(mandate_token::SigningAlgorithm::Es256)
                .unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("chain-id.key"), [7u8; 32]).unwrap();
        std::fs::write(dir.join("idp.json"), idp.jwks().to_string()).unwrap();
    }
    let text = format!(
        "issuer = \"{ISSUER}\"\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\n\n\
         [signing]\nkey_file = {:?}\n\n\
         [tokens]\nchain_id_key_file = {:?}\n\n\
         [journal]\nseal_interval_ms = 50\ncheckpoint_interval_secs = 1\n\n\
         [[admin.credentials]]\nname = \"ops\"\nrole = \"revoke\"\nsecret_hash = \"{}\"\n\n\
         [[trusted_issuers]]\nissuer = \"{IDP}\"\nalias = \"corp\"\njwks_file = {:?}\n\
         algorithms = [\"ES256\"]\n\n\
         [[clients]]\nclient_id = \"assistant\"\nkind = \"agent\"\nowners = [\"ops@example.com\"]\n\
         auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n\n\
         [[clients]]\nclient_id = \"calendar-api\"\nkind = \"resource_server\"\nowners = [\"ops@example.com\"]\n\
         auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\naudiences = [\"{CAL}\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n",
        free_port(),
        free_port(),
        redis.url(),
        key.display().to_string(),
        dir.join("chain-id.key").display().to_string(),
        SecretHash::of(OPS),
        dir.join("idp.json").display().to_string(),
        SecretHash::of("assistant-secret"),
        SecretHash::of("calendar-secret"),
    );
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn admin_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let port = text
        .split("admin_listen = \"127.0.0.1:")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    format!("http://127.0.0.1:{port}")
}

async fn exchange(http: &reqwest::Client, base: &str, id_token: &str) -> String {
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
            ("audience", CAL),
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

async fn summary(http: &reqwest::Client, admin: &str) -> Value {
    http.get(format!("{admin}/admin/ledger"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `mandate <args>` against `admin`: exit code and stdout.
fn cli(admin: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(args)
        .args(["--url", admin])
        .env("MANDATE_ADMIN_SECRET", OPS)
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8_lossy(&output.stderr),
    )
}

/// The stored entry JSON at `place`.
fn stored(redis: &RedisServer, place: u64) -> String {
    let text = redis
        .cli(&[
            "ZRANGE",
            ENTRIES,
            &place.to_string(),
            &place.to_string(),
            "BYSCORE",
        ])
        .unwrap();
    let member = text.trim().to_owned();
    assert!(member.starts_with('{'), "no entry at {place}: {text:?}");
    member
}

fn put(redis: &RedisServer, place: u64, member: &str) {
    redis
        .cli(&[
            "ZREMRANGEBYSCORE",
            ENTRIES,
            &place.to_string(),
            &place.to_string(),
        ])
        .unwrap();
    redis
        .cli(&["ZADD", ENTRIES, &place.to_string(), member])
        .unwrap();
}

#[tokio::test]
async fn two_nodes_journal_one_order_and_verify_names_each_tampering() {
    let redis = RedisServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let idp = TestKey::generate(KeyKind::Es256, Some("idp-1")).unwrap();
    let (one, two) = (
        config(dir.path(), &idp, &redis, "one"),
        config(dir.path(), &idp, &redis, "two"),
    );
    let (_node_one, base_one) = serve::serve_config(&one);
    let (_node_two, base_two) = serve::serve_config(&two);
    let (admin_one, admin_two) = (admin_of(&one), admin_of(&two));
    let http = reqwest::Client::new();

    // Ten exchanges, alternating nodes, and a revocation through the second.
    let mut tokens = Vec::new();
    for n in 0..10 {
        let id_token = idp
            .sign(
                None,
                &id_token_claims(IDP, &format!("user{n}"), "assistant"),
            )
            .unwrap();
        let base = if n % 2 == 0 { &base_one } else { &base_two };
        tokens.push(exchange(&http, base, &id_token).await);
    }
    let jti = mandate_testkit::claims_of(&tokens[3])["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = http
        .post(format!("{admin_two}/admin/hops/{jti}/revoke"))
        .bearer_auth(OPS)
        .json(&serde_json::json!({"reason": "incident 9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);

    // Both nodes seal; one of them signs a checkpoint of the head.
    let deadline = Instant::now() + Duration::from_secs(15);
    let head = loop {
        let now = summary(&http, &admin_one).await;
        if now["pending"] == 0
            && now["head"]["seq"].as_u64().unwrap() >= 11
            && now["latest_checkpoint"]["seq"] == now["head"]["seq"]
        {
            break now["head"]["seq"].as_u64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "never sealed and checkpointed: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        summary(&http, &admin_two).await["head"]["seq"],
        head,
        "one journal"
    );

    // Clean, online (from either node) and offline.
    for admin in [&admin_one, &admin_two] {
        let (code, out) = cli(admin, &["ledger", "verify"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("clean"), "{out}");
    }
    let jwks = http
        .get(format!("{base_one}/jwks"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let export = dir.path().join("export.jsonl");
    let export_text = export.display().to_string();
    let jwks_text = jwks_file.display().to_string();
    let (code, out) = cli(&admin_one, &["ledger", "export", "--output", &export_text]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(
        &admin_one,
        &[
            "ledger",
            "verify",
            "--file",
            &export_text,
            "--jwks",
            &jwks_text,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("1 checkpoints checked") || out.contains("checkpoints checked"),
        "{out}"
    );
    let lines = std::fs::read_to_string(&export).unwrap();
    let hops = lines
        .lines()
        .filter(|l| l.contains("\"kind\":\"hop\""))
        .count();
    assert_eq!(hops, 10, "every exchange of both nodes");

    // The OCSF export of the same journal validates against the OCSF 1.8.0 schema (PyPI
    // ocsf-json-schema + jsonschema, as tests/ocsf/validate.py runs them).
    let (code, ocsf) = cli(&admin_one, &["ledger", "export", "--format", "ocsf"]);
    assert_eq!(code, 0, "{ocsf}");
    let mut validator = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ocsf/validate.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with ocsf-json-schema and jsonschema (pip install ocsf-json-schema==1.2.0 jsonschema)");
    std::io::Write::write_all(&mut validator.stdin.take().unwrap(), ocsf.as_bytes()).unwrap();
    let validated = validator.wait_with_output().unwrap();
    assert!(
        validated.status.success(),
        "{}",
        String::from_utf8_lossy(&validated.stdout)
    );
    assert_eq!(
        ocsf.lines().filter(|l| l.starts_with('{')).count() as u64,
        head
    );

    // Tamper: entry 3's record changed, entry 5 deleted, entries 7 and 8 swapped.
    let mut third: Value = serde_json::from_str(&stored(&redis, 3)).unwrap();
    third["record"]["tampered"] = Value::Bool(true);
    put(&redis, 3, &third.to_string());
    redis.cli(&["ZREMRANGEBYSCORE", ENTRIES, "5", "5"]).unwrap();
    let (seventh, eighth) = (stored(&redis, 7), stored(&redis, 8));
    put(&redis, 7, &eighth);
    put(&redis, 8, &seventh);

    let expected = [
        "entry 3 was altered",
        "entry 5 was removed",
        "entry 7 was reordered: it comes after entry 8",
    ];
    let (code, out) = cli(&admin_two, &["ledger", "verify"]);
    assert_eq!(code, 4, "{out}");
    for finding in expected {
        assert!(out.contains(finding), "online: {finding:?} not in\n{out}");
    }
    let tampered = dir.path().join("tampered.jsonl");
    let tampered_text = tampered.display().to_string();
    let (code, out) = cli(&admin_one, &["ledger", "export", "-o", &tampered_text]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(
        &admin_one,
        &[
            "ledger",
            "verify",
            "--file",
            &tampered_text,
            "--jwks",
            &jwks_text,
        ],
    );
    assert_eq!(code, 4, "{out}");
    for finding in expected {
        assert!(out.contains(finding), "offline: {finding:?} not in\n{out}");
    }
    // The OCSF export of the same store streams one event per kept entry.
    let (code, out) = cli(&admin_one, &["ledger", "export", "--format", "ocsf"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.starts_with('{')).count() as u64,
        head - 1
    );
}
