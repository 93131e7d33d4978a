use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{RedisResult, Value};

use crate::{
    not_covered, verdict, Checked, Revocation, RevocationKind, RevocationList, RevocationRecord,
    RevocationStoreError, RevocationStream, StreamEvent, StreamPosition, TokenFacts,
    HEARTBEAT_KIND, READ_AFTER_COUNT,
};

/// Every revocation key starts with this hash tag, so that an entry and its stream record are
/// written in one script and one check reads them all on one shard (DESIGN.md section 6).
pub const KEY_PREFIX: &str = "{mandate:rev}";
/// The revocation stream.
pub const STREAM_KEY: &str = "{mandate:rev}:stream";
/// The index of the entries: a sorted set of `<kind>:<id>`, scored by the entry's `until` (ms).
/// A snapshot reads it and the entries it names, never the stream, whose heartbeats make it far
/// longer than the list (ten nodes for an hour: 36,000 records).
pub const INDEX_KEY: &str = "{mandate:rev}:index";
/// Entries read by one `MGET` of a snapshot.
const SNAPSHOT_BATCH: usize = 500;
/// How often [`RevocationStore::read_after`] looks at the stream again while it waits.
///
/// It never blocks in Redis (`XREAD` without `BLOCK`): the store's connection is multiplexed and
/// shared by every request of the node, and a blocked `XREAD` would hold up every command queued
/// behind it on that connection for as long as it blocks. A look costs one pipeline (`XREAD`
/// and the stream's first and last ids); mandate's feed runs one reader per node, so that is at
/// most ten pipelines a second per node, and a record reaches the reader within this interval.
pub const FEED_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Writes revocation entries and their stream records, T read from the server's clock inside the
/// script (T only grows: an entry still live keeps its later `at` and `until`). Answers `at`,
/// `until` of each entry, in order.
const REVOKE: &str = r#"
-- KEYS: the entry keys, then the index, then the stream; ARGV: kind, id, until (ms), reason, by
-- for each entry
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local stream = KEYS[#KEYS]
local index = KEYS[#KEYS - 1]
local answer = {}
for i = 1, #KEYS - 2 do
  local base = (i - 1) * 5
  local kind, id, reason, by = ARGV[base + 1], ARGV[base + 2], ARGV[base + 4], ARGV[base + 5]
  local at, untl = now, tonumber(ARGV[base + 3])
  local stored = redis.call('GET', KEYS[i])
  if stored then
    local ok, previous = pcall(cjson.decode, stored)
    if ok and type(previous) == 'table' and tonumber(previous['until'])
        and tonumber(previous['until']) > now then
      at = math.max(at, tonumber(previous['at']) or at)
      untl = math.max(untl, tonumber(previous['until']))
    end
  end
  local record = '{"kind":' .. cjson.encode(kind) .. ',"id":' .. cjson.encode(id)
    .. ',"at":' .. string.format('%d', at) .. ',"until":' .. string.format('%d', untl)
    .. ',"reason":' .. cjson.encode(reason) .. ',"by":' .. cjson.encode(by) .. '}'
  redis.call('SET', KEYS[i], record, 'PX', math.max(untl - now, 1))
  redis.call('ZADD', index, untl, kind .. ':' .. id)
  redis.call('XADD', stream, '*', 'kind', kind, 'id', id, 'at', string.format('%d', at),
    'until', string.format('%d', untl), 'reason', reason, 'by', by)
  answer[#answer + 1] = at
  answer[#answer + 1] = untl
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
return answer
"#;

/// How long a revocation waits for a replica to acknowledge it (`WAIT 1 <ms>`) when the
/// deployment has replicas. Shorter than the connections' 2 s response timeout, so that a replica
/// that does not answer gives this store's own error, not a timeout of the shared connection.
/// The wait holds up the commands queued behind it on that connection; with a healthy replica it
/// lasts one round trip to it.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_millis(1500);

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

    /// Reads `INFO replication` of the node holding the revocation keys: with replicas connected,
    /// every revocation returns only after one of them has acknowledged it (`WAIT 1`), so a
    /// failover cannot lose it (DESIGN.md section 6). Called at start-up; each heartbeat reads it
    /// again, so replicas attached or gone later are noticed within a second. Returns the number
    /// of replicas seen.
    pub async fn detect_replicas(&self) -> Result<u32, RevocationStoreError> {
        let mut connection = self.connection.clone();
        // The keyed command routes the pipeline to the stream's node on a cluster.
        let (_, info): (Value, String) = redis::pipe()
            .cmd("EXISTS")
            .arg(STREAM_KEY)
            .cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(self.note_replicas(&info))
    }

    /// Adds to the index every live entry the stream holds, for entries written before the index
    /// existed (or by a node of an older version during a rolling upgrade). Idempotent (an
    /// entry's score only grows), run at every start-up; reads the stream in pages. Returns the
    /// number of records looked at.
    pub async fn index_entries(&self) -> Result<usize, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let now = self.now_ms().await?;
        let mut start = "-".to_owned();
        let mut seen = 0;
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(STREAM_KEY)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(SNAPSHOT_BATCH)
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            let Some(last) = page.ids.last() else {
                return Ok(seen);
            };
            start = format!("({}", last.id);
            seen += page.ids.len();
            let mut pipe = redis::pipe();
            let mut live = 0;
            for record in &page.ids {
                if let Some(StreamEvent::Revocation { record, .. }) = stream_event(record) {
                    if record.until > now {
                        pipe.cmd("ZADD")
                            .arg(INDEX_KEY)
                            .arg("GT")
                            .arg(record.until)
                            .arg(format!("{}:{}", record.kind.as_str(), record.id))
                            .ignore();
                        live += 1;
                    }
                }
            }
            if live > 0 {
                pipe.query_async::<()>(&mut connection)
                    .await
                    .map_err(fail)?;
            }
        }
    }

    fn note_replicas(&self, info: &str) -> u32 {
        let replicas = connected_replicas(info);
        self.replicas
            .store(replicas > 0, std::sync::atomic::Ordering::Relaxed);
        replicas
    }

    fn key(kind: RevocationKind, id: &str) -> String {
        format!("{KEY_PREFIX}:{}:{id}", kind.as_str())
    }

    /// Adds `XRANGE - + COUNT 1` and `XREVRANGE + - COUNT 1` (the first and last records) to
    /// `pipe`.
    fn stream_bounds(pipe: &mut redis::Pipeline) -> &mut redis::Pipeline {
        pipe.cmd("XRANGE")
            .arg(STREAM_KEY)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
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

/// A field value as text (invalid UTF-8 replaced, so that one odd record cannot wedge a reader).
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One stream record as an event: `None` for a record of an unknown kind or with an id that is
/// not a stream id. Missing numbers read as 0, as [`RedisRevocations::entries`] reads them; a
/// heartbeat without `at` was written at its id's millisecond.
pub(crate) fn stream_event(record: &StreamId) -> Option<StreamEvent> {
    let id: StreamPosition = record.id.parse().ok()?;
    let field = |name: &str| record.map.get(name).and_then(text);
    let number = |name: &str| field(name).and_then(|v| v.parse::<i64>().ok());
    let kind = field("kind")?;
    if kind == HEARTBEAT_KIND {
        return Some(StreamEvent::Heartbeat {
            id,
            node: field("id").unwrap_or_default(),
            at: number("at").unwrap_or_else(|| i64::try_from(id.ms).unwrap_or(i64::MAX)),
        });
    }
    let kind = RevocationKind::parse(&kind)?;
    Some(StreamEvent::Revocation {
        id,
        record: RevocationRecord {
            kind,
            id: field("id").unwrap_or_default(),
            at: number("at").unwrap_or(0),
            until: number("until").unwrap_or(0),
            reason: field("reason").unwrap_or_default(),
            by: field("by").unwrap_or_default(),
        },
    })
}

/// The id of the first record of a range reply.
fn first_id(reply: &StreamRangeReply) -> Option<StreamPosition> {
    reply.ids.first().and_then(|r| r.id.parse().ok())
}

/// Whether a stream whose first and last records are `first` and `last` still holds every record
/// after `position`. Trimming removes the oldest records first, so it does when `position` is
/// within them; before the first, records after `position` may have been trimmed (a new snapshot
/// is the safe answer); after the last, it is not a position of this stream. An empty or missing
/// stream covers only the start.
fn covered(
    position: StreamPosition,
    first: Option<StreamPosition>,
    last: Option<StreamPosition>,
) -> bool {
    match (first, last) {
        (Some(first), Some(last)) => first <= position && position <= last,
        _ => position == StreamPosition::START,
    }
}

/// `connected_slaves` of an `INFO replication` answer (0 when absent).
fn connected_replicas(info: &str) -> u32 {
    info.lines()
        .find_map(|l| l.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// A stored entry. One that does not parse is an error, never an absence: a revocation list that
/// cannot be read must refuse tokens, not let them through (SECURITY.md, finding 6).
fn parse_record(key: &str, json: &str) -> Result<RevocationRecord, RevocationStoreError> {
    serde_json::from_str(json).map_err(|error| {
        RevocationStoreError(format!(
            "the revocation entry {key} cannot be read ({error}); refusing what it may cover"
        ))
    })
}

fn parse_records(
    keys: &[String],
    values: Vec<Option<String>>,
) -> Result<Vec<Option<RevocationRecord>>, RevocationStoreError> {
    keys.iter()
        .zip(values)
        .map(|(key, value)| value.map(|json| parse_record(key, &json)).transpose())
        .collect()
}

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> RevocationList for RedisRevocations<C> {
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        if entries.is_empty() {
            return Ok(vec![]);
        }
        let mut connection = self.connection.clone();
        let keys: Vec<String> = entries.iter().map(|e| Self::key(e.kind, &e.id)).collect();
        // One script reads the clock and the existing entries and writes the new ones with their
        // stream records, so that nothing runs between the reading of T and the write: an
        // exchange that reads the clock before it issues a token covered by T, one that reads it
        // after finds the entry in its check (its clock read and check are one pipeline, after
        // this script or before it). Two nodes revoking the same id cannot interleave either,
        // so T only grows. All keys carry the `{mandate:rev}` hash tag: one shard.
        let mut argv: Vec<String> = Vec::with_capacity(entries.len() * 5);
        for entry in &entries {
            argv.extend([
                entry.kind.as_str().to_owned(),
                entry.id.clone(),
                entry.until_ms.to_string(),
                entry.reason.clone(),
                entry.by.clone(),
            ]);
        }
        // Sent with EVAL rather than EVALSHA: revocations are rare, and the script is then in the
        // same pipeline as the WAIT that follows it.
        let mut transaction = redis::pipe();
        transaction
            .cmd("EVAL")
            .arg(REVOKE)
            .arg(keys.len() + 2)
            .arg(&keys)
            .arg(INDEX_KEY)
            .arg(STREAM_KEY)
            .arg(&argv);
        let times: Vec<i64> = if self.replicas.load(std::sync::atomic::Ordering::Relaxed) {
            let wait_ms = u64::try_from(REPLICA_ACK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
            transaction.cmd("WAIT").arg(1).arg(wait_ms);
            let (times, acknowledged): (Vec<i64>, u32) = transaction
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            if acknowledged == 0 {
                // Written on the primary (and in force there), but a failover now could lose
                // it: the caller is told to retry, which is harmless (T only grows).
                return Err(RevocationStoreError(format!(
                    "no replica acknowledged the revocation within {} ms",
                    REPLICA_ACK_TIMEOUT.as_millis()
                )));
            }
            times
        } else {
            let (times,): (Vec<i64>,) = transaction
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            times
        };
        if times.len() != entries.len() * 2 {
            return Err(RevocationStoreError(format!(
                "the revocation script answered {} values for {} entries",
                times.len(),
                entries.len()
            )));
        }
        let written = entries
            .into_iter()
            .zip(times.chunks_exact(2))
            .map(|(entry, at_until)| RevocationRecord {
                kind: entry.kind,
                id: entry.id,
                at: at_until[0],
                until: at_until[1],
                reason: entry.reason,
                by: entry.by,
            })
            .collect();
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
                parse_records(&keys, raw)?
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
        // The index names every live entry (and some just expired, until the next revocation
        // prunes them); the entry keys hold the records. All share one hash tag, so on a cluster
        // every command here goes to one shard, which SCAN could not.
        let mut connection = self.connection.clone();
        let (time, members): (Value, Vec<String>) = redis::pipe()
            .cmd("TIME")
            .cmd("ZRANGE")
            .arg(INDEX_KEY)
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let now = time_ms(&time)?;
        let mut entries = Vec::with_capacity(members.len());
        for batch in members.chunks(SNAPSHOT_BATCH) {
            let keys: Vec<String> = batch
                .iter()
                .map(|member| format!("{KEY_PREFIX}:{member}"))
                .collect();
            let values: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&keys)
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            for (key, value) in keys.iter().zip(values) {
                // Gone: it expired after the index was read.
                let Some(json) = value else { continue };
                let record = parse_record(key, &json)?;
                if record.until > now {
                    entries.push(record);
                }
            }
        }
        entries.sort_by(|a, b| (a.at, a.kind, &a.id).cmp(&(b.at, b.kind, &b.id)));
        Ok(entries)
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

#[async_trait]
impl<C: ConnectionLike + Clone + Send + Sync + 'static> RevocationStream for RedisRevocations<C> {
    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError> {
        let mut connection = self.connection.clone();
        let now = self.now_ms().await?;
        // The replication state is read again with each heartbeat (same node as the stream).
        let result: RedisResult<(String, String)> = redis::pipe()
            .cmd("XADD")
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
            .cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await;
        let (_, info) = result.map_err(fail)?;
        self.note_replicas(&info);
        Ok(())
    }

    async fn stream_position(&self) -> Result<StreamPosition, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let last: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(STREAM_KEY)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(first_id(&last).unwrap_or(StreamPosition::START))
    }

    async fn stream_covers(&self, position: StreamPosition) -> Result<bool, RevocationStoreError> {
        let mut connection = self.connection.clone();
        let (first, last): (StreamRangeReply, StreamRangeReply) =
            Self::stream_bounds(&mut redis::pipe())
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
        Ok(covered(position, first_id(&first), first_id(&last)))
    }

    /// Polls with `XREAD` (never `BLOCK`: see [`FEED_POLL_INTERVAL`]), pipelined with the stream's
    /// first and last ids, which are read after the records: a trim past `position` before the
    /// read shows as a first id past it.
    async fn read_after(
        &self,
        from: StreamPosition,
        max_wait: Duration,
    ) -> Result<(Vec<StreamEvent>, StreamPosition), RevocationStoreError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut connection = self.connection.clone();
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("XREAD")
                .arg("COUNT")
                .arg(READ_AFTER_COUNT)
                .arg("STREAMS")
                .arg(STREAM_KEY)
                .arg(from.to_string());
            let (read, first, last): (Option<StreamReadReply>, StreamRangeReply, StreamRangeReply) =
                Self::stream_bounds(&mut pipe)
                    .query_async(&mut connection)
                    .await
                    .map_err(fail)?;
            if !covered(from, first_id(&first), first_id(&last)) {
                return Err(not_covered(from));
            }
            let records: Vec<&StreamId> = read
                .iter()
                .flat_map(|reply| &reply.keys)
                .filter(|stream| stream.key == STREAM_KEY)
                .flat_map(|stream| &stream.ids)
                .collect();
            // The position moves past every record read, also past one that is not an event
            // (an unknown kind), so that such a record cannot hold a reader in place.
            if let Some(next) = records
                .iter()
                .rev()
                .find_map(|r| r.id.parse::<StreamPosition>().ok())
            {
                let events = records.into_iter().filter_map(stream_event).collect();
                return Ok((events, next));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok((Vec::new(), from));
            }
            tokio::time::sleep(FEED_POLL_INTERVAL.min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_is_covered_within_the_stream_only() {
        let p = |ms, seq| StreamPosition { ms, seq };
        let (first, last) = (Some(p(100, 0)), Some(p(200, 3)));
        assert!(covered(p(100, 0), first, last));
        assert!(covered(p(150, 7), first, last));
        assert!(covered(p(200, 3), first, last));
        // Before the first record: something after it may have been trimmed.
        assert!(!covered(p(99, 9), first, last));
        assert!(!covered(StreamPosition::START, first, last));
        // After the last: not a position of this stream.
        assert!(!covered(p(200, 4), first, last));
        // An empty or missing stream covers only the start.
        assert!(covered(StreamPosition::START, None, None));
        assert!(!covered(p(1, 0), None, None));
    }

    #[test]
    fn stream_records_become_events() {
        let record = |id: &str, fields: &[(&str, &str)]| StreamId {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            ..StreamId::default()
        };
        assert_eq!(
            stream_event(&record("7-1", &[("kind", "heartbeat"), ("id", "node-a")])),
            Some(StreamEvent::Heartbeat {
                id: StreamPosition { ms: 7, seq: 1 },
                node: "node-a".into(),
                at: 7
            })
        );
        let hop = stream_event(&record(
            "8-0",
            &[("kind", "hop"), ("id", "h1"), ("at", "5"), ("until", "9")],
        ));
        assert!(matches!(
            hop,
            Some(StreamEvent::Revocation {
                record: RevocationRecord {
                    kind: RevocationKind::Hop,
                    at: 5,
                    until: 9,
                    ..
                },
                ..
            })
        ));
        assert_eq!(stream_event(&record("9-0", &[("kind", "other")])), None);
        assert_eq!(stream_event(&record("x", &[("kind", "hop")])), None);
    }
}
