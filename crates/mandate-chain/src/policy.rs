use std::collections::HashMap;

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

/// Why a policy row cannot be stored. The configuration file and the admin API both check rows
/// with [`PolicyRow::check`], so a row one accepts the other accepts too.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRowError {
    /// The row allows nothing.
    #[error("scopes must name at least one scope")]
    NoScopes,
    /// A path of no hops.
    #[error("max_depth must be at least 1")]
    ZeroDepth,
    /// The actor, or the agent a hand-off row targets, is not a registered agent.
    #[error("{role} names '{}{agent}', which is not a registered agent", if *role == "audience" { "agent:" } else { "" })]
    UnknownAgent {
        /// `actor` or `audience`.
        role: &'static str,
        /// The agent named.
        agent: ClientId,
    },
}

impl PolicyRowError {
    /// The row's field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::NoScopes => "scopes",
            Self::ZeroDepth => "max_depth",
            Self::UnknownAgent { role, .. } => role,
        }
    }
}

impl PolicyRow {
    /// The rules every stored row obeys, checked in this order: at least one scope, a depth bound
    /// of at least 1, and an actor (and hand-off target) that `is_agent` knows as a registered
    /// agent.
    pub fn check(&self, is_agent: impl Fn(&ClientId) -> bool) -> Result<(), PolicyRowError> {
        if self.scopes.is_empty() {
            return Err(PolicyRowError::NoScopes);
        }
        if self.max_depth == Some(0) {
            return Err(PolicyRowError::ZeroDepth);
        }
        for (role, agent) in [
            ("actor", Some(&self.actor)),
            ("audience", self.audience.agent()),
        ] {
            match agent {
                Some(agent) if !is_agent(agent) => {
                    return Err(PolicyRowError::UnknownAgent {
                        role,
                        agent: agent.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The agents the row names: its actor, and the target of a hand-off row.
    pub fn agents(&self) -> impl Iterator<Item = &ClientId> {
        std::iter::once(&self.actor).chain(self.audience.agent())
    }
}

/// The policy: deny by default; every hop needs a row for (actor, audience).
///
/// Built once per version of the stored rows and then shared (the stores hand out an
/// `Arc<Policy>`), so its lookups, not its construction, are on every exchange's path: by actor,
/// then by audience, each a hash lookup, so a policy of thousands of rows costs an exchange no
/// more than one of two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    rows: Vec<PolicyRow>,
    by_actor: HashMap<ClientId, ActorRows>,
}

/// One actor's rows, as indexes into [`Policy::rows`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ActorRows {
    /// In row order: a hand-off lists the apps in this order.
    in_order: Vec<usize>,
    by_audience: HashMap<Audience, usize>,
}

impl Policy {
    /// A policy of these rows. Rows for the same (actor, audience) are merged: scopes unite,
    /// the smallest `max_depth` wins.
    pub fn new(rows: Vec<PolicyRow>) -> Self {
        let mut merged: Vec<PolicyRow> = Vec::with_capacity(rows.len());
        let mut by_actor: HashMap<ClientId, ActorRows> = HashMap::new();
        for row in rows {
            let actor_rows = by_actor.entry(row.actor.clone()).or_default();
            match actor_rows.by_audience.get(&row.audience) {
                Some(&at) => {
                    let existing = &mut merged[at];
                    existing.scopes =
                        ScopeSet::from_tokens(existing.scopes.iter().chain(row.scopes.iter()))
                            .unwrap_or_else(|_| existing.scopes.clone());
                    existing.max_depth = match (existing.max_depth, row.max_depth) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => {
                    actor_rows
                        .by_audience
                        .insert(row.audience.clone(), merged.len());
                    actor_rows.in_order.push(merged.len());
                    merged.push(row);
                }
            }
        }
        Self {
            rows: merged,
            by_actor,
        }
    }

    /// The row for (actor, audience).
    pub fn row(&self, actor: &ClientId, audience: &Audience) -> Option<&PolicyRow> {
        let at = self.by_actor.get(actor)?.by_audience.get(audience)?;
        self.rows.get(*at)
    }

    /// The actor's rows for apps, in row order.
    pub fn app_rows<'a>(&'a self, actor: &'a ClientId) -> impl Iterator<Item = &'a PolicyRow> + 'a {
        self.by_actor
            .get(actor)
            .into_iter()
            .flat_map(|actor_rows| actor_rows.in_order.iter())
            .filter_map(|at| self.rows.get(*at))
            .filter(|row| row.audience.agent().is_none())
    }

    /// Every row.
    pub fn rows(&self) -> &[PolicyRow] {
        &self.rows
    }
}

/// A row from the text of its parts, for the crate's tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn row(actor: &str, audience: &str, scopes: &str, max_depth: Option<u32>) -> PolicyRow {
    PolicyRow {
        actor: ClientId::parse(actor).unwrap(),
        audience: Audience::parse(audience).unwrap(),
        scopes: ScopeSet::parse(scopes).unwrap(),
        max_depth,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod row_rules {
    use super::*;

    #[test]
    fn a_row_needs_scopes_a_positive_depth_and_registered_agents() {
        let known = |id: &ClientId| id.as_str() == "assistant";
        assert_eq!(
            row("assistant", "https://cal.example.com", "read", Some(2)).check(known),
            Ok(())
        );
        assert_eq!(
            row("assistant", "https://cal.example.com", "", None).check(known),
            Err(PolicyRowError::NoScopes)
        );
        assert_eq!(
            row("assistant", "https://cal.example.com", "read", Some(0)).check(known),
            Err(PolicyRowError::ZeroDepth)
        );
        let ghost = row("ghost", "https://cal.example.com", "read", None).check(known);
        assert_eq!(ghost.as_ref().unwrap_err().field(), "actor");
        let hand_off = row("assistant", "agent:ghost", "read", None)
            .check(known)
            .unwrap_err();
        assert_eq!(hand_off.field(), "audience");
        assert_eq!(
            hand_off.to_string(),
            "audience names 'agent:ghost', which is not a registered agent"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_for_one_pair_merge_where_the_first_stood() {
        let policy = Policy::new(vec![
            row("assistant", "https://cal.example", "cal.read", Some(4)),
            row("assistant", "agent:planner", "cal.read", None),
            row("assistant", "https://cal.example", "cal.write", Some(2)),
            row("planner", "https://cal.example", "cal.read", None),
        ]);
        assert_eq!(
            policy.rows(),
            [
                row(
                    "assistant",
                    "https://cal.example",
                    "cal.read cal.write",
                    Some(2)
                ),
                row("assistant", "agent:planner", "cal.read", None),
                row("planner", "https://cal.example", "cal.read", None),
            ]
        );
        let assistant = ClientId::parse("assistant").unwrap();
        let cal = Audience::parse("https://cal.example").unwrap();
        assert_eq!(policy.row(&assistant, &cal), Some(&policy.rows()[0]));
        let nobody = ClientId::parse("nobody").unwrap();
        assert_eq!(policy.row(&nobody, &cal), None);
        let mail = Audience::parse("https://mail.example").unwrap();
        assert_eq!(policy.row(&assistant, &mail), None);
    }

    #[test]
    fn an_actors_app_rows_come_in_row_order_without_its_hand_offs() {
        let policy = Policy::new(vec![
            row("assistant", "https://mail.example", "mail.read", None),
            row("other", "https://cal.example", "cal.read", None),
            row("assistant", "agent:planner", "cal.read", None),
            row("assistant", "https://cal.example", "cal.read", None),
            row("assistant", "https://mail.example", "mail.send", None),
        ]);
        let assistant = ClientId::parse("assistant").unwrap();
        let apps: Vec<String> = policy
            .app_rows(&assistant)
            .map(|r| format!("{} {}", r.audience, r.scopes))
            .collect();
        assert_eq!(
            apps,
            [
                "https://mail.example mail.read mail.send",
                "https://cal.example cal.read"
            ]
        );
        let nobody = ClientId::parse("nobody").unwrap();
        assert_eq!(policy.app_rows(&nobody).count(), 0);
    }

    #[test]
    fn every_row_of_a_large_policy_is_found_under_its_own_pair() {
        let rows: Vec<PolicyRow> = (0..200)
            .flat_map(|agent| {
                (0..10).map(move |app| {
                    row(
                        &format!("agent-{agent}"),
                        &format!("https://app{app}.example"),
                        &format!("s{agent}.{app}"),
                        None,
                    )
                })
            })
            .collect();
        let policy = Policy::new(rows.clone());
        assert_eq!(policy.rows(), rows.as_slice());
        for expected in &rows {
            assert_eq!(
                policy.row(&expected.actor, &expected.audience),
                Some(expected)
            );
        }
    }
}
