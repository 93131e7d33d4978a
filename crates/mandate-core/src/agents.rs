//! The agent registry as administrators change it (docs/ADMIN-API.md, "Agents and resource
//! servers"): registering agents and resource servers, changing what may change, the lifecycle
//! state machine, and secret rotation with an overlap window. Each change is audited here.
//!
//! Every change is a compare-and-set on the stored revision ([`ClientRegistry::replace`]),
//! retried on a fresh read a few times, so that two admins changing one client never lose a
//! change unseen; the rule deciding the change (a transition, a validation) is applied again to
//! each fresh read.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use mandate_model::{
    Audience, AuthMethod, ClientId, ClientKind, ClientState, Clock, InvalidTransition, SecretHash,
    Transition,
};
use mandate_store::{
    AuditEvent, AuditLog, Client, ClientRegistry, PreviousSecret, ReplaceOutcome, StoreError,
    StoredClient, UpstreamId,
};
use mandate_token::{Algorithm, VerifyingKeySet};
use rand::RngCore;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use zeroize::Zeroizing;

use crate::revocation::{
    RevocationOutcome, RevocationPreview, RevocationService, RevokeError, Target,
};

/// `created_by` of clients seeded from the configuration file.
pub const CREATED_BY_CONFIG: &str = "config";
/// How long a rotated-out secret keeps working when the request does not say.
pub const DEFAULT_OVERLAP_SECS: u64 = 3600;
/// The longest overlap window: a week.
pub const MAX_OVERLAP_SECS: u64 = 604_800;
/// How many times a change is tried on a fresh read when another admin's change got in first.
const ATTEMPTS: usize = 5;
/// Bounds on what an admin may write, so that the registry cannot be used as a dump.
const MAX_OWNERS: usize = 32;
const MAX_OWNER_CHARS: usize = 256;
const MAX_DESCRIPTION_CHARS: usize = 1000;
const MAX_UPSTREAM_IDS: usize = 32;
const MAX_AUDIENCES: usize = 64;

/// Why an admin's change to the registry was refused.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The request breaks a rule; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No client has that id.
    #[error("no client '{0}'")]
    NotFound(ClientId),
    /// A client with that id exists.
    #[error("a client '{0}' exists already")]
    Exists(ClientId),
    /// The state machine does not allow this; nothing changed.
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// Others kept changing the client while this change was tried; nothing changed.
    #[error("client '{0}' kept changing concurrently; read it again and retry")]
    Contended(ClientId),
    /// The store could not be reached (or answered with unreadable data).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl From<StoreError> for AgentError {
    fn from(error: StoreError) -> Self {
        AgentError::Unavailable(error.to_string())
    }
}

impl From<RevokeError> for AgentError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::Invalid(message) => AgentError::Invalid(message),
            RevokeError::NotFound(what) | RevokeError::Unavailable(what) => {
                AgentError::Unavailable(what)
            }
        }
    }
}

/// `POST /admin/agents`. Unknown fields are refused; `client_secret` and anything else the
/// server decides are not accepted. A `secret_hash` may be given for the secret methods (the
/// configuration file's form, from `mandate secrets generate`): the server then makes no
/// secret and answers none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// DESIGN.md section 3 syntax.
    pub client_id: String,
    /// `agent` or `resource_server`.
    pub kind: ClientKind,
    /// At least one.
    pub owners: Vec<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// The one authentication method.
    pub auth_method: AuthMethod,
    /// `staged` (default) or `active`.
    #[serde(default)]
    pub state: Option<ClientState>,
    /// No authentication after this instant.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// For `private_key_jwt` only: public keys.
    #[serde(default)]
    pub jwks: Option<Value>,
    /// For agents only.
    #[serde(default)]
    pub upstream_ids: Vec<UpstreamId>,
    /// For resource servers only: the app URIs it owns.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// `required`: its tokens must be DPoP-bound (default `allowed`).
    #[serde(default)]
    pub dpop: mandate_model::DpopPolicy,
    /// For the secret methods: the hash of a secret the caller made, instead of a generated
    /// secret.
    #[serde(default)]
    pub secret_hash: Option<SecretHash>,
}

/// `PATCH /admin/agents/{id}`: the fields that may change. Absent leaves a field as it is;
/// `null` clears `expires_at` and is refused for the others (none of them can be cleared).
/// The id, kind, method and state never change here (transitions have their own endpoints);
/// the secret changes by rotation, or here by its hash (`secret_hash`, the configuration
/// file's form: the previous secret stops at once).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    /// New owners (at least one).
    #[serde(default, deserialize_with = "present")]
    pub owners: Option<Option<Vec<String>>>,
    /// New description.
    #[serde(default, deserialize_with = "present")]
    pub description: Option<Option<String>>,
    /// New keys (private_key_jwt only).
    #[serde(default, deserialize_with = "present")]
    pub jwks: Option<Option<Value>>,
    /// New upstream identities (agents only).
    #[serde(default, deserialize_with = "present")]
    pub upstream_ids: Option<Option<Vec<UpstreamId>>>,
    /// New audiences (resource servers only).
    #[serde(default, deserialize_with = "present")]
    pub audiences: Option<Option<Vec<String>>>,
    /// New expiry; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// New DPoP policy.
    #[serde(default, deserialize_with = "present")]
    pub dpop: Option<Option<mandate_model::DpopPolicy>>,
    /// The hash of a new secret (secret methods only).
    #[serde(default, deserialize_with = "present")]
    pub secret_hash: Option<Option<SecretHash>>,
}

