//! The mandate authorization server as a library: configuration, state, the public routes
//! (`/token`, discovery, JWKS, health) and the admin listener.
//!
//! Handlers are thin: they parse, call one domain function and map its error through
//! [`error::OAuthError`], the one place that knows HTTP status codes. Nothing depends on this
//! crate except the `mandate` binary and the test kit.

pub mod admin;
pub mod audit;
mod bootstrap;
pub use mandate_core::agents;
pub use mandate_core::chain_id;
pub mod client_auth;
pub mod config;
pub mod console;
pub mod demo_idp;
pub mod dev;
pub mod discovery;
pub mod error;
pub mod exchange;
pub mod feed;
pub mod form;
pub mod grant;
pub mod http;
pub mod id_jag;
pub mod introspect;
pub mod journal_keeper;
pub mod jwks_remote;
pub mod keys;
pub mod lifecycle;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otel;
pub mod participation;
pub mod revocation;
pub mod server;
pub mod ssf_receive;
pub mod ssf_transmit;
pub mod state;
pub mod tls;

pub use config::{ConfigError, ConfigSource, Settings};
pub use server::{start, Listeners, RunningServer, Signals};
pub use state::{AppState, BuildOptions};
