//! mandate's load benchmark as a library (the `mandate-bench` binary runs it in full, a test
//! runs its smoke form in CI).
//!
//! One run, on one machine: the cryptographic ceiling in-process (one ES256 verify + one ES256
//! sign of tokens of the sizes the server handles, on every core), then `mandate serve` on the
//! memory store and on a private `redis-server`, each driven over loopback keep-alive
//! connections: token exchanges at saturation with `client_secret_basic` and with
//! `private_key_jwt`, rotating through one subject token per user; exchanges at half the
//! saturation rate (open loop); `/introspect` at saturation and at half rate; the server's RSS
//! idle and, on Redis, after 10 s and at the end of a longer saturation run.
//!
//! Depends on the server and the test kit (for the private Redis); nothing depends on it.

pub mod ceiling;
pub mod load;
pub mod target;
pub mod wire;
pub mod world;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use mandate_testkit::redis::RedisServer;
use mandate_token::{Algorithm, SigningAlgorithm, SigningKey, VerifyingKeySet};

use crate::ceiling::{Ceiling, CryptoInputs};
use crate::load::{Expect, Sample, Workload};
use crate::target::{Launch, Target};
use crate::world::{Store, World};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How the server is started.
    pub launch: Launch,
    /// Length of each measured phase.
    pub phase: Duration,
    /// Length of the Redis saturation run (RSS is read after 10 s, or a sixth of it if shorter,
    /// and at its end).
    pub soak: Duration,
    /// Length of each ceiling measure.
    pub ceiling_phase: Duration,
    /// Concurrent keep-alive connections (closed-loop tasks).
    pub concurrency: usize,
    /// Distinct subject tokens (one user each) per agent.
    pub subjects: usize,
    /// Policy rows for other agents and apps, configured before the benchmark's own (ten apps
    /// per extra agent), as in a deployment with many agents.
    pub policy_rows: usize,
    /// Run on the memory store.
    pub memory: bool,
    /// Run on a private Redis.
    pub redis: bool,
    /// Settle time before the idle RSS is read.
    pub settle: Duration,
    /// The private Redis's `appendfsync` (`always`: zero loss, the test kit's setting;
    /// `everysec`: at most a second at risk).
    pub appendfsync: String,
}

impl Options {
    /// The full benchmark against the release binary at `binary`.
    pub fn full(binary: std::path::PathBuf) -> Self {
        Self {
            launch: Launch::Binary(binary),
            phase: Duration::from_secs(10),
            soak: Duration::from_secs(60),
            ceiling_phase: Duration::from_secs(2),
            concurrency: 128,
            subjects: 1000,
            policy_rows: 0,
            memory: true,
            redis: true,
            settle: Duration::from_secs(1),
            appendfsync: "always".into(),
        }
    }

    /// The smoke form: every phase for a moment, the server in-process, 1,000 subjects still.
    pub fn smoke() -> Self {
        Self {
            launch: Launch::InProcess,
            phase: Duration::from_millis(700),
            soak: Duration::from_millis(1200),
            ceiling_phase: Duration::from_millis(100),
            concurrency: 8,
            subjects: 1000,
            policy_rows: 100,
            memory: true,
            redis: true,
            settle: Duration::ZERO,
            appendfsync: "always".into(),
        }
    }
}

/// One closed-loop phase and the CPU time it cost.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// What the driver measured.
    pub sample: Sample,
    /// The server's CPU time (None when the server runs in-process).
    pub server_cpu: Option<Duration>,
    /// The load generator's CPU time (the whole process when the server runs in-process).
    pub client_cpu: Option<Duration>,
}

impl Phase {
    /// Server CPU µs per successful request.
    pub fn server_us_per_request(&self) -> Option<f64> {
        let cpu = self.server_cpu?;
        (self.sample.ok > 0).then(|| cpu.as_secs_f64() * 1e6 / self.sample.ok as f64)
    }
}

