//! The in-process copy of the revocation list that a follower keeps, and the one decision made
//! from it: answer from the copy only while it is known to be current, fail closed otherwise.
//!
//! Two followers fill it: [`RevocationFollower`](crate::RevocationFollower) from the Redis
//! stream, and `mandate-verify`'s `Feed` from mandate's `GET /revocations`. They differ in
//! transport only; what the copy holds (the live entries, whether a snapshot is in, when the
//! newest heartbeat was written, an estimate of the store's clock) and when it may answer are
//! decided here, once.

use std::time::{Duration, Instant};

use crate::{RevocationRecord, RevocationSet, TokenFacts, Verdict};

/// Why a followed copy cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerError {
    /// No heartbeat seen within the bound: fail closed.
    #[error("revocation stream stale: no heartbeat for {since_ms} ms")]
    Stale {
        /// Milliseconds since the newest heartbeat seen (since the follower started when none
        /// has been seen).
        since_ms: u64,
    },
    /// Not yet synchronised: the first snapshot is not loaded.
    #[error("revocation follower not ready: no snapshot loaded yet")]
    NotReady,
}

/// The live entries as last heard from the store, with what is needed to know whether they are
/// still current.
#[derive(Debug)]
pub struct FollowedCopy {
    entries: RevocationSet,
    loaded: bool,
    /// When (local clock) the newest heartbeat heard was written.
    heartbeat: Option<Instant>,
    /// The store's clock: the reading (ms) that puts it latest, and when (local clock) it held.
    clock: Option<(i64, Instant)>,
    /// When following began: the staleness of a copy that never heard a heartbeat.
    started: Instant,
    staleness_bound: Duration,
}

impl FollowedCopy {
    /// An empty copy, not ready, that answers only while its newest heartbeat is at most
    /// `staleness_bound` old; following began at `started`.
    pub fn new(staleness_bound: Duration, started: Instant) -> Self {
        Self {
            entries: RevocationSet::default(),
            loaded: false,
            heartbeat: None,
            clock: None,
            started,
            staleness_bound,
        }
    }

    /// Decides for `facts` at `now`, no I/O: `NotReady` before the first snapshot, `Stale` when
    /// the newest heartbeat is older than the bound (by the local monotonic clock); otherwise the
    /// store's own decision ([`RevocationSet::verdict`]) with expiry judged by the store's clock
    /// as estimated.
    pub fn check(&self, facts: &TokenFacts, now: Instant) -> Result<Verdict, FollowerError> {
        if !self.loaded {
            return Err(FollowerError::NotReady);
        }
        let since = now.saturating_duration_since(self.heartbeat.unwrap_or(self.started));
        if self.heartbeat.is_none() || since > self.staleness_bound {
            // Rounded up, so that the figure is over the bound whenever the copy is stale.
            return Err(FollowerError::Stale {
                since_ms: duration_ms(since.saturating_add(Duration::from_nanos(999_999))),
            });
        }
        Ok(self.entries.verdict(facts, self.store_now_ms(now)))
    }

