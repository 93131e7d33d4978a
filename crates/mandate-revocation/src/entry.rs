use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a revocation entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// A hop and its whole subtree.
    Hop,
    /// A chain, and new exchanges of its upstream grant.
    Chain,
    /// New roots on a consent grant.
    Consent,
    /// Tokens issued at or before T in which the agent is the client or any actor.
    Agent,
    /// Tokens and upstream subject tokens of the user issued at or before T.
    Subject,
}

/// The largest clock skew any verifier of mandate tokens may tolerate, in seconds: the server's
/// `tokens.clock_skew_secs` and the verifier SDK's `clock_skew` are both capped at it, and every
/// entry outlives what it covers by it. An entry that lived only `exp` + the server's skew would
/// lapse while an app tolerating a larger skew still accepted the revoked token.
pub const MAX_VERIFIER_CLOCK_SKEW_SECS: i64 = 300;

/// The stream record kind of node heartbeats.
pub const HEARTBEAT_KIND: &str = "heartbeat";

impl RevocationKind {
    /// The name used in keys and stream records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hop => "hop",
            Self::Chain => "chain",
            Self::Consent => "consent",
            Self::Agent => "agent",
            Self::Subject => "subject",
        }
    }

    /// Parses the name.
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Hop,
            Self::Chain,
            Self::Consent,
            Self::Agent,
            Self::Subject,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
    }

    /// Whether entries of this kind carry a time T that bounds what they cover.
    pub fn is_timed(self) -> bool {
        matches!(self, Self::Agent | Self::Subject)
    }
}

impl fmt::Display for RevocationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A revocation to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// What kind.
    pub kind: RevocationKind,
    /// The hop id, chain id, consent id, client id or subject.
    pub id: String,
    /// When the entry may be forgotten (ms): nothing it covers lives longer.
    pub until_ms: i64,
    /// Why (free text, recorded).
    pub reason: String,
    /// Who (an admin credential's name, or `client:<id>` for RFC 7009).
    pub by: String,
}

/// A stored entry; also the stream record format (fields `kind`, `id`, `at`, `until`, `reason`,
/// `by`; times in milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// What kind.
    pub kind: RevocationKind,
    /// Its id.
    pub id: String,
    /// T: when it was written, by the store's clock (ms).
    pub at: i64,
    /// When it may be forgotten (ms).
    pub until: i64,
    /// Why.
    pub reason: String,
    /// Who.
    pub by: String,
}

/// What a token (or an upstream subject token) is made of, as far as revocation is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFacts {
    /// Its own hop id (`jti` of a mandate token).
    pub hop: Option<String>,
    /// Its ancestors' hop ids.
    pub ancestors: Vec<String>,
    /// Its chain.
    pub chain: Option<String>,
    /// Consent grants its chain is rooted on.
    pub consents: Vec<String>,
    /// The client and every actor.
    pub agents: Vec<String>,
    /// The user.
    pub subject: Option<String>,
    /// Its `iat`, in seconds.
    pub issued_at: i64,
}

impl TokenFacts {
    /// The facts of a verified mandate access token (DESIGN.md section 6): its hop (`jti`), its
    /// ancestors, its chain, every agent it names (actors read to at most `actor_depth` levels,
    /// the client, a hand-off's recipient), its subject and `iat`. The one mapping from claims to
    /// facts: the server's exchange and introspection and the verifier SDK all check these.
    pub fn of_access_token(claims: &mandate_token::AccessTokenClaims, actor_depth: usize) -> Self {
        let actors: Vec<String> = claims
            .act
            .actors(actor_depth)
            .into_iter()
            .map(str::to_owned)
            .collect();
        Self::of_access_token_with_actors(claims, &actors)
    }

    /// [`of_access_token`](Self::of_access_token) for a caller that has already read the
    /// token's actors (current first), so that the `act` nesting is walked once.
    pub fn of_access_token_with_actors(
        claims: &mandate_token::AccessTokenClaims,
        actors: &[String],
    ) -> Self {
        Self {
            hop: Some(claims.jti.clone()),
            ancestors: claims.ancestors.clone(),
            chain: Some(claims.chain_id.clone()),
            consents: Vec::new(),
            agents: Self::agents_named(actors, &claims.client_id, &claims.aud),
            subject: Some(claims.sub.clone()),
            issued_at: claims.iat,
        }
    }

    /// The agents a token names, for [`TokenFacts::agents`]: every actor, the client, and the
    /// recipient of a hand-off (`aud` = `agent:<id>`), who is about to act with it. Without the
    /// recipient, a hand-off made to an agent before its suspension would survive it (DESIGN.md
    /// section 8: suspension revokes every live token the agent appears in; SECURITY.md,
    /// finding 5).
    pub fn agents_named(actors: &[String], client_id: &str, audience: &str) -> Vec<String> {
        let mut agents = actors.to_vec();
        let recipient = audience.strip_prefix("agent:");
        for agent in std::iter::once(client_id).chain(recipient) {
            if !agents.iter().any(|a| a == agent) {
                agents.push(agent.to_owned());
            }
        }
        agents
    }

