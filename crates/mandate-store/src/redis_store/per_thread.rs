//! One multiplexed Redis connection per thread that uses the store.
//!
//! A `ConnectionManager` runs its connection on a task of the runtime it was opened on. mandate's
//! HTTP workers each run their own single-threaded runtime, so with one connection for the whole
//! node every command crossed threads twice: the worker handed it to the connection's task on
//! the main runtime (a wake-up of another thread), and that task handed the reply back (another).
//! Profiles of a Redis-backed exchange put a fifth of the server's CPU in that traffic
//! (scheduling, futex and epoll). Here each thread opens its own connection the first time it
//! sends a command, on its own runtime, so a worker's commands and replies never leave it.
//! Commands sent together from one request (the exchange's concurrent reads) still share one
//! connection and go out as one batch.
//!
//! Each connection reconnects by itself like any `ConnectionManager`, but a manager only notices
//! a dropped connection when a command fails on it, and a thread's connection may have sat idle
//! through a whole Redis restart. So a command that fails because the connection was dropped is
//! sent once more, over the connection the manager has just reopened; without that, every thread
//! would fail one request after each outage. A command is sent twice only when the connection
//! broke before its answer came: usually it never reached Redis (the connection was already
//! gone); if it had run, the second run of mandate's writes is harmless or refused (`SET NX` of
//! a hop or a replay key answers "already there", which fails closed, and revocations and index
//! entries are idempotent). A thread whose connection cannot be opened gets the error (callers
//! fail closed) and tries again on its next command.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

/// Connections of one thread, by the store they belong to (a process may hold several: tests,
/// a configuration reload). Entries of stores that are gone are dropped as new ones are added.
type ThreadConnections = Vec<(u64, Weak<Target>, Arc<OnceCell<ConnectionManager>>)>;

thread_local! {
    static CONNECTIONS: RefCell<ThreadConnections> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Where and how to connect.
struct Target {
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
}

/// A connection to one Redis server that is really one `ConnectionManager` per thread (see the
/// module documentation). Cheap to clone; clones share the per-thread connections.
#[derive(Clone)]
pub struct PerThreadConnection {
    target: Arc<Target>,
    db: i64,
}

impl std::fmt::Debug for PerThreadConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerThreadConnection")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl PerThreadConnection {
    /// Connections to `client`'s server made with `config`. Opens this thread's connection now,
    /// so that an unreachable server is reported at once.
    pub async fn open(
        client: redis::Client,
        config: ConnectionManagerConfig,
    ) -> redis::RedisResult<Self> {
        let db = client.get_connection_info().redis_settings().db();
        let connection = Self {
            target: Arc::new(Target {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                client,
                config,
            }),
            db,
        };
        connection.this_threads().await?;
        Ok(connection)
    }

    /// This thread's connection, opened now if it has none.
    async fn this_threads(&self) -> redis::RedisResult<ConnectionManager> {
        let cell = self.cell();
        let target = &self.target;
        let manager = cell
            .get_or_try_init(|| {
                ConnectionManager::new_with_config(target.client.clone(), target.config.clone())
            })
            .await?;
        Ok(manager.clone())
    }

    fn cell(&self) -> Arc<OnceCell<ConnectionManager>> {
        CONNECTIONS.with(|connections| {
            let mut connections = connections.borrow_mut();
            if let Some((_, _, cell)) = connections.iter().find(|(id, _, _)| *id == self.target.id)
            {
                return cell.clone();
            }
            connections.retain(|(_, target, _)| target.strong_count() > 0);
            let cell = Arc::new(OnceCell::new());
            connections.push((self.target.id, Arc::downgrade(&self.target), cell.clone()));
            cell
        })
    }
}

impl ConnectionLike for PerThreadConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut manager = self.this_threads().await?;
            match manager.req_packed_command(cmd).await {
                Err(error) if error.is_connection_dropped() => {
                    manager.req_packed_command(cmd).await
                }
                answer => answer,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut manager = self.this_threads().await?;
            match manager.req_packed_commands(pipeline, offset, count).await {
                Err(error) if error.is_connection_dropped() => {
                    manager.req_packed_commands(pipeline, offset, count).await
                }
                answer => answer,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.db
    }
}
