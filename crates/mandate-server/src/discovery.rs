//! The RFC 8414 authorization-server metadata.

use mandate_token::Algorithm;
use serde_json::{json, Value};

use crate::config::Settings;

/// The RFC 8414 metadata for what this server supports now. The trusted-issuer list is never
/// published (PROTOCOLS.md section 2.8).
pub fn discovery_document(settings: &Settings) -> Value {
    let issuer = &settings.issuer;
    let auth_methods: Vec<&str> = mandate_model::AuthMethod::ALL
        .iter()
        .map(|m| m.as_str())
        .collect();
    let algorithms: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    let mut document = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": [],
        "grant_types_supported": crate::grant::GrantKind::supported(settings),
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": algorithms,
        "revocation_endpoint": format!("{issuer}/revoke"),
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": algorithms,
        "introspection_endpoint": format!("{issuer}/introspect"),
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_signing_alg_values_supported": algorithms,
        "authorization_details_types_supported": [mandate_token::DELEGATION_DETAIL_TYPE],
        "dpop_signing_alg_values_supported": mandate_core::grants::DpopSettings::for_endpoint(
            String::new()
        )
        .algorithms
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>(),
    });
    // ID-JAG -03 §7: the profile, never which issuers are trusted for it.
    if crate::grant::accepts_id_jags(settings) {
        document["authorization_grant_profiles_supported"] =
            json!([mandate_token::urn::GRANT_PROFILE_ID_JAG]);
    }
    // Identity chaining / ID-JAG §7: the IdP half is served when a resource AS is configured.
    if !settings.id_jag.resource_servers.is_empty() {
        document["identity_chaining_requested_token_types_supported"] =
            json!([mandate_token::urn::TOKEN_TYPE_ID_JAG]);
    }
    document
}
