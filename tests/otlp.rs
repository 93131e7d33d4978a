//! OTLP trace export (docs/OPERATIONS.md "Traces"): the real `mandate serve --config`, built
//! with the `otlp` feature, exports its spans to a collector stand-in that decodes OTLP/HTTP
//! protobuf with the OpenTelemetry project's own message definitions. An exchange that carries a
//! W3C `traceparent` continues the caller's trace; its steps are children of the grant span,
//! itself a child of the request span; a refused exchange marks its grant span as an error with
//! the OAuth code; nothing sent to the collector holds a secret or a token. The spans still
//! queued at shutdown are flushed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/serve.rs"]
mod serve;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use mandate_model::SecretHash;
use mandate_testkit::{id_token_claims, KeyKind, TestKey};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span};
use prost::Message;
use serde_json::Value;

const IDP: &str = "https://idp.otlp.example";
const ISSUER: &str = "https://mandate.otlp.example";
const CAL: &str = "https://calendar.example.com";
const AGENT_SECRET: &str = "assistant-otlp-secret-7d2c";
const SERVICE: &str = "mandate-under-test";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// One export request: its content type and body.
type Export = (String, Vec<u8>);

/// What the collector stand-in received.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Export>>>);

async fn collect(
    request: HttpRequest,
    body: web::Bytes,
    received: web::Data<Received>,
) -> HttpResponse {
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    received
        .0
        .lock()
        .unwrap()
        .push((content_type, body.to_vec()));
    // An empty ExportTraceServiceResponse.
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

fn config(dir: &Path, idp: &TestKey, collector: &str) -> String {
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, idp.jwks().to_string()).unwrap();
    format!(
        "issuer = \"{ISSUER}\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
         [otel]\nendpoint = \"{collector}\"\nservice_name = \"{SERVICE}\"\npropagate = true\n\n\
         [[trusted_issuers]]\nissuer = \"{IDP}\"\nalias = \"corp\"\njwks_file = {:?}\n\
         algorithms = [\"ES256\"]\n\n\
         [[clients]]\nclient_id = \"assistant\"\nkind = \"agent\"\nowners = [\"ops@example.com\"]\n\
         auth_method = \"client_secret_basic\"\nsecret_hash = \"{}\"\n\n\
         [[clients]]\nclient_id = \"calendar-api\"\nkind = \"resource_server\"\n\
         owners = [\"ops@example.com\"]\nauth_method = \"client_secret_basic\"\n\
         secret_hash = \"{}\"\naudiences = [\"{CAL}\"]\n\n\
         [[policies]]\nactor = \"assistant\"\naudience = \"{CAL}\"\nscopes = [\"calendar.read\"]\n",
        jwks.display().to_string(),
        SecretHash::of(AGENT_SECRET),
        SecretHash::of("calendar-otlp-secret"),
    )
}

