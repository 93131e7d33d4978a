//! Discovery, JWKS and health, with the documents' shape pinned by golden files.
//! Set `UPDATE_GOLDEN=1` to rewrite a golden file after an intended change.

use std::path::PathBuf;

use mandate_testkit::{empty_settings, TestServer};
use mandate_token::SigningAlgorithm;
use serde_json::Value;

use crate::{fixture, world};

fn golden(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn assert_golden(name: &str, actual: &Value) {
    let path = golden(name);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(
        pretty,
        expected,
        "{} differs from the served document",
        path.display()
    );
}

/// The served discovery document with the (port-dependent) issuer replaced by `{issuer}`.
fn normalise(document: &Value, issuer: &str) -> Value {
    serde_json::from_str(&document.to_string().replace(issuer, "{issuer}")).unwrap()
}

#[tokio::test]
async fn discovery_document_is_pinned() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    let response = server
        .http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let document: Value = response.json().await.unwrap();
    // RFC 8414 §3.3: the issuer is identical to the one the URL was built from.
    assert_eq!(document["issuer"], server.issuer());
    assert_golden("discovery.json", &normalise(&document, server.issuer()));
    // Never none, never a trusted-issuer list.
    let algs = document["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(!algs
        .iter()
        .any(|a| a == "none" || a.as_str().unwrap().starts_with("HS")));
    assert!(!document.to_string().contains("trusted"));
    server.stop().await;
}

#[tokio::test]
async fn jwks_is_pinned_for_a_fixed_key_and_publishes_retired_keys() {
    let mut settings = empty_settings();
    settings.signing.key_file = Some(fixture("signing-es256.pem"));
    settings.signing.retired_key_files = vec![fixture("next-eddsa.pem")];
    let server = TestServer::spawn(settings).await.unwrap();
    let response = server.http.get(server.url("/jwks")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let jwks: Value = response.json().await.unwrap();
    assert_golden("jwks.json", &jwks);
    server.stop().await;
}

#[tokio::test]
async fn jwks_never_exposes_private_members() {
    for algorithm in [SigningAlgorithm::Es256, SigningAlgorithm::EdDsa] {
        let mut settings = empty_settings();
        settings.signing.algorithm = algorithm;
        let server = TestServer::spawn(settings).await.unwrap();
        let jwks = server.get_json("/jwks").await.unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1);
        for key in keys {
            let members = key.as_object().unwrap();
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(!members.contains_key(private), "{private} in {key}");
            }
            assert_eq!(key["use"], "sig");
            assert_eq!(key["alg"], algorithm.name());
            assert!(
                key["kid"].as_str().is_some_and(|k| k.len() == 43),
                "kid is a SHA-256 thumbprint"
            );
        }
        server.stop().await;
    }
}

#[tokio::test]
async fn jwks_kid_is_the_rfc7638_thumbprint() {
    let mut settings = empty_settings();
    settings.signing.key_file = Some(fixture("signing-es256.pem"));
    let server = TestServer::spawn(settings).await.unwrap();
    let jwks = server.get_json("/jwks").await.unwrap();
    let key = jwks["keys"][0].as_object().unwrap();
    let mut public = key.clone();
    for member in ["kid", "use", "alg"] {
        public.remove(member);
    }
    assert_eq!(key["kid"], mandate_token::thumbprint(&public).unwrap());
    server.stop().await;
}

#[tokio::test]
async fn health_reports_the_store() {
    let server = TestServer::spawn(empty_settings()).await.unwrap();
    let health = server.get_json("/healthz").await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"], "ready");
    server.stop().await;
}
