//! mandate as a Shared Signals transmitter (SSF 1.0, CAEP 1.0, RFC 8417): the streams resource
//! servers manage for themselves, and the Security Event Tokens a revocation raises for them.
//!
//! A receiver is told only about tokens of the audiences its owner holds: a revoked hop becomes
//! a CAEP `session-revoked` SET whose subject is that token (`jwt_id`: mandate's issuer and the
//! token's `jti`, which is its hop id), sent only to the streams of the resource servers that own
//! the hop's audience; a revoked chain adds one SET naming the chain (a `complex` subject: the
//! chain id as an opaque session, and the user). SETs are queued in the store before the
//! revocation answers, and leave the queue when their receiver acknowledges them.

use std::sync::Arc;

use mandate_chain::{HopId, HopRecord, Ledger};
use mandate_model::{ClientId, ClientKind, Clock};
use mandate_store::{
    AuditEvent, AuditLog, Client, ClientRegistry, Delivery, QueueDepth, QueuedSet, SsfStream,
    SsfStreamStore, StreamStatus,
};
use rand::RngCore;
use serde_json::{json, Map, Value};

use crate::{KeyRing, RevocationOutcome};

/// CAEP session revoked.
pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP credential change.
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// SSF verification.
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";
/// The event types mandate transmits.
pub const EVENTS_SUPPORTED: [&str; 3] = [SESSION_REVOKED, CREDENTIAL_CHANGE, VERIFICATION];
/// The `typ` of a SET (RFC 8417 §2.3).
pub const SET_TYP: &str = "secevent+jwt";
/// Most streams one resource server may hold.
pub const MAX_STREAMS_PER_OWNER: usize = 8;

/// Why a stream operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum SsfError {
    /// No stream with that id belongs to the caller (another owner's stream is not found
    /// either: its existence is not told).
    #[error("stream not found")]
    NotFound,
    /// Only resource servers hold streams.
    #[error("only resource servers may manage streams")]
    NotAResourceServer,
    /// A limit on streams or on removed subjects was reached.
    #[error("{0}")]
    Limit(String),
    /// A subject mandate does not know how to name.
    #[error("{0}")]
    BadSubject(String),
    /// The store did not answer; nothing changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A SET could not be signed.
    #[error("a security event token could not be signed: {0}")]
    Internal(String),
}

fn unavailable(e: impl std::fmt::Display) -> SsfError {
    SsfError::Unavailable(e.to_string())
}

/// What a receiver asks for when it creates or replaces a stream.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    /// The event types it wants; unknown ones are dropped from `events_delivered`.
    pub events_requested: Vec<String>,
    /// How SETs reach it (a push endpoint is checked by the caller's fetch policy).
    pub delivery: Delivery,
    /// Its description.
    pub description: Option<String>,
}

/// The transmitter's settings.
#[derive(Debug, Clone)]
pub struct TransmitterSettings {
    /// mandate's issuer: the SETs' `iss`.
    pub issuer: String,
    /// Most SETs queued per stream; beyond it the oldest are dropped and counted.
    pub queue_cap: u64,
    /// How far back a chain with a live token can have started: the oldest upstream token
    /// accepted, plus a token lifetime per hop of the deepest chain. A subject or agent
    /// revocation looks for live tokens among the chains started since.
    pub live_window_secs: i64,
}

