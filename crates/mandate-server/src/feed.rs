//! `GET /revocations`: the revocation list as server-sent events, for apps that cannot reach
//! Redis (DESIGN.md section 6; the verifier SDK's `Feed` mode reads it).
//!
//! The caller authenticates as a `resource_server` client with HTTP Basic (`client_secret_basic`;
//! a GET has no form, so `client_secret_post` and `private_key_jwt` do not apply): bad or missing
//! credentials are 401 `invalid_client`, an agent is 403 `forbidden`. The answer is
//! `text/event-stream` with `Cache-Control: no-store`:
//!
//! ```text
//! retry: 1000
//!
//! event: snapshot
//! id: 1718000000000-3
//! data: {"entries":[{"kind":"hop","id":"hop_…","at":…,"until":…,"reason":"…","by":"…"}],"now":1718000000123}
//!
//! event: revocation
//! id: 1718000000950-0
//! data: {"kind":"chain","id":"chn_…","at":…,"until":…,"reason":"…","by":"…"}
//!
//! event: heartbeat
//! id: 1718000001000-0
//! data: {"node":"node-…","at":1718000001000}
//!
//! : keep-alive
//! ```
//!
//! Without a position the stream starts with a `snapshot` (every live entry, the store's clock
//! `now` in ms, and as `id` the stream position it was taken at). With `?from=<position>` (or the
//! `Last-Event-ID` header an `EventSource` sends when it reconnects) it continues right after that
//! position, with no snapshot, when the store still holds everything after it; otherwise — the
//! stream was trimmed past it, or it is not a position of this store — it sends a snapshot
//! first. A snapshot may also come in the middle of a stream, when the connection fell behind
//! what the store keeps: a reader merges it into what it holds. Each `revocation` and `heartbeat`
//! carries its stream id, which is the position to resume from. A `: keep-alive` comment goes
//! out whenever nothing else was sent for [`KEEP_ALIVE`]. At most [`MAX_FEED_CONNECTIONS`]
//! feeds are open at once per node; beyond that the answer is 503 with `Retry-After`. One
//! resource server holds at most [`MAX_FEEDS_PER_CLIENT`] of them, so that one credential cannot
//! take every slot and leave other apps' followers to fail closed; beyond that it is 429
//! `slow_down` with `Retry-After`.
//!
//! One task per node reads the store ([`RevocationStore::read_after`]) and fans what it reads out
//! to every open feed, so the store sees one reader whatever the number of feeds. Each feed first
//! catches up from its own position by reading the store itself, then takes the shared reads,
//! skipping what it already sent; when it falls behind the fan-out, or the reader restarts, it
//! catches up again. A feed ends when the client goes away: its body stream is dropped, which
//! releases its connection slot. A node that begins a graceful shutdown ends every feed at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt as _;
use mandate_model::ClientKind;
use mandate_revocation::{RevocationRecord, RevocationStore, StreamEvent, StreamPosition};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::client_auth::PresentedCredentials;
use crate::error::{no_store, ErrorCode, OAuthError};
use crate::form::Form;
use crate::state::AppState;

/// The most feeds one node serves at once; one more is refused with 503.
pub const MAX_FEED_CONNECTIONS: usize = 64;
/// The most feeds one resource server holds open on one node; one more is refused with 429.
/// An app needs one per process it runs (each follows the list on its own); eight apps at their
/// cap fill a node.
pub const MAX_FEEDS_PER_CLIENT: usize = 8;
/// A `: keep-alive` comment is sent whenever nothing else was for this long (proxies and load
/// balancers close idle connections; readers tell a live connection from a dead one).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the shared reader waits in one `read_after`.
const TAIL_WAIT: Duration = Duration::from_secs(1);
/// The pause after the store failed, before the next attempt.
const RETRY: Duration = Duration::from_secs(1);
/// The `retry:` (ms) suggested to `EventSource` clients.
const CLIENT_RETRY_MS: u64 = 1000;
/// Reads the fan-out holds for a slow feed before it falls behind (and catches up from the
/// store).
const FANOUT_CAPACITY: usize = 256;

/// Why a feed is refused.
#[derive(Debug)]
pub enum FeedError {
    /// An OAuth error (401 `invalid_client`, 400 `invalid_request`, 429, 503).
    OAuth(OAuthError),
    /// An authenticated client that is not a resource server.
    Forbidden,
}

