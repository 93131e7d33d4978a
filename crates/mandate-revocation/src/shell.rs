//! What every follower of the revocation list shares, whatever it reads from (the Redis stream,
//! the SSE feed): a copy behind a lock, a "first snapshot loaded" signal, and a background task
//! that stops when the last handle is dropped.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mandate_model::Monotonic;

use tokio::sync::watch;

use crate::{FollowedCopy, FollowerError, TokenFacts, Verdict};

/// A follower's state: at least the copy it keeps.
pub trait FollowerState: Send + 'static {
    /// The in-process copy of the list.
    fn copy(&self) -> &FollowedCopy;
}

/// What the handles and the background task share.
#[derive(Debug)]
pub struct ShellShared<S> {
    ready: watch::Sender<bool>,
    state: Mutex<S>,
    time: Arc<dyn Monotonic>,
}

impl<S> ShellShared<S> {
    /// The state. It is consistent after every statement that changes it, so a panic elsewhere
    /// while holding the lock leaves nothing half-done and the lock is taken over.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The follower's monotonic now: when a reply arrived, how old the copy is.
    pub fn now(&self) -> Instant {
        self.time.now()
    }

    /// Signals that the first snapshot is in (waking waiters the first time only).
    pub fn mark_ready(&self) {
        self.ready
            .send_if_modified(|ready| !std::mem::replace(ready, true));
    }
}

/// Aborts the task when the last handle goes.
#[derive(Debug)]
struct TaskGuard(tokio::task::AbortHandle);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The handle side of a follower. Clones share the state and the task.
#[derive(Debug)]
pub struct FollowerShell<S> {
    shared: Arc<ShellShared<S>>,
    task: Arc<TaskGuard>,
}

impl<S> Clone for FollowerShell<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            task: Arc::clone(&self.task),
        }
    }
}

impl<S: FollowerState> FollowerShell<S> {
    /// Spawns `run` (tokio) over the shared state; ages are measured with `time`.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as `tokio::spawn` does).
    pub fn spawn<F>(
        state: S,
        time: Arc<dyn Monotonic>,
        run: impl FnOnce(Arc<ShellShared<S>>) -> F,
    ) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (ready, _) = watch::channel(false);
        let shared = Arc::new(ShellShared {
            ready,
            state: Mutex::new(state),
            time,
        });
        let handle = tokio::spawn(run(Arc::clone(&shared)));
        Self {
            shared,
            task: Arc::new(TaskGuard(handle.abort_handle())),
        }
    }

    /// The shared state.
    pub fn shared(&self) -> &ShellShared<S> {
        &self.shared
    }

    /// Decides for `facts` from the copy, no I/O ([`FollowedCopy::check`]).
    pub fn check(&self, facts: &TokenFacts) -> Result<Verdict, FollowerError> {
        let now = self.shared.now();
        self.shared.lock().copy().check(facts, now)
    }

    /// How old the copy's view is now ([`FollowedCopy::view_age`]).
    pub fn view_age(&self) -> Duration {
        let now = self.shared.now();
        self.shared.lock().copy().view_age(now)
    }

    /// Waits until the first snapshot is loaded (bounded by `timeout`); whether it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let mut ready = self.shared.ready.subscribe();
        let waited = tokio::time::timeout(timeout, ready.wait_for(|loaded| *loaded)).await;
        matches!(waited, Ok(Ok(_)))
    }

    /// Stops the background task. The copy stays, so checks fail closed once the staleness
    /// bound has passed.
    pub fn stop(&self) {
        self.task.0.abort();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Held(FollowedCopy);

    impl FollowerState for Held {
        fn copy(&self) -> &FollowedCopy {
            &self.0
        }
    }

    #[tokio::test]
    async fn ready_once_marked_and_the_task_stops_with_the_last_handle() {
        let (dropped, mut dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let (go, go_rx) = tokio::sync::oneshot::channel::<()>();
        let shell = FollowerShell::spawn(
            Held(FollowedCopy::new(Duration::from_secs(5), Instant::now())),
            Arc::new(mandate_model::SystemMonotonic),
            |shared| async move {
                // Tells the test when the task is dropped (aborted).
                let _dropped = dropped;
                go_rx.await.unwrap();
                shared.mark_ready();
                std::future::pending::<()>().await;
            },
        );
        assert!(!shell.ready(Duration::from_millis(20)).await);
        assert_eq!(
            shell.check(&TokenFacts::default()),
            Err(FollowerError::NotReady)
        );
        go.send(()).unwrap();
        assert!(shell.ready(Duration::from_secs(5)).await);
        let clone = shell.clone();
        drop(shell);
        assert!(dropped_rx.try_recv().is_err(), "a clone keeps the task");
        drop(clone);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), dropped_rx)
                .await
                .is_ok(),
            "the task stopped with the last handle"
        );
    }

    #[tokio::test]
    async fn checks_turn_stale_when_the_follower_clock_passes_the_bound() {
        let time = Arc::new(mandate_model::ManualMonotonic::default());
        let mut copy = FollowedCopy::new(Duration::from_secs(3), time.now());
        copy.observe_clock(100_000, time.now());
        copy.heard_heartbeat(100_000, time.now());
        copy.mark_loaded();
        let shell = FollowerShell::spawn(Held(copy), time.clone(), |_| std::future::pending());
        let facts = TokenFacts::default();
        assert_eq!(shell.check(&facts), Ok(Verdict::Live));
        time.advance(Duration::from_secs(3));
        assert_eq!(
            shell.check(&facts),
            Ok(Verdict::Live),
            "at the bound: fresh"
        );
        assert_eq!(shell.view_age(), Duration::from_secs(3));
        time.advance(Duration::from_millis(1));
        assert_eq!(
            shell.check(&facts),
            Err(FollowerError::Stale { since_ms: 3001 })
        );
    }
}
