//! mandate's vocabulary: the identifiers and identity types every other crate speaks in
//! (DESIGN.md section 3), and the injectable clock.
//!
//! Everything here is parsed once at the boundary ("parse, don't validate") and is pure: this
//! crate does no I/O and must not depend on any HTTP, JOSE or store crate.

mod audience;
mod client;
mod clock;
mod ids;
mod scope;
mod secret;
mod subject;

pub use audience::{is_app_uri, is_loopback_url, Audience, AudienceError};
pub use client::{
    AuthMethod, ClientKind, ClientState, DpopPolicy, InvalidTransition, Transition, UnknownVariant,
};
pub use clock::{Clock, FixedClock, ManualMonotonic, Monotonic, SystemClock, SystemMonotonic};
pub use ids::{log_safe, ClientId, ClientIdError, IssuerAlias, IssuerAliasError};
pub use scope::{ScopeError, ScopeSet};
pub use secret::{SecretHash, SecretHashError};
pub use subject::{Subject, SubjectError};
