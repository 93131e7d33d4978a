//! The journal store: where the hash-chained entries of docs/EVIDENCE.md live. Every hop, and
//! every audit event (admin changes, revocations, consent changes, refused exchanges), is
//! appended to it by the [`JournaledLedger`] and [`JournaledAudit`] wrappers; [`Journal::seal`]
//! puts what was appended into the one order of the journal, each entry committing to the hash
//! of the one before. The in-memory journal here seals on append; the Redis one
//! ([`crate::redis_store::RedisJournal`]) queues appends and seals them in batches, from any
//! node, one batch at a time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mandate_chain::{ChainId, ChainPage, ChainStart, HopId, HopRecord, Ledger, StoreFailure};
use mandate_journal::{Checkpoint, Entry, Head};
use mandate_model::Clock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{AuditEvent, AuditFilter, AuditLog, AuditUnavailable};

/// What an entry's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A hop the ledger recorded (a token was issued on it).
    Hop,
    /// An audit event: an admin change, a revocation, a consent change, a refused exchange.
    Audit,
}

impl RecordKind {
    /// The entry's `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hop => "hop",
            Self::Audit => "audit",
        }
    }
}

/// Where the journal's kept entries begin and end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalBounds {
    /// The last entry forgotten by retention (`(0, GENESIS)` while none was): the first kept
    /// entry follows it.
    pub base: Head,
    /// The last entry sealed.
    pub head: Head,
    /// Records appended and not yet sealed.
    pub pending: u64,
}

/// One entry as stored, at its place in the store's order. The place is the seq it was sealed
/// at; an entry moved in the store keeps its own `seq` but sits at another place, which is how
/// the verifier sees it reordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Its place in the store's order.
    pub place: u64,
    /// The entry, as read.
    pub entry: Entry,
}

