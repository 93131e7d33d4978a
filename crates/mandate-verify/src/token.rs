//! A token that passed every check.

use mandate_model::ScopeSet;
use mandate_token::AccessTokenClaims;

use crate::VerifyError;

/// A mandate access token that passed every check: signature, type, issuer, audience, time and
/// (when the verifier has a revocation source) revocation of every hop of its chain.
///
/// It names the user (`subject`), the agent that presented it (`client_id`, also the current
/// actor) and every agent that acted before, current first: the assistant that handed work to a
/// booking tool shows up as `actors() == ["booking-tool", "assistant"]`.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    claims: AccessTokenClaims,
    scopes: ScopeSet,
    actors: Vec<String>,
}

impl VerifiedToken {
    pub(crate) fn new(claims: AccessTokenClaims, scopes: ScopeSet, actors: Vec<String>) -> Self {
        Self {
            claims,
            scopes,
            actors,
        }
    }

    /// The user the agents act for (`sub`), namespaced by issuer alias (`corp|alice`) unless it
    /// comes from the primary IdP.
    pub fn subject(&self) -> &str {
        &self.claims.sub
    }

    /// The agent that requested this token (`client_id`): the current actor.
    pub fn client_id(&self) -> &str {
        &self.claims.client_id
    }

    /// The scopes granted at this app (`scope`); empty for a hand-off token.
    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
    }

    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// `Ok` when the token grants `scope`, else [`VerifyError::InsufficientScope`] (RFC 6750
    /// §3.1: answer 403 `insufficient_scope`).
    pub fn require_scope(&self, scope: &str) -> Result<(), VerifyError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(VerifyError::InsufficientScope(scope.to_owned()))
        }
    }

    /// The audience the token was accepted for: this app's own identifier.
    pub fn audience(&self) -> &str {
        &self.claims.aud
    }

    /// Every agent that acted (RFC 8693 §4.1 `act`), current first: the first is the agent
    /// presenting the token, the last the one the user delegated to.
    pub fn actors(&self) -> &[String] {
        &self.actors
    }

    /// The agent acting now (the outermost `act`).
    pub fn current_actor(&self) -> &str {
        &self.claims.act.sub
    }

    /// The delegation chain this token belongs to (`chain_id`): revoking it revokes the token.
    pub fn chain_id(&self) -> &str {
        &self.claims.chain_id
    }

    /// The hop ids this token derives from, root first (`ancestors`).
    pub fn ancestors(&self) -> &[String] {
        &self.claims.ancestors
    }

    /// The hop's depth in its chain: `ancestors().len() + 1` (1 for a token obtained straight
    /// from the user's grant).
    pub fn depth(&self) -> usize {
        self.claims.ancestors.len() + 1
    }

    /// The hop id (`jti`): unique per token, the id an administrator revokes it by.
    pub fn jti(&self) -> &str {
        &self.claims.jti
    }

    /// When the token was issued (`iat`, seconds since the epoch).
    pub fn issued_at(&self) -> i64 {
        self.claims.iat
    }

    /// When the token expires (`exp`, seconds since the epoch).
    pub fn expires_at(&self) -> i64 {
        self.claims.exp
    }

    /// The thumbprint of the key the token is bound to (`cnf.jkt`, RFC 9449), when it is: only
    /// ever accepted with a proof by that key.
    pub fn jkt(&self) -> Option<&str> {
        self.claims.cnf.as_ref().map(|c| c.jkt.as_str())
    }

    /// All claims. `aud` holds this app's identifier (also when the token carried it in an
    /// array).
    pub fn claims(&self) -> &AccessTokenClaims {
        &self.claims
    }
}
