//! The grants of the token endpoint as use cases (DESIGN.md sections 5–7): RFC 8693 token
//! exchange, the IdP half of cross-app access (an ID-JAG issued by exchange) and its resource-AS
//! half (an ID-JAG redeemed with the RFC 7523 JWT-bearer grant).
//!
//! Every grant runs in the order DESIGN.md section 6 requires: verify what the client presents;
//! read the store's clock and check the revocation list; decide through the chain crate; sign
//! while the hop is recorded; check the list again; only then hand the token out. A refusal is
//! appended to the audit stream by the service, so no caller can skip it.

mod dpop;
mod exchange;
mod id_jag_issue;
mod id_jag_redeem;
mod issuers;
mod subject;

use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use tracing::Instrument as _;

use mandate_chain::{
    ConsentStore, GrantKind, HopRecord, Ledger, PolicyStore, Refusal, RefusalCode, RequestTrace,
};
use mandate_model::{log_safe, Clock};
use mandate_revocation::{RevocationKind, RevocationStore, Verdict};
use mandate_store::{AuditEvent, AuditLog, ClientRegistry, ReplayCache};
use serde::Serialize;

use crate::participation::TargetGate;
use crate::{facts_of_hop, ChainIdKey, IdGenerator, KeyRing};

pub use dpop::DpopSettings;
pub use exchange::{AccessTokenRequest, Exchanged};
pub use id_jag_issue::{
    grant_at_resource_server, Granted, IdJagIssueRequest, IdJagResourceServer, IssuedIdJag,
};
pub use id_jag_redeem::{
    choose_target, IdJagError, IdJagRedeemRequest, RedeemedIdJag, VerifiedIdJag,
    MAX_ID_JAG_LIFETIME_SECS,
};
pub use issuers::{Acceptance, IssuerVerifyError, TrustedIssuers, UpstreamIssuer};
pub use subject::{SubjectError, SubjectTokenType, VerifiedSubject};

