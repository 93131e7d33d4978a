//! `/admin/ledger…` over real HTTP (memory store): every issued hop and every audit event is a
//! journal entry in one hash-linked order; entries page by cursor and filter by chain, subject
//! and time; the export streams the export format (verified here offline, as an auditor would)
//! or OCSF; the online verification is clean, and uses a signed checkpoint once one is made.

use mandate_journal::{verify_export, CheckpointKeys, Entry, ExportLine, GENESIS};
use mandate_testkit::{
    body_json, claims_of, delegation_exchange, delegation_issue, id_token_claims, KeyKind, TestKey,
    TestServer, ADMIN_OPS as OPS, ADMIN_READER as READER, CAL, CORP, MAIL,
};
use mandate_token::{Algorithm, VerifyingKeySet};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn get(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = server.admin_get(path, Some(READER)).await.unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

async fn text(server: &TestServer, path: &str) -> (StatusCode, Option<String>, String) {
    let response = server.admin_get(path, Some(READER)).await.unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, kind, response.text().await.unwrap())
}

/// Two chains (alice's at CAL, bob's at MAIL), a refusal, and a revoked hop.
async fn busy_server(
    change: impl FnOnce(&mut mandate_server::Settings),
) -> (TestServer, TestKey, String) {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = mandate_testkit::delegation_settings(&corp);
    change(&mut settings);
    let server = TestServer::spawn(settings).await.unwrap();
    let alice = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let bob = corp
        .sign(None, &id_token_claims(CORP, "bob", "assistant"))
        .unwrap();
    let token = delegation_issue(&server, &alice, "id_token", CAL, "assistant")
        .await
        .unwrap();
    delegation_issue(&server, &bob, "id_token", MAIL, "assistant")
        .await
        .unwrap();
    let (status, _) = delegation_exchange(
        &server,
        &alice,
        "id_token",
        "https://nowhere.example",
        "assistant",
    )
    .await
    .unwrap();
    assert_ne!(status, StatusCode::OK);
    let jti = claims_of(&token)["jti"].as_str().unwrap().to_owned();
    let revoked = server
        .http
        .post(server.admin_url(&format!("/admin/hops/{jti}/revoke")))
        .bearer_auth(OPS)
        .json(&json!({"reason": "incident 7"}))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    (server, corp, jti)
}

async fn all_entries(server: &TestServer, query: &str, limit: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/admin/ledger/entries?limit={limit}&cursor={c}{query}"),
            None => format!("/admin/ledger/entries?limit={limit}{query}"),
        };
        let (status, page) = get(server, &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {page}");
        let got: Vec<Entry> = serde_json::from_value(page["entries"].clone()).unwrap();
        assert!(got.len() <= limit);
        entries.extend(got);
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
    panic!("the pages never ended");
}

