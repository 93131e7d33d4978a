use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeZone, Utc};

/// Where domain logic gets "now" from, so that expiry and skew are testable without sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// The current time in whole seconds since the epoch (JWT NumericDate).
    fn now_secs(&self) -> i64 {
        self.now().timestamp()
    }
}

/// The process clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stays where it is put: for tests.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock stopped at `secs` seconds since the epoch.
    pub fn at(secs: i64) -> Self {
        Self(AtomicI64::new(secs))
    }

    /// Moves the clock by `delta` seconds.
    pub fn advance(&self, delta: i64) {
        self.0.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        Utc.timestamp_opt(self.0.load(Ordering::SeqCst), 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}