/// A change to a client: the client as it is (or, for a dry run, would be) and the fields
/// that differ from what was stored (none: nothing was written).
#[derive(Debug)]
pub struct Updated {
    /// The client after the change.
    pub client: Arc<Client>,
    /// The fields whose values changed.
    pub changed: Vec<&'static str>,
}

/// Tells a field sent as `null` (`Some(None)`) from an absent one (`None`, by `default`).
fn present<'de, T, D>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A registered client and, for the secret methods, its secret, which is shown this once.
pub struct Created {
    /// The client as stored.
    pub client: Arc<Client>,
    /// The generated secret.
    pub secret: Option<Zeroizing<String>>,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Created({})", self.client.id)
    }
}

/// A rotated secret.
pub struct Rotated {
    /// The new secret, shown this once.
    pub secret: Zeroizing<String>,
    /// Until when the old secret still authenticates (`None`: it stopped at once).
    pub previous_valid_until: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Rotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "Rotated(until {:?})", self.previous_valid_until)
    }
}

/// A high-entropy client secret: 256 random bits, base64url (43 characters).
pub fn generate_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(bytes.as_mut());
    Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
}

fn invalid(message: impl Into<String>) -> AgentError {
    AgentError::Invalid(message.into())
}

fn non_null<T>(field: &str, value: Option<T>) -> Result<T, AgentError> {
    value.ok_or_else(|| invalid(format!("{field} cannot be null")))
}

/// At least one owner, each a short printable name, none twice.
pub fn check_owners(owners: &[String]) -> Result<Vec<String>, AgentError> {
    if owners.is_empty() {
        return Err(invalid("owners needs at least one entry"));
    }
    if owners.len() > MAX_OWNERS {
        return Err(invalid(format!("at most {MAX_OWNERS} owners")));
    }
    let mut checked: Vec<String> = Vec::with_capacity(owners.len());
    for (i, owner) in owners.iter().enumerate() {
        let owner = owner.trim();
        if owner.is_empty() {
            return Err(invalid(format!("owners[{i}] is empty")));
        }
        if owner.chars().count() > MAX_OWNER_CHARS || owner.chars().any(char::is_control) {
            return Err(invalid(format!(
                "owners[{i}] must be at most {MAX_OWNER_CHARS} printable characters"
            )));
        }
        if checked.iter().any(|o| o == owner) {
            return Err(invalid(format!("owners[{i}] is listed twice")));
        }
        checked.push(owner.to_owned());
    }
    Ok(checked)
}

/// A description of at most 1000 characters.
pub fn check_description(description: &str) -> Result<String, AgentError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(invalid(format!(
            "description is longer than {MAX_DESCRIPTION_CHARS} characters"
        )));
    }
    Ok(description.to_owned())
}

/// Keys for `private_key_jwt` only: a JWKS of public keys (several, for key rotation), each of
/// a type mandate verifies.
pub fn check_jwks(
    method: AuthMethod,
    jwks: Option<Value>,
) -> Result<(Option<Value>, Option<VerifyingKeySet>), AgentError> {
    match (method, jwks) {
        (AuthMethod::PrivateKeyJwt, Some(document)) => {
            let keys = VerifyingKeySet::from_jwks(&document, &Algorithm::ALL)
                .map_err(|e| invalid(format!("jwks: {e}")))?;
            Ok((Some(document), Some(keys)))
        }
        (AuthMethod::PrivateKeyJwt, None) => Err(invalid("jwks is required for private_key_jwt")),
        (_, Some(_)) => Err(invalid("jwks is only for auth_method private_key_jwt")),
        (_, None) => Ok((None, None)),
    }
}

/// Audiences for resource servers only, at least one, each an app URI (DESIGN.md section 3).
pub fn check_audiences(
    kind: ClientKind,
    audiences: &[String],
) -> Result<Vec<Audience>, AgentError> {
    check_audience_count(kind, audiences.len())?;
    let mut parsed: Vec<Audience> = Vec::with_capacity(audiences.len());
    for (i, audience) in audiences.iter().enumerate() {
        let audience =
            Audience::parse(audience).map_err(|e| invalid(format!("audiences[{i}]: {e}")))?;
        check_owned_audience(i, &audience, &parsed)?;
        parsed.push(audience);
    }
    Ok(parsed)
}

/// [`check_audiences`] for audiences already parsed (the configuration file's): the same rules.
pub fn check_owned_audiences(kind: ClientKind, audiences: &[Audience]) -> Result<(), AgentError> {
    check_audience_count(kind, audiences.len())?;
    for (i, audience) in audiences.iter().enumerate() {
        check_owned_audience(i, audience, &audiences[..i])?;
    }
    Ok(())
}

fn check_audience_count(kind: ClientKind, count: usize) -> Result<(), AgentError> {
    match kind {
        ClientKind::Agent if count > 0 => Err(invalid("audiences are only for resource servers")),
        ClientKind::Agent => Ok(()),
        ClientKind::ResourceServer if count == 0 => {
            Err(invalid("a resource server owns at least one audience"))
        }
        ClientKind::ResourceServer if count > MAX_AUDIENCES => {
            Err(invalid(format!("at most {MAX_AUDIENCES} audiences")))
        }
        ClientKind::ResourceServer => Ok(()),
    }
}

