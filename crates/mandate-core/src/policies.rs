//! The policy as administrators change and question it (docs/ADMIN-API.md, "Policies"):
//! replacing every row over the version read (audited as `policies.replace`), and explaining an
//! exchange with the facts `/token` would see.

use std::collections::HashSet;
use std::sync::Arc;

use mandate_chain::{
    explain, ConsentStore, ExchangeRequest, ExplainInput, ExplainSubject, Explanation, HopId,
    Ledger, Policy, PolicyRow, PolicyStore,
};
use mandate_model::{Audience, ClientId, ClientKind, Clock, ScopeSet, Subject};
use mandate_revocation::{RevocationStore, Verdict};
use mandate_store::{AuditEvent, AuditLog, ClientRegistry, StoreError};

use crate::participation::{GateDecision, TargetGate};
use crate::revocation::facts_of_hop;

/// Why a policy operation did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A row breaks a rule; nothing was stored.
    #[error("rows[{index}]: {message}")]
    InvalidRow {
        /// The row's index in the request.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The policy changed since it was read; nothing was stored.
    #[error("the policy is at version {current}, not {expected}: read it again")]
    Stale {
        /// The version written against.
        expected: u64,
        /// The version the store holds.
        current: u64,
    },
    /// The explained agent is not registered.
    #[error("no client '{0}'")]
    UnknownAgent(ClientId),
    /// The explained agent is a resource server.
    #[error("'{0}' is a resource server, not an agent")]
    NotAnAgent(ClientId),
    /// The explained parent hop is not in the ledger.
    #[error("no hop {0}")]
    UnknownHop(HopId),
    /// The store did not answer.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

fn down(error: impl std::fmt::Display) -> PolicyError {
    PolicyError::Unavailable(error.to_string())
}

/// Whether a target exists: an agent for a hand-off, an app some resource server owns. The
/// check the exchange, the ID-JAG redemption and explain all make.
pub async fn target_is_registered(
    clients: &dyn ClientRegistry,
    target: &Audience,
) -> Result<bool, StoreError> {
    Ok(target_facts(clients, target).await?.known)
}

/// What an exchange needs to know of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFacts {
    /// Registered: an agent for a hand-off, an app some resource server owns.
    pub known: bool,
    /// The app's resource server requires DPoP-bound tokens (`dpop = "required"`).
    pub dpop_required: bool,
}

/// [`TargetFacts`] from the registry: one read for an agent, the owner's record for an app.
pub async fn target_facts(
    clients: &dyn ClientRegistry,
    target: &Audience,
) -> Result<TargetFacts, StoreError> {
    Ok(match target {
        Audience::Agent(id) => TargetFacts {
            known: clients
                .client(id)
                .await?
                .is_some_and(|c| c.kind == ClientKind::Agent),
            dpop_required: false,
        },
        Audience::App(_) => {
            let owner = clients.audience_owner(target).await?;
            TargetFacts {
                known: owner.is_some(),
                dpop_required: owner.is_some_and(|o| o.dpop == mandate_model::DpopPolicy::Required),
            }
        }
    })
}

/// The subject token an explained exchange would present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExplainedToken {
    /// An upstream ID token or JWT, of `subject` when given (its consent grants then count).
    Upstream {
        /// The user, when the question names one.
        subject: Option<Subject>,
    },
    /// A mandate access token: the hop it is.
    AccessToken {
        /// Its hop id.
        parent_hop: HopId,
    },
    /// An ID-JAG.
    IdJag,
}

/// An exchange to explain.
#[derive(Debug, Clone)]
pub struct ExplainQuestion {
    /// The agent asking.
    pub agent: ClientId,
    /// Its subject token.
    pub token: ExplainedToken,
    /// The target.
    pub audience: Audience,
    /// The scopes asked for, when any.
    pub scope: Option<ScopeSet>,
}

/// What `/token` would answer, and why.
#[derive(Debug)]
pub enum ExplainAnswer {
    /// The validator's explanation.
    Decided(Explanation),
    /// Refused before the validator is asked: the error code, the rule and the message.
    Refused {
        /// The OAuth error code.
        error: &'static str,
        /// The rule's name.
        rule: &'static str,
        /// What happened.
        message: String,
    },
}

