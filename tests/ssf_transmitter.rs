//! An identity provider written independently of mandate (Python, jwcrypto) signs a user's ID
//! token and, once mandate has exchanged it, pushes a CAEP session-revoked SET for that user
//! (RFC 8935) to the real `mandate serve`: the user's live token goes inactive and the old ID
//! token is refused for new exchanges, while another user's token stays live. The same IdP as
//! an RFC 8936 poll endpoint: mandate fetches the SET, acts on it and acknowledges it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::path::Path;
use std::process::{Command, Stdio};

use mandate_model::SecretHash;
use serde_json::Value;

const IDP: &str = "https://idp.python.example";
const ISSUER: &str = "https://mandate.ssf.example";
const CAL: &str = "https://calendar.example.com";
const PUSH_TOKEN: &str = "python-idp-push-token-4f1e";

fn python(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssf/transmitter.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (the tests need python3 with jwcrypto: pip install jwcrypto)");
    assert!(
        output.status.success(),
        "transmitter.py {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn config(dir: &Path) -> String {
    let jwks = dir.join("jwks.json");
    format!(
        "issuer = \"{ISSUER}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [[trusted_issuers]]\nissuer = \"{IDP}\"\nalias = \"py\"\njwks_file = {:?}\n\
         algorithms = [\"ES256\"]\nssf_push_token_hash = \"{}\"\n\n\
         [[clients]]\nclient_id = \"assistant\"\nkind = \"agent\"\nowners = [\"ops@example.com\"]\n\
         auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n\n\
         [[clients]]\nclient_id = \"calendar-api\"\nkind = \"resource_server\"\n\
         owners = [\"ops@example.com\"]\nauth_method = \"client_secret_basic\"\n\
         secret_hash = \"{}\"\naudiences = [\"{CAL}\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n",
        jwks.display().to_string(),
        SecretHash::of(PUSH_TOKEN),
        SecretHash::of("assistant-secret"),
        SecretHash::of("calendar-secret"),
    )
}

/// The assistant's token for the calendar from `id_token`.
async fn calendar_token(http: &reqwest::Client, base: &str, id_token: &str) -> String {
    let (status, answer) = exchange(http, base, id_token).await;
    assert_eq!(status, 200, "{answer}");
    answer["access_token"].as_str().unwrap().to_owned()
}

async fn exchange(http: &reqwest::Client, base: &str, id_token: &str) -> (u16, Value) {
    let response = http
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
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn active(http: &reqwest::Client, base: &str, token: &str) -> bool {
    let answer: Value = http
        .post(format!("{base}/introspect"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["active"] == true
}

#[tokio::test]
async fn an_independent_idp_revokes_a_users_delegations_with_a_pushed_set() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    python(&["keygen", &dir_text]);
    let config_path = dir.path().join("mandate.toml");
    std::fs::write(&config_path, config(dir.path())).unwrap();
    let (_mandate, base) = serve::serve_config(&config_path);
    let http = reqwest::Client::new();

    let alice_id_token = python(&["id-token", &dir_text, IDP, "alice", "assistant"]);
    let bob_id_token = python(&["id-token", &dir_text, IDP, "bob", "assistant"]);
    let alice = calendar_token(&http, &base, &alice_id_token).await;
    let bob = calendar_token(&http, &base, &bob_id_token).await;
    assert!(active(&http, &base, &alice).await);

    let pushed = python(&[
        "push",
        &dir_text,
        &format!("{base}/ssf/receive/py"),
        PUSH_TOKEN,
        IDP,
        ISSUER,
        "alice",
    ]);
    assert!(pushed.starts_with("202"), "the push was answered {pushed}");

    assert!(
        !active(&http, &base, &alice).await,
        "alice's token is still live"
    );
    let (status, refused) = exchange(&http, &base, &alice_id_token).await;
    assert_eq!(status, 400, "{refused}");
    assert!(active(&http, &base, &bob).await, "bob's token was touched");

    // A push with a wrong token is refused as RFC 8935 says, and changes nothing.
    let refused = python(&[
        "push",
        &dir_text,
        &format!("{base}/ssf/receive/py"),
        "not-the-token",
        IDP,
        ISSUER,
        "bob",
    ]);
    assert!(refused.starts_with("401"), "{refused}");
    assert!(refused.contains("authentication_failed"), "{refused}");
    assert!(active(&http, &base, &bob).await);
}

/// The same IdP as an RFC 8936 poll endpoint: mandate polls it, acts on the SET it offers, and
/// acknowledges it on its next request.
#[tokio::test]
async fn mandate_polls_an_independent_idp_and_acknowledges_what_it_acted_on() {
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    python(&["keygen", &dir_text]);
    let poll_token = "python-idp-poll-token-77";
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ssf/transmitter.py");
    let mut idp = Command::new("python3")
        .arg(script)
        .args(["serve-poll", &dir_text, poll_token, IDP, ISSUER, "alice"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = idp.stdout.take().unwrap();
    let _idp = serve::Killed(idp);
    let mut port = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut port)
        .unwrap();
    let idp_base = format!("http://127.0.0.1:{}", port.trim());
    let token_file = dir.path().join("poll.token");
    std::fs::write(&token_file, poll_token).unwrap();
    let config_text = config(dir.path()).replace(
        "ssf_push_token_hash",
        &format!(
            "ssf_poll_url = \"{idp_base}/poll\"\nssf_poll_token_file = {:?}\nssf_push_token_hash",
            token_file.display().to_string()
        ),
    );
    let config_path = dir.path().join("mandate.toml");
    std::fs::write(&config_path, config_text).unwrap();
    let (_mandate, base) = serve::serve_config(&config_path);
    let http = reqwest::Client::new();
    let alice_id_token = python(&["id-token", &dir_text, IDP, "alice", "assistant"]);
    let alice = calendar_token(&http, &base, &alice_id_token).await;
    let bob_id_token = python(&["id-token", &dir_text, IDP, "bob", "assistant"]);
    let bob = calendar_token(&http, &base, &bob_id_token).await;
    assert!(active(&http, &base, &alice).await);

    let armed: Value = http
        .get(format!("{idp_base}/arm"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jti = armed["jti"].as_str().unwrap().to_owned();
    let forged_jti = armed["forged_jti"].as_str().unwrap().to_owned();
    // mandate polls every 5 s; the acknowledgement rides on the request after the one that
    // brought the SET.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let state = loop {
        let state: Value = http
            .get(format!("{idp_base}/state"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let acked = state["acked"]
            .as_array()
            .is_some_and(|acked| acked.iter().any(|a| a == jti.as_str()));
        let reported = state["errors"].get(&forged_jti).is_some();
        if (acked && reported) || std::time::Instant::now() > deadline {
            break state;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        state["acked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == jti.as_str()),
        "the SET was not acknowledged: {state}"
    );
    // The forgery is reported back as RFC 8936 asks, never acknowledged, and acts on nothing.
    assert_eq!(
        state["errors"][&forged_jti]["err"], "invalid_key",
        "{state}"
    );
    assert_eq!(state["errors"].as_object().unwrap().len(), 1, "{state}");
    assert!(
        !state["acked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == forged_jti.as_str()),
        "{state}"
    );
    assert!(
        !active(&http, &base, &alice).await,
        "alice's token is still live"
    );
    assert!(
        active(&http, &base, &bob).await,
        "the forged SET revoked bob"
    );
}