#[tokio::test]
async fn hops_and_audit_events_are_entries_of_one_linked_order() {
    let (server, _corp, jti) = busy_server(|_| {}).await;
    let (status, summary) = get(&server, "/admin/ledger").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["pending"], 0, "the memory journal seals on append");
    assert_eq!(summary["base"]["seq"], 0);

    let entries = all_entries(&server, "", 2).await;
    assert_eq!(
        entries.len() as u64,
        summary["head"]["seq"].as_u64().unwrap()
    );
    assert_eq!(entries[0].prev, GENESIS);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
        assert_eq!(
            pair[1].prev, pair[0].hash,
            "each entry commits to the one before"
        );
    }
    assert!(entries.iter().all(Entry::hash_matches));
    let hops: Vec<&Entry> = entries.iter().filter(|e| e.kind == "hop").collect();
    assert_eq!(hops.len(), 2, "one entry per issued token");
    let alice = hops
        .iter()
        .find(|e| e.record["id"] == jti.as_str())
        .unwrap();
    assert_eq!(alice.record["subject"], "corp|alice");
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e.kind == "audit")
        .map(|e| e.record["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"exchange.refused"), "{actions:?}");
    assert!(actions.contains(&"revoke.hop"), "{actions:?}");
    // No entry holds a token.
    let journal = serde_json::to_string(&entries).unwrap();
    assert!(!journal.contains("eyJ"), "a JWT in the journal");

    // Filters: by chain (its hop, and the revocation of its hop… whose target is the hop id,
    // so only the hop), by subject, by time.
    let chain = alice.record["chain_id"].as_str().unwrap();
    let of_chain = all_entries(&server, &format!("&chain={chain}"), 10).await;
    assert_eq!(
        of_chain.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [alice.seq]
    );
    let of_bob = all_entries(&server, "&subject=corp%7Cbob", 10).await;
    assert_eq!(of_bob.len(), 1);
    assert_eq!(of_bob[0].record["subject"], "corp|bob");
    let future = all_entries(&server, "&since=2999-01-01T00:00:00Z", 10).await;
    assert!(future.is_empty());
    let past = all_entries(&server, "&until=2000-01-01T00:00:00Z", 10).await;
    assert!(past.is_empty());
    let all = all_entries(
        &server,
        "&since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z",
        3,
    )
    .await;
    assert_eq!(all, entries);
    server.stop().await;
}

#[tokio::test]
async fn the_export_verifies_offline_and_maps_to_ocsf() {
    let (server, _corp, _) = busy_server(|s| s.journal.checkpoint_interval_secs = 1).await;
    // A checkpoint is signed within a second or two of the head moving.
    let mut checkpointed = false;
    for _ in 0..50 {
        let (_, summary) = get(&server, "/admin/ledger").await;
        if summary["latest_checkpoint"]["seq"] == summary["head"]["seq"] {
            checkpointed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(checkpointed, "no checkpoint of the head was made");

    let (status, kind, body) = text(&server, "/admin/ledger/export").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(kind.as_deref(), Some("application/x-ndjson"));
    let lines: Vec<ExportLine> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(matches!(lines.first(), Some(ExportLine::Header { .. })));
    assert!(matches!(lines.last(), Some(ExportLine::End { .. })));
    assert!(lines
        .iter()
        .any(|l| matches!(l, ExportLine::Checkpoint { .. })));

    let metadata = server
        .get_json("/.well-known/oauth-authorization-server")
        .await
        .unwrap();
    let jwks: Value = server
        .http
        .get(metadata["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = VerifyingKeySet::from_jwks(&jwks, &Algorithm::ALL).unwrap();
    let verify = |body: &str| {
        verify_export(
            body.lines().map(|l| Ok(l.to_owned())),
            Some(CheckpointKeys {
                keys: &keys,
                algorithms: &Algorithm::ALL,
            }),
        )
        .unwrap()
    };
    let report = verify(&body);
    assert!(report.is_clean(), "{report:?}");
    assert!(report.checkpoints_verified >= 1 && report.report.checkpoints_checked >= 1);
    // The same file with one record changed is not clean, and says which entry.
    let tampered = body.replacen("corp|alice", "corp|mallory", 1);
    let report = verify(&tampered);
    assert!(!report.is_clean());
    assert!(matches!(
        report.report.findings[0],
        mandate_journal::Finding::Altered { .. }
    ));

    // Online, the server finds the store clean and checks the same checkpoints.
    let (status, online) = get(&server, "/admin/ledger/verify").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(online["clean"], true, "{online}");
    assert!(online["checkpoints_verified"].as_u64().unwrap() >= 1);

    let (status, _, ocsf) = text(
        &server,
        "/admin/ledger/export?format=ocsf&subject=corp%7Calice",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events: Vec<Value> = ocsf
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "alice's one hop");
    assert_eq!(events[0]["class_uid"], 3003);
    assert_eq!(events[0]["user"]["uid"], "corp|alice");
    assert_eq!(
        events[0]["unmapped"]["delegation"]["actor_chain"],
        json!(["assistant"])
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_ledger_queries_are_refused_precisely() {
    let (server, _corp, _) = busy_server(|_| {}).await;
    for path in [
        "/admin/ledger/entries?limit=0",
        "/admin/ledger/entries?limit=1001",
        "/admin/ledger/entries?cursor=abc",
        "/admin/ledger/entries?since=yesterday",
        "/admin/ledger/entries?since=2030-01-01T00:00:00Z&until=2020-01-01T00:00:00Z",
        "/admin/ledger/entries?chain=",
        "/admin/ledger/entries?format=ocsf",
        "/admin/ledger/entries?colour=red",
        "/admin/ledger/export?format=xml",
        "/admin/ledger/export?limit=5",
        "/admin/ledger/checkpoints?cursor=-1",
        "/admin/ledger/checkpoints?chain=c",
    ] {
        let (status, body) = get(&server, path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_input")),
            "{path}: {body}"
        );
    }
    let response = server
        .admin_get("/admin/ledger/export", None)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The public listener has no ledger.
    let public = server
        .http
        .get(server.url("/admin/ledger/export"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    server.stop().await;
}

/// Exchanges alice's sign-in for CAL with `traceparent` headers; the response.
async fn traced_exchange(
    server: &TestServer,
    corp: &TestKey,
    traceparents: &[&str],
) -> reqwest::Response {
    let alice = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let form = mandate_testkit::exchange_form(&alice, "id_token", CAL, &[]);
    let mut request = server.http.post(server.url("/token")).form(&form);
    if let mandate_testkit::ClientAuth::Basic(id, secret) =
        mandate_testkit::delegation_auth("assistant")
    {
        request = request.basic_auth(id, Some(secret));
    }
    for value in traceparents {
        request = request.header("traceparent", *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_traceparent_comes_back_and_is_recorded_with_the_hop_and_its_request_id() {
    let (server, corp, _) = busy_server(|_| {}).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = traced_exchange(&server, &corp, &[traceparent]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["traceparent"], traceparent);
    let jti = claims_of(body_json(response).await["access_token"].as_str().unwrap())["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries = all_entries(&server, "", 100).await;
    let hop = entries
        .iter()
        .find(|e| e.record["id"] == jti.as_str())
        .unwrap();
    assert_eq!(hop.record["request"]["traceparent"], traceparent);
    let request_id = hop.record["request"]["id"].as_str().unwrap();
    assert!(request_id.len() >= 16, "a request id: {request_id:?}");
    // OCSF carries the trace id as the correlation id.
    let (_, _, ocsf) = text(&server, "/admin/ledger/export?format=ocsf").await;
    assert!(ocsf.lines().any(|l| {
        let event: Value = serde_json::from_str(l).unwrap();
        event["metadata"]["correlation_uid"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    }));

    // A malformed one, or two, is neither echoed nor recorded; the request id still is.
    for sent in [
        &["00-zz-00f067aa0ba902b7-01"][..],
        &[traceparent, traceparent][..],
    ] {
        let response = traced_exchange(&server, &corp, sent).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("traceparent").is_none(), "{sent:?}");
        let jti = claims_of(body_json(response).await["access_token"].as_str().unwrap())["jti"]
            .as_str()
            .unwrap()
            .to_owned();
        let entries = all_entries(&server, "", 100).await;
        let hop = entries
            .iter()
            .find(|e| e.record["id"] == jti.as_str())
            .unwrap();
        assert!(hop.record["request"].get("traceparent").is_none());
        assert!(!hop.record["request"]["id"].as_str().unwrap().is_empty());
    }
    // A refusal hands it back too.
    let alice = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let form = mandate_testkit::exchange_form(&alice, "id_token", "https://nowhere.example", &[]);
    let refused = server
        .http
        .post(server.url("/token"))
        .form(&form)
        .basic_auth(
            "assistant",
            Some(match mandate_testkit::delegation_auth("assistant") {
                mandate_testkit::ClientAuth::Basic(_, secret) => secret,
                _ => unreachable!(),
            }),
        )
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(refused.headers()["traceparent"], traceparent);
    server.stop().await;
}
