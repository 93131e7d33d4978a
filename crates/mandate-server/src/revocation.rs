//! Revocation as the public endpoints use it: RFC 7009 for a client's own tokens. The grains,
//! their entry lifetimes and their audit events are mandate-core's
//! [`RevocationService`](mandate_core::RevocationService).

pub use mandate_core::revocation::{facts_of_hop, RevocationOutcome, RevokeError};

use crate::error::OAuthError;
use crate::state::AppState;

impl AppState {
    /// RFC 7009 for `client`: a genuine, unexpired mandate token whose `client_id` is the
    /// client's has its hop (and subtree) revoked and audited; anything else changes nothing and is
    /// not an error, so the answer reveals nothing about the token (decision D8). Only a store
    /// failure is an error (503). The revocation's Shared Signals are queued before the answer,
    /// like an administrator's.
    pub async fn revoke_own_token(
        &self,
        client: &mandate_store::Client,
        token: &str,
    ) -> Result<(), OAuthError> {
        let Some(claims) = self.own_token_claims(token) else {
            return Ok(());
        };
        if claims.client_id != client.id.as_str() {
            return Ok(());
        }
        let revoked = self
            .revocation
            .revoke_by_its_client(&claims.jti, client.id.as_str())
            .await
            .map_err(|e| OAuthError::store_down("token revocation", &e))?;
        if let Some(outcome) = revoked {
            let reason = "revoked by its client (RFC 7009)";
            self.ssf
                .raise(mandate_core::ssf::Grain::Hop, &outcome, reason)
                .await
                .map_err(|e| OAuthError::store_down("token revocation's Shared Signals", &e))?;
        }
        Ok(())
    }
}