/// The journal's storage. Several nodes may append and seal at once: the order is the store's.
#[async_trait]
pub trait Journal: Send + Sync + std::fmt::Debug {
    /// Appends a record written at `at_ms`. `Ok` once the store holds it. The record is taken
    /// by value: every exchange appends one, and it is serialized once, without a copy.
    async fn append(&self, at_ms: i64, kind: RecordKind, record: Value)
        -> Result<(), StoreFailure>;
    /// Seals up to `max` appended records into entries, in append order; returns how many.
    /// Safe to run from several nodes at once: one seals each batch, the others find nothing
    /// or retry.
    async fn seal(&self, max: usize) -> Result<usize, StoreFailure>;
    /// Where the kept entries begin and end.
    async fn bounds(&self) -> Result<JournalBounds, StoreFailure>;
    /// Up to `limit` kept entries placed after `after`, in the store's order.
    async fn entries(&self, after: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreFailure>;
    /// Stores a signed checkpoint unless one at the same or a later seq is stored; returns
    /// whether it was stored.
    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreFailure>;
    /// Up to `limit` checkpoints at a seq after `after`, oldest first.
    async fn checkpoints(&self, after: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreFailure>;
    /// The latest checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreFailure>;
    /// Forgets up to `max` of the oldest entries written before `before_ms` (and checkpoints
    /// at or before the last forgotten); returns how many. The base moves to the last one.
    async fn forget_before(&self, before_ms: i64, max: usize) -> Result<usize, StoreFailure>;
}

/// The in-memory journal (one process), bounded: past `max_entries` the oldest entries are
/// forgotten, as retention forgets them.
#[derive(Debug)]
pub struct MemoryJournal {
    inner: Mutex<MemoryJournalState>,
    max_entries: usize,
}

#[derive(Debug, Default)]
struct MemoryJournalState {
    base: Head,
    head: Head,
    entries: VecDeque<Compact>,
    checkpoints: VecDeque<Checkpoint>,
}

/// An entry kept as its JSON text: a third of the memory of the parsed record, and entries are
/// written at every exchange but read only by exports and verification.
#[derive(Debug)]
struct Compact {
    place: u64,
    time: i64,
    seq: u64,
    hash: String,
    json: Box<str>,
}

impl Compact {
    fn of(place: u64, entry: &Entry) -> Self {
        Self {
            place,
            time: entry.time,
            seq: entry.seq,
            hash: entry.hash.clone(),
            json: serde_json::to_string(entry).unwrap_or_default().into(),
        }
    }

    fn stored(&self) -> Result<StoredEntry, StoreFailure> {
        let entry = serde_json::from_str(&self.json)
            .map_err(|e| StoreFailure(format!("unreadable journal entry: {e}")))?;
        Ok(StoredEntry {
            place: self.place,
            entry,
        })
    }
}

impl MemoryJournalState {
    fn forget_front(&mut self) -> bool {
        let Some(first) = self.entries.pop_front() else {
            return false;
        };
        self.base = Head {
            seq: first.seq,
            hash: first.hash,
        };
        while self
            .checkpoints
            .front()
            .is_some_and(|c| c.seq <= self.base.seq)
        {
            self.checkpoints.pop_front();
        }
        true
    }
}

impl MemoryJournal {
    /// An empty journal keeping at most `max_entries` (at least 1).
    pub fn new(max_entries: usize) -> Self {
        Self {
            inner: Mutex::default(),
            max_entries: max_entries.max(1),
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, MemoryJournalState>, StoreFailure> {
        self.inner
            .lock()
            .map_err(|_| StoreFailure("journal lock poisoned".into()))
    }

    /// Test and tooling access: applies `change` to the stored entries, as someone with write
    /// access to the store could (mandate never calls it).
    pub fn tamper(&self, change: impl FnOnce(&mut VecDeque<StoredEntry>)) {
        if let Ok(mut state) = self.inner.lock() {
            let mut entries: VecDeque<StoredEntry> = state
                .entries
                .iter()
                .filter_map(|c| c.stored().ok())
                .collect();
            change(&mut entries);
            state.entries = entries
                .iter()
                .map(|e| Compact::of(e.place, &e.entry))
                .collect();
        }
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn append(
        &self,
        at_ms: i64,
        kind: RecordKind,
        record: Value,
    ) -> Result<(), StoreFailure> {
        let mut state = self.state()?;
        let entry = Entry::seal(&state.head, at_ms, kind.as_str(), record);
        state.head = entry.head();
        state.entries.push_back(Compact::of(entry.seq, &entry));
        while state.entries.len() > self.max_entries {
            state.forget_front();
        }
        Ok(())
    }

    async fn seal(&self, _max: usize) -> Result<usize, StoreFailure> {
        Ok(0)
    }

    async fn bounds(&self) -> Result<JournalBounds, StoreFailure> {
        let state = self.state()?;
        Ok(JournalBounds {
            base: state.base.clone(),
            head: state.head.clone(),
            pending: 0,
        })
    }

    async fn entries(&self, after: u64, limit: usize) -> Result<Vec<StoredEntry>, StoreFailure> {
        let state = self.state()?;
        let start = state.entries.partition_point(|e| e.place <= after);
        state
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .map(Compact::stored)
            .collect()
    }

    async fn add_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreFailure> {
        let mut state = self.state()?;
        if state
            .checkpoints
            .back()
            .is_some_and(|c| c.seq >= checkpoint.seq)
        {
            return Ok(false);
        }
        state.checkpoints.push_back(checkpoint.clone());
        Ok(true)
    }

    async fn checkpoints(&self, after: u64, limit: usize) -> Result<Vec<Checkpoint>, StoreFailure> {
        let state = self.state()?;
        Ok(state
            .checkpoints
            .iter()
            .filter(|c| c.seq > after)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, StoreFailure> {
        Ok(self.state()?.checkpoints.back().cloned())
    }

    async fn forget_before(&self, before_ms: i64, max: usize) -> Result<usize, StoreFailure> {
        let mut state = self.state()?;
        let mut forgotten = 0;
        while forgotten < max
            && state.entries.front().is_some_and(|e| e.time < before_ms)
            && state.forget_front()
        {
            forgotten += 1;
        }
        Ok(forgotten)
    }
}

/// A ledger that journals every hop it records: the hop is recorded, then appended to the
/// journal, and `record` is `Ok` only when both are (no token is issued on a hop the journal
/// does not hold).
#[derive(Debug)]
pub struct JournaledLedger {
    ledger: Arc<dyn Ledger>,
    journal: Arc<dyn Journal>,
    clock: Arc<dyn Clock>,
}

impl JournaledLedger {
    /// `ledger`, journaling into `journal` at `clock`'s time.
    pub fn new(ledger: Arc<dyn Ledger>, journal: Arc<dyn Journal>, clock: Arc<dyn Clock>) -> Self {
        Self {
            ledger,
            journal,
            clock,
        }
    }
}

#[async_trait]
impl Ledger for JournaledLedger {
    async fn record(&self, hop: &HopRecord) -> Result<(), StoreFailure> {
        // In turn, not together: a journal entry for a hop the ledger then refused would record
        // a hop no token was issued on.
        self.ledger.record(hop).await?;
        let record = serde_json::to_value(hop)
            .map_err(|e| StoreFailure(format!("hop record not serializable: {e}")))?;
        self.journal
            .append(self.clock.now().timestamp_millis(), RecordKind::Hop, record)
            .await
    }

    async fn hop(&self, id: &HopId) -> Result<Option<HopRecord>, StoreFailure> {
        self.ledger.hop(id).await
    }

    async fn chain(&self, chain_id: &ChainId) -> Result<Vec<HopRecord>, StoreFailure> {
        self.ledger.chain(chain_id).await
    }

    async fn chains_rooted_on_consent(
        &self,
        consent_id: &str,
    ) -> Result<Vec<ChainId>, StoreFailure> {
        self.ledger.chains_rooted_on_consent(consent_id).await
    }

    async fn chains_by_start(&self, page: &ChainPage) -> Result<Vec<ChainStart>, StoreFailure> {
        self.ledger.chains_by_start(page).await
    }
}

/// An audit stream that journals every event. The audit trait does not fail (an event that
/// cannot be written is logged), so neither does this: a journal that cannot be written is
/// logged at `error`, with the event's action and target, and counted.
#[derive(Debug)]
pub struct JournaledAudit {
    audit: Arc<dyn AuditLog>,
    journal: Arc<dyn Journal>,
}

impl JournaledAudit {
    /// `audit`, journaling into `journal`.
    pub fn new(audit: Arc<dyn AuditLog>, journal: Arc<dyn Journal>) -> Self {
        Self { audit, journal }
    }
}

#[async_trait]
impl AuditLog for JournaledAudit {
    async fn record(&self, event: AuditEvent) {
        let (at, action) = (event.at, event.action.clone());
        let record = serde_json::to_value(&event).unwrap_or(Value::Null);
        self.audit.record(event).await;
        if let Err(error) = self.journal.append(at, RecordKind::Audit, record).await {
            metrics::counter!("mandate_journal_append_failures_total").increment(1);
            tracing::error!(%error, action, "audit event not journaled");
        }
    }

    async fn recent(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, AuditUnavailable> {
        self.audit.recent(filter, limit).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meets_the_contract() {
        crate::contract::journal(&MemoryJournal::new(10_000)).await;
    }

    #[tokio::test]
    async fn the_memory_journal_is_bounded_and_its_base_follows() {
        let journal = MemoryJournal::new(3);
        for n in 0..5 {
            journal
                .append(n, RecordKind::Audit, serde_json::json!({ "n": n }))
                .await
                .unwrap();
        }
        let bounds = journal.bounds().await.unwrap();
        let kept = journal.entries(0, 10).await.unwrap();
        assert_eq!(
            kept.iter().map(|e| e.entry.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(bounds.base.seq, 2);
        assert_eq!(kept.first().unwrap().entry.prev, bounds.base.hash);
        assert_eq!(bounds.head, kept.last().unwrap().entry.head());
    }
}