async fn exchange(
    http: &reqwest::Client,
    base: &str,
    id_token: &str,
    scope: &str,
    traceparent: Option<&str>,
) -> (u16, Value) {
    let mut request = http
        .post(format!("{base}/token"))
        .basic_auth("assistant", Some(AGENT_SECRET))
        .form(&[
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", id_token),
            (
                "subject_token_type",
                "urn:ietf:params:oauth:token-type:id_token",
            ),
            ("audience", CAL),
            ("scope", scope),
        ]);
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// SIGTERM, then waits for the process to exit (it flushes its spans on the way out).
fn stop_gracefully(server: &mut serve::Killed) {
    let pid = server.0.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            assert!(status.success(), "mandate exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "mandate did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|value| match value {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            AnyValue::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
}

#[tokio::test]
async fn the_exchange_steps_reach_the_collector_as_one_trace_without_secrets() {
    let received = Received::default();
    let data = web::Data::new(received.clone());
    let collector = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/v1/traces", web::post().to(collect))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let collector_addr = collector.addrs()[0];
    let collector = collector.run();
    let collector_handle = collector.handle();
    tokio::spawn(collector);

    let dir = tempfile::tempdir().unwrap();
    let idp = TestKey::generate(KeyKind::Es256, Some("otlp-idp")).unwrap();
    let config_path = dir.path().join("mandate.toml");
    std::fs::write(
        &config_path,
        config(dir.path(), &idp, &format!("http://{collector_addr}")),
    )
    .unwrap();
    let (mut server, base) = serve::serve_config(&config_path);
    let http = reqwest::Client::new();

    let id_token = idp
        .sign(Some("JWT"), &id_token_claims(IDP, "alice", "assistant"))
        .unwrap();
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let (status, issued) =
        exchange(&http, &base, &id_token, "calendar.read", Some(&traceparent)).await;
    assert_eq!(status, 200, "{issued}");
    let access_token = issued["access_token"].as_str().unwrap().to_owned();
    let (status, refused) = exchange(&http, &base, &id_token, "calendar.write", None).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"], "invalid_scope");

    stop_gracefully(&mut server);
    let bodies = received.0.lock().unwrap().clone();
    collector_handle.stop(true).await;
    assert!(!bodies.is_empty(), "the collector received nothing");

    // Nothing secret travelled: not the agent's secret (nor its Basic encoding), the subject
    // token or the issued token, in any part of any export.
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("assistant:{AGENT_SECRET}"),
    );
    for (content_type, body) in &bodies {
        assert_eq!(content_type, "application/x-protobuf");
        for secret in [AGENT_SECRET, &basic, &id_token, &access_token] {
            assert!(
                !body.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "an export carries a secret or a token"
            );
        }
        // Nor any piece of a token: its signature alone is enough to replay nothing, but a
        // payload segment would disclose the user's claims.
        for token in [&id_token, &access_token] {
            for segment in token.split('.') {
                assert!(
                    !body.windows(segment.len()).any(|w| w == segment.as_bytes()),
                    "an export carries part of a token"
                );
            }
        }
    }

    let mut spans = Vec::new();
    for (_, body) in &bodies {
        let export = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource_spans in export.resource_spans {
            let resource = resource_spans.resource.unwrap();
            let service = resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.clone())
                .and_then(|v| v.value);
            assert_eq!(service, Some(AnyValue::StringValue(SERVICE.into())));
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans);
            }
        }
    }

    // The first exchange continues the caller's trace.
    let trace_id = hex::decode(TRACE_ID).unwrap();
    let in_trace: Vec<&Span> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let named = |name: &str| -> Vec<&Span> {
        in_trace
            .iter()
            .copied()
            .filter(|s| s.name == name)
            .collect()
    };
    let request = named("request");
    assert_eq!(request.len(), 1, "one request span in the caller's trace");
    let request = request[0];
    assert_eq!(request.parent_span_id, hex::decode(CALLER_SPAN).unwrap());
    assert_eq!(attribute(request, "path").as_deref(), Some("/token"));
    assert_eq!(
        request.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );

    let client_auth = named("mandate.client_auth");
    assert_eq!(client_auth.len(), 1);
    assert_eq!(client_auth[0].parent_span_id, request.span_id);
    assert_eq!(
        attribute(client_auth[0], "client_id").as_deref(),
        Some("assistant")
    );

    let grant = named("mandate.grant");
    assert_eq!(grant.len(), 1);
    let grant = grant[0];
    assert_eq!(grant.parent_span_id, request.span_id);
    assert_eq!(attribute(grant, "grant").as_deref(), Some("token_exchange"));
    assert_eq!(attribute(grant, "error"), None);

    let mut steps: HashMap<&str, usize> = HashMap::new();
    for step in [
        "mandate.subject_token",
        "mandate.revocation_check",
        "mandate.validate_chain",
        "mandate.sign",
        "mandate.ledger_write",
    ] {
        let found = named(step);
        assert!(!found.is_empty(), "no {step} span in the exchange's trace");
        for span in &found {
            assert_eq!(
                span.parent_span_id, grant.span_id,
                "{step} is not a child of the grant span"
            );
            // A step lies within its parent's time.
            assert!(span.start_time_unix_nano >= grant.start_time_unix_nano);
            assert!(span.end_time_unix_nano <= grant.end_time_unix_nano);
        }
        steps.insert(step, found.len());
    }
    // Two checks of the revocation list: before the decision and after the hop is written.
    assert_eq!(steps["mandate.revocation_check"], 2);
    let checks: Vec<String> = named("mandate.revocation_check")
        .iter()
        .filter_map(|s| attribute(s, "check"))
        .collect();
    assert!(checks.contains(&"first".to_owned()) && checks.contains(&"second".to_owned()));

    // The refused exchange is a trace of its own (no traceparent), its grant span an error.
    let refused_grant: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "mandate.grant" && s.trace_id != trace_id)
        .collect();
    assert_eq!(refused_grant.len(), 1);
    assert_eq!(
        attribute(refused_grant[0], "error").as_deref(),
        Some("invalid_scope")
    );
    assert_eq!(
        refused_grant[0].status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    // Nothing is written by the refused exchange, so it has no ledger write.
    assert!(!spans
        .iter()
        .any(|s| s.name == "mandate.ledger_write" && s.trace_id == refused_grant[0].trace_id));
}