/// An explained exchange: the answer, and the target's participation gate judged now.
#[derive(Debug)]
pub struct Explained {
    /// What `/token` would answer. An exchange the policy allows but an enforced gate refuses
    /// is refused here (`invalid_target`, rule `participation_gate`).
    pub answer: ExplainAnswer,
    /// The target's gate, if it has one.
    pub gate: Option<GateDecision>,
    /// For a hand-off refused for asking more than can be passed on (`scope_widening`,
    /// `empty_authority`): its row and what the delegator may pass on through it.
    pub hand_off: Option<mandate_chain::HandOffCap>,
}

/// The settings explain decides with, as `/token` does.
#[derive(Debug, Clone)]
pub struct ExplainSettings {
    /// mandate's issuer.
    pub issuer: String,
    /// `tokens.access_token_ttl_secs`.
    pub ttl_secs: i64,
    /// `tokens.max_chain_depth`.
    pub max_chain_depth: u32,
}

/// The policy rows, their changes and their explanations.
#[derive(Debug, Clone)]
pub struct PolicyService {
    policies: Arc<dyn PolicyStore>,
    clients: Arc<dyn ClientRegistry>,
    consents: Arc<dyn ConsentStore>,
    ledger: Arc<dyn Ledger>,
    revocations: Arc<dyn RevocationStore>,
    audit: Arc<dyn AuditLog>,
    gate: Arc<dyn TargetGate>,
    clock: Arc<dyn Clock>,
    settings: ExplainSettings,
}

/// The ports [`PolicyService`] reads and writes.
#[derive(Debug, Clone)]
pub struct PolicyPorts {
    /// The rows.
    pub policies: Arc<dyn PolicyStore>,
    /// The registry (rows name registered agents).
    pub clients: Arc<dyn ClientRegistry>,
    /// Consent grants (explain counts them).
    pub consents: Arc<dyn ConsentStore>,
    /// The ledger (explain reads the parent hop).
    pub ledger: Arc<dyn Ledger>,
    /// The revocation list (explain checks the parent hop; its clock is the store's).
    pub revocations: Arc<dyn RevocationStore>,
    /// The audit stream.
    pub audit: Arc<dyn AuditLog>,
    /// The participation gates (explain shows the target's).
    pub gate: Arc<dyn TargetGate>,
}

impl PolicyService {
    /// A service over `ports`.
    pub fn new(ports: PolicyPorts, clock: Arc<dyn Clock>, settings: ExplainSettings) -> Self {
        Self {
            policies: ports.policies,
            clients: ports.clients,
            consents: ports.consents,
            ledger: ports.ledger,
            revocations: ports.revocations,
            audit: ports.audit,
            gate: ports.gate,
            clock,
            settings,
        }
    }

    /// The policy in force and its version.
    pub async fn current(&self) -> Result<(Arc<Policy>, u64), PolicyError> {
        self.policies.policy().await.map_err(down)
    }

    /// Checks row `index` against the rules ([`PolicyRow::check`]) with the registry's agents.
    async fn check_row(&self, index: usize, row: &PolicyRow) -> Result<(), PolicyError> {
        let mut agents = HashSet::new();
        for agent in row.agents() {
            let registered = self
                .clients
                .client(agent)
                .await
                .map_err(down)?
                .is_some_and(|c| c.kind == ClientKind::Agent);
            if registered {
                agents.insert(agent.clone());
            }
        }
        row.check(|agent| agents.contains(agent))
            .map_err(|e| PolicyError::InvalidRow {
                index,
                message: e.to_string(),
            })
    }

    /// Replaces every row if the store is still at `expected`; the new version. Nothing is
    /// stored unless every row passes; the first bad row is named by its index.
    pub async fn replace(
        &self,
        rows: Vec<PolicyRow>,
        expected: u64,
        by: &str,
    ) -> Result<u64, PolicyError> {
        for (index, row) in rows.iter().enumerate() {
            self.check_row(index, row).await?;
        }
        let count = rows.len();
        let version = self
            .policies
            .replace(rows, expected)
            .await
            .map_err(down)?
            .map_err(|current| PolicyError::Stale { expected, current })?;
        let at = self.clock.now().timestamp_millis();
        let detail = format!("version {version}, {count} rows");
        self.audit
            .record(AuditEvent::new(
                at,
                by,
                "policies.replace",
                "policies",
                detail,
            ))
            .await;
        Ok(version)
    }

