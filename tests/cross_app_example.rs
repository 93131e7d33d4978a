//! The cross-app access example still builds and runs: `cargo run --example cross_app_access`
//! must succeed and show the ID-JAG the IdP broker issues, the SaaS AS's access token with the
//! assistant as actor, the SaaS API accepting it, and the replayed ID-JAG refused.
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
fn cross_app_access_redeems_an_id_jag_once_and_calls_the_saas_api() {
    let (stdout, elapsed) = run_example("cross_app_access");
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