    /// The (kind, id) pairs the check must look up.
    pub fn keys(&self) -> Vec<(RevocationKind, &str)> {
        let mut keys = Vec::with_capacity(self.ancestors.len() + self.agents.len() + 4);
        keys.extend(self.hop.as_deref().map(|h| (RevocationKind::Hop, h)));
        keys.extend(
            self.ancestors
                .iter()
                .map(|h| (RevocationKind::Hop, h.as_str())),
        );
        keys.extend(self.chain.as_deref().map(|c| (RevocationKind::Chain, c)));
        keys.extend(
            self.consents
                .iter()
                .map(|c| (RevocationKind::Consent, c.as_str())),
        );
        keys.extend(
            self.agents
                .iter()
                .map(|a| (RevocationKind::Agent, a.as_str())),
        );
        keys.extend(
            self.subject
                .as_deref()
                .map(|s| (RevocationKind::Subject, s)),
        );
        keys
    }
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing on the chain is revoked.
    Live,
    /// Revoked by this entry.
    Revoked {
        /// Its kind.
        kind: RevocationKind,
        /// Its id.
        id: String,
    },
}

/// A verdict and the store's clock at the time of the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The verdict.
    pub verdict: Verdict,
    /// The store's clock (ms), read in the same round trip.
    pub now_ms: i64,
}

/// Decides for `facts` given the entry found for each of `facts.keys()` (in that order):
/// untimed entries revoke outright; agent and subject entries revoke what was issued at or
/// before their T (whole-second `iat` against T in ms, so a token issued in the same second as
/// the revocation counts as covered).
pub fn verdict(facts: &TokenFacts, found: &[Option<RevocationRecord>]) -> Verdict {
    for ((kind, id), record) in facts.keys().into_iter().zip(found) {
        let Some(record) = record else { continue };
        if !kind.is_timed() || record.at >= facts.issued_at.saturating_mul(1000) {
            return Verdict::Revoked {
                kind,
                id: id.to_owned(),
            };
        }
    }
    Verdict::Live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_access_token_names_its_hop_ancestors_chain_agents_and_subject() {
        let claims: mandate_token::AccessTokenClaims = serde_json::from_value(serde_json::json!({
            "iss": "https://mandate.example.com", "sub": "corp|alice",
            "aud": "agent:helper", "client_id": "booking-tool",
            "iat": 1_700_000_000, "nbf": 1_700_000_000, "exp": 1_700_000_300,
            "jti": "hop_3", "chain_id": "chn_1", "ancestors": ["hop_1", "hop_2"],
            "act": {"sub": "booking-tool", "act": {"sub": "assistant"}}
        }))
        .unwrap();
        let facts = TokenFacts::of_access_token(&claims, 8);
        assert_eq!(
            facts,
            TokenFacts {
                hop: Some("hop_3".into()),
                ancestors: vec!["hop_1".into(), "hop_2".into()],
                chain: Some("chn_1".into()),
                consents: vec![],
                agents: vec!["booking-tool".into(), "assistant".into(), "helper".into()],
                subject: Some("corp|alice".into()),
                issued_at: 1_700_000_000,
            }
        );
        // A nesting deeper than the bound is read no further: the client still counts.
        let shallow = TokenFacts::of_access_token(&claims, 1);
        assert_eq!(shallow.agents, ["booking-tool", "helper"]);
    }

    #[test]
    fn the_agents_of_a_token_are_its_actors_its_client_and_a_hand_off_recipient() {
        let actors = vec!["booking-tool".to_owned(), "assistant".to_owned()];
        assert_eq!(
            TokenFacts::agents_named(&actors, "booking-tool", "https://cal.example.com"),
            actors
        );
        assert_eq!(
            TokenFacts::agents_named(&actors, "booking-tool", "agent:helper"),
            ["booking-tool", "assistant", "helper"]
        );
        assert_eq!(
            TokenFacts::agents_named(&[], "assistant", "agent:booking-tool"),
            ["assistant", "booking-tool"]
        );
    }

    fn record(kind: RevocationKind, id: &str, at: i64) -> Option<RevocationRecord> {
        Some(RevocationRecord {
            kind,
            id: id.into(),
            at,
            until: at + 1000,
            reason: String::new(),
            by: String::new(),
        })
    }

    fn facts() -> TokenFacts {
        TokenFacts {
            hop: Some("h3".into()),
            ancestors: vec!["h1".into(), "h2".into()],
            chain: Some("c".into()),
            consents: vec![],
            agents: vec!["booking".into(), "assistant".into()],
            subject: Some("corp|alice".into()),
            issued_at: 100,
        }
    }

    #[test]
    fn any_revoked_ancestor_revokes() {
        let f = facts();
        let mut found = vec![None; f.keys().len()];
        assert_eq!(verdict(&f, &found), Verdict::Live);
        found[1] = record(RevocationKind::Hop, "h1", 0);
        assert_eq!(
            verdict(&f, &found),
            Verdict::Revoked {
                kind: RevocationKind::Hop,
                id: "h1".into()
            }
        );
    }

    #[test]
    fn timed_entries_cover_only_what_was_issued_before() {
        let f = facts();
        let agent_index = f
            .keys()
            .iter()
            .position(|(k, id)| *k == RevocationKind::Agent && *id == "assistant")
            .unwrap();
        let mut found = vec![None; f.keys().len()];
        found[agent_index] = record(RevocationKind::Agent, "assistant", 99_999);
        assert_eq!(
            verdict(&f, &found),
            Verdict::Live,
            "revoked before the token was issued"
        );
        found[agent_index] = record(RevocationKind::Agent, "assistant", 100_000);
        assert!(matches!(verdict(&f, &found), Verdict::Revoked { .. }));
        let subject_index = f.keys().len() - 1;
        let mut found = vec![None; f.keys().len()];
        found[subject_index] = record(RevocationKind::Subject, "corp|alice", 100_500);
        assert!(matches!(
            verdict(&f, &found),
            Verdict::Revoked {
                kind: RevocationKind::Subject,
                ..
            }
        ));
    }
}
