//! The audit stream: every admin action with the credential that took it, every refused
//! exchange with its reason. Capped (`limits.audit_stream_max`), never an unbounded structure.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use mandate_model::log_safe;
use serde::{Deserialize, Serialize};

use crate::error::OAuthError;
use crate::state::AppState;

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

/// The refusal a token-endpoint operation ended with. The operation's refusal paths call
/// [`Refusals::refuse`] where the decision is made (a synchronous closure cannot append to the
/// stream): it logs the refusal on the `audit` target and notes it; the operation appends the
/// noted refusal once it returns ([`Refusals::flush`]). Store failures and authentication
/// failures are not refusals of an exchange and never pass through here.
#[derive(Debug)]
pub(crate) struct Refusals {
    client_id: String,
    action: &'static str,
    noted: Mutex<Option<String>>,
}

impl Refusals {
    /// Refusals of `action` (e.g. `exchange.refused`) for the authenticated `client_id`.
    pub(crate) fn new(client_id: &str, action: &'static str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            action,
            noted: Mutex::new(None),
        }
    }

    /// Logs and notes a refusal as `<oauth error code>: <reason>`, and gives `error` back.
    /// `reason` is mandate's own description (an error's display), never a token or a secret.
    pub(crate) fn refuse(&self, reason: &dyn std::fmt::Display, error: OAuthError) -> OAuthError {
        let reason = reason.to_string();
        tracing::info!(target: "audit", client_id = %self.client_id, action = self.action, reason = %log_safe(&reason), "refused");
        let code = serde_json::to_value(error.code())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(mut noted) = self.noted.lock() {
            *noted = Some(format!("{code}: {reason}"));
        }
        error
    }

    /// Appends the noted refusal, if any, by `client:<client_id>` on `target`.
    pub(crate) async fn flush(&self, state: &AppState, target: &str) {
        let detail = self.noted.lock().ok().and_then(|mut noted| noted.take());
        if let Some(detail) = detail {
            state
                .audit
                .record(AuditEvent {
                    at: state.clock.now().timestamp_millis(),
                    actor: format!("client:{}", self.client_id),
                    action: self.action.to_owned(),
                    target: target.to_owned(),
                    detail,
                })
                .await;
        }
    }
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
        tracing::info!(target: "audit", actor = %log_safe(&event.actor), action = %event.action, target_id = %log_safe(&event.target), detail = %log_safe(&event.detail), "audit");
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

    async fn recent(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, AuditUnavailable> {
        let mut connection = self.connection.clone();
        let unfiltered = filter == &AuditFilter::default();
        let batch = if unfiltered { limit } else { 1_000 };
        let mut found = Vec::with_capacity(limit.min(1_000));
        let mut upper = "+".to_owned();
        let mut scanned = 0usize;
        while found.len() < limit && scanned < FILTER_SCAN_MAX {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
                .arg(AUDIT_STREAM_KEY)
                .arg(&upper)
                .arg("-")
                .arg("COUNT")
                .arg(batch)
                .query_async(&mut connection)
                .await
                .map_err(|e| AuditUnavailable(e.to_string()))?;
            let fetched = entries.len();
            scanned += fetched;
            for (id, fields) in entries {
                // Exclusive from here on (Redis 6.2+), so no entry is read twice.
                upper = format!("({id}");
                let event = fields
                    .into_iter()
                    .find(|(k, _)| k == "event")
                    .and_then(|(_, v)| serde_json::from_str::<AuditEvent>(&v).ok());
                if let Some(event) = event.filter(|e| filter.matches(e)) {
                    found.push(event);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            if fetched < batch {
                break;
            }
        }
        Ok(found)
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
