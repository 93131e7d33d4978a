//! mandate's storage seams: narrow async traits for the client registry, the replay cache, the
//! rate limiter and the audit stream (and the hop ledger, consent grants and policy defined by mandate-chain), each
//! with the in-memory backend that serves a single process (development mode and the default
//! `serve`). The Redis backends (feature `redis`) implement the same traits for deployments of
//! several nodes, and both pass the same contract suites (`contract`, feature `contract-tests`).
//!
//! This crate holds no HTTP code and makes no decision about tokens: it stores and answers.

mod audit;
mod clients;
mod consent;
#[cfg(any(test, feature = "contract-tests"))]
#[allow(
    clippy::expect_used,
    clippy::panic,
    reason = "contract assertions fail loudly"
)]
pub mod contract;
mod gates;
mod journal;
mod last_use;
mod ledger;
mod participation;
mod policy;
mod rate_limit;
#[cfg(feature = "redis")]
pub mod redis_store;
mod replay;
pub mod ssf;

pub use audit::{
    AuditEvent, AuditFilter, AuditLog, AuditUnavailable, MemoryAuditLog, FILTER_SCAN_MAX,
};
pub use clients::{
    Client, ClientRegistry, MemoryClientRegistry, PreviousSecret, ReplaceOutcome, StoredClient,
    UpstreamId,
};
pub use consent::MemoryConsentStore;
#[cfg(feature = "redis")]
pub use gates::RedisGates;
pub use gates::{Gate, GateStore, MemoryGates, Requirement};
pub use journal::{
    Journal, JournalBounds, JournaledAudit, JournaledLedger, MemoryJournal, RecordKind, StoredEntry,
};
#[cfg(feature = "redis")]
pub use last_use::RedisLastUse;
pub use last_use::{LastUse, LastUseStore, MemoryLastUse, UseKind};
pub use ledger::{MemoryLedger, DEFAULT_MEMORY_MAX_HOPS};
#[cfg(feature = "redis")]
pub use participation::RedisParticipation;
pub use participation::{MemoryParticipation, Participant, ParticipationStore};
pub use policy::MemoryPolicyStore;
pub use rate_limit::{MemoryRateLimiter, RateDecision, RateLimiter};
#[cfg(feature = "redis")]
pub use redis_store::{
    connect, connect_cluster, ClusterConnection, ConnectionManager, PerThreadConnection,
    RedisAuditLog, RedisClientRegistry, RedisConnection, RedisConsentStore, RedisJournal,
    RedisLedger, RedisPolicyStore, RedisRateLimiter, RedisReplayCache, RedisSsfStreams,
    AUDIT_STREAM_KEY, CONNECT_TIMEOUT, RESPONSE_TIMEOUT,
};
pub use replay::{MemoryReplayCache, ReplayCache};
pub use ssf::{
    Delivery, MemorySsfStreams, QueueDepth, QueuedSet, SsfStream, SsfStreamStore, StreamStatus,
};

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
