//! Journal entries as OCSF 1.8.0 events (<https://schema.ocsf.io/1.8.0>), for a SIEM.
//!
//! A hop (an exchange that issued a token) is an *Authorize Session* event (class 3003, category
//! Identity & Access Management, activity "Assign Privileges"): `user` is the subject the token
//! acts for, `actor` the agent that acted, `privileges` the (audience, scope) pairs granted.
//! Every other entry (a revocation, an admin or consent change, a refused exchange) is an *API
//! Activity* event (class 6003, category Application Activity). OCSF has no object for a
//! delegation chain, so the chain (actor chain, subject, audience, scopes, decision) goes into
//! `unmapped.delegation`, and the entry's place in the journal (seq, prev, hash) into
//! `unmapped.journal`; `metadata.uid` is the entry's hash and `metadata.correlation_uid` the
//! request's W3C trace id (or its request id) when one was recorded.

use serde_json::{json, Map, Value};

use crate::entry::Entry;

/// The OCSF schema version the events follow.
pub const OCSF_VERSION: &str = "1.8.0";

const AUTHORIZE_SESSION: u64 = 3003;
const API_ACTIVITY: u64 = 6003;
const SEVERITY_INFORMATIONAL: u64 = 1;
const STATUS_SUCCESS: u64 = 1;
const STATUS_FAILURE: u64 = 2;

