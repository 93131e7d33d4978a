//! OTLP trace export (docs/OPERATIONS.md "Traces"), built with the `otlp` feature.
//!
//! The spans are `tracing`'s: the request span ([`crate::server`]) and the exchange's step spans
//! (`mandate.client_auth`, `mandate.grant`, `mandate.subject_token`, `mandate.revocation_check`,
//! `mandate.validate_chain`, `mandate.sign`, `mandate.ledger_write`). None of them carries a
//! token, a secret or an assertion in a field, so none reaches the collector. Only spans of
//! mandate's own crates are exported, never log events: those stay on standard error.
//!
//! The exporter posts OTLP/HTTP protobuf through mandate's own `reqwest` client (the one the
//! rest of the server uses), run on the server's runtime: opentelemetry-otlp's built-in clients
//! would bring a second HTTP stack.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::http::header::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{Layer, Registry};

use crate::config::OtelSettings;

/// Whether request spans continue an incoming `traceparent` (`[otel] propagate`). Process-wide,
/// like the subscriber it configures: the request span is built by a `RootSpanBuilder`, which
/// is a type, not a value that could carry settings.
static PROPAGATE: AtomicBool = AtomicBool::new(false);

/// Why OTLP export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// `[otel] endpoint` is unset: nothing to export to.
    #[error("[otel] endpoint is not set")]
    NoEndpoint,
    /// The exporter or its HTTP client could not be built.
    #[error("[otel] endpoint: the OTLP exporter cannot be built: {0}")]
    Exporter(String),
}

/// Flushes the spans still queued and stops the exporter when dropped. Drop it while the
/// runtime given to [`layer`] is still running: the last export is sent on it.
#[derive(Debug)]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("warning: the last OTLP export failed: {error}");
        }
    }
}

/// The subscriber layer that exports mandate's spans as `settings` say, sending on `runtime`.
pub fn layer(
    settings: &OtelSettings,
    runtime: tokio::runtime::Handle,
) -> Result<(Box<dyn Layer<Registry> + Send + Sync>, OtelGuard), OtelError> {
    let url = settings.traces_url().ok_or(OtelError::NoEndpoint)?;
    let timeout = Duration::from_millis(settings.timeout_ms);
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient { http, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(timeout)
        .build()
        .map_err(|e| OtelError::Exporter(e.to_string()))?;
    let resource = Resource::builder_empty()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    PROPAGATE.store(settings.propagate, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mandate"))
        .with_filter(filter_fn(|metadata| {
            metadata.is_span() && metadata.target().starts_with("mandate")
        }));
    Ok((Box::new(layer), OtelGuard { provider }))
}

/// Makes `span` (a request span) a child of the caller's span when `[otel] propagate` is on and
/// the request carries a valid W3C `traceparent` (an invalid one is ignored: a new trace).
pub(crate) fn adopt_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if !PROPAGATE.load(Ordering::Relaxed) || !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only when the span is disabled (not sampled by any layer): nothing to continue.
    let _ = span.set_parent(context);
}

/// actix's header map as the propagator reads it.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// The exporter's HTTP client: mandate's `reqwest`, on the server's runtime (the batch processor
/// exports from a thread of its own, outside any runtime).
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// The largest collector answer read: an OTLP response is a small status message.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let mut builder = http.request(parts.method, parts.uri.to_string());
            for (name, value) in &parts.headers {
                builder = builder.header(name, value);
            }
            let mut response = builder.body(body).send().await?;
            let status = response.status();
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<_, reqwest::Error>((status, body))
        });
        let (status, body) = sent.await??;
        Ok(Response::builder()
            .status(status.as_u16())
            .body(Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_bare_endpoint_only() {
        let with = |endpoint: &str| OtelSettings {
            endpoint: Some(url::Url::parse(endpoint).unwrap_or_else(|e| panic!("{e}"))),
            ..OtelSettings::default()
        };
        assert_eq!(
            with("http://collector:4318").traces_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        assert_eq!(
            with("https://gateway.example/otlp/v1/traces")
                .traces_url()
                .as_deref(),
            Some("https://gateway.example/otlp/v1/traces")
        );
        assert_eq!(OtelSettings::default().traces_url(), None);
    }
}
