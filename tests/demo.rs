//! `mandate demo`: the whole story runs to completion and ends with the revoked token refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_ends_with_the_booking_agents_token_refused() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .arg("demo")
        .env_remove("MANDATE_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("The end: the calendar app refused the booking agent's token after the assistant's hop was revoked."),
        "{stdout}"
    );
    // Quiet: no log lines, and no colour codes when standard output is not a terminal.
    assert!(stderr.is_empty(), "{stderr}");
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
    // The story, in order: every token's chain decoded, both tokens accepted, the revocation,
    // the refusal with its challenge, and mandate refusing the revoked hand-off.
    let steps = [
        "alice signs in to the assistant",
        "└─ assistant",
        "The calendar app accepts both tokens.",
        "GET /events with the booking agent's token → 200 OK: corp|alice → assistant → booking-tool",
        "✓ live",
        "POST /admin/hops/{jti}/revoke",
        "✗ revoked (hop hop_",
        "the assistant's own calendar token is still accepted (200 OK)",
        "the booking agent's token is refused: 401 Unauthorized, WWW-Authenticate: Bearer error=\"invalid_token\"",
        "mandate refuses: 400 Bad Request invalid_request",
    ];
    let mut from = 0;
    for step in steps {
        let found = stdout[from..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing (or out of order):\n{stdout}"));
        from += found;
    }
    // The decoded chain of the booking agent's token: alice, then both agents nested.
    assert!(
        stdout.contains("corp|alice") && stdout.contains("(current actor)"),
        "{stdout}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the demo took {:?}",
        started.elapsed()
    );
}

#[test]
fn the_demo_takes_no_arguments_but_no_color() {
    let output = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["demo", "--colour"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let help = Command::new(env!("CARGO_BIN_EXE_mandate"))
        .args(["demo", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--no-color"));
}
