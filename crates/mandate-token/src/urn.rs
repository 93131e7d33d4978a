//! The registered URNs mandate speaks (RFC 8693 §3, RFC 7523, ID-JAG draft).

/// RFC 8693 token exchange grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 7523 JWT bearer grant type (used to redeem ID-JAGs).
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 7523 §2.2 client assertion type for `private_key_jwt`.
pub const CLIENT_ASSERTION_JWT_BEARER: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An OAuth access token issued by this server.
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// An OAuth refresh token.
pub const TOKEN_TYPE_REFRESH_TOKEN: &str = "urn:ietf:params:oauth:token-type:refresh_token";
/// An OpenID Connect ID token.
pub const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// Any JWT.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// An Identity Assertion JWT Authorization Grant.
pub const TOKEN_TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";
/// A SAML 1.1 assertion.
pub const TOKEN_TYPE_SAML1: &str = "urn:ietf:params:oauth:token-type:saml1";
/// A SAML 2.0 assertion.
pub const TOKEN_TYPE_SAML2: &str = "urn:ietf:params:oauth:token-type:saml2";

/// The ID-JAG grant profile advertised in metadata.
pub const GRANT_PROFILE_ID_JAG: &str = "urn:ietf:params:oauth:grant-profile:id-jag";

/// `typ` of mandate access tokens (RFC 9068).
pub const TYP_ACCESS_TOKEN: &str = "at+jwt";
/// `typ` of ID-JAGs.
pub const TYP_ID_JAG: &str = "oauth-id-jag+jwt";
/// `typ` of explicitly typed client assertions (draft-ietf-oauth-rfc7523bis).
pub const TYP_CLIENT_ASSERTION: &str = "client-authentication+jwt";

/// Explicit `typ` values of other token kinds: a validator for a JWT of one kind refuses all of
/// these that are not its own (RFC 8725 §3.11, PROTOCOLS.md section 6.1).
pub const EXPLICIT_TYPS: [&str; 8] = [
    TYP_ACCESS_TOKEN,
    TYP_ID_JAG,
    "dpop+jwt",
    "secevent+jwt",
    "txntoken+jwt",
    TYP_CLIENT_ASSERTION,
    "logout+jwt",
    "token-introspection+jwt",
];
