use std::collections::HashMap;

use async_trait::async_trait;
use redis::Script;

use super::{unavailable, RedisConnection};
use crate::ssf::{QueueDepth, QueuedSet, SsfStream, SsfStreamStore};
use crate::StoreError;

/// The streams in one hash; each stream's queue in three keys sharing a hash tag (one Cluster
/// slot), so that every queue operation is one atomic script: a sorted set of `jti`s by arrival,
/// a hash `jti` → SET, and counters. Durable as the server's persistence (AOF) is.
pub struct RedisSsfStreams<C> {
    connection: C,
    enqueue: Script,
    ack: Script,
}

impl<C> std::fmt::Debug for RedisSsfStreams<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisSsfStreams")
    }
}

const STREAMS_KEY: &str = "mandate:ssf:streams";

/// KEYS: order, sets, meta. ARGV: cap, then jti, SET pairs. A `jti` already queued is not
/// queued twice.
const ENQUEUE: &str = r"
local cap = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    local seq = redis.call('HINCRBY', KEYS[3], 'seq', 1)
    redis.call('ZADD', KEYS[1], seq, ARGV[i])
  end
end
local n = redis.call('ZCARD', KEYS[1])
if n > cap then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, n - cap - 1)
  for _, jti in ipairs(oldest) do redis.call('HDEL', KEYS[2], jti) end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1)
  redis.call('HINCRBY', KEYS[3], 'dropped', n - cap)
end
return n
";

/// KEYS: order, sets. ARGV: the acknowledged `jti`s.
const ACK: &str = r"
local removed = 0
for _, jti in ipairs(ARGV) do
  removed = removed + redis.call('ZREM', KEYS[1], jti)
  redis.call('HDEL', KEYS[2], jti)
end
return removed
";

impl<C: RedisConnection> RedisSsfStreams<C> {
    /// The streams over `connection`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            enqueue: Script::new(ENQUEUE),
            ack: Script::new(ACK),
        }
    }
}

fn queue_keys(stream_id: &str) -> [String; 3] {
    [
        format!("mandate:ssf:{{{stream_id}}}:order"),
        format!("mandate:ssf:{{{stream_id}}}:sets"),
        format!("mandate:ssf:{{{stream_id}}}:meta"),
    ]
}

fn parse(json: &str) -> Result<SsfStream, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("unreadable stream: {e}")))
}

#[async_trait]
impl<C: RedisConnection> SsfStreamStore for RedisSsfStreams<C> {
    async fn put(&self, stream: &SsfStream) -> Result<(), StoreError> {
        let json = serde_json::to_string(stream)
            .map_err(|e| StoreError::Corrupt(format!("stream not serializable: {e}")))?;
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("HSET")
            .arg(STREAMS_KEY)
            .arg(&stream.stream_id)
            .arg(json)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, stream_id: &str) -> Result<Option<SsfStream>, StoreError> {
        let mut connection = self.connection.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(STREAMS_KEY)
            .arg(stream_id)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        json.as_deref().map(parse).transpose()
    }

    async fn all(&self) -> Result<Vec<SsfStream>, StoreError> {
        let mut connection = self.connection.clone();
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(STREAMS_KEY)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let mut streams = all
            .values()
            .map(|json| parse(json))
            .collect::<Result<Vec<_>, _>>()?;
        streams.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        Ok(streams)
    }

    async fn delete(&self, stream_id: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        let removed: i64 = redis::cmd("HDEL")
            .arg(STREAMS_KEY)
            .arg(stream_id)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let _: i64 = redis::cmd("DEL")
            .arg(&queue_keys(stream_id))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    async fn enqueue(
        &self,
        stream_id: &str,
        sets: &[QueuedSet],
        cap: u64,
    ) -> Result<(), StoreError> {
        if sets.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection.clone();
        let mut invocation = self.enqueue.prepare_invoke();
        for key in queue_keys(stream_id) {
            invocation.key(key);
        }
        invocation.arg(cap);
        for queued in sets {
            invocation.arg(&queued.jti).arg(&queued.set);
        }
        let _: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn pending(&self, stream_id: &str, max: u64) -> Result<Vec<QueuedSet>, StoreError> {
        if max == 0 {
            return Ok(vec![]);
        }
        let [order, sets, _] = queue_keys(stream_id);
        let mut connection = self.connection.clone();
        let jtis: Vec<String> = redis::cmd("ZRANGE")
            .arg(&order)
            .arg(0)
            .arg(i64::try_from(max).unwrap_or(i64::MAX) - 1)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if jtis.is_empty() {
            return Ok(vec![]);
        }
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(&sets)
            .arg(&jtis)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        // A SET acknowledged between the two reads is simply not offered.
        Ok(jtis
            .into_iter()
            .zip(values)
            .filter_map(|(jti, set)| set.map(|set| QueuedSet { jti, set }))
            .collect())
    }

    async fn ack(&self, stream_id: &str, jtis: &[String]) -> Result<u64, StoreError> {
        if jtis.is_empty() {
            return Ok(0);
        }
        let [order, sets, _] = queue_keys(stream_id);
        let mut connection = self.connection.clone();
        let mut invocation = self.ack.prepare_invoke();
        invocation.key(order).key(sets);
        for jti in jtis {
            invocation.arg(jti);
        }
        let removed: u64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(removed)
    }

    async fn depth(&self, stream_id: &str) -> Result<QueueDepth, StoreError> {
        let [order, _, meta] = queue_keys(stream_id);
        let mut connection = self.connection.clone();
        let pending: u64 = redis::cmd("ZCARD")
            .arg(&order)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let dropped: Option<u64> = redis::cmd("HGET")
            .arg(&meta)
            .arg("dropped")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(QueueDepth {
            pending,
            dropped: dropped.unwrap_or(0),
        })
    }
}