/// Which grain a revocation was made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain<'a> {
    /// A hop and its subtree (the hops are given).
    Hop,
    /// A whole chain (the hops are given).
    Chain(&'a str),
    /// A withdrawn consent: the chains rooted on it (the hops are given).
    Consent,
    /// Every delegation of a user (the hops are its live ones, found by the revocation).
    Subject(&'a str),
    /// Every token an agent acts in (the hops are its live ones, found by the revocation).
    Agent(&'a str),
}

/// Streams and the events revocations raise for them.
#[derive(Debug, Clone)]
pub struct SsfTransmitter {
    streams: Arc<dyn SsfStreamStore>,
    clients: Arc<dyn ClientRegistry>,
    ledger: Arc<dyn Ledger>,
    keys: KeyRing,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    settings: Arc<TransmitterSettings>,
    queued: Arc<tokio::sync::Notify>,
}

impl SsfTransmitter {
    /// A transmitter over its ports.
    pub fn new(
        streams: Arc<dyn SsfStreamStore>,
        clients: Arc<dyn ClientRegistry>,
        ledger: Arc<dyn Ledger>,
        keys: KeyRing,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        settings: TransmitterSettings,
    ) -> Self {
        Self {
            streams,
            clients,
            ledger,
            keys,
            audit,
            clock,
            settings: Arc::new(settings),
            queued: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Resolves when this node queued a SET since the last call (other nodes' SETs are found by
    /// the deliverer's periodic round).
    pub async fn queued(&self) {
        self.queued.notified().await;
    }

    /// The events a stream that asked for `requested` is sent.
    pub fn events_delivered(requested: &[String]) -> Vec<String> {
        requested
            .iter()
            .filter(|e| EVENTS_SUPPORTED.contains(&e.as_str()))
            .cloned()
            .collect()
    }

    fn check_owner(owner: &Client) -> Result<(), SsfError> {
        if owner.kind == ClientKind::ResourceServer {
            Ok(())
        } else {
            Err(SsfError::NotAResourceServer)
        }
    }

    /// Creates a stream for `owner`; its `aud` is the audiences `owner` holds.
    pub async fn create(
        &self,
        owner: &Client,
        request: StreamRequest,
    ) -> Result<SsfStream, SsfError> {
        Self::check_owner(owner)?;
        let held = self.list(owner).await?.len();
        if held >= MAX_STREAMS_PER_OWNER {
            return Err(SsfError::Limit(format!(
                "a resource server holds at most {MAX_STREAMS_PER_OWNER} streams"
            )));
        }
        let aud: Vec<String> = owner
            .owned_audiences()
            .iter()
            .map(ToString::to_string)
            .collect();
        let stream = SsfStream {
            stream_id: format!("ssf_{}", random_hex(16)),
            owner: owner.id.clone(),
            aud: if aud.is_empty() {
                vec![owner.id.to_string()]
            } else {
                aud
            },
            events_requested: request.events_requested,
            delivery: request.delivery,
            status: StreamStatus::Enabled,
            reason: None,
            description: request.description,
            created_at: self.clock.now_secs(),
            removed_subjects: vec![],
        };
        self.streams.put(&stream).await.map_err(unavailable)?;
        self.record(owner, "ssf.stream.create", &stream.stream_id, "")
            .await;
        Ok(stream)
    }

    /// `owner`'s streams.
    pub async fn list(&self, owner: &Client) -> Result<Vec<SsfStream>, SsfError> {
        Self::check_owner(owner)?;
        Ok(self
            .streams
            .all()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|s| s.owner == owner.id)
            .collect())
    }

    /// Every stream, for operators.
    pub async fn all(&self) -> Result<Vec<(SsfStream, QueueDepth)>, SsfError> {
        let mut out = Vec::new();
        for stream in self.streams.all().await.map_err(unavailable)? {
            let depth = self
                .streams
                .depth(&stream.stream_id)
                .await
                .map_err(unavailable)?;
            out.push((stream, depth));
        }
        Ok(out)
    }

    /// `owner`'s stream `stream_id`.
    pub async fn get(&self, owner: &Client, stream_id: &str) -> Result<SsfStream, SsfError> {
        Self::check_owner(owner)?;
        self.streams
            .get(stream_id)
            .await
            .map_err(unavailable)?
            .filter(|s| s.owner == owner.id)
            .ok_or(SsfError::NotFound)
    }

    /// Changes what `owner`'s stream asks for and how it is delivered (PATCH and PUT).
    pub async fn update(
        &self,
        owner: &Client,
        stream_id: &str,
        change: impl FnOnce(&mut SsfStream),
    ) -> Result<SsfStream, SsfError> {
        let mut stream = self.get(owner, stream_id).await?;
        let (id, owner_id, aud, created_at, status, removed) = (
            stream.stream_id.clone(),
            stream.owner.clone(),
            stream.aud.clone(),
            stream.created_at,
            stream.status,
            stream.removed_subjects.clone(),
        );
        change(&mut stream);
        // What the transmitter sets is not the receiver's to change.
        stream.stream_id = id;
        stream.owner = owner_id;
        stream.aud = aud;
        stream.created_at = created_at;
        stream.status = status;
        stream.removed_subjects = removed;
        self.streams.put(&stream).await.map_err(unavailable)?;
        self.record(owner, "ssf.stream.update", stream_id, "").await;
        Ok(stream)
    }

    /// Deletes `owner`'s stream and its queue.
    pub async fn delete(&self, owner: &Client, stream_id: &str) -> Result<(), SsfError> {
        self.get(owner, stream_id).await?;
        self.streams.delete(stream_id).await.map_err(unavailable)?;
        self.record(owner, "ssf.stream.delete", stream_id, "").await;
        Ok(())
    }

    /// Sets the status of `owner`'s stream.
    pub async fn set_status(
        &self,
        owner: &Client,
        stream_id: &str,
        status: StreamStatus,
        reason: Option<String>,
    ) -> Result<SsfStream, SsfError> {
        let mut stream = self.get(owner, stream_id).await?;
        stream.status = status;
        stream.reason = reason;
        self.streams.put(&stream).await.map_err(unavailable)?;
        let detail = serde_json::to_value(status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.record(owner, "ssf.stream.status", stream_id, &detail)
            .await;
        Ok(stream)
    }

    /// Adds a user back to (`add`) or removes them from `owner`'s stream (SSF 1.0 §8.1.3). The
    /// subject is an `iss_sub` of mandate's issuer, `sub` as mandate's tokens name the user.
    pub async fn change_subject(
        &self,
        owner: &Client,
        stream_id: &str,
        subject: &Value,
        add: bool,
    ) -> Result<(), SsfError> {
        let sub = match (
            subject.get("format").and_then(Value::as_str),
            subject.get("iss").and_then(Value::as_str),
            subject.get("sub").and_then(Value::as_str),
        ) {
            (Some("iss_sub"), Some(iss), Some(sub)) if iss == self.settings.issuer => sub,
            _ => {
                return Err(SsfError::BadSubject(
                    "the subject must be an iss_sub of this issuer".into(),
                ))
            }
        };
        let sub =
            mandate_model::Subject::parse(sub).map_err(|e| SsfError::BadSubject(e.to_string()))?;
        let mut stream = self.get(owner, stream_id).await?;
        stream.removed_subjects.retain(|s| s != sub.as_str());
        if !add {
            if stream.removed_subjects.len() >= 1_000 {
                return Err(SsfError::Limit(
                    "at most 1000 subjects may be removed".into(),
                ));
            }
            stream.removed_subjects.push(sub.as_str().to_owned());
        }
        self.streams.put(&stream).await.map_err(unavailable)?;
        let action = if add {
            "ssf.subject.add"
        } else {
            "ssf.subject.remove"
        };
        self.record(owner, action, stream_id, sub.as_str()).await;
        Ok(())
    }

    /// Queues a verification event on `owner`'s stream (SSF 1.0 §8.1.4), echoing `state`.
    pub async fn verify(
        &self,
        owner: &Client,
        stream_id: &str,
        state: Option<String>,
    ) -> Result<(), SsfError> {
        let stream = self.get(owner, stream_id).await?;
        let mut event = Map::new();
        if let Some(state) = state {
            event.insert("state".into(), Value::String(state));
        }
        let sub_id = json!({"format": "opaque", "id": stream.stream_id});
        let set = self.sign(&stream, sub_id, VERIFICATION, Value::Object(event), None)?;
        self.streams
            .enqueue(&stream.stream_id, &[set], self.settings.queue_cap)
            .await
            .map_err(unavailable)?;
        self.queued.notify_one();
        Ok(())
    }

    /// Up to `max` SETs waiting on `owner`'s stream after acknowledging `acks` (RFC 8936 §2.4),
    /// and whether more are waiting.
    pub async fn poll(
        &self,
        owner: &Client,
        stream_id: &str,
        acks: &[String],
        max: u64,
    ) -> Result<(Vec<QueuedSet>, bool), SsfError> {
        let stream = self.get(owner, stream_id).await?;
        self.acknowledge(&stream.stream_id, acks).await?;
        if stream.status != StreamStatus::Enabled {
            return Ok((vec![], false));
        }
        let mut sets = self
            .streams
            .pending(&stream.stream_id, max + 1)
            .await
            .map_err(unavailable)?;
        let more = sets.len() as u64 > max;
        sets.truncate(usize::try_from(max).unwrap_or(usize::MAX));
        Ok((sets, more))
    }

    /// Removes acknowledged SETs from a stream's queue (push deliveries and polls).
    pub async fn acknowledge(&self, stream_id: &str, acks: &[String]) -> Result<u64, SsfError> {
        self.streams.ack(stream_id, acks).await.map_err(unavailable)
    }

    /// Up to `max` SETs waiting on stream `stream_id`, oldest first. A push deliverer reads them
    /// once it holds the stream's lease, so it never sends what another node delivered.
    pub async fn waiting(&self, stream_id: &str, max: u64) -> Result<Vec<QueuedSet>, SsfError> {
        self.streams
            .pending(stream_id, max)
            .await
            .map_err(unavailable)
    }

    /// The enabled push streams with SETs waiting (their queues are read under the lease, by
    /// [`SsfTransmitter::waiting`]).
    pub async fn push_work(&self) -> Result<Vec<SsfStream>, SsfError> {
        let mut work = Vec::new();
        for stream in self.streams.all().await.map_err(unavailable)? {
            if stream.status != StreamStatus::Enabled
                || !matches!(stream.delivery, Delivery::Push { .. })
            {
                continue;
            }
            let depth = self
                .streams
                .depth(&stream.stream_id)
                .await
                .map_err(unavailable)?;
            if depth.pending > 0 {
                work.push(stream);
            }
        }
        Ok(work)
    }

    /// The streams that are not disabled and are sent `event`.
    async fn streams_delivering(&self, event: &str) -> Result<Vec<SsfStream>, SsfError> {
        Ok(self
            .streams
            .all()
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|s| s.status != StreamStatus::Disabled && Self::delivers(s, event))
            .collect())
    }

    /// Whether `stream` is sent `event`: it asked for it, and mandate transmits it.
    pub fn delivers(stream: &SsfStream, event: &str) -> bool {
        Self::events_delivered(&stream.events_requested)
            .iter()
            .any(|e| e == event)
    }

    /// Queues the SETs a revocation raises, for every enabled or paused stream whose owner holds
    /// an audience of a revoked hop; returns how many were queued. Hops the ledger no longer
    /// holds, and hops already expired at T, raise nothing: no token of theirs can be used.
    ///
    /// T is the time of the revocation's first entry; the SETs of one revocation share a `txn`.
    pub async fn raise(
        &self,
        grain: Grain<'_>,
        outcome: &RevocationOutcome,
        reason: &str,
    ) -> Result<usize, SsfError> {
        let streams = self.streams_delivering(SESSION_REVOKED).await?;
        if streams.is_empty() {
            return Ok(0);
        }
        let at_ms = outcome.entries.first().map_or(0, |e| e.at);
        let txn = format!("txn_{}", random_hex(12));
        // Every grain's outcome names the hops it killed (a subject's or an agent's: the live
        // ones, found by the revocation itself).
        let mut hops = Vec::with_capacity(outcome.hops_revoked.len());
        for id in &outcome.hops_revoked {
            if let Some(hop) = self
                .ledger
                .hop(&HopId(id.clone()))
                .await
                .map_err(unavailable)?
            {
                if hop.expires_at * 1000 > at_ms {
                    hops.push(hop);
                }
            }
        }
        let mut queued = 0;
        for stream in &streams {
            let Some(owner) = self.owner(&stream.owner).await? else {
                continue;
            };
            let theirs: Vec<&HopRecord> = hops
                .iter()
                .filter(|h| owner.owns(&h.audience))
                .filter(|h| {
                    !stream
                        .removed_subjects
                        .iter()
                        .any(|s| s == h.subject.as_str())
                })
                .collect();
            if theirs.is_empty() {
                continue;
            }
            let event = json!({
                "event_timestamp": at_ms.div_euclid(1000),
                "initiating_entity": initiating_entity(outcome),
                "reason_admin": {"en": reason},
            });
            let whole = self.whole_subjects(grain, &theirs);
            let mut sets = Vec::with_capacity(theirs.len() + whole.len());
            for sub_id in whole {
                sets.push(self.sign(stream, sub_id, SESSION_REVOKED, event.clone(), Some(&txn))?);
            }
            for hop in theirs {
                let sub_id = json!({"format": "jwt_id", "iss": self.settings.issuer, "jti": hop.id.0.as_str()});
                sets.push(self.sign(stream, sub_id, SESSION_REVOKED, event.clone(), Some(&txn))?);
            }
            queued += sets.len();
            self.streams
                .enqueue(&stream.stream_id, &sets, self.settings.queue_cap)
                .await
                .map_err(unavailable)?;
        }
        if queued > 0 {
            self.queued.notify_one();
        }
        Ok(queued)
    }

    /// The subjects naming the whole revoked grain, beside the per-token ones: the chain (its id
    /// as an opaque session, and its user), each chain of a withdrawn consent the same way, the
    /// user (`iss_sub`), or the agent (an opaque application). A hop revocation has none.
    fn whole_subjects(&self, grain: Grain<'_>, theirs: &[&HopRecord]) -> Vec<Value> {
        let issuer = &self.settings.issuer;
        let chain = |id: &str, hop: &HopRecord| {
            json!({
                "format": "complex",
                "session": {"format": "opaque", "id": id},
                "user": {"format": "iss_sub", "iss": issuer, "sub": hop.subject.as_str()},
            })
        };
        match grain {
            Grain::Hop => Vec::new(),
            Grain::Chain(id) => theirs
                .first()
                .map(|hop| chain(id, hop))
                .into_iter()
                .collect(),
            Grain::Consent => {
                let mut seen: Vec<&str> = Vec::new();
                let mut subjects = Vec::new();
                for hop in theirs {
                    if !seen.contains(&hop.chain_id.0.as_str()) {
                        seen.push(hop.chain_id.0.as_str());
                        subjects.push(chain(&hop.chain_id.0, hop));
                    }
                }
                subjects
            }
            Grain::Subject(subject) => {
                vec![json!({"format": "iss_sub", "iss": issuer, "sub": subject})]
            }
            Grain::Agent(agent) => vec![json!({
                "format": "complex",
                "application": {"format": "opaque", "id": agent},
            })],
        }
    }

    /// Queues a CAEP `credential-change` describing `change` for every stream asking for it whose
    /// owner holds an audience of one of the agent's live tokens, naming the agent as a `complex`
    /// application subject; returns how many were queued.
    pub async fn credential_changed(
        &self,
        agent: &str,
        change: CredentialChange,
        at_ms: i64,
    ) -> Result<usize, SsfError> {
        let streams = self.streams_delivering(CREDENTIAL_CHANGE).await?;
        if streams.is_empty() {
            return Ok(0);
        }
        let hops = crate::live::live_hops(
            self.ledger.as_ref(),
            self.settings.live_window_secs,
            at_ms,
            crate::live::acts_in(agent),
        )
        .await
        .map_err(SsfError::Unavailable)?;
        let event = json!({
            "credential_type": change.credential_type(),
            "change_type": change.change_type(),
            "event_timestamp": at_ms.div_euclid(1000),
            "initiating_entity": "admin",
        });
        let sub_id = json!({"format": "complex", "application": {"format": "opaque", "id": agent}});
        let mut queued = 0;
        for stream in &streams {
            let Some(owner) = self.owner(&stream.owner).await? else {
                continue;
            };
            if !hops.iter().any(|hop| owner.owns(&hop.audience)) {
                continue;
            }
            let set = self.sign(
                stream,
                sub_id.clone(),
                CREDENTIAL_CHANGE,
                event.clone(),
                None,
            )?;
            self.streams
                .enqueue(&stream.stream_id, &[set], self.settings.queue_cap)
                .await
                .map_err(unavailable)?;
            queued += 1;
        }
        if queued > 0 {
            self.queued.notify_one();
        }
        Ok(queued)
    }

    async fn owner(&self, id: &ClientId) -> Result<Option<Arc<Client>>, SsfError> {
        self.clients.client(id).await.map_err(unavailable)
    }

    /// Signs one SET for `stream`: `typ: secevent+jwt`, a fresh `jti`, `iat` now, `aud` the
    /// receiver, the subject in `sub_id` and no `sub` or `exp` (the SSF profile).
    fn sign(
        &self,
        stream: &SsfStream,
        sub_id: Value,
        event_type: &str,
        event: Value,
        txn: Option<&str>,
    ) -> Result<QueuedSet, SsfError> {
        let jti = format!("set_{}", random_hex(16));
        let aud = match stream.aud.as_slice() {
            [one] => Value::String(one.clone()),
            many => json!(many),
        };
        let mut claims = json!({
            "iss": self.settings.issuer,
            "jti": jti,
            "iat": self.clock.now_secs(),
            "aud": aud,
            "sub_id": sub_id,
            "events": {event_type: event},
        });
        if let (Some(txn), Some(object)) = (txn, claims.as_object_mut()) {
            object.insert("txn".into(), Value::String(txn.to_owned()));
        }
        let set = self
            .keys
            .current()
            .active()
            .sign(SET_TYP, &claims)
            .map_err(|e| SsfError::Internal(e.to_string()))?;
        Ok(QueuedSet { jti, set })
    }

    async fn record(&self, owner: &Client, action: &str, target: &str, detail: &str) {
        let at = self.clock.now().timestamp_millis();
        self.audit
            .record(AuditEvent::new(
                at,
                format!("client:{}", owner.id),
                action,
                target,
                detail,
            ))
            .await;
    }
}

/// Who asked for a revocation, in CAEP's words: the token's own client (RFC 7009, for its user)
/// is `user`, an identity provider's signal or mandate's own lifecycle policy is `system`, an
/// administrator is `admin`.
fn initiating_entity(outcome: &RevocationOutcome) -> &'static str {
    let by = outcome
        .entries
        .first()
        .map_or("", |entry| entry.by.as_str());
    if by.starts_with("client:") {
        "user"
    } else if by.starts_with("ssf:") || by.starts_with("system:") {
        "system"
    } else {
        "admin"
    }
}

/// What happened to an agent's credential, as CAEP `credential-change` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialChange {
    /// The client secret was replaced (`password`, `update`).
    SecretRotated,
    /// The registered public keys changed (`app`: CAEP has no type for a client's signing keys,
    /// and `app` is the credential of an application); `create` when keys were only added,
    /// `revoke` when keys were only removed, `update` when some were replaced.
    Keys(KeyChange),
}

/// How a set of registered keys changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Keys were added and none removed.
    Added,
    /// Keys were removed and none added.
    Removed,
    /// Some were removed and others added.
    Replaced,
}

impl CredentialChange {
    fn credential_type(self) -> &'static str {
        match self {
            Self::SecretRotated => "password",
            Self::Keys(_) => "app",
        }
    }

    fn change_type(self) -> &'static str {
        match self {
            Self::SecretRotated | Self::Keys(KeyChange::Replaced) => "update",
            Self::Keys(KeyChange::Added) => "create",
            Self::Keys(KeyChange::Removed) => "revoke",
        }
    }
}

