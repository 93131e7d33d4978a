//! Chain ids and hop ids (DESIGN.md section 4).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use mandate_chain::{ChainId, HopId};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The smallest accepted chain-id key.
pub const MIN_CHAIN_KEY_BYTES: usize = 32;

/// The secret that derives chain ids from upstream grants. The same on every node, so every node
/// derives the same chain id for the same grant (and a revoked chain stays revoked whichever node
/// sees the grant again); secret, so that chain ids reveal nothing about the grant.
pub struct ChainIdKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for ChainIdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainIdKey(…)")
    }
}

impl ChainIdKey {
    /// A key from file contents; at least 32 bytes.
    pub fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Result<Self, String> {
        if bytes.len() < MIN_CHAIN_KEY_BYTES {
            return Err(format!(
                "a chain-id key needs at least {MIN_CHAIN_KEY_BYTES} bytes"
            ));
        }
        Ok(Self(bytes))
    }

    /// A random key (development, and single-node memory deployments).
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; MIN_CHAIN_KEY_BYTES]);
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The DPoP nonce of time bucket `bucket` (RFC 9449 §8): the same on every node sharing the
    /// key, unguessable without it, never equal to a chain id (its input starts with a byte no
    /// issuer alias has).
    pub fn dpop_nonce(&self, bucket: i64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.0) else {
            return String::new();
        };
        mac.update(b"\x01dpop-nonce\x00");
        mac.update(bucket.to_string().as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..18])
    }

    /// `chn_` + base64url(HMAC-SHA256(key, alias NUL grant id)), truncated to 128 bits.
    pub fn derive(&self, issuer_alias: &str, grant_id: &str) -> ChainId {
        let mut mac = match Hmac::<Sha256>::new_from_slice(&self.0) {
            Ok(mac) => mac,
            // HMAC accepts keys of any length; this arm cannot be reached.
            Err(_) => return ChainId(format!("chn_{}", URL_SAFE_NO_PAD.encode(grant_id))),
        };
        mac.update(issuer_alias.as_bytes());
        mac.update(&[0]);
        mac.update(grant_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        ChainId(format!("chn_{}", URL_SAFE_NO_PAD.encode(&digest[..16])))
    }
}

/// A fresh hop id: `hop_` + 128 random bits.
pub fn new_hop_id() -> HopId {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    HopId(format!("hop_{}", URL_SAFE_NO_PAD.encode(bytes)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_stable_per_key_and_grant() {
        let key = ChainIdKey::from_bytes(Zeroizing::new(vec![7u8; 32])).unwrap();
        assert_eq!(key.derive("corp", "g1"), key.derive("corp", "g1"));
        assert_ne!(key.derive("corp", "g1"), key.derive("corp", "g2"));
        assert_ne!(key.derive("corp", "g1"), key.derive("other", "g1"));
        // No ambiguity between alias and grant boundaries.
        assert_ne!(key.derive("ab", "c"), key.derive("a", "bc"));
        let other = ChainIdKey::from_bytes(Zeroizing::new(vec![8u8; 32])).unwrap();
        assert_ne!(key.derive("corp", "g1"), other.derive("corp", "g1"));
        assert!(ChainIdKey::from_bytes(Zeroizing::new(vec![1u8; 31])).is_err());
    }

    #[test]
    fn hop_ids_are_unique_and_long_enough() {
        let a = new_hop_id();
        assert_ne!(a, new_hop_id());
        assert_eq!(a.0.len(), 4 + 22);
    }
}
