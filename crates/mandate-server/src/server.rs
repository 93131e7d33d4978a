//! Starting and stopping the two listeners.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::HttpService;
use actix_service::{
    fn_service, map_config, IntoServiceFactory, ServiceFactory, ServiceFactoryExt,
};
use actix_web::dev::AppConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpMessage, HttpResponse, ResponseError};
use futures_util::StreamExt;
use serde_json::json;
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder, TracingLogger};

use crate::config::LimitSettings;
use crate::error::OAuthError;
use crate::state::AppState;
use crate::tls::Connection;
use crate::{admin, http};

/// The two bound sockets, before serving starts.
#[derive(Debug)]
pub struct Listeners {
    /// The public listener.
    pub public: TcpListener,
    /// The admin listener.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses (port 0 picks a free port).
    pub fn bind(public: SocketAddr, admin: SocketAddr) -> io::Result<Self> {
        Ok(Self {
            public: TcpListener::bind(public)?,
            admin: TcpListener::bind(admin)?,
        })
    }
}

/// Whether the server acts on signals itself (the binary) or only when told (tests and
/// embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    /// Graceful shutdown on SIGINT and SIGTERM; SIGHUP reloads the signing keys from the
    /// configuration file ([`AppState::reload_keys_from_file`]).
    Handle,
    /// Ignore signals; stop through [`RunningServer::stop`].
    Ignore,
}

/// A running server.
#[derive(Debug)]
pub struct RunningServer {
    /// Where the public listener is.
    pub public_addr: SocketAddr,
    /// Where the admin listener is.
    pub admin_addr: SocketAddr,
    handles: [ServerHandle; 2],
    tasks: Vec<tokio::task::JoinHandle<io::Result<()>>>,
    heartbeat: tokio::task::JoinHandle<()>,
    ssf_poller: tokio::task::JoinHandle<()>,
    ssf_pusher: tokio::task::JoinHandle<()>,
    lifecycle: tokio::task::JoinHandle<()>,
    journal_keeper: tokio::task::JoinHandle<()>,
    reloader: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops both listeners, letting requests in flight finish.
    pub async fn stop(self) {
        self.heartbeat.abort();
        self.ssf_poller.abort();
        self.ssf_pusher.abort();
        self.lifecycle.abort();
        self.journal_keeper.abort();
        if let Some(reloader) = &self.reloader {
            reloader.abort();
        }
        for handle in &self.handles {
            handle.stop(true).await;
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until both listeners have stopped (after a signal).
    pub async fn wait(self) -> io::Result<()> {
        for task in self.tasks {
            task.await.map_err(io::Error::other)??;
        }
        self.heartbeat.abort();
        self.ssf_poller.abort();
        self.ssf_pusher.abort();
        self.lifecycle.abort();
        self.journal_keeper.abort();
        if let Some(reloader) = &self.reloader {
            reloader.abort();
        }
        Ok(())
    }
}

/// Request spans carry the method, the path (never the query, which could hold a secret) and the
/// request id; bodies and headers are never recorded.
struct SafeRootSpan;

impl RootSpanBuilder for SafeRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        let span = tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            request_id = request_id.map(|id| id.to_string()).unwrap_or_default(),
            status = tracing::field::Empty,
            // Read by the OTLP export (docs/OPERATIONS.md "Traces"), ignored by the log lines.
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
        );
        #[cfg(feature = "otlp")]
        crate::otel::adopt_remote_parent(&span, request.headers());
        span
    }

    fn on_request_end<B: MessageBody>(
        span: Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(response) => response.status().as_u16(),
            Err(error) => error.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
        if status >= 500 {
            span.record("otel.status_code", "error");
        }
        span.in_scope(|| tracing::info!(status, "request finished"));
    }
}

/// How long an idle keep-alive connection stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long a connection being closed may take to flush its last response before it is dropped.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Which listener a request came in on: it decides the shape of a refusal's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// OAuth error bodies (RFC 6749 §5.2).
    Public,
    /// Admin error bodies (`{"error", "message"}`).
    Admin,
}

