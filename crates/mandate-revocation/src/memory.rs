use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mandate_model::Clock;
use tokio::sync::Notify;

use crate::{
    not_covered, verdict, Checked, Revocation, RevocationKind, RevocationList, RevocationRecord,
    RevocationStoreError, RevocationStream, StreamEvent, StreamPosition, TokenFacts,
    READ_AFTER_COUNT,
};

type Entries = HashMap<(RevocationKind, String), RevocationRecord>;

/// How many stream records the memory backend keeps (oldest dropped first): a reader further
/// behind than that takes a new snapshot. At one heartbeat a second, about 2¾ hours.
pub const MEMORY_STREAM_CAPACITY: usize = 10_000;

/// The in-memory revocation list of a single process; the process clock is the store's clock.
///
/// It keeps a bounded stream like Redis does (revocations and heartbeats, with ids `<ms>-<seq>` that
/// only grow), so that a memory-store deployment can feed apps too. The stream starts when the
/// store is created: a position from before (another process) is not covered.
#[derive(Debug)]
pub struct MemoryRevocations {
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Woken whenever a record is appended.
    appended: Notify,
}

#[derive(Debug)]
struct Inner {
    entries: Entries,
    stream: Stream,
}

/// The bounded stream: every record after `base` is held, in id order.
#[derive(Debug)]
struct Stream {
    records: VecDeque<StreamEvent>,
    /// The id of the last record dropped (the store's creation time before any).
    base: StreamPosition,
    capacity: usize,
}

impl Stream {
    fn last(&self) -> StreamPosition {
        self.records.back().map_or(self.base, StreamEvent::id)
    }

    fn covers(&self, position: StreamPosition) -> bool {
        self.base <= position && position <= self.last()
    }

    fn next_id(&self, now_ms: i64) -> StreamPosition {
        self.last().next(u64::try_from(now_ms).unwrap_or(0))
    }

    fn push(&mut self, event: StreamEvent) {
        self.records.push_back(event);
        while self.records.len() > self.capacity {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        if let Some(dropped) = self.records.pop_front() {
            self.base = dropped.id();
        }
    }

    /// Drops the records older than `min_ms` (as Redis `XADD … MINID`).
    fn trim_before(&mut self, min_ms: i64) {
        let min = u64::try_from(min_ms).unwrap_or(0);
        while self.records.front().is_some_and(|r| r.id().ms < min) {
            self.drop_oldest();
        }
    }

    fn after(&self, position: StreamPosition) -> Vec<StreamEvent> {
        let start = self.records.partition_point(|r| r.id() <= position);
        self.records
            .range(start..)
            .take(READ_AFTER_COUNT)
            .cloned()
            .collect()
    }
}

impl MemoryRevocations {
    /// An empty list on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_stream_capacity(clock, MEMORY_STREAM_CAPACITY)
    }

    /// An empty list on `clock` whose stream keeps at most `capacity` records (at least one).
    pub fn with_stream_capacity(clock: Arc<dyn Clock>, capacity: usize) -> Self {
        let created = u64::try_from(clock.now().timestamp_millis()).unwrap_or(0);
        Self {
            clock,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                stream: Stream {
                    records: VecDeque::new(),
                    base: StreamPosition {
                        ms: created,
                        seq: 0,
                    },
                    capacity: capacity.max(1),
                },
            }),
            appended: Notify::new(),
        }
    }

    fn now_ms_sync(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, RevocationStoreError> {
        self.inner
            .lock()
            .map_err(|_| RevocationStoreError("revocation list lock poisoned".into()))
    }

    /// The records after `position`, or `None` when there is none yet.
    fn read_now(
        &self,
        position: StreamPosition,
    ) -> Result<Option<(Vec<StreamEvent>, StreamPosition)>, RevocationStoreError> {
        let inner = self.lock()?;
        if !inner.stream.covers(position) {
            return Err(not_covered(position));
        }
        let events = inner.stream.after(position);
        Ok(events
            .last()
            .map(StreamEvent::id)
            .map(|last| (events, last)))
    }
}

