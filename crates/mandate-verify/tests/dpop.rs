//! RFC 9449 at the app, against tokens a real mandate bound over HTTP: a DPoP-bound token is
//! accepted only as `Authorization: DPoP` with a fresh proof for this request, this token and
//! the bound key (actix extractor, and the tower layer in an axum app over real HTTP); as
//! `Bearer` it is refused with a DPoP challenge; unbound tokens keep working as bearer tokens.
#![cfg(all(feature = "actix-web", feature = "tower"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use mandate_testkit::{
    delegation_settings, exchange_form, id_token_claims, now, KeyKind, TestKey, TestServer, CAL,
    CORP,
};
use mandate_token::dpop::access_token_hash;
use mandate_token::{SigningAlgorithm, SigningKey};
use mandate_verify::Verifier;
use serde_json::{json, Value};

/// A calendar token for alice, bound to `key` when given.
async fn calendar_token(server: &TestServer, corp: &TestKey, key: Option<&SigningKey>) -> String {
    let id_token = corp
        .sign(None, &id_token_claims(CORP, "alice", "assistant"))
        .unwrap();
    let form = exchange_form(&id_token, "id_token", CAL, &[]);
    let mut request = server
        .http
        .post(server.url("/token"))
        .basic_auth("assistant", Some("assistant-secret"))
        .form(&form);
    if let Some(key) = key {
        let proof = key
            .sign_dpop_proof(&json!({"jti": format!("t-{}", now()), "htm": "POST",
                "htu": server.url("/token"), "iat": now()}))
            .unwrap();
        request = request.header("DPoP", proof);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    assert_eq!(
        body["token_type"],
        if key.is_some() { "DPoP" } else { "Bearer" },
        "{body}"
    );
    body["access_token"].as_str().unwrap().to_owned()
}

/// A proof by `key` for `method` `url`, naming `token` (no `ath` when `None`).
fn proof(key: &SigningKey, jti: &str, method: &str, url: &str, token: Option<&str>) -> String {
    let mut claims = json!({"jti": jti, "htm": method, "htu": url, "iat": now()});
    if let Some(token) = token {
        claims["ath"] = json!(access_token_hash(token));
    }
    key.sign_dpop_proof(&claims).unwrap()
}

async fn verifier(server: &TestServer) -> Verifier {
    Verifier::builder(server.issuer(), CAL)
        .jwks(server.get_json("/jwks").await.unwrap())
        .build()
        .await
        .unwrap()
}

#[actix_web::test]
async fn the_extractor_accepts_a_bound_token_only_with_its_proof() {
    use actix_web::{test, web, App, HttpResponse};
    use mandate_verify::actix::Authenticated;
    use mandate_verify::ProtectedResource;

    async fn whoami(auth: Authenticated) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {}", auth.subject(), auth.jkt().unwrap_or("-")))
    }
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let bound = calendar_token(&server, &corp, Some(&key)).await;
    let unbound = calendar_token(&server, &corp, None).await;
    let metadata = ProtectedResource::new(CAL, server.issuer());
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(verifier(&server).await))
            .app_data(web::Data::new(metadata))
            .route("/whoami", web::get().to(whoami)),
    )
    .await;
    let url = format!("{CAL}/whoami");
    let call = |authorization: String, proofs: Vec<String>| {
        let mut request = test::TestRequest::get()
            .uri("/whoami?x=1")
            .insert_header(("Authorization", authorization));
        for proof in proofs {
            request = request.append_header(("DPoP", proof));
        }
        request.to_request()
    };
    let good = proof(&key, "r-1", "GET", &url, Some(&bound));
    let response =
        test::call_service(&app, call(format!("DPoP {bound}"), vec![good.clone()])).await;
    assert_eq!(response.status(), 200);
    let body = test::read_body(response).await;
    let jkt = mandate_token::thumbprint(key.public_key().jwk()).unwrap();
    assert_eq!(body, format!("corp|alice {jkt}").as_bytes());

    let other = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let refused: Vec<(&str, String, Vec<String>)> = vec![
        ("the same proof again", format!("DPoP {bound}"), vec![good]),
        ("as a bearer token", format!("Bearer {bound}"), vec![]),
        ("without a proof", format!("DPoP {bound}"), vec![]),
        (
            "a proof for another URL",
            format!("DPoP {bound}"),
            vec![proof(
                &key,
                "r-2",
                "GET",
                &format!("{CAL}/admin"),
                Some(&bound),
            )],
        ),
        (
            "a proof for another method",
            format!("DPoP {bound}"),
            vec![proof(&key, "r-3", "POST", &url, Some(&bound))],
        ),
        (
            "a proof without ath",
            format!("DPoP {bound}"),
            vec![proof(&key, "r-4", "GET", &url, None)],
        ),
        (
            "a proof for another token",
            format!("DPoP {bound}"),
            vec![proof(&key, "r-5", "GET", &url, Some(&unbound))],
        ),
        (
            "a proof by another key",
            format!("DPoP {bound}"),
            vec![proof(&other, "r-6", "GET", &url, Some(&bound))],
        ),
        (
            "two proofs",
            format!("DPoP {bound}"),
            vec![
                proof(&key, "r-7", "GET", &url, Some(&bound)),
                proof(&key, "r-8", "GET", &url, Some(&bound)),
            ],
        ),
        (
            "an unbound token as DPoP",
            format!("DPoP {unbound}"),
            vec![proof(&key, "r-9", "GET", &url, Some(&unbound))],
        ),
    ];
    for (name, authorization, proofs) in refused {
        let response = test::call_service(&app, call(authorization, proofs)).await;
        assert_eq!(response.status(), 401, "{name}");
        let challenge = response
            .headers()
            .get("www-authenticate")
            .unwrap()
            .to_str()
            .unwrap();
        assert!(challenge.starts_with("DPoP error="), "{name}: {challenge}");
        assert!(challenge.contains(r#"algs="ES256"#), "{name}: {challenge}");
    }
    // An unbound token is still a bearer token.
    let response = test::call_service(&app, call(format!("Bearer {unbound}"), vec![])).await;
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn the_tower_layer_checks_proofs_over_real_http() {
    use axum::routing::get;
    use axum::Router;
    use mandate_verify::tower::MandateLayer;
    use mandate_verify::ProtectedResource;

    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let server = TestServer::spawn(delegation_settings(&corp)).await.unwrap();
    let key = SigningKey::generate(SigningAlgorithm::EdDsa).unwrap();
    let bound = calendar_token(&server, &corp, Some(&key)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // The app's public origin is its metadata's: here, where it is served.
    let metadata = ProtectedResource::new(&base, server.issuer());
    let app = Router::new()
        .route("/events", get(|| async { "events" }))
        .layer(MandateLayer::new(verifier(&server).await).metadata(metadata));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let http = reqwest::Client::new();
    let url = format!("{base}/events");
    let send = |authorization: String, proof: Option<String>| {
        let mut request = http.get(&url).header("Authorization", authorization);
        if let Some(proof) = proof {
            request = request.header("DPoP", proof);
        }
        request.send()
    };
    let ok = send(
        format!("DPoP {bound}"),
        Some(proof(&key, "t-1", "GET", &url, Some(&bound))),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let bearer = send(format!("Bearer {bound}"), None).await.unwrap();
    assert_eq!(bearer.status(), 401);
    assert!(bearer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with(r#"DPoP error="invalid_token""#));
    server.stop().await;
}
