use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};

use crate::{
    verdict, Checked, Revocation, RevocationKind, RevocationRecord, RevocationStore,
    RevocationStoreError, TokenFacts, HEARTBEAT_KIND,
};

/// Every revocation key starts with this hash tag, so that an entry and its stream record are
/// written in one MULTI and one check reads them all on one shard (DESIGN.md section 6).
pub const KEY_PREFIX: &str = "{mandate:rev}";
/// The revocation stream.
pub const STREAM_KEY: &str = "{mandate:rev}:stream";

/// The revocation list in Redis (a single server or Redis Cluster, through any async
/// connection that reconnects by itself, such as `ConnectionManager`).
#[derive(Clone)]
pub struct RedisRevocations<C> {
    connection: C,
    /// Whether the deployment has replicas: revocations then wait for one to acknowledge.
    replicas: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<C> std::fmt::Debug for RedisRevocations<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisRevocations")
    }
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> RedisRevocations<C> {
    /// A revocation list over `connection`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            replicas: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Reads `INFO replication`: with replicas connected, every revocation returns only after one
    /// of them has acknowledged it (`WAIT 1`), so a failover cannot lose it (DESIGN.md section 6).
    /// Returns the number of replicas seen.
    pub async fn detect_replicas(&self) -> Result<u32, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let replicas = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        self.replicas
            .store(replicas > 0, std::sync::atomic::Ordering::Relaxed);
        Ok(replicas)
    }

    fn key(kind: RevocationKind, id: &str) -> String {
        format!("{KEY_PREFIX}:{}:{id}", kind.as_str())
    }
}

fn fail(error: redis::RedisError) -> RevocationStoreError {
    RevocationStoreError(error.to_string())
}

/// Redis `TIME` → milliseconds.
fn time_ms(value: &Value) -> Result<i64, RevocationStoreError> {
    let parts: (i64, i64) =
        redis::from_redis_value_ref(value).map_err(|e| RevocationStoreError(e.to_string()))?;
    Ok(parts.0 * 1000 + parts.1 / 1000)
}

fn parse_records(values: Vec<Option<String>>) -> Vec<Option<RevocationRecord>> {
    values
        .into_iter()
        .map(|v| v.and_then(|json| serde_json::from_str(&json).ok()))
        .collect()
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> RevocationStore for RedisRevocations<C> {
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let mut connection = self.connection.clone();
        let keys: Vec<String> = entries.iter().map(|e| Self::key(e.kind, &e.id)).collect();
        // The clock and the existing entries (T only grows), in one round trip.
        let (time, existing): (Value, Vec<Option<String>>) = redis::pipe()
            .cmd("TIME")
            .cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let now = time_ms(&time)?;
        let existing = parse_records(existing);
        let mut transaction = redis::pipe();
        transaction.atomic();
        let mut written = Vec::with_capacity(entries.len());
        for ((entry, key), previous) in entries.into_iter().zip(&keys).zip(existing) {
            let previous = previous.filter(|p| p.until > now);
            let record = RevocationRecord {
                kind: entry.kind,
                id: entry.id,
                at: previous.as_ref().map_or(now, |p| p.at.max(now)),
                until: previous
                    .as_ref()
                    .map_or(entry.until_ms, |p| p.until.max(entry.until_ms)),
                reason: entry.reason,
                by: entry.by,
            };
            let ttl = (record.until - now).max(1);
            let json =
                serde_json::to_string(&record).map_err(|e| RevocationStoreError(e.to_string()))?;
            transaction
                .cmd("SET")
                .arg(key)
                .arg(json)
                .arg("PX")
                .arg(ttl)
                .ignore();
            transaction
                .cmd("XADD")
                .arg(STREAM_KEY)
                .arg("*")
                .arg("kind")
                .arg(record.kind.as_str())
                .arg("id")
                .arg(&record.id)
                .arg("at")
                .arg(record.at)
                .arg("until")
                .arg(record.until)
                .arg("reason")
                .arg(&record.reason)
                .arg("by")
                .arg(&record.by)
                .ignore();
            written.push(record);
        }
        let _: () = transaction
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(written)
    }

    async fn check(&self, facts: &TokenFacts) -> Result<Checked, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let keys: Vec<String> = facts
            .keys()
            .into_iter()
            .map(|(k, id)| Self::key(k, id))
            .collect();
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        if !keys.is_empty() {
            pipe.cmd("MGET").arg(&keys);
        }
        let replies: Vec<Value> = pipe.query_async(&mut connection).await.map_err(fail)?;
        let now = replies
            .first()
            .map(time_ms)
            .transpose()?
            .unwrap_or_default();
        let found = match replies.get(1) {
            Some(value) => {
                let raw: Vec<Option<String>> = redis::from_redis_value_ref(value)
                    .map_err(|e| RevocationStoreError(e.to_string()))?;
                parse_records(raw)
                    .into_iter()
                    .map(|r| r.filter(|r| r.until > now))
                    .collect()
            }
            None => vec![],
        };
        Ok(Checked {
            verdict: verdict(facts, &found),
            now_ms: now,
        })
    }

    async fn now_ms(&self) -> Result<i64, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let time: Value = redis::cmd("TIME")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        time_ms(&time)
    }

    async fn entries(&self) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        // The stream holds every entry still alive (it is trimmed no tighter than the longest
        // lifetime); reading it avoids SCAN, which Redis Cluster cannot route to one shard.
        let mut connection = self.connection.clone();
        let (time, records): (Value, Vec<(String, Vec<(String, String)>)>) = redis::pipe()
            .cmd("TIME")
            .cmd("XRANGE")
            .arg(STREAM_KEY)
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let now = time_ms(&time)?;
        let mut latest: std::collections::BTreeMap<(RevocationKind, String), RevocationRecord> =
            std::collections::BTreeMap::new();
        for (_, fields) in records {
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let Some(kind) = field("kind").and_then(RevocationKind::parse) else {
                continue;
            };
            let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let record = RevocationRecord {
                kind,
                id: field("id").unwrap_or_default().to_owned(),
                at: number("at"),
                until: number("until"),
                reason: field("reason").unwrap_or_default().to_owned(),
                by: field("by").unwrap_or_default().to_owned(),
            };
            latest.insert((kind, record.id.clone()), record);
        }
        let mut entries: Vec<RevocationRecord> =
            latest.into_values().filter(|r| r.until > now).collect();
        entries.sort_by(|a, b| (a.at, a.kind, &a.id).cmp(&(b.at, b.kind, &b.id)));
        Ok(entries)
    }

    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError> {
        let mut connection = self.connection.clone();
        let now = self.now_ms().await?;
        let result: RedisResult<String> = redis::cmd("XADD")
            .arg(STREAM_KEY)
            .arg("MINID")
            .arg("~")
            .arg(now - keep_ms)
            .arg("*")
            .arg("kind")
            .arg(HEARTBEAT_KIND)
            .arg("id")
            .arg(node)
            .arg("at")
            .arg(now)
            .query_async(&mut connection)
            .await;
        result.map(|_| ()).map_err(fail)
    }

    async fn ping(&self) -> Result<(), RevocationStoreError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(())
    }
}
