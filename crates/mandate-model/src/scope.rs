use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::printable;

/// A set of OAuth scope tokens (RFC 6749 §3.3), kept sorted so that the wire form is stable.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ScopeSet(BTreeSet<String>);

/// Why a scope string or list is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a valid scope token (RFC 6749 §3.3: printable ASCII without space, '\"' or '\\')"
)]
pub struct ScopeError(pub String);

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the space-delimited wire form (RFC 6749 §3.3). Repeated spaces are tolerated.
    pub fn parse(value: &str) -> Result<Self, ScopeError> {
        Self::from_tokens(value.split(' ').filter(|t| !t.is_empty()))
    }

    /// Builds a set from individual tokens, each of which must be a valid scope token.
    pub fn from_tokens<I, S>(tokens: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for token in tokens {
            let token = token.as_ref();
            if !is_scope_token(token) {
                return Err(ScopeError(printable(token)));
            }
            set.insert(token.to_owned());
        }
        Ok(Self(set))
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes in both sets.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// Whether the set contains `scope`.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The scopes in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl TryFrom<Vec<String>> for ScopeSet {
    type Error = ScopeError;
    fn try_from(value: Vec<String>) -> Result<Self, Self::Error> {
        Self::from_tokens(value)
    }
}

impl From<ScopeSet> for Vec<String> {
    fn from(set: ScopeSet) -> Self {
        set.0.into_iter().collect()
    }
}

impl fmt::Display for ScopeSet {
    /// The space-delimited wire form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_prints_the_wire_form() {
        let set = ScopeSet::parse("calendar.write  calendar.read").unwrap();
        assert_eq!(set.to_string(), "calendar.read calendar.write");
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn refuses_invalid_tokens() {
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::from_tokens(["a b"]).is_err());
        assert!(ScopeSet::from_tokens([""]).is_err());
        assert!(ScopeSet::parse("caf\u{e9}").is_err());
    }

    proptest! {
        #[test]
        fn intersection_is_a_subset_of_both(a in "[a-d ]{0,12}", b in "[a-d ]{0,12}") {
            let a = ScopeSet::parse(&a).unwrap();
            let b = ScopeSet::parse(&b).unwrap();
            let i = a.intersection(&b);
            prop_assert!(i.is_subset(&a));
            prop_assert!(i.is_subset(&b));
        }

        #[test]
        fn wire_form_round_trips(s in "[a-z.:]{1,6}( [a-z.:]{1,6}){0,4}") {
            let set = ScopeSet::parse(&s).unwrap();
            prop_assert_eq!(ScopeSet::parse(&set.to_string()).unwrap(), set);
        }
    }
}
