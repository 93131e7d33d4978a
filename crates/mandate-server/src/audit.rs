//! The audit stream as the token endpoint uses it: refusals noted where they are decided and
//! appended once the operation returns. The stream itself (events, filters, the memory and Redis
//! backends) lives in mandate-store.

use std::sync::Mutex;

use mandate_model::log_safe;

pub use mandate_store::{
    AuditEvent, AuditFilter, AuditLog, AuditUnavailable, MemoryAuditLog, RedisAuditLog,
    AUDIT_STREAM_KEY, FILTER_SCAN_MAX,
};

use crate::error::OAuthError;
use crate::state::AppState;

/// The refusal a token-endpoint operation ended with. The operation's refusal paths call
/// [`Refusals::refuse`] where the decision is made (a synchronous closure cannot append to the
/// stream): it logs the refusal on the `audit` target and notes it; the operation appends the
/// noted refusal once it returns ([`Refusals::flush`]). Store failures and authentication
/// failures are not refusals of an exchange and never pass through here.
#[derive(Debug)]
pub(crate) struct Refusals {
    client_id: String,
    action: &'static str,
    noted: Mutex<Option<String>>,
}

impl Refusals {
    /// Refusals of `action` (e.g. `exchange.refused`) for the authenticated `client_id`.
    pub(crate) fn new(client_id: &str, action: &'static str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            action,
            noted: Mutex::new(None),
        }
    }

    /// Logs and notes a refusal as `<oauth error code>: <reason>`, and gives `error` back.
    /// `reason` is mandate's own description (an error's display), never a token or a secret.
    pub(crate) fn refuse(&self, reason: &dyn std::fmt::Display, error: OAuthError) -> OAuthError {
        let reason = reason.to_string();
        tracing::info!(target: "audit", client_id = %self.client_id, action = self.action, reason = %log_safe(&reason), "refused");
        let code = serde_json::to_value(error.code())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if let Ok(mut noted) = self.noted.lock() {
            *noted = Some(format!("{code}: {reason}"));
        }
        error
    }

    /// Appends the noted refusal, if any, by `client:<client_id>` on `target`.
    pub(crate) async fn flush(&self, state: &AppState, target: &str) {
        let detail = self.noted.lock().ok().and_then(|mut noted| noted.take());
        if let Some(detail) = detail {
            let at = state.clock.now().timestamp_millis();
            let actor = format!("client:{}", self.client_id);
            state
                .audit
                .record(AuditEvent::new(at, actor, self.action, target, detail))
                .await;
        }
    }
}
