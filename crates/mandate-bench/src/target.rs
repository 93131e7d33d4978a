//! The server under test: the real `mandate serve --config FILE` binary in its own process (the
//! full benchmark: its RSS and CPU time are its own), or the same configuration file served
//! in-process through `mandate_server::start` (the CI smoke form, which needs no built binary).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mandate_server::{AppState, BuildOptions, ConfigSource, Listeners, RunningServer, Settings};

/// How the server is run.
#[derive(Debug, Clone)]
pub enum Launch {
    /// `<binary> serve --config FILE` in a child process.
    Binary(PathBuf),
    /// `mandate_server::start` on this process's runtime.
    InProcess,
}

/// A running server.
#[derive(Debug)]
pub enum Target {
    /// A child process.
    Process {
        /// The child.
        child: Child,
    },
    /// In this process.
    InProcess(Option<RunningServer>),
}

impl Target {
    /// Starts the server with the configuration at `config` and waits until `base/healthz`
    /// answers.
    pub async fn start(
        launch: &Launch,
        config: &Path,
        base: &str,
        http: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let target = match launch {
            Launch::Binary(binary) => {
                let log = std::fs::File::create(config.with_extension("log"))?;
                let child = Command::new(binary)
                    .arg("serve")
                    .arg("--config")
                    .arg(config)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::from(log))
                    .spawn()
                    .with_context(|| format!("cannot start {}", binary.display()))?;
                Self::Process { child }
            }
            Launch::InProcess => {
                let settings = Settings::load(config)?;
                let state = AppState::build(
                    settings,
                    ConfigSource::File(config.to_path_buf()),
                    BuildOptions::default(),
                )
                .await?;
                let listeners =
                    Listeners::bind(state.settings.listen, state.settings.admin_listen)?;
                let running =
                    mandate_server::start(state, listeners, mandate_server::Signals::Ignore)?;
                Self::InProcess(Some(running))
            }
        };
        let mut target = target;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("{base}/healthz")).send().await {
                if response.status().is_success() {
                    break;
                }
            }
            if let Self::Process { child } = &mut target {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "mandate exited with {status} before answering; see {}",
                        config.with_extension("log").display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!("mandate did not answer {base}/healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(target)
    }

    /// The process id whose RSS and CPU time are the server's (None in-process: they would
    /// include the load generator).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Process { child } => Some(child.id()),
            Self::InProcess(_) => None,
        }
    }

    /// The server's resident set size in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kib(&self) -> Option<u64> {
        self.pid()
            .and_then(|pid| rss_kib(&format!("/proc/{pid}/status")))
    }

    /// The server's CPU time (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        self.pid()
            .and_then(|pid| cpu_time(&format!("/proc/{pid}/stat")))
    }

    /// Stops the server (SIGTERM-free: the child is killed; the in-process server drains).
    pub async fn stop(self) {
        match self {
            Self::Process { mut child } => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Self::InProcess(mut running) => {
                if let Some(running) = running.take() {
                    running.stop().await;
                }
            }
        }
    }
}

/// `VmRSS` in KiB from a /proc status file.
pub fn rss_kib(status_path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_path).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// User + system CPU time from a /proc stat file (fields 14 and 15, in clock ticks of 1/100 s,
/// the value of `CLK_TCK` on Linux).
pub fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so fields 14 and 15 are at indices 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Where `cargo build --release` puts the `mandate` binary: `$CARGO_TARGET_DIR/release` or the
/// workspace's `target/release`.
pub fn default_binary() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target_dir.join("release").join("mandate")
}
