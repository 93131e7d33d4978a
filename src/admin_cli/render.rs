//! Human renderings of the admin API's answers (docs/ADMIN-API.md). They read the JSON loosely:
//! a field the server leaves out shows as `-`, so an older or newer server still prints.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat};
use serde_json::Value;

use super::table::{clean, fields, Table};

/// A string field, `-` when absent or null.
fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// A list field joined with `sep`, `-` when absent or empty.
fn list(value: &Value, key: &str, sep: &str) -> String {
    match value.get(key).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map_or_else(|| item.to_string(), str::to_owned)
            })
            .collect::<Vec<_>>()
            .join(sep),
        _ => "-".into(),
    }
}

fn items<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An instant in milliseconds as RFC 3339.
fn millis(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

/// An instant in seconds as RFC 3339.
fn seconds(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_i64)
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .map_or_else(
            || "-".into(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

/// `GET /admin/agents`.
pub fn agents(body: &Value) -> String {
    let mut table = Table::new(&[
        "CLIENT_ID",
        "KIND",
        "STATE",
        "AUTH",
        "OWNERS",
        "LAST_EXCHANGE",
        "DESCRIPTION",
    ]);
    for agent in items(body, "agents") {
        table.row(vec![
            text(agent, "client_id"),
            text(agent, "kind"),
            text(agent, "state"),
            text(agent, "auth_method"),
            list(agent, "owners", ", "),
            text(agent, "last_exchange_at"),
            text(agent, "description"),
        ]);
    }
    if table.is_empty() {
        return "no clients\n".into();
    }
    table.render()
}

/// What `clients review` looks for.
pub struct ReviewLimits {
    /// The time of the review.
    pub now: chrono::DateTime<chrono::Utc>,
    /// Unused for longer than this.
    pub unused: chrono::Duration,
    /// Expiring within this.
    pub expiring: chrono::Duration,
}

fn instant_of(agent: &Value, key: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    agent
        .get(key)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Why `agent` needs a look, if it does (retired agents never do).
fn review_reasons(agent: &Value, limits: &ReviewLimits) -> Vec<String> {
    if text(agent, "state") == "retired" {
        return Vec::new();
    }
    let mut reasons = Vec::new();
    let last = [
        instant_of(agent, "last_exchange_at"),
        instant_of(agent, "last_authenticated_at"),
    ]
    .into_iter()
    .flatten()
    .max();
    match last {
        Some(at) if limits.now - at > limits.unused => {
            reasons.push(format!("unused for {} days", (limits.now - at).num_days()));
        }
        None => {
            let created = instant_of(agent, "created_at");
            if created.is_none_or(|at| limits.now - at > limits.unused) {
                reasons.push("never used".into());
            }
        }
        Some(_) => {}
    }
    if let Some(expires) = instant_of(agent, "expires_at") {
        if expires <= limits.now {
            reasons.push("expired".into());
        } else if expires - limits.now <= limits.expiring {
            reasons.push(format!("expires {}", text(agent, "expires_at")));
        }
    }
    if items(agent, "owners").is_empty() {
        reasons.push("no owners".into());
    }
    reasons
}

/// `mandate clients review`: the agents that need a look, and why.
pub fn review(body: &Value, limits: &ReviewLimits) -> String {
    let mut table = Table::new(&["CLIENT_ID", "STATE", "LAST_EXCHANGE", "WHY"]);
    for agent in items(body, "agents") {
        let reasons = review_reasons(agent, limits);
        if !reasons.is_empty() {
            table.row(vec![
                text(agent, "client_id"),
                text(agent, "state"),
                text(agent, "last_exchange_at"),
                clean(&reasons.join("; ")),
            ]);
        }
    }
    if table.is_empty() {
        return "no agent needs a look\n".into();
    }
    table.render()
}

/// One `Agent`.
pub fn agent(agent: &Value) -> String {
    let upstream = items(agent, "upstream_ids")
        .iter()
        .map(|u| format!("{}={}", text(u, "issuer"), text(u, "client_id")))
        .collect::<Vec<_>>();
    let keys = match agent.get("keys") {
        Some(Value::Array(keys)) if !keys.is_empty() => keys
            .iter()
            .map(|k| format!("{} ({} {})", text(k, "kid"), text(k, "kty"), text(k, "alg")))
            .collect::<Vec<_>>()
            .join(", "),
        _ => match agent.get("key_count").and_then(Value::as_u64) {
            Some(n) if n > 0 => format!("{n} key(s)"),
            _ => "-".into(),
        },
    };
    let secret = match agent.get("secret") {
        Some(secret @ Value::Object(_)) => {
            let mut shown = match secret.get("rotated_at").and_then(Value::as_str) {
                Some(at) => format!("rotated {at}"),
                None => "set, never rotated".into(),
            };
            if let Some(until) = secret.get("previous_valid_until").and_then(Value::as_str) {
                let _ = write!(shown, ", previous secret valid until {until}");
            }
            shown
        }
        _ => "-".into(),
    };
    let mut pairs = vec![
        ("client_id", text(agent, "client_id")),
        ("kind", text(agent, "kind")),
        ("state", text(agent, "state")),
        ("owners", list(agent, "owners", ", ")),
        ("description", text(agent, "description")),
        ("auth_method", text(agent, "auth_method")),
        ("keys", keys),
        ("secret", secret),
        ("expires_at", text(agent, "expires_at")),
        (
            "upstream_ids",
            if upstream.is_empty() {
                "-".into()
            } else {
                upstream.join(", ")
            },
        ),
        ("audiences", list(agent, "audiences", ", ")),
        (
            "last_authenticated_at",
            text(agent, "last_authenticated_at"),
        ),
        ("last_exchange_at", text(agent, "last_exchange_at")),
    ];
    for (name, by) in [("created_at", "created_by"), ("updated_at", "updated_by")] {
        if agent.get(name).is_some() {
            pairs.push((
                name,
                format!("{} by {}", text(agent, name), text(agent, by)),
            ));
        }
    }
    fields(&pairs)
}

/// `POST /admin/agents`: the agent, then its secret (shown this once).
pub fn added(body: &Value) -> String {
    let mut out = String::new();
    let shown = body.get("agent").unwrap_or(body);
    let _ = writeln!(out, "registered {}", clean(&text(shown, "client_id")));
    out.push_str(&agent(shown));
    if let Some(secret) = body.get("client_secret").and_then(Value::as_str) {
        // Apart from the record, so that it stands out and a script can pick the line.
        let _ = writeln!(out, "\nclient_secret  {}", clean(secret));
    }
    out
}

/// A rotated secret: the new secret on a line of its own, and until when the old one works.
pub fn rotated(body: &Value) -> String {
    let mut out = String::new();
    match body.get("previous_valid_until").and_then(Value::as_str) {
        Some(until) => {
            let _ = writeln!(out, "the previous secret works until {}", clean(until));
        }
        None => out.push_str("the previous secret no longer works\n"),
    }
    if let Some(secret) = body.get("client_secret").and_then(Value::as_str) {
        let _ = writeln!(out, "\nclient_secret  {}", clean(secret));
    }
    out
}

/// Suspend, retire, activate: the new state and what was revoked.
pub fn transitioned(body: &Value) -> String {
    let shown = body.get("agent").unwrap_or(body);
    let mut out = format!(
        "{} is now {}\n",
        clean(&text(shown, "client_id")),
        clean(&text(shown, "state"))
    );
    if let Some(revocation) = body.get("revocation") {
        out.push_str(&outcome(revocation));
    }
    out
}

/// An `Outcome`: the entries written and the hops that died.
pub fn outcome(body: &Value) -> String {
    let mut table = Table::new(&["REVOKED", "ID", "AT", "UNTIL"]);
    for entry in items(body, "entries") {
        table.row(vec![
            text(entry, "kind"),
            text(entry, "id"),
            millis(entry.get("at")),
            millis(entry.get("until")),
        ]);
    }
    let mut out = if table.is_empty() {
        "nothing was revoked\n".to_owned()
    } else {
        table.render()
    };
    for (label, key) in [
        ("hops revoked", "hops_revoked"),
        ("chains revoked", "chains_revoked"),
    ] {
        let ids = items(body, key);
        let _ = write!(out, "{label}: {}", ids.len());
        if !ids.is_empty() {
            let ids: Vec<String> = ids
                .iter()
                .map(|h| clean(h.as_str().unwrap_or_default()))
                .collect();
            let _ = write!(out, " ({})", ids.join(", "));
        }
        out.push('\n');
    }
    out
}

/// `GET /admin/chains`.
pub fn chains(body: &Value) -> String {
    let mut table = Table::new(&[
        "CHAIN_ID",
        "STATUS",
        "SUBJECT",
        "AGENTS",
        "AUDIENCES",
        "HOPS",
        "STARTED",
        "EXPIRES",
    ]);
    for chain in items(body, "chains") {
        table.row(vec![
            text(chain, "chain_id"),
            status_mark(&text(chain, "status"), None),
            text(chain, "subject"),
            list(chain, "agents", ", "),
            list(chain, "audiences", ", "),
            text(chain, "hops"),
            text(chain, "started_at"),
            text(chain, "expires_at"),
        ]);
    }
    let mut out = if table.is_empty() {
        "no chains\n".to_owned()
    } else {
        table.render()
    };
    if let Some(cursor) = body.get("next_cursor").and_then(Value::as_str) {
        let _ = writeln!(out, "more: --cursor {}", clean(cursor));
    }
    out
}

/// `✓ live`, `✗ revoked (hop hop_…)`, `⌛ expired`.
fn status_mark(status: &str, revoked_by: Option<&Value>) -> String {
    match status {
        "live" => "✓ live".into(),
        "revoked" => match revoked_by.filter(|r| r.is_object()) {
            Some(by) => format!("✗ revoked ({} {})", text(by, "kind"), text(by, "id")),
            None => "✗ revoked".into(),
        },
        "expired" => "⌛ expired".into(),
        other => format!("? {other}"),
    }
}

/// `GET /admin/chains/{id}`: the chain as an indented tree, one hop per node with its status,
/// jti, client, actors (in the order they acted), audience and scopes.
pub fn chain_tree(body: &Value) -> String {
    let roots = items(body, "roots");
    let subject = roots
        .first()
        .map_or_else(|| "-".into(), |root| text(root, "subject"));
    let mut out = format!(
        "chain {} · subject {} · {} hop(s)\n",
        clean(&text(body, "chain_id")),
        clean(&subject),
        clean(&text(body, "hops"))
    );
    for (index, root) in roots.iter().enumerate() {
        push_hop(&mut out, root, "", index + 1 == roots.len(), 0);
    }
    out
}

/// The deepest the tree is drawn (mandate's own chains are at most 32 deep).
const MAX_DRAWN_DEPTH: usize = 64;

fn push_hop(out: &mut String, hop: &Value, prefix: &str, last: bool, depth: usize) {
    let (branch, continuation) = if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    };
    let _ = writeln!(
        out,
        "{prefix}{branch}{}  {}",
        clean(&text(hop, "jti")),
        clean(&status_mark(&text(hop, "status"), hop.get("revoked_by")))
    );
    let inner = format!("{prefix}{continuation}");
    let children = items(hop, "children");
    let bar = if children.is_empty() { "   " } else { "│  " };
    // `actors` lists the current actor first; show them in the order they acted.
    let mut actors: Vec<String> = items(hop, "actors")
        .iter()
        .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
        .collect();
    actors.reverse();
    let _ = writeln!(
        out,
        "{inner}{bar}client {} · actors {}",
        clean(&text(hop, "client_id")),
        clean(&if actors.is_empty() {
            "-".into()
        } else {
            actors.join(" → ")
        })
    );
    let _ = writeln!(
        out,
        "{inner}{bar}audience {} · {}",
        clean(&text(hop, "audience")),
        clean(&authority(hop))
    );
    let _ = writeln!(
        out,
        "{inner}{bar}issued {} · expires {} · evidence {}",
        seconds(hop.get("issued_at")),
        seconds(hop.get("expires_at")),
        clean(&evidence(hop.get("evidence")))
    );
    if depth >= MAX_DRAWN_DEPTH {
        if !children.is_empty() {
            let _ = writeln!(out, "{inner}└─ … (deeper hops not drawn)");
        }
        return;
    }
    for (index, child) in children.iter().enumerate() {
        push_hop(out, child, &inner, index + 1 == children.len(), depth + 1);
    }
}

/// `scopes a b` for an app hop; `passes https://app: a b; …` for a hand-off, whose authority is
/// for other audiences.
fn authority(hop: &Value) -> String {
    let audience = text(hop, "audience");
    let pairs: Vec<(String, String)> = items(hop, "authority")
        .iter()
        .map(|pair| (text(pair, "audience"), list(pair, "scopes", " ")))
        .collect();
    if pairs.is_empty() {
        return match hop.get("scope").and_then(Value::as_str) {
            Some(scope) => format!("scopes {scope}"),
            None => "scopes -".into(),
        };
    }
    if pairs.iter().all(|(a, _)| *a == audience) {
        let scopes: Vec<&str> = pairs.iter().map(|(_, s)| s.as_str()).collect();
        return format!("scopes {}", scopes.join(" "));
    }
    let passed: Vec<String> = pairs.iter().map(|(a, s)| format!("{a}: {s}")).collect();
    format!("passes {}", passed.join("; "))
}

fn evidence(value: Option<&Value>) -> String {
    match value {
        Some(evidence @ Value::Object(_)) => {
            let reference = text(evidence, "reference");
            if reference == "-" || reference.len() > 80 {
                text(evidence, "kind")
            } else {
                format!("{} ({reference})", text(evidence, "kind"))
            }
        }
        Some(Value::String(kind)) => kind.clone(),
        _ => "-".into(),
    }
}

/// `GET /admin/consents`.
pub fn consents(body: &Value) -> String {
    let mut table = Table::new(&["ID", "SUBJECT", "ACTOR", "AUDIENCE", "SCOPES", "EXPIRES"]);
    for consent in items(body, "consents") {
        table.row(consent_row(consent));
    }
    if table.is_empty() {
        return "no consent grants\n".into();
    }
    table.render()
}

fn consent_row(consent: &Value) -> Vec<String> {
    vec![
        text(consent, "id"),
        text(consent, "subject"),
        text(consent, "actor"),
        text(consent, "audience"),
        list(consent, "scopes", " "),
        text(consent, "expires_at"),
    ]
}

/// `POST /admin/consents`.
pub fn consent_added(body: &Value) -> String {
    let consent = body.get("consent").unwrap_or(body);
    let mut table = Table::new(&["ID", "SUBJECT", "ACTOR", "AUDIENCE", "SCOPES", "EXPIRES"]);
    table.row(consent_row(consent));
    format!("stored consent grant\n{}", table.render())
}

/// `DELETE /admin/consents/{id}`.
pub fn withdrawn(body: &Value) -> String {
    let mut out = format!("withdrew {}\n", clean(&text(body, "withdrawn")));
    if let Some(revocation) = body.get("revocation") {
        out.push_str(&outcome(revocation));
    }
    out
}

/// `GET`/`PUT /admin/policies`.
pub fn policies(body: &Value) -> String {
    let mut out = format!("version {}\n", clean(&text(body, "version")));
    let mut table = Table::new(&["ACTOR", "AUDIENCE", "SCOPES", "MAX_DEPTH"]);
    for row in items(body, "rows") {
        table.row(vec![
            text(row, "actor"),
            text(row, "audience"),
            list(row, "scopes", " "),
            text(row, "max_depth"),
        ]);
    }
    if table.is_empty() {
        out.push_str("no rows: every exchange is refused\n");
    } else {
        out.push_str(&table.render());
    }
    out
}

/// `POST /admin/policies/explain`.
pub fn explain(body: &Value) -> String {
    let mut answer = explain_decision(body);
    if let Some(gate) = body.get("gate") {
        answer.push_str(&fields(&[(
            "gate",
            format!(
                "requires {}{}; participation '{}': {}",
                text(gate, "require"),
                if gate.get("dry_run").and_then(Value::as_bool) == Some(true) {
                    " (dry run)"
                } else {
                    ""
                },
                text(gate, "verdict"),
                if gate.get("met").and_then(Value::as_bool) == Some(true) {
                    "met"
                } else {
                    "not met"
                }
            ),
        )]));
    }
    answer
}

fn explain_decision(body: &Value) -> String {
    if body.get("allowed").and_then(Value::as_bool) == Some(true) {
        let row = body.get("row").unwrap_or(&Value::Null);
        fields(&[
            ("decision", "✓ allowed".into()),
            ("row", policy_row(row)),
            ("evidence", list(body, "evidence", ", ")),
            ("scopes", list(body, "scopes", " ")),
            ("authority", audience_scopes(body, "authority", "-")),
            ("max_depth", text(body, "max_depth")),
        ])
    } else {
        let mut lines = vec![
            ("decision", "✗ refused".to_owned()),
            ("error", text(body, "error")),
            ("rule", text(body, "rule")),
            ("message", text(body, "message")),
        ];
        if let Some(row) = body.get("row") {
            lines.push(("row", policy_row(row)));
        }
        if body.get("hand_off_cap").is_some() {
            lines.push((
                "hand-off cap",
                audience_scopes(body, "hand_off_cap", "nothing"),
            ));
            lines.push(("why", text(body, "hint")));
        }
        fields(&lines)
    }
}

/// `actor → audience [scopes]`.
fn policy_row(row: &Value) -> String {
    format!(
        "{} → {} [{}]",
        text(row, "actor"),
        text(row, "audience"),
        list(row, "scopes", " ")
    )
}

/// `[{"audience", "scopes"}…]` at `key` as `audience: scopes; …`, or `none` when empty.
fn audience_scopes(body: &Value, key: &str, none: &str) -> String {
    match items(body, key) {
        [] => none.into(),
        pairs => pairs
            .iter()
            .map(|p| format!("{}: {}", text(p, "audience"), list(p, "scopes", " ")))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// `GET /admin/subjects/{sub}/authority`: the agents, then the apps they reach.
pub fn standing_authority(body: &Value) -> String {
    let mut agents = Table::new(&[
        "AGENT",
        "STATE",
        "CAN ACT",
        "OWNERS",
        "LIVE HOPS",
        "CONSENTS",
        "POLICY ROWS",
    ]);
    for agent in items(body, "agents") {
        let hops: Vec<String> = items(agent, "live_hops")
            .iter()
            .map(|h| format!("{} → {}", text(h, "hop"), text(h, "audience")))
            .collect();
        let consents: Vec<String> = items(agent, "consents")
            .iter()
            .map(|c| {
                let unusable = if c.get("allowed_by_policy").and_then(Value::as_bool) == Some(true)
                {
                    ""
                } else {
                    " (no policy row)"
                };
                format!(
                    "{} {}{unusable}",
                    text(c, "consent_id"),
                    text(c, "audience")
                )
            })
            .collect();
        let rows: Vec<String> = items(agent, "policy")
            .iter()
            .map(|r| format!("{} [{}]", text(r, "audience"), list(r, "scopes", " ")))
            .collect();
        let dash = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                clean(&v.join(", "))
            }
        };
        agents.row(vec![
            text(agent, "client_id"),
            text(agent, "state"),
            if agent.get("can_act").and_then(Value::as_bool) == Some(true) {
                "yes".into()
            } else {
                "no".into()
            },
            clean(&list(agent, "owners", ",")),
            dash(hops),
            dash(consents),
            dash(rows),
        ]);
    }
    let mut apps = Table::new(&["APP", "AGENT", "VIA", "SCOPES", "UNTIL", "EVIDENCE"]);
    for app in items(body, "apps") {
        for (i, access) in items(app, "access").iter().enumerate() {
            apps.row(vec![
                if i == 0 {
                    text(app, "audience")
                } else {
                    String::new()
                },
                text(access, "client_id"),
                text(access, "via"),
                list(access, "scopes", " "),
                text(access, "until"),
                text(access, "evidence"),
            ]);
        }
    }
    let subject = text(body, "subject");
    if agents.is_empty() {
        return format!("no agent holds or was granted authority of {subject}\n");
    }
    let mut out = format!("{subject}: agents\n{}", agents.render());
    if apps.is_empty() {
        out.push_str("\nno app is reached now\n");
    } else {
        out.push_str(&format!("\napps reached now\n{}", apps.render()));
    }
    out
}

/// `GET /admin/audit`.
pub fn audit(body: &Value) -> String {
    let mut table = Table::new(&["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]);
    for event in items(body, "events") {
        table.row(vec![
            millis(event.get("at")),
            text(event, "actor"),
            text(event, "action"),
            text(event, "target"),
            text(event, "detail"),
        ]);
    }
    if table.is_empty() {
        return "no events\n".into();
    }
    table.render()
}

/// `GET /admin/ssf/streams`.
pub fn ssf_streams(body: &Value) -> String {
    let mut table = Table::new(&[
        "STREAM", "OWNER", "AUD", "DELIVERY", "STATUS", "PENDING", "DROPPED", "CREATED",
    ]);
    for stream in items(body, "streams") {
        let delivery = match stream.get("endpoint_url").and_then(Value::as_str) {
            Some(url) => format!("{} {url}", text(stream, "delivery")),
            None => text(stream, "delivery"),
        };
        table.row(vec![
            text(stream, "stream_id"),
            text(stream, "owner"),
            list(stream, "aud", ","),
            delivery,
            text(stream, "status"),
            text(stream, "pending"),
            text(stream, "dropped"),
            seconds(stream.get("created_at")),
        ]);
    }
    if table.is_empty() {
        return "no streams\n".into();
    }
    table.render()
}

/// An audience's gate in the map: what it requires, and whether it is met.
fn gate_cell(gate: Option<&Value>) -> String {
    match gate {
        Some(gate) if gate.is_object() => format!(
            "{}{} {}",
            text(gate, "require"),
            if gate.get("dry_run").and_then(Value::as_bool) == Some(true) {
                " (dry run)"
            } else {
                ""
            },
            if gate.get("met").and_then(Value::as_bool) == Some(true) {
                "✓"
            } else {
                "✗"
            }
        ),
        _ => "-".into(),
    }
}

/// `GET /admin/participation/gates`.
pub fn gates(body: &Value) -> String {
    let mut table = Table::new(&[
        "AUDIENCE", "REQUIRE", "MODE", "VERDICT", "MET", "SET BY", "SET",
    ]);
    for gate in items(body, "gates") {
        let dry_run = gate.get("dry_run").and_then(Value::as_bool) == Some(true);
        let met = gate.get("met").and_then(Value::as_bool) == Some(true);
        table.row(vec![
            text(gate, "audience"),
            text(gate, "require"),
            if dry_run { "dry run" } else { "enforced" }.into(),
            text(gate, "verdict"),
            match (met, dry_run) {
                (true, _) => "✓".into(),
                (false, true) => "✗ (would refuse)".into(),
                (false, false) => "✗ refusing".into(),
            },
            text(gate, "set_by"),
            millis(gate.get("set_at_ms")),
        ]);
    }
    if table.is_empty() {
        return "no gates\n".into();
    }
    table.render()
}

/// `GET /admin/participation`: a line per audience with its verdict, then its verifiers.
pub fn participation(body: &Value) -> String {
    let mut table = Table::new(&[
        "AUDIENCE", "VERDICT", "GATE", "OWNERS", "VERIFIER", "MODE", "LAG", "NODE", "SEEN",
    ]);
    for audience in items(body, "audiences") {
        let owners: Vec<String> = items(audience, "owners")
            .iter()
            .map(|o| {
                let people = list(o, "owners", ",");
                format!("{} ({people})", text(o, "client_id"))
            })
            .collect();
        let mut rows: Vec<Vec<String>> = items(audience, "verifiers")
            .iter()
            .map(|v| {
                vec![
                    format!("{} {}", text(v, "kind"), text(v, "instance")),
                    text(v, "mode"),
                    v.get("lag_ms")
                        .and_then(Value::as_u64)
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
                    text(v, "node"),
                    millis(v.get("seen_at_ms")),
                ]
            })
            .collect();
        rows.extend(items(audience, "streams").iter().map(|s| {
            vec![
                format!("ssf {}", text(s, "stream_id")),
                text(s, "delivery"),
                "-".into(),
                "-".into(),
                "-".into(),
            ]
        }));
        if rows.is_empty() {
            rows.push(vec!["-".into(); 5]);
        }
        for (i, row) in rows.into_iter().enumerate() {
            let (name, verdict, gate, owned) = if i == 0 {
                (
                    text(audience, "audience"),
                    text(audience, "verdict"),
                    gate_cell(audience.get("gate")),
                    clean(&owners.join(", ")),
                )
            } else {
                (String::new(), String::new(), String::new(), String::new())
            };
            let mut line = vec![name, verdict, gate, owned];
            line.extend(row);
            table.row(line);
        }
    }
    if table.is_empty() {
        return "no audiences\n".into();
    }
    table.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use serde_json::json;

    use super::*;

    fn hop(jti: &str, status: &str, actors: &[&str], audience: &str, children: Value) -> Value {
        json!({
            "jti": jti, "status": status, "client_id": actors[0], "actors": actors,
            "subject": "corp|alice", "audience": audience,
            "revoked_by": if status == "revoked" { json!({"kind": "hop", "id": "hop_b"}) } else { Value::Null },
            "authority": [{"audience": "https://calendar.example.com", "scopes": ["calendar.read"]}],
            "issued_at": 1_764_316_800, "expires_at": 1_764_317_100,
            "evidence": {"kind": "hand_off", "reference": "hop_b"},
            "children": children,
        })
    }

    #[test]
    fn a_chain_draws_as_a_tree_with_marks() {
        let body = json!({
            "chain_id": "chn_1", "hops": 3,
            "roots": [
                hop("hop_a", "live", &["assistant"], "https://calendar.example.com", json!([])),
                hop("hop_b", "revoked", &["assistant"], "agent:booking-tool", json!([
                    hop("hop_c", "revoked", &["booking-tool", "assistant"], "https://calendar.example.com", json!([])),
                ])),
            ],
        });
        let tree = chain_tree(&body);
        let lines: Vec<&str> = tree.lines().collect();
        assert_eq!(lines[0], "chain chn_1 · subject corp|alice · 3 hop(s)");
        assert_eq!(lines[1], "├─ hop_a  ✓ live");
        assert_eq!(lines[2], "│     client assistant · actors assistant");
        assert_eq!(
            lines[3],
            "│     audience https://calendar.example.com · scopes calendar.read"
        );
        assert_eq!(lines[5], "└─ hop_b  ✗ revoked (hop hop_b)");
        assert_eq!(
            lines[7],
            "   │  audience agent:booking-tool · passes https://calendar.example.com: calendar.read"
        );
        assert_eq!(lines[9], "   └─ hop_c  ✗ revoked (hop hop_b)");
        assert_eq!(
            lines[10],
            "         client booking-tool · actors assistant → booking-tool"
        );
        assert_eq!(lines.len(), 13, "{tree}");
    }

    #[test]
    fn missing_fields_show_as_dashes_and_hostile_ones_are_escaped() {
        let body = json!({"agents": [{"client_id": "x\u{1b}[2Jy", "owners": []}]});
        let shown = agents(&body);
        assert!(shown.contains(r"x\u{1b}[2Jy  -"), "{shown}");
        assert_eq!(agents(&json!({"agents": []})), "no clients\n");
    }

    #[test]
    fn outcomes_list_entries_and_hops() {
        let body = json!({
            "entries": [{"kind": "hop", "id": "hop_b", "at": 1_764_316_800_000_i64, "until": 1_764_317_160_000_i64}],
            "hops_revoked": ["hop_b", "hop_c"],
            "chains_revoked": ["chn_1"],
        });
        let shown = outcome(&body);
        assert!(
            shown.contains("hop      hop_b  2025-11-28T08:00:00Z"),
            "{shown}"
        );
        assert!(
            shown.ends_with("hops revoked: 2 (hop_b, hop_c)\nchains revoked: 1 (chn_1)\n"),
            "{shown}"
        );
    }

    #[test]
    fn participation_shows_each_audience_with_its_verdict_and_verifiers() {
        let body = json!({"audiences": [
            {"audience": "https://calendar.example.com", "verdict": "follows revocations",
             "owners": [{"client_id": "calendar-api", "owners": ["team-cal"]}],
             "verifiers": [{"kind": "sdk", "instance": "cal-1", "mode": "followed", "lag_ms": 120,
                            "node": "host-a", "seen_at_ms": 1_764_316_800_000_i64}],
             "streams": [], "gate": {"require": "follows_revocations", "dry_run": true, "met": true}},
            {"audience": "https://mail.example.com", "verdict": "silent",
             "owners": [{"client_id": "mail-api", "owners": []}], "verifiers": [], "streams": [],
             "gate": null},
        ]});
        let shown = participation(&body);
        assert!(shown.contains("follows_revocations (dry run) ✓"), "{shown}");
        assert!(shown.contains("follows revocations"), "{shown}");
        assert!(shown.contains("calendar-api (team-cal)"), "{shown}");
        assert!(shown.contains("sdk cal-1"), "{shown}");
        assert!(shown.contains("120 ms"), "{shown}");
        assert!(shown.contains("https://mail.example.com"), "{shown}");
        assert!(shown.contains("silent"), "{shown}");
        assert_eq!(participation(&json!({"audiences": []})), "no audiences\n");
    }

    #[test]
    fn standing_authority_lists_agents_then_the_apps_they_reach() {
        let body = json!({"subject": "corp|alice", "at": "2026-12-07T10:00:00.000Z",
            "agents": [
                {"client_id": "assistant", "state": "active", "can_act": true, "owners": ["a@x"],
                 "live_hops": [{"hop": "hop_1", "audience": "https://calendar.example.com"}],
                 "consents": [{"consent_id": "cns_1", "audience": "https://mail.example.com",
                               "allowed_by_policy": false}],
                 "policy": [{"audience": "https://calendar.example.com", "scopes": ["calendar.read"]}]},
                {"client_id": "idle", "state": "suspended", "can_act": false, "owners": [],
                 "live_hops": [], "consents": [], "policy": []}],
            "apps": [{"audience": "https://calendar.example.com", "access": [
                {"client_id": "assistant", "via": "token", "scopes": ["calendar.read"],
                 "until": "2026-12-07T10:05:00Z", "evidence": "hop_1"}]}]});
        let shown = standing_authority(&body);
        assert!(
            shown.contains("hop_1 → https://calendar.example.com"),
            "{shown}"
        );
        assert!(
            shown.contains("cns_1 https://mail.example.com (no policy row)"),
            "{shown}"
        );
        assert!(shown.contains("apps reached now"), "{shown}");
        assert!(shown.contains("token"), "{shown}");
        assert!(shown.contains("suspended"), "{shown}");
        let nobody = json!({"subject": "corp|bob", "agents": [], "apps": []});
        assert_eq!(
            standing_authority(&nobody),
            "no agent holds or was granted authority of corp|bob\n"
        );
    }

    #[test]
    fn gates_say_what_they_require_and_whether_they_refuse() {
        let body = json!({"gates": [
            {"audience": "https://calendar.example.com", "require": "follows_revocations",
             "dry_run": false, "verdict": "verifies only", "met": false, "set_by": "ops",
             "set_at_ms": 1_764_316_800_000_i64},
            {"audience": "https://mail.example.com", "require": "verifies", "dry_run": true,
             "verdict": "silent", "met": false, "set_by": "config", "set_at_ms": 0},
        ]});
        let shown = gates(&body);
        assert!(shown.contains("✗ refusing"), "{shown}");
        assert!(shown.contains("dry run"), "{shown}");
        assert!(shown.contains("✗ (would refuse)"), "{shown}");
        assert_eq!(gates(&json!({"gates": []})), "no gates\n");
        let explained = explain(&json!({"allowed": false, "error": "invalid_target",
            "rule": "participation_gate", "message": "m",
            "gate": {"require": "verifies", "dry_run": false, "verdict": "silent", "met": false}}));
        assert!(
            explained.contains("requires verifies; participation 'silent': not met"),
            "{explained}"
        );
    }

    #[test]
    fn a_refused_hand_off_shows_its_row_and_cap() {
        let explained = explain(&json!({"allowed": false, "error": "invalid_scope",
            "rule": "scope_widening", "message": "m", "hint": "h",
            "row": {"actor": "a", "audience": "agent:b", "scopes": ["x", "y"]},
            "hand_off_cap": [{"audience": "https://app.example", "scopes": ["x"]}]}));
        assert!(explained.contains("agent:b [x y]"), "{explained}");
        assert!(explained.contains("https://app.example: x"), "{explained}");
        let empty = explain(&json!({"allowed": false, "error": "invalid_scope",
            "rule": "empty_authority", "message": "m", "hint": "h",
            "row": {"actor": "a", "audience": "agent:b", "scopes": ["x"]}, "hand_off_cap": []}));
        assert!(empty.contains("hand-off cap  nothing"), "{empty}");
    }

    #[test]
    fn review_names_unused_expiring_and_ownerless_agents() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let limits = ReviewLimits {
            now,
            unused: chrono::Duration::days(30),
            expiring: chrono::Duration::days(7),
        };
        let body = json!({"agents": [
            {"client_id": "busy", "state": "active", "owners": ["a"], "last_exchange_at": "2026-12-06T00:00:00Z"},
            {"client_id": "idle", "state": "active", "owners": ["a"], "last_exchange_at": "2026-10-01T00:00:00Z", "last_authenticated_at": "2026-10-02T00:00:00Z"},
            {"client_id": "fresh", "state": "staged", "owners": ["a"], "created_at": "2026-12-01T00:00:00Z"},
            {"client_id": "ghost", "state": "active", "owners": ["a"], "created_at": "2026-01-01T00:00:00Z"},
            {"client_id": "soon", "state": "active", "owners": [], "last_exchange_at": "2026-12-06T00:00:00Z", "expires_at": "2026-12-10T00:00:00Z"},
            {"client_id": "gone", "state": "retired", "owners": []},
        ]});
        let shown = review(&body, &limits);
        assert!(shown.contains("unused for 66 days"), "{shown}");
        assert!(shown.contains("never used"), "{shown}");
        assert!(
            shown.contains("expires 2026-12-10T00:00:00Z; no owners"),
            "{shown}"
        );
        for quiet in ["busy", "fresh", "gone"] {
            assert!(!shown.contains(quiet), "{quiet} in {shown}");
        }
        let none = json!({"agents": [{"client_id": "busy", "state": "active", "owners": ["a"], "last_exchange_at": "2026-12-06T00:00:00Z"}]});
        assert_eq!(review(&none, &limits), "no agent needs a look\n");
    }
}