impl From<OAuthError> for FeedError {
    fn from(error: OAuthError) -> Self {
        Self::OAuth(error)
    }
}

impl std::fmt::Display for FeedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::OAuth(error) => error.fmt(f),
            Self::Forbidden => f.write_str("forbidden: only resource servers read the feed"),
        }
    }
}

impl ResponseError for FeedError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::OAuth(error) => error.status_code(),
            Self::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::OAuth(error) => error.error_response(),
            Self::Forbidden => {
                let mut response = HttpResponse::Forbidden();
                no_store(&mut response);
                response.json(serde_json::json!({
                    "error": "forbidden",
                    "error_description": "only resource servers may read the revocation feed",
                }))
            }
        }
    }
}

/// `GET /revocations`: authenticate a resource server, open its feed.
pub async fn revocations(
    state: web::Data<AppState>,
    request: HttpRequest,
) -> Result<HttpResponse, FeedError> {
    // HTTP Basic only: a GET carries no form for the other methods.
    let credentials = PresentedCredentials::from_request(&request, &Form::default())?;
    let client = state.authenticate_client(&credentials).await?;
    if client.kind != ClientKind::ResourceServer {
        tracing::info!(target: "audit", client_id = %client.id, "a client that is not a resource server asked for the revocation feed");
        return Err(FeedError::Forbidden);
    }
    state.charge_rate_limit(client.id.as_str()).await?;
    let requested = requested_position(&request)?;
    let feed = Feed::open(
        &state.feed_hubs,
        &state.revocations,
        client.id.as_str(),
        requested,
    )
    .await?;
    tracing::info!(target: "audit", client_id = %client.id, resumed = requested.is_some(), "revocation feed opened");
    // While the connection stays open it counts as a verifier following revocations
    // (participation), renewed with the heartbeats at most every report interval.
    let connection = crate::chain_id::new_hop_id()
        .0
        .trim_start_matches("hop_")
        .chars()
        .take(12)
        .collect::<String>();
    let renew = std::time::Duration::from_secs(mandate_core::participation::REPORT_EVERY_SECS);
    let following = (state.clone(), client.clone(), connection);
    let body = futures_util::stream::unfold(
        (feed, following, None::<std::time::Instant>),
        move |(mut feed, following, renewed)| async move {
            let renewed = match renewed {
                Some(at) if at.elapsed() < renew => Some(at),
                _ => {
                    let (state, client, connection) = &following;
                    state.participation.following_feed(client, connection).await;
                    Some(std::time::Instant::now())
                }
            };
            let chunk = feed.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), (feed, following, renewed)))
        },
    );
    // A stopping node ends its feeds at once (readers reconnect to another node with their
    // last event id) instead of holding its graceful shutdown open until the timeout.
    let stopping = request.app_data::<crate::server::Stopping>().cloned();
    let body = body.take_until(async move {
        match stopping {
            Some(stopping) => stopping.0.notified().await,
            None => std::future::pending().await,
        }
    });
    let mut response = HttpResponse::Ok();
    no_store(&mut response);
    response.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    ));
    // nginx buffers responses unless told not to.
    response.insert_header(("X-Accel-Buffering", HeaderValue::from_static("no")));
    Ok(response.streaming(body))
}

/// `?from=<position>`, else `Last-Event-ID`; malformed is 400.
fn requested_position(request: &HttpRequest) -> Result<Option<StreamPosition>, OAuthError> {
    let mut from: Vec<String> = url::form_urlencoded::parse(request.query_string().as_bytes())
        .filter(|(name, _)| name == "from")
        .map(|(_, value)| value.into_owned())
        .collect();
    if from.len() > 1 {
        return Err(OAuthError::invalid_request(
            "from must be given at most once",
        ));
    }
    let raw = match from.pop() {
        Some(value) => Some(value),
        None => match request.headers().get("last-event-id") {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| OAuthError::invalid_request("Last-Event-ID is not a stream id"))?
                    .to_owned(),
            ),
            None => None,
        },
    };
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            OAuthError::invalid_request("from must be a stream id (<ms>-<seq>) the feed sent")
        }),
    }
}

/// What the shared reader hands to every feed.
#[derive(Debug)]
enum Batch {
    /// The records of one read, in stream order, continuing the previous batch.
    Events(Vec<StreamEvent>),
    /// The reader starts (again) from a new position: what it sends next does not continue what
    /// it sent before.
    Restart,
}