/// Everything measured on one store.
#[derive(Debug, Clone, Default)]
pub struct StoreReport {
    /// `memory` or `redis`.
    pub store: String,
    /// RSS before any load, KiB.
    pub idle_rss_kib: Option<u64>,
    /// Exchanges with `client_secret_basic` at saturation.
    pub exchange_basic: Phase,
    /// RSS after 10 s of that, KiB (Redis only).
    pub rss_early_kib: Option<u64>,
    /// RSS at its end, KiB (Redis only).
    pub rss_late_kib: Option<u64>,
    /// Exchanges with `private_key_jwt` at saturation.
    pub exchange_pkjwt: Phase,
    /// Exchanges with `client_secret_basic` at half the saturation rate.
    pub exchange_half: Sample,
    /// Introspections at saturation.
    pub introspect: Phase,
    /// Introspections at half that rate.
    pub introspect_half: Sample,
    /// `GET`s of the discovery document at saturation: the server's cost per request for HTTP,
    /// routing and logging with no work of its own.
    pub floor: Phase,
    /// The same at the rate `exchange_basic` reached (open loop): what a request costs at that
    /// rate, when the loopback peers sleep between requests and each answer must wake one.
    pub floor_paced: Phase,
}

impl StoreReport {
    /// Every phase, named.
    pub fn samples(&self) -> Vec<(&'static str, &Sample)> {
        vec![
            ("exchange basic", &self.exchange_basic.sample),
            ("exchange private_key_jwt", &self.exchange_pkjwt.sample),
            ("exchange basic, half load", &self.exchange_half),
            ("introspect", &self.introspect.sample),
            ("introspect, half load", &self.introspect_half),
            ("floor: GET discovery", &self.floor.sample),
            ("floor at the exchange rate", &self.floor_paced.sample),
        ]
    }
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The ceiling.
    pub ceiling: Ceiling,
    /// One per store run.
    pub stores: Vec<StoreReport>,
}

/// Runs the benchmark, printing as it goes.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let world = Arc::new(World::new()?);
    let basic_subjects = Arc::new(
        world
            .subject_tokens(world::BASIC_AGENT, options.subjects)?
            .iter()
            .map(|t| world::exchange_body(t))
            .collect::<Vec<_>>(),
    );
    let pk_subjects = Arc::new(world.subject_tokens(world::PKJWT_AGENT, options.subjects)?);
    println!(
        "mandate-bench: {} subject tokens per agent, {} connections, {} other policy rows, phases of {:?} (Redis saturation {:?}, appendfsync {}), server: {}",
        options.subjects,
        options.concurrency,
        options.policy_rows,
        options.phase,
        options.soak,
        options.appendfsync,
        match &options.launch {
            Launch::Binary(path) => path.display().to_string(),
            Launch::InProcess => "in-process (smoke form)".into(),
        }
    );
    let mut ceiling = None;
    let mut stores = Vec::new();
    let mut redis_server = None;
    let mut plan = Vec::new();
    if options.memory {
        plan.push(("memory", Store::Memory));
    }
    if options.redis {
        let redis = RedisServer::start().await?;
        redis
            .cli(&["CONFIG", "SET", "appendfsync", &options.appendfsync])
            .context("setting appendfsync")?;
        plan.push(("redis", Store::Redis(redis.url())));
        redis_server = Some(redis);
    }
    for (name, store) in plan {
        let report = run_store(
            options,
            &world,
            name,
            &store,
            &basic_subjects,
            &pk_subjects,
            &mut ceiling,
        )
        .await
        .with_context(|| format!("the {name} run"))?;
        stores.push(report);
    }
    drop(redis_server);
    let ceiling = ceiling.context("no store was run")?;
    Ok(Report { ceiling, stores })
}

