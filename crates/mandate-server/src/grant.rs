//! The grants of `POST /token`, as an enum parsed once from `grant_type`.

use mandate_token::urn;

use crate::error::{ErrorCode, OAuthError};

/// The grant types in mandate's contract (DESIGN.md section 5). There is no
/// `client_credentials`, `authorization_code` or `password` grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantKind {
    /// RFC 8693 token exchange.
    TokenExchange,
    /// RFC 7523 JWT bearer, for ID-JAG redemption.
    JwtBearer,
}

impl GrantKind {
    /// The `grant_type` URN.
    pub fn urn(self) -> &'static str {
        match self {
            GrantKind::TokenExchange => urn::GRANT_TOKEN_EXCHANGE,
            GrantKind::JwtBearer => urn::GRANT_JWT_BEARER,
        }
    }

    /// Whether this build serves the grant. A grant of the contract that is not served yet is
    /// answered like any unknown grant and is not advertised in discovery.
    pub fn is_served(self) -> bool {
        match self {
            GrantKind::TokenExchange => true,
            GrantKind::JwtBearer => false,
        }
    }

    /// The grant types advertised in discovery.
    pub fn supported() -> Vec<&'static str> {
        [GrantKind::TokenExchange, GrantKind::JwtBearer]
            .into_iter()
            .filter(|g| g.is_served())
            .map(GrantKind::urn)
            .collect()
    }

    /// Parses `grant_type`; anything not served is `unsupported_grant_type`.
    pub fn parse(grant_type: &str) -> Result<Self, OAuthError> {
        [GrantKind::TokenExchange, GrantKind::JwtBearer]
            .into_iter()
            .find(|g| g.urn() == grant_type && g.is_served())
            .ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::UnsupportedGrantType,
                    "this grant type is not supported",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_outside_the_contract_are_unsupported() {
        for grant in [
            "client_credentials",
            "authorization_code",
            "password",
            "refresh_token",
            "",
        ] {
            assert_eq!(
                GrantKind::parse(grant).unwrap_err().code(),
                ErrorCode::UnsupportedGrantType
            );
        }
    }

    #[test]
    fn discovery_lists_exactly_the_served_grants() {
        for grant in [GrantKind::TokenExchange, GrantKind::JwtBearer] {
            assert_eq!(
                GrantKind::supported().contains(&grant.urn()),
                grant.is_served()
            );
            assert_eq!(GrantKind::parse(grant.urn()).is_ok(), grant.is_served());
        }
    }
}
