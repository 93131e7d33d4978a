//! Attack tests for PROTOCOLS.md section 6 that the endpoint suites do not already cover (header
//! `jwk`/`jku`/`x5u`/`x5c`, `alg: none` and HS/RS confusion are in `client_auth.rs`,
//! `exchange.rs` and `id_jag.rs`): `kid` tricks, `crit`, absurd `act` nesting, cross-audience
//! use, widening through a detour of hops, JWKS fetching only from configured issuers, and the
//! secret comparison. Also replays the fuzz seed corpus through the fuzz harness
//! (`fuzz/src/harness.rs`), so that the harness compiles and runs in CI.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use mandate_model::{Audience, ClientId, ScopeSet, SecretHash};
use mandate_server::config::{Acceptance, PolicySettings, TrustedIssuerSettings};
use mandate_testkit::{
    body_json, claims_of, delegation_auth, delegation_exchange, delegation_issue,
    delegation_settings, exchange_form, id_token_claims, now, KeyKind, TestKey, TestServer, CAL,
    CORP, MAIL,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[path = "../../../../fuzz/src/harness.rs"]
mod fuzz_harness;

const ID_TOKEN: &str = "id_token";
const ACCESS_TOKEN: &str = "access_token";

/// A tiny HTTP server on a free loopback port that answers every request with `body` and
/// records each request line: the stand-in for an issuer's JWKS endpoint, or for an attacker's
/// URL that must never be fetched.
#[derive(Clone)]
struct Recorder {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    async fn start(body: Value) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let body = body.to_string();
        std::thread::spawn(move || {
            for socket in listener.incoming() {
                let Ok(mut socket) = socket else { continue };
                let _ = socket.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < 65_536 {
                    match socket.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&buffer)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push(line);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(reply.as_bytes());
            }
        });
        Self { base, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn remote_issuer(issuer: &str, alias: &str, jwks_uri: &str) -> TrustedIssuerSettings {
    TrustedIssuerSettings {
        issuer: issuer.into(),
        alias: mandate_model::IssuerAlias::parse(alias).unwrap(),
        subject_as_is: false,
        jwks_file: None,
        jwks_uri: Some(jwks_uri.into()),
        jwks: None,
        algorithms: vec!["ES256".into()],
        accept: vec![Acceptance::IdToken, Acceptance::Jwt],
        max_token_age_secs: 3600,
        id_jag_reuse: false,
        ssf_push_token_hash: None,
        ssf_poll_url: None,
        ssf_poll_token_file: None,
    }
}

fn row(actor: &str, audience: &str, scopes: &str) -> PolicySettings {
    PolicySettings {
        actor: ClientId::parse(actor).unwrap(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        max_depth: None,
    }
}

fn assert_refused(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert!(body.get("access_token").is_none(), "{what}: {body}");
    assert!(body["error"].is_string(), "{what}: {body}");
}

fn kid_tricks() -> Vec<String> {
    vec![
        "../../../../etc/passwd".into(),
        "..\\..\\keys\\mandate.pem".into(),
        "/etc/mandate/signing.pem".into(),
        "file:///etc/passwd".into(),
        "https://attacker.example/jwks.json".into(),
        "http://127.0.0.1:1/jwks.json".into(),
        "' OR '1'='1' --".into(),
        "corp-1' UNION SELECT key FROM keys --".into(),
        "corp-1\u{0}".into(),
        "corp-1/../corp-1".into(),
        "*".into(),
        "".into(),
        "k".repeat(8_000),
    ]
}

#[tokio::test]
async fn kid_is_only_ever_a_lookup_key() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let remote_key = TestKey::generate(KeyKind::Es256, Some("remote-1")).unwrap();
    let jwks_server = Recorder::start(remote_key.jwks()).await;
    let remote = format!("{}/issuer", jwks_server.base);
    let mut settings = delegation_settings(&corp);
    settings.trusted_issuers.push(remote_issuer(
        &remote,
        "remote",
        &format!("{}/jwks.json", jwks_server.base),
    ));
    let server = TestServer::spawn(settings).await.unwrap();

    // The honest tokens pass, so the refusals below are about `kid` alone.
    for (key, issuer) in [(&corp, CORP), (&remote_key, remote.as_str())] {
        let token = key
            .sign(None, &id_token_claims(issuer, "alice", "assistant"))
            .unwrap();
        delegation_issue(&server, &token, ID_TOKEN, CAL, "assistant")
            .await
            .unwrap();
    }
    for kid in kid_tricks() {
        for (key, issuer) in [(&corp, CORP), (&remote_key, remote.as_str())] {
            let mut header = key.header(None);
            header["kid"] = json!(kid);
            let token = key
                .sign_raw(&header, &id_token_claims(issuer, "alice", "assistant"))
                .unwrap();
            let (status, body) = delegation_exchange(&server, &token, ID_TOKEN, CAL, "assistant")
                .await
                .unwrap();
            assert_refused(status, &body, &format!("kid of {} bytes", kid.len()));
            let description = body["error_description"].as_str().unwrap_or_default();
            // The kid itself, whole, must not come back (an empty one cannot be told apart).
            assert!(
                kid.is_empty() || !description.contains(kid.as_str()),
                "the kid is echoed: {description}"
            );
            assert!(
                !description.contains("passwd") && !description.contains("SELECT"),
                "the kid is not echoed: {description}"
            );
        }
    }
    // Only the configured JWKS URL was ever fetched: never a path, URL or file named by a kid,
    // and the unknown-kid refresh is rate limited (one first fetch, at most one refresh).
    let requests = jwks_server.requests();
    assert!(!requests.is_empty());
    assert!(requests.len() <= 2, "{requests:?}");
    for request in requests {
        assert_eq!(request, "GET /jwks.json HTTP/1.1");
    }
    server.stop().await;
}

#[tokio::test]
async fn crit_headers_are_refused_even_when_the_signature_is_good() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("exp")] {
        let mut header = corp.header(None);
        header["crit"] = crit.clone();
        header["exp"] = json!(now() + 60);
        header["b64"] = json!(true);
        let token = corp
            .sign_raw(&header, &id_token_claims(CORP, "alice", "assistant"))
            .unwrap();
        let (status, body) = delegation_exchange(&server, &token, ID_TOKEN, CAL, "assistant")
            .await
            .unwrap();
        assert_refused(status, &body, &format!("crit {crit}"));
    }
    // A forged mandate token with `crit`, signed with mandate's own key (what only an insider
    // with the key could make), is refused too.
    let keys = server.state.keys.current();
    let claims = json!({
        "iss": server.issuer(), "sub": "corp|alice", "aud": "agent:booking-tool",
        "client_id": "assistant", "iat": now(), "nbf": now(), "exp": now() + 60,
        "jti": "hop_forged", "act": {"sub": "assistant"}, "chain_id": "chn_forged",
        "ancestors": [],
    });
    let signed = keys.active().sign("at+jwt", &claims).unwrap();
    let header_b64 = signed.split('.').next().unwrap();
    let mut header = mandate_testkit::header_of(&signed);
    header["crit"] = json!(["exp"]);
    let forged = signed.replacen(header_b64, &mandate_testkit::b64_json(&header), 1);
    let (status, body) = delegation_exchange(&server, &forged, ACCESS_TOKEN, CAL, "booking-tool")
        .await
        .unwrap();
    assert_refused(status, &body, "crit on a mandate token");
    server.stop().await;
}

fn nested_act(depth: usize) -> Value {
    let mut act = json!({"sub": "a0"});
    for i in 1..depth {
        act = json!({"sub": format!("a{}", i % 7), "act": act});
    }
    act
}

#[tokio::test]
async fn absurd_act_nesting_is_refused_by_bounded_work() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let keys = server.state.keys.current();
    let forged = |depth: usize| {
        let claims = json!({
            "iss": server.issuer(), "sub": "corp|alice", "aud": "agent:booking-tool",
            "client_id": "assistant", "iat": now(), "nbf": now(), "exp": now() + 60,
            "jti": "hop_forged", "act": nested_act(depth), "chain_id": "chn_forged",
            "ancestors": [],
        });
        keys.active().sign("at+jwt", &claims).unwrap()
    };

    // 1,000 levels: more bytes than any token may have. The size cap refuses it before any
    // base64 or JSON work (and the request body limit before that, were it larger still).
    let thousand = forged(1_000);
    assert!(thousand.len() > mandate_token::MAX_TOKEN_BYTES);
    assert_eq!(
        mandate_token::UnverifiedJws::parse(&thousand).unwrap_err(),
        mandate_token::JwtError::TooLarge(mandate_token::MAX_TOKEN_BYTES)
    );
    let (status, body) = delegation_exchange(&server, &thousand, ACCESS_TOKEN, CAL, "booking-tool")
        .await
        .unwrap();
    assert_refused(status, &body, "1,000 nested acts");

    // 200 levels fit in the size cap; the nesting bound refuses them before any parsing.
    let two_hundred = forged(200);
    assert!(two_hundred.len() <= mandate_token::MAX_TOKEN_BYTES);
    let jws = mandate_token::UnverifiedJws::parse(&two_hundred).unwrap();
    assert_eq!(
        jws.dangerous_unverified_claims::<mandate_token::AccessTokenClaims>()
            .unwrap_err(),
        mandate_token::JwtError::Malformed("JSON nested too deeply")
    );
    let (status, body) =
        delegation_exchange(&server, &two_hundred, ACCESS_TOKEN, CAL, "booking-tool")
            .await
            .unwrap();
    assert_refused(status, &body, "200 nested acts");

    // 35 levels (within the nesting bound) parse; walking them is capped at the configured
    // depth, and the chain is refused as deeper than `max_chain_depth` / not matching any
    // recorded hop.
    let hundred = forged(35);
    let claims: mandate_token::AccessTokenClaims = mandate_token::UnverifiedJws::parse(&hundred)
        .unwrap()
        .dangerous_unverified_claims()
        .unwrap();
    assert_eq!(claims.act.depth(5), 6, "the walk stops one past the cap");
    assert_eq!(claims.act.actors(5).len(), 5);
    let (status, body) = delegation_exchange(&server, &hundred, ACCESS_TOKEN, CAL, "booking-tool")
        .await
        .unwrap();
    assert_refused(status, &body, "35 nested acts");

    // Deep nesting in an upstream ID token, signed by the trusted issuer, is refused by the
    // bound before it is parsed; within the bound an `act` is skipped unread: it is never a
    // source of authority, and the chain it starts has the presenting agent as its only actor.
    for deep in [mandate_token::MAX_JSON_DEPTH, 200] {
        let mut upstream = id_token_claims(CORP, "alice", "assistant");
        upstream["deep"] = (0..deep).fold(json!(1), |inner, _| json!([inner]));
        let token = corp.sign(None, &upstream).unwrap();
        assert!(token.len() <= mandate_token::MAX_TOKEN_BYTES);
        let (status, body) = delegation_exchange(&server, &token, ID_TOKEN, CAL, "assistant")
            .await
            .unwrap();
        assert_refused(status, &body, &format!("an ID token nested {deep} deep"));
    }
    let mut upstream = id_token_claims(CORP, "alice", "assistant");
    upstream["act"] = nested_act(30);
    let token = corp.sign(None, &upstream).unwrap();
    let issued = delegation_issue(&server, &token, ID_TOKEN, CAL, "assistant")
        .await
        .unwrap();
    assert_eq!(claims_of(&issued)["act"], json!({"sub": "assistant"}));
    assert_eq!(claims_of(&issued)["ancestors"], json!([]));
    // Nothing was issued by any of this.
    assert!(server
        .state
        .ledger
        .hop(&mandate_chain::HopId("hop_forged".into()))
        .await
        .unwrap()
        .is_none());
    server.stop().await;
}

