//! Signed checkpoints: from time to time mandate signs the journal's head with its token signing
//! key and publishes it, so that a history rewritten with every hash recomputed (which anyone
//! with write access to the store could do) no longer matches what mandate signed. They are
//! JWTs of `typ` [`TYP_CHECKPOINT`], verified against mandate's JWKS.

use mandate_token::{Algorithm, JwtError, SigningKey, UnverifiedJws, VerifyingKeySet};
use serde::{Deserialize, Serialize};

use crate::entry::Head;

/// The JOSE `typ` of a checkpoint.
pub const TYP_CHECKPOINT: &str = "mandate-checkpoint+jwt";

/// A checkpoint's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointClaims {
    /// mandate's issuer.
    pub iss: String,
    /// When it was signed (s).
    pub iat: i64,
    /// The head's seq.
    pub seq: u64,
    /// The head's hash.
    pub hash: String,
}

/// A stored checkpoint: the head it pins and the signed JWT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The head's seq.
    pub seq: u64,
    /// The head's hash.
    pub hash: String,
    /// The signed JWT.
    pub jwt: String,
}

impl Checkpoint {
    /// The head it pins.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// Why a checkpoint does not verify.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The JWT is malformed, has the wrong `typ` or a bad signature.
    #[error("checkpoint signature: {0}")]
    Signature(#[from] JwtError),
    /// The JWT's `typ` is not a checkpoint's.
    #[error("not a checkpoint (typ is not {TYP_CHECKPOINT})")]
    Type,
    /// Another issuer, or claims that differ from the stored seq and hash.
    #[error("checkpoint claims do not match: {0}")]
    Claims(&'static str),
}

/// Signs `head` at `iat` (s) as issuer `iss`.
pub fn sign_checkpoint(
    key: &SigningKey,
    iss: &str,
    iat: i64,
    head: &Head,
) -> Result<Checkpoint, JwtError> {
    let claims = CheckpointClaims {
        iss: iss.to_owned(),
        iat,
        seq: head.seq,
        hash: head.hash.clone(),
    };
    Ok(Checkpoint {
        seq: head.seq,
        hash: head.hash.clone(),
        jwt: key.sign(TYP_CHECKPOINT, &claims)?,
    })
}

/// Verifies `checkpoint` against `keys` (mandate's JWKS) for issuer `iss`: the signature, the
/// `typ`, and that the signed seq and hash are the ones stored beside it.
pub fn verify_checkpoint(
    checkpoint: &Checkpoint,
    keys: &VerifyingKeySet,
    algorithms: &[Algorithm],
    iss: Option<&str>,
) -> Result<CheckpointClaims, CheckpointError> {
    let jws = UnverifiedJws::parse(&checkpoint.jwt)?;
    if !jws.header().typ_is(TYP_CHECKPOINT) {
        return Err(CheckpointError::Type);
    }
    let claims: CheckpointClaims = jws.verify(keys, algorithms)?.claims()?;
    if iss.is_some_and(|iss| iss != claims.iss) {
        return Err(CheckpointError::Claims("another issuer"));
    }
    if claims.seq != checkpoint.seq || claims.hash != checkpoint.hash {
        return Err(CheckpointError::Claims(
            "the signed seq and hash are not the stored ones",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use mandate_token::{KeySet, SigningAlgorithm};

    #[test]
    fn a_checkpoint_verifies_against_the_jwks_and_a_changed_one_does_not() {
        let set = KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap();
        let head = Head {
            seq: 42,
            hash: "ab".repeat(32),
        };
        let checkpoint = sign_checkpoint(
            set.active(),
            "https://mandate.example",
            1_700_000_000,
            &head,
        )
        .unwrap();
        let keys = VerifyingKeySet::from_jwks(set.jwks(), set.algorithms()).unwrap();
        let claims = verify_checkpoint(
            &checkpoint,
            &keys,
            set.algorithms(),
            Some("https://mandate.example"),
        )
        .unwrap();
        assert_eq!((claims.seq, claims.hash.as_str()), (42, head.hash.as_str()));

        let moved = Checkpoint {
            seq: 43,
            ..checkpoint.clone()
        };
        assert!(matches!(
            verify_checkpoint(&moved, &keys, set.algorithms(), None),
            Err(CheckpointError::Claims(_))
        ));
        assert!(matches!(
            verify_checkpoint(
                &checkpoint,
                &keys,
                set.algorithms(),
                Some("https://other.example")
            ),
            Err(CheckpointError::Claims(_))
        ));
        let other = KeySet::new(
            SigningKey::generate(SigningAlgorithm::Es256).unwrap(),
            None,
            vec![],
        )
        .unwrap();
        let other_keys = VerifyingKeySet::from_jwks(other.jwks(), other.algorithms()).unwrap();
        assert!(matches!(
            verify_checkpoint(&checkpoint, &other_keys, other.algorithms(), None),
            Err(CheckpointError::Signature(_))
        ));
        let token = set
            .active()
            .sign(
                "at+jwt",
                &CheckpointClaims {
                    iss: "x".into(),
                    iat: 1,
                    seq: 42,
                    hash: head.hash.clone(),
                },
            )
            .unwrap();
        let wrong_typ = Checkpoint {
            jwt: token,
            ..checkpoint
        };
        assert!(matches!(
            verify_checkpoint(&wrong_typ, &keys, set.algorithms(), None),
            Err(CheckpointError::Type)
        ));
    }
}