/// The `i`th audience of a resource server, after those `before` it.
fn check_owned_audience(
    i: usize,
    audience: &Audience,
    before: &[Audience],
) -> Result<(), AgentError> {
    if audience.agent().is_some() {
        return Err(invalid(format!(
            "audiences[{i}]: a resource server owns app URIs, not agent: audiences"
        )));
    }
    if before.contains(audience) {
        return Err(invalid(format!("audiences[{i}] is listed twice")));
    }
    Ok(())
}

/// Upstream identities for agents only, each naming a trusted issuer.
pub fn check_upstream_ids(
    kind: ClientKind,
    upstream_ids: &[UpstreamId],
    trusted_issuers: &[&str],
) -> Result<Vec<UpstreamId>, AgentError> {
    if kind == ClientKind::ResourceServer && !upstream_ids.is_empty() {
        return Err(invalid("only agents have upstream identities"));
    }
    if upstream_ids.len() > MAX_UPSTREAM_IDS {
        return Err(invalid(format!("at most {MAX_UPSTREAM_IDS} upstream_ids")));
    }
    for (i, upstream) in upstream_ids.iter().enumerate() {
        if !trusted_issuers.contains(&upstream.issuer.as_str()) {
            return Err(invalid(format!(
                "upstream_ids[{i}].issuer is not a trusted issuer"
            )));
        }
        let id = &upstream.client_id;
        if id.is_empty() || id.len() > 256 || id.chars().any(char::is_control) {
            return Err(invalid(format!(
                "upstream_ids[{i}].client_id must be 1 to 256 printable characters"
            )));
        }
    }
    Ok(upstream_ids.to_vec())
}

/// An expiry, when given, lies ahead: an already expired client could never authenticate.
pub fn check_expiry(
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, AgentError> {
    match expires_at {
        Some(at) if at <= now => Err(invalid(
            "expires_at is not in the future (to stop a client, suspend or retire it)",
        )),
        other => Ok(other),
    }
}

/// The overlap window of a rotation: 3600 s unless given, at most a week, 0 ends the old
/// secret at once.
pub fn check_overlap(overlap_secs: Option<u64>) -> Result<u64, AgentError> {
    let overlap = overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS);
    if overlap > MAX_OVERLAP_SECS {
        return Err(invalid(format!(
            "overlap_secs is at most {MAX_OVERLAP_SECS} (a week)"
        )));
    }
    Ok(overlap)
}

/// The client a registration describes, before its secret is made. Pure: the caller supplies
/// the trusted issuers and the time.
pub fn client_from_request(
    request: NewAgent,
    trusted_issuers: &[&str],
    now: DateTime<Utc>,
    by: &str,
) -> Result<Client, AgentError> {
    let id = ClientId::parse(&request.client_id).map_err(|e| invalid(e.to_string()))?;
    let state = match request.state.unwrap_or(ClientState::Staged) {
        state @ (ClientState::Staged | ClientState::Active) => state,
        other => {
            return Err(invalid(format!(
                "a new client is staged or active, not {other}"
            )))
        }
    };
    let owners = check_owners(&request.owners)?;
    let description = check_description(&request.description)?;
    let (jwks, keys) = check_jwks(request.auth_method, request.jwks)?;
    let audiences = check_audiences(request.kind, &request.audiences)?;
    let upstream_ids = check_upstream_ids(request.kind, &request.upstream_ids, trusted_issuers)?;
    let expires_at = check_expiry(request.expires_at, now)?;
    Ok(Client {
        dpop: request.dpop,
        id,
        kind: request.kind,
        owners,
        description,
        state,
        expires_at,
        auth_method: request.auth_method,
        secret_hash: None,
        keys,
        jwks,
        upstream_ids,
        audiences,
        previous_secret: None,
        secret_rotated_at: None,
        created_at: Some(now),
        created_by: Some(by.to_owned()),
        updated_at: Some(now),
        updated_by: Some(by.to_owned()),
        revision: 0,
    })
}

