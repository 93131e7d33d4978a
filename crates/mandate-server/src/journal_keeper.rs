//! The journal keeper (docs/EVIDENCE.md): on every node, it seals what was appended to the
//! journal every `[journal] seal_interval_ms`, signs a checkpoint of the head every
//! `checkpoint_interval_secs` when the head moved (stored beside the entries and written to the
//! `journal` log target, so that a copy lives outside the store), and forgets entries older
//! than `ledger_retention_secs`. Nodes sharing one Redis race harmlessly: one seals each batch,
//! and a checkpoint is stored only if it is later than the last one stored.

use std::time::Duration;

use mandate_journal::sign_checkpoint;

use crate::state::AppState;

/// At most this many records are sealed in one batch (one script call).
const SEAL_BATCH: usize = 500;
/// At most this many batches per tick, so one tick cannot hold a node busy for long.
const BATCHES_PER_TICK: usize = 20;
/// How often retention is applied.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// At most this many entries forgotten per round.
const FORGET_PER_ROUND: usize = 1_000;

/// Runs the keeper until the process ends.
pub(crate) async fn keep(state: AppState) {
    let journal = &state.settings.journal;
    let mut seal = tokio::time::interval(Duration::from_millis(journal.seal_interval_ms));
    seal.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checkpoint =
        tokio::time::interval(Duration::from_secs(journal.checkpoint_interval_secs));
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut forget = tokio::time::interval(FORGET_EVERY);
    forget.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first checkpoint waits one interval: a node that just started has little to pin.
    checkpoint.tick().await;
    loop {
        tokio::select! {
            _ = seal.tick() => {
                if let Err(error) = seal_pending(&state).await {
                    tracing::warn!(%error, "journal not sealed");
                }
            }
            _ = checkpoint.tick() => {
                if let Err(error) = seal_pending(&state).await {
                    tracing::warn!(%error, "journal not sealed");
                }
                if let Err(error) = checkpoint_head(&state).await {
                    tracing::warn!(%error, "journal checkpoint not made");
                }
            }
            _ = forget.tick() => {
                if let Err(error) = forget_expired(&state).await {
                    tracing::warn!(%error, "journal retention not applied");
                }
            }
        }
    }
}

/// Seals what is pending, a few batches at most; how many records it sealed.
pub async fn seal_pending(state: &AppState) -> Result<usize, String> {
    let mut sealed = 0;
    for _ in 0..BATCHES_PER_TICK {
        let batch = state
            .journal
            .seal(SEAL_BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if batch == 0 {
            break;
        }
        sealed += batch;
    }
    if sealed > 0 {
        metrics::counter!("mandate_journal_sealed_total").increment(sealed as u64);
    }
    Ok(sealed)
}

/// Signs and stores a checkpoint of the head if it moved past the last checkpoint; whether it
/// stored one.
pub async fn checkpoint_head(state: &AppState) -> Result<bool, String> {
    let bounds = state.journal.bounds().await.map_err(|e| e.to_string())?;
    let latest = state
        .journal
        .latest_checkpoint()
        .await
        .map_err(|e| e.to_string())?;
    if bounds.head.seq == 0 || latest.is_some_and(|c| c.seq >= bounds.head.seq) {
        return Ok(false);
    }
    let keys = state.keys.current();
    let checkpoint = sign_checkpoint(
        keys.active(),
        &state.settings.issuer,
        state.clock.now().timestamp(),
        &bounds.head,
    )
    .map_err(|e| e.to_string())?;
    let stored = state
        .journal
        .add_checkpoint(&checkpoint)
        .await
        .map_err(|e| e.to_string())?;
    if stored {
        // A copy outside the store: whoever can rewrite the store cannot rewrite the logs
        // already shipped. A checkpoint is no credential.
        tracing::info!(target: "journal", seq = checkpoint.seq, hash = %checkpoint.hash, jwt = %checkpoint.jwt, "journal checkpoint");
        metrics::gauge!("mandate_journal_checkpoint_seq").set(checkpoint.seq as f64);
    }
    Ok(stored)
}

/// Forgets entries older than the ledger retention; how many.
pub async fn forget_expired(state: &AppState) -> Result<usize, String> {
    let retention_ms = i64::try_from(state.settings.tokens.ledger_retention_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000);
    let before = state
        .clock
        .now()
        .timestamp_millis()
        .saturating_sub(retention_ms);
    state
        .journal
        .forget_before(before, FORGET_PER_ROUND)
        .await
        .map_err(|e| e.to_string())
}
