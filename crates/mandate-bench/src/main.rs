//! `mandate-bench`: the load benchmark (docs/BENCHMARKS.md).
//!
//! ```sh
//! cargo build --release -p mandate
//! cargo run --release -p mandate-bench -- [--secs 10] [--soak-secs 60] [--concurrency 32]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mandate_bench::target::{default_binary, Launch};
use mandate_bench::Options;

/// Exchange and introspection throughput and latency of `mandate serve`, against the
/// cryptographic ceiling of this machine.
#[derive(Debug, Parser)]
struct Args {
    /// The `mandate` binary [default: target/release/mandate].
    #[arg(long)]
    mandate: Option<PathBuf>,
    /// Serve in this process instead of running the binary (no RSS or server CPU figures).
    #[arg(long)]
    in_process: bool,
    /// The smoke form: every phase for a moment, in-process.
    #[arg(long)]
    smoke: bool,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Seconds of the Redis saturation run (RSS read after 10 s and at its end).
    #[arg(long, default_value_t = 60)]
    soak_secs: u64,
    /// Concurrent keep-alive connections (at saturation). Enough that a Redis run is limited by
    /// the server, not by how many requests wait on one AOF fsync at a time.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Distinct subject tokens (users) per agent.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// Policy rows for other agents and apps, configured before the benchmark's own (ten apps per
    /// extra agent).
    #[arg(long, default_value_t = 0)]
    policy_rows: usize,
    /// The private Redis's `appendfsync`: `always` (zero loss) or `everysec`.
    #[arg(long, default_value = "always")]
    appendfsync: String,
    /// Only this store: `memory` or `redis`.
    #[arg(long)]
    store: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut options = if args.smoke {
        Options::smoke()
    } else {
        let binary = args.mandate.clone().unwrap_or_else(default_binary);
        if !args.in_process && !binary.exists() {
            eprintln!(
                "{} not found: build it first with `cargo build --release -p mandate`, or pass --mandate PATH",
                binary.display()
            );
            return ExitCode::FAILURE;
        }
        let mut options = Options::full(binary);
        options.phase = Duration::from_secs(args.secs);
        options.soak = Duration::from_secs(args.soak_secs);
        options.concurrency = args.concurrency;
        options.subjects = args.subjects;
        options.policy_rows = args.policy_rows;
        options
    };
    options.appendfsync = args.appendfsync.clone();
    if args.in_process {
        options.launch = Launch::InProcess;
    }
    match args.store.as_deref() {
        None => {}
        Some("memory") => options.redis = false,
        Some("redis") => options.memory = false,
        Some(other) => {
            eprintln!("--store must be memory or redis, not {other}");
            return ExitCode::FAILURE;
        }
    }
    // One thread drives every connection: the load takes at most one core, and requests never
    // hop between threads (the ceiling measurement starts its own threads).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(mandate_bench::run(&options)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mandate-bench failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