async fn introspect(server: &TestServer, token: &str, caller: &str) -> Value {
    let response = server
        .post_form("/introspect", &[("token", token)], &delegation_auth(caller))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    body_json(response).await
}

#[tokio::test]
async fn a_token_for_one_audience_is_worthless_at_another() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let calendar = delegation_issue(&server, &id_token, ID_TOKEN, CAL, "assistant")
        .await
        .unwrap();
    assert_eq!(claims_of(&calendar)["aud"], CAL);

    // The mail app's resource server learns nothing from introspecting it.
    assert_eq!(
        introspect(&server, &calendar, "mail-api").await,
        json!({"active": false})
    );
    assert_eq!(
        introspect(&server, &calendar, "calendar-api").await["active"],
        true
    );
    // It cannot be turned into a mail token, by its holder or by anyone else.
    for agent in ["assistant", "booking-tool", "helper"] {
        let (status, body) = delegation_exchange(&server, &calendar, ACCESS_TOKEN, MAIL, agent)
            .await
            .unwrap();
        assert_refused(
            status,
            &body,
            &format!("calendar token as {agent}'s subject"),
        );
    }
    // The mail app cannot revoke it either (D8: a 200 no-op), so it stays usable at its app.
    let response = server
        .post_form(
            "/revoke",
            &[("token", calendar.as_str())],
            &delegation_auth("mail-api"),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        introspect(&server, &calendar, "calendar-api").await["active"],
        true
    );
    server.stop().await;
}