/// The per-node fan-out: the one reader of the store, and the connection slots.
#[derive(Debug)]
struct Hub {
    store: Arc<dyn RevocationStore>,
    batches: broadcast::Sender<Arc<Batch>>,
    slots: Arc<Semaphore>,
    /// Open feeds per client id (only clients with at least one).
    per_client: Arc<Mutex<HashMap<String, usize>>>,
    reader: tokio::task::AbortHandle,
}

/// One of a client's [`MAX_FEEDS_PER_CLIENT`] feeds on this node; given back when dropped.
#[derive(Debug)]
struct ClientSlot {
    per_client: Arc<Mutex<HashMap<String, usize>>>,
    client: String,
}

impl ClientSlot {
    fn take(per_client: &Arc<Mutex<HashMap<String, usize>>>, client: &str) -> Option<Self> {
        let mut counts = per_client.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(client.to_owned()).or_insert(0);
        if *count >= MAX_FEEDS_PER_CLIENT {
            return None;
        }
        *count += 1;
        Some(Self {
            per_client: Arc::clone(per_client),
            client: client.to_owned(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self
            .per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// A node's feed hub (one per node: every worker shares it through `AppState`). Held weakly, so
/// that the hub lives as long as a feed uses it and a node without feeds runs no reader.
#[derive(Debug, Default)]
pub struct FeedHubs(Mutex<Weak<Hub>>);

/// How many feeds of `state`'s node are open (for metrics and tests). A feed whose client went
/// away counts until the node notices, at its next write to it (a heartbeat, or the keep-alive).
pub fn open_feeds(state: &AppState) -> usize {
    let hub = state
        .feed_hubs
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .upgrade();
    hub.filter(|hub| Arc::ptr_eq(&hub.store, &state.revocations))
        .map_or(0, |hub| {
            MAX_FEED_CONNECTIONS.saturating_sub(hub.slots.available_permits())
        })
}

impl Hub {
    /// The hub of `store`, started when there is none (or its reader died with its worker).
    fn of(hubs: &FeedHubs, store: &Arc<dyn RevocationStore>) -> Arc<Self> {
        let mut slot = hubs.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(hub) = slot.upgrade() {
            if Arc::ptr_eq(&hub.store, store) && !hub.reader.is_finished() {
                return hub;
            }
        }
        let (batches, _) = broadcast::channel(FANOUT_CAPACITY);
        let reader = tokio::spawn(read_stream(store.clone(), batches.clone())).abort_handle();
        let hub = Arc::new(Self {
            store: store.clone(),
            batches,
            slots: Arc::new(Semaphore::new(MAX_FEED_CONNECTIONS)),
            per_client: Arc::default(),
            reader,
        });
        *slot = Arc::downgrade(&hub);
        hub
    }
}

/// The shared reader: follows the store's stream and hands each read to every feed.
async fn read_stream(store: Arc<dyn RevocationStore>, batches: broadcast::Sender<Arc<Batch>>) {
    let mut position: Option<StreamPosition> = None;
    let mut failing = false;
    loop {
        let current = match position.take() {
            Some(current) => current,
            None => match store.stream_position().await {
                Ok(start) => {
                    // Sent after the start is fixed: every feed catches up past it from the store,
                    // then takes the reads that follow.
                    let _ = batches.send(Arc::new(Batch::Restart));
                    start
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "revocation feed: the store is unreachable");
                        failing = true;
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            },
        };
        match store.read_after(current, TAIL_WAIT).await {
            Ok((events, next)) => {
                if failing {
                    tracing::info!("revocation feed: the store is reachable again");
                    failing = false;
                }
                if !events.is_empty() {
                    // No feed open is not an error.
                    let _ = batches.send(Arc::new(Batch::Events(events)));
                }
                position = Some(next);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "revocation feed: reading the stream failed");
                    failing = true;
                }
                tokio::time::sleep(RETRY).await;
                // Continue where it was, unless the stream no longer holds what follows.
                position = match store.stream_covers(current).await {
                    Ok(false) => None,
                    Ok(true) | Err(_) => Some(current),
                };
            }
        }
    }
}

/// Where a feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the store from its own position until nothing more is there.
    CatchingUp,
    /// Taking the shared reads.
    Live,
    /// The store failed; try again then.
    Waiting(Instant),
}

/// One client's feed; dropping it (the client went away) frees its slot.
#[derive(Debug)]
struct Feed {
    hub: Arc<Hub>,
    _slot: OwnedSemaphorePermit,
    _client_slot: ClientSlot,
    batches: broadcast::Receiver<Arc<Batch>>,
    /// The id of the last record sent (or of the snapshot, or the position resumed from).
    position: StreamPosition,
    phase: Phase,
    /// What goes out next.
    out: String,
    last_write: Instant,
}

#[derive(Serialize)]
struct SnapshotData<'a> {
    entries: &'a [RevocationRecord],
    now: i64,
}

#[derive(Serialize)]
struct HeartbeatData<'a> {
    node: &'a str,
    at: i64,
}

