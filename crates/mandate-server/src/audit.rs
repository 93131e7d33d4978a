//! The audit stream: every admin action with the credential that took it, every refused
//! exchange with its reason. Capped (`limits.audit_stream_max`), never an unbounded structure.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
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

/// Where audit events go.
#[async_trait]
pub trait AuditLog: Send + Sync + std::fmt::Debug {
    /// Appends an event. Failing to audit is logged, never silently dropped.
    async fn record(&self, event: AuditEvent);
    /// The newest events, newest first.
    async fn recent(&self, limit: usize) -> Vec<AuditEvent>;
}

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
        tracing::info!(target: "audit", actor = %event.actor, action = %event.action, target_id = %event.target, detail = %event.detail, "audit");
        if let Ok(mut events) = self.events.lock() {
            if events.len() == self.cap {
                events.pop_front();
            }
            events.push_back(event);
        }
    }

    async fn recent(&self, limit: usize) -> Vec<AuditEvent> {
        self.events
            .lock()
            .map(|events| events.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let recent = log.recent(10).await;
        assert_eq!(recent.iter().map(|e| e.at).collect::<Vec<_>>(), [4, 3, 2]);
    }
}
