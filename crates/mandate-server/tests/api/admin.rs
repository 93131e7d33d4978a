//! The admin listener: credentials, roles, and nothing admin on the public listener.

use mandate_model::SecretHash;
use mandate_server::config::{AdminCredentialSettings, AdminRole};
use mandate_testkit::{body_json, TestServer};
use reqwest::StatusCode;

use crate::world;

const READER: &str = "reader-secret-0123456789abcdefghij";
const MANAGER: &str = "manager-secret-0123456789abcdefghi";

async fn server() -> TestServer {
    let mut settings = world().settings;
    for (name, role, secret) in [
        ("auditor", AdminRole::Read, READER),
        ("ops", AdminRole::Manage, MANAGER),
    ] {
        settings.admin.credentials.push(AdminCredentialSettings {
            name: name.into(),
            role,
            secret_hash: SecretHash::of(secret),
        });
    }
    TestServer::spawn(settings).await.unwrap()
}

#[tokio::test]
async fn nothing_admin_is_served_on_the_public_listener() {
    let server = server().await;
    for path in ["/admin/agents", "/admin/agents/basic-agent", "/admin"] {
        let response = server
            .http
            .get(server.url(path))
            .bearer_auth(MANAGER)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // And the public endpoints are not on the admin listener.
    for path in ["/token", "/jwks", "/.well-known/oauth-authorization-server"] {
        let response = server.admin_get(path, Some(MANAGER)).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn admin_needs_a_known_credential() {
    let server = server().await;
    let response = server.admin_get("/admin/agents", None).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
    assert_eq!(body_json(response).await["error"], "unauthenticated");
    let response = server
        .admin_get("/admin/agents", Some("not-a-credential"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = server
        .http
        .get(server.admin_url("/admin/agents"))
        .basic_auth("ops", Some(MANAGER))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "Basic is not an admin scheme"
    );
    // Two Authorization headers, even two valid credentials: refused, never the first wins.
    for second in [READER, MANAGER] {
        let response = server
            .http
            .get(server.admin_url("/admin/agents"))
            .header("authorization", format!("Bearer {MANAGER}"))
            .header("authorization", format!("Bearer {second}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_reader_lists_and_shows_agents_without_secrets() {
    let server = server().await;
    for secret in [READER, MANAGER] {
        let response = server
            .admin_get("/admin/agents", Some(secret))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        assert!(!text.contains("sha256"), "no secret hashes in admin output");
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        let ids: Vec<&str> = body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["client_id"].as_str().unwrap())
            .collect();
        assert!(ids.contains(&"basic-agent") && ids.contains(&"calendar-api"));
    }
    let response = server
        .admin_get("/admin/agents/jwt-agent", Some(READER))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let agent = body_json(response).await;
    assert_eq!(agent["kind"], "agent");
    assert_eq!(agent["state"], "active");
    assert_eq!(agent["auth_method"], "private_key_jwt");
    assert_eq!(agent["keys"].as_array().unwrap().len(), 2);
    let response = server
        .admin_get("/admin/agents/nobody", Some(READER))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(body_json(response).await["error"], "not_found");
    let response = server
        .admin_get("/admin/agents/Bad%20Id", Some(READER))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}
