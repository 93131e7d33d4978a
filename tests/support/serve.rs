//! `mandate serve` as a child process, for the tests that run the real binary.

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads the first line `mandate serve` prints on its piped stdout (`… listening on
/// http://ADDR …`) and returns `ADDR`. The rest of stdout is drained on a thread, so that the
/// server never writes to a closed pipe.
///
/// # Panics
///
/// When stdout was not piped, or the first line names no address.
pub fn listening_address(child: &mut Child) -> String {
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .expect("the server's first line");
    std::thread::spawn(move || for _ in stdout.lines() {});
    line.split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_owned()
}

/// A child process killed when dropped, so that a failing assertion leaves nothing running.
#[allow(dead_code, reason = "each test binary uses a part of this module")]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `mandate serve --config FILE` (stdout piped, stderr discarded), killed when dropped, and the
/// base URL it listens on.
#[allow(dead_code, reason = "each test binary uses a part of this module")]
pub fn serve_config(config: &std::path::Path) -> (Killed, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mandate"))
        .env_remove("MANDATE_LOG")
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("mandate serve starts");
    let base = format!("http://{}", listening_address(&mut child));
    (Killed(child), base)
}