/// `current` with `patch` applied, every changed field checked as at registration. Pure.
pub fn apply_patch(
    current: &StoredClient,
    patch: &AgentPatch,
    trusted_issuers: &[&str],
    now: DateTime<Utc>,
) -> Result<StoredClient, AgentError> {
    let AgentPatch {
        owners,
        description,
        jwks,
        upstream_ids,
        audiences,
        expires_at,
        dpop,
        secret_hash,
    } = patch;
    if owners.is_none()
        && description.is_none()
        && jwks.is_none()
        && upstream_ids.is_none()
        && audiences.is_none()
        && expires_at.is_none()
        && dpop.is_none()
        && secret_hash.is_none()
    {
        return Err(invalid(
            "the body changes nothing: give at least one of owners, description, jwks, \
             upstream_ids, audiences, expires_at, dpop, secret_hash",
        ));
    }
    let mut next = current.clone();
    if let Some(dpop) = dpop {
        next.dpop = non_null("dpop", *dpop)?;
    }
    if let Some(owners) = owners {
        next.owners = check_owners(non_null("owners", owners.as_ref())?)?;
    }
    if let Some(description) = description {
        next.description = check_description(non_null("description", description.as_ref())?)?;
    }
    if let Some(jwks) = jwks {
        let document = non_null("jwks", jwks.clone())?;
        next.jwks = check_jwks(current.auth_method, Some(document))?.0;
    }
    if let Some(upstream_ids) = upstream_ids {
        let upstream_ids = non_null("upstream_ids", upstream_ids.as_ref())?;
        next.upstream_ids = check_upstream_ids(current.kind, upstream_ids, trusted_issuers)?;
    }
    if let Some(audiences) = audiences {
        next.audiences = check_audiences(current.kind, non_null("audiences", audiences.as_ref())?)?;
    }
    if let Some(expires_at) = expires_at {
        next.expires_at = check_expiry(*expires_at, now)?;
    }
    if let Some(secret_hash) = secret_hash {
        let hash = non_null("secret_hash", secret_hash.clone())?;
        if current.auth_method == AuthMethod::PrivateKeyJwt {
            return Err(invalid(
                "secret_hash is for the secret methods; this client uses private_key_jwt",
            ));
        }
        if current.secret_hash.as_ref() != Some(&hash) {
            next.secret_hash = Some(hash);
            next.previous_secret = None;
            next.secret_rotated_at = Some(now);
        }
    }
    Ok(next)
}

/// The fields a PATCH may change whose values differ between `before` and `after`. Pure.
pub fn changed_fields(before: &StoredClient, after: &StoredClient) -> Vec<&'static str> {
    [
        ("owners", before.owners != after.owners),
        ("description", before.description != after.description),
        ("jwks", before.jwks != after.jwks),
        ("upstream_ids", before.upstream_ids != after.upstream_ids),
        ("audiences", before.audiences != after.audiences),
        ("expires_at", before.expires_at != after.expires_at),
        ("dpop", before.dpop != after.dpop),
        ("secret_hash", before.secret_hash != after.secret_hash),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// Whether a transition revokes the agent's live tokens: suspension and retirement do
/// (DESIGN.md section 6), activation does not.
fn revokes(transition: Transition) -> bool {
    matches!(transition, Transition::Suspend | Transition::Retire)
}

/// What a lifecycle transition would do, answered by its dry run.
#[derive(Debug, Clone)]
pub struct TransitionPreview {
    /// The client as the transition would leave it.
    pub client: Arc<Client>,
    /// For suspension and retirement, what their revocation would write and kill.
    pub revocation: Option<RevocationPreview>,
}

/// Who suspends unused agents, in the audit stream and the revocation entries.
pub const LIFECYCLE: &str = "system:lifecycle";

/// The active agents unused for `after` or longer at `now`: their last authentication or
/// exchange, or, never used, their registration, is that old. An agent never used whose
/// registration time is unknown (records older than that field) is not judged.
pub fn unused_agents(
    clients: &[Arc<Client>],
    last_use: &std::collections::HashMap<String, mandate_store::LastUse>,
    now: DateTime<Utc>,
    after: Duration,
) -> Vec<ClientId> {
    let cutoff = (now - after).timestamp_millis();
    clients
        .iter()
        .filter(|c| c.kind == ClientKind::Agent && c.state == ClientState::Active)
        .filter(|c| {
            let used = last_use.get(c.id.as_str()).and_then(|u| {
                match (u.authenticated_at_ms, u.exchange_at_ms) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                }
            });
            let since = used.or_else(|| c.created_at.map(|at| at.timestamp_millis()));
            since.is_some_and(|since| since <= cutoff)
        })
        .map(|c| c.id.clone())
        .collect()
}

/// The agent registry and lifecycle: registration, changes, secret rotation and state
/// transitions, each retried over concurrent changes and each audited (`agent.create`,
/// `agent.update`, `agent.secret.rotate`, `agent.<transition>`).
#[derive(Debug, Clone)]
pub struct AgentService {
    clients: Arc<dyn ClientRegistry>,
    revocation: RevocationService,
    audit: Arc<dyn AuditLog>,
    clock: Arc<dyn Clock>,
    trusted_issuers: Arc<Vec<String>>,
}

impl AgentService {
    /// A service over the registry; `trusted_issuers` are the issuers upstream ids may name.
    pub fn new(
        clients: Arc<dyn ClientRegistry>,
        revocation: RevocationService,
        audit: Arc<dyn AuditLog>,
        clock: Arc<dyn Clock>,
        trusted_issuers: Vec<String>,
    ) -> Self {
        Self {
            clients,
            revocation,
            audit,
            clock,
            trusted_issuers: Arc::new(trusted_issuers),
        }
    }

    fn trusted_issuers(&self) -> Vec<&str> {
        self.trusted_issuers.iter().map(String::as_str).collect()
    }

    async fn record(&self, at: i64, by: &str, action: &str, target: &ClientId, detail: String) {
        self.audit
            .record(AuditEvent::new(at, by, action, target.to_string(), detail))
            .await;
    }

    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    /// The registered clients, ordered by id, optionally of one kind and/or in one state.
    pub async fn list(
        &self,
        kind: Option<ClientKind>,
        client_state: Option<ClientState>,
    ) -> Result<Vec<Arc<Client>>, AgentError> {
        Ok(self
            .clients
            .clients()
            .await?
            .into_iter()
            .filter(|c| kind.is_none_or(|k| c.kind == k))
            .filter(|c| client_state.is_none_or(|s| c.state == s))
            .collect())
    }

