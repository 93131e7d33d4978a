//! mandate's own signing keys in force.

use std::sync::{Arc, PoisonError, RwLock};

use mandate_token::KeySet;

/// mandate's own keys in force. A reload (SIGHUP) replaces the whole [`KeySet`] at once, so the
/// key that signs, the `/jwks` document and the set mandate verifies its own tokens with always
/// agree. Readers take an `Arc` and let go of the lock at once: no lock is held across an await.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<KeySet>>>,
}

impl KeyRing {
    /// A ring holding `keys`.
    pub fn new(keys: KeySet) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(keys))),
        }
    }

    /// The keys in force now. A request takes them once and uses that snapshot throughout.
    pub fn current(&self) -> Arc<KeySet> {
        // The lock guards only an assignment, which cannot panic: poisoning carries no meaning.
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts `keys` in force and returns the keys they replace.
    pub fn replace(&self, keys: Arc<KeySet>) -> Arc<KeySet> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *current, keys)
    }
}
