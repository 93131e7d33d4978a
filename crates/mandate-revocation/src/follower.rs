//! A follower of the revocation stream (DESIGN.md section 6, the verifier SDK's cached mode): an
//! in-process copy of the live entries, kept up to date from `{mandate:rev}:stream`, that answers
//! a check without any I/O and fails closed when it has not heard a heartbeat within its bound.
//!
//! The background task snapshots the stream (`TIME` + `XRANGE - +`, like
//! [`RedisRevocations::entries`](crate::RedisRevocations)), then loops on
//! `XREAD BLOCK <block> STREAMS <stream> <position>`, pipelined with `XRANGE - + COUNT 1` (the
//! stream's first id) and `TIME`. When the stream was trimmed past its position it snapshots again;
//! after any Redis error it keeps its copy, stops refreshing freshness and, once Redis answers
//! again, snapshots again so that nothing written meanwhile is missed. A snapshot is merged into
//! the copy (the later `at` wins), so an entry the follower has seen is forgotten only when it
//! expires, never because its stream record was trimmed.
//!
//! Every command it sends is one the read-only verifier ACL user may run (`XREAD`, `XRANGE`,
//! `TIME`).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_model::{Monotonic, SystemMonotonic};
use redis::aio::ConnectionLike;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::Value;

use crate::redis_store::stream_event;
use crate::shell::{FollowerShell, FollowerState, ShellShared};
use crate::{
    FollowedCopy, FollowerError, RevocationRecord, StreamEvent, StreamPosition as StreamPos,
    TokenFacts, Verdict, STREAM_KEY,
};

/// The first wait after a Redis error; it doubles up to [`RETRY_MAX`] while errors go on.
const RETRY_MIN: Duration = Duration::from_millis(200);
/// The longest wait between two attempts while Redis is unreachable.
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How many records one `XREAD` returns at most (a longer backlog takes several reads).
const READ_COUNT: usize = 1000;
/// How often expired entries are pruned from the copy.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How a [`RevocationFollower`] follows the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowerConfig {
    /// `check` fails closed ([`FollowerError::Stale`]) when the newest heartbeat received is
    /// older than this. Default 3 s (mandate nodes write one each second).
    pub staleness_bound: Duration,
    /// How long one `XREAD` blocks when nothing arrives (at least 1 ms: `BLOCK 0` would block
    /// forever). Default 1 s. The connection's response timeout must be longer than this.
    pub block: Duration,
}

impl Default for FollowerConfig {
    fn default() -> Self {
        Self {
            staleness_bound: Duration::from_secs(3),
            block: Duration::from_secs(1),
        }
    }
}

/// What a follower holds (for tests and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowerStats {
    /// Live entries held in the copy.
    pub entries: usize,
    /// The stream position: the id of the last record applied (`0-0` before any).
    pub position: String,
    /// Snapshots taken (the first one, and one after each trim past the position or error).
    pub snapshots: u64,
    /// Redis errors met (each one is followed by a retry and a new snapshot).
    pub errors: u64,
}

/// An in-process copy of the revocation list, kept up to date from the Redis stream by a
/// background task. Clones share the copy and the task; the task stops with [`Self::stop`] or
/// when the last clone is dropped.
///
/// Give it a connection of its own: `XREAD BLOCK` holds a (multiplexed) connection for up to
/// [`FollowerConfig::block`], which would delay every other command sent on it.
#[derive(Clone)]
pub struct RevocationFollower {
    shell: FollowerShell<State>,
    config: FollowerConfig,
}

