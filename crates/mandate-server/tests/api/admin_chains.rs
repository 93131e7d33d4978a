//! `GET /admin/chains` and `GET /admin/agents/{id}/chains` over real HTTP (memory store): newest
//! first, every filter, paging by cursor without gaps or repeats, and the errors.

use std::collections::HashSet;
use std::sync::Arc;

use mandate_model::{Clock, FixedClock};
use mandate_server::BuildOptions;
use mandate_testkit::{
    body_json, claims_of, delegation_issue, id_token_claims, now, KeyKind, TestKey, TestServer,
    ADMIN_OPS as OPS, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

struct World {
    server: TestServer,
    corp: TestKey,
    clock: Arc<FixedClock>,
}

async fn world() -> World {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let clock = Arc::new(FixedClock::at(now()));
    let server = TestServer::spawn_with(
        mandate_testkit::delegation_settings(&corp),
        BuildOptions {
            clock: Some(clock.clone()),
            ..BuildOptions::default()
        },
    )
    .await
    .unwrap();
    World {
        server,
        corp,
        clock,
    }
}

impl World {
    /// An ID token of `user` issued to the assistant now: a new upstream grant, a new chain.
    fn sign_in(&self, user: &str) -> String {
        let mut claims = id_token_claims(CORP, user, "assistant");
        claims["iat"] = json!(self.clock.now_secs());
        claims["exp"] = json!(self.clock.now_secs() + 3000);
        self.corp.sign(None, &claims).unwrap()
    }

    /// A new chain of `user`: the assistant's token for `audience`, one second after the last.
    async fn chain(&self, user: &str, audience: &str) -> (String, String) {
        self.clock.advance(1);
        let token = delegation_issue(
            &self.server,
            &self.sign_in(user),
            "id_token",
            audience,
            "assistant",
        )
        .await
        .unwrap();
        let chain = claims_of(&token)["chain_id"].as_str().unwrap().to_owned();
        (chain, token)
    }

    async fn get(&self, path: &str, secret: Option<&str>) -> (StatusCode, Value) {
        let response = self.server.admin_get(path, secret).await.unwrap();
        let status = response.status();
        (status, body_json(response).await)
    }

    /// The chain ids of one listing (asserting success).
    async fn ids(&self, path: &str) -> Vec<String> {
        let (status, body) = self.get(path, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        chain_ids(&body)
    }
}

fn chain_ids(body: &Value) -> Vec<String> {
    body["chains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["chain_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn chains_come_newest_first_and_the_cursor_walks_them_all_once() {
    let w = world().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(w.chain("alice", CAL).await.0);
    }
    created.reverse();

    let mut seen = Vec::new();
    let mut path = "/admin/chains?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = w.get(&path, Some(READER)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let ids = chain_ids(&body);
        assert!(ids.len() <= 3);
        seen.extend(ids);
        pages += 1;
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/admin/chains?limit=3&cursor={cursor}"),
            None => break,
        }
        assert!(pages < 10, "the cursor does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created, "newest first, nothing missed, nothing twice");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    // The summary of the newest chain.
    let (_, body) = w.get("/admin/chains?limit=1", Some(READER)).await;
    let summary = &body["chains"][0];
    assert_eq!(summary["chain_id"], created[0].as_str());
    assert_eq!(summary["subject"], "corp|alice");
    assert_eq!(summary["root_client_id"], "assistant");
    assert_eq!(summary["agents"], json!(["assistant"]));
    assert_eq!(summary["audiences"], json!([CAL]));
    assert_eq!(summary["hops"], 1);
    assert_eq!(summary["status"], "live");
    let started = chrono::DateTime::parse_from_rfc3339(summary["started_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(started, w.clock.now_secs());
    assert!(body["next_cursor"].is_string());
    w.server.stop().await;
}

#[tokio::test]
async fn every_filter_narrows_the_listing() {
    let w = world().await;
    let (early, _) = w.chain("alice", CAL).await;
    let early_at = w.clock.now_secs();
    // Expired: the clock moves past the early chain's lifetime (300 s).
    w.clock.advance(400);
    let (mail, _) = w.chain("bob", MAIL).await;
    let (handed, hand_off) = w.chain("alice", "agent:booking-tool").await;
    delegation_issue(&w.server, &hand_off, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
    let (revoked, _) = w.chain("carol", CAL).await;
    let response = w
        .server
        .http
        .post(
            w.server
                .admin_url(&format!("/admin/chains/{revoked}/revoke")),
        )
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let late_at = w.clock.now_secs();

    assert_eq!(
        w.ids("/admin/chains").await,
        [
            revoked.as_str(),
            handed.as_str(),
            mail.as_str(),
            early.as_str()
        ]
    );
    assert_eq!(
        w.ids("/admin/chains?subject=corp%7Calice").await,
        [handed.as_str(), early.as_str()]
    );
    assert_eq!(
        w.ids("/admin/chains?agent=booking-tool").await,
        [handed.as_str()]
    );
    assert_eq!(
        w.ids(&format!("/admin/chains?audience={MAIL}")).await,
        [mail.as_str()]
    );
    // The audience of any hop counts, not only the root's.
    assert_eq!(
        w.ids(&format!(
            "/admin/chains?audience={CAL}&subject=corp%7Calice"
        ))
        .await,
        [handed.as_str(), early.as_str()]
    );
    assert_eq!(
        w.ids("/admin/chains?status=expired").await,
        [early.as_str()]
    );
    assert_eq!(
        w.ids("/admin/chains?status=revoked").await,
        [revoked.as_str()]
    );
    assert_eq!(
        w.ids("/admin/chains?status=live").await,
        [handed.as_str(), mail.as_str()]
    );
    let instant = |secs: i64| {
        chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    assert_eq!(
        w.ids(&format!("/admin/chains?until={}", instant(early_at)))
            .await,
        [early.as_str()]
    );
    assert_eq!(
        w.ids(&format!("/admin/chains?since={}", instant(late_at)))
            .await,
        [revoked.as_str()]
    );
    assert_eq!(
        w.ids(&format!(
            "/admin/chains?since={}&until={}&agent=assistant",
            instant(early_at + 1),
            instant(late_at - 1)
        ))
        .await,
        [handed.as_str(), mail.as_str()]
    );
    // The summary of the hand-off chain names both agents and both audiences.
    let (_, body) = w
        .get("/admin/chains?agent=booking-tool", Some(READER))
        .await;
    let summary = &body["chains"][0];
    assert_eq!(summary["agents"], json!(["assistant", "booking-tool"]));
    assert_eq!(summary["audiences"], json!(["agent:booking-tool", CAL]));
    assert_eq!(summary["hops"], 2);
    // A filter that matches nothing: an empty page, no cursor.
    let (status, body) = w
        .get("/admin/chains?subject=corp%7Cnobody", Some(READER))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"chains": [], "next_cursor": null}));
    w.server.stop().await;
}

#[tokio::test]
async fn paging_holds_under_a_filter() {
    let w = world().await;
    let mut alice = Vec::new();
    for i in 0..5 {
        alice.push(w.chain("alice", CAL).await.0);
        if i % 2 == 0 {
            w.chain("bob", CAL).await;
        }
    }
    alice.reverse();
    let mut seen = Vec::new();
    let mut path = "/admin/chains?subject=corp%7Calice&limit=2".to_owned();
    for _ in 0..5 {
        let (status, body) = w.get(&path, Some(READER)).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(chain_ids(&body));
        match body["next_cursor"].as_str() {
            Some(cursor) => {
                path = format!("/admin/chains?subject=corp%7Calice&limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, alice);
    w.server.stop().await;
}

#[tokio::test]
async fn an_agents_chains_are_the_agent_filter() {
    let w = world().await;
    w.chain("alice", CAL).await;
    let (handed, hand_off) = w.chain("alice", "agent:booking-tool").await;
    delegation_issue(&w.server, &hand_off, "access_token", CAL, "booking-tool")
        .await
        .unwrap();
    for agent in ["booking-tool", "assistant", "helper"] {
        let (status, by_path) = w
            .get(&format!("/admin/agents/{agent}/chains"), Some(READER))
            .await;
        assert_eq!(status, StatusCode::OK, "{by_path}");
        let (_, by_query) = w
            .get(&format!("/admin/chains?agent={agent}"), Some(READER))
            .await;
        assert_eq!(by_path, by_query, "{agent}");
    }
    assert_eq!(
        w.ids("/admin/agents/booking-tool/chains").await,
        [handed.as_str()]
    );
    assert!(w.ids("/admin/agents/helper/chains").await.is_empty());
    // Paging and other filters apply there too.
    assert_eq!(
        w.ids("/admin/agents/assistant/chains?limit=1").await,
        [handed.as_str()]
    );
    let (status, body) = w.get("/admin/agents/nobody/chains", Some(READER)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _) = w.get("/admin/agents/Bad%20Id/chains", Some(READER)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = w
        .get("/admin/agents/assistant/chains?agent=helper", Some(READER))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = w.get("/admin/agents/assistant/chains", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    w.server.stop().await;
}

#[tokio::test]
async fn listing_needs_a_reader_and_refuses_bad_queries() {
    let w = world().await;
    w.chain("alice", CAL).await;
    let (status, body) = w.get("/admin/chains", None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (status, _) = w.get("/admin/chains", Some("not-a-credential")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for secret in [READER, OPS] {
        let (status, _) = w.get("/admin/chains", Some(secret)).await;
        assert_eq!(status, StatusCode::OK);
    }
    for query in [
        "limit=0",
        "limit=501",
        "limit=ten",
        "status=dead",
        "since=yesterday",
        "until=2026-13-01T00:00:00Z",
        "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "subject=",
        "agent=Not%20An%20Id",
        "audience=http%3A%2F%2Fcalendar.example.com",
        "cursor=zz",
        "cursor=31323334",
        "colour=blue",
    ] {
        let (status, body) = w.get(&format!("/admin/chains?{query}"), Some(READER)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"], "invalid_input", "{query}");
    }
    // 500 is the largest page.
    let (status, _) = w.get("/admin/chains?limit=500", Some(READER)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = w.get("/admin/chains/chn_unknown", Some(READER)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    w.server.stop().await;
}

/// `GET /admin/subjects/{sub}/authority` over HTTP: the assistant's calendar token and its
/// hand-off to the booking tool (which reaches the calendar and mail through its own rows), a
/// stored consent; a revoked subject holds no live hop any more; readers may look, a malformed
/// subject is 400.
#[tokio::test]
async fn a_users_standing_authority_follows_exchanges_and_revocations() {
    let w = world().await;
    w.chain("alice", CAL).await;
    let (_, hand_off) = w.chain("alice", "agent:booking-tool").await;
    w.chain("bob", MAIL).await;
    let path = "/admin/subjects/corp%7Calice/authority";
    let (status, body) = w.get(path, Some(READER)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["subject"], "corp|alice");
    let agents: Vec<&str> = body["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["assistant", "booking-tool"], "{body}");
    assert_eq!(
        body["agents"][1]["live_hops"][0]["hop"],
        claims_of(&hand_off)["jti"]
    );
    let reach = |body: &Value, app: &str| -> Vec<(String, String)> {
        body["apps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["audience"] == app)
            .flat_map(|a| a["access"].as_array().unwrap().clone())
            .map(|a| {
                (
                    a["client_id"].as_str().unwrap().to_owned(),
                    a["via"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        reach(&body, CAL),
        [
            ("assistant".to_owned(), "token".to_owned()),
            ("booking-tool".to_owned(), "hand_off".to_owned())
        ]
    );
    assert_eq!(
        reach(&body, MAIL),
        [("booking-tool".to_owned(), "hand_off".to_owned())],
        "{body}"
    );
    // Bob's mail token is not alice's authority.
    assert!(!body.to_string().contains("corp|bob"));

    let revoked = w
        .server
        .http
        .post(w.server.admin_url("/admin/subjects/corp%7Calice/revoke"))
        .bearer_auth(OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let (_, after) = w.get(path, Some(READER)).await;
    assert_eq!(after["agents"], json!([]), "{after}");
    assert_eq!(after["apps"], json!([]));

    assert_eq!(w.get(path, None).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = w
        .get("/admin/subjects/corp%7C/authority", Some(READER))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
