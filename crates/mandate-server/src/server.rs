//! Starting and stopping the two listeners.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpMessage, HttpServer};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder, TracingLogger};

use crate::state::AppState;
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
    reloader: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops both listeners, letting requests in flight finish.
    pub async fn stop(self) {
        self.heartbeat.abort();
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
        tracing::info_span!(
            "request",
            method = %request.method(),
            path = %request.path(),
            request_id = request_id.map(|id| id.to_string()).unwrap_or_default(),
            status = tracing::field::Empty,
        )
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
        span.in_scope(|| tracing::info!(status, "request finished"));
    }
}

/// Serves `state` on `listeners` and returns at once; the servers run on the current tokio
/// runtime.
pub fn start(state: AppState, listeners: Listeners, signals: Signals) -> io::Result<RunningServer> {
    let public_addr = listeners.public.local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let timeout = Duration::from_secs(state.settings.limits.request_timeout_secs);
    let data = web::Data::new(state.clone());

    let public_data = data.clone();
    let public_routes = state.clone();
    let mut public = HttpServer::new(move || {
        App::new()
            .app_data(public_data.clone())
            .wrap(TracingLogger::<SafeRootSpan>::new())
            .configure(http::configure(&public_routes))
    })
    .listen(listeners.public)?
    .client_request_timeout(timeout)
    .shutdown_timeout(10);

    let admin_data = data;
    let mut admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_data.clone())
            .wrap(TracingLogger::<SafeRootSpan>::new())
            .configure(admin::configure)
    })
    .listen(listeners.admin)?
    .client_request_timeout(timeout)
    .workers(1)
    .shutdown_timeout(10);

    // SIGHUP's default action ends the process: the handler is installed before serving starts,
    // so that a SIGHUP sent once the node answers never kills it.
    let reloader = match signals {
        Signals::Ignore => {
            public = public.disable_signals();
            admin = admin.disable_signals();
            None
        }
        Signals::Handle => {
            let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            Some(tokio::spawn(reload_on_hangup(state.clone(), hangups)))
        }
    };
    let public = public.run();
    let admin = admin.run();
    let handles = [public.handle(), admin.handle()];
    let tasks = vec![tokio::spawn(public), tokio::spawn(admin)];
    let heartbeat = tokio::spawn(heartbeats(state));
    Ok(RunningServer {
        public_addr,
        admin_addr,
        handles,
        tasks,
        heartbeat,
        reloader,
    })
}

/// DESIGN.md section 11: SIGHUP reloads the keys (and nothing else) from the configuration file,
/// so that a rotated key is picked up without a restart. Development mode has no file and
/// ephemeral keys: it says so and carries on.
async fn reload_on_hangup(state: AppState, mut hangups: tokio::signal::unix::Signal) {
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the signing keys");
        if state.source == crate::config::ConfigSource::Development {
            tracing::info!(
                "development mode: the signing key is ephemeral and there is no configuration \
                 file; SIGHUP is ignored"
            );
            continue;
        }
        // File reads off the async workers; the outcome is logged by the reload itself, and a
        // failure keeps the keys in force.
        let reloading = state.clone();
        if let Err(error) =
            tokio::task::spawn_blocking(move || reloading.reload_keys_from_file()).await
        {
            tracing::error!(%error, "the key reload did not complete; the keys in force stay");
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
            .heartbeat(&state.node_id, state.longest_entry_ms())
            .await
        {
            Ok(()) if failing => {
                tracing::info!("revocation store reachable again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, "heartbeat failed: the revocation store is unreachable");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
