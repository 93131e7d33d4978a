use async_trait::async_trait;
use futures_util::future::try_join_all;
use mandate_chain::{ChainId, ChainPage, ChainStart, HopId, HopRecord, Ledger, StoreFailure};
use redis::Script;

use super::RedisConnection;

/// Writes a hop and its place in the chain in one step on the chain's shard, so that a hop
/// never exists outside its chain list (or the reverse). Returns nil when the hop id is taken in
/// this chain.
///
/// The work is the same whatever the chain's length: the hop and the consents it roots on are
/// written, the chain's list and consent set have their TTL refreshed, and nothing else of the
/// chain is touched (refreshing every hop of the chain on each record made a busy grant's
/// exchanges slower the more often it had been exchanged).
const RECORD: &str = r"
-- KEYS: the hop, the chain's hop list, the chain's consent set
-- ARGV: hop JSON, hop id, TTL (s), consent ids...
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3]) then
  return false
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
if #ARGV >= 4 then
  for i = 4, #ARGV do
    redis.call('SADD', KEYS[3], ARGV[i])
  end
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return 1
";

/// Points a hop id at its chain, or refreshes that pointer, unless the id already points at
/// another chain: a hop id is unique across chains, and an index entry is never stolen.
const CLAIM_INDEX: &str = r"
-- KEYS: the hop's index entry; ARGV: chain id, TTL (s)
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
";

/// Takes back a hop whose id turned out to belong to another chain.
const UNDO: &str = r"
-- KEYS: the hop, the chain's hop list; ARGV: hop id
redis.call('DEL', KEYS[1])
redis.call('LREM', KEYS[2], -1, ARGV[1])
return 1
";

/// The hop ledger in Redis, sharded by chain (see the module documentation for the layout).
///
/// Recording writes to several shards, because a hop's chain keys and its index keys live on
/// different ones: the hop and its chain list, atomically and refusing an id already in the
/// chain; the hop id → chain entry, refusing an id already recorded in another chain (the hop
/// is then taken back); the consent id → chains sets; and, for a root, the chain's place in the
/// start-time index. They are sent together and `record` returns `Ok` only when every one has
/// succeeded, so no token rests on a partial record. A crash or a refusal part-way can leave
/// an index entry whose hop was never kept: a lookup through it finds no hop (as for a record
/// past its retention) and the chain listing skips a chain without hops; nothing was issued
/// from it.
///
/// Each hop record and its index entry expire `ledger_retention_secs` after the hop was
/// recorded; a chain's hop list and consent set, and a consent's set of chains, after the last
/// hop recorded on them. Retention is meant to be days, and every token lives minutes to hours
/// and never outlives its parent, so a hop still needed (as the parent of an exchange, or for a
/// revocation that must reach its subtree) is always far younger than the retention. An old
/// chain may therefore show only its recent hops once its first ones have expired. A consent
/// id's set of chains lives as long as the busiest of them, so it may still name a chain whose
/// records have expired; revoking such a chain is harmless.
pub struct RedisLedger<C> {
    connection: C,
    retention_secs: u64,
    record: Script,
    claim_index: Script,
    undo: Script,
}

impl<C> std::fmt::Debug for RedisLedger<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLedger")
            .field("retention_secs", &self.retention_secs)
            .finish_non_exhaustive()
    }
}

impl<C: RedisConnection> RedisLedger<C> {
    /// A ledger over `connection` whose records live `ledger_retention_secs` (at least 1) after
    /// they were recorded.
    pub fn new(connection: C, ledger_retention_secs: u64) -> Self {
        Self {
            connection,
            retention_secs: ledger_retention_secs.max(1),
            record: Script::new(RECORD),
            claim_index: Script::new(CLAIM_INDEX),
            undo: Script::new(UNDO),
        }
    }
}

/// The index of chains by start time: a sorted set of chain ids scored by the `issued_at` of
/// their first root. It names every chain, so it cannot carry a chain's hash tag; it is one key
/// on one shard, written by its own command after the chain's.
const CHAINS_KEY: &str = "mandate:chains";

fn hop_key(chain: &str, hop: &str) -> String {
    format!("mandate:ledger:{{{chain}}}:hop:{hop}")
}

fn hops_key(chain: &str) -> String {
    format!("mandate:ledger:{{{chain}}}:hops")
}

