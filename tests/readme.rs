//! The README's "Try it", run as written: its shell blocks, top to bottom, in one bash, against
//! this build's `mandate` (for `./target/release/mandate`) on free loopback ports (for 8080 and
//! 8081). Nothing else in the text is changed, so a command that stops working, or an answer
//! that changes, fails here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `sh` blocks of the "Try it" section, but the build step (the test runs its own build).
fn try_it_blocks(readme: &str) -> Vec<String> {
    let start = readme.find("\n## Try it\n").expect("a Try it section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").expect("a closed block");
        blocks.push(body[..close].to_owned());
        rest = &body[close + 3..];
    }
    blocks.retain(|block| block.trim() != "cargo build --release");
    blocks
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_readme_try_it_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let blocks = try_it_blocks(&readme);
    assert!(blocks.len() >= 2, "the section lost its blocks: {blocks:?}");
    let (public, admin) = (free_port(), free_port());
    let script = blocks
        .join("\n")
        .replace("./target/release/mandate", env!("CARGO_BIN_EXE_mandate"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{public}"))
        .replace("127.0.0.1:8081", &format!("127.0.0.1:{admin}"));
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env_remove("MANDATE_ADMIN_SECRET")
        .env_remove("MANDATE_ADMIN_URL")
        .env_remove("MANDATE_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that the server it starts goes too if the script fails.
        .process_group(0)
        .spawn()
        .unwrap();
    let group = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status();
    let _ = child.wait();
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    let status = status.unwrap_or_else(|| panic!("the script hung\n{stdout}\n{stderr}"));
    assert!(
        status.success(),
        "the script failed: {status}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );

    // What the README says each step answers, in the order it says it.
    let issuer = format!("\"issuer\":\"http://127.0.0.1:{public}\"");
    let expected = [
        issuer.as_str(),
        "\"keys\":[",
        "HTTP/1.1 401 Unauthorized",
        "www-authenticate: Basic realm=\"mandate\"",
        "{\"error\":\"invalid_client\",\"error_description\":\"client authentication failed\"}",
        "\"issued_token_type\":\"urn:ietf:params:oauth:token-type:access_token\"",
        "(current actor)",
        "{\"error\":\"invalid_scope\",\"error_description\":\"the requested scope exceeds the authority available\"}",
        "\"client_id\":\"booking-tool\"",
        "booking-tool",
        "demo|alice",
        "✗ refused",
        "scope_widening",
        "\"active\":true",
        "{\"active\":false}",
        "✗",
    ];
    let mut from = 0;
    for needle in expected {
        let found = stdout[from..]
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing after byte {from} of\n{stdout}"));
        from += found + needle.len();
    }
    assert_eq!(
        stdout.matches("\"active\":true").count(),
        1,
        "only the introspection before the revocation finds the token live:\n{stdout}"
    );
}