    /// How old the view is at `now`: the time since the newest heartbeat heard (since following
    /// began, when none has been), the lag a follower reports.
    pub fn view_age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.heartbeat.unwrap_or(self.started))
    }

    /// The store's clock at `now`, from the reading that puts it latest (`i64::MIN` before any:
    /// nothing counts as expired then).
    pub fn store_now_ms(&self, now: Instant) -> i64 {
        match self.clock {
            Some((ms, at)) => {
                let elapsed = i64::try_from(duration_ms(now.saturating_duration_since(at)))
                    .unwrap_or(i64::MAX);
                ms.saturating_add(elapsed)
            }
            None => i64::MIN,
        }
    }

    /// A time read from the store (`ms`), received at `received`. The estimate keeps the reading
    /// that puts the clock latest: a time that arrived late (an old heartbeat replayed, a slow
    /// delivery) can only be behind the store's clock, never ahead of it.
    pub fn observe_clock(&mut self, ms: i64, received: Instant) {
        if ms > self.store_now_ms(received) {
            self.clock = Some((ms, received));
        }
    }

    /// A heartbeat written at `at_ms` by the store's clock, received at `received`. It counts as
    /// written at its arrival less its age by the store's clock, so an old heartbeat (a backlog,
    /// a replay after reconnecting, a snapshot of a stream no node writes to any more) does not
    /// make the copy fresh.
    pub fn heard_heartbeat(&mut self, at_ms: i64, received: Instant) {
        self.observe_clock(at_ms, received);
        let age = u64::try_from(self.store_now_ms(received).saturating_sub(at_ms)).unwrap_or(0);
        let written = received.checked_sub(Duration::from_millis(age));
        if written > self.heartbeat {
            self.heartbeat = written;
        }
    }

    /// Merges an entry (for an id already held, the later `at` wins).
    pub fn insert(&mut self, record: RevocationRecord) {
        self.entries.insert(record);
    }

    /// Marks the first snapshot as loaded: from now on the copy may answer.
    pub fn mark_loaded(&mut self) {
        self.loaded = true;
    }

    /// Whether a snapshot has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// Live entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the entries whose `until` has passed by the store's clock at `now`.
    pub fn prune(&mut self, now: Instant) {
        let now_ms = self.store_now_ms(now);
        self.entries.prune(now_ms);
    }

    /// When (local clock) the newest heartbeat heard was written.
    pub fn newest_heartbeat(&self) -> Option<Instant> {
        self.heartbeat
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RevocationKind;

    fn entry(id: &str, at: i64, until: i64) -> RevocationRecord {
        RevocationRecord {
            kind: RevocationKind::Hop,
            id: id.into(),
            at,
            until,
            reason: String::new(),
            by: String::new(),
        }
    }

    fn facts(hop: &str, issued_at: i64) -> TokenFacts {
        TokenFacts {
            hop: Some(hop.into()),
            issued_at,
            ..TokenFacts::default()
        }
    }

    #[test]
    fn it_answers_only_once_loaded_and_while_heartbeats_are_fresh() {
        let now = Instant::now();
        let mut copy = FollowedCopy::new(Duration::from_secs(3), now);
        assert_eq!(
            copy.check(&facts("hop_a", 1), now),
            Err(FollowerError::NotReady)
        );
        copy.observe_clock(100_000, now);
        copy.insert(entry("hop_a", 90_000, 200_000));
        copy.mark_loaded();
        // Loaded but never heard a heartbeat: stale.
        assert!(matches!(
            copy.check(&facts("hop_a", 1), now),
            Err(FollowerError::Stale { .. })
        ));
        copy.heard_heartbeat(100_000, now);
        assert!(matches!(
            copy.check(&facts("hop_a", 1), now),
            Ok(Verdict::Revoked { .. })
        ));
        assert_eq!(copy.check(&facts("hop_b", 1), now), Ok(Verdict::Live));
        // Just over the bound: stale, and the figure says more than the bound.
        assert_eq!(
            copy.check(&facts("hop_b", 1), now + Duration::from_micros(3_000_300)),
            Err(FollowerError::Stale { since_ms: 3001 })
        );
        // Four seconds without a heartbeat: stale again.
        let later = now + Duration::from_secs(4);
        assert_eq!(
            copy.check(&facts("hop_b", 1), later),
            Err(FollowerError::Stale { since_ms: 4000 })
        );
    }

    #[test]
    fn an_old_heartbeat_does_not_make_the_copy_fresh_and_the_clock_never_goes_back() {
        let now = Instant::now();
        let mut copy = FollowedCopy::new(Duration::from_secs(3), now);
        copy.observe_clock(100_000, now);
        // Replayed after a reconnection: written ten seconds ago by the store's clock.
        copy.heard_heartbeat(90_000, now);
        assert_eq!(
            copy.newest_heartbeat(),
            now.checked_sub(Duration::from_secs(10))
        );
        assert_eq!(copy.store_now_ms(now), 100_000);
        copy.heard_heartbeat(100_000, now);
        assert_eq!(copy.newest_heartbeat(), Some(now));
        // A heartbeat stamped after the latest reading counts as just arrived and moves the
        // clock forward.
        copy.heard_heartbeat(100_005, now);
        assert_eq!(copy.newest_heartbeat(), Some(now));
        assert_eq!(copy.store_now_ms(now), 100_005);
    }

    #[test]
    fn expiry_follows_the_stores_clock() {
        let now = Instant::now();
        let mut copy = FollowedCopy::new(Duration::from_secs(3), now);
        copy.observe_clock(100_000, now);
        copy.insert(entry("hop_a", 90_000, 100_500));
        copy.mark_loaded();
        copy.heard_heartbeat(100_000, now);
        assert_eq!(copy.len(), 1);
        copy.prune(now + Duration::from_millis(400));
        assert_eq!(copy.len(), 1);
        copy.prune(now + Duration::from_millis(600));
        assert!(copy.is_empty());
    }
}
