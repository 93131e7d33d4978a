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

/// The audit stream in Redis: `mandate:audit`, capped with `XADD … MAXLEN ~`.
pub struct RedisAuditLog<C> {
    connection: C,
    cap: u64,
}

impl<C> std::fmt::Debug for RedisAuditLog<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisAuditLog")
    }
}

/// The audit stream's key.
pub const AUDIT_STREAM_KEY: &str = "mandate:audit";

impl<C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static> RedisAuditLog<C> {
    /// An audit stream over `connection` keeping about `cap` events.
    pub fn new(connection: C, cap: u64) -> Self {
        Self {
            connection,
            cap: cap.max(1),
        }
    }
}

#[async_trait]
impl<C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static> AuditLog for RedisAuditLog<C> {
    async fn record(&self, event: AuditEvent) {
        tracing::info!(target: "audit", actor = %event.actor, action = %event.action, target_id = %event.target, detail = %event.detail, "audit");
        let mut connection = self.connection.clone();
        let json = serde_json::to_string(&event).unwrap_or_default();
        let written: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(AUDIT_STREAM_KEY)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.cap)
            .arg("*")
            .arg("event")
            .arg(json)
            .query_async(&mut connection)
            .await;
        if let Err(error) = written {
            // The log line above keeps the event; the stream copy is what failed.
            tracing::warn!(%error, "audit stream unavailable; event kept in the log only");
        }
    }

    async fn recent(&self, limit: usize) -> Vec<AuditEvent> {
        let mut connection = self.connection.clone();
        let entries: redis::RedisResult<Vec<(String, Vec<(String, String)>)>> =
            redis::cmd("XREVRANGE")
                .arg(AUDIT_STREAM_KEY)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query_async(&mut connection)
                .await;
        entries
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, fields)| {
                fields
                    .into_iter()
                    .find(|(k, _)| k == "event")
                    .and_then(|(_, v)| serde_json::from_str(&v).ok())
            })
            .collect()
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
