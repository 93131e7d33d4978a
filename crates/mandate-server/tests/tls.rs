//! `[tls]`: both listeners serve HTTPS with the configured certificate (a real rustls
//! handshake, over real TCP), plain HTTP gets no answer from them, a reload puts a replaced
//! certificate in force for new connections, and a broken file keeps the one in force.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::Path;

use mandate_server::config::ConfigSource;
use mandate_server::state::{AppState, BuildOptions};
use mandate_testkit::{delegation_settings, KeyKind, TestKey, TestServer, ADMIN_READER};

/// A self-signed certificate for `localhost`, written to `dir`; its PEM.
fn write_certificate(dir: &Path) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).unwrap();
    std::fs::write(dir.join("key.pem"), certified.key_pair.serialize_pem()).unwrap();
    pem
}

/// A client that trusts only `pem`.
fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

/// `http://127.0.0.1:PORT/…` as `https://localhost:PORT/…` (the certificate's name).
fn https(url: &str) -> String {
    url.replace("http://127.0.0.1:", "https://localhost:")
}

#[tokio::test]
async fn both_listeners_serve_https_and_a_reload_swaps_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_certificate(dir.path());
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.tls.cert_file = Some(dir.path().join("cert.pem"));
    settings.tls.key_file = Some(dir.path().join("key.pem"));
    let server = TestServer::spawn(settings).await.unwrap();

    let client = trusting(&first);
    let jwks = client
        .get(https(&server.url("/jwks")))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    assert_eq!(jwks.version(), reqwest::Version::HTTP_11);
    let admin = client
        .get(https(&server.admin_url("/admin/agents")))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);
    // Plain HTTP on a TLS listener: no HTTP answer.
    assert!(reqwest::get(server.url("/jwks")).await.is_err());

    // The files are replaced in place: nothing changes until the reload.
    let second = write_certificate(dir.path());
    let renewed = trusting(&second);
    assert!(renewed
        .get(https(&server.url("/jwks")))
        .send()
        .await
        .is_err());
    assert!(server.state.reload_tls().unwrap());
    let after = renewed
        .get(https(&server.admin_url("/admin/agents")))
        .bearer_auth(ADMIN_READER)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    assert!(trusting(&first)
        .get(https(&server.url("/jwks")))
        .send()
        .await
        .is_err());

    // A broken certificate file keeps the one in force.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").unwrap();
    assert!(server.state.reload_tls().is_err());
    let still = trusting(&second)
        .get(https(&server.url("/jwks")))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_key_that_is_not_the_certificates_or_half_a_pair_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    write_certificate(other.path());
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    for (cert, key, expected) in [
        (
            Some(dir.path().join("cert.pem")),
            Some(other.path().join("key.pem")),
            "does not belong",
        ),
        (Some(dir.path().join("cert.pem")), None, "go together"),
        (
            Some(dir.path().join("missing.pem")),
            Some(dir.path().join("key.pem")),
            "missing.pem",
        ),
    ] {
        let mut settings = delegation_settings(&corp);
        settings.tls.cert_file = cert;
        settings.tls.key_file = key;
        let error = AppState::build(
            settings,
            ConfigSource::Programmatic,
            BuildOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(error.contains("tls"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
}

/// A client that opens a connection to a TLS listener and never completes the handshake is
/// dropped at the request timeout, as a slow request head is: it cannot hold a connection open.
#[tokio::test]
async fn a_handshake_that_never_comes_is_dropped_at_the_request_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    write_certificate(dir.path());
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let mut settings = delegation_settings(&corp);
    settings.tls.cert_file = Some(dir.path().join("cert.pem"));
    settings.tls.key_file = Some(dir.path().join("key.pem"));
    settings.limits.request_timeout_secs = 1;
    let server = TestServer::spawn(settings).await.unwrap();
    let address = server.base.trim_start_matches("http://").to_owned();
    for sent in [&b""[..], &b"\x16\x03\x01"[..]] {
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut stream, sent)
            .await
            .unwrap();
        let mut buffer = [0u8; 64];
        // Closed by the server (end of stream or reset), long before this test's own bound.
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buffer))
                .await
                .expect("the server kept a silent handshake open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    server.stop().await;
}
