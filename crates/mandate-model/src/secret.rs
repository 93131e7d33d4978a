use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A stored client or admin secret: `sha256:<64 hex digits>` of the secret's UTF-8 bytes.
///
/// Only generated high-entropy secrets are used with mandate, so an unsalted SHA-256 is enough to
/// keep a leaked configuration or store from revealing them, and it is cheap on the token path.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretHash([u8; 32]);

/// Why a string is not a secret hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a secret hash must be 'sha256:' followed by 64 hexadecimal digits")]
pub struct SecretHashError;

impl SecretHash {
    /// Parses the `sha256:<hex>` form.
    pub fn parse(value: &str) -> Result<Self, SecretHashError> {
        let hex_digits = value.strip_prefix("sha256:").ok_or(SecretHashError)?;
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SecretHashError)?;
        Ok(Self(digest))
    }

    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `presented` hashes to this value. The comparison of the digests is constant-time,
    /// and the digest hides how many leading bytes of the secret itself were right.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

impl TryFrom<String> for SecretHash {
    type Error = SecretHashError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<SecretHash> for String {
    fn from(hash: SecretHash) -> Self {
        hash.to_string()
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(sha256:…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_right_secret() {
        let hash = SecretHash::of("s3cret-value");
        assert!(hash.matches("s3cret-value"));
        assert!(!hash.matches("s3cret-valuE"));
        assert!(!hash.matches(""));
    }

    #[test]
    fn wire_form_round_trips_and_matches_sha256sum() {
        // printf 'abc' | sha256sum
        let hash = SecretHash::parse(
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        )
        .unwrap();
        assert!(hash.matches("abc"));
        assert_eq!(SecretHash::parse(&hash.to_string()).unwrap(), hash);
    }

    #[test]
    fn malformed_hashes_are_refused() {
        assert!(SecretHash::parse("abc").is_err());
        assert!(SecretHash::parse("sha256:zz").is_err());
        assert!(SecretHash::parse("md5:ba7816bf8f01cfea414140de5dae2223").is_err());
    }
}
