//! `Feed` mode: the revocation list from mandate's `GET /revocations` server-sent events, for apps
//! that cannot reach mandate's Redis (DESIGN.md section 6).
//!
//! A background task reads the stream with reqwest (a small server-sent-events parser of its
//! own: mandate sends `snapshot`, `revocation` and `heartbeat` events and `: keep-alive`
//! comments) and keeps an in-process copy of the live entries ([`RevocationSet`], the same
//! decision as the store's check), so a verification costs no I/O. After any error — the
//! connection dropped, mandate restarted, an event it cannot read — it reconnects with
//! `?from=<the id of the last event applied>`, so nothing written meanwhile is missed; when
//! mandate answers that with a new snapshot (its stream no longer holds that position), the
//! snapshot is merged into the copy (the later `at` wins), so an entry already seen is forgotten
//! only when it expires.
//!
//! It fails closed: once the newest heartbeat received is older than
//! [`FeedConfig::staleness_bound`], every verification is refused with
//! [`VerifyError::RevocationUnavailable`] until heartbeats arrive again. A heartbeat counts as
//! written when it arrived less its age by the store's clock, which the feed estimates from the
//! times it carries (a snapshot's `now`, each heartbeat's `at`): a backlog of old heartbeats
//! replayed after a reconnection does not make the copy look fresh.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mandate_model::{Monotonic, SystemMonotonic};
use mandate_revocation::{
    FollowedCopy, FollowerShell, FollowerState, RevocationRecord, ShellShared, TokenFacts, Verdict,
};
use serde_json::Value;
use url::Url;

use crate::{RevocationSource, VerifyError};

/// How long connecting and receiving the response head may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which nothing arrives for this long is given up and reopened (mandate writes
/// a heartbeat each second and a keep-alive comment at least every 15 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest event accepted (a snapshot holds every live entry): a larger one is an error.
const MAX_EVENT_BYTES: usize = 32 * 1024 * 1024;
/// The longest wait between two connection attempts while they keep failing (unless
/// [`FeedConfig::reconnect_delay`] is longer).
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
/// How often expired entries are pruned from the copy.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// How a [`Feed`] follows mandate's revocation feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedConfig {
    /// Verifications fail closed ([`VerifyError::RevocationUnavailable`]) when the newest
    /// heartbeat received is older than this. Default 3 s (mandate nodes write one each second).
    pub staleness_bound: Duration,
    /// The wait before reconnecting after an error; it doubles while attempts keep failing, up to
    /// ten seconds (or this delay, when longer). Default 1 s.
    pub reconnect_delay: Duration,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            staleness_bound: Duration::from_secs(3),
            reconnect_delay: Duration::from_secs(1),
        }
    }
}

/// What a feed holds (for tests and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStats {
    /// Entries held in the copy.
    pub entries: usize,
    /// The id of the last event applied: where a reconnection resumes (`None` before the first
    /// snapshot).
    pub position: Option<String>,
    /// Snapshots received (the first one, and any mandate sent after a reconnection).
    pub snapshots: u64,
    /// Connections opened (the first one and every reconnection).
    pub connections: u64,
    /// Errors met (a connection lost or refused, an event that could not be read).
    pub errors: u64,
}

/// An in-process copy of the revocation list, kept current from mandate's `GET /revocations`
/// by a background task. Clones share the copy and the task; the task stops with
/// [`Self::stop`] or when the last clone is dropped.
///
/// ```no_run
/// # async fn run() -> Result<(), mandate_verify::VerifyError> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use mandate_verify::{Feed, FeedConfig, Verifier};
///
/// let feed = Feed::connect(
///     "https://mandate.example.com/revocations",
///     "calendar-api",          // a resource_server client of mandate (client_secret_basic)
///     "…its secret…",
///     FeedConfig::default(),
/// )
/// .await?;
/// feed.ready(Duration::from_secs(10)).await;
/// let verifier = Verifier::builder("https://mandate.example.com", "https://calendar.example.com")
///     .discover()
///     .revocation(Arc::new(feed))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Feed {
    shell: FollowerShell<State>,
    url: Url,
    config: FeedConfig,
}

