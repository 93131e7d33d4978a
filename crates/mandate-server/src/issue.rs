//! The last steps of every issuance — an exchanged access token, a redeemed ID-JAG's access
//! token, an issued ID-JAG — in the order DESIGN.md section 6 requires: sign, record the hop,
//! check the revocation list once more, and only then hand the token out.

use mandate_chain::HopRecord;
use mandate_revocation::{RevocationKind, Verdict};
use serde::Serialize;

use crate::error::{ErrorCode, OAuthError};
use crate::revocation::facts_of_hop;
use crate::state::AppState;

/// Signs `claims` as `typ`, records `hop` (nothing is issued unless its hop is recorded,
/// DESIGN.md section 1.3), runs the test pause point, and checks the hop's facts again: a
/// revocation written before this check is seen by it, one written after has T ≥ the hop's `iat`
/// and covers it. The client the token is for must still be allowed to authenticate.
///
/// A failure of signing, the ledger or the list is answered here (500 or 503); a revocation
/// that landed between the first check and now is answered by `revoked_midway`, in the caller's
/// protocol's terms.
pub async fn sign_and_record<C: Serialize + ?Sized>(
    state: &AppState,
    typ: &str,
    claims: &C,
    hop: &HopRecord,
    revoked_midway: impl FnOnce(RevocationKind) -> OAuthError,
) -> Result<String, OAuthError> {
    // The signature is made while the hop's write is in flight (on Redis the write goes out on
    // the connection's own task when first polled, so the round trip and the signature overlap);
    // the token is handed out only once both are done and the second check passes.
    let recording = state.ledger.record(hop);
    let signing = async {
        state
            .keys
            .current()
            .active()
            .sign(typ, claims)
            .map_err(|e| {
                tracing::error!(error = %e, "signing failed");
                OAuthError::new(ErrorCode::ServerError, "the token could not be signed")
            })
    };
    let (recorded, token) = tokio::join!(recording, signing);
    recorded.map_err(|e| OAuthError::store_down("recording a hop", &e))?;
    let token = token?;
    if let Some(pause) = &state.exchange_pause {
        pause.after_hop_recorded(state, hop).await;
    }
    // The client is read again with the second check. Suspending or retiring an agent writes
    // `agent:<id> @ T`, changes its state, then writes the entry again: an exchange that read
    // the state before the change and its clock after T would mint a token the first entry
    // does not cover; here it either sees the new state, or its `iat` (read before this) is
    // covered by the entry written after the change.
    let facts = facts_of_hop(hop);
    let (second, client) = tokio::join!(
        state.revocations.check(&facts),
        state.clients.client(&hop.client_id)
    );
    let second = second.map_err(|e| OAuthError::store_down("the second revocation check", &e))?;
    let client = client.map_err(|e| OAuthError::store_down("the second revocation check", &e))?;
    if !client.is_some_and(|client| client.may_authenticate(state.clock.now())) {
        return Err(revoked_midway(RevocationKind::Agent));
    }
    match second.verdict {
        Verdict::Live => Ok(token),
        Verdict::Revoked { kind, .. } => Err(revoked_midway(kind)),
    }
}
