#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
//! The OCSF mapping against the OCSF 1.8.0 JSON schema itself: tests/ocsf/validate.py validates
//! each event with the PyPI packages ocsf-json-schema and jsonschema (installed by .ci/run).

use std::io::Write;
use std::process::{Command, Stdio};

use mandate_journal::{ocsf::to_ocsf, Entry, Head};
use serde_json::json;

fn journal() -> Vec<Entry> {
    let records = [
        (
            "hop",
            json!({
                "id": "hop_1", "parent": null, "chain_id": "chn_1", "ancestors": [],
                "subject": "corp|alice", "actors": ["assistant"], "client_id": "assistant",
                "audience": "agent:booking-tool",
                "authority": {"https://calendar.example.com": ["calendar.read", "calendar.write"]},
                "issued_at": 1, "expires_at": 301, "depth": 1, "depth_limit": 5,
                "evidence": {"kind": "upstream_audience", "reference": "assistant"},
                "request": {"id": "req-1", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            }),
        ),
        (
            "hop",
            json!({
                "id": "hop_2", "parent": "hop_1", "chain_id": "chn_1", "ancestors": ["hop_1"],
                "subject": "corp|alice", "actors": ["booking-tool", "assistant"], "client_id": "booking-tool",
                "audience": "https://calendar.example.com",
                "authority": {"https://calendar.example.com": ["calendar.read"]},
            }),
        ),
        (
            "revocation",
            json!({"kind": "chain", "id": "chn_1", "at": 5000, "until": 9000, "reason": "lost laptop", "by": "ops"}),
        ),
        (
            "audit",
            json!({"at": 6000, "actor": "client:assistant", "action": "exchange.refused", "target": "https://mail.example.com", "detail": "invalid_target"}),
        ),
        (
            "audit",
            json!({"at": 7000, "actor": "ops", "action": "consent.withdraw", "target": "cns_1", "detail": ""}),
        ),
        (
            "audit",
            json!({"at": 8000, "actor": "ops", "action": "agent.register", "target": "assistant", "detail": "agent"}),
        ),
    ];
    let mut head = Head::default();
    records
        .into_iter()
        .enumerate()
        .map(|(i, (kind, record))| {
            let entry = Entry::seal(&head, 1_764_316_800_000 + i as i64, kind, record);
            head = entry.head();
            entry
        })
        .collect()
}

#[test]
fn every_kind_of_entry_validates_against_the_ocsf_schema() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/ocsf/validate.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (.ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    for entry in journal() {
        writeln!(stdin, "{}", to_ocsf(&entry)).unwrap();
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "OCSF validation failed:\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(report.contains("6 events, 0 invalid"), "{report}");
    assert_eq!(
        report.matches("(authorize_session): valid").count(),
        2,
        "{report}"
    );
    assert_eq!(
        report.matches("(api_activity): valid").count(),
        4,
        "{report}"
    );
}

#[test]
fn the_validator_refuses_an_event_missing_a_required_field() {
    // The check can fail: without `user`, an Authorize Session is invalid.
    let mut event = to_ocsf(&journal()[0]);
    event.as_object_mut().unwrap().remove("user");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/ocsf/validate.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{event}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 invalid"));
}
