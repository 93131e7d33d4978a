use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mandate_chain::{Policy, PolicyRow, PolicyStore, StoreFailure};
use redis::Script;

use super::RedisConnection;

/// The one key holding the policy: a hash with fields `rows` (JSON array of rows), `version`
/// and `written` (Redis's `TIME` at the write, `<seconds>.<microseconds>`: it names one write,
/// even if a store that lost writes or was emptied reaches the same version number again).
const POLICY_KEY: &str = "mandate:policy";

/// Writes the rows at version 1 unless the policy key exists.
const SEED: &str = r"
-- KEYS: the policy hash; ARGV: rows JSON
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'rows', ARGV[1], 'version', 1, 'written', now[1] .. '.' .. now[2])
return 1
";

/// Writes the rows and the next version if the stored version (0 when there is none) is the
/// expected one; answers {1, new version} or {0, current version}.
const REPLACE: &str = r"
-- KEYS: the policy hash; ARGV: rows JSON, expected version
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[2]) then
  return {0, current}
end
local next = current + 1
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'rows', ARGV[1], 'version', next, 'written', now[1] .. '.' .. now[2])
return {1, next}
";

/// The policy in Redis: the rows, as written, in one JSON document with their version, in the
/// hash `mandate:policy` (one key, so every read and write is one atomic command or script,
/// on a cluster too).
///
/// Every [`PolicyStore::policy`] reads which write the store holds (`version` and `written`, one
/// `HMGET`), so that an admin's change is in force on every node at once; the rows are read,
/// parsed and built into a [`Policy`] only when that write is not the one built last. The seed
/// and replace scripts write the rows, the version and `written` in one step, so a policy built
/// for a write is the policy of that write. A hash without `written` (written by hand) is read
/// in full every time.
pub struct RedisPolicyStore<C> {
    connection: C,
    seed: Script,
    replace: Script,
    /// The last policy built: its `written`, its version, the policy.
    built: Mutex<Option<(String, u64, Arc<Policy>)>>,
}

impl<C> std::fmt::Debug for RedisPolicyStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisPolicyStore")
    }
}

impl<C: RedisConnection> RedisPolicyStore<C> {
    /// The policy store over `connection`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            seed: Script::new(SEED),
            replace: Script::new(REPLACE),
            built: Mutex::default(),
        }
    }

    fn built_for(&self, written: &str, version: u64) -> Option<Arc<Policy>> {
        let built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .as_ref()
            .filter(|(at, of, _)| at == written && *of == version)
            .map(|(_, _, policy)| Arc::clone(policy))
    }
}

fn fail(error: redis::RedisError) -> StoreFailure {
    StoreFailure(format!("policy store unavailable: {error}"))
}

fn to_json(rows: &[PolicyRow]) -> Result<String, StoreFailure> {
    serde_json::to_string(rows).map_err(|e| StoreFailure(format!("policy not serializable: {e}")))
}

#[async_trait]
impl<C: RedisConnection> PolicyStore for RedisPolicyStore<C> {
    async fn policy(&self) -> Result<(Arc<Policy>, u64), StoreFailure> {
        let mut connection = self.connection.clone();
        let (version, written): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(POLICY_KEY)
            .arg("version")
            .arg("written")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        if let (Some(version), Some(written)) = (version, &written) {
            if let Some(policy) = self.built_for(written, version) {
                return Ok((policy, version));
            }
        }
        let (rows, version, written): (Option<String>, Option<u64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(POLICY_KEY)
                .arg("rows")
                .arg("version")
                .arg("written")
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
        match (rows, version) {
            (None, None) => Ok((Arc::default(), 0)),
            (Some(rows), Some(version)) => {
                let rows: Vec<PolicyRow> = serde_json::from_str(&rows)
                    .map_err(|e| StoreFailure(format!("unreadable policy rows: {e}")))?;
                let policy = Arc::new(Policy::new(rows));
                if let Some(written) = written {
                    *self.built.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((written, version, Arc::clone(&policy)));
                }
                Ok((policy, version))
            }
            _ => Err(StoreFailure(format!(
                "{POLICY_KEY} lacks its rows or its version"
            ))),
        }
    }

    async fn seed_if_empty(&self, rows: Vec<PolicyRow>) -> Result<bool, StoreFailure> {
        let mut connection = self.connection.clone();
        self.seed
            .key(POLICY_KEY)
            .arg(to_json(&rows)?)
            .invoke_async(&mut connection)
            .await
            .map_err(fail)
    }

    async fn replace(
        &self,
        rows: Vec<PolicyRow>,
        expected_version: u64,
    ) -> Result<Result<u64, u64>, StoreFailure> {
        let mut connection = self.connection.clone();
        let (replaced, version): (bool, u64) = self
            .replace
            .key(POLICY_KEY)
            .arg(to_json(&rows)?)
            .arg(expected_version)
            .invoke_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(if replaced { Ok(version) } else { Err(version) })
    }
}
