//! The load benchmark's smoke form: every phase for a moment, on the memory store and on a
//! private Redis, with the server in-process (so the test needs no separately built binary).
//! No figure is asserted; every request must have succeeded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_runs_every_phase_on_both_stores() {
    let report = mandate_bench::run(&mandate_bench::Options::smoke())
        .await
        .unwrap();
    assert!(report.ceiling.exchange_basic > 0.0);
    assert!(report.ceiling.exchange_pkjwt > 0.0);
    assert!(report.ceiling.introspect > 0.0);
    let stores: Vec<&str> = report.stores.iter().map(|s| s.store.as_str()).collect();
    assert_eq!(stores, ["memory", "redis"]);
    for store in &report.stores {
        for (phase, sample) in store.samples() {
            assert!(sample.ok > 0, "{}: {phase}: nothing succeeded", store.store);
            assert_eq!(
                sample.failed, 0,
                "{}: {phase}: {:?}",
                store.store, sample.first_error
            );
        }
    }
}
