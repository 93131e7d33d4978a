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

const MANAGE: &str = "manage-secret-0123456789abcdefghijklm";
const CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";

/// The tree's world with a `manage` admin credential and `signer`, a `private_key_jwt` agent
/// registered with `signer_keys` that may act at the mail API.
async fn manage_world(signer_keys: Value) -> World {
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
    settings
        .clients
        .push(mandate_testkit::agent_with_keys("signer", signer_keys).unwrap());
    settings
        .policies
        .push(mandate_server::config::PolicySettings {
            actor: mandate_model::ClientId::parse("signer").unwrap(),
            audience: mandate_model::Audience::parse(MAIL).unwrap(),
            scopes: mandate_model::ScopeSet::parse("mail.read").unwrap(),
            max_depth: None,
        });
    let options = mandate_server::BuildOptions {
        clock: Some(clock.clone()),
        ..Default::default()
    };
    World {
        server: mandate_testkit::TestServer::spawn_with(settings, options)
            .await
            .unwrap(),
        corp,
        clock,
    }
}

/// A poll stream of `client` asking for credential changes only.
async fn credential_stream(w: &World, client: (&str, &str)) -> String {
    let (status, body) = call(
        w,
        reqwest::Method::POST,
        "/ssf/streams",
        client,
        Some(json!({"delivery": {"method": "urn:ietf:rfc:8936"}, "events_requested": [CHANGE]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["stream_id"].as_str().unwrap().to_owned()
}

/// The `credential-change` events polled (and acknowledged) from `stream`, each with its subject.
async fn credential_changes(w: &World, client: (&str, &str), stream: &str) -> Vec<(Value, Value)> {
    let sets = poll(w, client, stream, &[]).await;
    let jtis: Vec<String> = sets.iter().map(|(jti, _)| jti.clone()).collect();
    if !jtis.is_empty() {
        poll(w, client, stream, &jtis).await;
    }
    sets.iter()
        .map(|(_, set)| {
            let claims = claims_of(set);
            (claims["sub_id"].clone(), claims["events"][CHANGE].clone())
        })
        .collect()
}

fn application(id: &str) -> Value {
    json!({"format": "complex", "application": {"format": "opaque", "id": id}})
}

#[tokio::test]
async fn a_rotated_agent_secret_is_a_credential_change_for_the_apps_it_acts_at() {
    let key =
        mandate_testkit::TestKey::generate(mandate_testkit::KeyKind::Es256, Some("s-1")).unwrap();
    let w = manage_world(key.jwks()).await;
    let _t = tree(&w).await;
    let calendar = credential_stream(&w, CALENDAR).await;
    let mail = credential_stream(&w, MAILER).await;
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
    let changes = credential_changes(&w, CALENDAR, &calendar).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].0, application("helper"));
    assert_eq!(changes[0].1["change_type"], "update");
    assert_eq!(changes[0].1["credential_type"], "password");
    assert!(credential_changes(&w, MAILER, &mail).await.is_empty());
}

#[tokio::test]
async fn changed_agent_keys_are_a_credential_change_saying_what_changed() {
    use mandate_testkit::{KeyKind, TestKey};
    let old = TestKey::generate(KeyKind::Es256, Some("s-1")).unwrap();
    let new = TestKey::generate(KeyKind::Es256, Some("s-2")).unwrap();
    let w = manage_world(old.jwks()).await;
    let _t = tree(&w).await;
    // signer holds a live token for the mail API, authenticated with its key.
    let mut id_token = mandate_testkit::id_token_claims(mandate_testkit::CORP, "alice", "signer");
    id_token["iat"] = json!(mandate_model::Clock::now_secs(w.clock.as_ref()));
    let id_token = w.corp.sign(None, &id_token).unwrap();
    let form = mandate_testkit::exchange_form(&id_token, "id_token", MAIL, &[]);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let assertion = old
        .sign(
            None,
            &mandate_testkit::assertion_claims("signer", &w.server.url("/token")),
        )
        .unwrap();
    let auth = mandate_testkit::ClientAuth::Assertion {
        client_id: None,
        jwt: assertion,
    };
    let response = w.server.token(&pairs, &auth).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let calendar = credential_stream(&w, CALENDAR).await;
    let mail = credential_stream(&w, MAILER).await;
    let patch = |body: Value| {
        let request = w
            .server
            .http
            .patch(w.server.admin_url("/admin/agents/signer"))
            .bearer_auth(MANAGE)
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    let both = json!({"keys": [old.public_jwk(), new.public_jwk()]});
    let steps = [
        (json!({"jwks": both}), Some("create")),
        (
            json!({"jwks": {"keys": [new.public_jwk(), old.public_jwk()]}}),
            None,
        ),
        (json!({"description": "signs mail"}), None),
        (json!({"jwks": new.jwks()}), Some("revoke")),
        (json!({"jwks": old.jwks()}), Some("update")),
    ];
    for (body, expected) in steps {
        assert_eq!(patch(body.clone()).await, StatusCode::OK, "{body}");
        let changes = credential_changes(&w, MAILER, &mail).await;
        match expected {
            Some(change_type) => {
                assert_eq!(changes.len(), 1, "{body} → {changes:?}");
                assert_eq!(changes[0].0, application("signer"));
                assert_eq!(changes[0].1["credential_type"], "app");
                assert_eq!(changes[0].1["change_type"], change_type, "{body}");
            }
            None => assert!(changes.is_empty(), "{body} → {changes:?}"),
        }
    }
    // A refused change says nothing.
    assert_eq!(
        patch(json!({"jwks": {"keys": []}})).await,
        StatusCode::BAD_REQUEST
    );
    assert!(credential_changes(&w, MAILER, &mail).await.is_empty());
    // signer holds no token for the calendar.
    assert!(credential_changes(&w, CALENDAR, &calendar).await.is_empty());
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

/// The subjects and `initiating_entity` of the `session-revoked` SETs polled from `stream`.
async fn revocations(w: &World, client: (&str, &str), stream: &str) -> Vec<(Value, Value)> {
    poll(w, client, stream, &[])
        .await
        .iter()
        .map(|(_, set)| {
            let claims = claims_of(set);
            let event = &claims["events"][SESSION_REVOKED];
            (claims["sub_id"].clone(), event["initiating_entity"].clone())
        })
        .collect()
}

#[tokio::test]
async fn a_token_revoked_by_its_own_client_reaches_the_receivers_of_its_audience() {
    let w = world().await;
    let t = tree(&w).await;
    let calendar = poll_stream(&w, CALENDAR).await;
    let mail = poll_stream(&w, MAILER).await;
    let response = w
        .server
        .post_form(
            "/revoke",
            &[("token", t.leaf.as_str())],
            &mandate_testkit::delegation_auth("helper"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let leaf =
        json!({"format": "jwt_id", "iss": w.server.issuer(), "jti": claims_of(&t.leaf)["jti"]});
    assert_eq!(
        revocations(&w, CALENDAR, &calendar).await,
        [(leaf, json!("user"))]
    );
    assert!(revocations(&w, MAILER, &mail).await.is_empty());
    // Another client's token is not revoked by asking, and says nothing.
    let response = w
        .server
        .post_form(
            "/revoke",
            &[("token", t.sibling.as_str())],
            &mandate_testkit::delegation_auth("helper"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(revocations(&w, MAILER, &mail).await.is_empty());
}

#[tokio::test]
async fn a_withdrawn_consent_names_each_chain_rooted_on_it() {
    let key =
        mandate_testkit::TestKey::generate(mandate_testkit::KeyKind::Es256, Some("s-1")).unwrap();
    let w = manage_world(key.jwks()).await;
    let now = mandate_model::Clock::now(w.clock.as_ref());
    let expires =
        (now + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let created = w
        .server
        .http
        .post(w.server.admin_url("/admin/consents"))
        .bearer_auth(MANAGE)
        .json(
            &json!({"subject": "corp|carol", "actor": "assistant", "audience": CAL,
            "scopes": ["calendar.read"], "expires_at": expires}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let consent = mandate_testkit::body_json(created).await["consent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let calendar = poll_stream(&w, CALENDAR).await;
    let mail = poll_stream(&w, MAILER).await;
    // Two chains of carol's, each rooted on the grant (a JWT addressed to mandate, bound to the
    // assistant by `azp`, is evidence only through it).
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let mut claims =
            mandate_testkit::id_token_claims(mandate_testkit::CORP, "carol", w.server.issuer());
        claims["azp"] = json!("assistant");
        claims["iat"] = json!(now.timestamp());
        claims["exp"] = json!(now.timestamp() + 600);
        let jwt = w.corp.sign(None, &claims).unwrap();
        let (status, body) =
            mandate_testkit::delegation_exchange(&w.server, &jwt, "jwt", CAL, "assistant")
                .await
                .unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        tokens.push(body["access_token"].as_str().unwrap().to_owned());
    }
    let withdrawn = w
        .server
        .http
        .delete(w.server.admin_url(&format!("/admin/consents/{consent}")))
        .bearer_auth(MANAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(withdrawn.status(), StatusCode::OK);
    let issuer = w.server.issuer();
    let mut expected: Vec<Value> = Vec::new();
    for token in &tokens {
        let claims = claims_of(token);
        expected.push(json!({"format": "complex",
            "session": {"format": "opaque", "id": claims["chain_id"]},
            "user": {"format": "iss_sub", "iss": issuer, "sub": "corp|carol"}}));
        expected.push(json!({"format": "jwt_id", "iss": issuer, "jti": claims["jti"]}));
    }
    let got = revocations(&w, CALENDAR, &calendar).await;
    assert_eq!(got.len(), 4, "{got:?}");
    for subject in &expected {
        assert!(
            got.contains(&(subject.clone(), json!("admin"))),
            "{subject} in {got:?}"
        );
    }
    assert!(revocations(&w, MAILER, &mail).await.is_empty());
}