/// `[limits]` as both listeners enforce them before any handler runs (DESIGN.md section 10).
///
/// - The request head (request line and header fields) is bounded by `max_header_bytes`: 431.
///   actix-http has no knob for it (its parser refuses heads above 128 KiB or with more than 96
///   fields, also with 431), so the head is measured here, before routing.
/// - A body announced larger than `max_body_bytes` is refused (413) before it is read; a chunked
///   one is bounded while it is read (the form reader on the public listener, `PayloadConfig` for
///   the admin JSON bodies).
/// - `request_timeout_secs` bounds the time to receive a request head (actix's client request
///   timeout: 408 and the connection closed, the slow-loris defence) and, from the head on, the
///   time to receive the body and answer: a body still arriving at the deadline is 408 and the
///   connection is closed; a handler still busy at the deadline (a store that neither answers nor
///   fails) is 503 `temporarily_unavailable`, and nothing it did not finish is reported done.
///   (A body the handler never reads to its end counts as not received.) The heads of later
///   requests on a kept-alive connection are bounded by [`RequestDeadline`].
#[derive(Debug, Clone, Copy)]
struct RequestLimits {
    listener: Listener,
    max_header_bytes: usize,
    max_body_bytes: usize,
    deadline: Duration,
}

impl RequestLimits {
    fn new(limits: &LimitSettings, listener: Listener) -> Self {
        Self {
            listener,
            max_header_bytes: limits.max_header_bytes,
            max_body_bytes: limits.max_body_bytes,
            deadline: Duration::from_secs(limits.request_timeout_secs),
        }
    }

    /// A refusal in the listener's error shape. Refusals of the request's shape close the
    /// connection: what is left of an unread body must not be taken for the next request.
    fn refuse(
        &self,
        status: StatusCode,
        admin_code: &'static str,
        text: &'static str,
    ) -> HttpResponse {
        let mut response = match self.listener {
            Listener::Public => OAuthError::invalid_request(text)
                .with_status(status)
                .error_response(),
            Listener::Admin => HttpResponse::build(status)
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(json!({"error": admin_code, "message": text})),
        };
        if status != StatusCode::SERVICE_UNAVAILABLE {
            response
                .head_mut()
                .set_connection_type(actix_web::http::ConnectionType::Close);
        }
        response
    }

    fn unavailable(&self) -> HttpResponse {
        match self.listener {
            Listener::Public => OAuthError::unavailable().error_response(),
            Listener::Admin => admin::AdminError::unavailable().error_response(),
        }
    }
}

/// The size of a request head as sent: the request line (method, target, version) and each
/// header line (name, `: `, value, CRLF).
fn head_bytes(request: &ServiceRequest) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(request.uri().path().len(), |target| target.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    request_line
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
            .sum::<usize>()
}

/// The `[limits]` middleware of both listeners (see [`RequestLimits`]).
async fn enforce_limits(
    limits: RequestLimits,
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if head_bytes(&request) > limits.max_header_bytes {
        tracing::info!(limit = limits.max_header_bytes, "request head too large");
        let refusal = limits.refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_too_large",
            "the request head is too large",
        );
        return Ok(request.into_response(refusal));
    }
    // One credential per request, on every route: with two `Authorization` headers a proxy
    // reading the last and mandate the first would disagree about the caller (RFC 6749 §3.2
    // refuses repeated parameters for the same reason).
    if request
        .headers()
        .get_all(header::AUTHORIZATION)
        .nth(1)
        .is_some()
    {
        tracing::info!("request with more than one Authorization header");
        let refusal = match limits.listener {
            Listener::Public => limits.refuse(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "more than one Authorization header",
            ),
            Listener::Admin => admin::AdminError::unauthenticated().error_response(),
        };
        return Ok(request.into_response(refusal));
    }
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|length| length > limits.max_body_bytes as u64) {
        let refusal = limits.refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        );
        return Ok(request.into_response(refusal));
    }
    // Track whether the body has been received in full, so that a deadline can tell a slow
    // client (408) from a slow server (503).
    let has_body = announced.is_some_and(|length| length > 0)
        || request.headers().contains_key(header::TRANSFER_ENCODING);
    let received = Arc::new(AtomicBool::new(!has_body));
    if has_body {
        let flag = received.clone();
        let end = futures_util::stream::poll_fn(move |_| {
            flag.store(true, Ordering::Release);
            Poll::Ready(None)
        });
        let payload = request.take_payload().chain(end);
        request.set_payload(Payload::Stream {
            payload: Box::pin(payload),
        });
    }
    // The request cannot be kept aside (routing needs it unshared), so a late answer is an
    // error carrying its response.
    let deadline = limits.deadline;
    match tokio::time::timeout(deadline, next.call(request)).await {
        Ok(outcome) => outcome.map(ServiceResponse::map_into_boxed_body),
        Err(_) if received.load(Ordering::Acquire) => {
            tracing::warn!(?deadline, "request not answered in time");
            Err(InternalError::from_response("request deadline", limits.unavailable()).into())
        }
        Err(_) => {
            tracing::info!(?deadline, "request body not received in time");
            let refusal = limits.refuse(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body was not received in time",
            );
            Err(InternalError::from_response("request body deadline", refusal).into())
        }
    }
}

