//! The streaming verifier: entries go in one at a time, findings come out, and memory stays
//! bounded (a window of [`REORDER_WINDOW`] entries ahead of the one expected, and the
//! checkpoints' seq and hash).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::entry::{Entry, Head};

/// How many entries past a missing one the verifier holds, waiting for it to turn up out of
/// order, before it reports it removed.
pub const REORDER_WINDOW: usize = 64;

/// At most this many findings are kept; the rest are counted.
const FINDINGS_KEPT: usize = 10_000;

/// What the verifier found wrong, each naming the entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// The entry's content does not hash to its stored hash: it was changed after sealing.
    Altered {
        /// The entry.
        seq: u64,
    },
    /// The entry's `prev` is not the hash of the entry before it: the one before was changed
    /// and rehashed, or replaced.
    BrokenLink {
        /// The entry.
        seq: u64,
    },
    /// Entries are missing: `missing` of them after `after`.
    Removed {
        /// The last entry before the gap.
        after: u64,
        /// How many are missing.
        missing: u64,
    },
    /// The entry comes after a later one.
    Reordered {
        /// The entry.
        seq: u64,
        /// The later entry it follows.
        after: u64,
    },
    /// The entry's seq was already seen.
    Duplicated {
        /// The entry.
        seq: u64,
    },
    /// A signed checkpoint names another hash for this seq: history was rewritten.
    CheckpointMismatch {
        /// The entry.
        seq: u64,
    },
    /// A signed checkpoint names a seq beyond the last entry: the end was cut off.
    CheckpointBeyond {
        /// The checkpoint's seq.
        seq: u64,
        /// The last entry present.
        last: u64,
    },
    /// The store's head names another hash for the last entry.
    HeadMismatch {
        /// The entry.
        seq: u64,
    },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Altered { seq } => write!(f, "entry {seq} was altered: its content does not match its hash"),
            Self::BrokenLink { seq } => write!(f, "entry {seq} does not follow entry {}: the entry before it was altered and rehashed, or replaced", seq.saturating_sub(1)),
            Self::Removed { after, missing: 1 } => write!(f, "entry {} was removed (after entry {after})", after + 1),
            Self::Removed { after, missing } => write!(f, "entries {} to {} were removed ({missing} after entry {after})", after + 1, after + missing),
            Self::Reordered { seq, after } => write!(f, "entry {seq} was reordered: it comes after entry {after}"),
            Self::Duplicated { seq } => write!(f, "entry {seq} appears more than once"),
            Self::CheckpointMismatch { seq } => write!(f, "entry {seq} differs from the signed checkpoint at {seq}: history was rewritten"),
            Self::CheckpointBeyond { seq, last } => write!(f, "a signed checkpoint names entry {seq}, but the journal ends at entry {last}: its end was removed"),
            Self::HeadMismatch { seq } => write!(f, "entry {seq} differs from the store's head"),
        }
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// The first and last seq read.
    pub first: Option<u64>,
    /// The last seq read.
    pub last: Option<u64>,
    /// Checkpoints compared with an entry.
    pub checkpoints_checked: u64,
    /// The findings, in the order found (at most 10,000).
    pub findings: Vec<Finding>,
    /// Findings beyond those kept.
    pub findings_dropped: u64,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty() && self.findings_dropped == 0
    }
}

/// Reads entries in journal order and finds what was altered, removed, reordered or rewritten.
#[derive(Debug)]
pub struct Verifier {
    contiguous: bool,
    to_end: bool,
    expected: Option<u64>,
    last: Option<Head>,
    ahead: BTreeMap<u64, Entry>,
    checkpoints: BTreeMap<u64, String>,
    report: Report,
}

impl Verifier {
    /// A verifier for a contiguous run of entries (a whole journal, or a range of it).
    pub fn new() -> Self {
        Self {
            contiguous: true,
            to_end: true,
            expected: None,
            last: None,
            ahead: BTreeMap::new(),
            checkpoints: BTreeMap::new(),
            report: Report::default(),
        }
    }

