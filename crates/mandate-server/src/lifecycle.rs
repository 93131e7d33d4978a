//! The agent lifecycle policy (`[lifecycle]`, docs/GOVERNANCE.md): every node suspends, once an
//! hour, the active agents unused for `suspend_unused_agents_after_days`. Each suspension is the
//! admin API's (revocation first, audited, Shared Signals raised) by `system:lifecycle`; nodes
//! racing for the same agent suspend it once.

use std::time::Duration;

use mandate_core::ssf::Grain;

use crate::state::AppState;

/// How often each node looks.
const SWEEP_EVERY: Duration = Duration::from_secs(3_600);

/// Runs [`sweep`] every hour, from a minute after start, while the policy is on.
pub(crate) async fn sweeps(state: AppState) {
    if state.settings.lifecycle.suspend_unused_agents_after_days == 0 {
        return;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    loop {
        match sweep(&state).await {
            Ok(0) => {}
            Ok(suspended) => tracing::info!(suspended, "unused agents suspended"),
            Err(error) => tracing::warn!(%error, "unused agents not checked"),
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// Suspends the active agents unused for the configured number of days (none when the policy
/// is off); how many it suspended.
pub async fn sweep(state: &AppState) -> Result<usize, String> {
    let days = state.settings.lifecycle.suspend_unused_agents_after_days;
    if days == 0 {
        return Ok(0);
    }
    let after = chrono::Duration::days(i64::from(days));
    let suspended = state
        .agents
        .suspend_unused(&state.usage, after)
        .await
        .map_err(|e| e.to_string())?;
    let reason = format!("unused for {days} days");
    for (client, outcome) in &suspended {
        tracing::info!(target: "audit", client_id = %client.id, hops = outcome.hops_revoked.len(), "agent suspended: {reason}");
        if let Err(error) = state
            .ssf
            .raise(Grain::Agent(client.id.as_str()), outcome, &reason)
            .await
        {
            tracing::warn!(%error, client_id = %client.id, "Shared Signals for a suspension not queued");
        }
    }
    Ok(suspended.len())
}
