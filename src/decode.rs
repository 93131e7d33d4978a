//! `mandate token decode` (DESIGN.md section 11): shows what a JWT says, and verifies nothing.
//!
//! No signature, issuer, audience or time check, no network and no key material: the output is a
//! debugging aid and says so on its first line. The token is untrusted input, so everything shown
//! is bounded and escaped: `UnverifiedJws::parse` bounds the size and checks the shape, serde_json
//! bounds the nesting, the `act` tree shows at most [`MAX_SHOWN_ACTORS`] levels, and control and
//! bidirectional-formatting characters are escaped so a token cannot drive the terminal.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, SecondsFormat};
use mandate_token::{UnverifiedJws, MAX_TOKEN_BYTES};
use serde_json::{json, Value};

/// The first line of the human-readable output.
pub const NOT_VERIFIED: &str =
    "NOT VERIFIED: signature, issuer, audience and expiry were not checked.";

/// How many levels of a nested `act` claim the tree shows (the outermost ones: the current actor
/// and those just before it).
pub const MAX_SHOWN_ACTORS: usize = 32;

/// Standard input may hold the token plus surrounding whitespace, not much more.
const MAX_STDIN_BYTES: usize = MAX_TOKEN_BYTES + 4096;

/// The column at which the chain markers start (as in the design's example).
const MARKER_COLUMN: usize = 38;

/// The summary's name column.
const SUMMARY_WIDTH: usize = 23;

/// The token named on the command line: `-` reads it from standard input (trimmed), so tokens need
/// not appear in the shell history or the process list.
pub fn read_token(argument: &str) -> anyhow::Result<String> {
    if argument == "-" {
        read_bounded(std::io::stdin().lock())
    } else {
        Ok(argument.trim().to_owned())
    }
}

fn read_bounded(reader: impl Read) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_STDIN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the token from standard input")?;
    if bytes.len() > MAX_STDIN_BYTES {
        bail!("the token on standard input is larger than {MAX_TOKEN_BYTES} bytes");
    }
    let text = String::from_utf8(bytes).context("standard input is not UTF-8")?;
    let token = text.trim();
    if token.is_empty() {
        bail!("no token on standard input");
    }
    Ok(token.to_owned())
}

/// A token split into its header and claims, nothing checked.
#[derive(Debug)]
pub struct Decoded {
    header: Value,
    claims: Value,
}

impl Decoded {
    /// Splits and decodes `token` without verifying anything.
    pub fn parse(token: &str) -> anyhow::Result<Self> {
        let jws = UnverifiedJws::parse(token).context("cannot decode the token")?;
        // `parse` checked the shape and reads only the header members it uses; decode the header
        // again as a whole so every member is shown.
        let header_b64 = token.split('.').next().unwrap_or_default();
        let header_json = URL_SAFE_NO_PAD
            .decode(header_b64)
            .context("cannot decode the token: header is not base64url")?;
        let header: Value = serde_json::from_slice(&header_json)
            .context("cannot decode the token: header is not JSON")?;
        let claims: Value = jws
            .dangerous_unverified_claims()
            .context("cannot decode the token")?;
        Ok(Self { header, claims })
    }

    /// `{"verified": false, "header", "claims", "chain"}`, the chain being the subject and then
    /// every actor from the first to the current one (a missing or malformed entry is `null`).
    pub fn to_json(&self) -> String {
        let chain = self.chain();
        let mut entries = vec![chain.subject.cloned().unwrap_or(Value::Null)];
        entries.extend(chain.actors.iter().rev().map(Link::json));
        let document = json!({
            "verified": false,
            "header": self.header,
            "claims": self.claims,
            "chain": entries,
        });
        let mut out = escape_terminal(&pretty(&document));
        out.push('\n');
        out
    }

    /// The human-readable report.
    pub fn to_human(&self) -> String {
        let mut out = String::new();
        out.push_str(NOT_VERIFIED);
        out.push('\n');
        out.push_str("header:\n");
        push_indented_json(&mut out, &self.header);
        out.push_str("claims:\n");
        push_indented_json(&mut out, &self.claims);
        self.push_chain(&mut out);
        self.push_summary(&mut out);
        out
    }

    /// The chain tree and the summary only (what `mandate demo` shows of each token).
    pub fn to_chain_summary(&self) -> String {
        let mut out = String::new();
        self.push_chain(&mut out);
        self.push_summary(&mut out);
        out
    }

