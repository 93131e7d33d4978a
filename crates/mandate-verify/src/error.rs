use mandate_revocation::RevocationKind;

/// Why a token was refused, or why the verifier could not decide.
///
/// Messages are safe to log: they never contain the token, and only name ids (a hop, chain,
/// agent or subject) where the revocation list did. They are meant for logs, not for the caller
/// that presented the token: RFC 6750 gives that caller `invalid_token` and nothing more (the
/// `actix-web` feature's extractor does exactly that).
///
/// The variants fall in three groups:
/// - the token is not acceptable: [`Malformed`](Self::Malformed) to
///   [`Revoked`](Self::Revoked) — answer 401 `invalid_token`;
/// - the token is fine but lacks a scope: [`InsufficientScope`](Self::InsufficientScope) —
///   answer 403 `insufficient_scope`;
/// - the verifier cannot decide: [`RevocationUnavailable`](Self::RevocationUnavailable) (answer
///   503: fail closed), and [`Keys`](Self::Keys) / [`Discovery`](Self::Discovery), which
///   [`VerifierBuilder::build`](crate::VerifierBuilder::build) returns when it cannot obtain the
///   issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a compact JWS, larger than [`mandate_token::MAX_TOKEN_BYTES`], a `crit` header, or
    /// claims missing or of the wrong shape for a mandate access token (RFC 9068 §2.2).
    #[error("malformed access token")]
    Malformed,
    /// The header `typ` is not `at+jwt` (nor `application/at+jwt`): RFC 9068 §4 requires
    /// resource servers to refuse other types, so that an ID token or another JWT signed by the
    /// same issuer cannot be replayed as an access token (RFC 8725 §3.11).
    #[error("wrong token type: typ must be at+jwt")]
    WrongType,
    /// The header's `alg` is not on the verifier's allow-list: always the case for `none` and
    /// HMAC (`HS*`), which the allow-list cannot contain (RFC 8725 §3.1).
    #[error("signature algorithm not accepted")]
    Algorithm,
    /// The signature does not verify with the key the token names.
    #[error("signature verification failed")]
    Signature,
    /// No published key has the token's `kid` (after the one re-fetch the refresh floor allows),
    /// or none fits its algorithm.
    #[error("no trusted key matches the token's key id")]
    UnknownKey,
    /// `iss` is missing or is not the configured issuer.
    #[error("issuer mismatch")]
    Issuer,
    /// `aud` is missing or does not name this app.
    #[error("audience mismatch")]
    Audience,
    /// `exp` has passed (beyond the clock skew).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is still ahead (beyond the clock skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// The revocation list has an entry covering this token: the hop itself, an ancestor, the
    /// chain, an agent on it, or the subject (DESIGN.md section 6).
    #[error("token revoked ({kind}:{id})")]
    Revoked {
        /// The kind of the entry that covers the token.
        kind: RevocationKind,
        /// The entry's id (hop id, chain id, consent id, client id or subject).
        id: String,
    },
    /// The revocation source did not answer (in time): whether the token is revoked is unknown,
    /// so it must be refused (fail closed; DESIGN.md principle 5).
    #[error("revocation status unavailable: {0}")]
    RevocationUnavailable(String),
    /// The token is valid but lacks this scope (RFC 6750 §3.1 `insufficient_scope`).
    #[error("insufficient scope: {0} required")]
    InsufficientScope(String),
    /// The key set could not be obtained or used: not https, unreachable, too large, not a
    /// JWKS, or no key usable with the allowed algorithms.
    #[error("issuer keys unavailable: {0}")]
    Keys(String),
    /// The authorization server metadata (RFC 8414) could not be obtained or does not match.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The token is DPoP-bound (`cnf.jkt`) but was presented as a bearer token (RFC 9449 §7.1:
    /// refused; it must come with `Authorization: DPoP` and a proof).
    #[error("the token is DPoP-bound and was presented without a proof")]
    DpopRequired,
    /// The `DPoP` proof is missing, malformed, for another request or token, replayed, or by
    /// another key than the token is bound to (RFC 9449 §7: `invalid_dpop_proof`).
    #[error("DPoP proof refused: {0}")]
    DpopProof(String),
}

impl VerifyError {
    /// Whether the token itself was refused (as opposed to a missing scope or the verifier being
    /// unable to decide). Such a token must not be retried as is.
    pub fn is_invalid_token(&self) -> bool {
        matches!(
            self,
            Self::Malformed
                | Self::WrongType
                | Self::Algorithm
                | Self::Signature
                | Self::UnknownKey
                | Self::Issuer
                | Self::Audience
                | Self::Expired
                | Self::NotYetValid
                | Self::Revoked { .. }
                | Self::DpopRequired
                | Self::DpopProof(_)
        )
    }
}
