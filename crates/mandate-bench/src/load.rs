//! The load driver: N keep-alive connections at saturation for a fixed time (closed loop), or
//! requests dispatched at a fixed rate whatever the answers (open loop).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::wire::{self, Connection, Pool};

/// Makes a request body that was not prepared in advance (for request `i`).
pub type BodyMaker = Arc<dyn Fn(u64) -> anyhow::Result<String> + Send + Sync>;

/// What a successful answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// 200 with an `access_token`.
    Token,
    /// 200 with `"active":true`.
    Active,
    /// 200 to a `GET` of the path (no body, no credentials): what HTTP, routing and logging cost
    /// on their own.
    Document,
}

/// One kind of request, sent over and over.
#[derive(Clone)]
pub struct Workload {
    /// The server's `host:port` (the `Host` header).
    pub host: String,
    /// The path posted to.
    pub path: String,
    /// The `Authorization` header's value, if any.
    pub auth: Option<String>,
    /// Bodies prepared in advance, used in turn (`i % len`) when `fresh` is `None`; with
    /// `fresh`, each is used once, then `fresh` makes more.
    pub bodies: Arc<Vec<String>>,
    /// Makes body `i` once the prepared ones are used up (single-use credentials).
    pub fresh: Option<BodyMaker>,
    /// What success is.
    pub expect: Expect,
    /// Access tokens from successful answers are kept here, up to its capacity.
    pub keep_tokens: Option<Arc<Mutex<Vec<String>>>>,
    /// How many tokens to keep.
    pub keep_limit: usize,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("path", &self.path)
            .field("bodies", &self.bodies.len())
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl Workload {
    fn body(&self, i: u64) -> anyhow::Result<String> {
        let n = self.bodies.len() as u64;
        match &self.fresh {
            None if n > 0 => Ok(self.bodies[usize::try_from(i % n)?].clone()),
            None => anyhow::bail!("a workload without bodies"),
            Some(_) if i < n => Ok(self.bodies[usize::try_from(i)?].clone()),
            Some(fresh) => fresh(i),
        }
    }

    async fn send(&self, connection: &mut Connection, i: u64) -> Result<(), String> {
        let request = if self.expect == Expect::Document {
            wire::get(&self.host, &self.path)
        } else {
            let body = self.body(i).map_err(|e| e.to_string())?;
            wire::form_post(&self.host, &self.path, self.auth.as_deref(), &body)
        };
        let answer = connection
            .round_trip(&request)
            .await
            .map_err(|e| e.to_string())?;
        let (status, bytes) = (answer.status, answer.body);
        if status != 200 {
            // Error bodies are RFC 6749 codes and fixed descriptions: never a token.
            return Err(format!(
                "{status} {}",
                String::from_utf8_lossy(bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        match self.expect {
            Expect::Active => {
                if !bytes.starts_with(br#"{"active":true"#) {
                    return Err("introspection answered active=false".into());
                }
            }
            Expect::Token => {
                let keep = self.keep_tokens.as_ref().filter(|kept| {
                    kept.lock()
                        .map(|k| k.len() < self.keep_limit)
                        .unwrap_or(false)
                });
                if let Some(kept) = keep {
                    let value: serde_json::Value =
                        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
                    let token = value["access_token"]
                        .as_str()
                        .ok_or("no access_token in the answer")?;
                    if let Ok(mut kept) = kept.lock() {
                        kept.push(token.to_owned());
                    }
                } else if !bytes.starts_with(br#"{"access_token":""#) {
                    return Err("no access_token in the answer".into());
                }
            }
            Expect::Document => {
                if !bytes.starts_with(b"{") {
                    return Err("the document is not a JSON object".into());
                }
            }
        }
        Ok(())
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub failed: u64,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latencies of successful requests, in µs, sorted.
    pub latencies_us: Vec<u32>,
    /// Open loop only: dispatches more than 2 ms behind schedule (the driver could not keep up).
    pub late_dispatches: u64,
}

impl Sample {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`-quantile latency in ms (0 when nothing succeeded).
    pub fn quantile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let last = self.latencies_us.len() - 1;
        let index = ((last as f64) * p).round() as usize;
        f64::from(self.latencies_us[index.min(last)]) / 1000.0
    }

    fn absorb(&mut self, part: Part) {
        self.ok += part.ok;
        self.failed += part.failed;
        if self.first_error.is_none() {
            self.first_error = part.first_error;
        }
        self.latencies_us.extend(part.latencies_us);
    }
}

#[derive(Default)]
struct Part {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

impl Part {
    fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                let us = started.elapsed().as_micros();
                self.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Err(error) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error);
                }
            }
        }
    }
}

/// Closed loop: `concurrency` tasks, each with its own connection, sending its next request as
/// soon as the previous one is answered, for `duration` (a connection that failed is replaced). Request numbers start at `first` (so single-use bodies are not
/// reused across runs).
pub async fn saturate(
    address: SocketAddr,
    workload: &Workload,
    concurrency: usize,
    duration: Duration,
    counter: Arc<AtomicU64>,
) -> Sample {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let workload = workload.clone();
        let counter = counter.clone();
        tasks.spawn(async move {
            let mut part = Part::default();
            let mut connection = None;
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let open = match connection.take() {
                    Some(open) => Ok(open),
                    None => Connection::open(address).await.map_err(|e| e.to_string()),
                };
                let outcome = match open {
                    Ok(mut open) => {
                        let outcome = workload.send(&mut open, i).await;
                        if outcome.is_ok() {
                            connection = Some(open);
                        }
                        outcome
                    }
                    Err(error) => Err(error),
                };
                part.record(sent, outcome);
            }
            part
        });
    }
    collect(tasks, started, Sample::default()).await
}

/// Open loop: one request every `1 / rate` s for `duration`, each on its own task whatever the
/// previous answers, at most `max_in_flight` at once. Latency runs from dispatch; dispatches
/// more than 2 ms behind schedule are counted (tokio's timer has 1 ms granularity, so requests
/// leave in small bursts each millisecond).
pub async fn paced(
    pool: &Arc<Pool>,
    workload: &Workload,
    rate: f64,
    duration: Duration,
    max_in_flight: usize,
    counter: Arc<AtomicU64>,
) -> Sample {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (duration.as_secs_f64() * rate.max(1.0)) as u64;
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let mut tasks = JoinSet::new();
    let mut late = 0;
    let mut done = Sample::default();
    for n in 0..total {
        let scheduled = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        if scheduled.elapsed() > Duration::from_millis(2) {
            late += 1;
        }
        let pool = pool.clone();
        let workload = workload.clone();
        let i = counter.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let mut part = Part::default();
            let sent = Instant::now();
            let outcome = match pool.take().await {
                Ok(mut connection) => {
                    let outcome = workload.send(&mut connection, i).await;
                    if outcome.is_ok() {
                        pool.put(connection);
                    }
                    outcome
                }
                Err(error) => Err(error.to_string()),
            };
            part.record(sent, outcome);
            drop(permit);
            part
        });
        // Reap finished tasks as we go so the set stays small.
        while let Some(Ok(part)) = tasks.try_join_next() {
            done.absorb(part);
        }
    }
    let mut sample = collect(tasks, started, done).await;
    sample.late_dispatches = late;
    sample
}

async fn collect(mut tasks: JoinSet<Part>, started: Instant, mut sample: Sample) -> Sample {
    while let Some(joined) = tasks.join_next().await {
        if let Ok(part) = joined {
            sample.absorb(part);
        }
    }
    sample.elapsed = started.elapsed();
    sample.latencies_us.sort_unstable();
    sample
}