    /// A verifier for the entries kept after `base`, the last entry retention forgot: the
    /// first kept entry must be the one after it and link to it, so removing the oldest kept
    /// entries is found too.
    pub fn starting_after(base: Head) -> Self {
        let mut verifier = Self::new();
        if base.seq > 0 {
            verifier.expected = Some(base.seq + 1);
            verifier.last = Some(base);
        } else {
            verifier.expected = Some(1);
        }
        verifier
    }

    /// A verifier for a filtered selection (by chain or subject): gaps are expected, so only
    /// each entry's own hash, the order and the checkpoints of the entries present are checked.
    pub fn filtered() -> Self {
        Self {
            contiguous: false,
            ..Self::new()
        }
    }

    /// The same verifier for a run that stops before the journal's end (a time range): a
    /// checkpoint past its last entry is not a sign the end was cut off.
    pub fn not_to_end(mut self) -> Self {
        self.to_end = false;
        self
    }

    /// Adds one checkpoint (seq, hash) whose signature the caller has verified.
    pub fn add_checkpoint(&mut self, checkpoint: Head) {
        self.checkpoints.insert(checkpoint.seq, checkpoint.hash);
    }

    /// Adds checkpoints (seq, hash) whose signatures the caller has verified.
    pub fn with_checkpoints(mut self, checkpoints: impl IntoIterator<Item = Head>) -> Self {
        self.checkpoints
            .extend(checkpoints.into_iter().map(|h| (h.seq, h.hash)));
        self
    }

    fn found(&mut self, finding: Finding) {
        if self.report.findings.len() < FINDINGS_KEPT {
            self.report.findings.push(finding);
        } else {
            self.report.findings_dropped += 1;
        }
    }

    /// Reads the next entry.
    pub fn feed(&mut self, entry: Entry) {
        self.report.entries += 1;
        if !entry.hash_matches() {
            self.found(Finding::Altered { seq: entry.seq });
        }
        let Some(expected) = self.expected else {
            self.process(entry);
            return;
        };
        if !self.contiguous {
            match self.last.as_ref().map(|l| l.seq) {
                Some(last) if entry.seq == last => {
                    self.found(Finding::Duplicated { seq: entry.seq })
                }
                Some(last) if entry.seq < last => self.found(Finding::Reordered {
                    seq: entry.seq,
                    after: last,
                }),
                _ => {}
            }
            self.process(entry);
            return;
        }
        if entry.seq < expected || self.ahead.contains_key(&entry.seq) {
            self.found(Finding::Duplicated { seq: entry.seq });
        } else if entry.seq == expected {
            if let Some((&later, _)) = self.ahead.last_key_value() {
                self.found(Finding::Reordered {
                    seq: entry.seq,
                    after: later,
                });
            }
            self.process(entry);
            self.drain();
        } else {
            // Held ahead of a missing entry, it may still come after a later one.
            if let Some((&later, _)) = self.ahead.last_key_value() {
                if later > entry.seq {
                    self.found(Finding::Reordered {
                        seq: entry.seq,
                        after: later,
                    });
                }
            }
            self.ahead.insert(entry.seq, entry);
            if self.ahead.len() > REORDER_WINDOW {
                self.skip_gap();
            }
        }
    }

    /// Reports the gap before the first entry held ahead, and goes on from there.
    fn skip_gap(&mut self) {
        let (Some(expected), Some((&next, _))) = (self.expected, self.ahead.first_key_value())
        else {
            return;
        };
        self.found(Finding::Removed {
            after: expected - 1,
            missing: next - expected,
        });
        // The link across a gap cannot be checked.
        self.last = None;
        self.expected = Some(next);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(expected) = self.expected {
            let Some(entry) = self.ahead.remove(&expected) else {
                break;
            };
            self.process(entry);
        }
    }

