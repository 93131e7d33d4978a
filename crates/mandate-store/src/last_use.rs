//! When each client was last seen authenticating and last exchanging a token: kept cheaply
//! (callers write at most once a minute per client and node), for the agent inventory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Serialize;

use crate::StoreError;

/// What was last seen of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UseKind {
    /// It authenticated at the token, revocation or introspection endpoint.
    Authenticated,
    /// It was issued a token by an exchange (or an ID-JAG).
    Exchange,
}

impl UseKind {
    #[cfg_attr(
        not(feature = "redis"),
        allow(dead_code, reason = "the Redis fields' names")
    )]
    fn as_str(self) -> &'static str {
        match self {
            Self::Authenticated => "authenticated",
            Self::Exchange => "exchange",
        }
    }
}

/// The last uses of a client, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LastUse {
    /// Its last successful authentication.
    pub authenticated_at_ms: Option<i64>,
    /// Its last token exchange.
    pub exchange_at_ms: Option<i64>,
}

/// Last uses, by client.
#[async_trait]
pub trait LastUseStore: Send + Sync + std::fmt::Debug {
    /// Records that `client` was seen doing `kind` at `at_ms` (a later record never goes back).
    async fn touch(&self, client: &str, kind: UseKind, at_ms: i64) -> Result<(), StoreError>;
    /// Every client's last uses.
    async fn all(&self) -> Result<HashMap<String, LastUse>, StoreError>;
}

fn set(last: &mut LastUse, kind: UseKind, at_ms: i64) {
    let slot = match kind {
        UseKind::Authenticated => &mut last.authenticated_at_ms,
        UseKind::Exchange => &mut last.exchange_at_ms,
    };
    if slot.is_none_or(|seen| seen < at_ms) {
        *slot = Some(at_ms);
    }
}

/// The in-memory last uses.
#[derive(Debug, Default)]
pub struct MemoryLastUse {
    uses: Mutex<HashMap<String, LastUse>>,
}

impl MemoryLastUse {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl LastUseStore for MemoryLastUse {
    async fn touch(&self, client: &str, kind: UseKind, at_ms: i64) -> Result<(), StoreError> {
        let mut uses = self
            .uses
            .lock()
            .map_err(|_| StoreError::Corrupt("last-use lock poisoned".into()))?;
        set(uses.entry(client.to_owned()).or_default(), kind, at_ms);
        Ok(())
    }

    async fn all(&self) -> Result<HashMap<String, LastUse>, StoreError> {
        self.uses
            .lock()
            .map(|uses| uses.clone())
            .map_err(|_| StoreError::Corrupt("last-use lock poisoned".into()))
    }
}

#[cfg(feature = "redis")]
pub use redis_last_use::RedisLastUse;

#[cfg(feature = "redis")]
mod redis_last_use {
    use std::collections::HashMap;

    use async_trait::async_trait;
    use redis::Script;

    use super::{set, LastUse, LastUseStore, UseKind};
    use crate::redis_store::RedisConnection;
    use crate::StoreError;

    /// One hash, `<client>|<kind>` → ms; a write keeps the later time (a script, so two nodes
    /// writing at once cannot move it back).
    pub struct RedisLastUse<C> {
        connection: C,
        touch: Script,
    }

    impl<C> std::fmt::Debug for RedisLastUse<C> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("RedisLastUse")
        }
    }

    const KEY: &str = "mandate:last-use";

    const TOUCH: &str = r"
local seen = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > seen then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
";

    impl<C: RedisConnection> RedisLastUse<C> {
        /// The last uses over `connection`.
        pub fn new(connection: C) -> Self {
            Self {
                connection,
                touch: Script::new(TOUCH),
            }
        }
    }

    #[async_trait]
    impl<C: RedisConnection> LastUseStore for RedisLastUse<C> {
        async fn touch(&self, client: &str, kind: UseKind, at_ms: i64) -> Result<(), StoreError> {
            let mut connection = self.connection.clone();
            let _: i64 = self
                .touch
                .key(KEY)
                .arg(format!("{client}|{}", kind.as_str()))
                .arg(at_ms)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            Ok(())
        }

        async fn all(&self) -> Result<HashMap<String, LastUse>, StoreError> {
            let mut connection = self.connection.clone();
            let fields: HashMap<String, i64> = redis::cmd("HGETALL")
                .arg(KEY)
                .query_async(&mut connection)
                .await
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let mut uses: HashMap<String, LastUse> = HashMap::new();
            for (field, at_ms) in fields {
                let Some((client, kind)) = field.rsplit_once('|') else {
                    continue;
                };
                let kind = match kind {
                    "authenticated" => UseKind::Authenticated,
                    "exchange" => UseKind::Exchange,
                    _ => continue,
                };
                set(uses.entry(client.to_owned()).or_default(), kind, at_ms);
            }
            Ok(uses)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_last_uses_meet_the_contract() {
        crate::contract::last_use(&MemoryLastUse::new()).await;
    }
}