fn text(record: &Value, key: &str) -> Option<String> {
    record.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `(audience, scopes)` pairs of a hop's authority, as `audience scope` strings.
fn privileges(authority: Option<&Value>) -> (Vec<String>, Value) {
    let mut pairs = Vec::new();
    let mut by_audience = Map::new();
    if let Some(Value::Object(map)) = authority {
        for (audience, scopes) in map {
            let scopes: Vec<String> = match scopes {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(s) => s
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                _ => Vec::new(),
            };
            pairs.extend(scopes.iter().map(|s| format!("{audience} {s}")));
            by_audience.insert(audience.clone(), json!(scopes));
        }
    }
    (pairs, Value::Object(by_audience))
}

fn metadata(entry: &Entry, correlation: Option<String>) -> Value {
    let mut metadata = json!({
        "version": OCSF_VERSION,
        "product": { "name": "mandate", "vendor_name": "mandate" },
        "uid": entry.hash,
        "sequence": entry.seq,
        "log_name": "mandate.journal",
    });
    if let (Some(correlation), Some(map)) = (correlation, metadata.as_object_mut()) {
        map.insert("correlation_uid".into(), Value::String(correlation));
    }
    metadata
}

/// The request trace recorded with a hop: the W3C trace id from its `traceparent`, else the
/// request id.
fn correlation(record: &Value) -> Option<String> {
    let request = record.get("request")?;
    text(request, "traceparent")
        .and_then(|tp| tp.split('-').nth(1).map(str::to_owned))
        .or_else(|| text(request, "id"))
}

fn journal_position(entry: &Entry) -> Value {
    json!({ "seq": entry.seq, "kind": entry.kind, "prev": entry.prev, "hash": entry.hash })
}

/// `entry` as an OCSF event.
pub fn to_ocsf(entry: &Entry) -> Value {
    if entry.kind == "hop" {
        hop_event(entry)
    } else {
        api_event(entry)
    }
}

fn hop_event(entry: &Entry) -> Value {
    let record = &entry.record;
    let subject = text(record, "subject").unwrap_or_default();
    let client = text(record, "client_id").unwrap_or_default();
    let actors: Vec<String> = record
        .get("actors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let (pairs, scopes) = privileges(record.get("authority"));
    let activity = 1; // Assign Privileges
    json!({
        "class_uid": AUTHORIZE_SESSION,
        "class_name": "Authorize Session",
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity,
        "activity_name": "Assign Privileges",
        "type_uid": AUTHORIZE_SESSION * 100 + activity,
        "severity_id": SEVERITY_INFORMATIONAL,
        "status_id": STATUS_SUCCESS,
        "status": "Success",
        "time": entry.time,
        "metadata": metadata(entry, correlation(record)),
        "user": { "uid": subject, "name": subject },
        "actor": { "app_name": client, "app_uid": client },
        "privileges": pairs,
        "session": { "uid": text(record, "id").unwrap_or_default() },
        "message": format!("{client} was granted a token for {subject}"),
        "unmapped": {
            "delegation": {
                "hop": record.get("id"),
                "parent": record.get("parent"),
                "chain_id": record.get("chain_id"),
                "ancestors": record.get("ancestors"),
                "subject": subject,
                "actor_chain": actors,
                "audience": record.get("audience"),
                "scopes": scopes,
                "depth": record.get("depth"),
                "evidence": record.get("evidence"),
                "expires_at": record.get("expires_at"),
                "decision": "issued",
                "request": record.get("request"),
            },
            "journal": journal_position(entry),
        },
    })
}

/// OCSF API Activity: 1 Create, 3 Update, 4 Delete, 99 Other.
fn api_activity(action: &str) -> (u64, &'static str) {
    let verb = action.rsplit('.').next().unwrap_or(action);
    match verb {
        "create" | "register" | "grant" | "add" | "seed" => (1, "Create"),
        "update" | "replace" | "patch" | "suspend" | "resume" | "rotate" | "reinstate" => {
            (3, "Update")
        }
        "delete" | "retire" | "withdraw" | "remove" => (4, "Delete"),
        _ => (99, "Other"),
    }
}

fn api_event(entry: &Entry) -> Value {
    let record = &entry.record;
    let (actor, operation, target, detail, refused) = if entry.kind == "revocation" {
        let kind = text(record, "kind").unwrap_or_default();
        (
            text(record, "by").unwrap_or_default(),
            format!("revoke.{kind}"),
            format!("{kind}:{}", text(record, "id").unwrap_or_default()),
            text(record, "reason").unwrap_or_default(),
            false,
        )
    } else {
        let action = text(record, "action").unwrap_or_default();
        let refused = action.ends_with(".refused") || action.ends_with(".denied");
        (
            text(record, "actor").unwrap_or_default(),
            action,
            text(record, "target").unwrap_or_default(),
            text(record, "detail").unwrap_or_default(),
            refused,
        )
    };
    let (activity, activity_name) = if operation.starts_with("revoke.") {
        (1, "Create")
    } else {
        api_activity(&operation)
    };
    let mut event = json!({
        "class_uid": API_ACTIVITY,
        "class_name": "API Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": API_ACTIVITY * 100 + activity,
        "severity_id": SEVERITY_INFORMATIONAL,
        "status_id": if refused { STATUS_FAILURE } else { STATUS_SUCCESS },
        "status": if refused { "Failure" } else { "Success" },
        "time": entry.time,
        "metadata": metadata(entry, correlation(record)),
        "actor": { "user": { "uid": actor, "name": actor } },
        "api": { "operation": operation, "service": { "name": "mandate" } },
        "src_endpoint": { "svc_name": "mandate" },
        "resources": [ { "uid": target } ],
        "message": format!("{actor}: {operation} {target}"),
        "unmapped": {
            "delegation": {
                "decision": if refused { "refused" } else { "recorded" },
                "target": target,
                "detail": detail,
            },
            "journal": journal_position(entry),
        },
    });
    if !detail.is_empty() {
        if let Some(map) = event.as_object_mut() {
            map.insert("status_detail".into(), Value::String(detail));
        }
    }
    event
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests fail loudly")]
mod tests {
    use super::*;
    use crate::entry::Head;

    #[test]
    fn a_hop_is_an_authorize_session_with_the_chain_in_unmapped_delegation() {
        let record = json!({
            "id": "hop_2", "parent": "hop_1", "chain_id": "chn_1", "ancestors": ["hop_1"],
            "subject": "corp|alice", "actors": ["booking-tool", "assistant"], "client_id": "booking-tool",
            "audience": "https://calendar.example.com",
            "authority": {"https://calendar.example.com": ["calendar.read"]},
            "request": {"id": "req-1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        });
        let entry = Entry::seal(&Head::default(), 5000, "hop", record);
        let event = to_ocsf(&entry);
        assert_eq!(
            (event["class_uid"].as_u64(), event["type_uid"].as_u64()),
            (Some(3003), Some(300301))
        );
        assert_eq!(event["metadata"]["uid"], entry.hash.as_str());
        assert_eq!(
            event["metadata"]["correlation_uid"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(
            event["privileges"],
            json!(["https://calendar.example.com calendar.read"])
        );
        assert_eq!(
            event["unmapped"]["delegation"]["actor_chain"],
            json!(["booking-tool", "assistant"])
        );
        assert_eq!(event["user"]["uid"], "corp|alice");
    }

    #[test]
    fn a_revocation_and_a_refusal_are_api_activity() {
        let revocation = Entry::seal(
            &Head::default(),
            1,
            "revocation",
            json!({"kind": "chain", "id": "chn_1", "by": "ops", "reason": "lost laptop", "at": 1, "until": 2}),
        );
        let event = to_ocsf(&revocation);
        assert_eq!(
            (
                event["class_uid"].as_u64(),
                event["api"]["operation"].as_str()
            ),
            (Some(6003), Some("revoke.chain"))
        );
        let refusal = Entry::seal(
            &Head::default(),
            1,
            "audit",
            json!({"at": 1, "actor": "client:assistant", "action": "exchange.refused", "target": "https://x", "detail": "invalid_target"}),
        );
        let event = to_ocsf(&refusal);
        assert_eq!(
            (event["status_id"].as_u64(), event["type_uid"].as_u64()),
            (Some(2), Some(600399))
        );
    }
}
