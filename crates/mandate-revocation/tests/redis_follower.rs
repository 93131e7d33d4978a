//! The revocation follower (the verifier SDK's cached mode, DESIGN.md section 6) against a real
//! Redis: it snapshots, follows the stream, fails closed without heartbeats, recovers from a crash
//! with a new snapshot, snapshots again when the stream is trimmed past it, and decides exactly as
//! the store does.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mandate_redis_test::RedisServer;
use mandate_revocation::{
    FollowerConfig, FollowerError, RedisRevocations, Revocation, RevocationFollower,
    RevocationKind, RevocationList, RevocationRecord, RevocationStream, TokenFacts, Verdict,
    STREAM_KEY,
};
use redis::aio::{ConnectionLike, ConnectionManager};

type Store = RedisRevocations<ConnectionManager>;

/// How long an entry written by these tests lives.
const LIFETIME_MS: i64 = 600_000;
/// What heartbeats keep of the stream (`MINID ~ now - this`).
const KEEP_MS: i64 = 3_600_000;
/// How often the heartbeat task writes.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(200);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(20);

async fn manager(url: &str) -> ConnectionManager {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
        .await
        .unwrap()
}

/// A store on its own connection (the follower gets another one: `XREAD BLOCK` holds its
/// connection).
async fn store(server: &RedisServer) -> Store {
    RedisRevocations::new(manager(&server.url()).await)
}

/// A connection whose requests wait while its gate is closed, so a test can hold the follower
/// still at a known point.
#[derive(Clone)]
struct Gated {
    inner: ConnectionManager,
    gate: Arc<Gate>,
}

struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    waiting: AtomicUsize,
}

