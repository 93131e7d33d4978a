//! The delegation-chain validator (DESIGN.md sections 1, 4 and 5): given the authenticated agent,
//! its verified subject token, the request and the policy, decide the hop — or refuse it with a
//! precise reason. Also the hop record, the ledger and consent-grant traits.
//!
//! Pure logic: no I/O, no clock, no randomness (the caller passes `now`, the new hop id and the
//! chain id). It must not depend on HTTP or store crates, so that the rules deciding who may act
//! for whom can be read, tested and fuzzed on their own.

mod authority;
mod consent;
mod evidence;
mod explain;
mod hop;
mod policy;
mod store;
mod validator;

pub use authority::{Authority, AuthorityError};
pub use consent::{ConsentGrant, ConsentStore};
pub use evidence::issued_to_actor;
pub use explain::{
    error_code, explain, hand_off_cap, id_jag_error_code, Allowed, ExplainInput, ExplainSubject,
    Explanation, HandOffCap,
};
pub use hop::{ChainId, Evidence, EvidenceKind, HopId, HopRecord, RequestTrace, UpstreamGrant};
pub use policy::{Policy, PolicyRow, PolicyRowError};
pub use store::{ChainPage, ChainStart, Ledger, PolicyStore, StoreFailure};
pub use validator::{
    decide, decide_id_jag, decide_id_jag_issuance, Decision, ExchangeContext, ExchangeRequest,
    GrantKind, IdJagGrant, IdJagIssuance, MandateSubject, Refusal, RefusalCode, SubjectGrant,
    UpstreamSubject,
};
