//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie (and `Secure` on a
//! TLS listener), kept in this node's memory under its SHA-256 (a copy of the table tells
//! nothing usable), for at most [`SESSION_LIFETIME`]; each with its own CSRF token, which every
//! form that changes something carries back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::AdminRole;

/// The session cookie's name.
pub const COOKIE: &str = "mandate_console";
/// How long a session lasts after sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3_600);
/// At most this many sessions per node; past it the oldest goes.
const MAX_SESSIONS: usize = 1_000;

/// A signed-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The admin credential's name (what the audit stream records).
    pub name: String,
    /// Its role.
    pub role: AdminRole,
    /// The token every changing form must carry.
    pub csrf: String,
    started: Instant,
}

impl Session {
    /// The admin caller this session acts as: its credential's name and role.
    pub fn caller(&self) -> crate::admin::AdminCaller {
        crate::admin::AdminCaller {
            name: self.name.clone(),
            role: self.role,
        }
    }

    /// Whether `presented` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        !presented.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

/// This node's sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// Starts a session for `name` with `role`; the id to set in the cookie.
    pub fn start(&self, name: &str, role: AdminRole) -> String {
        let id = random_token();
        let session = Session {
            name: name.to_owned(),
            role,
            csrf: random_token(),
            started: Instant::now(),
        };
        if let Ok(mut sessions) = self.by_hash.lock() {
            sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.started)
                    .map(|(k, _)| *k)
                {
                    sessions.remove(&oldest);
                }
            }
            sessions.insert(hash(&id), session);
        }
        id
    }

    /// The live session of cookie value `id`.
    pub fn find(&self, id: &str) -> Option<Session> {
        let mut sessions = self.by_hash.lock().ok()?;
        let key = hash(id);
        match sessions.get(&key) {
            Some(session) if session.started.elapsed() < SESSION_LIFETIME => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `id`.
    pub fn end(&self, id: &str) {
        if let Ok(mut sessions) = self.by_hash.lock() {
            sessions.remove(&hash(id));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_only_and_ends() {
        let sessions = Sessions::default();
        let id = sessions.start("ops", AdminRole::Revoke);
        let session = sessions.find(&id).unwrap();
        assert_eq!(
            (session.name.as_str(), session.role),
            ("ops", AdminRole::Revoke)
        );
        assert!(session.csrf_matches(&session.csrf.clone()));
        assert!(!session.csrf_matches("") && !session.csrf_matches("nope"));
        assert!(sessions.find("another id").is_none());
        // The table holds hashes, not ids.
        let stored = sessions.by_hash.lock().unwrap();
        assert!(!stored.contains_key(&[0u8; 32]));
        assert!(stored.contains_key(&hash(&id)));
        drop(stored);
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let sessions = Sessions::default();
        let first = sessions.start("a", AdminRole::Read);
        for _ in 0..MAX_SESSIONS {
            sessions.start("b", AdminRole::Read);
        }
        assert!(sessions.find(&first).is_none(), "the oldest went");
        assert_eq!(sessions.by_hash.lock().unwrap().len(), MAX_SESSIONS);
    }
}
