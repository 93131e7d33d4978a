//! When each agent was last used: recorded on every authentication and exchange, written at
//! most once a minute per client, kind and node, so that using an agent costs no store write per
//! request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mandate_model::Clock;
use mandate_store::{LastUse, LastUseStore, StoreError, UseKind};

/// Writes are at most this often per client, kind and node.
const WRITE_EVERY_MS: i64 = 60_000;

/// Records last uses cheaply; see the module docs.
#[derive(Debug)]
pub struct UsageTracker {
    store: Arc<dyn LastUseStore>,
    clock: Arc<dyn Clock>,
    written: Mutex<HashMap<(String, UseKind), i64>>,
}

impl UsageTracker {
    /// A tracker writing to `store`.
    pub fn new(store: Arc<dyn LastUseStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// `client` was seen doing `kind` now. A store failure is logged: a last-use time never
    /// fails a request.
    pub async fn seen(&self, client: &str, kind: UseKind) {
        let now = self.clock.now().timestamp_millis();
        let due = {
            let Ok(mut written) = self.written.lock() else {
                return;
            };
            let last = written.entry((client.to_owned(), kind)).or_insert(i64::MIN);
            if now.saturating_sub(*last) >= WRITE_EVERY_MS {
                *last = now;
                true
            } else {
                false
            }
        };
        if due {
            if let Err(error) = self.store.touch(client, kind, now).await {
                tracing::warn!(%error, client, "last use not recorded");
            }
        }
    }

    /// Every client's last uses (to within a minute).
    pub async fn all(&self) -> Result<HashMap<String, LastUse>, StoreError> {
        self.store.all().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mandate_model::FixedClock;
    use mandate_store::MemoryLastUse;

    #[tokio::test]
    async fn uses_are_written_at_most_once_a_minute() {
        let clock = Arc::new(FixedClock::at(1_700_000_000));
        let tracker = UsageTracker::new(Arc::new(MemoryLastUse::new()), clock.clone());
        tracker.seen("helper", UseKind::Exchange).await;
        let first = tracker.all().await.unwrap()["helper"]
            .exchange_at_ms
            .unwrap();
        clock.advance(30);
        tracker.seen("helper", UseKind::Exchange).await;
        assert_eq!(
            tracker.all().await.unwrap()["helper"].exchange_at_ms,
            Some(first)
        );
        clock.advance(31);
        tracker.seen("helper", UseKind::Exchange).await;
        assert_eq!(
            tracker.all().await.unwrap()["helper"].exchange_at_ms,
            Some(first + 61_000)
        );
        assert_eq!(
            tracker.all().await.unwrap()["helper"].authenticated_at_ms,
            None
        );
    }
}
