//! The revocation list (DESIGN.md section 6): entries for a hop, a chain, a consent grant, an
//! agent at T or a subject at T; one check that decides, for a token's facts, whether anything on
//! its chain is revoked — in one store round trip, whatever the depth, with the store's clock.
//!
//! Backends: in memory (one process) and Redis (behind the `redis` feature), checked by the same
//! contract tests. This crate must not depend on HTTP crates.

#[cfg(any(test, feature = "contract-tests"))]
#[allow(clippy::expect_used, reason = "contract assertions fail loudly")]
pub mod contract;
mod entry;
#[cfg(feature = "redis")]
mod follower;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;

pub use entry::{
    verdict, Checked, Revocation, RevocationKind, RevocationRecord, TokenFacts, Verdict,
    HEARTBEAT_KIND,
};
#[cfg(feature = "redis")]
pub use follower::{FollowerConfig, FollowerError, FollowerStats, RevocationFollower};
pub use memory::MemoryRevocations;
#[cfg(feature = "redis")]
pub use redis_store::{RedisRevocations, KEY_PREFIX, STREAM_KEY};

use async_trait::async_trait;

/// A store operation that did not complete; callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct RevocationStoreError(pub String);

/// The revocation list.
#[async_trait]
pub trait RevocationStore: Send + Sync + std::fmt::Debug {
    /// Writes the entries and their stream records atomically, stamped with the store's clock
    /// (T only grows: an agent or subject entry keeps the larger of its old and new T), and
    /// returns them as stored.
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError>;

    /// Reads the store's clock and decides for `facts`, in one round trip.
    async fn check(&self, facts: &TokenFacts) -> Result<Checked, RevocationStoreError>;

    /// The store's clock, in milliseconds.
    async fn now_ms(&self) -> Result<i64, RevocationStoreError>;

    /// Every live entry.
    async fn entries(&self) -> Result<Vec<RevocationRecord>, RevocationStoreError>;

    /// Appends this node's heartbeat to the stream, and trims the stream no tighter than
    /// `keep_ms` (the longest entry lifetime).
    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError>;

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), RevocationStoreError>;
}
