//! Redis backends for the client registry, the policy, the hop ledger, consent grants, replay
//! cache and rate limiter, so that every mandate node of a deployment shares them (DESIGN.md section 6). They work on a single server
//! and on Redis Cluster alike, through any async connection that reconnects by itself
//! ([`PerThreadConnection`] from [`connect`], [`ClusterConnection`] from [`connect_cluster`]).
//!
//! # Key layout
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `mandate:ledger:{<chain_id>}:hop:<hop_id>` | string | the hop record, JSON | `ledger_retention_secs` after it was recorded |
//! | `mandate:ledger:{<chain_id>}:hops` | list | the chain's hop ids, in record order | `ledger_retention_secs`, refreshed by each new hop of the chain |
//! | `mandate:ledger:{<chain_id>}:consents` | set | consent ids the chain's roots were granted on | `ledger_retention_secs`, refreshed by each new root on a grant |
//! | `mandate:ledger:hop-chain:<hop_id>` | string | the hop's chain id | `ledger_retention_secs` after the hop was recorded |
//! | `mandate:ledger:consent:<consent_id>` | set | ids of chains with a root on that grant | same, refreshed by any of them |
//! | `mandate:chains` | sorted set | chain ids scored by their first root's `issued_at` (s) | members older than `ledger_retention_secs`, trimmed when a root is recorded |
//! | `mandate:consent:<subject>:<actor>` | hash | grant id → the grant, JSON | never (the validator checks `expires_at`) |
//! | `mandate:consent-id:<grant_id>` | string | the hash key holding that grant | never |
//! | `mandate:consent-ids` | set | every grant id, for listing | never |
//! | `mandate:client:<client_id>` | string | the client ([`crate::StoredClient`]), JSON | never |
//! | `mandate:clients` | set | every registered client id | never |
//! | `mandate:audience-owner:<audience>` | string | the client last found owning the audience: a hint, always checked against that client's record | never; corrected or removed when found wrong |
//! | `mandate:audience-owners:<audience>` | set | every client ever written as a resource server owning the audience (added before the record is written, never removed): a superset of its owners | never |
//! | `mandate:policy` | hash | `rows` (the policy rows, one JSON array), `version`, `written` (Redis `TIME` of the write) | never |
//! | `mandate:replay:<key>` | string | `1` | at the identifier's own expiry (`PXAT`) |
//! | `mandate:rate:<key>` | hash | `tokens`, `updated_ms` | 2 s after the last request |
//! | `mandate:participation` | hash | `<owner>\|<kind>\|<instance>` → the verifier's latest report and its expiry, JSON | fields dropped when read past their expiry |
//! | `mandate:last-use` | hash | per client and kind, the last use (ms) | never |
//! | `mandate:gates` | hash | app audience → its participation gate, JSON; field `""` once ever written | never |
//! | `mandate:audit` | stream | audit events (`event`: JSON) | trimmed with `MAXLEN ~` to the configured cap |
//! | `{mandate:journal}:pending` | list | records appended to the journal and not yet sealed (`{"at","kind","record"}` JSON) | trimmed by each seal |
//! | `{mandate:journal}:entries` | sorted set | sealed journal entries (JSON) scored by their seq | older than `ledger_retention_secs`, forgotten by the journal keeper |
//! | `{mandate:journal}:head` | string | `<seq> <hash>` of the last sealed entry | never |
//! | `{mandate:journal}:base` | string | `<seq> <hash>` of the last entry retention forgot | never |
//! | `{mandate:journal}:checkpoints` | sorted set | signed checkpoints (JSON) scored by their seq | with the entries they pin |
//!
//! The ledger is sharded by chain: every key of one chain carries the hash tag `{<chain_id>}`,
//! so recording a hop (the hop, its place in the chain, the chain's TTLs) is one atomic script on
//! one shard, and reading a chain is two commands on that shard. The two ledger indexes are keyed
//! by hop id and consent id, which a chain id cannot tag, so they live on other shards and are
//! written by separate commands after the chain's script (see [`RedisLedger`]).
//!
//! A subject may contain `:`, a client id may not, so `<subject>:<actor>` names one pair only.
//!
//! Every Redis error, refused connection or timeout surfaces as an error: callers fail closed.

mod audit;
mod clients;
mod consent;
mod instrumented;
mod journal;
mod ledger;
mod per_thread;
mod policy;
mod rate_limit;
mod replay;
mod ssf;

use std::time::Duration;

pub use audit::{RedisAuditLog, AUDIT_STREAM_KEY};
pub use clients::RedisClientRegistry;
pub use consent::RedisConsentStore;
pub use instrumented::Instrumented;
pub use journal::RedisJournal;
pub use ledger::RedisLedger;
pub use per_thread::PerThreadConnection;
pub use policy::RedisPolicyStore;
pub use rate_limit::RedisRateLimiter;
pub use redis::aio::ConnectionManager;
pub use redis::cluster_async::ClusterConnection;
pub use replay::RedisReplayCache;
pub use ssf::RedisSsfStreams;

use crate::StoreError;

/// How long opening a connection may take. Short, because a store that cannot be reached makes
/// every request fail closed, and it should fail quickly rather than hold requests open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may wait for its reply, for the same reason.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection attempts per failed connection before the waiting commands fail (each further
/// command starts a new round, so a server that comes back is picked up without a rebuild).
const RECONNECT_RETRIES: usize = 2;
/// The longest pause between reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Connects to one Redis server (`redis://` or `rediss://` URL): one [`ConnectionManager`] per
/// thread that uses it ([`PerThreadConnection`]), each reconnecting by itself after the server
/// goes away and comes back. Commands time out after [`RESPONSE_TIMEOUT`] and connection
/// attempts after [`CONNECT_TIMEOUT`], so that an unreachable store fails requests within
/// seconds. This thread's connection is opened before it returns.
pub async fn connect(url: &str) -> Result<PerThreadConnection, StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(RECONNECT_MAX_DELAY);
    PerThreadConnection::open(client, config)
        .await
        .map_err(unavailable)
}

/// Connects to a Redis Cluster given some of its nodes' URLs, with the same timeouts as
/// [`connect`]. The connection follows slot moves and reconnects to nodes by itself.
pub async fn connect_cluster(urls: &[String]) -> Result<ClusterConnection, StoreError> {
    let client = redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RECONNECT_RETRIES as u32)
        .build()
        .map_err(|e| StoreError::Unavailable(format!("invalid Redis Cluster URLs: {e}")))?;
    client.get_async_connection().await.map_err(unavailable)
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The bound every backend's connection meets: `ConnectionManager` and `ClusterConnection` both
/// do, and both are cheap to clone (clones share one multiplexed connection).
pub trait RedisConnection: redis::aio::ConnectionLike + Clone + Send + Sync + 'static {}

impl<C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static> RedisConnection for C {}
