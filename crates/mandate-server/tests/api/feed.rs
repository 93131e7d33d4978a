//! `GET /revocations`, the revocation feed for apps that cannot reach Redis, over real HTTP on the
//! memory store: who may read it, the snapshot, revocations and heartbeats as they happen,
//! resuming from a position, the bound on open feeds, and feeds ended by a stopping node.

use std::time::Duration;

use mandate_server::feed::{open_feeds, MAX_FEEDS_PER_CLIENT, MAX_FEED_CONNECTIONS};
use mandate_testkit::{body_json, delegation_settings, KeyKind, TestKey, TestServer, ADMIN_OPS};
use reqwest::StatusCode;
use serde_json::Value;

async fn world() -> TestServer {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    TestServer::spawn(delegation_settings(&corp)).await.unwrap()
}

/// GETs the feed with `query` (e.g. `?from=…`), as `credentials` (HTTP Basic) when given.
async fn open(
    server: &TestServer,
    query: &str,
    credentials: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = server.http.get(server.url(&format!("/revocations{query}")));
    if let Some((id, secret)) = credentials {
        request = request.basic_auth(id, Some(secret));
    }
    request.send().await.unwrap()
}

const CALENDAR: Option<(&str, &str)> = Some(("calendar-api", "calendar-secret"));

async fn revoke_subject(server: &TestServer, subject: &str) {
    let response = server
        .http
        .post(server.admin_url(&format!(
            "/admin/subjects/{}/revoke",
            subject.replace('|', "%7C")
        )))
        .bearer_auth(ADMIN_OPS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// One server-sent event.
#[derive(Debug)]
struct Event {
    event: String,
    id: String,
    data: Value,
}

/// Reads a streaming `text/event-stream` body event by event (comments and `retry:` skipped).
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn of(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event, failing after `within`.
    async fn next(&mut self, within: Duration) -> Event {
        tokio::time::timeout(within, self.next_event())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
    }

    async fn next_event(&mut self) -> Event {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (None, None, None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(event), Some(id), Some(data)) = (event, id, data) {
                    return Event { event, id, data };
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .unwrap()
                .expect("the feed ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Reads until an event satisfies `wanted`, failing after `within`; the events skipped are
    /// returned with it.
    async fn until(
        &mut self,
        within: Duration,
        wanted: impl Fn(&Event) -> bool,
    ) -> (Event, Vec<Event>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let event = self.next(left).await;
            if wanted(&event) {
                return (event, skipped);
            }
            skipped.push(event);
        }
    }
}

fn is_subject_revocation(event: &Event, subject: &str) -> bool {
    event.event == "revocation" && event.data["kind"] == "subject" && event.data["id"] == subject
}

#[tokio::test]
async fn only_resource_servers_read_the_feed() {
    let server = world().await;

    let anonymous = open(&server, "", None).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    assert_eq!(body_json(anonymous).await["error"], "invalid_client");

    let wrong = open(&server, "", Some(("calendar-api", "not-the-secret"))).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_json(wrong).await["error"], "invalid_client");

    let unknown = open(&server, "", Some(("nobody", "calendar-secret"))).await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);

    let agent = open(&server, "", Some(("assistant", "assistant-secret"))).await;
    assert_eq!(agent.status(), StatusCode::FORBIDDEN);
    assert_eq!(agent.headers()["cache-control"], "no-store");
    assert_eq!(body_json(agent).await["error"], "forbidden");

    let malformed = open(&server, "?from=yesterday", CALENDAR).await;
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(malformed).await["error"], "invalid_request");
    server.stop().await;
}

#[tokio::test]
async fn a_snapshot_then_revocations_and_heartbeats_as_they_happen() {
    let server = world().await;
    revoke_subject(&server, "corp|before").await;

    let mut feed = Events::of(open(&server, "", CALENDAR).await).await;
    let snapshot = feed.next(Duration::from_secs(5)).await;
    assert_eq!(snapshot.event, "snapshot");
    let entries = snapshot.data["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "subject" && e["id"] == "corp|before"),
        "{entries:?}"
    );
    assert!(snapshot.data["now"].as_i64().unwrap() > 0);
    let snapshot_id = snapshot.id.clone();

    // A revocation made while the feed is open arrives as an event, after the snapshot.
    revoke_subject(&server, "corp|after").await;
    let (revocation, skipped) = feed
        .until(Duration::from_secs(5), |e| {
            is_subject_revocation(e, "corp|after")
        })
        .await;
    assert!(
        skipped.iter().all(|e| e.event == "heartbeat"),
        "{skipped:?}"
    );
    assert_eq!(revocation.data["by"], "ops-oncall");
    assert!(revocation.data["at"].as_i64().unwrap() > 0);
    assert!(revocation.data["until"].as_i64().unwrap() > revocation.data["at"].as_i64().unwrap());
    let position = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap();
        (ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap())
    };
    assert!(position(&revocation.id) > position(&snapshot_id));

    // The node's heartbeats (one a second) arrive too, with later ids.
    let (heartbeat, _) = feed
        .until(Duration::from_secs(5), |e| e.event == "heartbeat")
        .await;
    assert_eq!(heartbeat.data["node"], server.state.node_id.as_str());
    assert!(heartbeat.data["at"].as_i64().unwrap() > 0);
    assert!(position(&heartbeat.id) > position(&snapshot_id));
    let (second, _) = feed
        .until(Duration::from_secs(5), |e| e.event == "heartbeat")
        .await;
    assert!(position(&second.id) > position(&heartbeat.id));
    drop(feed);
    server.stop().await;
}

