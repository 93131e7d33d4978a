//! The journal in Redis. Every key carries the hash tag `{mandate:journal}`, so on Cluster the
//! journal is one slot and every script below touches one shard.
//!
//! Appending is one `RPUSH` of the record to the pending list, cheap enough for every exchange.
//! Sealing reads the head and a batch of pending records, hashes the entries in Rust (Redis's
//! scripts have no SHA-256), and stores them with a script that succeeds only if the head is
//! still the one read: the head changes with every sealed batch and only a seal trims the
//! pending list, so of several nodes sealing at once exactly one stores each batch and the
//! others find the head moved and leave it. That makes one order across every node.

use async_trait::async_trait;
use mandate_chain::StoreFailure;
use mandate_journal::{Checkpoint, Entry, Head};
use redis::Script;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RedisConnection;
use crate::journal::{Journal, JournalBounds, RecordKind, StoredEntry};

/// Appended records, oldest first: `{"at","kind","record"}` JSON.
pub const PENDING_KEY: &str = "{mandate:journal}:pending";
/// Sealed entries: the entry's JSON scored by the seq it was sealed at.
pub const ENTRIES_KEY: &str = "{mandate:journal}:entries";
/// The last sealed entry: `<seq> <hash>`.
pub const HEAD_KEY: &str = "{mandate:journal}:head";
/// The last entry retention forgot: `<seq> <hash>`.
pub const BASE_KEY: &str = "{mandate:journal}:base";
/// Signed checkpoints: the checkpoint's JSON scored by its seq.
pub const CHECKPOINTS_KEY: &str = "{mandate:journal}:checkpoints";

/// Stores a sealed batch if the head is still the one it was sealed from.
const SEAL: &str = r"
-- KEYS: head, pending, entries
-- ARGV: the head read, how many pending records were sealed, the new head, then seq and entry
-- JSON pairs
local head = redis.call('GET', KEYS[1]) or ''
if head ~= ARGV[1] then
  return 0
end
for i = 4, #ARGV, 2 do
  redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1])
end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
redis.call('SET', KEYS[1], ARGV[3])
return 1
";

/// Stores a checkpoint unless one at the same or a later seq is stored.
const ADD_CHECKPOINT: &str = r"
-- KEYS: checkpoints; ARGV: seq, checkpoint JSON
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Forgets the entries placed at or before a seq, and the checkpoints at or before it, and moves
/// the base there (never back).
const FORGET: &str = r"
-- KEYS: entries, checkpoints, base; ARGV: the last place forgotten, the new base
local base = redis.call('GET', KEYS[3])
if base and tonumber(string.match(base, '^%d+')) >= tonumber(ARGV[1]) then
  return 0
end
local removed = redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('SET', KEYS[3], ARGV[2])
return removed
";

/// An appended record, as the pending list holds it.
#[derive(Serialize, Deserialize)]
struct Pending {
    at: i64,
    kind: String,
    record: Value,
}

/// The journal in Redis (see the module documentation).
pub struct RedisJournal<C> {
    connection: C,
    seal: Script,
    add_checkpoint: Script,
    forget: Script,
}

impl<C> std::fmt::Debug for RedisJournal<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisJournal")
    }
}

impl<C: RedisConnection> RedisJournal<C> {
    /// The journal over `connection`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            seal: Script::new(SEAL),
            add_checkpoint: Script::new(ADD_CHECKPOINT),
            forget: Script::new(FORGET),
        }
    }
}

fn fail(error: redis::RedisError) -> StoreFailure {
    StoreFailure(format!("journal store unavailable: {error}"))
}

fn unreadable(what: &str, error: impl std::fmt::Display) -> StoreFailure {
    StoreFailure(format!("unreadable journal {what}: {error}"))
}

fn head_text(head: &Head) -> String {
    format!("{} {}", head.seq, head.hash)
}

fn parse_head(text: Option<String>) -> Result<Head, StoreFailure> {
    let Some(text) = text else {
        return Ok(Head::default());
    };
    let (seq, hash) = text
        .split_once(' ')
        .ok_or_else(|| unreadable("head", &text))?;
    Ok(Head {
        seq: seq.parse().map_err(|e| unreadable("head", e))?,
        hash: hash.to_owned(),
    })
}

fn place_of(score: f64) -> u64 {
    // Scores are seqs, integers far below 2^53.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "scores are whole, non-negative seqs"
    )]
    let place = score as u64;
    place
}

#[async_trait]
impl<C: RedisConnection> Journal for RedisJournal<C> {
    async fn append(
        &self,
        at_ms: i64,
        kind: RecordKind,
        record: Value,
    ) -> Result<(), StoreFailure> {
        let pending = serde_json::to_string(&Pending {
            at: at_ms,
            kind: kind.as_str().to_owned(),
            record,
        })
        .map_err(|e| StoreFailure(format!("journal record not serializable: {e}")))?;
        let mut connection = self.connection.clone();
        redis::cmd("RPUSH")
            .arg(PENDING_KEY)
            .arg(pending)
            .query_async::<()>(&mut connection)
            .await
            .map_err(fail)
    }

