//! The examples still build and run: `cargo run --example agent_exchange` must succeed and print
//! the delegation chain and the refusal it demonstrates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::Command;

#[test]
fn agent_exchange_runs_and_shows_the_chain() {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["run", "--quiet", "--example", "agent_exchange"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Cargo gives this test the variables it gives every compiled crate (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, …). Build scripts such as ring's rerun when those change, so a nested
    // cargo that inherited them would rebuild half the tree, twice per run. Drop them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_for_this_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || matches!(
                name.as_ref(),
                "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo_for_this_crate {
            cargo.env_remove(name.as_ref());
        }
    }
    let output = cargo.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
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