impl Gate {
    async fn pass(&self) {
        if *self.open.borrow() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|open| *open).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gated {
    async fn new(url: &str, open: bool) -> Self {
        Self {
            inner: manager(url).await,
            gate: Arc::new(Gate {
                open: tokio::sync::watch::Sender::new(open),
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    fn open(&self) {
        self.gate.open.send_replace(true);
    }

    /// Closes the gate and waits until a request is held at it.
    async fn close_and_hold(&self) {
        self.gate.open.send_replace(false);
        assert!(
            eventually(Duration::from_secs(10), || {
                self.gate.waiting.load(Ordering::SeqCst) > 0
            })
            .await,
            "the follower never reached the gate"
        );
    }
}

impl ConnectionLike for Gated {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            self.gate.pass().await;
            self.inner.req_packed_command(cmd).await
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            self.gate.pass().await;
            self.inner
                .req_packed_commands(pipeline, offset, count)
                .await
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Aborts the task when dropped.
struct Heartbeats(tokio::task::JoinHandle<()>);

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A task writing this node's heartbeat every 200 ms (errors ignored: Redis may be down).
fn heartbeats(store: &Store) -> Heartbeats {
    let store = store.clone();
    Heartbeats(tokio::spawn(async move {
        loop {
            let _ = store.heartbeat("test-node", KEEP_MS).await;
            tokio::time::sleep(HEARTBEAT_EVERY).await;
        }
    }))
}

async fn revoke(store: &Store, kind: RevocationKind, id: &str) -> RevocationRecord {
    revoke_until(store, kind, id, LIFETIME_MS).await
}

async fn revoke_until(
    store: &Store,
    kind: RevocationKind,
    id: &str,
    lifetime_ms: i64,
) -> RevocationRecord {
    let now = store.now_ms().await.unwrap();
    let mut written = store
        .revoke(vec![Revocation {
            kind,
            id: id.into(),
            until_ms: now + lifetime_ms,
            reason: "test".into(),
            by: "test".into(),
        }])
        .await
        .unwrap();
    written.pop().unwrap()
}

/// Polls `condition` until it holds or `timeout` passes; whether it held.
async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the follower until it answers `expected` for `facts`.
async fn answers(
    follower: &RevocationFollower,
    facts: &TokenFacts,
    expected: &Result<Verdict, FollowerError>,
    timeout: Duration,
) {
    let mut last = follower.check(facts);
    let held = eventually(timeout, || {
        last = follower.check(facts);
        &last == expected
    })
    .await;
    assert!(
        held,
        "expected {expected:?} within {timeout:?}, last answer {last:?} ({follower:?})"
    );
}

fn hop(id: &str) -> TokenFacts {
    TokenFacts {
        hop: Some(id.into()),
        issued_at: 1,
        ..TokenFacts::default()
    }
}

fn revoked(kind: RevocationKind, id: &str) -> Result<Verdict, FollowerError> {
    Ok(Verdict::Revoked {
        kind,
        id: id.into(),
    })
}

fn config(staleness_bound: Duration) -> FollowerConfig {
    FollowerConfig {
        staleness_bound,
        ..FollowerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_sees_existing_entries_then_new_revocations() {
    let server = RedisServer::start().await.unwrap();
    let store = store(&server).await;
    revoke(&store, RevocationKind::Hop, "hop_old").await;
    store.heartbeat("test-node", KEEP_MS).await.unwrap();

    // Held at the gate: no snapshot yet.
    let connection = Gated::new(&server.url(), false).await;
    let follower = RevocationFollower::spawn(connection.clone(), FollowerConfig::default());
    assert_eq!(
        follower.check(&hop("hop_old")),
        Err(FollowerError::NotReady)
    );
    assert!(!follower.ready(Duration::from_millis(100)).await);
    connection.open();
    assert!(follower.ready(Duration::from_secs(5)).await);

    let _heartbeats = heartbeats(&store);
    // The heartbeat written before the snapshot already counts.
    assert_eq!(
        follower.check(&hop("hop_old")),
        revoked(RevocationKind::Hop, "hop_old")
    );
    assert_eq!(follower.check(&hop("hop_other")), Ok(Verdict::Live));
    let stats = follower.stats();
    assert_eq!((stats.entries, stats.snapshots), (1, 1), "{stats:?}");

    revoke(&store, RevocationKind::Hop, "hop_new").await;
    answers(
        &follower,
        &hop("hop_new"),
        &revoked(RevocationKind::Hop, "hop_new"),
        Duration::from_secs(2),
    )
    .await;
    let stats = follower.stats();
    assert_eq!((stats.entries, stats.snapshots), (2, 1), "{stats:?}");
    assert_ne!(stats.position, "0-0");

    // Clones share the copy; stopping one stops the task for all.
    let clone = follower.clone();
    assert_eq!(
        clone.check(&hop("hop_new")),
        revoked(RevocationKind::Hop, "hop_new")
    );
    follower.stop();
    assert!(
        eventually(Duration::from_secs(5), || matches!(
            clone.check(&hop("hop_new")),
            Err(FollowerError::Stale { .. })
        ))
        .await,
        "a stopped follower must turn stale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_fails_closed_when_heartbeats_stop() {
    let bound = Duration::from_secs(1);
    let server = RedisServer::start().await.unwrap();
    let store = store(&server).await;
    revoke(&store, RevocationKind::Hop, "hop_1").await;

    // No heartbeat ever: stale from the start.
    let follower = RevocationFollower::spawn(manager(&server.url()).await, config(bound));
    assert!(follower.ready(Duration::from_secs(5)).await);
    assert!(matches!(
        follower.check(&hop("hop_1")),
        Err(FollowerError::Stale { .. })
    ));

    let beating = heartbeats(&store);
    answers(
        &follower,
        &hop("hop_1"),
        &revoked(RevocationKind::Hop, "hop_1"),
        Duration::from_secs(2),
    )
    .await;
    // Heartbeats every 200 ms keep it fresh for longer than the bound.
    let fresh_until = Instant::now() + 2 * bound;
    while Instant::now() < fresh_until {
        assert_eq!(
            follower.check(&hop("hop_1")),
            revoked(RevocationKind::Hop, "hop_1")
        );
        tokio::time::sleep(POLL).await;
    }

    drop(beating);
    let stopped = Instant::now();
    let mut answer = follower.check(&hop("hop_1"));
    assert!(
        eventually(Duration::from_secs(5), || {
            answer = follower.check(&hop("hop_1"));
            matches!(answer, Err(FollowerError::Stale { .. }))
        })
        .await,
        "still {answer:?}"
    );
    let Err(FollowerError::Stale { since_ms }) = answer else {
        unreachable!()
    };
    assert!(since_ms > 1000, "{since_ms}");
    assert!(stopped.elapsed() < Duration::from_secs(5));
    // A live token is not live either: the follower cannot know.
    assert!(matches!(
        follower.check(&hop("hop_unrevoked")),
        Err(FollowerError::Stale { .. })
    ));

    // A new follower on a stream whose last heartbeat is older than the bound is stale at once:
    // an old heartbeat read in the snapshot does not count as fresh.
    let late = RevocationFollower::spawn(manager(&server.url()).await, config(bound));
    assert!(late.ready(Duration::from_secs(5)).await);
    assert!(matches!(
        late.check(&hop("hop_1")),
        Err(FollowerError::Stale { .. })
    ));
    // Heartbeats again: both recover.
    let _beating = heartbeats(&store);
    for follower in [&follower, &late] {
        answers(
            follower,
            &hop("hop_1"),
            &revoked(RevocationKind::Hop, "hop_1"),
            Duration::from_secs(2),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_fails_closed_while_redis_is_down_and_resnapshots_after() {
    let bound = Duration::from_secs(1);
    let mut server = RedisServer::start().await.unwrap();
    let store = store(&server).await;
    let _heartbeats = heartbeats(&store);
    let connection = Gated::new(&server.url(), true).await;
    let follower = RevocationFollower::spawn(connection.clone(), config(bound));
    assert!(follower.ready(Duration::from_secs(5)).await);
    revoke(&store, RevocationKind::Hop, "hop_before").await;
    answers(
        &follower,
        &hop("hop_before"),
        &revoked(RevocationKind::Hop, "hop_before"),
        Duration::from_secs(2),
    )
    .await;

    // Redis crashes: after the bound the follower fails closed, keeping its copy.
    server.kill();
    let mut answer = follower.check(&hop("hop_before"));
    assert!(
        eventually(Duration::from_secs(5), || {
            answer = follower.check(&hop("hop_before"));
            matches!(answer, Err(FollowerError::Stale { .. }))
        })
        .await,
        "still {answer:?} with Redis down"
    );
    assert!(matches!(
        follower.check(&hop("hop_unrevoked")),
        Err(FollowerError::Stale { .. })
    ));
    assert_eq!(follower.stats().entries, 1);

    // Hold the follower away while Redis comes back (AOF keeps the data) and a revocation is
    // written through another connection.
    connection.close_and_hold().await;
    let before = follower.stats();
    assert!(before.errors > 0, "{before:?}");
    server.restart().await.unwrap();
    let mut written = None;
    for _ in 0..100 {
        let now = match store.now_ms().await {
            Ok(now) => now,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let revocation = Revocation {
            kind: RevocationKind::Hop,
            id: "hop_while_away".into(),
            until_ms: now + LIFETIME_MS,
            reason: "test".into(),
            by: "test".into(),
        };
        if let Ok(mut records) = store.revoke(vec![revocation]).await {
            written = records.pop();
            break;
        }
    }
    assert!(written.is_some(), "the writer never reconnected");
    assert!(matches!(
        follower.check(&hop("hop_while_away")),
        Err(FollowerError::Stale { .. })
    ));

    // Let it reconnect: it snapshots again, recovers and sees what was written while it was away.
    connection.open();
    answers(
        &follower,
        &hop("hop_while_away"),
        &revoked(RevocationKind::Hop, "hop_while_away"),
        Duration::from_secs(10),
    )
    .await;
    let after = follower.stats();
    assert!(after.snapshots > before.snapshots, "{before:?} → {after:?}");
    assert_eq!(
        follower.check(&hop("hop_before")),
        revoked(RevocationKind::Hop, "hop_before")
    );
    assert_eq!(follower.check(&hop("hop_unrevoked")), Ok(Verdict::Live));

    // And follows the stream again.
    revoke(&store, RevocationKind::Hop, "hop_after").await;
    answers(
        &follower,
        &hop("hop_after"),
        &revoked(RevocationKind::Hop, "hop_after"),
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_resnapshots_when_the_stream_is_trimmed_past_its_position() {
    let server = RedisServer::start().await.unwrap();
    let store = store(&server).await;
    revoke(&store, RevocationKind::Hop, "hop_a").await;
    store.heartbeat("test-node", KEEP_MS).await.unwrap();
    let connection = Gated::new(&server.url(), true).await;
    let follower = RevocationFollower::spawn(connection.clone(), FollowerConfig::default());
    assert!(follower.ready(Duration::from_secs(5)).await);
    assert_eq!(
        follower.check(&hop("hop_a")),
        revoked(RevocationKind::Hop, "hop_a")
    );

    // While the follower is held, the stream moves on and is trimmed past its position.
    connection.close_and_hold().await;
    let before = follower.stats();
    assert_eq!(before.snapshots, 1, "{before:?}");
    revoke(&store, RevocationKind::Hop, "hop_b").await;
    revoke(&store, RevocationKind::Hop, "hop_c").await;
    let trimmed = server.cli(&["XTRIM", STREAM_KEY, "MAXLEN", "1"]).unwrap();
    assert_eq!(trimmed.trim(), "3", "hop_a, the heartbeat and hop_b go");
    let first = server
        .cli(&["XRANGE", STREAM_KEY, "-", "+", "COUNT", "1"])
        .unwrap();
    assert!(first.contains("hop_c"), "{first}");

    connection.open();
    let _heartbeats = heartbeats(&store);
    assert!(
        eventually(Duration::from_secs(5), || follower.stats().snapshots
            > before.snapshots)
        .await,
        "no new snapshot: {:?}",
        follower.stats()
    );
    // The surviving record is in; what the follower held already stays (entries are forgotten
    // only when they expire). hop_b's record was trimmed before anyone read it: that is why the
    // stream is trimmed no tighter than the longest entry lifetime.
    answers(
        &follower,
        &hop("hop_c"),
        &revoked(RevocationKind::Hop, "hop_c"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        follower.check(&hop("hop_a")),
        revoked(RevocationKind::Hop, "hop_a")
    );
    let after = follower.stats();
    assert!(after.position > before.position, "{before:?} → {after:?}");

    // It follows the stream on from there.
    revoke(&store, RevocationKind::Hop, "hop_d").await;
    answers(
        &follower,
        &hop("hop_d"),
        &revoked(RevocationKind::Hop, "hop_d"),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(follower.stats().snapshots, after.snapshots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_decides_like_the_store() {
    let server = RedisServer::start().await.unwrap();
    let store = store(&server).await;
    let _heartbeats = heartbeats(&store);
    let follower =
        RevocationFollower::spawn(manager(&server.url()).await, FollowerConfig::default());
    assert!(follower.ready(Duration::from_secs(5)).await);

    let agent = revoke(&store, RevocationKind::Agent, "assistant").await;
    let subject = revoke(&store, RevocationKind::Subject, "corp|alice").await;
    revoke(&store, RevocationKind::Hop, "h1").await;
    let short = revoke_until(&store, RevocationKind::Chain, "chain_short", 2_500).await;

    let t = |record: &RevocationRecord| record.at / 1000;
    let cases = [
        // An agent suspended at T covers tokens issued at or before T (in whole seconds)...
        (
            TokenFacts {
                hop: Some("h_agent_old".into()),
                agents: vec!["booking".into(), "assistant".into()],
                issued_at: t(&agent),
                ..TokenFacts::default()
            },
            Verdict::Revoked {
                kind: RevocationKind::Agent,
                id: "assistant".into(),
            },
        ),
        // ...not those issued after.
        (
            TokenFacts {
                hop: Some("h_agent_new".into()),
                agents: vec!["booking".into(), "assistant".into()],
                issued_at: t(&agent) + 1,
                ..TokenFacts::default()
            },
            Verdict::Live,
        ),
        (
            TokenFacts {
                subject: Some("corp|alice".into()),
                issued_at: t(&subject),
                ..TokenFacts::default()
            },
            Verdict::Revoked {
                kind: RevocationKind::Subject,
                id: "corp|alice".into(),
            },
        ),
        (
            TokenFacts {
                subject: Some("corp|alice".into()),
                issued_at: t(&subject) + 1,
                ..TokenFacts::default()
            },
            Verdict::Live,
        ),
        // A revoked ancestor revokes its descendants.
        (
            TokenFacts {
                hop: Some("h3".into()),
                ancestors: vec!["h1".into(), "h2".into()],
                issued_at: 1,
                ..TokenFacts::default()
            },
            Verdict::Revoked {
                kind: RevocationKind::Hop,
                id: "h1".into(),
            },
        ),
        (
            TokenFacts {
                hop: Some("h4".into()),
                ancestors: vec!["h2".into()],
                issued_at: 1,
                ..TokenFacts::default()
            },
            Verdict::Live,
        ),
    ];
    // Wait until the follower holds all four, then compare every case with the store's check.
    assert!(
        eventually(Duration::from_secs(2), || follower.stats().entries == 4).await,
        "{follower:?}"
    );
    for (facts, expected) in &cases {
        let from_store = store.check(facts).await.unwrap().verdict;
        assert_eq!(&from_store, expected, "store, {facts:?}");
        assert_eq!(follower.check(facts), Ok(expected.clone()), "{facts:?}");
    }

    // An entry stops counting when its `until` passes, for both.
    let chain = TokenFacts {
        chain: Some("chain_short".into()),
        issued_at: 1,
        ..TokenFacts::default()
    };
    assert_eq!(
        follower.check(&chain),
        revoked(RevocationKind::Chain, "chain_short")
    );
    answers(
        &follower,
        &chain,
        &Ok(Verdict::Live),
        Duration::from_secs(5),
    )
    .await;
    let now = store.now_ms().await.unwrap();
    assert!(now >= short.until, "the follower forgot it early");
    assert_eq!(store.check(&chain).await.unwrap().verdict, Verdict::Live);
    assert!(
        eventually(Duration::from_secs(3), || follower.stats().entries == 3).await,
        "expired entry not pruned: {follower:?}"
    );
}