/// How the keys of a JWK Set changed from `before` to `after`, or `None` when the same keys are
/// registered (reordering or resending them is no change). Keys are compared whole, so a key
/// whose material changed under the same `kid` counts as removed and added.
pub fn key_change(before: Option<&Value>, after: Option<&Value>) -> Option<KeyChange> {
    fn keys(jwks: Option<&Value>) -> &[Value] {
        jwks.and_then(|jwks| jwks["keys"].as_array())
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
    let (before, after) = (keys(before), keys(after));
    let added = after.iter().any(|key| !before.contains(key));
    let removed = before.iter().any(|key| !after.contains(key));
    match (added, removed) {
        (false, false) => None,
        (true, false) => Some(KeyChange::Added),
        (false, true) => Some(KeyChange::Removed),
        (true, true) => Some(KeyChange::Replaced),
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwks(kids: &[&str]) -> Value {
        json!({"keys": kids.iter().map(|kid| json!({"kty": "OKP", "crv": "Ed25519", "x": kid, "kid": kid})).collect::<Vec<_>>()})
    }

    #[test]
    fn the_same_keys_in_another_order_are_no_change() {
        let (a, b) = (jwks(&["a", "b"]), jwks(&["b", "a"]));
        assert_eq!(key_change(Some(&a), Some(&b)), None);
        assert_eq!(key_change(None, None), None);
    }

    #[test]
    fn added_removed_and_replaced_keys_are_told_apart() {
        let (a, ab, b) = (jwks(&["a"]), jwks(&["a", "b"]), jwks(&["b"]));
        assert_eq!(key_change(Some(&a), Some(&ab)), Some(KeyChange::Added));
        assert_eq!(key_change(None, Some(&a)), Some(KeyChange::Added));
        assert_eq!(key_change(Some(&ab), Some(&b)), Some(KeyChange::Removed));
        assert_eq!(key_change(Some(&a), Some(&b)), Some(KeyChange::Replaced));
    }

    #[test]
    fn new_material_under_the_same_kid_is_a_replacement() {
        let before = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "old", "kid": "k"}]});
        let after = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "new", "kid": "k"}]});
        assert_eq!(
            key_change(Some(&before), Some(&after)),
            Some(KeyChange::Replaced)
        );
    }

    #[test]
    fn caep_names_each_change() {
        let names = |c: CredentialChange| (c.credential_type(), c.change_type());
        assert_eq!(
            names(CredentialChange::SecretRotated),
            ("password", "update")
        );
        assert_eq!(
            names(CredentialChange::Keys(KeyChange::Added)),
            ("app", "create")
        );
        assert_eq!(
            names(CredentialChange::Keys(KeyChange::Removed)),
            ("app", "revoke")
        );
        assert_eq!(
            names(CredentialChange::Keys(KeyChange::Replaced)),
            ("app", "update")
        );
    }
}