async fn run_store(
    options: &Options,
    world: &Arc<World>,
    name: &str,
    store: &Store,
    basic_subjects: &Arc<Vec<String>>,
    pk_subjects: &Arc<Vec<String>>,
    ceiling: &mut Option<Ceiling>,
) -> anyhow::Result<StoreReport> {
    let (listen, admin) = world::free_addresses()?;
    let config = world.write_config(name, store, listen, admin, options.policy_rows)?;
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    let target = Target::start(&options.launch, &config, &base, &http).await?;
    let host = listen.to_string();
    let pool = Arc::new(wire::Pool::new(listen));
    let mut report = StoreReport {
        store: name.into(),
        ..StoreReport::default()
    };
    tokio::time::sleep(options.settle).await;
    report.idle_rss_kib = target.rss_kib();
    println!("\n== {name} store: idle RSS {}", mib(report.idle_rss_kib));

    let counter = Arc::new(AtomicU64::new(0));
    let kept = Arc::new(Mutex::new(Vec::new()));
    let basic = Workload {
        host: host.clone(),
        path: "/token".into(),
        auth: Some(world.basic_agent_auth()),
        bodies: basic_subjects.clone(),
        fresh: None,
        expect: Expect::Token,
        keep_tokens: Some(kept.clone()),
        keep_limit: options.subjects,
    };
    // Warm-up (connections, allocator, caches); it also yields the tokens to introspect.
    let warm = load::saturate(
        listen,
        &basic,
        options.concurrency,
        options.phase / 5,
        counter.clone(),
    )
    .await;
    check(&warm, "warm-up")?;

    if ceiling.is_none() {
        let measured = measure_ceiling(world, &kept, options.ceiling_phase)?;
        print_ceiling(&measured);
        *ceiling = Some(measured);
    }
    let ceiling = ceiling.context("ceiling")?;

    // Saturation with client_secret_basic; on Redis, the long run with RSS read on the way.
    let is_redis = matches!(store, Store::Redis(_));
    let length = if is_redis {
        options.soak
    } else {
        options.phase
    };
    let early_at = Duration::from_secs(10).min(length / 6);
    let pid = target.pid();
    let early = tokio::spawn(async move {
        tokio::time::sleep(early_at).await;
        pid.and_then(|pid| target::rss_kib(&format!("/proc/{pid}/status")))
    });
    let phases = Phases {
        target: &target,
        listen,
        pool: &pool,
        options,
    };
    report.exchange_basic = phases.saturated(&basic, length, counter.clone()).await;
    if is_redis {
        report.rss_early_kib = early.await.ok().flatten();
        report.rss_late_kib = target.rss_kib();
    } else {
        early.abort();
    }

    // Saturation with private_key_jwt: one single-use assertion per request, signed before
    // the phase (so the load generator does not spend the server's CPU on them) for the rate
    // the basic run reached, and on the fly past that.
    let expected = (report.exchange_basic.sample.rate() * options.phase.as_secs_f64() * 1.3)
        as usize
        + options.concurrency;
    let pk_bodies = (0..expected.min(400_000))
        .map(|i| {
            Ok(world::exchange_body_with_assertion(
                &pk_subjects[i % pk_subjects.len()],
                &world.client_assertion()?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let fresh_world = world.clone();
    let fresh_subjects = pk_subjects.clone();
    let pkjwt = Workload {
        host: host.clone(),
        path: "/token".into(),
        auth: None,
        bodies: Arc::new(pk_bodies),
        fresh: Some(Arc::new(move |i| {
            let subject = &fresh_subjects[usize::try_from(i)? % fresh_subjects.len()];
            Ok(world::exchange_body_with_assertion(
                subject,
                &fresh_world.client_assertion()?,
            ))
        })),
        expect: Expect::Token,
        keep_tokens: None,
        keep_limit: 0,
    };
    report.exchange_pkjwt = phases
        .saturated(&pkjwt, options.phase, Arc::new(AtomicU64::new(0)))
        .await;

    // Half load, open loop, spread over as many connections as the closed loop used.
    let half = report.exchange_basic.sample.rate() / 2.0;
    report.exchange_half = phases.paced(&basic, half, counter.clone()).await?.sample;

    // Introspection of tokens issued above (one per user), by the resource server that owns
    // their audience.
    let tokens = kept.lock().map(|k| k.clone()).unwrap_or_default();
    anyhow::ensure!(!tokens.is_empty(), "no access token was kept to introspect");
    let introspect = Workload {
        host: host.clone(),
        path: "/introspect".into(),
        auth: Some(world.resource_server_auth()),
        bodies: Arc::new(tokens.iter().map(|t| world::introspect_body(t)).collect()),
        fresh: None,
        expect: Expect::Active,
        keep_tokens: None,
        keep_limit: 0,
    };
    report.introspect = phases
        .saturated(&introspect, options.phase, counter.clone())
        .await;
    let half = report.introspect.sample.rate() / 2.0;
    report.introspect_half = phases
        .paced(&introspect, half, counter.clone())
        .await?
        .sample;
    // The floor: a static document over the same connections, logged like any request.
    let floor = Workload {
        host: host.clone(),
        path: "/.well-known/oauth-authorization-server".into(),
        auth: None,
        bodies: Arc::new(Vec::new()),
        fresh: None,
        expect: Expect::Document,
        keep_tokens: None,
        keep_limit: 0,
    };
    report.floor = phases
        .saturated(&floor, options.phase, counter.clone())
        .await;
    let exchange_rate = report.exchange_basic.sample.rate();
    report.floor_paced = phases.paced(&floor, exchange_rate, counter).await?;
    target.stop().await;
    print_store(&report, &ceiling, tokens.len());
    Ok(report)
}

/// What a store's measured phases share: the server, its address, the open loop's connections.
struct Phases<'a> {
    target: &'a Target,
    listen: std::net::SocketAddr,
    pool: &'a Arc<wire::Pool>,
    options: &'a Options,
}

impl Phases<'_> {
    /// A closed loop over `concurrency` connections for `length`, with the CPU it cost.
    async fn saturated(
        &self,
        workload: &Workload,
        length: Duration,
        counter: Arc<AtomicU64>,
    ) -> Phase {
        let concurrency = self.options.concurrency;
        let run = load::saturate(self.listen, workload, concurrency, length, counter);
        measured(self.target, run).await
    }

    /// An open loop at `rate` for a phase, spread over as many connections as the closed loops
    /// use, with the CPU it cost.
    async fn paced(
        &self,
        workload: &Workload,
        rate: f64,
        counter: Arc<AtomicU64>,
    ) -> anyhow::Result<Phase> {
        let Options {
            concurrency, phase, ..
        } = *self.options;
        self.pool.fill(concurrency).await?;
        let run = load::paced(self.pool, workload, rate, phase, concurrency * 8, counter);
        Ok(measured(self.target, run).await)
    }
}

async fn measured(target: &Target, run: impl std::future::Future<Output = Sample>) -> Phase {
    let server_before = target.cpu_time();
    let client_before = target::cpu_time("/proc/self/stat");
    let sample = run.await;
    let delta = |before: Option<Duration>, after: Option<Duration>| {
        before.zip(after).map(|(b, a)| a.saturating_sub(b))
    };
    Phase {
        sample,
        server_cpu: delta(server_before, target.cpu_time()),
        client_cpu: delta(client_before, target::cpu_time("/proc/self/stat")),
    }
}

fn check(sample: &Sample, what: &str) -> anyhow::Result<()> {
    if sample.ok == 0 {
        anyhow::bail!(
            "{what}: no request succeeded ({})",
            sample.first_error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(())
}

fn measure_ceiling(
    world: &World,
    kept: &Mutex<Vec<String>>,
    per_measure: Duration,
) -> anyhow::Result<Ceiling> {
    let access_token = kept
        .lock()
        .ok()
        .and_then(|k| k.first().cloned())
        .context("no access token from the warm-up")?;
    let payload = access_token
        .split('.')
        .nth(1)
        .context("malformed access token")?;
    let access_claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?;
    let signing_key = SigningKey::from_pkcs8_pem(SigningAlgorithm::Es256, &world.signing_pem)?;
    let mandate_keys = VerifyingKeySet::from_jwks(
        &serde_json::json!({ "keys": [signing_key.public_key().jwk()] }),
        &[Algorithm::Es256],
    )?;
    let inputs = CryptoInputs {
        subject_token: world
            .subject_tokens(world::BASIC_AGENT, 1)?
            .pop()
            .context("subject token")?,
        idp_keys: VerifyingKeySet::from_jwks(&world.idp_key.jwks(), &[Algorithm::Es256])?,
        assertion: world.client_assertion()?,
        agent_keys: VerifyingKeySet::from_jwks(&world.agent_key.jwks(), &[Algorithm::Es256])?,
        access_claims,
        access_token,
        signing_key,
        mandate_keys,
    };
    ceiling::measure(inputs, per_measure)
}

fn print_ceiling(c: &Ceiling) {
    println!(
        "\n== cryptographic ceiling (in-process, mandate-token, {} threads)\n  ES256 verify {:.1} µs, ES256 sign {:.1} µs (one core)\n  verify + sign (client_secret_basic exchange)   {:>9.0}/s\n  2 verify + sign (private_key_jwt exchange)    {:>9.0}/s\n  verify (introspection)                         {:>9.0}/s",
        c.threads, c.verify_us, c.sign_us, c.exchange_basic, c.exchange_pkjwt, c.introspect
    );
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "n/a (in-process)".into(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

fn print_store(report: &StoreReport, ceiling: &Ceiling, tokens: usize) {
    println!(
        "  {:<28} {:>9} {:>8} {:>8} {:>9} {:>7} {:>11} {:>10} {:>7}",
        "phase",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ceiling/s",
        "ratio",
        "srv µs/req",
        "gen µs/req",
        "errors"
    );
    // A phase with its CPU per request, and its ratio to a ceiling when it has one.
    let closed = |name: &str, phase: &Phase, ceiling_rate: Option<f64>| {
        let s = &phase.sample;
        let per = |cpu: Option<Duration>| {
            cpu.filter(|_| s.ok > 0).map_or_else(
                || "n/a".to_owned(),
                |c| format!("{:.0}", c.as_secs_f64() * 1e6 / s.ok as f64),
            )
        };
        let (ceiling, ratio) = ceiling_rate.map_or_else(
            || (String::new(), String::new()),
            |c| {
                let ratio = 100.0 * s.rate() / c.max(1e-9);
                (format!("{c:.0}"), format!("{ratio:.0}%"))
            },
        );
        println!(
            "  {:<28} {:>9.0} {:>8.2} {:>8.2} {:>9} {:>7} {:>11} {:>10} {:>7}",
            name,
            s.rate(),
            s.quantile_ms(0.5),
            s.quantile_ms(0.99),
            ceiling,
            ratio,
            per(phase.server_cpu),
            per(phase.client_cpu),
            s.failed
        );
    };
    let open = |name: &str, s: &Sample| {
        println!(
            "  {:<28} {:>9.0} {:>8.2} {:>8.2} {:>9} {:>7} {:>11} {:>10} {:>7}   ({} dispatches > 2 ms late)",
            name,
            s.rate(),
            s.quantile_ms(0.5),
            s.quantile_ms(0.99),
            "",
            "",
            "",
            "",
            s.failed,
            s.late_dispatches
        );
    };
    closed(
        "exchange basic",
        &report.exchange_basic,
        Some(ceiling.exchange_basic),
    );
    closed(
        "exchange private_key_jwt",
        &report.exchange_pkjwt,
        Some(ceiling.exchange_pkjwt),
    );
    open("exchange basic, half load", &report.exchange_half);
    closed("introspect", &report.introspect, Some(ceiling.introspect));
    open("introspect, half load", &report.introspect_half);
    closed("floor: GET discovery", &report.floor, None);
    closed("floor at the exchange rate", &report.floor_paced, None);
    if let Some(server_us) = report.exchange_basic.server_us_per_request() {
        let crypto = ceiling.verify_us + ceiling.sign_us;
        let floor_us = report.floor_paced.server_us_per_request().unwrap_or(0.0);
        println!(
            "  server CPU per basic exchange {server_us:.0} µs: verify + sign {crypto:.0} µs ({:.0}%), \
             a bare request at that rate {floor_us:.0} µs ({:.0}%), the rest {:.0} µs",
            100.0 * crypto / server_us,
            100.0 * floor_us / server_us,
            server_us - crypto - floor_us
        );
    }
    if report.rss_early_kib.is_some() || report.rss_late_kib.is_some() {
        println!(
            "  RSS: idle {}, after 10 s of saturation {}, at the end ({:?}) {}",
            mib(report.idle_rss_kib),
            mib(report.rss_early_kib),
            report.exchange_basic.sample.elapsed,
            mib(report.rss_late_kib)
        );
    }
    for (name, sample) in report.samples() {
        if let Some(error) = &sample.first_error {
            println!("  first error in {name}: {error}");
        }
    }
    println!("  introspected {tokens} distinct tokens");
}
