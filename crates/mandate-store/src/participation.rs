//! Who takes part: the latest report of each verifier (an SDK instance, a gateway, an app's
//! introspection calls counted by a node, a node's feed subscriber), kept until it expires.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One verifier as last heard of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// The `resource_server` client it belongs to (who reported it, or whose calls were seen).
    pub owner: String,
    /// What it is: `sdk`, `gateway`, `introspection` or `feed`.
    pub kind: String,
    /// Its instance name, unique per owner and kind.
    pub instance: String,
    /// How it follows revocations: `followed`, `direct`, `feed`, `none`, or `introspection`.
    pub mode: String,
    /// The audiences it verifies for.
    pub audiences: Vec<String>,
    /// The host or mandate node it runs on.
    pub node: String,
    /// Its software version.
    pub version: String,
    /// The age of its revocation view when it reported (followers), ms.
    pub lag_ms: Option<u64>,
    /// How many calls (introspection) or reports this instance has made.
    pub count: u64,
    /// When it was last heard of, ms (the store's clock as the caller read it).
    pub seen_at_ms: i64,
}

impl Participant {
    fn key(&self) -> String {
        format!("{}|{}|{}", self.owner, self.kind, self.instance)
    }
}

/// The participants, each until its report expires.
#[async_trait]
pub trait ParticipationStore: Send + Sync + std::fmt::Debug {
    /// Stores `participant` until `until_ms`, replacing the report of the same owner, kind and
    /// instance.
    async fn report(&self, participant: &Participant, until_ms: i64) -> Result<(), StoreError>;
    /// Every participant whose report has not expired at `now_ms`, ordered by owner, kind and
    /// instance. Expired reports are forgotten.
    async fn live(&self, now_ms: i64) -> Result<Vec<Participant>, StoreError>;
}

/// The in-memory participants.
#[derive(Debug, Default)]
pub struct MemoryParticipation {
    reports: Mutex<BTreeMap<String, (Participant, i64)>>,
}

impl MemoryParticipation {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ParticipationStore for MemoryParticipation {
    async fn report(&self, participant: &Participant, until_ms: i64) -> Result<(), StoreError> {
        let mut reports = self
            .reports
            .lock()
            .map_err(|_| StoreError::Corrupt("participation lock poisoned".into()))?;
        reports.insert(participant.key(), (participant.clone(), until_ms));
        Ok(())
    }

    async fn live(&self, now_ms: i64) -> Result<Vec<Participant>, StoreError> {
        let mut reports = self
            .reports
            .lock()
            .map_err(|_| StoreError::Corrupt("participation lock poisoned".into()))?;
        reports.retain(|_, (_, until)| *until > now_ms);
        Ok(reports.values().map(|(p, _)| p.clone()).collect())
    }
}

#[cfg(feature = "redis")]
pub use redis_participation::RedisParticipation;

#[cfg(feature = "redis")]
mod redis_participation {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use serde::{Deserialize, Serialize};

    use super::{Participant, ParticipationStore};
    use crate::redis_store::RedisConnection;
    use crate::StoreError;

    /// Every report in one hash, `<owner>|<kind>|<instance>` → the report and its expiry: the
    /// set is bounded by the callers (a few instances per resource server), and one key is one
    /// Cluster slot.
    pub struct RedisParticipation<C> {
        connection: C,
    }

    impl<C> std::fmt::Debug for RedisParticipation<C> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RedisParticipation")
        }
    }

    const KEY: &str = "mandate:participation";

    #[derive(Serialize, Deserialize)]
    struct Stored {
        participant: Participant,
        until_ms: i64,
    }

    impl<C: RedisConnection> RedisParticipation<C> {
        /// The participants over `connection`.
        pub fn new(connection: C) -> Self {
            Self { connection }
        }
    }

    fn unavailable(error: redis::RedisError) -> StoreError {
        StoreError::Unavailable(error.to_string())
    }

    #[async_trait]
    impl<C: RedisConnection> ParticipationStore for RedisParticipation<C> {
        async fn report(&self, participant: &Participant, until_ms: i64) -> Result<(), StoreError> {
            let stored = Stored {
                participant: participant.clone(),
                until_ms,
            };
            let json = serde_json::to_string(&stored)
                .map_err(|e| StoreError::Corrupt(format!("report not serializable: {e}")))?;
            let mut connection = self.connection.clone();
            let _: i64 = redis::cmd("HSET")
                .arg(KEY)
                .arg(participant.key())
                .arg(json)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        }

        async fn live(&self, now_ms: i64) -> Result<Vec<Participant>, StoreError> {
            let mut connection = self.connection.clone();
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(KEY)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let mut live = Vec::new();
            let mut expired = Vec::new();
            for (field, json) in all {
                let stored: Stored = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("unreadable report: {e}")))?;
                if stored.until_ms > now_ms {
                    live.push(stored.participant);
                } else {
                    expired.push(field);
                }
            }
            if !expired.is_empty() {
                // A report renewed meanwhile is lost until its next renewal: harmless.
                let _: i64 = redis::cmd("HDEL")
                    .arg(KEY)
                    .arg(&expired)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
            }
            live.sort_by_key(Participant::key);
            Ok(live)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_participants_meet_the_contract() {
        crate::contract::participation(&MemoryParticipation::new()).await;
    }
}
