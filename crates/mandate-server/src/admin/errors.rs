//! The admin listener's error boundary: every domain error of the services becomes one admin
//! answer here (`{"error", "message"}` with its status). The message a caller sees is the
//! domain error's own text, which never carries a token or a secret; a store failure's cause is
//! logged (within the request's span, so with its request id) and the caller sees only
//! `store_unavailable`.

use actix_web::http::StatusCode;
use mandate_core::{AgentError, ConsentError, PolicyError, RevokeError, SsfError};

use super::AdminError;

impl From<RevokeError> for AdminError {
    fn from(error: RevokeError) -> Self {
        match error {
            RevokeError::NotFound(what) => AdminError::not_found(format!("no {what}")),
            RevokeError::Invalid(message) => AdminError::bad_request(message),
            RevokeError::Unavailable(cause) => AdminError::store_down(&cause),
        }
    }
}

impl From<AgentError> for AdminError {
    fn from(error: AgentError) -> Self {
        match error {
            AgentError::Invalid(message) => AdminError::bad_request(message),
            AgentError::NotFound(_) => AdminError::not_found(error.to_string()),
            AgentError::Exists(_) | AgentError::Contended(_) => {
                AdminError::conflict(error.to_string())
            }
            AgentError::InvalidTransition(refused) => {
                AdminError::invalid_transition(refused.to_string())
            }
            AgentError::Unavailable(cause) => AdminError::store_down(&cause),
        }
    }
}

impl From<ConsentError> for AdminError {
    fn from(error: ConsentError) -> Self {
        match error {
            ConsentError::Invalid(message) => AdminError::bad_request(message),
            ConsentError::NotFound(_) => AdminError::not_found(error.to_string()),
            ConsentError::Exists(_) => AdminError::conflict(error.to_string()),
            ConsentError::Withdrawn(_) => {
                AdminError::new(StatusCode::CONFLICT, "withdrawn", error.to_string())
            }
            ConsentError::Unavailable(cause) => AdminError::store_down(&cause),
        }
    }
}

impl From<PolicyError> for AdminError {
    fn from(error: PolicyError) -> Self {
        match &error {
            PolicyError::InvalidRow { .. } | PolicyError::NotAnAgent(_) => {
                AdminError::bad_request(error.to_string())
            }
            PolicyError::Stale { .. } => AdminError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                error.to_string(),
            ),
            PolicyError::UnknownAgent(_) | PolicyError::UnknownHop(_) => {
                AdminError::not_found(error.to_string())
            }
            PolicyError::Unavailable(cause) => AdminError::store_down(cause),
        }
    }
}

impl From<mandate_core::ParticipationError> for AdminError {
    fn from(error: mandate_core::ParticipationError) -> Self {
        match error {
            mandate_core::ParticipationError::Unavailable(cause) => AdminError::store_down(&cause),
            mandate_core::ParticipationError::NoGate(audience) => {
                AdminError::not_found(format!("gate for {audience}"))
            }
            other => AdminError::bad_request(other.to_string()),
        }
    }
}

impl From<SsfError> for AdminError {
    fn from(error: SsfError) -> Self {
        match error {
            SsfError::NotFound
            | SsfError::NotAResourceServer
            | SsfError::Limit(_)
            | SsfError::BadSubject(_) => AdminError::bad_request(error.to_string()),
            SsfError::Unavailable(cause) => AdminError::store_down(&cause),
            SsfError::Internal(cause) => {
                tracing::error!(%cause, "Shared Signals");
                AdminError::store_down(&cause)
            }
        }
    }
}

impl From<mandate_core::AuthorityError> for AdminError {
    fn from(error: mandate_core::AuthorityError) -> Self {
        match error {
            mandate_core::AuthorityError::Unavailable(cause) => AdminError::store_down(&cause),
        }
    }
}
