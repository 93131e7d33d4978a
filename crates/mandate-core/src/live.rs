//! The live hops of a user or an agent. The ledger has no index by subject or agent, so they
//! are found among the chains started within the live window — the oldest upstream token
//! accepted plus a token lifetime per hop of the deepest chain — a page of chains at a time: the
//! cost grows with the chains of that window, paid once per subject or agent revocation (and per
//! credential change with Shared Signals streams).

use mandate_chain::{ChainPage, HopRecord, Ledger};

/// Chains read per page.
const PAGE: usize = 200;

/// The hops unexpired at `at_ms` that `matches`, among the chains started at most
/// `window_secs` before it.
pub(crate) async fn live_hops(
    ledger: &dyn Ledger,
    window_secs: i64,
    at_ms: i64,
    matches: impl Fn(&HopRecord) -> bool,
) -> Result<Vec<HopRecord>, String> {
    let mut page = ChainPage {
        since: Some(at_ms.div_euclid(1000) - window_secs),
        until: None,
        after: None,
        limit: PAGE,
    };
    let mut found = Vec::new();
    loop {
        let starts = ledger
            .chains_by_start(&page)
            .await
            .map_err(|e| e.to_string())?;
        for start in &starts {
            for hop in ledger
                .chain(&start.chain_id)
                .await
                .map_err(|e| e.to_string())?
            {
                if hop.expires_at * 1000 > at_ms && matches(&hop) {
                    found.push(hop);
                }
            }
        }
        if starts.len() < page.limit {
            return Ok(found);
        }
        page.after = starts.last().cloned();
    }
}

/// Whether `agent` is the client of a hop, one of its actors, or a hand-off's recipient.
pub(crate) fn acts_in(agent: &str) -> impl Fn(&HopRecord) -> bool + '_ {
    move |hop| {
        hop.client_id.as_str() == agent
            || hop.actors.iter().any(|actor| actor.as_str() == agent)
            || hop
                .audience
                .agent()
                .is_some_and(|recipient| recipient.as_str() == agent)
    }
}
