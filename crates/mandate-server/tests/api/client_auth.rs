//! Client authentication at `/token`: each method succeeding, and each way of failing.

use mandate_testkit::{
    alg_none, assertion_claims, body_json, now, ClientAuth, KeyKind, TestKey, TestServer,
};
use reqwest::StatusCode;
use serde_json::json;

use crate::{world, BASIC_SECRET, POST_SECRET, RS_SECRET};

/// A request that passes authentication reaches grant dispatch, which answers
/// `unsupported_grant_type` for a grant outside the contract: that answer proves the client was
/// authenticated.
const PROBE: &[(&str, &str)] = &[("grant_type", "client_credentials")];

async fn expect_authenticated(server: &TestServer, auth: &ClientAuth) {
    let response = server.token(PROBE, auth).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = body_json(response).await;
    assert_eq!(body["error"], "unsupported_grant_type", "{auth:?} → {body}");
}

async fn expect_invalid_client(
    server: &TestServer,
    auth: &ClientAuth,
) -> reqwest::header::HeaderMap {
    let response = server.token(PROBE, auth).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    let headers = response.headers().clone();
    assert_eq!(body_json(response).await["error"], "invalid_client");
    headers
}

fn basic(id: &str, secret: &str) -> ClientAuth {
    ClientAuth::Basic(id.into(), secret.into())
}

fn post(id: &str, secret: &str) -> ClientAuth {
    ClientAuth::Post(id.into(), secret.into())
}

fn assertion(jwt: String) -> ClientAuth {
    ClientAuth::Assertion {
        client_id: None,
        jwt,
    }
}

#[tokio::test]
async fn secret_methods_succeed() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    expect_authenticated(&server, &basic("basic-agent", BASIC_SECRET)).await;
    expect_authenticated(&server, &post("post-agent", POST_SECRET)).await;
    server.stop().await;
}

#[tokio::test]
async fn basic_credentials_are_form_urlencoded_before_encoding() {
    // RFC 6749 §2.3.1: a secret with reserved characters is sent form-urlencoded.
    let mut settings = world().settings;
    let secret = "p@ss:w/rd+&=%";
    settings.clients.push(
        mandate_testkit::agent_with_secret(
            "odd-agent",
            secret,
            mandate_model::AuthMethod::ClientSecretBasic,
        )
        .unwrap(),
    );
    let server = TestServer::spawn(settings).await.unwrap();
    let encoded: String = url_encode(secret);
    expect_authenticated(&server, &basic("odd-agent", &encoded)).await;
    server.stop().await;
}

fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn secret_failures_are_invalid_client() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    // Wrong secret over Basic: 401 with a Basic challenge.
    let headers = expect_invalid_client(&server, &basic("basic-agent", "wrong-secret")).await;
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic"));
    expect_invalid_client(&server, &post("post-agent", "wrong-secret")).await;
    // Unknown client, and a client id outside the allowed syntax.
    expect_invalid_client(&server, &basic("nobody", BASIC_SECRET)).await;
    expect_invalid_client(&server, &basic("Not An Id", BASIC_SECRET)).await;
    // Suspended and expired clients, even with the right secret.
    expect_invalid_client(&server, &basic("sleepy-agent", BASIC_SECRET)).await;
    expect_invalid_client(&server, &basic("old-agent", BASIC_SECRET)).await;
    // A client registered for Basic cannot use the post method, and vice versa.
    expect_invalid_client(&server, &post("basic-agent", BASIC_SECRET)).await;
    expect_invalid_client(&server, &basic("post-agent", POST_SECRET)).await;
    // A resource server cannot use the token endpoint.
    expect_invalid_client(&server, &basic("calendar-api", RS_SECRET)).await;
    // No authentication at all.
    expect_invalid_client(&server, &ClientAuth::None).await;
    server.stop().await;
}

#[tokio::test]
async fn private_key_jwt_succeeds_with_each_key_and_audience_form() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let issuer = server.issuer().to_owned();
    let token_endpoint = server.url("/token");
    for key in [&w.es_key, &w.rs_key] {
        let jwt = key
            .sign(None, &assertion_claims("jwt-agent", &issuer))
            .unwrap();
        expect_authenticated(&server, &assertion(jwt)).await;
    }
    // The token endpoint as audience, an array holding only the issuer, and the explicit
    // client-authentication+jwt type are accepted; so is a matching client_id parameter.
    let jwt = w
        .es_key
        .sign(None, &assertion_claims("jwt-agent", &token_endpoint))
        .unwrap();
    expect_authenticated(&server, &assertion(jwt)).await;
    let mut claims = assertion_claims("jwt-agent", &issuer);
    claims["aud"] = json!([issuer]);
    let jwt = w
        .es_key
        .sign(Some("client-authentication+jwt"), &claims)
        .unwrap();
    expect_authenticated(
        &server,
        &ClientAuth::Assertion {
            client_id: Some("jwt-agent".into()),
            jwt,
        },
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn assertions_without_kid_are_tried_against_each_key() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let issuer = server.issuer().to_owned();
    // nokid-agent has an RSA key and an Ed25519 key, neither with a kid.
    let jwt = w
        .ed_key_without_kid
        .sign(None, &assertion_claims("nokid-agent", &issuer))
        .unwrap();
    expect_authenticated(&server, &assertion(jwt)).await;
    let mut header = w.rs_key.header(None);
    header.as_object_mut().unwrap().remove("kid");
    let jwt = w
        .rs_key
        .sign_raw(&header, &assertion_claims("nokid-agent", &issuer))
        .unwrap();
    expect_authenticated(&server, &assertion(jwt)).await;
    // jwt-agent's keys have kids; an assertion without one is still tried against each.
    let mut header = w.es_key.header(None);
    header.as_object_mut().unwrap().remove("kid");
    let jwt = w
        .es_key
        .sign_raw(&header, &assertion_claims("jwt-agent", &issuer))
        .unwrap();
    expect_authenticated(&server, &assertion(jwt)).await;
    server.stop().await;
}

