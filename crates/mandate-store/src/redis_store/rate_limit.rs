use async_trait::async_trait;
use redis::Script;

use super::RedisConnection;
use crate::{RateDecision, RateLimiter, StoreError};

/// The token bucket of [`crate::MemoryRateLimiter`], run inside Redis so that every node spends
/// from one budget, with Redis's clock (`TIME`) so that nodes whose clocks drift still agree.
/// Returns `{allowed, wait_ms}`.
///
/// A bucket refills completely within a second, so a bucket idle that long is a full bucket and
/// its key may expire (`BUCKET_TTL_MS`): idle clients cost no memory.
const ACQUIRE: &str = r"
-- KEYS: the bucket; ARGV: requests per second, bucket TTL (ms)
local rate = tonumber(ARGV[1])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'updated_ms')
local tokens = tonumber(bucket[1])
local updated = tonumber(bucket[2])
if tokens == nil or updated == nil then
  tokens = rate
  updated = now
end
local elapsed = math.max(now - updated, 0) / 1000
tokens = math.min(tokens + elapsed * rate, rate)
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated_ms', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {allowed, wait_ms}
";

/// How long an untouched bucket is kept: longer than a full refill (one second).
const BUCKET_TTL_MS: u64 = 2_000;

/// A token bucket per key in Redis, shared by every node: `per_second` requests a second with
/// bursts of up to `per_second` requests, as [`crate::MemoryRateLimiter`] allows in one process.
pub struct RedisRateLimiter<C> {
    connection: C,
    per_second: u32,
    acquire: Script,
}

impl<C> std::fmt::Debug for RedisRateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("per_second", &self.per_second)
            .finish_non_exhaustive()
    }
}

impl<C: RedisConnection> RedisRateLimiter<C> {
    /// A limiter allowing `per_second` requests per key per second (0 disables the limit, and
    /// Redis is then never asked).
    pub fn new(connection: C, per_second: u32) -> Self {
        Self {
            connection,
            per_second,
            acquire: Script::new(ACQUIRE),
        }
    }
}

fn rate_key(key: &str) -> String {
    format!("mandate:rate:{key}")
}

#[async_trait]
impl<C: RedisConnection> RateLimiter for RedisRateLimiter<C> {
    async fn acquire(&self, key: &str) -> Result<RateDecision, StoreError> {
        if self.per_second == 0 {
            return Ok(RateDecision::Allowed);
        }
        let mut connection = self.connection.clone();
        let (allowed, wait_ms): (i64, i64) = self
            .acquire
            .key(rate_key(key))
            .arg(self.per_second)
            .arg(BUCKET_TTL_MS)
            .invoke_async(&mut connection)
            .await
            .map_err(super::unavailable)?;
        if allowed == 1 {
            Ok(RateDecision::Allowed)
        } else {
            let wait_ms = u64::try_from(wait_ms).unwrap_or(0);
            Ok(RateDecision::Limited {
                retry_after_secs: wait_ms.div_ceil(1000).max(1),
            })
        }
    }
}
