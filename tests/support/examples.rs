//! Runs an example of this package the way a newcomer would (`cargo run --example NAME`) and
//! returns what it printed, failing the test if it did not succeed.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `cargo run --quiet --example name`; returns stdout and how long the run took.
pub fn run_example(name: &str) -> (String, Duration) {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["run", "--quiet", "--example", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Cargo gives this test the variables it gives every compiled crate (`CARGO_PKG_NAME`,
    // `CARGO_MANIFEST_DIR`, …). Build scripts such as ring's rerun when those change, so a nested
    // cargo that inherited them would rebuild half the tree, twice per run. Drop them.
    for (variable, _) in std::env::vars_os() {
        let variable = variable.to_string_lossy();
        let set_by_cargo_for_this_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_CFG_",
        ]
        .iter()
        .any(|prefix| variable.starts_with(prefix))
            || matches!(
                variable.as_ref(),
                "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            );
        if set_by_cargo_for_this_crate {
            cargo.env_remove(variable.as_ref());
        }
    }
    let started = Instant::now();
    let output = cargo.output().expect("cargo runs");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example {name} failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    (stdout, elapsed)
}