impl Feed {
    /// Takes a slot, then the snapshot or the resumption point, so that a store failure or a full
    /// node is an HTTP error rather than an empty stream.
    async fn open(
        hubs: &FeedHubs,
        store: &Arc<dyn RevocationStore>,
        client: &str,
        requested: Option<StreamPosition>,
    ) -> Result<Self, OAuthError> {
        let hub = Hub::of(hubs, store);
        let client_slot = ClientSlot::take(&hub.per_client, client).ok_or_else(|| {
            OAuthError::new(
                ErrorCode::SlowDown,
                "this client has as many revocation feeds open on this node as it may",
            )
            .with_retry_after(5)
        })?;
        let slot = hub.slots.clone().try_acquire_owned().map_err(|_| {
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many revocation feeds are open on this node; retry shortly",
            )
            .with_retry_after(5)
        })?;
        // Subscribed before anything is read from the store, so that no read of the shared
        // reader falls between what this feed reads itself and what it takes from the fan-out.
        let batches = hub.batches.subscribe();
        let mut feed = Self {
            hub,
            _slot: slot,
            _client_slot: client_slot,
            batches,
            position: StreamPosition::START,
            phase: Phase::CatchingUp,
            out: format!("retry: {CLIENT_RETRY_MS}\n\n"),
            last_write: Instant::now(),
        };
        let resumable = match requested {
            Some(position) => {
                let covered = feed
                    .hub
                    .store
                    .stream_covers(position)
                    .await
                    .map_err(|error| OAuthError::store_down("revocation feed", &error))?;
                covered.then_some(position)
            }
            None => None,
        };
        match resumable {
            Some(position) => feed.position = position,
            None => feed
                .snapshot()
                .await
                .map_err(|error| OAuthError::store_down("revocation feed", &error))?,
        }
        Ok(feed)
    }

    /// Writes a snapshot: the position first, then the entries (a record written in between is
    /// in both; applying it twice is harmless).
    async fn snapshot(&mut self) -> Result<(), mandate_revocation::RevocationStoreError> {
        let store = &self.hub.store;
        let position = store.stream_position().await?;
        let entries = store.entries().await?;
        let now = store.now_ms().await?;
        let data = json(&SnapshotData {
            entries: &entries,
            now,
        });
        write_event(&mut self.out, "snapshot", position, &data);
        self.position = position;
        self.phase = Phase::CatchingUp;
        Ok(())
    }

    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if !self.out.is_empty() {
                self.last_write = Instant::now();
                return Some(Bytes::from(std::mem::take(&mut self.out)));
            }
            let keep_alive_at = self.last_write + KEEP_ALIVE;
            if Instant::now() >= keep_alive_at {
                if self.hub.reader.is_finished() {
                    // The shared reader is gone (its worker stopped): end, the client reconnects.
                    return None;
                }
                self.out.push_str(": keep-alive\n\n");
                continue;
            }
            match self.phase {
                Phase::CatchingUp => {
                    // Cut short for a keep-alive; the step is then simply done again.
                    let _ = tokio::time::timeout_at(keep_alive_at, self.catch_up()).await;
                }
                Phase::Waiting(until) => {
                    tokio::time::sleep_until(until.min(keep_alive_at)).await;
                    if Instant::now() >= until {
                        self.phase = Phase::CatchingUp;
                    }
                }
                Phase::Live => {
                    let received = tokio::select! {
                        received = self.batches.recv() => Some(received),
                        () = tokio::time::sleep_until(keep_alive_at) => None,
                    };
                    match received {
                        Some(Ok(batch)) => match batch.as_ref() {
                            Batch::Events(events) => self.write_events(events),
                            Batch::Restart => self.phase = Phase::CatchingUp,
                        },
                        // Fell behind the fan-out: what was missed is still in the store.
                        Some(Err(RecvError::Lagged(_))) => self.phase = Phase::CatchingUp,
                        Some(Err(RecvError::Closed)) => return None,
                        None => {}
                    }
                }
            }
        }
    }

    /// One read of the store from this feed's position: its records are written, or, when there
    /// are none, the feed goes live. When the store no longer holds what follows the position,
    /// a new snapshot is written; when it fails, the feed waits and tries again.
    async fn catch_up(&mut self) {
        let store = self.hub.store.clone();
        let from = self.position;
        match store.read_after(from, Duration::ZERO).await {
            Ok((events, next)) => {
                if events.is_empty() && next <= self.position {
                    self.phase = Phase::Live;
                    return;
                }
                self.write_events(&events);
                self.position = self.position.max(next);
            }
            Err(error) => {
                let snapshot = match store.stream_covers(from).await {
                    Ok(false) => self.snapshot().await,
                    Ok(true) => Err(error),
                    Err(other) => Err(other),
                };
                if let Err(error) = snapshot {
                    tracing::debug!(%error, "revocation feed: the store failed; retrying");
                    self.phase = Phase::Waiting(Instant::now() + RETRY);
                }
            }
        }
    }

    /// Writes the records after this feed's position, and moves it.
    fn write_events(&mut self, events: &[StreamEvent]) {
        for event in events {
            let id = event.id();
            if id <= self.position {
                continue;
            }
            match event {
                StreamEvent::Revocation { record, .. } => {
                    write_event(&mut self.out, "revocation", id, &json(record));
                }
                StreamEvent::Heartbeat { node, at, .. } => {
                    let data = json(&HeartbeatData { node, at: *at });
                    write_event(&mut self.out, "heartbeat", id, &data);
                }
            }
            self.position = id;
        }
    }
}