    fn chain(&self) -> Chain<'_> {
        let mut actors = Vec::new();
        let mut next = self.claims.get("act");
        // Iterative, so depth costs no stack; serde_json already refused nesting past its limit.
        while let Some(act) = next {
            match act.as_object() {
                Some(object) => {
                    actors.push(match object.get("sub") {
                        Some(sub) => Link::Sub(sub),
                        None => Link::NoSub,
                    });
                    next = object.get("act");
                }
                None => {
                    actors.push(Link::NotAnObject(act));
                    next = None;
                }
            }
        }
        Chain {
            subject: self.claims.get("sub"),
            actors,
        }
    }

    fn push_chain(&self, out: &mut String) {
        let chain = self.chain();
        if chain.actors.is_empty() {
            out.push_str("chain: no act claim (not a delegated token)\n");
            return;
        }
        out.push_str("chain:\n");
        let (subject, mut notes) = match chain.subject {
            Some(sub) => Link::Sub(sub).label(),
            None => Link::NoSub.label(),
        };
        notes.insert(0, "subject");
        push_tree_line(out, 0, &subject, &notes);
        // `actors` runs from the current actor (outermost `act`) to the first (innermost).
        let total = chain.actors.len();
        let shown = &chain.actors[..total.min(MAX_SHOWN_ACTORS)];
        let hidden = total - shown.len();
        let mut depth = 1;
        if hidden > 0 {
            let note = format!("… ({hidden} more levels not shown)");
            push_tree_line(out, depth, &note, &[]);
            depth += 1;
        }
        for (index, link) in shown.iter().enumerate().rev() {
            let (label, mut notes) = link.label();
            if index == 0 {
                notes.insert(0, "current actor");
            } else if index == total - 1 {
                notes.insert(0, "acted first");
            }
            push_tree_line(out, depth, &label, &notes);
            depth += 1;
        }
    }

    fn push_summary(&self, out: &mut String) {
        let Some(claims) = self.claims.as_object() else {
            return;
        };
        let mut lines = Vec::new();
        for (name, shown_as) in [
            ("client_id", "client_id"),
            ("aud", "aud"),
            ("scope", "scope"),
            ("authorization_details", "authorization_details"),
            ("chain_id", "chain_id"),
            ("ancestors", "ancestors (root first)"),
        ] {
            if let Some(value) = claims.get(name) {
                lines.push((shown_as, summary_value(value)));
            }
        }
        for name in ["iat", "nbf", "exp"] {
            if let Some(value) = claims.get(name) {
                lines.push((name, numeric_date(value)));
            }
        }
        if lines.is_empty() {
            return;
        }
        out.push_str("summary:\n");
        for (name, value) in lines {
            let _ = writeln!(out, "  {name:<SUMMARY_WIDTH$} {value}");
        }
    }
}

/// The subject and the actors, current first, as found in the claims.
struct Chain<'a> {
    subject: Option<&'a Value>,
    actors: Vec<Link<'a>>,
}

/// One actor of a nested `act` claim.
enum Link<'a> {
    /// `{"sub": …}` (any JSON value).
    Sub(&'a Value),
    /// An `act` object without `sub`.
    NoSub,
    /// An `act` that is not an object at all.
    NotAnObject(&'a Value),
}

impl Link<'_> {
    fn json(&self) -> Value {
        match self {
            Link::Sub(sub) => (*sub).clone(),
            Link::NoSub | Link::NotAnObject(_) => Value::Null,
        }
    }

    /// The text shown in the tree and the notes for the marker column.
    fn label(&self) -> (String, Vec<&'static str>) {
        match self {
            Link::Sub(Value::String(sub)) => (display_str(sub), Vec::new()),
            Link::Sub(other) => (
                escape_terminal(&other.to_string()),
                vec!["sub is not a string"],
            ),
            Link::NoSub => ("(no sub)".to_owned(), Vec::new()),
            Link::NotAnObject(value) => (
                escape_terminal(&value.to_string()),
                vec!["act is not an object"],
            ),
        }
    }
}

fn push_tree_line(out: &mut String, depth: usize, label: &str, notes: &[&str]) {
    let mut line = String::from("  ");
    if depth > 0 {
        line.push_str(&" ".repeat(3 * (depth - 1)));
        line.push_str("└─ ");
    }
    line.push_str(label);
    if !notes.is_empty() {
        let width = line.chars().count();
        let padding = if width + 2 <= MARKER_COLUMN {
            MARKER_COLUMN - width
        } else {
            2
        };
        line.push_str(&" ".repeat(padding));
        line.push('(');
        line.push_str(&notes.join("; "));
        line.push(')');
    }
    out.push_str(&line);
    out.push('\n');
}

