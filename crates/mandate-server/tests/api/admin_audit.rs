//! The audit stream over real HTTP (memory store): every refused exchange, ID-JAG issuance and
//! ID-JAG redemption is appended with its client, target and `<code>: <reason>`, never a
//! token; `GET /admin/audit` filters by action and actor; the stream is capped.

use mandate_server::config::Acceptance;
use mandate_server::Settings;
use mandate_testkit::{
    body_json, delegation_auth, delegation_exchange, exchange_form, id_token_claims, KeyKind,
    TestKey, TestServer, ADMIN_OPS as OPS, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct World {
    server: TestServer,
    corp: TestKey,
}

async fn world_with(change: impl FnOnce(&mut Settings)) -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = mandate_testkit::delegation_settings(&corp);
    change(&mut settings);
    World {
        server: TestServer::spawn(settings).await.unwrap(),
        corp,
    }
}

impl World {
    fn sign_in(&self, agent: &str) -> String {
        self.corp
            .sign(None, &id_token_claims(CORP, "alice", agent))
            .unwrap()
    }

    /// An exchange with extra form parameters; the status and body.
    async fn exchange(
        &self,
        token: &str,
        audience: &str,
        agent: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let form = exchange_form(token, "id_token", audience, extra);
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = self
            .server
            .token(&pairs, &delegation_auth(agent))
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    async fn audit(&self, query: &str, secret: Option<&str>) -> (StatusCode, Value) {
        let response = self
            .server
            .admin_get(&format!("/admin/audit{query}"), secret)
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    async fn events(&self, query: &str) -> Vec<Value> {
        let (status, body) = self.audit(query, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{query}: {body}");
        body["events"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn refused_exchanges_are_audited_with_their_code_and_never_a_token() {
    let w = world_with(|_| {}).await;
    let token = w.sign_in("assistant");
    // Allowed: nothing is appended.
    let (status, _) = w.exchange(&token, CAL, "assistant", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(w.events("?action=exchange.refused").await.is_empty());

    // Scope beyond the row.
    let (status, body) = w
        .exchange(&token, MAIL, "assistant", &[("scope", "mail.write")])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // No row for the helper at mail (its own sign-in).
    let helper_token = w.sign_in("helper");
    let (status, body) = w.exchange(&helper_token, MAIL, "helper", &[]).await;
    assert_eq!(body["error"], "invalid_target", "{status}");
    // A token presented by someone it does not name.
    let (status, body) = w.exchange(&token, CAL, "booking-tool", &[]).await;
    assert_eq!(body["error"], "invalid_request", "{status}");

    let events = w.events("?action=exchange.refused").await;
    assert_eq!(events.len(), 3, "{events:?}");
    let summary: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["detail"].as_str().unwrap().split(':').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("client:booking-tool", CAL, "invalid_request"),
            ("client:helper", MAIL, "invalid_target"),
            ("client:assistant", MAIL, "invalid_scope"),
        ],
        "newest first"
    );
    assert_eq!(
        events[2]["detail"],
        "invalid_scope: the requested scope exceeds the authority available"
    );
    assert!(events.iter().all(|e| e["at"].as_i64().unwrap() > 0));
    let (_, all) = w.audit("", Some(READER)).await;
    let text = all.to_string();
    for secret in [&token, &helper_token] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!text.contains(signature), "a token in the audit stream");
    }
    w.server.stop().await;
}

#[tokio::test]
async fn refused_id_jag_issuance_and_redemption_are_audited() {
    // corp is trusted for ID-JAGs, so the jwt-bearer grant is served; no resource AS is
    // configured, so issuance is refused.
    let w = world_with(|s| s.trusted_issuers[0].accept.push(Acceptance::IdJag)).await;
    let token = w.sign_in("assistant");
    let (status, body) = w
        .exchange(
            &token,
            "https://as.example.com",
            "assistant",
            &[(
                "requested_token_type",
                "urn:ietf:params:oauth:token-type:id-jag",
            )],
        )
        .await;
    assert_eq!(body["error"], "invalid_request", "{status} {body}");
    let response = w
        .server
        .token(
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", "not.a.jwt"),
                ("resource", CAL),
            ],
            &delegation_auth("assistant"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_grant");

    let issued = w.events("?action=id_jag_issue.refused").await;
    assert_eq!(issued.len(), 1, "{issued:?}");
    assert_eq!(issued[0]["actor"], "client:assistant");
    assert_eq!(issued[0]["target"], "https://as.example.com");
    assert!(issued[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("invalid_request: "));
    let redeemed = w.events("?action=id_jag_redeem.refused").await;
    assert_eq!(redeemed.len(), 1, "{redeemed:?}");
    assert_eq!(redeemed[0]["target"], CAL);
    assert!(redeemed[0]["detail"]
        .as_str()
        .unwrap()
        .starts_with("invalid_grant: "));
    // The ID-JAG request went through the exchange, which audits it once, as issuance.
    assert!(w.events("?action=exchange.refused").await.is_empty());
    w.server.stop().await;
}

#[tokio::test]
async fn the_audit_stream_filters_by_action_and_actor_and_limits() {
    let w = world_with(|_| {}).await;
    let token = w.sign_in("assistant");
    for _ in 0..3 {
        w.exchange(&token, MAIL, "assistant", &[("scope", "mail.write")])
            .await;
    }
    let helper_token = w.sign_in("helper");
    w.exchange(&helper_token, MAIL, "helper", &[]).await;
    // An admin action, with the credential's name.
    let chain = delegation_exchange(&w.server, &token, "id_token", CAL, "assistant")
        .await
        .unwrap()
        .1["access_token"]
        .as_str()
        .map(|t| {
            mandate_testkit::claims_of(t)["chain_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .unwrap();
    let response = w
        .server
        .http
        .post(w.server.admin_url(&format!("/admin/chains/{chain}/revoke")))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let helper = w.events("?actor=client%3Ahelper").await;
    assert_eq!(helper.len(), 1);
    assert_eq!(helper[0]["target"], MAIL);
    assert_eq!(w.events("?actor=client%3Aassistant").await.len(), 3);
    assert_eq!(
        w.events("?actor=client%3Aassistant&action=exchange.refused&limit=2")
            .await
            .len(),
        2
    );
    // Exact matches only.
    assert!(w.events("?action=exchange").await.is_empty());
    let admin = w.events("?actor=ops-oncall").await;
    assert_eq!(admin.len(), 1);
    assert_eq!(admin[0]["action"], "revoke.chain");
    assert_eq!(admin[0]["target"], chain.as_str());
    let newest = w.events("?limit=1").await;
    assert_eq!(newest, admin);
    assert_eq!(w.events("").await.len(), 5);
    w.server.stop().await;
}

#[tokio::test]
async fn the_audit_stream_keeps_only_the_newest_events_up_to_its_cap() {
    let w = world_with(|s| s.limits.audit_stream_max = 3).await;
    let token = w.sign_in("assistant");
    // Five refusals, told apart by their target (unknown apps).
    let targets: Vec<String> = (1..=5)
        .map(|n| format!("https://app{n}.example.com"))
        .collect();
    for target in &targets {
        let (_, body) = w.exchange(&token, target, "assistant", &[]).await;
        assert_eq!(body["error"], "invalid_target");
    }
    let kept: Vec<Value> = w
        .events("?limit=1000")
        .await
        .iter()
        .map(|e| e["target"].clone())
        .collect();
    assert_eq!(
        kept,
        [json!(targets[4]), json!(targets[3]), json!(targets[2])],
        "the newest three, newest first"
    );
    w.server.stop().await;
}

#[tokio::test]
async fn reading_the_audit_stream_needs_a_credential_and_a_valid_query() {
    let w = world_with(|_| {}).await;
    let (status, body) = w.audit("", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, _) = w.audit("", Some("wrong-secret")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for secret in [READER, OPS] {
        let (status, _) = w.audit("", Some(secret)).await;
        assert_eq!(status, StatusCode::OK);
    }
    for query in [
        "?limit=0",
        "?limit=1001",
        "?limit=-1",
        "?limit=many",
        "?actor=",
        "?action=",
        "?client=assistant",
    ] {
        let (status, body) = w.audit(query, Some(READER)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "invalid_input");
    }
    let (status, _) = w.audit("?limit=1000", Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    w.server.stop().await;
}
