use std::fmt;

use serde::{Deserialize, Serialize};

/// An OAuth client id as mandate allows it: `[a-z0-9][a-z0-9._-]{0,63}`.
///
/// The syntax keeps ids apart from audiences (no `:`) and from namespaced subjects (no `|`, no
/// `@`), so that no client id can ever be mistaken for either (DESIGN.md section 3).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

/// Why a string is not a client id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid client id: it must match [a-z0-9][a-z0-9._-]{{0,63}}")]
pub struct ClientIdError(pub String);

impl ClientId {
    /// Parses a client id, refusing anything outside the allowed syntax.
    pub fn parse(value: &str) -> Result<Self, ClientIdError> {
        if is_identifier(value, 64, |c| matches!(c, '.' | '_' | '-')) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ClientIdError(printable(value)))
        }
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = ClientIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ClientId> for String {
    fn from(id: ClientId) -> Self {
        id.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The short name of a trusted issuer, used to namespace its subjects (`corp|alice`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IssuerAlias(String);

/// Why a string is not an issuer alias.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a valid issuer alias: it must match [a-z0-9][a-z0-9_-]{{0,31}}")]
pub struct IssuerAliasError(pub String);

impl IssuerAlias {
    /// Parses an alias. Aliases never contain `|`, so `alias|sub` splits unambiguously.
    pub fn parse(value: &str) -> Result<Self, IssuerAliasError> {
        if is_identifier(value, 32, |c| matches!(c, '_' | '-')) {
            Ok(Self(value.to_owned()))
        } else {
            Err(IssuerAliasError(printable(value)))
        }
    }

    /// The alias as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IssuerAlias {
    type Error = IssuerAliasError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<IssuerAlias> for String {
    fn from(alias: IssuerAlias) -> Self {
        alias.0
    }
}

impl fmt::Display for IssuerAlias {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `[a-z0-9]` first, then up to `max_len - 1` of `[a-z0-9]` or the extra punctuation.
fn is_identifier(value: &str, max_len: usize, extra: impl Fn(char) -> bool) -> bool {
    let mut chars = value.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    value.len() <= max_len && plain(first) && chars.all(|c| plain(c) || extra(c))
}

/// `value` with its control characters written as escapes (`\n`, `\u{1b}`), for a log field: a
/// client-supplied value must not end a log line and start a forged one, or colour a terminal.
pub fn log_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    std::borrow::Cow::Owned(escaped)
}

/// Error messages quote the offending value; keep them short and free of control characters.
pub(crate) fn printable(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > 80 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_safe_values_hold_no_control_characters() {
        assert_eq!(log_safe("travel-agent"), "travel-agent");
        assert_eq!(log_safe("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(log_safe("\u{1b}[31mred\r"), "\\u{1b}[31mred\\r");
        assert_eq!(log_safe("café \"quoted\""), "café \"quoted\"");
    }

    #[test]
    fn client_ids_follow_the_documented_syntax() {
        for good in ["a", "travel-agent", "0oa1.tool_v2", &"a".repeat(64)] {
            assert!(ClientId::parse(good).is_ok(), "{good} should parse");
        }
        for bad in [
            "",
            "-lead",
            ".lead",
            "Upper",
            "agent:x",
            "a@b",
            "corp|alice",
            "sp ace",
            &"a".repeat(65),
            "é",
        ] {
            assert!(ClientId::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn aliases_cannot_contain_the_subject_separator() {
        assert!(IssuerAlias::parse("corp").is_ok());
        assert!(IssuerAlias::parse("co|rp").is_err());
        assert!(IssuerAlias::parse("corp.example").is_err());
    }

    #[test]
    fn client_id_deserialisation_applies_the_syntax() {
        let parsed: Result<ClientId, _> = serde_json::from_str("\"Bad Id\"");
        assert!(parsed.is_err());
    }
}
