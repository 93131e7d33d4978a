//! mandate's use cases as services (docs/ARCHITECTURE.md). A service holds only the ports it
//! needs (the storage traits of mandate-store, mandate-chain and mandate-revocation), a
//! [`Clock`](mandate_model::Clock) and an [`IdGenerator`] where it makes ids, and records what it
//! changes on the audit stream itself, so that no caller can change state without an audit
//! event. Services return domain errors; the HTTP crate maps them to answers in one place.
//!
//! Nothing here knows HTTP: the CI dependency rules keep actix-web out of this crate.

pub mod agents;
pub mod authority;
pub mod chain_id;
pub mod consents;
pub mod grants;
pub mod ids;
pub mod journal;
pub mod keys;
mod live;
pub mod participation;
pub mod policies;
pub mod revocation;
pub mod ssf;
pub mod usage;

pub use agents::{
    generate_secret, AgentError, AgentPatch, AgentService, NewAgent, TransitionPreview, Updated,
};
pub use authority::{AuthorityError, AuthorityPorts, AuthorityService, StandingAuthority};
pub use chain_id::{new_hop_id, ChainIdKey};
pub use consents::{content_id, ConsentError, ConsentService, NewConsent};
pub use grants::{
    within_request, GrantError, GrantPorts, GrantService, GrantSettings, HopRecordedHook,
};
pub use ids::{IdGenerator, RandomIds};
pub use journal::{Cursor, EntryPage, ExportFormat, JournalService, JournalSummary, OnlineReport};
pub use keys::KeyRing;
pub use participation::{
    GateDecision, NewGate, NoGates, ParticipationError, ParticipationPorts, ParticipationService,
    Report, TargetGate, Verdict,
};
pub use policies::{
    target_facts, target_is_registered, ExplainAnswer, ExplainQuestion, ExplainSettings, Explained,
    ExplainedToken, PolicyError, PolicyPorts, PolicyService, TargetFacts,
};
pub use revocation::{
    facts_of_hop, EntryLifetimes, HopStatus, PreviewCounts, PreviewedHop, RevocationOutcome,
    RevocationPreview, RevocationService, RevokeError, RevokedBy, Target,
};
pub use ssf::{
    CredentialChange, KeyChange, SsfError, SsfTransmitter, StreamRequest, TransmitterSettings,
};
pub use usage::UsageTracker;
