//! The examples still build and run: `cargo run --example agent_exchange` must succeed and print
//! the delegation chain and the refusal it demonstrates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

#[path = "support/examples.rs"]
mod support;

use support::run_example;

#[test]
fn agent_exchange_runs_and_shows_the_chain() {
    let (stdout, _) = run_example("agent_exchange");
    for marker in [
        // The three exchanges, each with its actor chain.
        "actor chain: corp|alice -> assistant (current actor: assistant; depth 1; audience \"https://calendar.example.com\")",
        "actor chain: corp|alice -> assistant (current actor: assistant; depth 1; audience \"agent:booking-tool\")",
        "actor chain: corp|alice -> assistant -> booking-tool (current actor: booking-tool; depth 2; audience \"https://calendar.example.com\")",
        // The hand-off passes on only calendar.read.
        "\"type\": \"mandate_delegation\"",
        // The widening request is refused.
        "refused as expected: error = invalid_scope",
        "Done: mandate stopped.",
    ] {
        assert!(stdout.contains(marker), "missing {marker:?} in:\n{stdout}");
    }
}
