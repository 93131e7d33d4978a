use mandate_model::{Audience, ClientId, ScopeSet};
use serde::{Deserialize, Serialize};

/// One policy row: `actor` may obtain `scopes` at `audience` (an app, or `agent:<id>` for a
/// hand-off, where `scopes` bounds what may be passed on), on paths of at most `max_depth` hops.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// The acting agent.
    pub actor: ClientId,
    /// The target.
    pub audience: Audience,
    /// What the row allows.
    pub scopes: ScopeSet,
    /// The longest path through this row, in hops.
    pub max_depth: Option<u32>,
}

/// The policy: deny by default; every hop needs a row for (actor, audience).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    rows: Vec<PolicyRow>,
}

impl Policy {
    /// A policy of these rows. Rows for the same (actor, audience) are merged: scopes unite,
    /// the smallest `max_depth` wins.
    pub fn new(rows: Vec<PolicyRow>) -> Self {
        let mut merged: Vec<PolicyRow> = Vec::with_capacity(rows.len());
        for row in rows {
            match merged
                .iter_mut()
                .find(|r| r.actor == row.actor && r.audience == row.audience)
            {
                Some(existing) => {
                    existing.scopes =
                        ScopeSet::from_tokens(existing.scopes.iter().chain(row.scopes.iter()))
                            .unwrap_or_else(|_| existing.scopes.clone());
                    existing.max_depth = match (existing.max_depth, row.max_depth) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => merged.push(row),
            }
        }
        Self { rows: merged }
    }

    /// The row for (actor, audience).
    pub fn row(&self, actor: &ClientId, audience: &Audience) -> Option<&PolicyRow> {
        self.rows
            .iter()
            .find(|r| &r.actor == actor && &r.audience == audience)
    }

    /// The actor's rows for apps.
    pub fn app_rows<'a>(&'a self, actor: &'a ClientId) -> impl Iterator<Item = &'a PolicyRow> + 'a {
        self.rows
            .iter()
            .filter(move |r| &r.actor == actor && r.audience.agent().is_none())
    }

    /// Every row.
    pub fn rows(&self) -> &[PolicyRow] {
        &self.rows
    }
}
