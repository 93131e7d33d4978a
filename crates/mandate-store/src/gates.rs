//! Participation gates: per app audience, what its verifiers must do before mandate issues
//! tokens for it (docs/GOVERNANCE.md, "Rolling a gate out").

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// What an app's verifiers must do for mandate to issue tokens for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requirement {
    /// A live verifier follows revocations (or the app introspects each token).
    FollowsRevocations,
    /// A live verifier checks tokens, following revocations or not.
    Verifies,
    /// Nothing: the gate only records the audience's verdict.
    None,
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::FollowsRevocations => "follows_revocations",
            Self::Verifies => "verifies",
            Self::None => "none",
        })
    }
}

/// One audience's gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// The app audience it guards.
    pub audience: String,
    /// What its verifiers must do.
    pub require: Requirement,
    /// Only audit what would be refused; issue anyway.
    pub dry_run: bool,
    /// Who set it (an admin credential, or `config`).
    pub set_by: String,
    /// When, ms.
    pub set_at_ms: i64,
}

/// The gates, one per audience.
#[async_trait]
pub trait GateStore: Send + Sync + std::fmt::Debug {
    /// The gate of `audience`, if any.
    async fn gate(&self, audience: &str) -> Result<Option<Gate>, StoreError>;
    /// Every gate, ordered by audience.
    async fn gates(&self) -> Result<Vec<Gate>, StoreError>;
    /// Sets `gate`, replacing the audience's gate.
    async fn put(&self, gate: &Gate) -> Result<(), StoreError>;
    /// Removes the gate of `audience`; whether there was one.
    async fn remove(&self, audience: &str) -> Result<bool, StoreError>;
    /// Writes `gates` unless the store was ever written (seeded or changed, even if every
    /// gate has since been removed); whether it wrote them.
    async fn seed_if_never_written(&self, gates: &[Gate]) -> Result<bool, StoreError>;
}

/// The in-memory gates.
#[derive(Debug, Default)]
pub struct MemoryGates {
    inner: Mutex<Held>,
}

/// Whether the store was ever written, and the gates by audience.
#[derive(Debug, Default)]
struct Held(bool, BTreeMap<String, Gate>);

impl MemoryGates {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Held>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Corrupt("gate lock poisoned".into()))
    }
}

#[async_trait]
impl GateStore for MemoryGates {
    async fn gate(&self, audience: &str) -> Result<Option<Gate>, StoreError> {
        Ok(self.lock()?.1.get(audience).cloned())
    }

    async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
        Ok(self.lock()?.1.values().cloned().collect())
    }

    async fn put(&self, gate: &Gate) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        inner.0 = true;
        inner.1.insert(gate.audience.clone(), gate.clone());
        Ok(())
    }

    async fn remove(&self, audience: &str) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        inner.0 = true;
        Ok(inner.1.remove(audience).is_some())
    }

    async fn seed_if_never_written(&self, gates: &[Gate]) -> Result<bool, StoreError> {
        let mut inner = self.lock()?;
        if inner.0 {
            return Ok(false);
        }
        inner.0 = true;
        for gate in gates {
            inner.1.insert(gate.audience.clone(), gate.clone());
        }
        Ok(true)
    }
}

#[cfg(feature = "redis")]
pub use redis_gates::RedisGates;

#[cfg(feature = "redis")]
mod redis_gates {
    use std::collections::HashMap;

    use async_trait::async_trait;

    use super::{Gate, GateStore};
    use crate::redis_store::RedisConnection;
    use crate::StoreError;

    /// Every gate in one hash, audience → the gate as JSON, plus the field `""` (no audience is
    /// empty) once the hash was ever written, so that a configuration seeds it only once.
    pub struct RedisGates<C> {
        connection: C,
    }

    impl<C> std::fmt::Debug for RedisGates<C> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RedisGates")
        }
    }

    const KEY: &str = "mandate:gates";
    const WRITTEN: &str = "";

    /// Writes the gates (ARGV: audience, JSON, …) unless the hash exists.
    const SEED: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '', '1')
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
";

    impl<C: RedisConnection> RedisGates<C> {
        /// The gates over `connection`.
        pub fn new(connection: C) -> Self {
            Self { connection }
        }
    }

    fn unavailable(error: redis::RedisError) -> StoreError {
        StoreError::Unavailable(error.to_string())
    }

    fn parse(json: &str) -> Result<Gate, StoreError> {
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("unreadable gate: {e}")))
    }

    fn serialize(gate: &Gate) -> Result<String, StoreError> {
        serde_json::to_string(gate)
            .map_err(|e| StoreError::Corrupt(format!("gate not serializable: {e}")))
    }

    #[async_trait]
    impl<C: RedisConnection> GateStore for RedisGates<C> {
        async fn gate(&self, audience: &str) -> Result<Option<Gate>, StoreError> {
            if audience.is_empty() {
                return Ok(None);
            }
            let mut connection = self.connection.clone();
            let json: Option<String> = redis::cmd("HGET")
                .arg(KEY)
                .arg(audience)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            json.as_deref().map(parse).transpose()
        }

        async fn gates(&self) -> Result<Vec<Gate>, StoreError> {
            let mut connection = self.connection.clone();
            let all: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(KEY)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let mut gates = all
                .iter()
                .filter(|(field, _)| field.as_str() != WRITTEN)
                .map(|(_, json)| parse(json))
                .collect::<Result<Vec<_>, _>>()?;
            gates.sort_by(|a, b| a.audience.cmp(&b.audience));
            Ok(gates)
        }

        async fn put(&self, gate: &Gate) -> Result<(), StoreError> {
            let json = serialize(gate)?;
            let mut connection = self.connection.clone();
            let _: i64 = redis::cmd("HSET")
                .arg(KEY)
                .arg(WRITTEN)
                .arg("1")
                .arg(&gate.audience)
                .arg(json)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        }

        async fn remove(&self, audience: &str) -> Result<bool, StoreError> {
            if audience.is_empty() {
                return Ok(false);
            }
            let mut connection = self.connection.clone();
            let (_, removed): (i64, i64) = redis::pipe()
                .atomic()
                .cmd("HSET")
                .arg(KEY)
                .arg(WRITTEN)
                .arg("1")
                .cmd("HDEL")
                .arg(KEY)
                .arg(audience)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(removed == 1)
        }

        async fn seed_if_never_written(&self, gates: &[Gate]) -> Result<bool, StoreError> {
            let script = redis::Script::new(SEED);
            let mut invocation = script.key(KEY);
            for gate in gates {
                invocation.arg(&gate.audience).arg(serialize(gate)?);
            }
            let mut connection = self.connection.clone();
            let written: i64 = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(written == 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_gates_meet_the_contract() {
        crate::contract::gates(&MemoryGates::new()).await;
    }
}
