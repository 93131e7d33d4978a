//! The audit stream in Redis: `mandate:audit`, one `XADD … MAXLEN ~` per event.

use async_trait::async_trait;
use mandate_model::log_safe;

use crate::audit::{AuditEvent, AuditFilter, AuditLog, AuditUnavailable, FILTER_SCAN_MAX};

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
