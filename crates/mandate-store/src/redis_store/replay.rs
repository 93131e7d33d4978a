use async_trait::async_trait;

use super::RedisConnection;
use crate::{ReplayCache, StoreError};

/// The replay cache in Redis: one key per identifier, which Redis itself expires at the
/// identifier's own expiry, so nothing needs sweeping and every node sees every use.
///
/// The caller's `now` is not used: `SET NX` decides on the server, atomically, whether the key is
/// still held, by Redis's clock.
pub struct RedisReplayCache<C> {
    connection: C,
}

impl<C> std::fmt::Debug for RedisReplayCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisReplayCache")
    }
}

impl<C: RedisConnection> RedisReplayCache<C> {
    /// A replay cache over `connection`.
    pub fn new(connection: C) -> Self {
        Self { connection }
    }
}

fn replay_key(key: &str) -> String {
    format!("mandate:replay:{key}")
}

#[async_trait]
impl<C: RedisConnection> ReplayCache for RedisReplayCache<C> {
    async fn first_use(&self, key: &str, until: i64, _now: i64) -> Result<bool, StoreError> {
        let mut connection = self.connection.clone();
        // An expiry already past is still written (Redis drops the key at once), so that an
        // identifier that is no longer held reads as a first use, as in memory.
        let until_ms = until.saturating_mul(1000).max(1);
        let set: Option<String> = redis::cmd("SET")
            .arg(replay_key(key))
            .arg(1)
            .arg("NX")
            .arg("PXAT")
            .arg(until_ms)
            .query_async(&mut connection)
            .await
            .map_err(super::unavailable)?;
        Ok(set.is_some())
    }

    async fn release(&self, key: &str) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(replay_key(key))
            .query_async(&mut connection)
            .await
            .map_err(super::unavailable)?;
        Ok(())
    }
}