/// Why a grant was not made: the RFC 6749 §5.2 outcomes a client is told, the store failing
/// (nothing was issued; retry), or a fault of this server.
///
/// Descriptions are mandate's own words, never copied from input: they must not echo secrets or
/// token contents (DESIGN.md section 5).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// `invalid_request`: the request's shape, or a refused subject token (RFC 8693 §2.2.2).
    #[error("invalid_request: {0}")]
    InvalidRequest(Cow<'static, str>),
    /// `invalid_grant`: the assertion of a JWT-bearer grant (RFC 7523 §3.1).
    #[error("invalid_grant: {0}")]
    InvalidGrant(Cow<'static, str>),
    /// `invalid_target`: an audience or resource not allowed (RFC 8707, RFC 8693).
    #[error("invalid_target: {0}")]
    InvalidTarget(Cow<'static, str>),
    /// `invalid_scope`.
    #[error("invalid_scope: {0}")]
    InvalidScope(Cow<'static, str>),
    /// `invalid_dpop_proof` (RFC 9449 §5): the `DPoP` proof is bad, replayed, or missing where
    /// a binding requires one.
    #[error("invalid_dpop_proof: {0}")]
    InvalidDpopProof(Cow<'static, str>),
    /// `use_dpop_nonce` (RFC 9449 §8): the proof must carry the server's current nonce, which
    /// the answer hands over (`DPoP-Nonce`).
    #[error("use_dpop_nonce")]
    UseDpopNonce {
        /// The nonce to use.
        nonce: String,
    },
    /// The store failed during `operation`; nothing was issued.
    #[error("store unavailable during {operation}: {cause}")]
    Unavailable {
        /// What was being done.
        operation: &'static str,
        /// The store's error (logged, never sent).
        cause: String,
    },
    /// A fault of this server; the client is told `description`, the log gets `cause`.
    #[error("{description}: {cause}")]
    Internal {
        /// What the client is told.
        description: &'static str,
        /// What went wrong (logged, never sent).
        cause: String,
    },
}

impl GrantError {
    /// The RFC 6749 §5.2 error code the client is told.
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::InvalidTarget(_) => "invalid_target",
            GrantError::InvalidScope(_) => "invalid_scope",
            GrantError::InvalidDpopProof(_) => "invalid_dpop_proof",
            GrantError::UseDpopNonce { .. } => "use_dpop_nonce",
            GrantError::Unavailable { .. } => "temporarily_unavailable",
            GrantError::Internal { .. } => "server_error",
        }
    }

    /// The answer to a chain-validator refusal of `grant`: its code and its description.
    pub fn refused(refusal: &Refusal, grant: GrantKind) -> Self {
        let description = Cow::Owned(refusal.to_string());
        match refusal.code_for(grant) {
            RefusalCode::InvalidRequest => GrantError::InvalidRequest(description),
            RefusalCode::InvalidTarget => GrantError::InvalidTarget(description),
            RefusalCode::InvalidScope => GrantError::InvalidScope(description),
            RefusalCode::InvalidGrant => GrantError::InvalidGrant(description),
        }
    }

    /// The store failed during `operation`.
    pub fn unavailable(operation: &'static str, cause: impl std::fmt::Display) -> Self {
        GrantError::Unavailable {
            operation,
            cause: cause.to_string(),
        }
    }
}

/// What the grants are configured with.
#[derive(Debug, Clone)]
pub struct GrantSettings {
    /// mandate's issuer identifier.
    pub issuer: String,
    /// Lifetime of an issued access token.
    pub access_token_ttl_secs: u32,
    /// Lifetime of an issued ID-JAG.
    pub id_jag_ttl_secs: u32,
    /// The deepest chain a token may carry.
    pub max_chain_depth: u32,
    /// Clock skew tolerated on presented tokens.
    pub clock_skew_secs: u32,
    /// The resource authorization servers ID-JAGs are issued for (`[[id_jag.resource_servers]]`).
    pub resource_servers: Vec<IdJagResourceServer>,
    /// DPoP proofs at the token endpoint.
    pub dpop: DpopSettings,
}

/// The ports the grants read and write.
#[derive(Debug, Clone)]
pub struct GrantPorts {
    /// The client registry (targets' owners; the agent's state at the second check).
    pub clients: Arc<dyn ClientRegistry>,
    /// The revocation list.
    pub revocations: Arc<dyn RevocationStore>,
    /// Stored consent grants.
    pub consents: Arc<dyn ConsentStore>,
    /// The hop ledger.
    pub ledger: Arc<dyn Ledger>,
    /// The policy rows.
    pub policies: Arc<dyn PolicyStore>,
    /// Single-use identifiers (ID-JAG `jti`s).
    pub replay: Arc<dyn ReplayCache>,
    /// The audit stream.
    pub audit: Arc<dyn AuditLog>,
    /// The trusted upstream issuers and their keys.
    pub issuers: TrustedIssuers,
    /// mandate's own keys.
    pub keys: KeyRing,
    /// Derives chain ids.
    pub chain_key: Arc<ChainIdKey>,
    /// The participation gates of app audiences.
    pub gate: Arc<dyn TargetGate>,
}

/// Called after a grant has recorded its hop and before the second revocation check. Tests use
/// it to land a revocation exactly there (DESIGN.md section 6's race).
#[async_trait::async_trait]
pub trait HopRecordedHook: Send + Sync + std::fmt::Debug {
    /// Runs after `hop` is recorded.
    async fn after_hop_recorded(&self, hop: &HopRecord);
}

tokio::task_local! {
    /// The token request being served, set by the transport around a grant (see
    /// [`within_request`]), so that the hop it records names its request.
    static REQUEST: RequestTrace;
}

/// Runs `grant` as the token request `trace`: the hop it records carries `trace`.
pub async fn within_request<F: std::future::Future>(trace: RequestTrace, grant: F) -> F::Output {
    REQUEST.scope(trace, grant).await
}

/// The token endpoint's grants.
#[derive(Debug, Clone)]
pub struct GrantService {
    ports: GrantPorts,
    settings: Arc<GrantSettings>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    hook: Option<Arc<dyn HopRecordedHook>>,
}

impl GrantService {
    /// The grants over `ports`, configured by `settings`.
    pub fn new(
        ports: GrantPorts,
        settings: GrantSettings,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdGenerator>,
    ) -> Self {
        Self {
            ports,
            settings: Arc::new(settings),
            clock,
            ids,
            hook: None,
        }
    }

    /// The same service, calling `hook` between each hop's write and its second check.
    pub fn with_hook(mut self, hook: Arc<dyn HopRecordedHook>) -> Self {
        self.hook = Some(hook);
        self
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &GrantSettings {
        &self.settings
    }

    /// Whether ID-JAGs can be issued (at least one resource AS is configured).
    pub fn issues_id_jags(&self) -> bool {
        !self.settings.resource_servers.is_empty()
    }

    /// Lets an allowed grant for `target` pass its participation gate, read with the grant's
    /// other facts: an unmet gate refuses (`invalid_target`), an unmet dry-run gate only
    /// appends `gates.would_refuse` to the audit stream. No gate costs nothing more.
    async fn pass_gate(
        &self,
        client_id: &str,
        gate: Option<mandate_store::Gate>,
        refusals: &Refusals,
    ) -> Result<(), GrantError> {
        let Some(gate) = gate else {
            return Ok(());
        };
        let decision = self
            .ports
            .gate
            .judge(gate)
            .await
            .map_err(|e| GrantError::unavailable("the participation gate", e))?;
        if decision.met {
            return Ok(());
        }
        let shortfall = decision.shortfall();
        if decision.refuses() {
            return Err(refusals.refuse_by(
                "participation_gate",
                &shortfall,
                GrantError::InvalidTarget(Cow::Owned(shortfall.clone())),
            ));
        }
        tracing::info!(target: "audit", client_id = %client_id, audience = %decision.gate.audience, "participation gate (dry run) would refuse");
        let at = self.clock.now().timestamp_millis();
        self.ports
            .audit
            .record(AuditEvent::new(
                at,
                format!("client:{client_id}"),
                "gates.would_refuse",
                &decision.gate.audience,
                format!("invalid_target: {shortfall} (dry run: issued)"),
            ))
            .await;
        Ok(())
    }

    /// Signs `claims` as `typ`, records `hop` (nothing is issued unless its hop is recorded,
    /// DESIGN.md section 1.3), runs the hook, and checks the hop's facts again: a revocation
    /// written before this check is seen by it, one written after has T ≥ the hop's `iat` and
    /// covers it. The client the token is for must still be allowed to authenticate.
    ///
    /// A revocation that landed between the first check and now is answered by
    /// `revoked_midway`, in the caller's protocol's terms.
    async fn sign_and_record<C: Serialize + ?Sized + Sync>(
        &self,
        typ: &str,
        claims: &C,
        hop: &HopRecord,
        revoked_midway: impl FnOnce(RevocationKind) -> GrantError,
    ) -> Result<String, GrantError> {
        let traced;
        let hop = match REQUEST.try_with(Clone::clone) {
            Ok(trace) => {
                traced = HopRecord {
                    request: Some(trace),
                    ..hop.clone()
                };
                &traced
            }
            Err(_) => hop,
        };
        // The signature is made while the hop's write is in flight (on Redis the write goes out
        // on the connection's own task when first polled, so the round trip and the signature
        // overlap); the token is handed out only once both are done and the second check passes.
        let recording = self
            .ports
            .ledger
            .record(hop)
            .instrument(tracing::debug_span!("mandate.ledger_write"));
        let signing = async {
            tracing::debug_span!("mandate.sign", typ).in_scope(|| {
                self.ports
                    .keys
                    .current()
                    .active()
                    .sign(typ, claims)
                    .map_err(|e| GrantError::Internal {
                        description: "the token could not be signed",
                        cause: e.to_string(),
                    })
            })
        };
        let (recorded, token) = tokio::join!(recording, signing);
        recorded.map_err(|e| GrantError::unavailable("recording a hop", e))?;
        let token = token?;
        if let Some(hook) = &self.hook {
            hook.after_hop_recorded(hop).await;
        }
        // The client is read again with the second check. Suspending or retiring an agent
        // writes `agent:<id> @ T`, changes its state, then writes the entry again: a grant that
        // read the state before the change and its clock after T would mint a token the first
        // entry does not cover; here it either sees the new state, or its `iat` (read before
        // this) is covered by the entry written after the change.
        let facts = facts_of_hop(hop);
        let (second, client) = tokio::join!(
            self.ports
                .revocations
                .check(&facts)
                .instrument(revocation_check_span("second")),
            self.ports.clients.client(&hop.client_id)
        );
        let second =
            second.map_err(|e| GrantError::unavailable("the second revocation check", e))?;
        let client =
            client.map_err(|e| GrantError::unavailable("the second revocation check", e))?;
        if !client.is_some_and(|client| client.may_authenticate(self.clock.now())) {
            return Err(revoked_midway(RevocationKind::Agent));
        }
        match second.verdict {
            Verdict::Live => Ok(token),
            Verdict::Revoked { kind, .. } => Err(revoked_midway(kind)),
        }
    }
}

/// The span of a revocation-list check (OTLP export, docs/OPERATIONS.md "Traces"): the `first`
/// before the decision or the `second` after the hop is recorded.
pub(super) fn revocation_check_span(which: &'static str) -> tracing::Span {
    tracing::debug_span!("mandate.revocation_check", check = which)
}

/// The span of the chain validator's decision.
pub(super) fn validate_chain_span() -> tracing::Span {
    tracing::debug_span!("mandate.validate_chain")
}

/// Counts a token issued by `grant` (`mandate_tokens_issued_total`): what was issued and whether
/// it is DPoP-bound. Agents are counted by what they did, never by id (bounded label sets).
fn issued(grant: &'static str, token: &'static str, bound: bool) {
    metrics::counter!(
        "mandate_tokens_issued_total",
        "grant" => grant,
        "token" => token,
        "binding" => if bound { "dpop" } else { "bearer" },
    )
    .increment(1);
}

/// The refusal a grant ended with. The grant's refusal paths call [`Refusals::refuse`] where
/// the decision is made (a synchronous closure cannot append to the stream): it logs the refusal
/// on the `audit` target and notes it; the grant appends the noted refusal once it returns
/// ([`Refusals::flush`]). Store failures are not refusals and never pass through here.
#[derive(Debug)]
struct Refusals {
    client_id: String,
    action: &'static str,
    noted: Mutex<Option<Noted>>,
}

/// A refusal as it is counted and audited.
#[derive(Debug)]
struct Noted {
    code: &'static str,
    /// The validator's rule (`Refusal::rule`), or `request` for a refusal made before the chain
    /// was judged (the request, the subject token, the proof, the target).
    rule: &'static str,
    /// mandate's own description of the refusal.
    reason: String,
}

impl Refusals {
    /// Refusals of `action` (e.g. `exchange.refused`) for the authenticated `client_id`.
    fn new(client_id: &str, action: &'static str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            action,
            noted: Mutex::new(None),
        }
    }

    /// Logs and notes a refusal as `<oauth error code>: <reason>`, and gives `error` back.
    /// `reason` is mandate's own description (an error's display), never a token or a secret.
    fn refuse(&self, reason: &dyn std::fmt::Display, error: GrantError) -> GrantError {
        self.refuse_by("request", reason, error)
    }

    /// [`Self::refuse`] by the validator's `rule`.
    fn refuse_by(
        &self,
        rule: &'static str,
        reason: &dyn std::fmt::Display,
        error: GrantError,
    ) -> GrantError {
        let reason = reason.to_string();
        tracing::info!(target: "audit", client_id = %self.client_id, action = self.action, rule, reason = %log_safe(&reason), "refused");
        if let Ok(mut noted) = self.noted.lock() {
            *noted = Some(Noted {
                code: error.code(),
                rule,
                reason,
            });
        }
        error
    }

    /// Appends the noted refusal, if any, by `client:<client_id>` on `target`.
    async fn flush(&self, audit: &dyn AuditLog, clock: &dyn Clock, target: &str) {
        let noted = self.noted.lock().ok().and_then(|mut noted| noted.take());
        if let Some(Noted { code, rule, reason }) = noted {
            metrics::counter!(
                "mandate_grant_refusals_total",
                "grant" => self.action.trim_end_matches(".refused"),
                "error" => code,
                "rule" => rule,
            )
            .increment(1);
            let at = clock.now().timestamp_millis();
            let actor = format!("client:{}", self.client_id);
            audit
                .record(AuditEvent::new(
                    at,
                    actor,
                    self.action,
                    target,
                    format!("{code}: {reason}"),
                ))
                .await;
        }
    }
}