    /// The client with this id.
    pub async fn show(&self, id: &ClientId) -> Result<Arc<Client>, AgentError> {
        self.clients
            .client(id)
            .await?
            .ok_or_else(|| AgentError::NotFound(id.clone()))
    }

    /// Registers a client; for the secret methods, generates its secret and stores only its
    /// hash.
    pub async fn create(&self, request: NewAgent, by: &str) -> Result<Created, AgentError> {
        let given_hash = request.secret_hash.clone();
        let mut client =
            client_from_request(request, &self.trusted_issuers(), self.clock.now(), by)?;
        let secret = match (client.auth_method, given_hash) {
            (AuthMethod::PrivateKeyJwt, None) => None,
            (AuthMethod::PrivateKeyJwt, Some(_)) => {
                return Err(invalid(
                    "secret_hash is for the secret methods, not private_key_jwt",
                ))
            }
            (AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost, Some(hash)) => {
                client.secret_hash = Some(hash);
                None
            }
            (AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost, None) => {
                let secret = generate_secret();
                client.secret_hash = Some(SecretHash::of(&secret));
                Some(secret)
            }
        };
        let answer = Client::from_stored(client.to_stored())?;
        let id = client.id.clone();
        if !self.clients.insert_if_absent(client).await? {
            return Err(AgentError::Exists(id));
        }
        let detail = format!(
            "{} {}, {}, {}",
            answer.state, answer.kind, answer.auth_method, answer.description
        );
        self.record(self.now_ms(), by, "agent.create", &id, detail)
            .await;
        Ok(Created {
            client: Arc::new(answer),
            secret,
        })
    }

    /// Applies `change` to the stored client and writes it over the revision it was read at; on
    /// a concurrent change, reads again and applies `change` to that.
    async fn change(
        &self,
        id: &ClientId,
        by: &str,
        change: impl Fn(&StoredClient, DateTime<Utc>) -> Result<StoredClient, AgentError>,
    ) -> Result<Arc<Client>, AgentError> {
        for _ in 0..ATTEMPTS {
            let current = self.show(id).await?;
            let now = self.clock.now();
            let mut next = change(&current.to_stored(), now)?;
            next.revision = current.revision;
            next.updated_at = Some(now);
            next.updated_by = Some(by.to_owned());
            let mut answer = Client::from_stored(next.clone())?;
            match self.clients.replace(Client::from_stored(next)?).await? {
                ReplaceOutcome::Replaced { revision } => {
                    answer.revision = revision;
                    return Ok(Arc::new(answer));
                }
                ReplaceOutcome::Stale => continue,
                ReplaceOutcome::Missing => return Err(AgentError::NotFound(id.clone())),
            }
        }
        Err(AgentError::Contended(id.clone()))
    }

    /// Changes the fields `patch` names. Values equal to the stored ones change nothing: when
    /// no field differs, nothing is written or audited. A dry run answers what the change would
    /// be and writes nothing.
    pub async fn update(
        &self,
        id: &ClientId,
        patch: &AgentPatch,
        by: &str,
        dry_run: bool,
    ) -> Result<Updated, AgentError> {
        let trusted = self.trusted_issuers();
        let current = self.show(id).await?;
        let stored = current.to_stored();
        let planned = apply_patch(&stored, patch, &trusted, self.clock.now())?;
        let changed = changed_fields(&stored, &planned);
        if dry_run || changed.is_empty() {
            let client = if changed.is_empty() {
                current
            } else {
                Arc::new(Client::from_stored(planned)?)
            };
            return Ok(Updated { client, changed });
        }
        let client = self
            .change(id, by, |current, now| {
                apply_patch(current, patch, &trusted, now)
            })
            .await?;
        let detail = format!("changed {}", changed.join(", "));
        self.record(self.now_ms(), by, "agent.update", id, detail)
            .await;
        Ok(Updated { client, changed })
    }

    /// Moves the client through the state machine. Suspension and retirement write the
    /// `agent:<id> @ T` revocation entry first (DESIGN.md section 6): every live token in which
    /// the agent is the client, any actor or a hand-off's recipient dies even if the state change
    /// then fails. They write it again after the state change, so that it also covers tokens
    /// minted while the change was landing. A transition the state machine refuses writes
    /// nothing, not even the revocation.
    pub async fn transition(
        &self,
        id: &ClientId,
        transition: Transition,
        reason: &str,
        by: &str,
    ) -> Result<(Arc<Client>, Option<RevocationOutcome>), AgentError> {
        let current = self.show(id).await?;
        current.state.transition(transition)?;
        let action = format!("agent.{transition}");
        let revocation = if revokes(transition) {
            Some(
                self.revocation
                    .revoke_agent(id.as_str(), reason, by)
                    .await?,
            )
        } else {
            None
        };
        let changed = self
            .change(id, by, |current, _| {
                let mut next = current.clone();
                next.state = current.state.transition(transition)?;
                Ok(next)
            })
            .await;
        match changed {
            Ok(client) => {
                // Once more, now that the state has changed: a token minted by an exchange that
                // read the old state but the clock after the first T is covered by this one (the
                // exchange re-reads the client after recording its hop, so nothing later gets
                // through). T only grows; the answer carries the later entry.
                let revocation = match revocation {
                    Some(_) => Some(
                        self.revocation
                            .revoke_agent(id.as_str(), reason, by)
                            .await?,
                    ),
                    None => None,
                };
                let revoked = revocation
                    .as_ref()
                    .and_then(|r| r.entries.first())
                    .map(|entry| format!("; agent:{} revoked at {} ms", entry.id, entry.at))
                    .unwrap_or_default();
                let detail = format!("now {}{revoked}: {reason}", client.state);
                self.record(self.now_ms(), by, &action, id, detail).await;
                Ok((client, revocation))
            }
            Err(error) => {
                // The revocation is a change of its own: the audit stream keeps it even though
                // the state change failed (the request can be repeated).
                if let Some(entry) = revocation.as_ref().and_then(|r| r.entries.first()) {
                    let detail = format!(
                        "agent:{id} revoked at {} ms; the state change failed: {error}",
                        entry.at
                    );
                    self.record(entry.at, by, &action, id, detail).await;
                }
                Err(error)
            }
        }
    }

