/// Why a JWT was refused. Messages are safe to log: they never contain the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments, bad base64, or a header or payload that is not a JSON object.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// Larger than the accepted bound.
    #[error("JWT larger than {0} bytes")]
    TooLarge(usize),
    /// `alg` is `none`, HMAC, unknown, or not allowed for this kind of token.
    #[error("algorithm '{0}' is not accepted here")]
    AlgorithmNotAllowed(String),
    /// The header has a `crit` member; mandate understands no critical extension.
    #[error("unsupported critical header parameters")]
    CriticalHeader,
    /// The header `typ` is wrong for this kind of token.
    #[error("wrong token type (typ)")]
    WrongType,
    /// No key in the trusted set has the header's `kid` (or none fits the algorithm).
    #[error("no trusted key matches the token's key id and algorithm")]
    UnknownKey,
    /// The signature does not verify with any candidate key.
    #[error("signature verification failed")]
    BadSignature,
    /// A key could not be used with the requested algorithm.
    #[error("key unusable: {0}")]
    UnusableKey(String),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
    /// The claims do not have the expected shape.
    #[error("invalid claims: {0}")]
    Claims(String),
}