fn details(pairs: &[(&str, &[&str])]) -> String {
    Value::Array(
        pairs
            .iter()
            .map(|(audience, scopes)| {
                json!({"type": "mandate_delegation", "audience": audience, "scopes": scopes})
            })
            .collect(),
    )
    .to_string()
}

async fn exchange_with(
    server: &TestServer,
    token: &str,
    audience: &str,
    agent: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, Value) {
    let form = exchange_form(token, ACCESS_TOKEN, audience, extra);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let response = server.token(&pairs, &delegation_auth(agent)).await.unwrap();
    let status = response.status();
    (status, body_json(response).await)
}

#[tokio::test]
async fn a_sub_agent_cannot_widen_scope_or_lifetime_through_a_detour() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    // Generous policy rows that open detours: helper may hand back to the others and reach mail;
    // booking-tool may pass everything on.
    settings.policies.extend([
        row(
            "helper",
            "agent:booking-tool",
            "calendar.read calendar.write mail.read",
        ),
        row(
            "helper",
            "agent:assistant",
            "calendar.read calendar.write mail.read",
        ),
        row("helper", MAIL, "mail.read"),
        row("helper", CAL, "calendar.write"),
        row("booking-tool", "agent:helper", "calendar.write mail.read"),
    ]);
    let server = TestServer::spawn(settings).await.unwrap();

    // The user's token lives two minutes; mandate's own lifetime is longer.
    let mut claims = id_token_claims(CORP, "alice", "assistant");
    let root_exp = now() + 120;
    claims["exp"] = json!(root_exp);
    let id_token = corp.sign(None, &claims).unwrap();

    // assistant → booking-tool with calendar.read only.
    let narrow = details(&[(CAL, &["calendar.read"])]);
    let (status, body) = {
        let form = exchange_form(
            &id_token,
            ID_TOKEN,
            "agent:booking-tool",
            &[("authorization_details", narrow.as_str())],
        );
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = server
            .token(&pairs, &delegation_auth("assistant"))
            .await
            .unwrap();
        let status = response.status();
        (status, body_json(response).await)
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    let to_booking = body["access_token"].as_str().unwrap().to_owned();

    // booking-tool → helper: its wider row cannot add what it never got.
    let (status, body) =
        exchange_with(&server, &to_booking, "agent:helper", "booking-tool", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let to_helper = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        claims_of(&to_helper)["authorization_details"],
        json!([{"type": "mandate_delegation", "audience": CAL, "scopes": ["calendar.read"]}])
    );
    let wide = details(&[
        (CAL, &["calendar.read", "calendar.write"]),
        (MAIL, &["mail.read"]),
    ]);
    let (status, body) = exchange_with(
        &server,
        &to_booking,
        "agent:helper",
        "booking-tool",
        &[("authorization_details", wide.as_str())],
    )
    .await;
    assert_refused(status, &body, "booking-tool passing on more than it got");

    // helper's detours: more scope, another app, back up the chain, sideways.
    type Attempt<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let attempts: [Attempt<'_>; 6] = [
        (CAL, &[("scope", "calendar.write")], "invalid_scope"),
        (
            CAL,
            &[("scope", "calendar.read calendar.write")],
            "invalid_scope",
        ),
        (MAIL, &[], "invalid_target"),
        ("agent:booking-tool", &[], "invalid_request"),
        ("agent:assistant", &[], "invalid_request"),
        (
            "agent:assistant",
            &[("authorization_details", "[]")],
            "invalid_request",
        ),
    ];
    for (audience, extra, code) in attempts {
        let (status, body) = exchange_with(&server, &to_helper, audience, "helper", extra).await;
        assert_refused(status, &body, &format!("helper → {audience} {extra:?}"));
        assert_eq!(body["error"], code, "helper → {audience} {extra:?}: {body}");
    }
    // What helper can get is exactly calendar.read, and no token on the path outlives the user's.
    let (status, body) = exchange_with(&server, &to_helper, CAL, "helper", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let app = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(claims_of(&app)["scope"], "calendar.read");
    for token in [&to_booking, &to_helper, &app] {
        let exp = claims_of(token)["exp"].as_i64().unwrap();
        assert!(exp <= root_exp, "a hop outlived the user's token");
    }
    // The app token is spent: it does not start another round.
    let (status, body) = exchange_with(&server, &app, "agent:assistant", "helper", &[]).await;
    assert_refused(status, &body, "re-exchanging an app token");
    server.stop().await;
}

#[tokio::test]
async fn keys_are_fetched_only_from_configured_issuers() {
    let attacker_key = TestKey::generate(KeyKind::Es256, Some("evil-1")).unwrap();
    let attacker = Recorder::start(attacker_key.jwks()).await;
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let jwks_url = format!("{}/jwks.json", attacker.base);
    let cert_url = format!("{}/cert.pem", attacker.base);
    // The attacker names itself as issuer and points at its own keys every way JOSE allows.
    for issuer in [attacker.base.clone(), CORP.to_owned()] {
        for (member, value) in [
            ("jku", json!(jwks_url)),
            ("x5u", json!(cert_url)),
            ("jwk", attacker_key.public_jwk()),
        ] {
            let mut header = attacker_key.header(None);
            header[member] = value;
            let token = attacker_key
                .sign_raw(&header, &id_token_claims(&issuer, "alice", "assistant"))
                .unwrap();
            for kind in [ID_TOKEN, "jwt"] {
                let (status, body) = delegation_exchange(&server, &token, kind, CAL, "assistant")
                    .await
                    .unwrap();
                assert_refused(status, &body, &format!("{member} from {issuer}"));
            }
        }
    }
    assert_eq!(
        attacker.requests(),
        Vec::<String>::new(),
        "mandate fetched a URL it was handed"
    );
    server.stop().await;
}

#[test]
fn secret_matching_hashes_the_presented_value_before_comparing() {
    let secret = "assistant-secret-0123456789abcdef";
    let stored = SecretHash::of(secret);
    assert!(stored.matches(secret));
    // Presenting the stored digest itself (in any spelling) does not match: `matches` hashes
    // what it is given, then compares digests (with `subtle`'s constant-time equality).
    let wire = stored.to_string();
    let hex_digits = wire.trim_start_matches("sha256:");
    assert!(!stored.matches(&wire));
    assert!(!stored.matches(hex_digits));
    // Near misses: a shared prefix, a changed last byte, a truncation, an extension.
    for near in [
        &secret[..secret.len() - 1],
        "assistant-secret-0123456789abcdeF",
        "assistant-secret-0123456789abcdef ",
        "",
    ] {
        assert!(!stored.matches(near), "{near:?}");
    }
    assert_eq!(SecretHash::parse(&wire).unwrap(), stored);
}

/// Replays `fuzz/corpus/<target>/*` (or `$FUZZ_CORPUS/<target>/*`, to replay a corpus a long
/// fuzzing run produced) through the fuzz harness.
#[test]
fn the_fuzz_seed_corpus_replays_through_the_harness() {
    let default = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let root = std::env::var_os("FUZZ_CORPUS").map_or(default, std::path::PathBuf::from);
    let mut replayed = 0;
    let mut granted = Vec::new();
    for (target, harness) in fuzz_harness::TARGETS {
        let directory = root.join(target);
        let entries: Vec<_> = std::fs::read_dir(&directory)
            .unwrap_or_else(|e| panic!("{}: {e}", directory.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!entries.is_empty(), "no seeds for {target}");
        for path in entries {
            let data = std::fs::read(&path).unwrap();
            harness(&data);
            if target == "chain" && fuzz_harness::chain_granted(&data) {
                granted.push(path.file_name().unwrap().to_string_lossy().into_owned());
            }
            replayed += 1;
        }
        // And the degenerate inputs.
        for data in [&b""[..], &[0u8; 64][..], &[0xffu8; 64][..]] {
            harness(data);
        }
    }
    eprintln!("replayed {replayed} inputs; chain grants: {granted:?}");
    assert!(replayed >= 5);
    // Some chain seeds are granted, so that the validator's invariants are checked at all.
    assert!(granted.len() >= 2, "{granted:?}");
}

/// Review finding 3: a newline or an ANSI escape in a client id, an audience or a resource once
/// reached the log raw (the URL parser drops newlines, but the raw audience was kept). Each is
/// refused before anything is looked up or recorded.
#[tokio::test]
async fn control_characters_are_refused_in_ids_audiences_and_resources() {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let forged = format!("{CAL}\nINFO audit: token exchanged client_id=admin");
    let coloured = format!("{CAL}\u{1b}[2K");
    for (audience, extra) in [
        (forged.as_str(), vec![]),
        (coloured.as_str(), vec![]),
        (CAL, vec![("resource", forged.as_str())]),
    ] {
        let (status, body) = exchange_with(&server, &id_token, audience, "assistant", &extra).await;
        // exchange_with sends an access-token type; the refusal comes before the subject is read.
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{audience:?} {extra:?}: {body}"
        );
        assert_eq!(body["error"], "invalid_request", "{body}");
    }
    let probe = [("grant_type", "client_credentials")];
    for auth in [
        mandate_testkit::ClientAuth::Basic("assistant\nINFO forged".into(), "x".into()),
        mandate_testkit::ClientAuth::Basic("\u{1b}[31massistant".into(), "x".into()),
    ] {
        let response = server.token(&probe, &auth).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(body_json(response).await["error"], "invalid_client");
    }
    let response = server
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "assistant\r\nINFO forged"),
                ("client_secret", "assistant-secret"),
            ],
            &mandate_testkit::ClientAuth::None,
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // Nothing was exchanged: the well-formed request still starts the chain.
    delegation_issue(&server, &id_token, ID_TOKEN, CAL, "assistant")
        .await
        .unwrap();
    server.stop().await;
}