    async fn seal(&self, max: usize) -> Result<usize, StoreFailure> {
        let mut connection = self.connection.clone();
        let last = isize::try_from(max.max(1)).unwrap_or(isize::MAX) - 1;
        let (head, batch): (Option<String>, Vec<String>) = redis::pipe()
            .cmd("GET")
            .arg(HEAD_KEY)
            .cmd("LRANGE")
            .arg(PENDING_KEY)
            .arg(0)
            .arg(last)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        if batch.is_empty() {
            return Ok(0);
        }
        let read = head.clone().unwrap_or_default();
        let mut head = parse_head(head)?;
        let mut invocation = self.seal.prepare_invoke();
        invocation.key(HEAD_KEY).key(PENDING_KEY).key(ENTRIES_KEY);
        let mut entries = Vec::with_capacity(batch.len());
        for json in &batch {
            let pending: Pending =
                serde_json::from_str(json).map_err(|e| unreadable("pending record", e))?;
            let entry = Entry::seal(&head, pending.at, pending.kind, pending.record);
            head = entry.head();
            let json = serde_json::to_string(&entry)
                .map_err(|e| StoreFailure(format!("journal entry not serializable: {e}")))?;
            entries.push((entry.seq, json));
        }
        invocation.arg(read).arg(batch.len()).arg(head_text(&head));
        for (seq, json) in entries {
            invocation.arg(seq).arg(json);
        }
        let stored: i64 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(if stored == 1 { batch.len() } else { 0 })
    }

    async fn bounds(&self) -> Result<JournalBounds, StoreFailure> {
        let mut connection = self.connection.clone();
        let (base, head, pending): (Option<String>, Option<String>, u64) = redis::pipe()
            .cmd("GET")
            .arg(BASE_KEY)
            .cmd("GET")
            .arg(HEAD_KEY)
            .cmd("LLEN")
            .arg(PENDING_KEY)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(JournalBounds {
            base: parse_head(base)?,
            head: parse_head(head)?,
            pending,
        })
    }

    async fn entries(&self, after: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreFailure> {
        let mut connection = self.connection.clone();
        let found: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(ENTRIES_KEY)
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        found
            .into_iter()
            .map(|(json, score)| {
                let place = place_of(score);
                // Something that is not an entry any more was written over one: it stands at
                // its place as an entry whose hash cannot match, so the verifier names it
                // altered instead of the read failing.
                let entry = serde_json::from_str(&json).unwrap_or_else(|_| Entry {
                    seq: place,
                    time: 0,
                    kind: "unreadable".into(),
                    record: Value::String(json),
                    prev: String::new(),
                    hash: String::new(),
                });
                Ok(StoredEntry { place, entry })
            })
            .collect()
    }

    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreFailure> {
        let json = serde_json::to_string(checkpoint)
            .map_err(|e| StoreFailure(format!("checkpoint not serializable: {e}")))?;
        let mut connection = self.connection.clone();
        let stored: i64 = self
            .add_checkpoint
            .key(CHECKPOINTS_KEY)
            .arg(checkpoint.seq)
            .arg(json)
            .invoke_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(stored == 1)
    }

    async fn checkpoints(&self, after: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreFailure> {
        let mut connection = self.connection.clone();
        let found: Vec<String> = redis::cmd("ZRANGE")
            .arg(CHECKPOINTS_KEY)
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        found
            .iter()
            .map(|json| serde_json::from_str(json).map_err(|e| unreadable("checkpoint", e)))
            .collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreFailure> {
        let mut connection = self.connection.clone();
        let found: Vec<String> = redis::cmd("ZRANGE")
            .arg(CHECKPOINTS_KEY)
            .arg(-1)
            .arg(-1)
            .query_async(&mut connection)
            .await
            .map_err(fail)?;
        found
            .first()
            .map(|json| serde_json::from_str(json).map_err(|e| unreadable("checkpoint", e)))
            .transpose()
    }

    async fn forget_before(&self, before_ms: i64, max: usize) -> Result<usize, StoreFailure> {
        let oldest = self.entries(0, max).await?;
        let Some(last) = oldest
            .iter()
            .take_while(|e| e.entry.time < before_ms)
            .last()
        else {
            return Ok(0);
        };
        let mut connection = self.connection.clone();
        let removed: usize = self
            .forget
            .key(ENTRIES_KEY)
            .key(CHECKPOINTS_KEY)
            .key(BASE_KEY)
            .arg(last.place)
            .arg(head_text(&last.entry.head()))
            .invoke_async(&mut connection)
            .await
            .map_err(fail)?;
        Ok(removed)
    }
}