impl fmt::Debug for RevocationFollower {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationFollower")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl RevocationFollower {
    /// Spawns the background task (tokio) that keeps an in-process copy of the live entries.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as `tokio::spawn` does).
    pub fn spawn<C: ConnectionLike + Clone + Send + Sync + 'static>(
        connection: C,
        config: FollowerConfig,
    ) -> Self {
        Self::spawn_timed(connection, config, Arc::new(SystemMonotonic))
    }

    /// [`Self::spawn`] with ages (staleness, pruning) measured by `time`.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as `tokio::spawn` does).
    pub fn spawn_timed<C: ConnectionLike + Clone + Send + Sync + 'static>(
        connection: C,
        config: FollowerConfig,
        time: Arc<dyn Monotonic>,
    ) -> Self {
        let state = State {
            copy: FollowedCopy::new(config.staleness_bound, time.now()),
            position: StreamPos::default(),
            snapshots: 0,
            errors: 0,
        };
        let shell = FollowerShell::spawn(state, time, |shared| {
            Task {
                connection,
                config,
                shared,
            }
            .run()
        });
        Self { shell, config }
    }

    /// Decides for `facts` from the in-process copy, no I/O ([`FollowedCopy::check`]):
    /// `Err(NotReady)` before the first snapshot, `Err(Stale)` when the newest heartbeat received
    /// is older than the bound, otherwise the same decision as the store's check.
    pub fn check(&self, facts: &TokenFacts) -> Result<Verdict, FollowerError> {
        self.shell.check(facts)
    }

    /// Waits until the first snapshot is loaded (bounded by `timeout`); whether it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.shell.ready(timeout).await
    }

    /// The time since the newest heartbeat received: the lag of this follower's view.
    pub fn view_age(&self) -> Duration {
        self.shell.view_age()
    }

    /// How many live entries are held; the stream position; how many snapshots were taken and
    /// how many errors met (for tests and metrics).
    pub fn stats(&self) -> FollowerStats {
        let state = self.shell.shared().lock();
        FollowerStats {
            entries: state.copy.len(),
            position: state.position.to_string(),
            snapshots: state.snapshots,
            errors: state.errors,
        }
    }

    /// Stops the background task. The copy stays, so `check` answers `Stale` once the bound has
    /// passed.
    pub fn stop(&self) {
        self.shell.stop();
    }
}

/// The copy and where the follower is.
#[derive(Debug)]
struct State {
    copy: FollowedCopy,
    position: StreamPos,
    snapshots: u64,
    errors: u64,
}

impl FollowerState for State {
    fn copy(&self) -> &FollowedCopy {
        &self.copy
    }
}

impl State {
    /// Takes in what one read brought: the clock, heartbeats (freshness), entries (merged).
    fn absorb(&mut self, batch: Batch) {
        self.copy.observe_clock(batch.now_ms, batch.received);
        if let Some(at) = batch.newest_heartbeat_ms {
            self.copy.heard_heartbeat(at, batch.received);
        }
        for record in batch.entries {
            self.copy.insert(record);
        }
    }
}

/// Where the follower reads from.
#[derive(Clone, Copy, Debug, Default)]
struct Position {
    id: StreamPos,
    /// Whether `id` is the id of a record that was in the stream (so the stream's first id being
    /// later means the stream was trimmed past it). `false` when the stream was empty or missing
    /// at the snapshot (`id` is then `0-0`: everything in the stream later is new).
    from_record: bool,
}

/// The records of one read, parsed.
struct Batch {
    entries: Vec<RevocationRecord>,
    /// The newest heartbeat's `at` (ms, the store's clock).
    newest_heartbeat_ms: Option<i64>,
    /// Redis `TIME` (ms), read in the same pipeline.
    now_ms: i64,
    /// When (local clock) the reply arrived.
    received: Instant,
    /// The id of the last record (in stream order).
    last: Option<StreamPos>,
}

impl Batch {
    fn new(now_ms: i64, received: Instant) -> Self {
        Self {
            entries: Vec::new(),
            newest_heartbeat_ms: None,
            now_ms,
            received,
            last: None,
        }
    }

    /// Adds one stream record. Of the heartbeats only the newest matters (the copy counts it as
    /// written at its arrival less its age by the store's clock). Entries already expired are
    /// dropped.
    fn push(&mut self, record: &StreamId) {
        let pos = record.id.parse::<StreamPos>().ok();
        if pos.is_some() {
            self.last = pos;
        }
        match stream_event(record) {
            Some(StreamEvent::Heartbeat { at, .. }) => {
                self.newest_heartbeat_ms = self.newest_heartbeat_ms.max(Some(at));
            }
            Some(StreamEvent::Revocation { record, .. }) if record.until > self.now_ms => {
                self.entries.push(record);
            }
            _ => {}
        }
    }
}

