//! The identity headers the app behind the gateway reads, and the rule that no caller can send
//! them itself.

use mandate_verify::VerifiedToken;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

/// The user the agents act for.
pub const SUBJECT: &str = "x-mandate-subject";
/// Every agent on the chain, the current one (the token's client) first, comma-separated.
pub const ACTORS: &str = "x-mandate-actors";
/// The delegation chain's id.
pub const CHAIN: &str = "x-mandate-chain";
/// The scopes granted, space-separated.
pub const SCOPE: &str = "x-mandate-scope";

/// What is encoded in a header value: controls, non-ASCII, and the separators the headers use
/// (`,` between actors, space between scopes) when inside one item, and `%` itself.
const ITEM: &AsciiSet = &CONTROLS.add(b' ').add(b',').add(b'%').add(b'"');

/// Whether a header a caller sent is one only the gateway may set: every `X-Mandate-*` header,
/// so that names added later are covered too.
pub fn is_reserved(name: &str) -> bool {
    name.len() >= 10 && name[..10].eq_ignore_ascii_case("x-mandate-")
}

/// The identity headers for `token`. Values are UTF-8 with controls, non-ASCII bytes, `%`, `"`,
/// and the list separators percent-encoded (RFC 3986), so every value is a valid header value
/// and a subject cannot forge a second actor.
pub fn headers(token: &VerifiedToken) -> [(&'static str, String); 4] {
    let item = |value: &str| utf8_percent_encode(value, ITEM).to_string();
    let actors: Vec<String> = token.actors().iter().map(|a| item(a)).collect();
    let scopes: Vec<String> = token.scopes().iter().map(item).collect();
    [
        (SUBJECT, item(token.subject())),
        (ACTORS, actors.join(",")),
        (CHAIN, item(token.chain_id())),
        (SCOPE, scopes.join(" ")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_x_mandate_header_is_reserved_in_any_case() {
        for name in [
            "x-mandate-subject",
            "X-Mandate-Actors",
            "X-MANDATE-NEW",
            "x-mandate-",
        ] {
            assert!(is_reserved(name), "{name}");
        }
        for name in [
            "x-mandate",
            "x-mandates-subject",
            "authorization",
            "x-forwarded-for",
        ] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn separators_and_non_ascii_are_encoded() {
        let encoded = utf8_percent_encode("corp|zoë, admin\r\n", ITEM).to_string();
        assert_eq!(encoded, "corp|zo%C3%AB%2C%20admin%0D%0A");
    }
}