    /// What [`AgentService::transition`] would do, with nothing written and nothing audited: the
    /// client as it would then be, and for a transition that revokes, what its revocation would
    /// write and kill ([`RevocationService::preview`]). A transition the state machine refuses
    /// is refused here as there.
    pub async fn preview_transition(
        &self,
        id: &ClientId,
        transition: Transition,
        reason: &str,
        by: &str,
    ) -> Result<TransitionPreview, AgentError> {
        let current = self.show(id).await?;
        let mut next = current.to_stored();
        next.state = current.state.transition(transition)?;
        let revocation = if revokes(transition) {
            let target = Target::Agent(id.to_string());
            Some(self.revocation.preview(&target, reason, by).await?)
        } else {
            None
        };
        Ok(TransitionPreview {
            client: Arc::new(Client::from_stored(next)?),
            revocation,
        })
    }

    /// Suspends every active agent unused for `after` or longer (the lifecycle policy, docs/
    /// GOVERNANCE.md): each suspension is a [`Transition::Suspend`] by `system:lifecycle`, with
    /// its revocation and audit event. An agent that changed meanwhile, or that another node
    /// suspended first, is skipped. What was suspended, with what each suspension revoked.
    pub async fn suspend_unused(
        &self,
        usage: &crate::UsageTracker,
        after: Duration,
    ) -> Result<Vec<(Arc<Client>, RevocationOutcome)>, AgentError> {
        let last_use = usage.all().await?;
        let clients = self.clients.clients().await?;
        let now = self.clock.now();
        let reason = format!("unused for {} days", after.num_days());
        let mut suspended = Vec::new();
        for id in unused_agents(&clients, &last_use, now, after) {
            match self
                .transition(&id, Transition::Suspend, &reason, LIFECYCLE)
                .await
            {
                Ok((client, Some(outcome))) => suspended.push((client, outcome)),
                Ok((_, None)) => {}
                Err(AgentError::InvalidTransition(_) | AgentError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(suspended)
    }

    /// Gives the client a new secret. The old one keeps authenticating for `overlap_secs` (0:
    /// not at all); a secret rotated out earlier stops at once, so at most two secrets ever
    /// work.
    pub async fn rotate_secret(
        &self,
        id: &ClientId,
        overlap_secs: Option<u64>,
        by: &str,
    ) -> Result<(Arc<Client>, Rotated), AgentError> {
        let overlap = check_overlap(overlap_secs)?;
        let overlap_delta = Duration::seconds(i64::try_from(overlap).unwrap_or(i64::MAX));
        let secret = generate_secret();
        let hash = SecretHash::of(&secret);
        let client = self
            .change(id, by, |current, now| {
                if current.auth_method == AuthMethod::PrivateKeyJwt {
                    return Err(invalid(
                        "a private_key_jwt client has no secret; change its keys with PATCH jwks",
                    ));
                }
                let mut next = current.clone();
                next.previous_secret = match (&current.secret_hash, overlap) {
                    (Some(old), 1..) => Some(PreviousSecret {
                        hash: old.clone(),
                        valid_until: now + overlap_delta,
                    }),
                    _ => None,
                };
                next.secret_hash = Some(hash.clone());
                next.secret_rotated_at = Some(now);
                Ok(next)
            })
            .await?;
        let previous_valid_until = client.previous_secret.as_ref().map(|p| p.valid_until);
        let until = previous_valid_until.map_or_else(
            || "now".to_owned(),
            |at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
        let detail = format!("previous secret valid until {until}");
        self.record(self.now_ms(), by, "agent.secret.rotate", id, detail)
            .await;
        Ok((
            client,
            Rotated {
                secret,
                previous_valid_until,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CORP: &str = "https://corp.example.com";

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .into()
    }

    fn request(body: Value) -> NewAgent {
        serde_json::from_value(body).unwrap()
    }

    fn jwks() -> Value {
        let key =
            mandate_token::SigningKey::generate(mandate_token::SigningAlgorithm::Es256).unwrap();
        json!({ "keys": [key.public_key().jwk()] })
    }

    fn refused(body: Value) -> String {
        match client_from_request(request(body), &[CORP], now(), "ops") {
            Err(AgentError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {:?}", other.map(|c| c.id)),
        }
    }

    #[test]
    fn unused_agents_are_active_agents_idle_past_the_bound() {
        let agent = |id: &str, state: ClientState, created_days_ago: Option<i64>| {
            let mut client = client_from_request(
                request(json!({"client_id": id, "kind": "agent", "owners": ["a@x"],
                               "auth_method": "client_secret_basic"})),
                &[CORP],
                now(),
                "ops",
            )
            .unwrap();
            client.state = state;
            client.created_at = created_days_ago.map(|d| now() - Duration::days(d));
            Arc::new(client)
        };
        let clients = vec![
            agent("busy", ClientState::Active, Some(100)),
            agent("idle", ClientState::Active, Some(100)),
            agent("never", ClientState::Active, Some(40)),
            agent("new", ClientState::Active, Some(3)),
            agent("ancient", ClientState::Active, None),
            agent("staged", ClientState::Staged, Some(100)),
            agent("stopped", ClientState::Suspended, Some(100)),
        ];
        let days_ago = |d: i64| Some((now() - Duration::days(d)).timestamp_millis());
        let last_use: std::collections::HashMap<String, mandate_store::LastUse> = [
            ("busy", days_ago(40), days_ago(1)),
            ("idle", days_ago(31), days_ago(45)),
            ("staged", None, None),
        ]
        .into_iter()
        .map(|(id, authenticated_at_ms, exchange_at_ms)| {
            (
                id.to_owned(),
                mandate_store::LastUse {
                    authenticated_at_ms,
                    exchange_at_ms,
                },
            )
        })
        .collect();
        let unused: Vec<String> = unused_agents(&clients, &last_use, now(), Duration::days(30))
            .into_iter()
            .map(|id| id.to_string())
            .collect();
        assert_eq!(unused, ["idle", "never"]);
    }

    #[test]
    fn a_minimal_agent_is_staged_and_stamped() {
        let client = client_from_request(
            request(json!({"client_id": "booking-tool", "kind": "agent",
                "owners": ["team@example.com"], "auth_method": "client_secret_basic"})),
            &[CORP],
            now(),
            "ops-admin",
        )
        .unwrap();
        assert_eq!(client.state, ClientState::Staged);
        assert_eq!(client.created_by.as_deref(), Some("ops-admin"));
        assert_eq!(client.created_at, Some(now()));
        assert_eq!(client.updated_at, Some(now()));
        assert!(client.secret_hash.is_none() && client.keys.is_none());
    }

    #[test]
    fn registration_rules() {
        let base = json!({"client_id": "booking-tool", "kind": "agent",
            "owners": ["team@example.com"], "auth_method": "client_secret_basic"});
        let with = |field: &str, value: Value| {
            let mut body = base.clone();
            body[field] = value;
            body
        };
        assert!(refused(with("client_id", json!("Booking Tool"))).contains("client id"));
        assert!(refused(with("client_id", json!("agent:x"))).contains("client id"));
        assert!(refused(with("owners", json!([]))).contains("at least one"));
        assert!(refused(with("owners", json!(["  "]))).contains("owners[0] is empty"));
        assert!(refused(with("owners", json!(["a", "a"]))).contains("twice"));
        assert!(refused(with("state", json!("suspended"))).contains("staged or active"));
        assert!(refused(with("state", json!("retired"))).contains("staged or active"));
        assert!(refused(with("jwks", jwks())).contains("only for auth_method private_key_jwt"));
        assert!(refused(with("auth_method", json!("private_key_jwt"))).contains("required"));
        assert!(refused(with("audiences", json!([CORP]))).contains("only for resource servers"));
        assert!(refused(with("expires_at", json!("2029-12-31T23:59:59Z"))).contains("future"));
        assert!(refused(with("description", json!("x".repeat(1001)))).contains("longer"));
        assert!(refused(with(
            "upstream_ids",
            json!([{"issuer": "https://evil.example.com", "client_id": "x"}])
        ))
        .contains("not a trusted issuer"));
        assert!(refused(with(
            "upstream_ids",
            json!([{"issuer": CORP, "client_id": ""}])
        ))
        .contains("client_id"));

        let server = |audiences: Value| {
            let mut body = with("kind", json!("resource_server"));
            body["audiences"] = audiences;
            body
        };
        assert!(refused(server(json!([]))).contains("at least one audience"));
        assert!(refused(server(json!(["agent:helper"]))).contains("app URIs"));
        assert!(refused(server(json!(["http://calendar.example.com"]))).contains("audiences[0]"));
        assert!(refused(server(json!([
            "https://a.example.com",
            "https://a.example.com"
        ])))
        .contains("twice"));
        let mut with_upstream = server(json!(["https://a.example.com"]));
        with_upstream["upstream_ids"] = json!([{"issuer": CORP, "client_id": "x"}]);
        assert!(refused(with_upstream).contains("only agents"));
    }

    #[test]
    fn keys_are_public_and_required_for_private_key_jwt() {
        let body = |jwks: Value| {
            json!({"client_id": "jwt-agent", "kind": "agent", "owners": ["o"],
                "auth_method": "private_key_jwt", "jwks": jwks})
        };
        let client = client_from_request(request(body(jwks())), &[CORP], now(), "ops").unwrap();
        assert_eq!(client.keys.as_ref().map(VerifyingKeySet::len), Some(1));
        let private =
            json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]});
        assert!(refused(body(private)).starts_with("jwks:"));
        assert!(refused(body(json!({"keys": []}))).starts_with("jwks:"));
        assert!(refused(body(json!({"keys": [{"kty": "oct", "k": "AA"}]}))).starts_with("jwks:"));
    }

    #[test]
    fn unknown_and_server_made_fields_are_refused() {
        for field in ["client_secret", "secret_hash", "created_by", "revision"] {
            let mut body = json!({"client_id": "a", "kind": "agent", "owners": ["o"],
                "auth_method": "client_secret_basic"});
            body[field] = json!("x");
            assert!(serde_json::from_value::<NewAgent>(body).is_err(), "{field}");
        }
        for field in [
            "client_id",
            "kind",
            "state",
            "auth_method",
            "secret_hash",
            "revision",
        ] {
            let body = json!({ field: "x" });
            assert!(
                serde_json::from_value::<AgentPatch>(body).is_err(),
                "{field}"
            );
        }
    }

    fn stored() -> StoredClient {
        client_from_request(
            request(json!({"client_id": "booking-tool", "kind": "agent",
                "owners": ["team@example.com"], "auth_method": "client_secret_basic",
                "expires_at": "2031-01-01T00:00:00Z"})),
            &[CORP],
            now(),
            "ops",
        )
        .unwrap()
        .to_stored()
    }

    fn patch(body: Value) -> AgentPatch {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn a_patch_changes_only_what_it_names() {
        let current = stored();
        let next = apply_patch(
            &current,
            &patch(json!({"description": "Books trips", "owners": ["b@example.com"]})),
            &[CORP],
            now(),
        )
        .unwrap();
        assert_eq!(next.description, "Books trips");
        assert_eq!(next.owners, ["b@example.com"]);
        assert_eq!(next.expires_at, current.expires_at);
        assert_eq!(next.state, current.state);

        // null clears the expiry; absent keeps it.
        let cleared = apply_patch(
            &current,
            &patch(json!({"expires_at": null})),
            &[CORP],
            now(),
        )
        .unwrap();
        assert_eq!(cleared.expires_at, None);
        // What differs is what changed: a value equal to the stored one is no change.
        let same_owners = json!({"expires_at": null, "owners": current.owners});
        let next = apply_patch(&current, &patch(same_owners), &[CORP], now()).unwrap();
        assert_eq!(changed_fields(&current, &next), ["expires_at"]);
        let next = apply_patch(&current, &patch(json!({"owners": ["x"]})), &[CORP], now()).unwrap();
        assert_eq!(changed_fields(&current, &next), ["owners"]);
    }

    #[test]
    fn a_secret_hash_patch_replaces_the_secret_only_when_it_differs() {
        let mut current = stored();
        let old = SecretHash::of("first secret");
        current.secret_hash = Some(old.clone());
        let same = apply_patch(
            &current,
            &patch(json!({"secret_hash": old.to_string()})),
            &[CORP],
            now(),
        )
        .unwrap();
        assert!(changed_fields(&current, &same).is_empty());
        assert_eq!(same.secret_rotated_at, current.secret_rotated_at);
        let new = SecretHash::of("another secret");
        let next = apply_patch(
            &current,
            &patch(json!({"secret_hash": new.to_string()})),
            &[CORP],
            now(),
        )
        .unwrap();
        assert_eq!(changed_fields(&current, &next), ["secret_hash"]);
        assert_eq!(next.secret_hash, Some(new));
        assert!(
            next.previous_secret.is_none(),
            "the previous secret stops at once"
        );
        assert_eq!(next.secret_rotated_at, Some(now()));
    }

    #[test]
    fn a_patch_is_checked_like_a_registration() {
        let current = stored();
        let refused = |body: Value| match apply_patch(&current, &patch(body), &[CORP], now()) {
            Err(AgentError::Invalid(message)) => message,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(json!({})).contains("changes nothing"));
        assert!(refused(json!({"owners": null})).contains("cannot be null"));
        assert!(refused(json!({"owners": []})).contains("at least one"));
        assert!(refused(json!({"description": null})).contains("cannot be null"));
        assert!(refused(json!({"jwks": jwks()})).contains("only for auth_method"));
        assert!(refused(json!({"audiences": ["https://a.example.com"]})).contains("resource"));
        assert!(refused(json!({"expires_at": "2029-01-01T00:00:00Z"})).contains("future"));
        assert!(refused(
            json!({"upstream_ids": [{"issuer": "https://x.example", "client_id": "a"}]})
        )
        .contains("trusted"));
    }

    #[test]
    fn overlap_defaults_to_an_hour_and_is_bounded_by_a_week() {
        assert_eq!(check_overlap(None).unwrap(), 3600);
        assert_eq!(check_overlap(Some(0)).unwrap(), 0);
        assert_eq!(check_overlap(Some(604_800)).unwrap(), 604_800);
        assert!(check_overlap(Some(604_801)).is_err());
    }

    #[test]
    fn generated_secrets_carry_256_bits() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.as_bytes()).unwrap().len(), 32);
        assert_ne!(*a, *b);
    }
}