/// Redis `TIME` → milliseconds.
fn time_ms(value: &Value) -> redis::RedisResult<i64> {
    let (seconds, micros): (i64, i64) = redis::from_redis_value_ref(value)?;
    Ok(seconds.saturating_mul(1000).saturating_add(micros / 1000))
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The background task.
struct Task<C> {
    connection: C,
    config: FollowerConfig,
    shared: Arc<ShellShared<State>>,
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Task<C> {
    async fn run(mut self) {
        let mut position: Option<Position> = None;
        let mut retry = RETRY_MIN;
        let mut pruned = self.shared.now();
        loop {
            let step = match position {
                // First, after a trim past the position, and after any error (once Redis
                // answers again, whatever was written while we were away is in the snapshot).
                None => self.snapshot().await.map(Some),
                Some(current) => self.follow(current).await,
            };
            match step {
                Ok(next) => {
                    position = next;
                    retry = RETRY_MIN;
                }
                Err(_) => {
                    // Keep the copy, but no heartbeat arrives: `check` turns Stale after the
                    // bound.
                    self.shared.lock().errors += 1;
                    position = None;
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
            let now = self.shared.now();
            if now.duration_since(pruned) >= PRUNE_EVERY {
                pruned = now;
                self.shared.lock().copy.prune(pruned);
            }
        }
    }

    /// Reads every record of the stream with the Redis clock and merges the live entries into the
    /// copy; returns the position to read from.
    async fn snapshot(&mut self) -> redis::RedisResult<Position> {
        let (time, records): (Value, StreamRangeReply) = redis::pipe()
            .cmd("TIME")
            .cmd("XRANGE")
            .arg(STREAM_KEY)
            .arg("-")
            .arg("+")
            .query_async(&mut self.connection)
            .await?;
        let received = self.shared.now();
        let mut batch = Batch::new(time_ms(&time)?, received);
        for record in &records.ids {
            batch.push(record);
        }
        let position = match batch.last {
            Some(id) => Position {
                id,
                from_record: true,
            },
            // An empty or missing stream: every record it will hold is new.
            None => Position::default(),
        };
        {
            let mut state = self.shared.lock();
            state.absorb(batch);
            state.copy.prune(received);
            state.position = position.id;
            state.snapshots += 1;
            state.copy.mark_loaded();
        }
        self.shared.mark_ready();
        Ok(position)
    }

    /// One blocking read from `position`, applied to the copy; returns the next position, or
    /// `None` when the stream was trimmed past `position` (records may have been missed: snapshot
    /// again).
    async fn follow(&mut self, position: Position) -> redis::RedisResult<Option<Position>> {
        let block_ms = duration_ms(self.config.block).max(1);
        // `XRANGE … COUNT 1` runs after the read: if records after `position` were trimmed before
        // the read, the first id is already past `position` (trimming removes the oldest first).
        let (read, first, time): (Option<StreamReadReply>, StreamRangeReply, Value) = redis::pipe()
            .cmd("XREAD")
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(STREAM_KEY)
            .arg(position.id.to_string())
            .cmd("XRANGE")
            .arg(STREAM_KEY)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("TIME")
            .query_async(&mut self.connection)
            .await?;
        let received = self.shared.now();
        let mut batch = Batch::new(time_ms(&time)?, received);
        for stream in read.iter().flat_map(|r| &r.keys) {
            if stream.key == STREAM_KEY {
                for record in &stream.ids {
                    batch.push(record);
                }
            }
        }
        let next = match batch.last {
            Some(id) if id > position.id => Position {
                id,
                from_record: true,
            },
            _ => position,
        };
        {
            let mut state = self.shared.lock();
            state.absorb(batch);
            state.position = next.id;
        }
        let first = first
            .ids
            .first()
            .and_then(|record| record.id.parse::<StreamPos>().ok());
        let trimmed_past = position.from_record && first.is_none_or(|first| first > position.id);
        Ok((!trimmed_past).then_some(next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_newest_heartbeat_and_its_last_position() {
        let received = Instant::now();
        let mut batch = Batch::new(10_000, received);
        let heartbeat = |id: &str, at: &str| StreamId {
            id: id.into(),
            map: [
                ("kind".to_owned(), Value::BulkString(b"heartbeat".to_vec())),
                ("id".to_owned(), Value::BulkString(b"node".to_vec())),
                ("at".to_owned(), Value::BulkString(at.as_bytes().to_vec())),
            ]
            .into_iter()
            .collect(),
            ..StreamId::default()
        };
        batch.push(&heartbeat("9990-0", "9990"));
        batch.push(&heartbeat("9000-0", "9000"));
        assert_eq!(batch.newest_heartbeat_ms, Some(9990));
        batch.push(&heartbeat("10005-0", "10005"));
        assert_eq!(batch.newest_heartbeat_ms, Some(10_005));
        assert_eq!(batch.last, Some(StreamPos { ms: 10_005, seq: 0 }));
        assert!(batch.entries.is_empty());

        // Absorbed, the newest heartbeat is fresh as of its arrival.
        let mut state = State {
            copy: FollowedCopy::new(Duration::from_secs(3), Instant::now()),
            position: StreamPos::default(),
            snapshots: 0,
            errors: 0,
        };
        state.absorb(batch);
        assert_eq!(state.copy.newest_heartbeat(), Some(received));
    }
}