    /// Explains an exchange with the facts `/token` would see (the agent's registration and
    /// state, whether the target is registered, the parent hop and its revocation, the stored
    /// grants, the policy, the store's clock, the target's participation gate), then lets the
    /// validator decide, and the gate after it, as `/token` does.
    pub async fn explain(&self, question: &ExplainQuestion) -> Result<Explained, PolicyError> {
        let gate = match self.gate.gate(&question.audience).await.map_err(down)? {
            Some(gate) => Some(self.gate.judge(gate).await.map_err(down)?),
            None => None,
        };
        let (answer, hand_off) = self.explain_policy(question).await?;
        let answer = match (&answer, &gate) {
            (ExplainAnswer::Decided(Explanation::Allowed(_)), Some(gate)) if gate.refuses() => {
                ExplainAnswer::Refused {
                    error: "invalid_target",
                    rule: "participation_gate",
                    message: gate.shortfall(),
                }
            }
            _ => answer,
        };
        Ok(Explained {
            answer,
            gate,
            hand_off,
        })
    }

    async fn explain_policy(
        &self,
        question: &ExplainQuestion,
    ) -> Result<(ExplainAnswer, Option<mandate_chain::HandOffCap>), PolicyError> {
        let client = self
            .clients
            .client(&question.agent)
            .await
            .map_err(down)?
            .ok_or_else(|| PolicyError::UnknownAgent(question.agent.clone()))?;
        if client.kind != ClientKind::Agent {
            return Err(PolicyError::NotAnAgent(question.agent.clone()));
        }
        let now_ms = self.revocations.now_ms().await.map_err(down)?;
        let now_instant = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
        if !client.may_authenticate(now_instant) {
            return Ok((
                ExplainAnswer::Refused {
                    error: "invalid_client",
                    rule: "client_not_active",
                    message: "the agent is not active, or has expired".into(),
                },
                None,
            ));
        }
        let parent = match &question.token {
            ExplainedToken::AccessToken { parent_hop } => {
                let hop = self
                    .ledger
                    .hop(parent_hop)
                    .await
                    .map_err(down)?
                    .ok_or_else(|| PolicyError::UnknownHop(parent_hop.clone()))?;
                let checked = self
                    .revocations
                    .check(&facts_of_hop(&hop))
                    .await
                    .map_err(down)?;
                if let Verdict::Revoked { kind, .. } = checked.verdict {
                    return Ok((
                        ExplainAnswer::Refused {
                            error: "invalid_request",
                            rule: "revoked",
                            message: format!("the subject token has been revoked ({kind})"),
                        },
                        None,
                    ));
                }
                Some(hop)
            }
            _ => None,
        };
        let subject = match &question.token {
            ExplainedToken::Upstream { subject } => subject.clone(),
            _ => None,
        };
        let consents = match &subject {
            Some(subject) => self
                .consents
                .consents(subject, &question.agent)
                .await
                .map_err(down)?,
            None => vec![],
        };
        let target_known = target_is_registered(self.clients.as_ref(), &question.audience)
            .await
            .map_err(down)?;
        let (policy, _) = self.current().await?;
        let explained_subject = match (&question.token, &parent) {
            (ExplainedToken::AccessToken { .. }, Some(parent)) => {
                ExplainSubject::Mandate { parent }
            }
            (ExplainedToken::IdJag, _) => ExplainSubject::IdJag,
            _ => ExplainSubject::Upstream {
                subject: subject.clone(),
                consents: &consents,
            },
        };
        let input = ExplainInput {
            request: ExchangeRequest {
                actor: &question.agent,
                target: &question.audience,
                target_known,
                scope: question.scope.as_ref(),
                details: None,
            },
            subject: explained_subject,
            issuer: &self.settings.issuer,
            now: now_ms.div_euclid(1000),
            ttl_secs: self.settings.ttl_secs,
            max_chain_depth: self.settings.max_chain_depth,
        };
        let explanation = explain(&policy, &input);
        let capped = matches!(
            explanation,
            Explanation::Refused {
                refusal: mandate_chain::Refusal::ScopeWidening
                    | mandate_chain::Refusal::EmptyAuthority,
                ..
            }
        );
        let hand_off = capped
            .then(|| mandate_chain::hand_off_cap(&policy, &input))
            .flatten();
        Ok((ExplainAnswer::Decided(explanation), hand_off))
    }
}
