//! The journal service over the in-memory journal: the online verification names an altered,
//! a removed and two reordered entries, a rewritten history is caught by its signed checkpoint,
//! and a listing filtered by chain pages through a journal larger than one store page.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly"
)]

use std::sync::Arc;

use futures_util::TryStreamExt as _;
use mandate_core::{Cursor, ExportFormat, JournalService, KeyRing};
use mandate_journal::{sign_checkpoint, Entry, Finding, Head, Selection};
use mandate_model::SystemClock;
use mandate_store::{Journal, MemoryJournal, RecordKind};
use mandate_token::{KeySet, SigningAlgorithm, SigningKey};
use serde_json::json;

const ISSUER: &str = "https://mandate.example";

fn keys() -> KeyRing {
    KeyRing::new(
        KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap(),
    )
}

async fn journal_of(n: i64) -> Arc<MemoryJournal> {
    let journal = Arc::new(MemoryJournal::new(100_000));
    for i in 1..=n {
        let record = json!({ "id": format!("hop_{i}"), "chain_id": format!("chn_{}", i % 3), "subject": "corp|alice" });
        journal.append(i, RecordKind::Hop, record).await.unwrap();
    }
    journal
}

fn service(journal: Arc<MemoryJournal>, keys: KeyRing) -> JournalService {
    JournalService::new(journal, keys, ISSUER, Arc::new(SystemClock))
}

#[tokio::test]
async fn verification_names_an_altered_a_removed_and_a_reordered_entry() {
    let journal = journal_of(10).await;
    let service = service(journal.clone(), keys());
    assert!(service.verify().await.unwrap().clean);

    journal.tamper(|entries| {
        // Entry 3's record changed; entry 5 removed; entries 7 and 8 swapped.
        entries[2].entry.record["subject"] = json!("corp|mallory");
        entries.remove(4);
        let (seven, eight) = (entries[5].entry.clone(), entries[6].entry.clone());
        entries[5].entry = eight;
        entries[6].entry = seven;
    });
    let report = service.verify().await.unwrap();
    assert!(!report.clean);
    assert_eq!(
        report.report.findings,
        [
            Finding::Altered { seq: 3 },
            Finding::Reordered { seq: 7, after: 8 },
            Finding::Removed {
                after: 4,
                missing: 1
            },
        ],
        "{:?}",
        report.messages
    );
    assert_eq!(report.messages.len(), 3);
    assert!(report.messages[0].contains("entry 3 was altered"));
}

#[tokio::test]
async fn a_consistently_rewritten_history_is_caught_by_its_checkpoint() {
    let journal = journal_of(6).await;
    let keys = keys();
    let head = journal.bounds().await.unwrap().head;
    let checkpoint = sign_checkpoint(keys.current().active(), ISSUER, 1, &head).unwrap();
    assert!(journal.add_checkpoint(&checkpoint).await.unwrap());
    let service = service(journal.clone(), keys);
    let report = service.verify().await.unwrap();
    assert!(report.clean && report.checkpoints_verified == 1);

    // Rewrite entry 2 and recompute every hash after it: the links all hold.
    journal.tamper(|entries| {
        let mut prev = Head {
            seq: 1,
            hash: entries[0].entry.hash.clone(),
        };
        for stored in entries.iter_mut().skip(1) {
            let mut record = stored.entry.record.clone();
            if stored.entry.seq == 2 {
                record["subject"] = json!("corp|mallory");
            }
            stored.entry = Entry::seal(&prev, stored.entry.time, "hop", record);
            prev = stored.entry.head();
        }
    });
    let report = service.verify().await.unwrap();
    assert!(!report.clean);
    // The signed checkpoint no longer matches (and neither does the store's head, which a
    // thorough forger would rewrite as well).
    assert_eq!(
        report.report.findings[0],
        Finding::CheckpointMismatch { seq: 6 }
    );
}

#[tokio::test]
async fn a_filtered_listing_pages_across_store_pages_and_the_export_counts_its_lines() {
    let journal = journal_of(1_200).await;
    let service = service(journal, keys());
    let selection = Selection {
        chain: Some("chn_1".into()),
        ..Selection::default()
    };
    let mut cursor = Cursor::default();
    let mut seen = Vec::new();
    loop {
        let page = service.page(selection.clone(), cursor, 150).await.unwrap();
        assert!(page.entries.len() <= 150);
        seen.extend(page.entries.iter().map(|e| e.seq));
        match page.next {
            Some(next) => cursor = Cursor::parse(&next).unwrap(),
            None => break,
        }
    }
    let expected: Vec<u64> = (1..=1_200).filter(|i| i % 3 == 1).collect();
    assert_eq!(seen, expected, "every match once, in order");

    let lines: Vec<String> = service
        .export(selection, ExportFormat::Jsonl)
        .try_collect()
        .await
        .unwrap();
    let text: String = lines.concat();
    assert_eq!(
        text.lines().count(),
        400 + 2,
        "header, 400 entries, trailer"
    );
    assert!(text.lines().last().unwrap().contains("\"entries\":400"));
}