/// One listener: HTTP/1.1 over [`RequestDeadline`] connections, with the head timeout, keep-alive
/// and graceful shutdown `HttpServer` would set. (`HttpServer` offers no way to wrap a
/// connection, and its head timeout covers only a connection's first request.)
fn serve<F, T, B>(
    name: &str,
    listener: TcpListener,
    timeout: Duration,
    workers: Option<usize>,
    handle_signals: bool,
    tls: Option<crate::tls::Tls>,
    app: F,
) -> io::Result<actix_server::ServerBuilder>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let mut builder = actix_server::Server::build().shutdown_timeout(10);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    if !handle_signals {
        builder = builder.disable_signals();
    }
    let shutdown = builder.graceful_shutdown_signal();
    let backstop = timeout + BACKSTOP_GRACE;
    builder.listen(format!("mandate-{name}-{addr}"), listener, move || {
        let shutdown = shutdown.clone();
        let app = app()
            .app_data(Stopping(shutdown.clone()))
            .into_factory()
            .map_err(|error: actix_web::Error| error.error_response());
        let http = HttpService::build()
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .keep_alive(KEEP_ALIVE)
            .client_request_timeout(timeout)
            .client_disconnect_timeout(DISCONNECT_TIMEOUT)
            .local_addr(addr)
            .h1(map_config(app, |_| AppConfig::default()));
        let acceptor = tls.as_ref().map(crate::tls::Tls::acceptor);
        fn_service(move |stream: tokio::net::TcpStream| {
            let peer = stream.peer_addr().ok();
            // Responses go out in one write; Nagle would only delay them.
            let _ = stream.set_nodelay(true);
            let io = RequestDeadline::new(stream, backstop);
            let acceptor = acceptor.clone();
            async move {
                let Some(acceptor) = acceptor else {
                    return Ok::<_, DispatchError>((Connection::Plain(io), peer));
                };
                // A handshake is bounded like a request head: a client that opens a connection
                // and sends nothing (or a trickle) is dropped at the request timeout.
                match tokio::time::timeout(timeout, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => Ok((Connection::Tls(Box::new(tls)), peer)),
                    Ok(Err(error)) => Err(DispatchError::Io(error)),
                    Err(_) => Err(DispatchError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ))),
                }
            }
        })
        .and_then(http)
    })
}

/// Resolves when the listener starts a graceful shutdown: responses that would otherwise never
/// end (the revocation feed) end then, so a stop does not wait out its timeout for them.
#[derive(Clone, Debug)]
pub(crate) struct Stopping(pub(crate) actix_server::GracefulShutdownSignal);

/// How much longer than `request_timeout_secs` a connection may take to deliver one request
/// before it is dropped (see [`RequestDeadline`]): the head timeout and the middleware answer
/// first whenever they can.
const BACKSTOP_GRACE: Duration = Duration::from_secs(1);

/// A connection whose every request must arrive within a bound: the clock starts at the first
/// byte of a request and stops at the first byte of its response; reading past it fails, which
/// drops the connection.
///
/// actix-http times only the head of a connection's *first* request (408): a client that sent
/// one honest request could then trickle the next head in a byte at a time and hold the
/// connection for ever (slow-loris over keep-alive). This bounds every request, including its
/// body and the handler's time (the middleware answers those first, at the deadline itself).
struct RequestDeadline {
    io: tokio::net::TcpStream,
    limit: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RequestDeadline {
    fn new(io: tokio::net::TcpStream, limit: Duration) -> Self {
        Self {
            io,
            limit,
            deadline: None,
        }
    }
}

impl AsyncRead for RequestDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                tracing::info!("a request did not arrive in time; dropping the connection");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the request did not arrive in time",
                )));
            }
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.deadline.is_none()
            && matches!(read, Poll::Ready(Ok(())))
            && buf.filled().len() > before
        {
            let mut deadline = Box::pin(tokio::time::sleep(this.limit));
            // Polled once so that it wakes this connection when it passes.
            let _ = deadline.as_mut().poll(cx);
            this.deadline = Some(deadline);
        }
        read
    }
}

