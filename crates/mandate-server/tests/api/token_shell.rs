//! The `/token` shell: request shape, grant dispatch, rate limit, cache headers.

use mandate_testkit::{body_json, ClientAuth, TestServer};
use reqwest::StatusCode;

use crate::{world, BASIC_SECRET, POST_SECRET};

fn basic() -> ClientAuth {
    ClientAuth::Basic("basic-agent".into(), BASIC_SECRET.into())
}

fn assert_no_store(response: &reqwest::Response) {
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(response.headers()["pragma"], "no-cache");
}

#[tokio::test]
async fn grant_dispatch() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    let response = server.token(&[], &basic()).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_no_store(&response);
    let body = body_json(response).await;
    assert_eq!(body["error"], "invalid_request");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("grant_type"));
    for grant in [
        "client_credentials",
        "password",
        "authorization_code",
        "urn:example:nope",
    ] {
        let response = server
            .token(&[("grant_type", grant)], &basic())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            body_json(response).await["error"],
            "unsupported_grant_type",
            "{grant}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn duplicate_parameters_are_invalid_request() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    for params in [
        vec![("grant_type", "a"), ("grant_type", "b")],
        vec![("grant_type", "a"), ("scope", "x"), ("scope", "y")],
        vec![
            ("grant_type", "a"),
            ("subject_token", "x"),
            ("subject_token", "x"),
        ],
    ] {
        let response = server.token(&params, &basic()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{params:?}");
        assert_no_store(&response);
        let body = body_json(response).await;
        assert_eq!(body["error"], "invalid_request");
        assert!(body["error_description"]
            .as_str()
            .unwrap()
            .contains("repeated"));
    }
    // A duplicated client_secret is refused before any authentication is attempted.
    let response = server
        .token(
            &[
                ("grant_type", "a"),
                ("client_id", "post-agent"),
                ("client_secret", POST_SECRET),
                ("client_secret", POST_SECRET),
            ],
            &ClientAuth::None,
        )
        .await
        .unwrap();
    assert_eq!(body_json(response).await["error"], "invalid_request");
    server.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_invalid_request() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    for (content_type, body) in [
        ("application/json", r#"{"grant_type":"x"}"#),
        ("text/plain", "grant_type=x"),
        ("multipart/form-data; boundary=x", "grant_type=x"),
    ] {
        let response = server
            .http
            .post(server.url("/token"))
            .basic_auth("basic-agent", Some(BASIC_SECRET))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{content_type}");
        assert_no_store(&response);
        assert_eq!(body_json(response).await["error"], "invalid_request");
    }
    // A charset parameter is fine.
    let response = server
        .http
        .post(server.url("/token"))
        .basic_auth("basic-agent", Some(BASIC_SECRET))
        .header(
            "content-type",
            "application/x-www-form-urlencoded; charset=UTF-8",
        )
        .body("grant_type=x")
        .send()
        .await
        .unwrap();
    assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    server.stop().await;
}

#[tokio::test]
async fn only_post_is_served() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let response = server
            .http
            .request(method.clone(), server.url("/token?grant_type=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        assert_eq!(response.headers()["allow"], "POST");
        assert_no_store(&response);
        assert_eq!(body_json(response).await["error"], "invalid_request");
    }
    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let mut settings = world().settings;
    settings.limits.max_body_bytes = 2048;
    let server = TestServer::spawn(settings).await.unwrap();
    let padding = "x".repeat(4096);
    let response = server
        .token(&[("grant_type", "x"), ("padding", &padding)], &basic())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_no_store(&response);
    assert_eq!(body_json(response).await["error"], "invalid_request");
    // Without a Content-Length (chunked), the limit holds while reading.
    let stream = futures_like_body(padding.clone());
    let response = server
        .http
        .post(server.url("/token"))
        .basic_auth("basic-agent", Some(BASIC_SECRET))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Just under the limit is served.
    let small = "x".repeat(1500);
    let response = server
        .token(&[("grant_type", "x"), ("padding", &small)], &basic())
        .await
        .unwrap();
    assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    server.stop().await;
}

/// A body reqwest sends chunked, without Content-Length.
fn futures_like_body(text: String) -> reqwest::Body {
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = text
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

#[tokio::test]
async fn the_rate_limit_is_per_client() {
    let mut settings = world().settings;
    settings.limits.token_requests_per_client_per_sec = 3;
    let clock = std::sync::Arc::new(mandate_model::FixedClock::at(mandate_testkit::now()));
    let server = TestServer::spawn_with(
        settings,
        mandate_server::BuildOptions {
            clock: Some(clock.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let response = server
            .token(&[("grant_type", "x")], &basic())
            .await
            .unwrap();
        assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    }
    let response = server
        .token(&[("grant_type", "x")], &basic())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_no_store(&response);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(body_json(response).await["error"], "slow_down");
    // Another client is unaffected.
    let post = ClientAuth::Post("post-agent".into(), POST_SECRET.into());
    let response = server.token(&[("grant_type", "x")], &post).await.unwrap();
    assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    // The budget comes back with time.
    clock.advance(1);
    let response = server
        .token(&[("grant_type", "x")], &basic())
        .await
        .unwrap();
    assert_eq!(body_json(response).await["error"], "unsupported_grant_type");
    server.stop().await;
}

#[tokio::test]
async fn error_bodies_never_echo_secrets() {
    let server = TestServer::spawn(world().settings).await.unwrap();
    let secret = "super-secret-value-that-must-not-appear";
    let response = server
        .token(
            &[("grant_type", secret)],
            &ClientAuth::Basic("basic-agent".into(), secret.into()),
        )
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains(secret), "{text}");
    server.stop().await;
}
