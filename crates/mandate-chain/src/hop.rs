use std::fmt;

use mandate_model::{Audience, ClientId, Subject};
use serde::{Deserialize, Serialize};

use crate::Authority;

/// A hop id (`jti` of the token the hop issued): `hop_` + ≥ 128 random bits, base64url.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HopId(pub String);

/// A chain id: `chn_` + a keyed hash of the upstream grant.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChainId(pub String);

impl fmt::Display for HopId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which consent evidence allowed a hop (DESIGN.md section 5, "Who may present a subject token").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// 1: an upstream ID token or JWT issued to the actor (the user signed in to it).
    UpstreamAudience,
    /// 2: the subject token's `may_act` names the actor.
    MayAct,
    /// 3: a stored consent grant.
    ConsentGrant,
    /// 4: a mandate hand-off token addressed to the actor.
    HandOff,
    /// An ID-JAG redeemed with the jwt-bearer grant (DESIGN.md section 7, resource-AS half): the
    /// IdP's policy decision stands in for consent. The hop's `upstream` names the ID-JAG.
    IdJag,
}

/// The evidence a hop recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Which kind.
    pub kind: EvidenceKind,
    /// What it points at: the upstream client id, the consent grant id, the parent hop id, or for
    /// an ID-JAG a JSON object with its `iss`, `jti` and (information only) its foreign `act`.
    pub reference: String,
}

/// The upstream grant a chain is rooted on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamGrant {
    /// The upstream issuer.
    pub issuer: String,
    /// Its `jti`, or `sha256:<hex>` of what its issuer signed (`header.payload`) when it has none.
    pub grant_id: String,
    /// When the upstream grant expires.
    pub expires_at: i64,
}

/// One issued token, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopRecord {
    /// The hop id (the token's `jti`).
    pub id: HopId,
    /// The parent hop (`None` for a root).
    pub parent: Option<HopId>,
    /// The chain.
    pub chain_id: ChainId,
    /// Every ancestor, root first.
    pub ancestors: Vec<HopId>,
    /// The user.
    pub subject: Subject,
    /// The actors, current first.
    pub actors: Vec<ClientId>,
    /// The agent that requested it.
    pub client_id: ClientId,
    /// Its audience.
    pub audience: Audience,
    /// Its authority.
    pub authority: Authority,
    /// Issued at (seconds).
    pub issued_at: i64,
    /// Expiry (seconds).
    pub expires_at: i64,
    /// `ancestors.len() + 1`.
    pub depth: u32,
    /// The deepest this path may go: min of `max_chain_depth` and every row's `max_depth`.
    pub depth_limit: u32,
    /// The consent evidence.
    pub evidence: Evidence,
    /// For roots: the upstream grant.
    pub upstream: Option<UpstreamGrant>,
    /// RFC 9449: the thumbprint of the key the token is bound to (`cnf.jkt`), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// The token request that made it: its request id (in the access log too) and the caller's
    /// W3C `traceparent`, so that the hop joins the logs and traces of its request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestTrace>,
}

/// Where a hop came from, for correlation (docs/EVIDENCE.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestTrace {
    /// The request id of the token request.
    pub id: String,
    /// The caller's W3C `traceparent`, when it sent a valid one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl RequestTrace {
    /// `value` if it is a valid W3C `traceparent` (version 00: `00-<32 hex>-<16 hex>-<2 hex>`,
    /// lowercase, ids not all zero; a later version may append fields after a `-`).
    pub fn valid_traceparent(value: &str) -> Option<&str> {
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let mut parts = value.splitn(5, '-');
        let (version, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let rest = parts.next();
        let well_formed = value.len() <= 256
            && hex(version, 2)
            && version != "ff"
            && hex(trace, 32)
            && trace.bytes().any(|b| b != b'0')
            && hex(parent, 16)
            && parent.bytes().any(|b| b != b'0')
            && hex(flags, 2)
            && (rest.is_none() || version != "00");
        well_formed.then_some(value)
    }
}

impl HopRecord {
    /// How many more hops may follow this one.
    pub fn remaining_depth(&self) -> u32 {
        self.depth_limit.saturating_sub(self.depth)
    }

    /// The consent grants this hop roots its chain on: only a root's `ConsentGrant` evidence
    /// counts, and its reference may name several grants, separated by spaces.
    pub fn rooted_consents(&self) -> impl Iterator<Item = &str> {
        let is_rooted = self.parent.is_none() && self.evidence.kind == EvidenceKind::ConsentGrant;
        self.evidence
            .reference
            .split(' ')
            .filter(move |id| is_rooted && !id.is_empty())
    }
}

#[cfg(test)]
mod trace_tests {
    use super::RequestTrace;

    #[test]
    fn only_a_well_formed_traceparent_is_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(RequestTrace::valid_traceparent(good), Some(good));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(RequestTrace::valid_traceparent(bad), None, "{bad:?}");
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert_eq!(RequestTrace::valid_traceparent(later), Some(later));
        // A later version may append fields, but not without bound: nothing over 256 bytes is
        // recorded with the hop.
        let oversized = format!("{later}{}", "-x".repeat(120));
        assert_eq!(RequestTrace::valid_traceparent(&oversized), None);
    }
}