fn chain_consents_key(chain: &str) -> String {
    format!("mandate:ledger:{{{chain}}}:consents")
}

fn hop_chain_key(hop: &str) -> String {
    format!("mandate:ledger:hop-chain:{hop}")
}

fn consent_chains_key(consent: &str) -> String {
    format!("mandate:ledger:consent:{consent}")
}

/// The chain id as a hash tag. Chain ids are `chn_` and base64url; one with braces (or empty)
/// would spread its chain over several slots, which Redis Cluster refuses mid-script, so it is
/// refused up front.
fn tag(chain: &str) -> Result<&str, StoreFailure> {
    if chain.is_empty() || chain.contains(['{', '}']) {
        Err(StoreFailure(format!(
            "chain id {chain:?} cannot be used as a Redis hash tag"
        )))
    } else {
        Ok(chain)
    }
}

fn fail(error: redis::RedisError) -> StoreFailure {
    StoreFailure(format!("ledger store unavailable: {error}"))
}

fn parse(json: &str) -> Result<HopRecord, StoreFailure> {
    serde_json::from_str(json).map_err(|e| StoreFailure(format!("unreadable hop record: {e}")))
}

#[async_trait]
impl<C: RedisConnection> Ledger for RedisLedger<C> {
    async fn record(&self, hop: &HopRecord) -> Result<(), StoreFailure> {
        let chain = tag(&hop.chain_id.0)?;
        let id = hop.id.0.as_str();
        let json = serde_json::to_string(hop)
            .map_err(|e| StoreFailure(format!("hop record not serializable: {e}")))?;
        let ttl = self.retention_secs;
        let consents: Vec<&str> = hop.rooted_consents().collect();
        // The writes touch keys on up to four shards and none needs another's answer, so they
        // go out together: on one Redis server they arrive in one batch and share one append to
        // the AOF (and one fsync with `appendfsync always`) instead of one each in turn.
        let mut record = self.record.prepare_invoke();
        record
            .key(hop_key(chain, id))
            .key(hops_key(chain))
            .key(chain_consents_key(chain))
            .arg(json)
            .arg(id)
            .arg(ttl)
            .arg(&consents);
        let mut claim = self.claim_index.prepare_invoke();
        claim.key(hop_chain_key(id)).arg(chain).arg(ttl);
        let (mut for_record, mut for_claim) = (self.connection.clone(), self.connection.clone());
        let recording = record.invoke_async::<Option<i64>>(&mut for_record);
        let claiming = claim.invoke_async::<bool>(&mut for_claim);
        // The grants this root rests on point at its chain. One command per key, because the
        // keys are on different shards.
        let consent_sets = try_join_all(consents.iter().map(|consent| {
            let mut connection = self.connection.clone();
            async move {
                let key = consent_chains_key(consent);
                redis::pipe()
                    .cmd("SADD")
                    .arg(&key)
                    .arg(chain)
                    .ignore()
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(ttl)
                    .ignore()
                    .query_async::<()>(&mut connection)
                    .await
            }
        }));
        // A root places its chain in the index by start time (LT: an earlier root of the same
        // chain moves it back, a later one leaves it). Entries older than the retention are
        // trimmed here, measured on the hop's own clock (the store's), so the index never
        // outgrows the records it points at.
        let indexing = async {
            if hop.parent.is_some() {
                return Ok(());
            }
            let oldest_kept = hop
                .issued_at
                .saturating_sub(i64::try_from(ttl).unwrap_or(i64::MAX));
            let mut connection = self.connection.clone();
            redis::pipe()
                .cmd("ZADD")
                .arg(CHAINS_KEY)
                .arg("LT")
                .arg(hop.issued_at)
                .arg(chain)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(CHAINS_KEY)
                .arg("-inf")
                .arg(format!("({oldest_kept}"))
                .ignore()
                .query_async::<()>(&mut connection)
                .await
        };
        let (recorded, claimed, consented, indexed) =
            tokio::join!(recording, claiming, consent_sets, indexing);
        let recorded = recorded.map_err(fail)?;
        let claimed = claimed.map_err(fail)?;
        consented.map_err(fail)?;
        indexed.map_err(fail)?;
        if recorded.is_none() {
            // The id is taken in this chain; the claim only refreshed its own pointer.
            return Err(StoreFailure(format!("hop {id} already recorded")));
        }
        if !claimed {
            let mut connection = self.connection.clone();
            let _: () = self
                .undo
                .key(hop_key(chain, id))
                .key(hops_key(chain))
                .arg(id)
                .invoke_async(&mut connection)
                .await
                .map_err(fail)?;
            return Err(StoreFailure(format!(
                "hop {id} already recorded in another chain"
            )));
        }
        Ok(())
    }

