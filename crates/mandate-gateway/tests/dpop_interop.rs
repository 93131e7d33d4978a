//! DPoP with an agent independent of mandate's code (`tests/dpop/agent.py`: jwcrypto and the
//! Python standard library, its proofs built by hand from RFC 9449): through a hand-off, an
//! exchange by the recipient with its own key, an ID-JAG issued bound and redeemed at a second
//! mandate (the resource AS), and calls through the `mandate-gateway` binary in proxy mode in
//! front of a Python app. Each token's `cnf.jkt` is the thumbprint the agent computed itself.
//! And an agent built on openid-client 6 (npm, `tests/dpop/openid_client.mjs`, installed with
//! `npm ci --prefix tests/dpop`), whose DPoP proofs the library makes, exchanging and calling an
//! app through the gateway.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use mandate_model::{Audience, ClientId, ScopeSet};
use mandate_server::config::{ConfigSource, IdJagResourceServerSettings, PolicySettings};
use mandate_server::{AppState, BuildOptions, Listeners, Signals};
use mandate_testkit::{
    claims_of, delegation_settings, id_token_claims, resource_as_settings, resource_server,
    KeyKind, TestKey, TestServer, CAL, CORP, FILES, RAS_SECRET,
};
use serde_json::Value;

use support::{echo_app, free_port, gateway};

