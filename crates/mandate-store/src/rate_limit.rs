use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use mandate_model::Clock;

use crate::StoreError;

/// The outcome of asking for one request's worth of budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    /// Go ahead.
    Allowed,
    /// Over the limit: try again after this many whole seconds.
    Limited {
        /// Seconds until one request's worth of budget is back (at least 1).
        retry_after_secs: u64,
    },
}

/// A per-key request budget (per client, at the token, revocation and introspection endpoints).
#[async_trait]
pub trait RateLimiter: Send + Sync + std::fmt::Debug {
    /// Spends one request from `key`'s budget, if there is one left.
    async fn acquire(&self, key: &str) -> Result<RateDecision, StoreError>;
}

/// A token bucket per key, in memory: `per_second` requests a second with bursts of up to
/// `per_second` requests.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    per_second: u32,
    clock: Arc<dyn Clock>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

impl MemoryRateLimiter {
    /// A limiter allowing `per_second` requests per key per second (0 disables the limit).
    pub fn new(per_second: u32, clock: Arc<dyn Clock>) -> Self {
        Self {
            per_second,
            clock,
            buckets: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &str) -> Result<RateDecision, StoreError> {
        if self.per_second == 0 {
            return Ok(RateDecision::Allowed);
        }
        let rate = f64::from(self.per_second);
        let now_ms = self.clock.now().timestamp_millis();
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| StoreError::Corrupt("rate limiter lock poisoned".into()))?;
        // Idle buckets are full buckets: forget them once in a while to bound memory.
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| (now_ms - b.updated_ms) < 1_000);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: rate,
            updated_ms: now_ms,
        });
        let elapsed = (now_ms - bucket.updated_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.updated_ms = now_ms;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(RateDecision::Allowed)
        } else {
            let wait = (1.0 - bucket.tokens) / rate;
            Ok(RateDecision::Limited {
                retry_after_secs: (wait.ceil() as u64).max(1),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_model::FixedClock;

    #[tokio::test]
    async fn allows_the_burst_then_limits_then_refills() {
        let clock = Arc::new(FixedClock::at(1_000));
        let limiter = MemoryRateLimiter::new(3, clock.clone());
        for _ in 0..3 {
            assert_eq!(limiter.acquire("a").await.unwrap(), RateDecision::Allowed);
        }
        assert!(matches!(
            limiter.acquire("a").await.unwrap(),
            RateDecision::Limited {
                retry_after_secs: 1
            }
        ));
        // Another key has its own budget.
        assert_eq!(limiter.acquire("b").await.unwrap(), RateDecision::Allowed);
        clock.advance(1);
        assert_eq!(limiter.acquire("a").await.unwrap(), RateDecision::Allowed);
    }

    #[tokio::test]
    async fn zero_disables_the_limit() {
        let limiter = MemoryRateLimiter::new(0, Arc::new(FixedClock::at(0)));
        for _ in 0..100 {
            assert_eq!(limiter.acquire("a").await.unwrap(), RateDecision::Allowed);
        }
    }

    #[tokio::test]
    async fn the_memory_limiter_meets_the_contract() {
        let clock = Arc::new(FixedClock::at(1_000));
        let limiter = MemoryRateLimiter::new(3, clock.clone());
        crate::contract::rate_limit(&limiter, 3).await;
        crate::contract::rate_limit_refill(&limiter, 3, async { clock.advance(1) }).await;
        crate::contract::rate_limit_disabled(&MemoryRateLimiter::new(0, clock)).await;
    }
}