    async fn chains_by_start(&self, page: &ChainPage) -> Result<Vec<ChainStart>, StoreFailure> {
        if page.limit == 0 {
            return Ok(vec![]);
        }
        let upper = match (page.until, page.after.as_ref().map(|a| a.started_at)) {
            (Some(until), Some(after)) => Some(until.min(after)),
            (until, after) => until.or(after),
        };
        let max = upper.map_or_else(|| "+inf".to_owned(), |u| u.to_string());
        let min = page
            .since
            .map_or_else(|| "-inf".to_owned(), |s| s.to_string());
        // Chains sharing the cursor's second come first in this order and are skipped
        // client-side, hence the loop.
        let batch = page.limit.saturating_add(16);
        let mut connection = self.connection.clone();
        let mut found = Vec::with_capacity(page.limit);
        let mut offset = 0usize;
        loop {
            // Scores are whole seconds, which Redis prints without a fraction.
            let entries: Vec<(String, i64)> = redis::cmd("ZRANGE")
                .arg(CHAINS_KEY)
                .arg(&max)
                .arg(&min)
                .arg("BYSCORE")
                .arg("REV")
                .arg("LIMIT")
                .arg(offset)
                .arg(batch)
                .arg("WITHSCORES")
                .query_async(&mut connection)
                .await
                .map_err(fail)?;
            let fetched = entries.len();
            for (chain_id, score) in entries {
                let start = ChainStart {
                    started_at: score,
                    chain_id: ChainId(chain_id),
                };
                if page.admits(&start) {
                    found.push(start);
                    if found.len() == page.limit {
                        return Ok(found);
                    }
                }
            }
            if fetched < batch {
                return Ok(found);
            }
            offset += fetched;
        }
    }

    async fn hop(&self, id: &HopId) -> Result<Option<HopRecord>, StoreFailure> {
        let mut connection = self.connection.clone();
        let chain: Option<String> = redis::cmd("GET")
            .arg(hop_chain_key(&id.0))
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        let Some(chain) = chain else {
            return Ok(None);
        };
        let json: Option<String> = redis::cmd("GET")
            .arg(hop_key(tag(&chain)?, &id.0))
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        json.as_deref().map(parse).transpose()
    }

    async fn chain(&self, chain_id: &ChainId) -> Result<Vec<HopRecord>, StoreFailure> {
        let chain = tag(&chain_id.0)?;
        let mut connection = self.connection.clone();
        let ids: Vec<String> = redis::cmd("LRANGE")
            .arg(hops_key(chain))
            .arg(0)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        if ids.is_empty() {
            return Ok(vec![]);
        }
        let keys: Vec<String> = ids.iter().map(|id| hop_key(chain, id)).collect();
        let records: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        // A hop missing from its list was taken back (its id belonged to another chain).
        records.iter().flatten().map(|json| parse(json)).collect()
    }

    async fn chains_rooted_on_consent(
        &self,
        consent_id: &str,
    ) -> Result<Vec<ChainId>, StoreFailure> {
        let mut connection = self.connection.clone();
        let mut chains: Vec<String> = redis::cmd("SMEMBERS")
            .arg(consent_chains_key(consent_id))
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        chains.sort();
        Ok(chains.into_iter().map(ChainId).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chains_keys_share_its_hash_tag() {
        let chain = "chn_abc";
        for key in [
            hop_key(chain, "hop_1"),
            hops_key(chain),
            chain_consents_key(chain),
        ] {
            assert!(key.starts_with("mandate:ledger:{chn_abc}:"), "{key}");
        }
        assert_eq!(hop_chain_key("hop_1"), "mandate:ledger:hop-chain:hop_1");
        assert_eq!(consent_chains_key("cg_1"), "mandate:ledger:consent:cg_1");
    }

    #[test]
    fn chain_ids_that_are_no_hash_tag_are_refused() {
        assert!(tag("chn_abc").is_ok());
        for bad in ["", "}x", "a{b", "a}b"] {
            assert!(tag(bad).is_err(), "{bad:?}");
        }
    }
}