fn agent(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dpop/agent.py");
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 with jwcrypto runs (pip install jwcrypto)");
    assert!(
        output.status.success(),
        "agent.py {:?}: {}",
        &args[..1],
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or(Value::String(text.trim().to_owned()))
}

/// A gateway in proxy mode on `port` in front of the app on `app`, following `issuer`'s feed as
/// `client` (its secret in a file), one route for `route` (audience, scope).
fn proxy_config(
    port: u16,
    issuer: &str,
    app: u16,
    client: (&str, &Path),
    route: (&str, &str),
) -> String {
    let ((client_id, secret), (audience, scope)) = (client, route);
    format!(
        r#"
listen = "127.0.0.1:{port}"
mode = "proxy"
issuer = "{issuer}"
upstream = "http://127.0.0.1:{app}"

[revocation]
source = "feed"
url = "{issuer}/revocations"
client_id = "{client_id}"
client_secret_file = "{}"

[[routes]]
prefix = "/"
audience = "{audience}"
scopes = ["{scope}"]
"#,
        secret.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_dpop_agent_binds_every_hop_and_calls_through_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = dir.path().join("a.json");
    let key_b = dir.path().join("b.json");
    let (a, b) = (key_a.to_str().unwrap(), key_b.to_str().unwrap());
    let jkt_a = agent(&["keygen", a, "ES256"]).as_str().unwrap().to_owned();
    let jkt_b = agent(&["keygen", b, "EdDSA"]).as_str().unwrap().to_owned();

    // The IdP-side mandate, which issues ID-JAGs for the resource AS below.
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let ras_listeners = Listeners::bind(loopback, loopback).unwrap();
    let ras_issuer = format!("http://{}", ras_listeners.public.local_addr().unwrap());
    let mut settings = delegation_settings(&corp);
    settings.id_jag.resource_servers = vec![IdJagResourceServerSettings {
        issuer: ras_issuer.clone(),
        client_ids: BTreeMap::from([(
            ClientId::parse("assistant").unwrap(),
            "assistant-at-ras".to_owned(),
        )]),
        resources: vec![Audience::parse(FILES).unwrap()],
        scopes: ScopeSet::parse("files.read").unwrap(),
    }];
    let idp = TestServer::spawn(settings).await.unwrap();
    let base = idp.issuer().to_owned();
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let exchange = |key: &str, client: &str, secret: &str, fields: Vec<String>| {
        let mut args = vec![
            "token".to_owned(),
            key.to_owned(),
            base.clone(),
            client.to_owned(),
            secret.to_owned(),
            "grant_type=urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ];
        args.extend(fields);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        agent(&args)
    };

    // The assistant hands work to the booking tool, bound to the assistant's key.
    let hand_off = exchange(
        a,
        "assistant",
        "assistant-secret",
        vec![
            format!("subject_token={id_token}"),
            "subject_token_type=urn:ietf:params:oauth:token-type:id_token".into(),
            "audience=agent:booking-tool".into(),
        ],
    );
    assert_eq!(hand_off["status"], 200, "{hand_off}");
    assert_eq!(hand_off["body"]["token_type"], "DPoP");
    let hand_off = hand_off["body"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&hand_off)["cnf"]["jkt"], jkt_a.as_str());

    // The booking tool exchanges it: refused without its own proof, bound to its key with it.
    let from_hand_off = |key: &str| {
        exchange(
            key,
            "booking-tool",
            "booking-secret",
            vec![
                format!("subject_token={hand_off}"),
                "subject_token_type=urn:ietf:params:oauth:token-type:access_token".into(),
                format!("audience={CAL}"),
                "scope=calendar.read".into(),
            ],
        )
    };
    let refused = from_hand_off("-");
    assert_eq!(refused["status"], 400, "{refused}");
    assert_eq!(refused["body"]["error"], "invalid_dpop_proof");
    let calendar = from_hand_off(b);
    assert_eq!(calendar["status"], 200, "{calendar}");
    assert_eq!(calendar["body"]["token_type"], "DPoP");
    let calendar = calendar["body"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(claims_of(&calendar)["cnf"]["jkt"], jkt_b.as_str());

    // The calendar app behind the gateway: the token works only with the booking tool's proof.
    let secret = dir.path().join("calendar-secret");
    std::fs::write(&secret, "calendar-secret").unwrap();
    let (_app, app) = echo_app();
    let port = free_port();
    let config = proxy_config(
        port,
        &base,
        app,
        ("calendar-api", &secret),
        (CAL, "calendar.read"),
    );
    let _gateway = gateway(dir.path(), "dpop", &config, port);
    let url = format!("http://127.0.0.1:{port}/events");
    let htu = format!("{CAL}/events");
    let call = |key: &str, scheme: &str| agent(&["call", key, scheme, &calendar, &url, &htu]);
    assert_eq!(call(b, "DPoP")["status"], 200);
    let bearer = call("-", "Bearer");
    assert_eq!(bearer["status"], 401, "{bearer}");
    assert!(bearer["challenge"]
        .as_str()
        .unwrap()
        .starts_with(r#"DPoP error="invalid_token""#));
    let stolen = call(a, "DPoP");
    assert_eq!(stolen["status"], 401, "another agent's key: {stolen}");
    assert!(stolen["challenge"]
        .as_str()
        .unwrap()
        .starts_with(r#"DPoP error="invalid_dpop_proof""#));
    let replayed = agent(&["replay", b, &calendar, &url, &htu]);
    assert_eq!(replayed["statuses"], serde_json::json!([200, 401]));

    // The resource AS: a second mandate trusting the first for ID-JAGs.
    let jwks = idp.get_json("/jwks").await.unwrap();
    let mut ras = resource_as_settings(
        &ras_issuer,
        &base,
        jwks,
        vec!["ES256".into(), "EdDSA".into()],
    );
    ras.listen = ras_listeners.public.local_addr().unwrap();
    ras.admin_listen = ras_listeners.admin.local_addr().unwrap();
    let ras_state = AppState::build(ras, ConfigSource::Programmatic, BuildOptions::default())
        .await
        .unwrap();
    let running = mandate_server::start(ras_state, ras_listeners, Signals::Ignore).unwrap();

    // The assistant asks for an ID-JAG with its proof: it is bound to the assistant's key.
    let issued = exchange(
        a,
        "assistant",
        "assistant-secret",
        vec![
            format!("subject_token={id_token}"),
            "subject_token_type=urn:ietf:params:oauth:token-type:id_token".into(),
            "requested_token_type=urn:ietf:params:oauth:token-type:id-jag".into(),
            format!("audience={ras_issuer}"),
        ],
    );
    assert_eq!(issued["status"], 200, "{issued}");
    assert_eq!(issued["body"]["token_type"], "N_A");
    let jag = issued["body"]["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&jag)["cnf"]["jkt"], jkt_a.as_str());
    let redeem = |key: &str| {
        agent(&[
            "token",
            key,
            &ras_issuer,
            "assistant-at-ras",
            RAS_SECRET,
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer",
            &format!("assertion={jag}"),
        ])
    };
    // Another key, or none: invalid_grant, and the ID-JAG is not spent.
    for key in [b, "-"] {
        let refused = redeem(key);
        assert_eq!(refused["status"], 400, "{refused}");
        assert_eq!(refused["body"]["error"], "invalid_grant", "{refused}");
    }
    let redeemed = redeem(a);
    assert_eq!(redeemed["status"], 200, "{redeemed}");
    assert_eq!(redeemed["body"]["token_type"], "DPoP");
    let files = redeemed["body"]["access_token"].as_str().unwrap();
    assert_eq!(claims_of(files)["cnf"]["jkt"], jkt_a.as_str());
    running.stop().await;
    idp.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openid_client_agent_gets_a_bound_token_and_uses_it_through_the_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/dpop");
    if !root.join("node_modules/openid-client").is_dir() {
        // A fresh clone: install the locked versions (from npm's cache when it has them).
        let installed = Command::new("npm")
            .args([
                "ci",
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--silent",
            ])
            .current_dir(&root)
            .status()
            .expect("npm runs (Node.js 20 or later with npm)");
        assert!(
            installed.success(),
            "npm ci in tests/dpop failed: install openid-client with npm ci --prefix tests/dpop"
        );
    }
    // The app is addressed where the gateway listens, so that the library's proofs (which name
    // the URL it calls) name the app's audience.
    let port = free_port();
    let app_audience = format!("http://127.0.0.1:{port}");
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    // The library answers use_dpop_nonce by itself, retrying with the nonce it was given.
    settings.dpop.require_nonce = true;
    settings
        .clients
        .push(resource_server("gw-app", "gw-app-secret", &app_audience).unwrap());
    settings.policies.push(PolicySettings {
        actor: ClientId::parse("assistant").unwrap(),
        audience: Audience::parse(&app_audience).unwrap(),
        scopes: ScopeSet::parse("events.read").unwrap(),
        max_depth: None,
    });
    let server = TestServer::spawn(settings).await.unwrap();
    let issuer = server.issuer().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("gw-app-secret");
    std::fs::write(&secret, "gw-app-secret").unwrap();
    let (_app, app) = echo_app();
    let config = proxy_config(
        port,
        &issuer,
        app,
        ("gw-app", &secret),
        (&app_audience, "events.read"),
    );
    let _gateway = gateway(dir.path(), "openid-client", &config, port);
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let output = Command::new("node")
        .arg(root.join("openid_client.mjs"))
        .args([
            &issuer,
            "assistant",
            "assistant-secret",
            &id_token,
            &app_audience,
            &format!("{app_audience}/events"),
        ])
        .output()
        .expect("node runs (Debian's nodejs)");
    assert!(
        output.status.success(),
        "openid_client.mjs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    // openid-client lower-cases the token type.
    assert_eq!(answer["token_type"], "dpop", "{answer}");
    let token = answer["access_token"].as_str().unwrap();
    assert_eq!(claims_of(token)["cnf"]["jkt"], answer["jkt"], "{answer}");
    assert_eq!(answer["app_status"], 200, "{answer}");
    assert_eq!(answer["bearer_status"], 401, "{answer}");
    server.stop().await;
}
