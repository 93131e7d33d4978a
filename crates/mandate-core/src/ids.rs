//! Where the ids a service makes come from: random in production, predictable in tests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mandate_chain::HopId;
use rand::RngCore;

/// Makes the ids services give to what they create.
pub trait IdGenerator: Send + Sync + std::fmt::Debug {
    /// A fresh consent grant id, `cns_` + at least 128 bits of entropy in production.
    fn consent_id(&self) -> String;

    /// A fresh hop id (the `jti` of the token issued for it), `hop_` + at least 128 bits of
    /// entropy in production.
    fn hop_id(&self) -> HopId;
}

/// 128 random bits per id, base64url.
#[derive(Debug, Default, Clone, Copy)]
pub struct RandomIds;

impl IdGenerator for RandomIds {
    fn consent_id(&self) -> String {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        format!("cns_{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    fn hop_id(&self) -> HopId {
        crate::chain_id::new_hop_id()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn consent_ids_carry_128_random_bits() {
        let id = RandomIds.consent_id();
        let random = id.strip_prefix("cns_").unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(random).unwrap().len(), 16);
        assert_ne!(RandomIds.consent_id(), id);
    }
}
