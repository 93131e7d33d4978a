use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::printable;
use crate::IssuerAlias;

/// A user as mandate names them: `alias|sub`, or the bare `sub` for the one issuer marked
/// `subject_as_is` (DESIGN.md section 3). Namespacing stops one issuer from asserting another
/// issuer's users.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subject(String);

/// Why a string is not a subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Upstream `sub` values are 1 to 255 characters without control characters (OIDC Core §2).
    #[error("'{0}' is not a valid upstream subject: 1 to 255 characters, no control characters")]
    BadUpstream(String),
    /// A namespaced subject must be `alias|sub`.
    #[error("'{0}' is not a valid subject: expected <alias>|<sub> or a bare subject")]
    BadNamespaced(String),
    /// A bare subject from the `subject_as_is` issuer may not contain `|`, or it could
    /// impersonate another issuer's namespace.
    #[error("'{0}' cannot be used as-is: it contains '|', which is reserved for namespacing")]
    ReservedSeparator(String),
}

impl Subject {
    /// The subject for `sub` asserted by the issuer with `alias`; `as_is` for the one primary
    /// issuer whose subjects are used unprefixed.
    pub fn from_upstream(
        alias: &IssuerAlias,
        sub: &str,
        as_is: bool,
    ) -> Result<Self, SubjectError> {
        if sub.is_empty() || sub.len() > 255 || sub.chars().any(char::is_control) {
            return Err(SubjectError::BadUpstream(printable(sub)));
        }
        if as_is {
            if sub.contains('|') {
                return Err(SubjectError::ReservedSeparator(printable(sub)));
            }
            Ok(Self(sub.to_owned()))
        } else {
            Ok(Self(format!("{alias}|{sub}")))
        }
    }

    /// Parses a subject as it appears in mandate's own tokens and admin requests.
    pub fn parse(value: &str) -> Result<Self, SubjectError> {
        let bad = || SubjectError::BadNamespaced(printable(value));
        if value.is_empty() || value.len() > 300 || value.chars().any(char::is_control) {
            return Err(bad());
        }
        if let Some((alias, sub)) = value.split_once('|') {
            if IssuerAlias::parse(alias).is_err() || sub.is_empty() {
                return Err(bad());
            }
        }
        Ok(Self(value.to_owned()))
    }

    /// The issuer alias this subject is namespaced under; `None` for an as-is subject.
    pub fn alias(&self) -> Option<&str> {
        self.0.split_once('|').map(|(alias, _)| alias)
    }

    /// The subject as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Subject {
    type Error = SubjectError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Subject> for String {
    fn from(s: Subject) -> Self {
        s.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corp() -> IssuerAlias {
        IssuerAlias::parse("corp").unwrap()
    }

    #[test]
    fn upstream_subjects_are_namespaced() {
        let s = Subject::from_upstream(&corp(), "alice", false).unwrap();
        assert_eq!(s.as_str(), "corp|alice");
        assert_eq!(s.alias(), Some("corp"));
    }

    #[test]
    fn as_is_subjects_cannot_forge_a_namespace() {
        assert_eq!(
            Subject::from_upstream(&corp(), "alice", true)
                .unwrap()
                .as_str(),
            "alice"
        );
        assert!(matches!(
            Subject::from_upstream(&corp(), "other|alice", true),
            Err(SubjectError::ReservedSeparator(_))
        ));
    }

    #[test]
    fn a_namespaced_issuer_cannot_reach_another_namespace() {
        // "other|alice" asserted by corp stays inside corp's namespace.
        let s = Subject::from_upstream(&corp(), "other|alice", false).unwrap();
        assert_eq!(s.as_str(), "corp|other|alice");
        assert_eq!(s.alias(), Some("corp"));
    }

    #[test]
    fn malformed_subjects_are_refused() {
        assert!(Subject::from_upstream(&corp(), "", false).is_err());
        assert!(Subject::from_upstream(&corp(), "a\nb", false).is_err());
        assert!(Subject::parse("|alice").is_err());
        assert!(Subject::parse("corp|").is_err());
        assert!(Subject::parse("corp|alice").is_ok());
    }
}
