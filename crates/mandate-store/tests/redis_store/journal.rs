//! The journal in Redis from several nodes at once: appends and seals race, and the journal
//! still has one order without gaps or repeats, every entry linked to the one before.

use mandate_journal::Verifier;
use mandate_redis_test::RedisServer;
use mandate_store::{Journal, RecordKind, RedisJournal};

#[tokio::test]
async fn nodes_appending_and_sealing_at_once_make_one_order() {
    let server = RedisServer::start().await.unwrap();
    // Two nodes: two connections, two journals over one Redis.
    let nodes = [
        RedisJournal::new(mandate_store::connect(&server.url()).await.unwrap()),
        RedisJournal::new(mandate_store::connect(&server.url()).await.unwrap()),
    ];
    let work = nodes.iter().enumerate().map(|(node, journal)| async move {
        for n in 0..200_i64 {
            journal
                .append(
                    n,
                    RecordKind::Audit,
                    serde_json::json!({ "node": node, "n": n }),
                )
                .await
                .unwrap();
            if n % 7 == 0 {
                journal.seal(16).await.unwrap();
            }
        }
        while journal.bounds().await.unwrap().pending > 0 {
            journal.seal(16).await.unwrap();
        }
    });
    futures_util::future::join_all(work).await;

    let journal = &nodes[0];
    let bounds = journal.bounds().await.unwrap();
    assert_eq!((bounds.head.seq, bounds.pending), (400, 0));
    let mut verifier = Verifier::new();
    let mut after = 0;
    let mut seen = std::collections::HashSet::new();
    loop {
        let page = journal.entries(after, 64).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.place;
        for stored in page {
            assert_eq!(stored.place, stored.entry.seq);
            let record = &stored.entry.record;
            assert!(
                seen.insert((record["node"].clone(), record["n"].clone())),
                "sealed twice: {record}"
            );
            verifier.feed(stored.entry);
        }
    }
    assert_eq!(seen.len(), 400, "every record sealed once");
    let report = verifier.finish(Some(&bounds.head));
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.entries, 400);
}
