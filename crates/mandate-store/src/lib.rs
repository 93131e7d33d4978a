//! mandate's storage seams: narrow async traits for the client registry, the replay cache and the
//! rate limiter (and the hop ledger and consent grants defined by mandate-chain), each with the in-memory backend that serves a single process (development mode
//! and the default `serve`). Redis backends implement the same traits and are checked by the
//! same contract tests.
//!
//! This crate holds no HTTP code and makes no decision about tokens: it stores and answers.

mod clients;
mod ledger;
mod rate_limit;
mod replay;

pub use clients::{Client, ClientRegistry, MemoryClientRegistry, UpstreamId};
pub use ledger::{MemoryConsentStore, MemoryLedger};
pub use rate_limit::{MemoryRateLimiter, RateDecision, RateLimiter};
pub use replay::{MemoryReplayCache, ReplayCache};

/// Why a store operation did not complete. Callers fail closed on every variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data mandate cannot read.
    #[error("store data unreadable: {0}")]
    Corrupt(String),
}
