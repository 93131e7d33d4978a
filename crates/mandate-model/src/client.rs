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
