//! The grants of `POST /token`, as an enum parsed once from `grant_type`.

use mandate_token::urn;

use crate::config::{Acceptance, Settings};
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
    const ALL: [GrantKind; 2] = [GrantKind::TokenExchange, GrantKind::JwtBearer];

    /// The `grant_type` URN.
    pub fn urn(self) -> &'static str {
        match self {
            GrantKind::TokenExchange => urn::GRANT_TOKEN_EXCHANGE,
            GrantKind::JwtBearer => urn::GRANT_JWT_BEARER,
        }
    }

    /// A short name for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            GrantKind::TokenExchange => "token_exchange",
            GrantKind::JwtBearer => "jwt_bearer",
        }
    }

    /// Whether this server serves the grant. JWT bearer exists only to redeem ID-JAGs, so it is
    /// served when at least one trusted issuer's `accept` lists `id-jag`; otherwise it is answered
    /// like any unknown grant and is not advertised in discovery.
    pub fn is_served(self, settings: &Settings) -> bool {
        match self {
            GrantKind::TokenExchange => true,
            GrantKind::JwtBearer => accepts_id_jags(settings),
        }
    }

    /// The grant types advertised in discovery.
    pub fn supported(settings: &Settings) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|g| g.is_served(settings))
            .map(GrantKind::urn)
            .collect()
    }

    /// Parses `grant_type`; anything not served is `unsupported_grant_type`.
    pub fn parse(grant_type: &str, settings: &Settings) -> Result<Self, OAuthError> {
        Self::ALL
            .into_iter()
            .find(|g| g.urn() == grant_type && g.is_served(settings))
            .ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::UnsupportedGrantType,
                    "this grant type is not supported",
                )
            })
    }
}

/// Whether any trusted issuer is trusted for ID-JAGs (the resource-AS half of cross-app access).
pub fn accepts_id_jags(settings: &Settings) -> bool {
    settings
        .trusted_issuers
        .iter()
        .any(|ti| ti.accept.contains(&Acceptance::IdJag))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(accept_id_jag: bool) -> Settings {
        let mut accept = "[\"id_token\"]";
        if accept_id_jag {
            accept = "[\"id_token\", \"id-jag\"]";
        }
        Settings::from_toml(&format!(
            "[[trusted_issuers]]\nissuer = \"https://idp.example.com\"\nalias = \"idp\"\n\
             jwks_uri = \"https://idp.example.com/jwks\"\naccept = {accept}\n"
        ))
        .unwrap()
    }

    #[test]
    fn grants_outside_the_contract_are_unsupported() {
        for settings in [settings(false), settings(true)] {
            for grant in [
                "client_credentials",
                "authorization_code",
                "password",
                "refresh_token",
                "urn:ietf:params:oauth:grant-type:jwt-dpop",
                "",
            ] {
                assert_eq!(
                    GrantKind::parse(grant, &settings).unwrap_err().code(),
                    ErrorCode::UnsupportedGrantType
                );
            }
        }
    }

    #[test]
    fn jwt_bearer_is_served_only_when_an_issuer_is_trusted_for_id_jags() {
        let without = settings(false);
        let with = settings(true);
        assert!(!GrantKind::JwtBearer.is_served(&without));
        assert!(GrantKind::JwtBearer.is_served(&with));
        assert!(GrantKind::TokenExchange.is_served(&without));
        assert_eq!(
            GrantKind::parse(urn::GRANT_JWT_BEARER, &with).unwrap(),
            GrantKind::JwtBearer
        );
    }

    #[test]
    fn discovery_lists_exactly_the_served_grants() {
        for settings in [settings(false), settings(true)] {
            for grant in GrantKind::ALL {
                assert_eq!(
                    GrantKind::supported(&settings).contains(&grant.urn()),
                    grant.is_served(&settings)
                );
                assert_eq!(
                    GrantKind::parse(grant.urn(), &settings).is_ok(),
                    grant.is_served(&settings)
                );
            }
        }
    }
}