fn push_indented_json(out: &mut String, value: &Value) {
    for line in escape_terminal(&pretty(value)).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

fn pretty(value: &Value) -> String {
    // Serialising a `Value` cannot fail (its keys are strings); fall back to the compact form.
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// A string as is when it is plain, else as an escaped JSON string (empty, padded with spaces, or
/// holding characters that could drive or disguise the terminal).
fn display_str(text: &str) -> String {
    if text.is_empty() || text.trim() != text || text.chars().any(is_unsafe) {
        escape_terminal(&Value::String(text.to_owned()).to_string())
    } else {
        text.to_owned()
    }
}

fn summary_value(value: &Value) -> String {
    match value {
        Value::String(text) => display_str(text),
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(display_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => escape_terminal(&other.to_string()),
    }
}

/// A NumericDate with its RFC 3339 UTC form.
fn numeric_date(value: &Value) -> String {
    if let Some(seconds) = value.as_i64() {
        return match DateTime::from_timestamp(seconds, 0) {
            Some(time) => format!(
                "{seconds} ({})",
                time.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            None => format!("{seconds} (out of range)"),
        };
    }
    if let Some(number) = value.as_f64().filter(|number| number.is_finite()) {
        let whole = number.floor();
        let nanos = (((number - whole) * 1e9) as u32).min(999_999_999);
        // `as` saturates, and chrono's range is far inside i64 seconds.
        return match DateTime::from_timestamp(whole as i64, nanos) {
            Some(time) => format!(
                "{value} ({}; not whole seconds)",
                time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            ),
            None => format!("{value} (out of range)"),
        };
    }
    format!(
        "{} (not a NumericDate)",
        escape_terminal(&value.to_string())
    )
}

/// Control characters (C0 but newline, DEL, C1), bidirectional formatting characters and line or
/// paragraph separators: what a hostile token could use to move the cursor, recolour the
/// terminal or make one name look like another.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Escapes unsafe characters in JSON text as `\uXXXX` (all of them are in the BMP). Outside
/// strings, JSON text holds only structural whitespace, so the newlines of pretty output are kept
/// and the result is still JSON with the same meaning.
fn escape_terminal(json_text: &str) -> String {
    let mut out = String::with_capacity(json_text.len());
    for c in json_text.chars() {
        if c != '\n' && is_unsafe(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn token(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn escapes_terminal_controls_but_stays_json() {
        let claims = json!({"sub": "a\u{1b}[31m\u{9b}b\u{202e}c", "act": {"sub": "x\u{7f}"}});
        let decoded = Decoded::parse(&token(&json!({"alg": "ES256"}), &claims)).unwrap();
        let human = decoded.to_human();
        assert!(!human.chars().any(|c| c != '\n' && is_unsafe(c)), "{human}");
        assert!(human.contains(r#""a\u001b[31m\u009bb\u202ec""#), "{human}");
        let json_text = decoded.to_json();
        assert!(!json_text.chars().any(|c| c != '\n' && is_unsafe(c)));
        let parsed: Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(parsed["claims"], claims);
        assert_eq!(parsed["chain"], json!([claims["sub"], "x\u{7f}"]));
    }

    #[test]
    fn odd_actors_and_dates() {
        let claims = json!({
            "sub": 7,
            "act": {"sub": ["tool"], "act": {"act": "assistant"}},
            "iat": 1764316800, "nbf": 1764316800.5, "exp": "soon",
        });
        let decoded = Decoded::parse(&token(&json!({"alg": "ES256"}), &claims)).unwrap();
        let human = decoded.to_human();
        assert!(human.contains("(subject; sub is not a string)"), "{human}");
        assert!(human.contains("\"assistant\""), "{human}");
        assert!(
            human.contains("(acted first; act is not an object)"),
            "{human}"
        );
        assert!(human.contains("(no sub)"), "{human}");
        assert!(
            human.contains("└─ [\"tool\"] ")
                && human.contains("(current actor; sub is not a string)"),
            "{human}"
        );
        assert!(
            human.contains("1764316800 (2025-11-28T08:00:00Z)"),
            "{human}"
        );
        assert!(
            human.contains("1764316800.5 (2025-11-28T08:00:00.500Z; not whole seconds)"),
            "{human}"
        );
        assert!(human.contains("\"soon\" (not a NumericDate)"), "{human}");
        let parsed: Value = serde_json::from_str(&decoded.to_json()).unwrap();
        assert_eq!(parsed["chain"], json!([7, null, null, ["tool"]]));
    }

    #[test]
    fn standard_input_is_bounded_and_trimmed() {
        assert_eq!(read_bounded(&b"  a.b.c\n"[..]).unwrap(), "a.b.c");
        assert!(read_bounded(&b" \n"[..]).is_err());
        let huge = vec![b'a'; MAX_STDIN_BYTES + 1];
        assert!(read_bounded(&huge[..]).is_err());
    }
}