/// One event; `data` is one line of JSON (serde_json escapes line breaks inside strings).
fn write_event(out: &mut String, event: &str, id: StreamPosition, data: &str) {
    let _ = write!(out, "event: {event}\nid: {id}\ndata: {data}\n\n");
}

/// JSON of plain data, which cannot fail to serialize; were it to, the event's data is empty, which
/// a reader refuses (it reconnects from before it, so nothing is skipped).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;
    use mandate_model::FixedClock;
    use mandate_revocation::{MemoryRevocations, Revocation, RevocationKind};

    fn memory_store(capacity: usize) -> Arc<dyn RevocationStore> {
        Arc::new(MemoryRevocations::with_stream_capacity(
            Arc::new(FixedClock::at(1_800_000_000)),
            capacity,
        ))
    }

    /// Revokes hops `h<from>`… one at a time, letting the shared reader take each alone (so that
    /// each is a batch of its own in the fan-out).
    async fn revoke_one_by_one(store: &Arc<dyn RevocationStore>, hops: std::ops::Range<usize>) {
        for n in hops {
            store
                .revoke(vec![Revocation {
                    kind: RevocationKind::Hop,
                    id: format!("h{n}"),
                    until_ms: 1_900_000_000_000,
                    reason: String::new(),
                    by: "test".into(),
                }])
                .await
                .unwrap();
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
        }
    }

    /// Reads the feed until the hop `last` has gone out (as a revocation or in a snapshot); the
    /// (event, hop ids) of every event, in order (a snapshot's hop ids are its entries').
    async fn drain_until(feed: &mut Feed, last: &str) -> Vec<(String, Vec<String>)> {
        let mut text = String::new();
        let mut events = Vec::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(5), feed.next_chunk())
                .await
                .expect("the feed stalled")
                .expect("the feed ended");
            text.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(str::to_owned))
                };
                let (Some(event), Some(data)) = (field("event: "), field("data: ")) else {
                    continue;
                };
                let data: serde_json::Value = serde_json::from_str(&data).unwrap();
                let ids: Vec<String> = match event.as_str() {
                    "snapshot" => data["entries"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["id"].as_str().unwrap().to_owned())
                        .collect(),
                    _ => vec![data["id"].as_str().unwrap_or_default().to_owned()],
                };
                let done = ids.iter().any(|id| id == last);
                events.push((event, ids));
                if done {
                    return events;
                }
            }
        }
    }

    /// Lets the feed find the store read to the end and go live (waiting for the fan-out).
    async fn settle(feed: &mut Feed) {
        // Cut short while it waits: `recv` loses nothing when cancelled.
        let chunk = tokio::time::timeout(Duration::from_millis(100), feed.next_chunk()).await;
        assert!(chunk.is_err(), "nothing more to send");
        assert_eq!(feed.phase, Phase::Live);
    }

    #[tokio::test]
    async fn a_feed_that_falls_behind_the_fan_out_catches_up_from_the_store() {
        let store = memory_store(10_000);
        let mut feed = Feed::open(&FeedHubs::default(), &store, "client-a", None)
            .await
            .unwrap();
        revoke_one_by_one(&store, 0..1).await;
        let opening = drain_until(&mut feed, "h0").await;
        assert_eq!(opening[0].0, "snapshot");
        settle(&mut feed).await;
        // Far more batches than the fan-out holds, while the feed is not read.
        revoke_one_by_one(&store, 1..FANOUT_CAPACITY * 2).await;
        let last = format!("h{}", FANOUT_CAPACITY * 2 - 1);
        let events = drain_until(&mut feed, &last).await;
        // Every revocation exactly once, in order, and no new snapshot: the store still held them.
        let expected: Vec<(String, Vec<String>)> = (1..FANOUT_CAPACITY * 2)
            .map(|n| ("revocation".to_owned(), vec![format!("h{n}")]))
            .collect();
        assert_eq!(events, expected);
    }

    #[tokio::test]
    async fn a_feed_left_behind_by_the_store_gets_a_snapshot_in_the_middle() {
        let store = memory_store(10);
        let mut feed = Feed::open(&FeedHubs::default(), &store, "client-a", None)
            .await
            .unwrap();
        revoke_one_by_one(&store, 0..1).await;
        drain_until(&mut feed, "h0").await;
        settle(&mut feed).await;
        revoke_one_by_one(&store, 1..FANOUT_CAPACITY * 2).await;
        let last = format!("h{}", FANOUT_CAPACITY * 2 - 1);
        let events = drain_until(&mut feed, &last).await;
        // The records it missed are no longer in the store: a snapshot holding every entry.
        assert_eq!(events.len(), 1, "{events:?}");
        let (event, entries) = &events[0];
        assert_eq!(event, "snapshot");
        assert_eq!(entries.len(), FANOUT_CAPACITY * 2);
        // Then it goes on from the snapshot's position.
        revoke_one_by_one(&store, 1000..1001).await;
        let events = drain_until(&mut feed, "h1000").await;
        assert_eq!(
            events,
            [("revocation".to_owned(), vec!["h1000".to_owned()])]
        );
    }

    #[test]
    fn the_position_comes_from_the_query_or_last_event_id() {
        let position = |request: TestRequest| requested_position(&request.to_http_request());
        assert_eq!(
            position(TestRequest::get().uri("/revocations")).ok(),
            Some(None)
        );
        assert_eq!(
            position(TestRequest::get().uri("/revocations?from=17-3")).ok(),
            Some(Some(StreamPosition { ms: 17, seq: 3 }))
        );
        assert_eq!(
            position(TestRequest::get().insert_header(("Last-Event-ID", "9-1"))).ok(),
            Some(Some(StreamPosition { ms: 9, seq: 1 }))
        );
        // The query wins over the header.
        assert_eq!(
            position(
                TestRequest::get()
                    .uri("/revocations?from=17-3")
                    .insert_header(("Last-Event-ID", "9-1"))
            )
            .ok(),
            Some(Some(StreamPosition { ms: 17, seq: 3 }))
        );
        for bad in ["/revocations?from=abc", "/revocations?from=1-2&from=3-4"] {
            assert!(position(TestRequest::get().uri(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_server_sent_event_blocks() {
        let mut out = String::new();
        write_event(
            &mut out,
            "heartbeat",
            StreamPosition { ms: 5, seq: 1 },
            &json(&HeartbeatData {
                node: "n\n1",
                at: 5,
            }),
        );
        assert_eq!(
            out,
            "event: heartbeat\nid: 5-1\ndata: {\"node\":\"n\\n1\",\"at\":5}\n\n"
        );
    }
}
