use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a registered client is (DESIGN.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// May act: it is the actor of the hops it requests.
    Agent,
    /// May introspect and follow revocations for the audiences it owns; never acts.
    ResourceServer,
}

/// A client's lifecycle state. Only `Active` clients can authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientState {
    /// Registered, not yet allowed to authenticate.
    Staged,
    /// In service.
    Active,
    /// Temporarily out of service; its live tokens are revoked.
    Suspended,
    /// Permanently out of service.
    Retired,
}

/// Whether a client's tokens must be DPoP-bound (RFC 9449, docs/DPOP.md). For an agent: every
/// token it requests must come with a proof. For a resource server: every token for its
/// audiences must be bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpopPolicy {
    /// Bound when the request carries a proof, a bearer token otherwise (the default).
    #[default]
    Allowed,
    /// A proof is required.
    Required,
}

impl DpopPolicy {
    /// Whether this is [`DpopPolicy::Allowed`] (stored records leave the default out).
    pub fn is_allowed(&self) -> bool {
        *self == Self::Allowed
    }
}

/// How a client authenticates at the token, revocation and introspection endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the client id and secret (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` form parameters (RFC 6749 §2.3.1).
    ClientSecretPost,
    /// A JWT signed with one of the client's registered keys (RFC 7523 §2.2).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// The RFC 8414 metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// Every method mandate supports, in the order discovery lists them.
    pub const ALL: [AuthMethod; 3] = [
        AuthMethod::PrivateKeyJwt,
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
    ];
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names none of an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value '{0}'")]
pub struct UnknownVariant(pub String);

impl FromStr for ClientState {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "staged" => Ok(Self::Staged),
            "active" => Ok(Self::Active),
            "suspended" => Ok(Self::Suspended),
            "retired" => Ok(Self::Retired),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

impl fmt::Display for ClientState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Staged => "staged",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Retired => "retired",
        })
    }
}

impl fmt::Display for ClientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Agent => "agent",
            Self::ResourceServer => "resource_server",
        })
    }
}

/// A lifecycle change an administrator asks for (docs/ADMIN-API.md, "Agents and resource
/// servers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// `staged` or `suspended` → `active`.
    Activate,
    /// `active` → `suspended`.
    Suspend,
    /// Any state but `retired` → `retired` (final).
    Retire,
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 3] = [Self::Activate, Self::Suspend, Self::Retire];
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Activate => "activate",
            Self::Suspend => "suspend",
            Self::Retire => "retire",
        })
    }
}

/// A transition the state machine does not allow from the client's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {transition} a client that is {from}")]
pub struct InvalidTransition {
    /// The client's state.
    pub from: ClientState,
    /// What was asked.
    pub transition: Transition,
}

impl ClientState {
    /// The state `transition` leads to from this one. Suspending a suspended client or
    /// activating an active one is refused rather than ignored, so that an administrator learns
    /// that the state was not what they believed.
    pub fn transition(self, transition: Transition) -> Result<ClientState, InvalidTransition> {
        use ClientState::{Active, Retired, Staged, Suspended};
        match (self, transition) {
            (Staged | Suspended, Transition::Activate) => Ok(Active),
            (Active, Transition::Suspend) => Ok(Suspended),
            // Retirement is final: nothing leaves `retired`, not even another retirement.
            (Staged | Active | Suspended, Transition::Retire) => Ok(Retired),
            (from, transition) => Err(InvalidTransition { from, transition }),
        }
    }
}

impl FromStr for ClientKind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "agent" => Ok(Self::Agent),
            "resource_server" => Ok(Self::ResourceServer),
            other => Err(UnknownVariant(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [ClientState; 4] = [
        ClientState::Staged,
        ClientState::Active,
        ClientState::Suspended,
        ClientState::Retired,
    ];

    #[test]
    fn every_state_and_transition_pair_is_decided() {
        use ClientState::{Active, Retired, Staged, Suspended};
        use Transition::{Activate, Retire, Suspend};
        let expected = |from, transition| match (from, transition) {
            (Staged, Activate) => Some(Active),
            (Staged, Suspend) => None,
            (Staged, Retire) => Some(Retired),
            (Active, Activate) => None,
            (Active, Suspend) => Some(Suspended),
            (Active, Retire) => Some(Retired),
            (Suspended, Activate) => Some(Active),
            (Suspended, Suspend) => None,
            (Suspended, Retire) => Some(Retired),
            (Retired, _) => None,
        };
        for from in STATES {
            for transition in Transition::ALL {
                let got = from.transition(transition);
                match expected(from, transition) {
                    Some(to) => assert_eq!(got, Ok(to), "{from} --{transition}-->"),
                    None => assert_eq!(
                        got,
                        Err(InvalidTransition { from, transition }),
                        "{from} --{transition}--> must be refused"
                    ),
                }
            }
        }
    }

    #[test]
    fn retired_is_final() {
        for transition in Transition::ALL {
            assert!(ClientState::Retired.transition(transition).is_err());
        }
    }

    #[test]
    fn a_refusal_says_what_and_from_where() {
        let error = ClientState::Staged
            .transition(Transition::Suspend)
            .unwrap_err();
        assert_eq!(error.to_string(), "cannot suspend a client that is staged");
    }

    #[test]
    fn states_and_kinds_round_trip_through_their_names() {
        for state in STATES {
            assert_eq!(state.to_string().parse::<ClientState>(), Ok(state));
        }
        for kind in [ClientKind::Agent, ClientKind::ResourceServer] {
            assert_eq!(kind.to_string().parse::<ClientKind>(), Ok(kind));
        }
        assert!("Active".parse::<ClientState>().is_err());
        assert!("robot".parse::<ClientKind>().is_err());
    }
}