impl fmt::Debug for Feed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("Feed")
            .field("url", &self.url.as_str())
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Feed {
    /// Opens mandate's revocation feed at `feed_url` (`https://…/revocations`; `http` only on
    /// loopback) as the resource server `client_id` with `client_secret` (HTTP Basic, as
    /// RFC 6749 §2.3.1 encodes it), and spawns the task that follows it.
    ///
    /// Returns once mandate has accepted the connection (the first snapshot may still be on its
    /// way: [`ready`](Self::ready) waits for it). Fails with
    /// [`VerifyError::RevocationUnavailable`] when the URL is unacceptable, mandate cannot be
    /// reached, or it refuses the credentials (401) or the client (403: not a resource server).
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as `tokio::spawn` does).
    pub async fn connect(
        feed_url: &str,
        client_id: &str,
        client_secret: &str,
        config: FeedConfig,
    ) -> Result<Self, VerifyError> {
        Self::connect_timed(
            feed_url,
            client_id,
            client_secret,
            config,
            Arc::new(SystemMonotonic),
        )
        .await
    }

    /// [`Self::connect`] with ages (staleness, pruning) measured by `time`.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime (as `tokio::spawn` does).
    pub async fn connect_timed(
        feed_url: &str,
        client_id: &str,
        client_secret: &str,
        config: FeedConfig,
        time: Arc<dyn Monotonic>,
    ) -> Result<Self, VerifyError> {
        let unavailable = |m: String| VerifyError::RevocationUnavailable(m);
        let url = crate::keys::checked_url(feed_url)
            .map_err(|m| unavailable(format!("feed URL: {m}")))?;
        if client_id.is_empty() || client_secret.is_empty() {
            return Err(unavailable(
                "feed: the client id and secret are required".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_keepalive(Some(Duration::from_secs(15)))
            .user_agent(concat!("mandate-verify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| unavailable(format!("feed: HTTP client: {e}")))?;
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        let opener = Opener {
            client,
            url: url.clone(),
            client_id: encode(client_id),
            client_secret: encode(client_secret),
        };
        let first = opener.open(None).await.map_err(unavailable)?;
        let mut state = State::new(FollowedCopy::new(config.staleness_bound, time.now()));
        state.connections = 1;
        let shell = FollowerShell::spawn(state, time, |shared| {
            Task {
                opener,
                config,
                shared,
            }
            .run(first)
        });
        Ok(Self { shell, url, config })
    }

    /// Waits until the first snapshot is loaded (bounded by `timeout`); whether it is.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.shell.ready(timeout).await
    }

    /// Decides for `facts` from the in-process copy, no I/O ([`FollowedCopy::check`]):
    /// [`VerifyError::RevocationUnavailable`] before the first snapshot and whenever the newest
    /// heartbeat received is older than the bound; otherwise the store's decision with expiry
    /// judged by the store's clock as estimated.
    pub fn check(&self, facts: &TokenFacts) -> Result<Verdict, VerifyError> {
        self.shell.check(facts).map_err(|error| {
            VerifyError::RevocationUnavailable(format!("revocation feed: {error}"))
        })
    }

    /// The time since the newest heartbeat received: the lag of this feed's view.
    pub fn view_age(&self) -> Duration {
        self.shell.view_age()
    }

    /// What the feed holds, where it is, how many snapshots, connections and errors it has seen.
    pub fn stats(&self) -> FeedStats {
        let state = self.shell.shared().lock();
        FeedStats {
            entries: state.copy.len(),
            position: state.position.clone(),
            snapshots: state.snapshots,
            connections: state.connections,
            errors: state.errors,
        }
    }

    /// Stops the background task. The copy stays, so verifications fail closed once the bound
    /// has passed.
    pub fn stop(&self) {
        self.shell.stop();
    }
}

#[async_trait]
impl RevocationSource for Feed {
    async fn verdict(&self, facts: &TokenFacts) -> Result<Verdict, VerifyError> {
        self.check(facts)
    }

    fn mode(&self) -> &'static str {
        "feed"
    }

    fn view_age(&self) -> Option<Duration> {
        Some(Feed::view_age(self))
    }
}

/// The copy and where the feed is.
#[derive(Debug)]
struct State {
    copy: FollowedCopy,
    position: Option<String>,
    pruned: Option<Instant>,
    snapshots: u64,
    connections: u64,
    errors: u64,
}

impl FollowerState for State {
    fn copy(&self) -> &FollowedCopy {
        &self.copy
    }
}

impl State {
    fn new(copy: FollowedCopy) -> Self {
        Self {
            copy,
            position: None,
            pruned: None,
            snapshots: 0,
            connections: 0,
            errors: 0,
        }
    }

    /// Applies one event received at `received`; an event it cannot read is an error (the
    /// connection is then reopened from before it, so nothing is skipped).
    fn apply(&mut self, event: &SseEvent, received: Instant) -> Result<(), String> {
        match event.event.as_str() {
            "snapshot" => {
                let data: Value = serde_json::from_str(&event.data)
                    .map_err(|_| "a snapshot that is not JSON".to_owned())?;
                let entries: Vec<RevocationRecord> =
                    serde_json::from_value(data.get("entries").cloned().unwrap_or(Value::Null))
                        .map_err(|_| "a snapshot without a list of entries".to_owned())?;
                if let Some(now) = data.get("now").and_then(Value::as_i64) {
                    self.copy.observe_clock(now, received);
                }
                for record in entries {
                    self.copy.insert(record);
                }
                self.copy.mark_loaded();
                self.snapshots += 1;
            }
            "revocation" => {
                let record: RevocationRecord = serde_json::from_str(&event.data)
                    .map_err(|_| "a revocation event that is not an entry".to_owned())?;
                self.copy.insert(record);
            }
            "heartbeat" => {
                let data: Value = serde_json::from_str(&event.data)
                    .map_err(|_| "a heartbeat that is not JSON".to_owned())?;
                let at = data
                    .get("at")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| "a heartbeat without its time".to_owned())?;
                self.copy.heard_heartbeat(at, received);
            }
            // Events of later versions are skipped.
            _ => {}
        }
        if let Some(id) = &event.id {
            self.position = Some(id.clone());
        }
        Ok(())
    }

    /// Drops expired entries, at most once per [`PRUNE_EVERY`].
    fn prune(&mut self, now: Instant) {
        if self
            .pruned
            .is_some_and(|at| now.duration_since(at) < PRUNE_EVERY)
        {
            return;
        }
        self.pruned = Some(now);
        self.copy.prune(now);
    }
}

/// How the feed is opened: the client, the URL and the credentials.
struct Opener {
    client: reqwest::Client,
    url: Url,
    /// Form-urlencoded, as RFC 6749 §2.3.1 wants them before Basic encoding.
    client_id: String,
    client_secret: String,
}

impl Opener {
    /// Opens the feed, from `position` when there is one.
    async fn open(&self, position: Option<String>) -> Result<reqwest::Response, String> {
        let mut url = self.url.clone();
        if let Some(position) = position {
            url.query_pairs_mut().append_pair("from", &position);
        }
        let request = self
            .client
            .get(url)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache")
            .send();
        let response = tokio::time::timeout(CONNECT_TIMEOUT, request)
            .await
            .map_err(|_| "feed: no answer in time".to_owned())?
            .map_err(|e| format!("feed: {}", e.without_url()))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            let why = match status.as_u16() {
                401 => " (the client id or secret is wrong)",
                403 => " (the client is not a resource server)",
                _ => "",
            };
            return Err(format!("feed: mandate answered {status}{why}"));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("text/event-stream") {
            return Err("feed: the answer is not text/event-stream".into());
        }
        Ok(response)
    }
}

/// The background task.
struct Task {
    opener: Opener,
    config: FeedConfig,
    shared: Arc<ShellShared<State>>,
}

impl Task {
    /// Opens the feed again, from the last position.
    async fn open(&self) -> Result<reqwest::Response, String> {
        let position = self.shared.lock().position.clone();
        let response = self.opener.open(position).await?;
        self.shared.lock().connections += 1;
        Ok(response)
    }

    async fn run(self, first: reqwest::Response) {
        let mut next = Some(first);
        let mut failures: u32 = 0;
        loop {
            let opened = match next.take() {
                Some(response) => Ok(response),
                None => self.open().await,
            };
            let (delivered, error) = match opened {
                Ok(response) => self.follow(response).await,
                Err(error) => (false, error),
            };
            failures = if delivered {
                1
            } else {
                failures.saturating_add(1)
            };
            if failures == 1 {
                tracing::warn!(%error, "revocation feed interrupted; reconnecting");
            } else {
                tracing::debug!(%error, failures, "revocation feed still unavailable");
            }
            self.shared.lock().errors += 1;
            tokio::time::sleep(self.delay(failures)).await;
        }
    }

    /// The wait after `failures` attempts in a row have failed.
    fn delay(&self, failures: u32) -> Duration {
        let base = self.config.reconnect_delay;
        let doubled = base.saturating_mul(1 << failures.saturating_sub(1).min(6));
        doubled.min(MAX_RECONNECT_DELAY.max(base))
    }

    /// Reads events until the connection ends or fails; whether any event was applied, and why it
    /// ended.
    async fn follow(&self, mut response: reqwest::Response) -> (bool, String) {
        let mut parser = SseParser::new(MAX_EVENT_BYTES);
        let mut delivered = false;
        loop {
            let chunk = match tokio::time::timeout(IDLE_TIMEOUT, response.chunk()).await {
                Err(_) => return (delivered, "feed: nothing received for 30 s".into()),
                Ok(Err(e)) => return (delivered, format!("feed: {}", e.without_url())),
                Ok(Ok(None)) => return (delivered, "feed: mandate ended the stream".into()),
                Ok(Ok(Some(chunk))) => chunk,
            };
            let received = self.shared.now();
            let events = match parser.push(&chunk) {
                Ok(events) => events,
                Err(error) => return (delivered, format!("feed: {error}")),
            };
            if events.is_empty() {
                continue;
            }
            let loaded = {
                let mut state = self.shared.lock();
                for event in &events {
                    if let Err(error) = state.apply(event, received) {
                        return (delivered, format!("feed: {error}"));
                    }
                    delivered = true;
                }
                state.prune(received);
                state.copy.is_loaded()
            };
            if loaded {
                self.shared.mark_ready();
            }
        }
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SseEvent {
    /// Its type (`message` when none was given).
    event: String,
    /// Its data lines, joined with `\n`.
    data: String,
    /// Its `id`, when it carried one.
    id: Option<String>,
}

/// Why a stream cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an event larger than {0} bytes")]
struct TooLarge(usize);

/// A parser of `text/event-stream` (the WHATWG HTML "server-sent events" interpretation, without
/// what only browsers need): lines end with CRLF, LF or CR; a blank line dispatches the event;
/// `:` starts a comment; `event`, `data` and `id` fields are kept (`retry` and unknown fields are
/// ignored); a block without data dispatches nothing.
#[derive(Debug)]
struct SseParser {
    /// Bytes of a line not yet complete.
    buffer: Vec<u8>,
    limit: usize,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
}

impl SseParser {
    fn new(limit: usize) -> Self {
        Self {
            buffer: Vec::new(),
            limit,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
        }
    }

    /// Takes in the next bytes of the stream; the events they complete.
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, TooLarge> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buffer[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + offset;
            let mut next = end + 1;
            if self.buffer[end] == b'\r' {
                match self.buffer.get(next) {
                    // A CR at the end of what arrived: its LF may be in the next chunk.
                    None => break,
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                }
            }
            let line = String::from_utf8_lossy(&self.buffer[start..end]).into_owned();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = next;
        }
        self.buffer.drain(..start);
        if self.buffer.len().saturating_add(self.data.len()) > self.limit {
            return Err(TooLarge(self.limit));
        }
        Ok(events)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let mut data = std::mem::take(&mut self.data);
            let id = self.id.take();
            if !std::mem::replace(&mut self.has_data, false) {
                return None;
            }
            data.pop(); // the newline after the last data line
            let event = if event.is_empty() {
                "message".to_owned()
            } else {
                event
            };
            return Some(SseEvent { event, data, id });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.has_data = true;
            }
            "id" if !value.contains('\0') && !value.is_empty() => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(str::to_owned),
        }
    }

    #[test]
    fn events_comments_and_line_endings() {
        let mut parser = SseParser::new(1024);
        let stream =
            "retry: 1000\n\n: keep-alive\n\nevent: snapshot\nid: 5-0\ndata: {\"entries\":[]}\n\n\
                      event: heartbeat\r\nid: 6-0\r\ndata: {\"at\":6}\r\n\r\n\
                      data: one\rdata:two\r\r";
        let events = parser.push(stream.as_bytes()).unwrap();
        assert_eq!(
            events,
            [
                event("snapshot", "{\"entries\":[]}", Some("5-0")),
                event("heartbeat", "{\"at\":6}", Some("6-0")),
            ]
        );
        // The last CR may be the first half of a CRLF: decided by the next byte.
        assert_eq!(
            parser.push(b"\n").unwrap(),
            [event("message", "one\ntwo", None)]
        );
    }

    #[test]
    fn events_split_anywhere_arrive_whole() {
        let stream = b"event: revocation\r\nid: 7-1\r\ndata: {\"kind\":\"hop\"}\r\n\r\n: c\n\n";
        for split in 0..stream.len() {
            let mut parser = SseParser::new(1024);
            let mut events = parser.push(&stream[..split]).unwrap();
            events.extend(parser.push(&stream[split..]).unwrap());
            assert_eq!(
                events,
                [event("revocation", "{\"kind\":\"hop\"}", Some("7-1"))],
                "split at {split}"
            );
        }
    }

    #[test]
    fn blocks_without_data_dispatch_nothing_and_size_is_bounded() {
        let mut parser = SseParser::new(16);
        assert!(parser.push(b"event: x\nid: 1-0\n\n").unwrap().is_empty());
        // The type and id of a block without data do not leak into the next event.
        assert_eq!(
            parser.push(b"data: a\n\n").unwrap(),
            [event("message", "a", None)]
        );
        assert_eq!(parser.push(b"data: 0123456789abcdef"), Err(TooLarge(16)));
    }

    fn state_with_clock(ms: i64, at: Instant) -> State {
        let mut copy = FollowedCopy::new(Duration::from_secs(3), at);
        copy.observe_clock(ms, at);
        copy.mark_loaded();
        State::new(copy)
    }

    #[test]
    fn an_old_heartbeat_does_not_make_the_copy_fresh() {
        let now = Instant::now();
        let mut state = state_with_clock(100_000, now);
        // Replayed after a reconnection: written ten seconds ago by the store's clock.
        state
            .apply(
                &event("heartbeat", r#"{"node":"n","at":90000}"#, Some("90000-0")),
                now,
            )
            .unwrap();
        assert_eq!(
            state.copy.newest_heartbeat(),
            now.checked_sub(Duration::from_secs(10))
        );
        assert_eq!(state.position.as_deref(), Some("90000-0"));
        // A live one.
        state
            .apply(
                &event("heartbeat", r#"{"node":"n","at":100000}"#, Some("100000-0")),
                now,
            )
            .unwrap();
        assert_eq!(state.copy.newest_heartbeat(), Some(now));
        // The clock estimate never moves back.
        assert_eq!(state.copy.store_now_ms(now), 100_000);
    }

    #[test]
    fn an_event_that_cannot_be_read_is_an_error_and_does_not_move_the_position() {
        let now = Instant::now();
        let mut state = state_with_clock(100_000, now);
        state.position = Some("1-0".into());
        for bad in [
            event("revocation", "{\"kind\":\"nope\"}", Some("2-0")),
            event("snapshot", "{}", Some("2-0")),
            event("heartbeat", "{\"node\":\"n\"}", Some("2-0")),
        ] {
            assert!(state.apply(&bad, now).is_err(), "{bad:?}");
            assert_eq!(state.position.as_deref(), Some("1-0"));
        }
        // Unknown event types are skipped, their id kept.
        state
            .apply(&event("later", "{}", Some("3-0")), now)
            .unwrap();
        assert_eq!(state.position.as_deref(), Some("3-0"));
    }
}