#[tokio::test]
async fn a_feed_resumes_from_a_position_without_a_snapshot() {
    let server = world().await;
    let mut first = Events::of(open(&server, "", CALENDAR).await).await;
    let snapshot = first.next(Duration::from_secs(5)).await;
    assert_eq!(snapshot.event, "snapshot");
    drop(first);

    // Revoked while no feed is open: a feed resuming from the snapshot's position gets it, and
    // no snapshot.
    revoke_subject(&server, "corp|meanwhile").await;
    let mut resumed =
        Events::of(open(&server, &format!("?from={}", snapshot.id), CALENDAR).await).await;
    let (revocation, skipped) = resumed
        .until(Duration::from_secs(5), |e| {
            is_subject_revocation(e, "corp|meanwhile")
        })
        .await;
    assert!(
        skipped.iter().all(|e| e.event == "heartbeat"),
        "{skipped:?}"
    );
    drop(resumed);

    // `Last-Event-ID` (what an EventSource sends when it reconnects) does the same.
    revoke_subject(&server, "corp|later").await;
    let response = server
        .http
        .get(server.url("/revocations"))
        .basic_auth("calendar-api", Some("calendar-secret"))
        .header("Last-Event-ID", revocation.id.as_str())
        .send()
        .await
        .unwrap();
    let mut by_header = Events::of(response).await;
    let (_, skipped) = by_header
        .until(Duration::from_secs(5), |e| {
            is_subject_revocation(e, "corp|later")
        })
        .await;
    assert!(
        skipped
            .iter()
            .all(|e| e.event == "heartbeat" && !is_subject_revocation(e, "corp|meanwhile")),
        "{skipped:?}"
    );
    drop(by_header);

    // A position this store never handed out (ahead of its stream) gets a snapshot first.
    let (ms, _) = snapshot.id.split_once('-').unwrap();
    let ahead = format!("{}-0", ms.parse::<u64>().unwrap() + 86_400_000);
    let mut foreign = Events::of(open(&server, &format!("?from={ahead}"), CALENDAR).await).await;
    let first_event = foreign.next(Duration::from_secs(5)).await;
    assert_eq!(first_event.event, "snapshot");
    let entries = first_event.data["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["id"] == "corp|later"),
        "{entries:?}"
    );
    drop(foreign);
    server.stop().await;
}

/// A world with `n` more resource servers, `feeder-<i>` with secret `feeder-<i>-secret`.
async fn world_with_feeders(n: usize) -> TestServer {
    let corp = TestKey::generate(KeyKind::Es256, Some("corp-1")).unwrap();
    let mut settings = delegation_settings(&corp);
    for i in 0..n {
        settings.clients.push(
            mandate_testkit::resource_server(
                &format!("feeder-{i}"),
                &format!("feeder-{i}-secret"),
                &format!("https://feeder-{i}.example.com"),
            )
            .unwrap(),
        );
    }
    TestServer::spawn(settings).await.unwrap()
}

async fn open_as_feeder(server: &TestServer, i: usize) -> reqwest::Response {
    let (id, secret) = (format!("feeder-{i}"), format!("feeder-{i}-secret"));
    open(server, "", Some((&id, &secret))).await
}

/// Security finding 2 (SECURITY.md): one resource server cannot take every slot of a node.
#[tokio::test]
async fn one_client_holds_at_most_its_share_of_the_feeds() {
    let server = world().await;
    let mut feeds = Vec::with_capacity(MAX_FEEDS_PER_CLIENT);
    for _ in 0..MAX_FEEDS_PER_CLIENT {
        let response = open(&server, "", CALENDAR).await;
        assert_eq!(response.status(), StatusCode::OK);
        feeds.push(response);
    }
    let refused = open(&server, "", CALENDAR).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(body_json(refused).await["error"], "slow_down");
    // Another app is not affected.
    let other = open(&server, "", Some(("mail-api", "mail-secret"))).await;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(open_feeds(&server.state), MAX_FEEDS_PER_CLIENT + 1);
    // A feed the client closes gives its share back.
    drop(feeds.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = open(&server, "", CALENDAR).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the share was never given back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((feeds, other));
    server.stop().await;
}

#[tokio::test]
async fn the_number_of_open_feeds_is_bounded() {
    let clients = MAX_FEED_CONNECTIONS.div_ceil(MAX_FEEDS_PER_CLIENT);
    let server = world_with_feeders(clients).await;
    let mut feeds = Vec::with_capacity(MAX_FEED_CONNECTIONS);
    for n in 0..MAX_FEED_CONNECTIONS {
        let response = open_as_feeder(&server, n % clients).await;
        assert_eq!(response.status(), StatusCode::OK);
        feeds.push(response);
    }
    assert_eq!(open_feeds(&server.state), MAX_FEED_CONNECTIONS);
    let refused = open(&server, "", CALENDAR).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(body_json(refused).await["error"], "temporarily_unavailable");

    // A client that goes away frees its slot (the server notices at its next write: a heartbeat
    // within a second).
    drop(feeds.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = open(&server, "", CALENDAR).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(feeds);
    server.stop().await;
}

/// A node that stops ends its open feeds at once, and cleanly (the chunked body ends; readers
/// reconnect elsewhere with their last event id), instead of holding its graceful shutdown open
/// for its whole timeout (10 s).
#[tokio::test]
async fn stopping_ends_open_feeds_at_once() {
    let server = world().await;
    let mut events = Events::of(open(&server, "", CALENDAR).await).await;
    events.next(Duration::from_secs(5)).await;
    let drained = async {
        while let Some(_heartbeat) = events.response.chunk().await.expect("a clean end") {}
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        tokio::join!(server.stop(), drained)
    })
    .await
    .expect("the stop and the feed's end came well before the shutdown timeout");
}