    fn process(&mut self, entry: Entry) {
        if self.contiguous {
            if let Some(last) = &self.last {
                if last.seq + 1 == entry.seq && entry.prev != last.hash {
                    self.found(Finding::BrokenLink { seq: entry.seq });
                }
            }
        }
        if let Some(hash) = self.checkpoints.get(&entry.seq) {
            self.report.checkpoints_checked += 1;
            if *hash != entry.hash {
                self.found(Finding::CheckpointMismatch { seq: entry.seq });
            }
        }
        self.report.first.get_or_insert(entry.seq);
        self.report.last = Some(self.report.last.map_or(entry.seq, |l| l.max(entry.seq)));
        self.expected = Some(entry.seq + 1);
        self.last = Some(entry.head());
    }

    /// Ends the verification. With `head` (the store's, online), entries missing at the end
    /// are found too.
    pub fn finish(mut self, head: Option<&Head>) -> Report {
        while !self.ahead.is_empty() {
            self.skip_gap();
        }
        let last = self.report.last.unwrap_or(0);
        // Only a run meant to reach the end says the end was cut off: a selection by content
        // or by time stops before it by design.
        let beyond: Vec<u64> = if self.contiguous && self.to_end {
            self.checkpoints
                .range(last + 1..)
                .map(|(s, _)| *s)
                .collect()
        } else {
            Vec::new()
        };
        for seq in beyond {
            self.found(Finding::CheckpointBeyond { seq, last });
        }
        if let Some(head) = head {
            match &self.last {
                Some(end) if head.seq > end.seq && self.contiguous => {
                    self.found(Finding::Removed {
                        after: end.seq,
                        missing: head.seq - end.seq,
                    })
                }
                Some(end) if head.seq == end.seq && head.hash != end.hash => {
                    self.found(Finding::HeadMismatch { seq: end.seq });
                }
                None if head.seq > 0 && self.report.entries == 0 => self.found(Finding::Removed {
                    after: 0,
                    missing: head.seq,
                }),
                _ => {}
            }
        }
        self.report
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn journal(n: u64) -> Vec<Entry> {
        let mut head = Head::default();
        (1..=n)
            .map(|i| {
                let entry = Entry::seal(
                    &head,
                    i as i64 * 1000,
                    "hop",
                    json!({"id": format!("hop_{i}")}),
                );
                head = entry.head();
                entry
            })
            .collect()
    }

    fn verify(entries: Vec<Entry>) -> Vec<Finding> {
        let mut verifier = Verifier::new();
        entries.into_iter().for_each(|e| verifier.feed(e));
        verifier.finish(None).findings
    }

    #[test]
    fn a_verifier_starting_after_the_base_finds_the_oldest_kept_entries_removed() {
        let entries = journal(6);
        let base = entries[1].head();
        let mut intact = Verifier::starting_after(base.clone());
        entries[2..].iter().for_each(|e| intact.feed(e.clone()));
        assert!(intact.finish(None).is_clean());

        let mut cut = Verifier::starting_after(base);
        entries[4..].iter().for_each(|e| cut.feed(e.clone()));
        assert_eq!(
            cut.finish(None).findings,
            [Finding::Removed {
                after: 2,
                missing: 2
            }]
        );

        let mut from_genesis = Verifier::starting_after(Head::default());
        entries[1..]
            .iter()
            .for_each(|e| from_genesis.feed(e.clone()));
        assert_eq!(
            from_genesis.finish(None).findings,
            [Finding::Removed {
                after: 0,
                missing: 1
            }]
        );
    }

    #[test]
    fn an_untouched_journal_is_clean() {
        let mut verifier = Verifier::new().with_checkpoints([journal(10)[6].head()]);
        journal(10).into_iter().for_each(|e| verifier.feed(e));
        let report = verifier.finish(Some(&journal(10)[9].head()));
        assert!(report.is_clean(), "{:?}", report.findings);
        assert_eq!(
            (
                report.entries,
                report.first,
                report.last,
                report.checkpoints_checked
            ),
            (10, Some(1), Some(10), 1)
        );
    }

    #[test]
    fn an_altered_entry_is_named() {
        let mut entries = journal(10);
        entries[4].record = json!({"id": "hop_forged"});
        assert_eq!(verify(entries), [Finding::Altered { seq: 5 }]);
    }

    #[test]
    fn an_altered_and_rehashed_entry_breaks_the_next_link() {
        let mut entries = journal(10);
        entries[4].record = json!({"id": "hop_forged"});
        let e = &entries[4];
        entries[4].hash = crate::entry_hash(e.seq, e.time, &e.kind, &e.record, &e.prev);
        assert_eq!(verify(entries), [Finding::BrokenLink { seq: 6 }]);
    }

    #[test]
    fn a_removed_entry_is_named() {
        let mut entries = journal(10);
        entries.remove(3);
        let findings = verify(entries);
        assert_eq!(
            findings,
            [Finding::Removed {
                after: 3,
                missing: 1
            }]
        );
        assert_eq!(
            findings[0].to_string(),
            "entry 4 was removed (after entry 3)"
        );
    }

    #[test]
    fn a_removed_entry_is_found_past_the_reorder_window_too() {
        let mut entries = journal(200);
        entries.drain(9..12);
        assert_eq!(
            verify(entries),
            [Finding::Removed {
                after: 9,
                missing: 3
            }]
        );
    }

    #[test]
    fn two_swapped_entries_are_named() {
        let mut entries = journal(10);
        entries.swap(3, 4);
        let findings = verify(entries);
        assert_eq!(findings, [Finding::Reordered { seq: 4, after: 5 }]);
        assert_eq!(
            findings[0].to_string(),
            "entry 4 was reordered: it comes after entry 5"
        );
    }

    #[test]
    fn a_duplicated_entry_is_named() {
        let mut entries = journal(5);
        entries.insert(3, entries[2].clone());
        assert_eq!(verify(entries), [Finding::Duplicated { seq: 3 }]);
    }

    #[test]
    fn a_cut_off_end_is_found_by_the_head_or_a_checkpoint() {
        let full = journal(10);
        let mut verifier = Verifier::new().with_checkpoints([full[8].head()]);
        full[..7].iter().cloned().for_each(|e| verifier.feed(e));
        let findings = verifier.finish(Some(&full[9].head())).findings;
        assert_eq!(
            findings,
            [
                Finding::CheckpointBeyond { seq: 9, last: 7 },
                Finding::Removed {
                    after: 7,
                    missing: 3
                }
            ]
        );
    }

    #[test]
    fn history_rewritten_consistently_is_caught_only_by_a_checkpoint() {
        let original = journal(10);
        // Rewrite entry 3 and every hash after it, as someone with write access to the store
        // (but not mandate's key) could.
        let mut head = original[1].head();
        let rewritten: Vec<Entry> = original[..2]
            .iter()
            .cloned()
            .chain((3..=10).map(|i| {
                let record = if i == 3 {
                    json!({"id": "hop_forged"})
                } else {
                    original[i as usize - 1].record.clone()
                };
                let entry = Entry::seal(&head, i as i64 * 1000, "hop", record);
                head = entry.head();
                entry
            }))
            .collect();
        assert!(verify(rewritten.clone()).is_empty(), "no hash breaks");
        let mut verifier = Verifier::new().with_checkpoints([original[5].head()]);
        rewritten.into_iter().for_each(|e| verifier.feed(e));
        assert_eq!(
            verifier.finish(None).findings,
            [Finding::CheckpointMismatch { seq: 6 }]
        );
    }

    #[test]
    fn a_filtered_selection_checks_hashes_and_order_but_expects_gaps() {
        let entries = journal(10);
        let mut picked: Vec<Entry> = [1, 4, 8].iter().map(|&i| entries[i].clone()).collect();
        let mut verifier = Verifier::filtered();
        picked.iter().cloned().for_each(|e| verifier.feed(e));
        assert!(verifier.finish(None).is_clean());
        picked[1].record = json!({});
        picked.swap(0, 2);
        let mut verifier = Verifier::filtered();
        picked.into_iter().for_each(|e| verifier.feed(e));
        assert_eq!(
            verifier.finish(None).findings,
            [
                Finding::Altered { seq: 5 },
                Finding::Reordered { seq: 5, after: 9 },
                Finding::Reordered { seq: 2, after: 5 }
            ]
        );
    }
}