impl AsyncWrite for RequestDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.deadline = None;
        }
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.deadline = None;
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Serves `state` on `listeners` and returns at once; the servers run on the current tokio
/// runtime.
pub fn start(state: AppState, listeners: Listeners, signals: Signals) -> io::Result<RunningServer> {
    let public_addr = listeners.public.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let timeout = Duration::from_secs(state.settings.limits.request_timeout_secs);
    let data = web::Data::new(state.clone());
    let handle_signals = signals == Signals::Handle;

    let public_data = data.clone();
    let public_routes = state.clone();
    let public_limits = RequestLimits::new(&state.settings.limits, Listener::Public);
    let public = serve(
        "public",
        listeners.public,
        timeout,
        None,
        handle_signals,
        state.tls.clone(),
        move || {
            App::new()
                .app_data(public_data.clone())
                .app_data(web::PayloadConfig::new(public_limits.max_body_bytes))
                .wrap(from_fn(move |request, next| {
                    enforce_limits(public_limits, request, next)
                }))
                .wrap(TracingLogger::<SafeRootSpan>::new())
                .wrap(from_fn(|request, next| {
                    crate::metrics::observe("public", request, next)
                }))
                .configure(http::configure(&public_routes))
        },
    )?;

    let admin_data = data;
    // Console sessions live in this node's memory (docs/CONSOLE.md).
    let console_sessions = web::Data::new(crate::console::Sessions::default());
    let admin_limits = RequestLimits::new(&state.settings.limits, Listener::Admin);
    let admin = serve(
        "admin",
        listeners.admin,
        timeout,
        Some(1),
        handle_signals,
        state.tls.clone(),
        move || {
            App::new()
                .app_data(admin_data.clone())
                .app_data(console_sessions.clone())
                // The admin handlers read their JSON bodies as `web::Bytes`: this bounds them,
                // chunked or not (the middleware refuses an announced oversize body first, in
                // JSON).
                .app_data(web::PayloadConfig::new(admin_limits.max_body_bytes))
                .wrap(from_fn(move |request, next| {
                    enforce_limits(admin_limits, request, next)
                }))
                .wrap(TracingLogger::<SafeRootSpan>::new())
                .wrap(from_fn(|request, next| {
                    crate::metrics::observe("admin", request, next)
                }))
                .configure(crate::console::configure)
                .configure(admin::configure)
        },
    )?;

    // SIGHUP's default action ends the process: the handler is installed before serving starts,
    // so that a SIGHUP sent once the node answers never kills it.
    let reloader = match signals {
        Signals::Ignore => None,
        Signals::Handle => {
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            Some(tokio::spawn(reload_on_hangup(state.clone(), hangups)))
        }
    };
    let public = public.run();
    let admin = admin.run();
    let handles = [public.handle(), admin.handle()];
    let tasks = vec![tokio::spawn(public), tokio::spawn(admin)];
    let ssf_poller = tokio::spawn(crate::ssf_receive::poll_issuers(state.clone()));
    let ssf_pusher = tokio::spawn(crate::ssf_transmit::push_deliverer(state.clone()));
    let lifecycle = tokio::spawn(crate::lifecycle::sweeps(state.clone()));
    let journal_keeper = tokio::spawn(crate::journal_keeper::keep(state.clone()));
    let heartbeat = tokio::spawn(heartbeats(state));
    Ok(RunningServer {
        public_addr,
        admin_addr,
        handles,
        tasks,
        heartbeat,
        ssf_poller,
        ssf_pusher,
        lifecycle,
        journal_keeper,
        reloader,
    })
}

/// DESIGN.md section 11: SIGHUP reloads the keys (and nothing else) from the configuration file,
/// so that a rotated key is picked up without a restart. Development mode has no file and
/// ephemeral keys: it says so and carries on.
async fn reload_on_hangup(state: AppState, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the signing keys");
        if *state.settings.source() == crate::config::ConfigSource::Development {
            tracing::info!(
                "development mode: the signing key is ephemeral and there is no configuration \
                 file; SIGHUP is ignored"
            );
            continue;
        }
        // File reads off the async workers; the outcome is logged by the reload itself, and a
        // failure keeps the keys in force.
        let reloading = state.clone();
        if let Err(error) = tokio::task::spawn_blocking(move || {
            let _ = reloading.reload_keys_from_file();
            let _ = reloading.reload_tls();
        })
        .await
        {
            tracing::error!(%error, "the reload did not complete; the keys in force stay");
        }
    }
}

/// Every node appends a heartbeat to the revocation stream each second (and trims the stream no
/// tighter than the longest entry lifetime), so that followers can tell a quiet stream from a
/// dead one and fail closed (DESIGN.md section 6).
async fn heartbeats(state: AppState) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        interval.tick().await;
        match state
            .revocations
            .heartbeat(
                &state.node_id,
                state.revocation.lifetimes().longest_entry_ms(),
            )
            .await
        {
            Ok(()) => {
                metrics::gauge!("mandate_revocation_heartbeat_timestamp_seconds")
                    .set(state.clock.now().timestamp_millis() as f64 / 1000.0);
                if failing {
                    tracing::info!("revocation store reachable again");
                    failing = false;
                }
            }
            Err(error) if !failing => {
                tracing::warn!(%error, "heartbeat failed: the revocation store is unreachable");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
