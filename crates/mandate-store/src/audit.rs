//! The audit stream: every admin action with the credential that took it, every refused
//! exchange with its reason. Capped, never an unbounded structure. The in-memory stream here;
//! the Redis one in [`crate::redis_store`]. Both write each event to the `audit` log target too,
//! with client-supplied text escaped.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use mandate_model::log_safe;
use serde::{Deserialize, Serialize};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When (ms, the store's clock where available).
    pub at: i64,
    /// Who: an admin credential's name, or `client:<id>`.
    pub actor: String,
    /// What, e.g. `revoke.chain`.
    pub action: String,
    /// On what.
    pub target: String,
    /// Details (outcome, reason code).
    pub detail: String,
}

impl AuditEvent {
    /// `actor` did `action` on `target` at `at` (ms), with `detail`.
    pub fn new(
        at: i64,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: detail.into(),
        }
    }
}

/// Which events a reader wants: every field given must match exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this action.
    pub action: Option<String>,
    /// Only this actor.
    pub actor: Option<String>,
}

impl AuditFilter {
    /// Whether `event` passes.
    pub fn matches(&self, event: &AuditEvent) -> bool {
        self.action.as_ref().is_none_or(|a| *a == event.action)
            && self.actor.as_ref().is_none_or(|a| *a == event.actor)
    }
}

/// Why the audit stream could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit stream unavailable: {0}")]
pub struct AuditUnavailable(pub String);

/// Where audit events go.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Appends an event. Failing to audit is logged, never silently dropped.
    async fn record(&self, event: AuditEvent);
    /// The newest `limit` events that pass `filter`, newest first.
    async fn recent(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, AuditUnavailable>;
}

/// How many of the newest events a filtered read of the Redis stream looks at, at most: a filter
/// that matches little must not make one admin request walk a stream of a million events.
pub const FILTER_SCAN_MAX: usize = 100_000;

/// The in-memory audit stream, capped.
#[derive(Debug)]
pub struct MemoryAuditLog {
    cap: usize,
    events: Mutex<VecDeque<AuditEvent>>,
}

impl MemoryAuditLog {
    /// A stream keeping at most `cap` events.
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            events: Mutex::new(VecDeque::new()),
        }
    }
}

#[async_trait]
impl AuditLog for MemoryAuditLog {
    async fn record(&self, event: AuditEvent) {
        tracing::info!(target: "audit", actor = %log_safe(&event.actor), action = %event.action, target_id = %log_safe(&event.target), detail = %log_safe(&event.detail), "audit");
        if let Ok(mut events) = self.events.lock() {
            if events.len() == self.cap {
                events.pop_front();
            }
            events.push_back(event);
        }
    }

    async fn recent(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, AuditUnavailable> {
        let events = self
            .events
            .lock()
            .map_err(|_| AuditUnavailable("audit lock poisoned".into()))?;
        Ok(events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meets_the_contract() {
        crate::contract::audit(&MemoryAuditLog::new(100)).await;
    }

    fn event(n: i64) -> AuditEvent {
        AuditEvent {
            at: n,
            actor: "ops".into(),
            action: "revoke.hop".into(),
            target: format!("hop_{n}"),
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn the_stream_is_capped_and_newest_first() {
        let log = MemoryAuditLog::new(3);
        for n in 0..5 {
            log.record(event(n)).await;
        }
        let recent = log.recent(&AuditFilter::default(), 10).await.unwrap();
        assert_eq!(recent.iter().map(|e| e.at).collect::<Vec<_>>(), [4, 3, 2]);
    }

    #[tokio::test]
    async fn filters_match_exactly_and_the_limit_counts_matches() {
        let log = MemoryAuditLog::new(10);
        for n in 0..6 {
            let mut e = event(n);
            if n % 2 == 0 {
                e.action = "exchange.refused".into();
                e.actor = "client:assistant".into();
            }
            log.record(e).await;
        }
        let filter = AuditFilter {
            action: Some("exchange.refused".into()),
            actor: None,
        };
        let found = log.recent(&filter, 2).await.unwrap();
        assert_eq!(found.iter().map(|e| e.at).collect::<Vec<_>>(), [4, 2]);
        let filter = AuditFilter {
            action: Some("exchange".into()),
            actor: None,
        };
        assert!(log.recent(&filter, 10).await.unwrap().is_empty());
        let filter = AuditFilter {
            action: None,
            actor: Some("ops".into()),
        };
        assert_eq!(log.recent(&filter, 10).await.unwrap().len(), 3);
    }
}
