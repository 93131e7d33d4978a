//! `/admin/policies` over real HTTP (memory store): the rows and their version as the ETag,
//! replacement only with a current `If-Match` and only of rows that name registered agents and
//! well-formed audiences and scopes, and explain agreeing with what `/token` then does.

use mandate_model::SecretHash;
use mandate_server::config::{AdminCredentialSettings, AdminRole};
use mandate_server::Settings;
use mandate_testkit::{
    body_json, claims_of, delegation_auth, exchange_form, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS as OPS, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A `manage` credential, which PUT needs.
const MANAGER: &str = "policy-manager-secret-0123456789abcd";

struct World {
    server: TestServer,
    corp: TestKey,
}

async fn world_with(change: impl FnOnce(&mut Settings)) -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = mandate_testkit::delegation_settings(&corp);
    settings.admin.credentials.push(AdminCredentialSettings {
        name: "policy-admin".into(),
        role: AdminRole::Manage,
        secret_hash: SecretHash::of(MANAGER),
    });
    change(&mut settings);
    World {
        server: TestServer::spawn(settings).await.unwrap(),
        corp,
    }
}

impl World {
    async fn get(&self, secret: Option<&str>) -> (StatusCode, Option<String>, Value) {
        let response = self
            .server
            .admin_get("/admin/policies", secret)
            .await
            .unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, etag, body_json(response).await)
    }

    async fn put(
        &self,
        secret: &str,
        if_match: Option<&str>,
        body: &Value,
    ) -> (StatusCode, Option<String>, Value) {
        let mut request = self
            .server
            .http
            .put(self.server.admin_url("/admin/policies"))
            .bearer_auth(secret)
            .json(body);
        if let Some(tag) = if_match {
            request = request.header("If-Match", tag);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, etag, body_json(response).await)
    }

    async fn version(&self) -> u64 {
        self.get(Some(READER)).await.2["version"].as_u64().unwrap()
    }

    async fn explain(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .server
            .http
            .post(self.server.admin_url("/admin/policies/explain"))
            .bearer_auth(READER)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    fn sign_in(&self, agent: &str) -> String {
        self.corp
            .sign(None, &id_token_claims(CORP, "alice", agent))
            .unwrap()
    }

    async fn token(
        &self,
        token: &str,
        kind: &str,
        audience: &str,
        agent: &str,
        scope: Option<&str>,
    ) -> (StatusCode, Value) {
        let extra: Vec<(&str, &str)> = scope.map(|s| ("scope", s)).into_iter().collect();
        let form = exchange_form(token, kind, audience, &extra);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = self
            .server
            .token(&pairs, &delegation_auth(agent))
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    /// Asks explain, then makes the same exchange at `/token`, and checks that they agree: an
    /// allowed explanation is a token with the explained scopes, a refusal is the same code.
    /// Returns the explanation and the issued token (if any).
    async fn agree(
        &self,
        subject_token: &str,
        kind: &str,
        audience: &str,
        agent: &str,
        scope: Option<&str>,
    ) -> (Value, Option<String>) {
        let mut body = json!({
            "agent": agent,
            "subject_token_type": kind,
            "audience": audience,
        });
        if let Some(scope) = scope {
            body["scope"] = json!(scope);
        }
        if kind == "access_token" {
            body["parent_hop"] = claims_of(subject_token)["jti"].clone();
        }
        let (status, explained) = self.explain(&body).await;
        assert_eq!(status, StatusCode::OK, "{explained}");
        let (status, answer) = self
            .token(subject_token, kind, audience, agent, scope)
            .await;
        if explained["allowed"] == true {
            assert_eq!(
                status,
                StatusCode::OK,
                "explained {explained}, /token {answer}"
            );
            let issued = claims_of(answer["access_token"].as_str().unwrap());
            let scopes: Vec<String> = match issued["scope"].as_str() {
                Some(scope) => scope.split(' ').map(str::to_owned).collect(),
                None => {
                    let mut all: Vec<String> = issued["authorization_details"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .flat_map(|d| d["scopes"].as_array().unwrap().clone())
                        .map(|s| s.as_str().unwrap().to_owned())
                        .collect();
                    all.sort();
                    all.dedup();
                    all
                }
            };
            assert_eq!(json!(scopes), explained["scopes"], "{explained}");
            (
                explained,
                answer["access_token"].as_str().map(str::to_owned),
            )
        } else {
            assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
            assert_eq!(
                answer["error"], explained["error"],
                "explained {explained}, /token {answer}"
            );
            (explained, None)
        }
    }
}

fn rows() -> Value {
    json!({"rows": [
        {"actor": "assistant", "audience": CAL, "scopes": ["calendar.read"], "max_depth": 2},
        {"actor": "assistant", "audience": "agent:booking-tool", "scopes": ["calendar.read"]},
        {"actor": "booking-tool", "audience": CAL, "scopes": ["calendar.read"]},
    ]})
}

#[tokio::test]
async fn the_policy_is_read_with_its_version_as_the_etag() {
    let w = world_with(|_| {}).await;
    let (status, etag, body) = w.get(Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(etag.as_deref(), Some("\"1\""));
    assert_eq!(body["version"], 1);
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(
        rows[0],
        json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar.read", "calendar.write"]})
    );
    let (status, _, body) = w.get(None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, _, _) = w.get(Some("wrong-secret")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    w.server.stop().await;
}

#[tokio::test]
async fn a_replacement_needs_the_manage_role_and_the_current_version() {
    let w = world_with(|_| {}).await;
    for secret in [READER, OPS] {
        let (status, _, body) = w.put(secret, Some("\"1\""), &rows()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
    }
    let (status, _, body) = w.put("wrong-secret", Some("\"1\""), &rows()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = w.put(MANAGER, None, &rows()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (
            StatusCode::PRECONDITION_REQUIRED,
            Some("precondition_required")
        )
    );
    for stale in ["\"0\"", "\"2\"", "\"18446744073709551615\""] {
        let (status, _, body) = w.put(MANAGER, Some(stale), &rows()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::PRECONDITION_FAILED, Some("precondition_failed")),
            "{stale}"
        );
    }
    for malformed in ["1", "*", "W/\"1\"", "\"\"", "\"one\"", "\"1\", \"2\""] {
        let (status, _, body) = w.put(MANAGER, Some(malformed), &rows()).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{malformed}"
        );
    }
    assert_eq!(w.version().await, 1, "nothing changed");

    let (status, etag, body) = w.put(MANAGER, Some("\"1\""), &rows()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(body["version"], 2);
    assert_eq!(body["rows"], rows()["rows"]);
    let (_, etag, read) = w.get(Some(READER)).await;
    assert_eq!(etag.as_deref(), Some("\"2\""));
    assert_eq!(read, body);

    // The version read before is stale now.
    let (status, _, body) = w.put(MANAGER, Some("\"1\""), &rows()).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(body["message"].as_str().unwrap().contains("version 2"));

    // Audited with the credential's name.
    let response = w
        .server
        .admin_get("/admin/audit?action=policies.replace", Some(READER))
        .await
        .unwrap();
    let events = body_json(response).await["events"].clone();
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert_eq!(events[0]["actor"], "policy-admin");
    assert_eq!(events[0]["detail"], "version 2, 3 rows");
    w.server.stop().await;
}

#[tokio::test]
async fn the_new_policy_is_what_token_enforces() {
    let w = world_with(|_| {}).await;
    let token = w.sign_in("assistant");
    let (status, _) = w.token(&token, "id_token", MAIL, "assistant", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = w.put(MANAGER, Some("\"1\""), &rows()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = w.token(&token, "id_token", MAIL, "assistant", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    let (status, body) = w.token(&token, "id_token", CAL, "assistant", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["scope"], "calendar.read", "narrowed to the new row");
    w.server.stop().await;
}

#[tokio::test]
async fn rows_naming_unknown_agents_or_malformed_values_are_refused_by_index() {
    let w = world_with(|_| {}).await;
    let good = json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar.read"]});
    for (bad, says) in [
        (
            json!({"actor": "ghost", "audience": CAL, "scopes": ["calendar.read"]}),
            "not a registered agent",
        ),
        (
            json!({"actor": "calendar-api", "audience": CAL, "scopes": ["calendar.read"]}),
            "not a registered agent",
        ),
        (
            json!({"actor": "assistant", "audience": "agent:ghost", "scopes": ["calendar.read"]}),
            "not a registered agent",
        ),
        (
            json!({"actor": "Assistant!", "audience": CAL, "scopes": ["calendar.read"]}),
            "",
        ),
        (
            json!({"actor": "assistant", "audience": "http://calendar.example.com", "scopes": ["calendar.read"]}),
            "audience",
        ),
        (
            json!({"actor": "assistant", "audience": "calendar", "scopes": ["calendar.read"]}),
            "audience",
        ),
        (
            json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar read"]}),
            "scope",
        ),
        (
            json!({"actor": "assistant", "audience": CAL, "scopes": []}),
            "at least one scope",
        ),
        (
            json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar.read"], "max_depth": 0}),
            "max_depth",
        ),
        (
            json!({"actor": "assistant", "audience": CAL, "scopes": "calendar.read"}),
            "",
        ),
        (
            json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar.read"], "colour": "red"}),
            "colour",
        ),
    ] {
        let (status, _, body) = w
            .put(MANAGER, Some("\"1\""), &json!({"rows": [good, bad]}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"], "invalid_input");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("rows[1]: "), "{message}");
        assert!(message.contains(says), "{message} should say {says}");
    }
    for body in [
        json!({}),
        json!({"rows": {}}),
        json!([good]),
        json!({"rows": [], "version": 2}),
    ] {
        let (status, _, answer) = w.put(MANAGER, Some("\"1\""), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
    }
    assert_eq!(w.version().await, 1, "nothing changed");
    w.server.stop().await;
}

#[tokio::test]
async fn explain_agrees_with_the_token_endpoint() {
    // Paths of at most two hops, so that a third is too deep.
    let w = world_with(|s| s.tokens.max_chain_depth = 2).await;
    let id_token = w.sign_in("assistant");

    // Allowed: the row and the evidence, and /token issues exactly the explained scopes.
    let (explained, _) = w
        .agree(
            &id_token,
            "id_token",
            CAL,
            "assistant",
            Some("calendar.read"),
        )
        .await;
    assert_eq!(
        explained["row"],
        json!({"actor": "assistant", "audience": CAL, "scopes": ["calendar.read", "calendar.write"]})
    );
    assert_eq!(
        explained["evidence"],
        json!(["upstream_audience:assistant"])
    );
    assert_eq!(explained["max_depth"], 2);
    let (explained, hand_off) = w
        .agree(
            &id_token,
            "id_token",
            "agent:booking-tool",
            "assistant",
            Some("calendar.read"),
        )
        .await;
    assert_eq!(explained["allowed"], true);
    assert_eq!(
        explained["authority"],
        json!([{"audience": CAL, "scopes": ["calendar.read"]}])
    );
    let hand_off = hand_off.unwrap();

    // No policy row.
    let helper_token = w.sign_in("helper");
    let (explained, _) = w
        .agree(&helper_token, "id_token", MAIL, "helper", None)
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_target"), Some("no_policy"))
    );
    // Scope widening.
    let (explained, _) = w
        .agree(&id_token, "id_token", MAIL, "assistant", Some("mail.write"))
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_scope"), Some("scope_widening"))
    );
    // Unknown audience.
    let (explained, _) = w
        .agree(
            &id_token,
            "id_token",
            "https://unknown.example.com",
            "assistant",
            None,
        )
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_target"), Some("unknown_audience"))
    );
    // A hand-off carrying only the calendar: the mail is outside the parent.
    let (explained, _) = w
        .agree(&hand_off, "access_token", MAIL, "booking-tool", None)
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_target"), Some("outside_parent"))
    );
    // Handing back to an agent already in the chain.
    let (explained, _) = w
        .agree(
            &hand_off,
            "access_token",
            "agent:assistant",
            "booking-tool",
            None,
        )
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_request"), Some("agent_twice"))
    );
    // Within the parent: allowed, on the hand-off as evidence.
    let parent = claims_of(&hand_off)["jti"].as_str().unwrap().to_owned();
    let (explained, _) = w
        .agree(&hand_off, "access_token", CAL, "booking-tool", None)
        .await;
    assert_eq!(explained["evidence"], json!([format!("hand_off:{parent}")]));
    // Two hops is the limit: a second hand-off is allowed, a third hop is too deep.
    let (explained, second) = w
        .agree(
            &hand_off,
            "access_token",
            "agent:helper",
            "booking-tool",
            None,
        )
        .await;
    assert_eq!(explained["allowed"], true, "{explained}");
    let (explained, _) = w
        .agree(&second.unwrap(), "access_token", CAL, "helper", None)
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_request"), Some("too_deep"))
    );
    // A revoked parent: refused like /token refuses it.
    let response = w
        .server
        .http
        .post(w.server.admin_url(&format!("/admin/hops/{parent}/revoke")))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (explained, _) = w
        .agree(&hand_off, "access_token", CAL, "booking-tool", None)
        .await;
    assert_eq!(
        (explained["error"].as_str(), explained["rule"].as_str()),
        (Some("invalid_request"), Some("revoked"))
    );
    w.server.stop().await;
}

#[tokio::test]
async fn explain_follows_a_replaced_policy() {
    let w = world_with(|_| {}).await;
    let id_token = w.sign_in("assistant");
    let body = json!({"agent": "assistant", "subject_token_type": "id_token", "audience": MAIL});
    assert_eq!(w.explain(&body).await.1["allowed"], true);
    let (status, _, _) = w.put(MANAGER, Some("\"1\""), &rows()).await;
    assert_eq!(status, StatusCode::OK);
    let (explained, _) = w
        .agree(&id_token, "id_token", MAIL, "assistant", None)
        .await;
    assert_eq!(explained["rule"], "no_policy");
    // The row's max_depth is the path's bound.
    let (explained, _) = w.agree(&id_token, "id_token", CAL, "assistant", None).await;
    assert_eq!(explained["max_depth"], 2);
    w.server.stop().await;
}

#[tokio::test]
async fn explain_refuses_bad_input_and_unknown_ids() {
    let w = world_with(|_| {}).await;
    let base = json!({"agent": "assistant", "subject_token_type": "id_token", "audience": CAL});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let without_parent =
        json!({"agent": "booking-tool", "subject_token_type": "access_token", "audience": CAL});
    for (body, expected) in [
        (with("agent", json!("ghost")), StatusCode::NOT_FOUND),
        (
            json!({"agent": "booking-tool", "subject_token_type": "access_token", "audience": CAL, "parent_hop": "hop_unknown"}),
            StatusCode::NOT_FOUND,
        ),
        (without_parent, StatusCode::BAD_REQUEST),
        (with("parent_hop", json!("hop_x")), StatusCode::BAD_REQUEST),
        (
            with("subject_token_type", json!("saml2")),
            StatusCode::BAD_REQUEST,
        ),
        (with("audience", json!("calendar")), StatusCode::BAD_REQUEST),
        (with("scope", json!("a\"b")), StatusCode::BAD_REQUEST),
        (with("subject", json!("")), StatusCode::BAD_REQUEST),
        (
            with("agent", json!("calendar-api")),
            StatusCode::BAD_REQUEST,
        ),
        (with("agent", json!("Not An Id")), StatusCode::BAD_REQUEST),
        (with("colour", json!("red")), StatusCode::BAD_REQUEST),
        (json!({"agent": "assistant"}), StatusCode::BAD_REQUEST),
    ] {
        let (status, answer) = w.explain(&body).await;
        assert_eq!(status, expected, "{body}: {answer}");
        let code = if expected == StatusCode::NOT_FOUND {
            "not_found"
        } else {
            "invalid_input"
        };
        assert_eq!(answer["error"], code, "{body}");
    }
    let response = w
        .server
        .http
        .post(w.server.admin_url("/admin/policies/explain"))
        .json(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The short names and the URNs are the same kinds.
    let urn = with(
        "subject_token_type",
        json!("urn:ietf:params:oauth:token-type:id_token"),
    );
    assert_eq!(w.explain(&urn).await.1, w.explain(&base).await.1);
    w.server.stop().await;
}

/// The trap of a hand-off row wider than the delegator's own rows: the assistant may hand
/// calendar.write to the booking tool by its hand-off row, but holds only calendar.read for the
/// calendar itself, so the write can never pass. Explain names the row and the cap, and agrees
/// with /token.
#[tokio::test]
async fn explain_names_the_row_and_the_cap_of_a_hand_off_asking_more_than_the_delegator_holds() {
    let w = world_with(|settings| {
        let calendar = settings
            .policies
            .iter_mut()
            .find(|r| r.actor.as_str() == "assistant" && r.audience.to_string() == CAL)
            .unwrap();
        calendar.scopes = mandate_model::ScopeSet::parse("calendar.read").unwrap();
    })
    .await;
    let grant = w.sign_in("assistant");
    let (explained, _) = w
        .agree(
            &grant,
            "id_token",
            "agent:booking-tool",
            "assistant",
            Some("calendar.write"),
        )
        .await;
    assert_eq!(explained["allowed"], false, "{explained}");
    assert_eq!(explained["error"], "invalid_scope");
    assert_eq!(explained["rule"], "scope_widening");
    assert_eq!(
        explained["row"],
        json!({"actor": "assistant", "audience": "agent:booking-tool",
               "scopes": ["calendar.read", "calendar.write", "mail.read"]}),
        "{explained}"
    );
    let mut cap = explained["hand_off_cap"].as_array().unwrap().clone();
    cap.sort_by_key(|p| p["audience"].as_str().unwrap().to_owned());
    assert_eq!(
        json!(cap),
        json!([
            {"audience": CAL, "scopes": ["calendar.read"]},
            {"audience": MAIL, "scopes": ["mail.read"]},
        ]),
        "{explained}"
    );
    assert!(
        explained["hint"]
            .as_str()
            .unwrap()
            .contains("assistant may get itself"),
        "{explained}"
    );
    // What the cap allows passes, and a refusal for another reason carries no cap.
    let (allowed, _) = w
        .agree(
            &grant,
            "id_token",
            "agent:booking-tool",
            "assistant",
            Some("calendar.read"),
        )
        .await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let (other, _) = w
        .agree(&grant, "id_token", "agent:helper", "assistant", None)
        .await;
    assert_eq!(other["rule"], "no_policy", "{other}");
    assert!(other.get("hand_off_cap").is_none(), "{other}");
    w.server.stop().await;
}
