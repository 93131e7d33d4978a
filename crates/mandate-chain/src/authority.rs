use std::collections::BTreeMap;

use mandate_model::{Audience, ScopeSet};
use mandate_token::{DelegationDetail, DELEGATION_DETAIL_TYPE};
use serde::{Deserialize, Serialize};

/// What a hop may do: a set of (app audience, scopes) pairs (DESIGN.md section 5). Audiences
/// here are always apps; a hand-off's `agent:` audience is where the authority goes, not part of
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority(BTreeMap<String, ScopeSet>);

/// Why `authorization_details` could not be read as delegated authority.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization_details: {0}")]
pub struct AuthorityError(pub &'static str);

impl Authority {
    /// No authority.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds scopes for an app audience (merging with what is there); empty sets are not stored.
    pub fn insert(&mut self, audience: &str, scopes: ScopeSet) {
        if scopes.is_empty() {
            return;
        }
        let merged = match self.0.remove(audience) {
            Some(existing) => {
                ScopeSet::from_tokens(existing.iter().chain(scopes.iter())).unwrap_or(existing)
            }
            None => scopes,
        };
        self.0.insert(audience.to_owned(), merged);
    }

    /// The scopes for `audience`.
    pub fn scopes(&self, audience: &str) -> Option<&ScopeSet> {
        self.0.get(audience)
    }

    /// The pairs.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &ScopeSet)> {
        self.0.iter().map(|(a, s)| (a.as_str(), s))
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether every pair of `self` is within `other`.
    pub fn is_subset(&self, other: &Authority) -> bool {
        self.0
            .iter()
            .all(|(aud, scopes)| other.0.get(aud).is_some_and(|o| scopes.is_subset(o)))
    }

    /// Reads the RFC 9396 form. Every entry must be of type `mandate_delegation` with an app
    /// audience and valid scopes.
    pub fn from_details(details: &[DelegationDetail]) -> Result<Self, AuthorityError> {
        let mut authority = Authority::new();
        for detail in details {
            if detail.kind != DELEGATION_DETAIL_TYPE {
                return Err(AuthorityError("unsupported type"));
            }
            match Audience::parse(&detail.audience) {
                Ok(Audience::App(uri)) => {
                    let scopes = ScopeSet::from_tokens(&detail.scopes)
                        .map_err(|_| AuthorityError("invalid scope"))?;
                    if scopes.is_empty() {
                        return Err(AuthorityError("empty scopes"));
                    }
                    authority.insert(&uri, scopes);
                }
                _ => return Err(AuthorityError("audience must be an app URI")),
            }
        }
        Ok(authority)
    }

    /// The RFC 9396 form carried by hand-off tokens.
    pub fn to_details(&self) -> Vec<DelegationDetail> {
        self.0
            .iter()
            .map(|(audience, scopes)| DelegationDetail {
                kind: DELEGATION_DETAIL_TYPE.to_owned(),
                audience: audience.clone(),
                scopes: scopes.iter().map(str::to_owned).collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(s: &str) -> ScopeSet {
        ScopeSet::parse(s).unwrap()
    }

    #[test]
    fn details_round_trip() {
        let mut authority = Authority::new();
        authority.insert("https://a.example.com", scopes("r w"));
        authority.insert("https://b.example.com", scopes("x"));
        assert_eq!(
            Authority::from_details(&authority.to_details()).unwrap(),
            authority
        );
    }

    #[test]
    fn details_must_be_ours_and_name_apps() {
        let bad = |kind: &str, aud: &str, s: &[&str]| DelegationDetail {
            kind: kind.into(),
            audience: aud.into(),
            scopes: s.iter().map(|x| x.to_string()).collect(),
        };
        assert!(
            Authority::from_details(&[bad("payment", "https://a.example.com", &["r"])]).is_err()
        );
        assert!(
            Authority::from_details(&[bad(DELEGATION_DETAIL_TYPE, "agent:x", &["r"])]).is_err()
        );
        assert!(Authority::from_details(&[bad(
            DELEGATION_DETAIL_TYPE,
            "https://a.example.com",
            &[]
        )])
        .is_err());
        assert!(Authority::from_details(&[bad(
            DELEGATION_DETAIL_TYPE,
            "https://a.example.com",
            &["a b"]
        )])
        .is_err());
    }

    #[test]
    fn subset_is_pairwise() {
        let mut big = Authority::new();
        big.insert("https://a.example.com", scopes("r w"));
        let mut small = Authority::new();
        small.insert("https://a.example.com", scopes("r"));
        assert!(small.is_subset(&big));
        assert!(!big.is_subset(&small));
        small.insert("https://b.example.com", scopes("r"));
        assert!(!small.is_subset(&big));
    }
}
