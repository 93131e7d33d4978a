//! mandate as a Shared Signals transmitter over real HTTP (memory store): the metadata, stream
//! management by resource servers (each its own streams only), and revocations reaching poll and
//! push receivers as SETs about exactly the tokens of their audiences.
//!
//! The chain of `revocation::tree`: R assistant → agent:booking-tool; M booking-tool →
//! agent:helper; L helper → calendar (child of M); S booking-tool → mail (sibling of M).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use mandate_testkit::{claims_of, ADMIN_OPS as OPS, CAL, MAIL};
use mandate_token::{Algorithm, UnverifiedJws, VerifyingKeySet};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::revocation::{admin_post, tree, world, World};

const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

/// A stream-management call as resource server `client` (HTTP Basic with its secret).
async fn call(
    w: &World,
    method: reqwest::Method,
    path: &str,
    client: (&str, &str),
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = w
        .server
        .http
        .request(method, w.server.url(path))
        .basic_auth(client.0, Some(client.1));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const CALENDAR: (&str, &str) = ("calendar-api", "calendar-secret");
const MAILER: (&str, &str) = ("mail-api", "mail-secret");

async fn poll_stream(w: &World, client: (&str, &str)) -> String {
    let (status, body) = call(
        w,
        reqwest::Method::POST,
        "/ssf/streams",
        client,
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [SESSION_REVOKED]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["stream_id"].as_str().unwrap().to_owned()
}

async fn poll(
    w: &World,
    client: (&str, &str),
    stream: &str,
    ack: &[String],
) -> Vec<(String, String)> {
    let (status, body) = call(
        w,
        reqwest::Method::POST,
        &format!("/ssf/poll/{stream}"),
        client,
        Some(json!({"returnImmediately": true, "ack": ack})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(jti, set)| (jti.clone(), set.as_str().unwrap().to_owned()))
        .collect()
}

/// The SET's claims, verified against mandate's published JWKS, with the SSF profile's checks.
async fn verified(w: &World, set: &str) -> Value {
    let jwks = w.server.get_json("/jwks").await.unwrap();
    let keys = VerifyingKeySet::from_jwks(&jwks, &Algorithm::ALL).unwrap();
    let jws = UnverifiedJws::parse(set).unwrap();
    assert!(jws.header().typ_is("secevent+jwt"));
    let claims: Value = jws
        .verify(&keys, &Algorithm::ALL)
        .unwrap()
        .claims()
        .unwrap();
    assert_eq!(claims["iss"], w.server.issuer());
    assert!(
        claims.get("sub").is_none() && claims.get("exp").is_none(),
        "{claims}"
    );
    assert!(
        claims["iat"].is_i64() && claims["jti"].is_string(),
        "{claims}"
    );
    assert!(
        claims["events"][SESSION_REVOKED]["event_timestamp"].is_i64(),
        "{claims}"
    );
    claims
}

fn jti(token: &str) -> String {
    claims_of(token)["jti"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_metadata_names_the_endpoints_and_delivery_methods() {
    let w = world().await;
    let issuer = w.server.issuer().to_owned();
    let meta = w
        .server
        .get_json("/.well-known/ssf-configuration")
        .await
        .unwrap();
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(meta["jwks_uri"], format!("{issuer}/jwks"));
    assert_eq!(
        meta["configuration_endpoint"],
        format!("{issuer}/ssf/streams")
    );
    assert_eq!(meta["status_endpoint"], format!("{issuer}/ssf/status"));
    assert_eq!(
        meta["verification_endpoint"],
        format!("{issuer}/ssf/verify")
    );
    assert_eq!(
        meta["delivery_methods_supported"],
        json!(["urn:ietf:rfc:8935", "urn:ietf:rfc:8936"])
    );
}

#[tokio::test]
async fn a_revoked_hop_reaches_only_the_receivers_of_its_subtrees_audiences() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let mail = poll_stream(&w, MAILER).await;
    let (status, body) = admin_post(
        &w.server,
        &format!("/admin/hops/{}/revoke", jti(&t.middle)),
        OPS,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // M's subtree is M (agent:helper, no receiver) and L (the calendar): one SET, naming L.
    let sets = poll(&w, CALENDAR, &calendar, &[]).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let claims = verified(&w, &sets[0].1).await;
    assert_eq!(claims["jti"], sets[0].0);
    assert_eq!(claims["aud"], CAL);
    assert_eq!(
        claims["sub_id"],
        json!({"format": "jwt_id", "iss": w.server.issuer(), "jti": jti(&t.leaf)})
    );
    assert_eq!(
        claims["events"][SESSION_REVOKED]["reason_admin"]["en"],
        "incident 42"
    );
    // Nothing about the calendar's tokens reaches the mail app, nor about S (still live).
    assert!(poll(&w, MAILER, &mail, &[]).await.is_empty());
    // Offered until acknowledged, then gone.
    assert_eq!(poll(&w, CALENDAR, &calendar, &[]).await.len(), 1);
    assert!(poll(&w, CALENDAR, &calendar, &[sets[0].0.clone()])
        .await
        .is_empty());
}

#[tokio::test]
async fn a_revoked_chain_names_the_chain_and_each_receivers_own_tokens() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let mail = poll_stream(&w, MAILER).await;
    let chain = claims_of(&t.root)["chain_id"].as_str().unwrap().to_owned();
    let (status, body) = admin_post(&w.server, &format!("/admin/chains/{chain}/revoke"), OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (client, stream, own, aud) in [
        (CALENDAR, &calendar, &t.leaf, CAL),
        (MAILER, &mail, &t.sibling, MAIL),
    ] {
        let mut subjects = Vec::new();
        for (_, set) in poll(&w, client, stream, &[]).await {
            let claims = verified(&w, &set).await;
            assert_eq!(claims["aud"], aud);
            assert!(claims["txn"].is_string());
            subjects.push(claims["sub_id"].clone());
        }
        assert_eq!(subjects.len(), 2, "{subjects:?}");
        assert!(subjects
            .contains(&json!({"format": "jwt_id", "iss": w.server.issuer(), "jti": jti(own)})));
        assert!(subjects.contains(&json!({
            "format": "complex",
            "session": {"format": "opaque", "id": chain},
            "user": {"format": "iss_sub", "iss": w.server.issuer(), "sub": "corp|alice"},
        })));
    }
}

#[tokio::test]
async fn each_resource_server_manages_its_own_streams_only() {
    let w = world().await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let path = format!("/ssf/streams?stream_id={calendar}");
    let (status, body) = call(&w, reqwest::Method::GET, &path, CALENDAR, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["aud"], CAL);
    assert_eq!(body["events_delivered"], json!([SESSION_REVOKED]));
    assert_eq!(
        body["delivery"]["endpoint_url"],
        format!("{}/ssf/poll/{calendar}", w.server.issuer())
    );
    // Another resource server sees no such stream, and cannot poll, pause or delete it.
    for (method, path, body) in [
        (reqwest::Method::GET, path.clone(), None),
        (reqwest::Method::DELETE, path.clone(), None),
        (
            reqwest::Method::POST,
            format!("/ssf/poll/{calendar}"),
            Some(json!({})),
        ),
        (
            reqwest::Method::POST,
            "/ssf/status".into(),
            Some(json!({"stream_id": calendar, "status": "paused"})),
        ),
    ] {
        let (status, _) = call(&w, method, &path, MAILER, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    assert!(call(&w, reqwest::Method::GET, "/ssf/streams", MAILER, None)
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
    // Agents hold no streams; a wrong secret is not a caller.
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/streams",
        ("helper", "helper-secret"),
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &w,
        reqwest::Method::GET,
        "/ssf/streams",
        ("calendar-api", "wrong"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A push endpoint must pass the fetch policy.
    let (status, body) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/streams",
        CALENDAR,
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "http://calendar.example.com/ssf"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // The owner deletes its stream.
    let (status, _) = call(&w, reqwest::Method::DELETE, &path, CALENDAR, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&w, reqwest::Method::GET, &path, CALENDAR, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_paused_stream_holds_its_events_and_verification_is_queued() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let (status, body) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/status",
        CALENDAR,
        Some(json!({"stream_id": calendar, "status": "paused", "reason": "maintenance"})),
    )
    .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("paused"))
    );
    admin_post(
        &w.server,
        &format!("/admin/hops/{}/revoke", jti(&t.leaf)),
        OPS,
    )
    .await;
    assert!(
        poll(&w, CALENDAR, &calendar, &[]).await.is_empty(),
        "held while paused"
    );
    call(
        &w,
        reqwest::Method::POST,
        "/ssf/status",
        CALENDAR,
        Some(json!({"stream_id": calendar, "status": "enabled"})),
    )
    .await;
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/verify",
        CALENDAR,
        Some(json!({"stream_id": calendar, "state": "abc"})),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let sets = poll(&w, CALENDAR, &calendar, &[]).await;
    assert_eq!(sets.len(), 2, "the held revocation, then the verification");
    let states: Vec<Value> = sets
        .iter()
        .map(|(_, set)| claims_of(set)["events"].clone())
        .collect();
    assert!(states.iter().any(|e| e[SESSION_REVOKED].is_object()));
    assert!(states.iter().any(|e| e
        ["https://schemas.openid.net/secevent/ssf/event-type/verification"]["state"]
        == "abc"));
}

/// A push receiver on a free port: answers 503 to the first `failures` deliveries, then 202;
/// records what it accepted with the Authorization header it came with.
/// The SETs a receiver accepted, each with the Authorization header it came with.
type Accepted = Arc<Mutex<Vec<(Option<String>, String)>>>;

struct Receiver {
    url: String,
    accepted: Accepted,
    _server: actix_web::dev::ServerHandle,
}

async fn receiver(failures: usize) -> Receiver {
    let accepted: Accepted = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (seen, down) = (accepted.clone(), failed.clone());
    let server = HttpServer::new(move || {
        let (seen, down) = (seen.clone(), down.clone());
        App::new().route(
            "/ssf",
            web::post().to(move |request: HttpRequest, body: web::Bytes| {
                let (seen, down) = (seen.clone(), down.clone());
                async move {
                    {
                        let mut down = down.lock().unwrap();
                        if *down < failures {
                            *down += 1;
                            return HttpResponse::ServiceUnavailable().finish();
                        }
                    }
                    assert_eq!(
                        request.headers().get("content-type").unwrap(),
                        "application/secevent+jwt"
                    );
                    let auth = request
                        .headers()
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_owned());
                    seen.lock()
                        .unwrap()
                        .push((auth, String::from_utf8(body.to_vec()).unwrap()));
                    HttpResponse::Accepted().finish()
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Receiver {
        url: format!("http://127.0.0.1:{port}/ssf"),
        accepted,
        _server: handle,
    }
}

#[tokio::test]
async fn a_push_receiver_that_was_down_gets_the_set_when_it_returns() {
    let w = world().await;
    let t = tree(&w).await;
    let push = receiver(2).await;
    let (status, body) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/streams",
        CALENDAR,
        Some(json!({
            "delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": push.url, "authorization_header": "Bearer receiver-token"},
            "events_requested": [SESSION_REVOKED],
        })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body["delivery"].get("authorization_header").is_none(),
        "the receiver's secret is not read back"
    );
    let (status, _) = admin_post(
        &w.server,
        &format!("/admin/hops/{}/revoke", jti(&t.leaf)),
        OPS,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while push.accepted.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no SET arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let accepted = push.accepted.lock().unwrap().clone();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0].0.as_deref(), Some("Bearer receiver-token"));
    let claims = verified(&w, &accepted[0].1).await;
    assert_eq!(claims["sub_id"]["jti"], jti(&t.leaf).as_str());
    // Accepted SETs leave the queue.
    let streams = w.server.state.ssf.all().await.unwrap();
    assert_eq!(streams[0].1.pending, 0);
}

/// Every SET a stream holds: (the subject's format, the jti or id it names).
async fn subjects(w: &World, client: (&str, &str), stream: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for (_, set) in poll(w, client, stream, &[]).await {
        out.push(verified(w, &set).await["sub_id"].clone());
    }
    out
}

#[tokio::test]
async fn a_revoked_user_and_a_suspended_agent_reach_the_receivers_of_their_live_tokens() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let mail = poll_stream(&w, MAILER).await;
    let issuer = w.server.issuer().to_owned();
    let token = |t: &str| json!({"format": "jwt_id", "iss": issuer, "jti": jti(t)});

    // helper acts only in L (the calendar): the mail app hears nothing of its suspension.
    let (status, body) = admin_post(&w.server, "/admin/agents/helper/suspend", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let helper = json!({"format": "complex", "application": {"format": "opaque", "id": "helper"}});
    let got = subjects(&w, CALENDAR, &calendar).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.contains(&helper) && got.contains(&token(&t.leaf)),
        "{got:?}"
    );
    assert!(subjects(&w, MAILER, &mail).await.is_empty());

    // alice's revocation: each receiver is told of her, and of its own live tokens of hers.
    let (status, body) = admin_post(&w.server, "/admin/subjects/corp%7Calice/revoke", OPS).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alice = json!({"format": "iss_sub", "iss": issuer, "sub": "corp|alice"});
    let calendar_sets = subjects(&w, CALENDAR, &calendar).await;
    assert!(calendar_sets.contains(&alice), "{calendar_sets:?}");
    let mail_sets = subjects(&w, MAILER, &mail).await;
    assert_eq!(mail_sets.len(), 2, "{mail_sets:?}");
    assert!(
        mail_sets.contains(&alice) && mail_sets.contains(&token(&t.sibling)),
        "{mail_sets:?}"
    );
}

#[tokio::test]
async fn a_rotated_agent_secret_is_a_credential_change_for_the_apps_it_acts_at() {
    const MANAGE: &str = "manage-secret-0123456789abcdefghijklm";
    let corp = mandate_testkit::TestKey::generate(mandate_testkit::KeyKind::Es256, Some("corp-1"))
        .unwrap();
    let clock = Arc::new(mandate_model::FixedClock::at(mandate_testkit::now()));
    let mut settings = crate::revocation::settings(&corp);
    settings
        .admin
        .credentials
        .push(mandate_server::config::AdminCredentialSettings {
            name: "platform".into(),
            role: mandate_server::config::AdminRole::Manage,
            secret_hash: mandate_model::SecretHash::of(MANAGE),
        });
    let options = mandate_server::BuildOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    };
    let w = World {
        server: mandate_testkit::TestServer::spawn_with(settings, options)
            .await
            .unwrap(),
        corp,
        clock,
    };
    let _t = tree(&w).await;
    const CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
    let mut streams = Vec::new();
    for client in [CALENDAR, MAILER] {
        let (status, body) = call(
            &w,
            reqwest::Method::POST,
            "/ssf/streams",
            client,
            Some(
                json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [CHANGE]}),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        streams.push(body["stream_id"].as_str().unwrap().to_owned());
    }
    let rotated = w
        .server
        .http
        .post(w.server.admin_url("/admin/agents/helper/secret"))
        .bearer_auth(MANAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(rotated.status(), StatusCode::OK);
    // helper acts at the calendar only (L).
    let sets = poll(&w, CALENDAR, &streams[0], &[]).await;
    assert_eq!(sets.len(), 1, "{sets:?}");
    let claims = claims_of(&sets[0].1);
    assert_eq!(
        claims["sub_id"],
        json!({"format": "complex", "application": {"format": "opaque", "id": "helper"}})
    );
    assert_eq!(claims["events"][CHANGE]["change_type"], "update");
    assert_eq!(claims["events"][CHANGE]["credential_type"], "password");
    assert!(poll(&w, MAILER, &streams[1], &[]).await.is_empty());
}

#[tokio::test]
async fn a_removed_subject_is_not_spoken_of_until_added_again() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let alice = json!({"format": "iss_sub", "iss": w.server.issuer(), "sub": "corp|alice"});
    let body = |subject: &Value| Some(json!({"stream_id": calendar, "subject": subject}));
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/subjects:remove",
        CALENDAR,
        body(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    admin_post(
        &w.server,
        &format!("/admin/hops/{}/revoke", jti(&t.middle)),
        OPS,
    )
    .await;
    assert!(poll(&w, CALENDAR, &calendar, &[]).await.is_empty());
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/subjects:add",
        CALENDAR,
        body(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let chain = claims_of(&t.root)["chain_id"].as_str().unwrap().to_owned();
    admin_post(&w.server, &format!("/admin/chains/{chain}/revoke"), OPS).await;
    assert_eq!(poll(&w, CALENDAR, &calendar, &[]).await.len(), 2);
    // Only users named as mandate names them; another stream's owner cannot change this one.
    let foreign = json!({"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "alice"});
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/subjects:remove",
        CALENDAR,
        body(&foreign),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/subjects:remove",
        MAILER,
        body(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_disabled_stream_queues_nothing_and_bad_stream_requests_change_nothing() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let status = |s: &str| Some(json!({"stream_id": calendar, "status": s}));
    call(
        &w,
        reqwest::Method::POST,
        "/ssf/status",
        CALENDAR,
        status("disabled"),
    )
    .await;
    admin_post(
        &w.server,
        &format!("/admin/hops/{}/revoke", jti(&t.leaf)),
        OPS,
    )
    .await;
    call(
        &w,
        reqwest::Method::POST,
        "/ssf/status",
        CALENDAR,
        status("enabled"),
    )
    .await;
    assert!(
        poll(&w, CALENDAR, &calendar, &[]).await.is_empty(),
        "nothing was held"
    );

    // A header that would split the push request, an oversized body, an unknown method: 4xx,
    // and the stream list is as it was.
    let push = |header: &str| {
        Some(
            json!({"delivery": {"method": "urn:ietf:rfc:8935", "endpoint_url": "https://calendar.example.com/ssf",
            "authorization_header": header}}),
        )
    };
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/streams",
        CALENDAR,
        push("Bearer x\r\nX-Injected: 1"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let huge = Some(
        json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "description": "x".repeat(70_000)}),
    );
    let (status, _) = call(&w, reqwest::Method::POST, "/ssf/streams", CALENDAR, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = call(
        &w,
        reqwest::Method::POST,
        "/ssf/streams",
        CALENDAR,
        Some(json!({"delivery": {"method": "urn:example:carrier-pigeon"}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, streams) = call(&w, reqwest::Method::GET, "/ssf/streams", CALENDAR, None).await;
    assert_eq!(streams.as_array().unwrap().len(), 1, "{streams}");
}
