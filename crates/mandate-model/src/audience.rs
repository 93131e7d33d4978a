use std::fmt;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::ids::printable;
use crate::ClientId;

/// Where a token may be used (DESIGN.md section 3): an app, named by an absolute `https://` URI
/// (`http://` only on loopback), or another agent, named `agent:<client_id>`, for a hand-off.
///
/// App URIs are compared as the exact strings configured (a trailing slash matters), which is
/// what resource servers compare `aud` against.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Audience {
    /// An application's identifier, an absolute URI without fragment.
    App(String),
    /// Another agent, which may exchange the hand-off token for tokens of its own.
    Agent(ClientId),
}

/// Why a string is not an audience.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// `agent:` followed by something that is not a client id.
    #[error("'{0}' is not a valid audience: after 'agent:' comes a client id")]
    BadAgent(String),
    /// Not an absolute https URI (or http on loopback), or it has a fragment or credentials.
    #[error(
        "'{0}' is not a valid audience: use an absolute https:// URI without fragment \
         (http:// only on loopback) or agent:<client_id>"
    )]
    BadUri(String),
}

impl Audience {
    /// Parses an audience string.
    pub fn parse(value: &str) -> Result<Self, AudienceError> {
        if let Some(agent) = value.strip_prefix("agent:") {
            return ClientId::parse(agent)
                .map(Audience::Agent)
                .map_err(|_| AudienceError::BadAgent(printable(value)));
        }
        if is_app_uri(value) {
            Ok(Audience::App(value.to_owned()))
        } else {
            Err(AudienceError::BadUri(printable(value)))
        }
    }

    /// The agent this audience hands off to, if it is a hand-off audience.
    pub fn agent(&self) -> Option<&ClientId> {
        match self {
            Audience::Agent(id) => Some(id),
            Audience::App(_) => None,
        }
    }

    /// The audience as it appears in tokens.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

/// An absolute `https` URI (or `http` on a loopback host) with a host, no fragment and no
/// user-info (RFC 8707 §2: resource indicators are absolute URIs without fragment).
///
/// The string itself is what mandate keeps, compares and logs, so it must be a URI as written,
/// not merely something the URL parser can repair: the parser drops tabs and newlines and
/// percent-encodes spaces, and an audience carrying them (or an ANSI escape) would forge lines
/// in any log it is written to.
pub fn is_app_uri(value: &str) -> bool {
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return false;
    }
    let Ok(url) = Url::parse(value) else {
        return false;
    };
    let scheme_ok = match url.scheme() {
        "https" => true,
        "http" => is_loopback_url(&url),
        _ => false,
    };
    scheme_ok
        && url.host().is_some()
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !value.contains('#')
}

/// Whether the URL's host is a loopback name or address.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl TryFrom<String> for Audience {
    type Error = AudienceError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Audience> for String {
    fn from(aud: Audience) -> Self {
        aud.to_string()
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Audience::App(uri) => f.write_str(uri),
            Audience::Agent(id) => write!(f, "agent:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_and_agents_parse() {
        assert_eq!(
            Audience::parse("https://calendar.example.com/").unwrap(),
            Audience::App("https://calendar.example.com/".into())
        );
        assert_eq!(
            Audience::parse("agent:booking-tool")
                .unwrap()
                .agent()
                .unwrap()
                .as_str(),
            "booking-tool"
        );
        assert!(Audience::parse("http://127.0.0.1:9000/api").is_ok());
        assert!(Audience::parse("http://localhost/api").is_ok());
    }

    #[test]
    fn everything_else_is_refused() {
        for bad in [
            "calendar",
            "http://calendar.example.com",
            "https://calendar.example.com/#frag",
            "https://user:pw@calendar.example.com",
            "agent:",
            "agent:Bad",
            "urn:example:calendar",
            "ftp://x.example.com",
            "",
            // The URL parser would accept each of these, dropping or encoding the character.
            "https://calendar.example.com/\nINFO forged line",
            "https://calendar.exa\tmple.com/",
            "https://calendar.example.com/\u{1b}[31mred",
            "https://calendar.example.com/a b",
            "https://calendar.example.com/\r",
        ] {
            assert!(Audience::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["https://a.example.com/x", "agent:sub-agent"] {
            assert_eq!(Audience::parse(s).unwrap().to_string(), s);
        }
    }
}
