//! The cross-app access example still builds and runs: `cargo run --example cross_app_access`
//! must succeed and show the ID-JAG the IdP broker issues, the SaaS AS's access token with the
//! assistant as actor, the SaaS API accepting it, and the replayed ID-JAG refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::process::Command;
use std::time::Instant;

#[test]
fn cross_app_access_redeems_an_id_jag_once_and_calls_the_saas_api() {
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["run", "--quiet", "--example", "cross_app_access"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // A nested cargo that inherited the variables cargo sets for this test crate would make
    // build scripts (ring's, …) rerun and rebuild half the tree: drop them, as
    // tests/downstream_example.rs and tests/examples.rs do.
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
    let started = Instant::now();
    let output = cargo.output().unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    for marker in [
        // The broker issues an ID-JAG through token exchange.
        "(token exchange) → 200 OK",
        "\"issued_token_type\": \"urn:ietf:params:oauth:token-type:id-jag\"",
        "\"typ\": \"oauth-id-jag+jwt\"",
        "\"client_id\": \"assistant-at-saas\"",
        "\"resource\": \"https://files.example.com\"",
        // The SaaS AS redeems it for an access token naming the assistant as actor.
        "(jwt-bearer) → 200 OK",
        "\"typ\": \"at+jwt\"",
        "\"sub\": \"ent|corp|alice\"",
        "\"act\": {\n    \"sub\": \"assistant-at-saas\"\n  }",
        // The SaaS API, behind mandate-verify, accepts it.
        "SaaS API: GET /files for ent|corp|alice by assistant-at-saas",
        "GET /files → 200 OK",
        // The same ID-JAG a second time: refused.
        "(jwt-bearer, same ID-JAG again) → 400 Bad Request",
        "\"error\": \"invalid_grant\"",
        "Done: the SaaS API, the SaaS AS and the IdP broker stopped.",
    ] {
        assert!(stdout.contains(marker), "missing {marker:?} in:\n{stdout}");
    }
    // Building may take a while on a cold cache; the run itself is bounded by the example (30 s).
    eprintln!("cargo run --example cross_app_access took {elapsed:?}");
}
