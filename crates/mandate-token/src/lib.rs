//! JOSE for mandate: signing keys and the JWKS that publishes them, strict compact-JWS signing and
//! verification with an algorithm and `typ` allow-list, claim types, and the token-type URNs.
//!
//! This crate does no I/O: keys come in as bytes or JSON, and the key sets it verifies against are
//! handed to it. It must not depend on any HTTP or store crate, so that token handling can be
//! read, tested and fuzzed on its own.
//!
//! The rules it enforces (RFC 8725, PROTOCOLS.md section 6.1): the accepted `alg` is decided by
//! configuration and the key's type, never by the token header alone; `none` and HMAC are never
//! accepted; header-supplied keys and URLs (`jwk`, `jku`, `x5u`, `x5c`) are ignored; unknown `crit`
//! members are refused; `kid` is only ever a lookup key. The one exception to header-supplied
//! keys is a DPoP proof's `jwk` ([`dpop`]), which proves possession of the key it names.

mod access;
mod alg;
mod claims;
pub mod dpop;
mod error;
mod jwk;
mod jws;
mod signing;
pub mod urn;

pub use access::{
    AccessTokenClaims, Act, Confirmation, DelegationDetail, IdJagClaims, UpstreamClaims,
    DELEGATION_DETAIL_TYPE,
};
pub use alg::Algorithm;
pub use claims::{OneOrMany, TimeError, TimeWindow};
pub use error::JwtError;
pub use jwk::{thumbprint, KeyError, VerifyingKey, VerifyingKeySet};
pub use jws::{check_json_depth, Header, UnverifiedJws, Verified, MAX_JSON_DEPTH, MAX_TOKEN_BYTES};
pub use signing::{KeySet, PublicKey, SigningAlgorithm, SigningKey};