#[tokio::test]
async fn an_assertion_is_single_use() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let jwt = w
        .es_key
        .sign(None, &assertion_claims("jwt-agent", server.issuer()))
        .unwrap();
    expect_authenticated(&server, &assertion(jwt.clone())).await;
    expect_invalid_client(&server, &assertion(jwt)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_forged_assertion_does_not_burn_its_jti() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let claims = assertion_claims("jwt-agent", server.issuer());
    let intruder = TestKey::generate(KeyKind::Es256, Some("es-1")).unwrap();
    expect_invalid_client(&server, &assertion(intruder.sign(None, &claims).unwrap())).await;
    // The same jti, properly signed, still works: jti is recorded only after verification.
    expect_authenticated(&server, &assertion(w.es_key.sign(None, &claims).unwrap())).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_assertions_are_invalid_client() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let issuer = server.issuer().to_owned();
    let good = || assertion_claims("jwt-agent", &issuer);
    let with = |name: &str, value: serde_json::Value| {
        let mut claims = good();
        claims[name] = value;
        claims
    };
    let without = |name: &str| {
        let mut claims = good();
        claims.as_object_mut().unwrap().remove(name);
        claims
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "wrong aud",
            w.es_key
                .sign(None, &with("aud", json!("https://other.example.com")))
                .unwrap(),
        ),
        (
            "aud array with a foreign value",
            w.es_key
                .sign(
                    None,
                    &with("aud", json!([issuer, "https://other.example.com"])),
                )
                .unwrap(),
        ),
        (
            "empty aud array",
            w.es_key.sign(None, &with("aud", json!([]))).unwrap(),
        ),
        ("no aud", w.es_key.sign(None, &without("aud")).unwrap()),
        (
            "iss differs from sub",
            w.es_key
                .sign(None, &with("iss", json!("post-agent")))
                .unwrap(),
        ),
        (
            "sub names another client",
            w.es_key
                .sign(None, &with("sub", json!("basic-agent")))
                .unwrap(),
        ),
        (
            "expired",
            w.es_key
                .sign(None, &with("exp", json!(now() - 120)))
                .unwrap(),
        ),
        (
            "lifetime over an hour",
            w.es_key
                .sign(None, &with("exp", json!(now() + 7200)))
                .unwrap(),
        ),
        ("no exp", w.es_key.sign(None, &without("exp")).unwrap()),
        ("no jti", w.es_key.sign(None, &without("jti")).unwrap()),
        (
            "iat in the future",
            w.es_key
                .sign(None, &with("iat", json!(now() + 600)))
                .unwrap(),
        ),
        (
            "nbf in the future",
            w.es_key
                .sign(None, &with("nbf", json!(now() + 600)))
                .unwrap(),
        ),
        ("alg none", alg_none(&good())),
        (
            "HS256 keyed with the public key",
            w.es_key.hs256_confused(&good()).unwrap(),
        ),
        (
            "RS key confused as HS256",
            w.rs_key.hs256_confused(&good()).unwrap(),
        ),
        (
            "typ of an access token",
            w.es_key.sign(Some("at+jwt"), &good()).unwrap(),
        ),
        (
            "unknown kid",
            w.es_key
                .sign_raw(&json!({"alg":"ES256","kid":"nope"}), &good())
                .unwrap(),
        ),
        (
            "alg the key does not have",
            w.es_key
                .sign_raw(&json!({"alg":"RS256","kid":"es-1"}), &good())
                .unwrap(),
        ),
        (
            "crit header",
            w.es_key
                .sign_raw(
                    &json!({"alg":"ES256","kid":"es-1","crit":["x"],"x":1}),
                    &good(),
                )
                .unwrap(),
        ),
        ("not a JWT", "not-a-jwt".into()),
        ("oversized", "a".repeat(20_000)),
    ];
    for (name, jwt) in cases {
        let response = server.token(PROBE, &assertion(jwt)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            body_json(response).await["error"],
            "invalid_client",
            "{name}"
        );
    }
    // A flipped signature byte.
    let jwt = w.es_key.sign(None, &good()).unwrap();
    let (rest, signature) = jwt.rsplit_once('.').unwrap();
    let mut bytes = signature.as_bytes().to_vec();
    bytes[5] = if bytes[5] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{rest}.{}", String::from_utf8(bytes).unwrap());
    expect_invalid_client(&server, &assertion(tampered)).await;
    // A client_id parameter naming another client than the assertion.
    let jwt = w.es_key.sign(None, &good()).unwrap();
    let response = server
        .token(
            PROBE,
            &ClientAuth::Assertion {
                client_id: Some("post-agent".into()),
                jwt,
            },
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A wrong client_assertion_type.
    let jwt = w.es_key.sign(None, &good()).unwrap();
    let response = server
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:other"),
                ("client_assertion", &jwt),
            ],
            &ClientAuth::None,
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}

