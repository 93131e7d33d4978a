//! `mandate-ledger-bench`: what the ledger costs in memory (docs/EVIDENCE.md, "Measured").
//!
//! ```sh
//! cargo build --release -p mandate -p mandate-bench
//! target/release/mandate-ledger-bench [--exchanges 200000] [--export-hops 100000]
//! ```
//!
//! 1. The memory store under `--exchanges` token exchanges, twice in one run: with the default
//!    bounds (`[store] memory_max_hops`, `[journal] memory_max_entries`) and, as the baseline,
//!    with bounds too high to reach; the server's RSS is read as the exchanges go.
//! 2. `--export-hops` exchanges on a private Redis, then `mandate ledger export` of the whole
//!    journal to a file and `mandate ledger verify --file` of it, with the peak RSS of the
//!    server and of each command, against the size of what they streamed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use mandate_bench::load::{self, Expect, Workload};
use mandate_bench::target::{default_binary, Launch, Target};
use mandate_bench::world::{self, Store, World};
use mandate_model::SecretHash;
use mandate_testkit::redis::RedisServer;

#[derive(Debug, Parser)]
struct Args {
    /// The `mandate` binary [default: target/release/mandate].
    #[arg(long)]
    mandate: Option<PathBuf>,
    /// Exchanges on the memory store, per run.
    #[arg(long, default_value_t = 200_000)]
    exchanges: u64,
    /// Exchanges on Redis before the export.
    #[arg(long, default_value_t = 100_000)]
    export_hops: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

const ADMIN_SECRET: &str = "ledger-bench-admin-secret-0123456789";

fn mib(kib: Option<u64>) -> String {
    kib.map_or("n/a".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

/// The world's configuration for `store`, with a known admin credential and `extra` settings.
fn config(
    world: &World,
    name: &str,
    store: &Store,
    store_extra: &str,
    tail: &str,
) -> anyhow::Result<(PathBuf, String, String)> {
    let (listen, admin) = world::free_addresses()?;
    let path = world.write_config(name, store, listen, admin, 0)?;
    let text = std::fs::read_to_string(&path)?.replacen(
        "[store]\n",
        &format!("[store]\n{store_extra}"),
        1,
    );
    let text = format!(
        "{text}\n[[admin.credentials]]\nname = \"ledger-bench\"\nrole = \"read\"\nsecret_hash = \"{}\"\n\n{tail}",
        SecretHash::of(ADMIN_SECRET)
    );
    std::fs::write(&path, text)?;
    Ok((path, format!("http://{listen}"), format!("http://{admin}")))
}

/// Exchanges until `total` have succeeded, reading the server's RSS every `every`.
async fn exchange_until(
    target: &Target,
    base: &str,
    workload: &Workload,
    concurrency: usize,
    total: u64,
    every: u64,
) -> anyhow::Result<Vec<(u64, Option<u64>)>> {
    let address = base.trim_start_matches("http://").parse()?;
    let counter = Arc::new(AtomicU64::new(0));
    let mut done = 0;
    let mut readings = Vec::new();
    let mut next_reading = every;
    while done < total {
        let sample = load::saturate(
            address,
            workload,
            concurrency,
            Duration::from_millis(500),
            counter.clone(),
        )
        .await;
        if sample.failed > 0 {
            bail!(
                "{} exchanges refused: {:?}",
                sample.failed,
                sample.first_error
            );
        }
        done += sample.ok;
        if done >= next_reading {
            readings.push((done, target.rss_kib()));
            next_reading += every;
        }
    }
    Ok(readings)
}

fn workload(world: &World, base: &str, subjects: &Arc<Vec<String>>) -> Workload {
    Workload {
        host: base.trim_start_matches("http://").to_owned(),
        path: "/token".into(),
        auth: Some(world.basic_agent_auth()),
        bodies: subjects.clone(),
        fresh: None,
        expect: Expect::Token,
        keep_tokens: None,
        keep_limit: 0,
    }
}

/// Runs `mandate <args>` to completion; its peak RSS (VmHWM, read while it runs), the server's
/// peak RSS meanwhile, and how long it took.
fn run_measured(
    binary: &Path,
    args: &[&str],
    server: &Target,
) -> anyhow::Result<(Option<u64>, Option<u64>, Duration)> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .env("MANDATE_ADMIN_SECRET", ADMIN_SECRET)
        .stdout(Stdio::null())
        .spawn()?;
    let status_path = format!("/proc/{}/status", child.id());
    let (mut own_peak, mut server_peak) = (None::<u64>, server.rss_kib());
    loop {
        if let Some(status) = child.try_wait()? {
            // Exit code 4 is a finding, not a failure of the measurement.
            if !status.success() {
                bail!("mandate {args:?} exited with {status}");
            }
            break;
        }
        if let Some(hwm) = vm_hwm(&status_path) {
            own_peak = Some(own_peak.map_or(hwm, |p| p.max(hwm)));
        }
        if let Some(rss) = server.rss_kib() {
            server_peak = Some(server_peak.map_or(rss, |p| p.max(rss)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((own_peak, server_peak, started.elapsed()))
}

fn vm_hwm(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = args.mandate.clone().unwrap_or_else(default_binary);
    if !binary.exists() {
        bail!(
            "{} not found: cargo build --release -p mandate",
            binary.display()
        );
    }
    let launch = Launch::Binary(binary.clone());
    let world = World::new()?;
    let subjects = Arc::new(
        world
            .subject_tokens(world::BASIC_AGENT, 1_000)?
            .iter()
            .map(|t| world::exchange_body(t))
            .collect::<Vec<_>>(),
    );
    let http = reqwest::Client::new();

    println!(
        "== memory store, {} exchanges per run ({} connections)",
        args.exchanges, args.concurrency
    );
    let every = (args.exchanges / 10).max(1);
    let mut runs = Vec::new();
    for (name, store_extra, tail) in [
        (
            "bounded (defaults: memory_max_hops 100000, memory_max_entries 100000)",
            "",
            "",
        ),
        (
            "baseline (bounds of 10,000,000: not reached)",
            "memory_max_hops = 10000000\n",
            "[journal]\nmemory_max_entries = 10000000\n",
        ),
    ] {
        let (path, base, _) = config(&world, "memory", &Store::Memory, store_extra, tail)?;
        let target = Target::start(&launch, &path, &base, &http).await?;
        let idle = target.rss_kib();
        let readings = exchange_until(
            &target,
            &base,
            &workload(&world, &base, &subjects),
            args.concurrency,
            args.exchanges,
            every,
        )
        .await?;
        target.stop().await;
        println!("{name}: idle {}", mib(idle));
        for (done, rss) in &readings {
            println!("  after {done:>8} exchanges: RSS {}", mib(*rss));
        }
        runs.push(readings.last().and_then(|(_, rss)| *rss));
    }
    if let [Some(bounded), Some(baseline)] = runs[..] {
        println!(
            "final RSS bounded / baseline: {:.2} ({} vs {})",
            bounded as f64 / baseline as f64,
            mib(Some(bounded)),
            mib(Some(baseline))
        );
    }

    println!(
        "\n== Redis store: {} exchanges, then the journal exported and verified",
        args.export_hops
    );
    let redis = RedisServer::start().await?;
    redis
        .cli(&["CONFIG", "SET", "appendfsync", "everysec"])
        .context("appendfsync")?;
    let (path, base, admin) = config(
        &world,
        "redis",
        &Store::Redis(redis.url()),
        "",
        "[journal]\nseal_interval_ms = 50\n",
    )?;
    let target = Target::start(&launch, &path, &base, &http).await?;
    exchange_until(
        &target,
        &base,
        &workload(&world, &base, &subjects),
        args.concurrency,
        args.export_hops,
        args.export_hops,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let head = loop {
        let summary: serde_json::Value = http
            .get(format!("{admin}/admin/ledger"))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await?
            .json()
            .await?;
        if summary["pending"] == 0 {
            break summary["head"]["seq"].as_u64().unwrap_or(0);
        }
        if Instant::now() > deadline {
            bail!("the journal was not sealed within 5 minutes: {summary}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let before = target.rss_kib();
    let file = world.dir().join("export.jsonl");
    let file_text = file.display().to_string();
    let (cli_peak, server_peak, took) = run_measured(
        &binary,
        &["ledger", "export", "--url", &admin, "--output", &file_text],
        &target,
    )?;
    let size = std::fs::metadata(&file)?.len();
    println!(
        "journal: {head} entries; export {:.0} MiB in {:.1} s",
        size as f64 / 1_048_576.0,
        took.as_secs_f64()
    );
    println!(
        "  server RSS before {} / peak during the export {}",
        mib(before),
        mib(server_peak)
    );
    println!(
        "  mandate ledger export peak RSS {} ({:.3} of the file's size)",
        mib(cli_peak),
        cli_peak.map_or(0.0, |k| (k * 1024) as f64 / size as f64)
    );
    let (verify_peak, _, took) = run_measured(
        &binary,
        &["ledger", "verify", "--file", &file_text],
        &target,
    )?;
    println!(
        "  mandate ledger verify --file: peak RSS {} ({:.3} of the file's size) in {:.1} s",
        mib(verify_peak),
        verify_peak.map_or(0.0, |k| (k * 1024) as f64 / size as f64),
        took.as_secs_f64()
    );
    let counted = std::fs::read_to_string(&file)?
        .lines()
        .filter(|l| l.contains("\"kind\":\"hop\""))
        .count();
    println!("  hops in the export: {counted}");
    target.stop().await;
    Ok(())
}