#[async_trait]
impl RevocationList for MemoryRevocations {
    async fn revoke(
        &self,
        entries: Vec<Revocation>,
    ) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        let now = self.now_ms_sync();
        let mut inner = self.lock()?;
        let Inner {
            entries: map,
            stream,
        } = &mut *inner;
        let mut written = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = (entry.kind, entry.id.clone());
            let previous = map.get(&key).filter(|r| r.until > now);
            let record = RevocationRecord {
                kind: entry.kind,
                id: entry.id,
                at: previous.map_or(now, |p| p.at.max(now)),
                until: previous.map_or(entry.until_ms, |p| p.until.max(entry.until_ms)),
                reason: entry.reason,
                by: entry.by,
            };
            map.insert(key, record.clone());
            // The entry and its stream record are written together, as Redis does in one script.
            stream.push(StreamEvent::Revocation {
                id: stream.next_id(now),
                record: record.clone(),
            });
            written.push(record);
        }
        drop(inner);
        if !written.is_empty() {
            self.appended.notify_waiters();
        }
        Ok(written)
    }

    async fn check(&self, facts: &TokenFacts) -> Result<Checked, RevocationStoreError> {
        let now = self.now_ms_sync();
        let inner = self.lock()?;
        let map = &inner.entries;
        let found: Vec<Option<RevocationRecord>> = facts
            .keys()
            .into_iter()
            .map(|(kind, id)| {
                map.get(&(kind, id.to_owned()))
                    .filter(|r| r.until > now)
                    .cloned()
            })
            .collect();
        Ok(Checked {
            verdict: verdict(facts, &found),
            now_ms: now,
        })
    }

    async fn now_ms(&self) -> Result<i64, RevocationStoreError> {
        Ok(self.now_ms_sync())
    }

    async fn entries(&self) -> Result<Vec<RevocationRecord>, RevocationStoreError> {
        let now = self.now_ms_sync();
        let mut inner = self.lock()?;
        inner.entries.retain(|_, r| r.until > now);
        let mut entries: Vec<RevocationRecord> = inner.entries.values().cloned().collect();
        entries.sort_by(|a, b| (a.at, a.kind, &a.id).cmp(&(b.at, b.kind, &b.id)));
        Ok(entries)
    }

    async fn ping(&self) -> Result<(), RevocationStoreError> {
        self.lock().map(|_| ())
    }
}

#[async_trait]
impl RevocationStream for MemoryRevocations {
    async fn heartbeat(&self, node: &str, keep_ms: i64) -> Result<(), RevocationStoreError> {
        let now = self.now_ms_sync();
        {
            let mut inner = self.lock()?;
            inner.stream.trim_before(now.saturating_sub(keep_ms));
            let id = inner.stream.next_id(now);
            inner.stream.push(StreamEvent::Heartbeat {
                id,
                node: node.to_owned(),
                at: now,
            });
        }
        self.appended.notify_waiters();
        Ok(())
    }

    async fn stream_position(&self) -> Result<StreamPosition, RevocationStoreError> {
        Ok(self.lock()?.stream.last())
    }

    async fn stream_covers(&self, position: StreamPosition) -> Result<bool, RevocationStoreError> {
        Ok(self.lock()?.stream.covers(position))
    }

    async fn read_after(
        &self,
        from: StreamPosition,
        max_wait: Duration,
    ) -> Result<(Vec<StreamEvent>, StreamPosition), RevocationStoreError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before looking, so that a record appended right after the look still
            // wakes this reader.
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(read) = self.read_now(from)? {
                return Ok(read);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok((Vec::new(), from));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract;
    use mandate_model::FixedClock;

    #[tokio::test]
    async fn the_memory_backend_meets_the_contract() {
        let clock = Arc::new(FixedClock::at(1_800_000_000));
        let store = MemoryRevocations::new(clock.clone());
        contract::run_all(&store, &|secs| clock.advance(secs)).await;
    }

    fn at(text: &str) -> StreamPosition {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn the_stream_is_bounded_and_a_reader_left_behind_must_snapshot() {
        let clock = Arc::new(FixedClock::at(1_800_000_000));
        let store = MemoryRevocations::with_stream_capacity(clock.clone(), 3);
        let start = store.stream_position().await.unwrap();
        assert_eq!(start, at("1800000000000-0"));
        for node in ["a", "b", "c"] {
            store.heartbeat(node, 600_000).await.unwrap();
        }
        // Same millisecond (the clock is fixed): the sequence numbers the records.
        let (events, next) = store.read_after(start, Duration::ZERO).await.unwrap();
        let ids: Vec<String> = events.iter().map(|e| e.id().to_string()).collect();
        assert_eq!(
            ids,
            ["1800000000000-1", "1800000000000-2", "1800000000000-3"]
        );
        assert_eq!(next, at("1800000000000-3"));
        // A fourth record drops the first: the start is no longer covered.
        store.heartbeat("d", 600_000).await.unwrap();
        assert!(!store.stream_covers(start).await.unwrap());
        assert!(store.read_after(start, Duration::ZERO).await.is_err());
        assert!(store.stream_covers(at("1800000000000-1")).await.unwrap());
        let (events, _) = store
            .read_after(at("1800000000000-1"), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(events.len(), 3);
        // Heartbeats trim what is older than `keep_ms`.
        clock.advance(10);
        store.heartbeat("e", 5_000).await.unwrap();
        let position = store.stream_position().await.unwrap();
        assert_eq!(position, at("1800000010000-0"));
        assert!(!store.stream_covers(at("1800000000000-3")).await.unwrap());
        assert!(store.stream_covers(position).await.unwrap());
        // Later records get later ids even when the clock goes back.
        clock.advance(-60);
        store.heartbeat("f", 600_000_000).await.unwrap();
        assert_eq!(
            store.stream_position().await.unwrap(),
            at("1800000010000-1")
        );
    }
}
