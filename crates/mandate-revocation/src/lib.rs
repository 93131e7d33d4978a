//! The revocation list (DESIGN.md section 6): entries for a hop, a chain, a consent grant, an
//! agent at T or a subject at T; one check that decides, for a token's facts, whether anything on
//! its chain is revoked — in one store round trip, whatever the depth, with the store's clock.
//!
//! Backends: in memory (one process) and Redis (behind the `redis` feature), checked by the same
//! contract tests. Both also serve the revocation stream to readers
//! ([`RevocationStore::read_after`]): the feed mandate serves to apps that cannot reach Redis, and
//! the in-process copies ([`RevocationSet`]) that followers keep. This crate must not depend on
//! HTTP crates.

mod acl;
#[cfg(any(test, feature = "contract-tests"))]
#[allow(clippy::expect_used, reason = "contract assertions fail loudly")]
pub mod contract;
mod copy;
mod entry;
#[cfg(feature = "redis")]
mod follower;
mod memory;
#[cfg(feature = "redis")]
mod redis_store;
mod set;
mod shell;
mod stream;

pub use acl::verifier_acl_rule;
pub use copy::{FollowedCopy, FollowerError};
pub use entry::{
    verdict, Checked, Revocation, RevocationKind, RevocationRecord, TokenFacts, Verdict,
    HEARTBEAT_KIND, MAX_VERIFIER_CLOCK_SKEW_SECS,
};
#[cfg(feature = "redis")]
pub use follower::{FollowerConfig, FollowerStats, RevocationFollower};
pub use memory::{MemoryRevocations, MEMORY_STREAM_CAPACITY};
#[cfg(feature = "redis")]
pub use redis_store::{RedisRevocations, FEED_POLL_INTERVAL, KEY_PREFIX, STREAM_KEY};
pub use set::RevocationSet;
pub use shell::{FollowerShell, FollowerState, ShellShared};
pub use stream::{InvalidPosition, StreamEvent, StreamPosition};

use std::time::Duration;

use async_trait::async_trait;

/// How many stream records one [`RevocationStream::read_after`] returns at most (a longer backlog
/// takes several reads).
pub const READ_AFTER_COUNT: usize = 1000;

/// A store operation that did not complete; callers fail closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("revocation store unavailable: {0}")]
pub struct RevocationStoreError(pub String);

/// The revocation list: its entries, the one check, the store's clock.
#[async_trait]
pub trait RevocationList: Send + Sync + std::fmt::Debug {
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

    /// Whether the store answers.
    async fn ping(&self) -> Result<(), RevocationStoreError>;
}

/// The revocation stream readers follow: every entry written, and each node's heartbeats.
///
/// The defaults are those of a store without a stream: every call is an error.
#[async_trait]
pub trait RevocationStream: Send + Sync + std::fmt::Debug {
    /// Appends this node's heartbeat to the stream, and trims the stream no tighter than
    /// `keep_ms` (the longest entry lifetime).
    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError> {
        let _ = (node, keep_ms);
        Err(no_stream())
    }

    /// The stream position a reader continues from after a snapshot: read this first, then
    /// [`RevocationList::entries`], then [`read_after`](Self::read_after) from it. A record
    /// written in between is then in both the snapshot and the stream (applying it twice is
    /// harmless); none is in neither.
    async fn stream_position(&self) -> Result<StreamPosition, RevocationStoreError> {
        Err(no_stream())
    }

    /// Whether the stream still holds every record written after `position`, so that
    /// [`read_after`](Self::read_after) from it misses nothing. `false` when the stream was
    /// trimmed past it and when it is not a position of this stream (ahead of its last record, or
    /// from a store that has since been emptied or restarted): the reader must take a new
    /// snapshot. (A malformed position never gets here: it does not parse.)
    async fn stream_covers(&self, position: StreamPosition) -> Result<bool, RevocationStoreError> {
        let _ = position;
        Err(no_stream())
    }

    /// The stream records after `position` (at most [`READ_AFTER_COUNT`], oldest first) and the
    /// position to read from next (the last record's id; `position` itself when there was none).
    /// When there is none yet, waits up to `max_wait` for one (zero: answers at once), then
    /// returns an empty list.
    ///
    /// A position the stream does not cover (see [`stream_covers`](Self::stream_covers)) is an
    /// error, as is a store failure; a reader tells them apart with `stream_covers`.
    async fn read_after(
        &self,
        position: StreamPosition,
        max_wait: Duration,
    ) -> Result<(Vec<StreamEvent>, StreamPosition), RevocationStoreError> {
        let _ = (position, max_wait);
        Err(no_stream())
    }
}

/// A revocation store as mandate's nodes use it: the list and its stream, written together.
pub trait RevocationStore: RevocationList + RevocationStream {}

impl<T: RevocationList + RevocationStream + ?Sized> RevocationStore for T {}

fn no_stream() -> RevocationStoreError {
    RevocationStoreError("this revocation store has no stream".into())
}

/// The error of a read from a position the stream does not cover.
fn not_covered(position: StreamPosition) -> RevocationStoreError {
    RevocationStoreError(format!(
        "the stream does not cover position {position:?} (trimmed past, or not of this stream): take a new snapshot"
    ))
}
