//! `GET /admin/openapi.json`: the document is pinned by a golden file, and every operation it
//! describes is routed, refuses a caller without a credential, and enforces the role it states.
//! Set `UPDATE_GOLDEN=1` to rewrite the golden file after an intended change.

use mandate_testkit::{delegation_settings, KeyKind, TestKey, TestServer, ADMIN_OPS, ADMIN_READER};
use serde_json::Value;

fn golden_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/admin-openapi.json")
}

async fn served_document(server: &TestServer) -> Value {
    let response = server
        .admin_get("/admin/openapi.json", Some(ADMIN_READER))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

/// Every (method, concrete path, role) the document describes, ids replaced by ones that exist
/// nowhere: routing and role checks come before any lookup.
fn operations(document: &Value) -> Vec<(String, String, String)> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let concrete = path
                .replace("{id}", "no-such-id")
                .replace("{jti}", "hop_no-such-hop")
                .replace("{sub}", "corp%7Cnobody");
            let role = operation["x-mandate-role"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} states no role"))
                .to_owned();
            operations.push((method.to_uppercase(), concrete, role));
        }
    }
    operations
}

async fn call(server: &TestServer, method: &str, path: &str, secret: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        server.admin_url(path),
    );
    if let Some(secret) = secret {
        request = request.bearer_auth(secret);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_document_is_pinned_and_well_formed() {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let document = served_document(&server).await;
    let pretty = serde_json::to_string_pretty(&document).unwrap() + "\n";
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    assert_eq!(pretty, expected, "the served OpenAPI document changed");

    assert_eq!(document["openapi"], "3.1.0");
    // Every schema reference resolves.
    let text = document.to_string();
    for reference in text.split("\"$ref\":\"").skip(1) {
        let target = reference.split('"').next().unwrap();
        let pointer = target.trim_start_matches('#');
        assert!(
            document.pointer(pointer).is_some(),
            "dangling reference {target}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn every_documented_operation_is_routed_and_needs_a_credential() {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let document = served_document(&server).await;
    let operations = operations(&document);
    assert!(operations.len() >= 20, "{} operations", operations.len());
    // The routing check below can fail: an undocumented method answers the catch-all.
    let (status, body) = call(&server, "DELETE", "/admin/audit", Some(ADMIN_OPS)).await;
    assert_eq!(
        (status, &body["message"]),
        (404, &Value::from("no such admin endpoint"))
    );
    for (method, path, _) in &operations {
        let (status, body) = call(&server, method, path, None).await;
        assert_eq!(status, 401, "{method} {path} without a credential: {body}");
        let (status, body) = call(&server, method, path, Some("not-a-credential")).await;
        assert_eq!(
            status, 401,
            "{method} {path} with a wrong credential: {body}"
        );
        // A manage credential reaches the handler: whatever it answers, it is not the
        // catch-all of an unrouted path.
        let (_, body) = call(&server, method, path, Some(ADMIN_OPS)).await;
        assert_ne!(
            body["message"], "no such admin endpoint",
            "{method} {path} is documented but not routed"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn the_stated_roles_are_the_enforced_ones() {
    let corp = TestKey::generate(KeyKind::Es256, None).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let document = served_document(&server).await;
    for (method, path, role) in operations(&document) {
        let (status, body) = call(&server, &method, &path, Some(ADMIN_READER)).await;
        if role == "read" {
            assert_ne!(status, 403, "{method} {path} is documented as read: {body}");
            assert_ne!(status, 401, "{method} {path}: {body}");
        } else {
            assert_eq!(status, 403, "{method} {path} needs {role}: {body}");
            assert_eq!(body["error"], "forbidden");
        }
    }
    server.stop().await;
}