#[tokio::test]
async fn two_methods_at_once_are_invalid_request() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    // Basic header plus client_secret in the body.
    let response = server
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_secret", BASIC_SECRET),
            ],
            &basic("basic-agent", BASIC_SECRET),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // A secret plus an assertion.
    let jwt = w
        .es_key
        .sign(None, &assertion_claims("jwt-agent", server.issuer()))
        .unwrap();
    let response = server
        .token(
            &[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &jwt),
            ],
            &post("post-agent", POST_SECRET),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // Basic plus a client_id parameter naming someone else.
    let response = server
        .token(
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "post-agent"),
            ],
            &basic("basic-agent", BASIC_SECRET),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    server.stop().await;
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let basic = |id: &str, secret: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    // Both valid, or a valid one after an invalid one: never the first (or the last) wins.
    for (first, second) in [
        (
            basic("basic-agent", BASIC_SECRET),
            basic("basic-agent", BASIC_SECRET),
        ),
        (
            basic("basic-agent", "wrong"),
            basic("basic-agent", BASIC_SECRET),
        ),
        (
            basic("basic-agent", BASIC_SECRET),
            basic("post-agent", POST_SECRET),
        ),
    ] {
        let response = server
            .http
            .post(server.url("/token"))
            .header("authorization", &first)
            .header("authorization", &second)
            .form(PROBE)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = body_json(response).await;
        assert_eq!(body["error"], "invalid_request", "{body}");
        assert_eq!(
            body["error_description"],
            "more than one Authorization header"
        );
    }
    // Every public route that reads a credential refuses it the same way (the request limits
    // refuse it before any handler).
    for path in ["/revoke", "/introspect", "/ssf/streams", "/participation"] {
        let response = server
            .http
            .post(server.url(path))
            .header("authorization", basic("calendar-api", "x"))
            .header("authorization", "Bearer y")
            .form(&[("token", "t")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = body_json(response).await;
        assert_eq!(
            body["error_description"], "more than one Authorization header",
            "{path}"
        );
    }
    // One header still authenticates.
    expect_authenticated(
        &server,
        &ClientAuth::Basic("basic-agent".into(), BASIC_SECRET.into()),
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn an_assertion_nested_past_the_bound_is_invalid_client() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let mut claims = assertion_claims("jwt-agent", server.issuer());
    claims["deep"] = (0..mandate_token::MAX_JSON_DEPTH).fold(json!(1), |inner, _| json!([inner]));
    let jwt = w.es_key.sign(None, &claims).unwrap();
    expect_invalid_client(&server, &assertion(jwt)).await;
    // Within the bound the same assertion (another jti) authenticates.
    let mut claims = assertion_claims("jwt-agent", server.issuer());
    claims["deep"] =
        (0..mandate_token::MAX_JSON_DEPTH - 2).fold(json!(1), |inner, _| json!([inner]));
    let jwt = w.es_key.sign(None, &claims).unwrap();
    expect_authenticated(&server, &assertion(jwt)).await;
    server.stop().await;
}

/// Review finding 4: an assertion signed with a stranger's key once answered "client assertion is
/// invalid" for a `private_key_jwt` client and "client authentication failed" for anyone else, so
/// the answer told which ids authenticate with keys. Every failure now reads the same.
#[tokio::test]
async fn failures_do_not_tell_which_ids_use_keys() {
    let w = world();
    let server = TestServer::spawn(w.settings).await.unwrap();
    let stranger = TestKey::generate(KeyKind::Es256, Some("es-1")).unwrap();
    let forged = |id: &str| {
        assertion(
            stranger
                .sign(None, &assertion_claims(id, server.issuer()))
                .unwrap(),
        )
    };
    let mut bodies = Vec::new();
    for auth in [
        forged("jwt-agent"),
        forged("basic-agent"),
        forged("nobody"),
        post("post-agent", "wrong-secret"),
        post("nobody", POST_SECRET),
    ] {
        let response = server.token(PROBE, &auth).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        bodies.push((format!("{auth:?}"), response.bytes().await.unwrap()));
    }
    let (_, first) = &bodies[0];
    for (auth, body) in &bodies {
        assert_eq!(body, first, "{auth} answered differently");
    }
    server.stop().await;
}
