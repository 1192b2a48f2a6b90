//! `omnisql bench`: latency, throughput and API economy of OmniSQL, side by side with baselines.
//!
//! The harness starts the sandbox (in this process, with a latency model) and two data planes as child
//! processes over the same world: OmniSQL as shipped, and the naive federated engine (no pushdown, no
//! prefetch, one request at a time per connection). It drives both over Flight SQL on loopback with many
//! client connections, counts upstream requests at the sandbox, and reports per workload p50/p95/p99,
//! achieved QPS, upstream requests per query, the physical limit (fewest sequential round trips × the
//! modelled latency) and peak data-plane memory, as a table, JSON and Markdown.

pub mod plane;
pub mod protocols;
pub mod report;
pub mod workloads;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use omnisql_data_plane::client;
use omnisql_engine::testing;
use omnisql_sandbox::{Latency, Quotas, Sandbox, SandboxConfig};
use serde::Serialize;

use crate::plane::DataPlane;
use crate::workloads::{App, Workload};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Sandbox(#[from] omnisql_sandbox::SandboxError),
    #[error("cannot start {bin}")]
    Spawn {
        bin: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the data plane: {0}")]
    Start(String),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read sandbox stats")]
    Stats(#[source] reqwest::Error),
    #[error("the dlt baseline failed: {0}")]
    Dlt(String),
    #[error("the load generator failed: {0}")]
    Load(String),
}

/// The sandbox's latency model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum LatencyModel {
    /// GitHub 100 ms, Salesforce 150 ms, Slack 80 ms per request, ±20%.
    Default,
    /// No added latency: the engine's own overhead.
    Zero,
}

impl LatencyModel {
    fn millis(self, app: App) -> f64 {
        match (self, app) {
            (LatencyModel::Zero, _) => 0.0,
            (LatencyModel::Default, App::Github) => 100.0,
            (LatencyModel::Default, App::Salesforce) => 150.0,
            (LatencyModel::Default, App::Slack) => 80.0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// A `--quick` run: it proves the harness end to end and judges no target.
    pub quick: bool,
    pub latency: LatencyModel,
    pub scale: u32,
    /// Measured runs per workload on OmniSQL, and on the (much slower) naive engine.
    pub iterations: usize,
    pub naive_iterations: usize,
    /// Client connections running a workload at once.
    pub concurrency: usize,
    /// The sustained multi-tenant mix: target rates (each run in turn, lowest first, until one is not
    /// held: the last held is the knee), tenants, seconds (0 skips it). The noisy-neighbour run uses
    /// the first rate.
    pub mix_rates: Vec<u32>,
    pub mix_tenants: usize,
    pub mix_seconds: f64,
    /// Skip the naive baseline.
    pub skip_naive: bool,
    /// Only these workloads (by name); all when empty.
    pub workloads: Vec<String>,
    /// Data planes keep results of repeated statements (off: the baseline for them).
    pub kept_results: bool,
    /// Also compare Flight SQL with the Postgres wire protocol (point lookup, 3-source join, 100k rows).
    pub protocols: bool,
    /// A Python with dlt and DuckDB, for the outside baseline (skipped when absent).
    pub dlt_python: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// The `omnisql` binary, for the data plane child processes.
    pub omnisql_bin: PathBuf,
}

impl BenchOptions {
    /// A few seconds: enough to prove the harness works end to end.
    pub fn quick(omnisql_bin: PathBuf, out_dir: PathBuf) -> Self {
        BenchOptions {
            quick: true,
            latency: LatencyModel::Zero,
            scale: 1,
            iterations: 3,
            naive_iterations: 2,
            concurrency: 2,
            mix_rates: vec![50],
            mix_tenants: 4,
            mix_seconds: 1.0,
            skip_naive: false,
            workloads: Vec::new(),
            kept_results: true,
            protocols: true,
            dlt_python: None,
            out_dir,
            omnisql_bin,
        }
    }
}

/// One workload on one engine.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub workload: String,
    pub engine: &'static str,
    pub runs: usize,
    pub errors: usize,
    pub rows: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub qps: f64,
    pub upstream_per_query: f64,
    /// Share of the workload's API answers served from the cache.
    pub cache_hit_rate: f64,
    pub physical_limit_ms: f64,
    /// Pushdown can shrink this workload's upstream traffic (the 10× target applies).
    pub selective: bool,
    /// p50 as a multiple of the physical limit (absent when the limit is zero).
    pub p50_vs_limit: Option<f64>,
}

/// The noisy neighbour: the mix of the other tenants, alone and while one tenant sends resource bombs.
#[derive(Debug, Clone, Serialize)]
pub struct NeighbourResult {
    pub target_qps: u32,
    /// Tenants running the mix (the bomber is one more).
    pub tenants: usize,
    pub seconds: f64,
    pub unloaded_p99_ms: f64,
    pub loaded_p99_ms: f64,
    pub unloaded_errors: usize,
    pub loaded_errors: usize,
    /// Bombs sent, and how many the data plane refused or stopped (all should be).
    pub bombs: usize,
    pub bombs_failed: usize,
    pub peak_rss_mib: f64,
    pub memory_limit_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MixResult {
    pub engine: &'static str,
    pub target_qps: u32,
    pub tenants: usize,
    pub seconds: f64,
    pub completed: usize,
    pub errors: usize,
    pub achieved_qps: f64,
    pub rate_held: bool,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// p99 of the queries scheduled after the first second: without each tenant's first run of each
    /// statement, which must go upstream whatever the cache does.
    pub p99_after_first_second_ms: f64,
    /// p99 of the queries scheduled in each second of the run (failed ones left out).
    pub p99_by_second_ms: Vec<f64>,
}

/// The outside baseline: copy the apps into DuckDB with dlt, then ask the join there.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DltResult {
    pub load_seconds: f64,
    pub first_query_seconds: f64,
    pub repeat_query_seconds: f64,
    pub rows: usize,
    /// Upstream requests the load made.
    #[serde(default)]
    pub upstream_requests: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// From a `--quick` run: its numbers prove the harness, not the targets.
    pub quick: bool,
    pub latency_model: LatencyModel,
    pub scale: u32,
    pub cores: usize,
    /// Whether the data planes kept results of repeated statements.
    pub kept_results: bool,
    pub workloads: Vec<WorkloadResult>,
    pub mix: Vec<MixResult>,
    pub neighbour: Option<NeighbourResult>,
    pub peak_rss_mib: BTreeMap<&'static str, f64>,
    /// `None` when no Python with dlt was given.
    pub dlt: Option<DltResult>,
    /// Every latency sample, per workload and engine, for the distribution chart.
    pub samples_ms: BTreeMap<String, Vec<f64>>,
    /// Flight SQL against the Postgres wire protocol (with `protocols`).
    pub protocols: Vec<protocols::ProtocolResult>,
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn token(tenant: usize) -> String {
    format!("bench-tenant-{tenant:02}-api-key")
}

/// Upstream requests the sandbox has counted since the last reset, all apps together.
async fn upstream(http: &reqwest::Client, sandbox: &Sandbox, reset: bool) -> Result<u64, BenchError> {
    let mut total = 0;
    for base in [&sandbox.github_url, &sandbox.salesforce_url, &sandbox.slack_url] {
        let resp = if reset {
            http.post(format!("{base}/_sandbox/stats/reset")).send().await
        } else {
            http.get(format!("{base}/_sandbox/stats")).send().await
        };
        let stats: serde_json::Value = resp.map_err(BenchError::Stats)?.json().await.map_err(BenchError::Stats)?;
        total += stats["total"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

/// The benchmark tenant's cache hits and misses so far, from `omnisql.cache_stats`.
async fn cache_counts(plane: &DataPlane) -> Result<(i64, i64), BenchError> {
    use datafusion::arrow::array::{Array, Int64Array};
    let mut c = client::connect(&plane.uri, &token(0)).await?;
    let batches = client::query(&mut c, "SELECT hits, misses FROM omnisql.cache_stats").await?;
    let value = |col: usize| {
        batches
            .first()
            .and_then(|b| b.column(col).as_any().downcast_ref::<Int64Array>().filter(|a| !a.is_empty()).map(|a| a.value(0)))
    };
    Ok((value(0).unwrap_or(0), value(1).unwrap_or(0)))
}

/// Runs `runs` queries over `concurrency` connections; returns latencies (ms), errors, rows of one run.
async fn drive(
    uri: &str,
    token: &str,
    sql: &str,
    runs: usize,
    concurrency: usize,
) -> Result<(Vec<f64>, usize, usize, f64), BenchError> {
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..concurrency.max(1) {
        let mut client = client::connect(uri, token).await?;
        let share = runs / concurrency.max(1) + usize::from(c < runs % concurrency.max(1));
        let sql = sql.to_string();
        tasks.push(tokio::spawn(async move {
            let mut out = (Vec::with_capacity(share), 0usize, 0usize);
            for _ in 0..share {
                let t = Instant::now();
                match client::query(&mut client, &sql).await {
                    Ok(batches) => {
                        out.0.push(t.elapsed().as_secs_f64() * 1000.0);
                        out.2 = batches.iter().map(|b| b.num_rows()).sum();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "benchmark query failed");
                        out.1 += 1;
                    }
                }
            }
            out
        }));
    }
    let (mut latencies, mut errors, mut rows) = (Vec::new(), 0, 0);
    for t in tasks {
        if let Ok((l, e, r)) = t.await {
            latencies.extend(l);
            errors += e;
            rows = rows.max(r);
        }
    }
    Ok((latencies, errors, rows, started.elapsed().as_secs_f64()))
}

struct Measured {
    result: WorkloadResult,
    samples: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    http: &reqwest::Client,
    sandbox: &Sandbox,
    plane: &DataPlane,
    engine: &'static str,
    name: &str,
    sql: &str,
    runs: usize,
    concurrency: usize,
    limit_ms: f64,
    selective: bool,
) -> Result<Measured, BenchError> {
    upstream(http, sandbox, true).await?;
    let before = cache_counts(plane).await?;
    let (mut latencies, errors, rows, elapsed) = drive(&plane.uri, &token(0), sql, runs, concurrency).await?;
    let requests = upstream(http, sandbox, false).await?;
    let after = cache_counts(plane).await?;
    let (hits, misses) = (after.0 - before.0, after.1 - before.1);
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 50.0);
    let result = WorkloadResult {
        workload: name.to_string(),
        engine,
        runs: latencies.len(),
        errors,
        rows,
        p50_ms: p50,
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        qps: latencies.len() as f64 / elapsed.max(1e-9),
        upstream_per_query: requests as f64 / runs.max(1) as f64,
        cache_hit_rate: if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
        physical_limit_ms: limit_ms,
        selective,
        p50_vs_limit: (limit_ms > 0.0).then(|| p50 / limit_ms),
    };
    Ok(Measured { result, samples: latencies })
}

/// The sustained mix: an open loop at `rate` queries per second spread over `tenants` tenants; latency
/// counts from each query's scheduled start, so a falling-behind server shows in it.
async fn mix(
    plane: &DataPlane,
    queries: &[String],
    rate: u32,
    tenants: std::ops::Range<usize>,
    seconds: f64,
) -> Result<(MixResult, Vec<f64>), BenchError> {
    let count = tenants.len();
    let mut clients = Vec::new();
    for t in tenants {
        // Two connections per tenant.
        for _ in 0..2 {
            clients.push(client::connect(&plane.uri, &token(t)).await?);
        }
    }
    let total = (rate as f64 * seconds).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    // One dispatcher starts each query at its time (thousands of timers set at once would themselves
    // stall the client when the timer wheel moves them).
    let queries = queries.to_vec();
    let dispatcher = tokio::spawn(async move {
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let mut client = clients[i % clients.len()].clone();
            let sql = queries[i % queries.len()].clone();
            let scheduled = start + interval.mul_f64(i as f64);
            tokio::time::sleep_until(scheduled).await;
            tasks.push(tokio::spawn(async move {
                let ok = client::query(&mut client, &sql).await.is_ok();
                (ok, scheduled.elapsed().as_secs_f64() * 1000.0, tokio::time::Instant::now())
            }));
        }
        tasks
    });
    let tasks = dispatcher.await.map_err(|e| BenchError::Load(e.to_string()))?;
    let warm_from = rate as usize;
    let (mut latencies, mut warm, mut errors, mut last) = (Vec::with_capacity(total), Vec::new(), 0, start);
    let mut timeline = Vec::with_capacity(total);
    for (i, t) in tasks.into_iter().enumerate() {
        if let Ok((ok, ms, done)) = t.await {
            timeline.push(if ok { ms } else { f64::NAN });
            if ok {
                latencies.push(ms);
                if i >= warm_from {
                    warm.push(ms);
                }
            } else {
                errors += 1;
            }
            last = last.max(done);
        }
    }
    // The tail second by second (by scheduled start): a cold start, a stall and queueing look different.
    let p99_by_second_ms = timeline
        .chunks(rate.max(1) as usize)
        .map(|second| {
            let mut second: Vec<f64> = second.iter().copied().filter(|ms| !ms.is_nan()).collect();
            second.sort_by(f64::total_cmp);
            percentile(&second, 99.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    warm.sort_by(f64::total_cmp);
    let elapsed = last.duration_since(start).as_secs_f64().max(1e-9);
    let achieved = latencies.len() as f64 / elapsed;
    let result = MixResult {
        engine: "omnisql",
        target_qps: rate,
        tenants: count,
        seconds,
        completed: latencies.len(),
        errors,
        achieved_qps: achieved,
        rate_held: errors == 0 && achieved >= 0.95 * rate as f64,
        p50_ms: percentile(&latencies, 50.0),
        p95_ms: percentile(&latencies, 95.0),
        p99_ms: percentile(&latencies, 99.0),
        p99_after_first_second_ms: percentile(&warm, 99.0),
        p99_by_second_ms,
    };
    Ok((result, latencies))
}

/// The mix of tenants 1.. alone, then again while tenant 0 sends resource bombs over four connections
/// without pause (each stopped at 2 s at the latest); the data plane's peak memory is read after both.
async fn neighbour(
    plane: &DataPlane,
    world: &omnisql_sandbox::World,
    options: &BenchOptions,
    tenants: usize,
) -> Result<NeighbourResult, BenchError> {
    let queries = workloads::mix(world);
    let rate = options.mix_rates.first().copied().unwrap_or(0);
    // A first, unmeasured pass warms these tenants' sessions and caches, so both measured passes start alike.
    mix(plane, &queries, rate, 1..tenants, options.mix_seconds / 2.0).await?;
    let (unloaded, _) = mix(plane, &queries, rate, 1..tenants, options.mix_seconds).await?;
    // Bombs that ended, and those that ended with an error (refused or stopped at a limit).
    let counts = std::sync::Arc::new([std::sync::atomic::AtomicUsize::new(0), std::sync::atomic::AtomicUsize::new(0)]);
    let mut bombers = Vec::new();
    for b in 0..4 {
        let mut client = client::connect(&plane.uri, &token(0)).await?;
        let counts = counts.clone();
        bombers.push(tokio::spawn(async move {
            let bombs = workloads::bombs();
            for n in 0.. {
                // A short timeout of its own, so the bomber cycles through the whole catalogue.
                let sql = format!("SET omnisql.statement_timeout = '2s'; {}", bombs[(n * 4 + b) % bombs.len()]);
                let failed = client::query(&mut client, &sql).await.is_err();
                counts[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counts[1].fetch_add(usize::from(failed), std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Let the bombs reach their limits before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (loaded, _) = mix(plane, &queries, rate, 1..tenants, options.mix_seconds).await?;
    // Dropping a bomber's call cancels its statement on the data plane.
    for b in &bombers {
        b.abort();
    }
    let bombs = counts[0].load(std::sync::atomic::Ordering::Relaxed);
    let bombs_failed = counts[1].load(std::sync::atomic::Ordering::Relaxed);
    Ok(NeighbourResult {
        target_qps: rate,
        tenants: tenants - 1,
        seconds: options.mix_seconds,
        unloaded_p99_ms: unloaded.p99_ms,
        loaded_p99_ms: loaded.p99_ms,
        unloaded_errors: unloaded.errors,
        loaded_errors: loaded.errors,
        bombs,
        bombs_failed,
        peak_rss_mib: plane.peak_rss_mib().unwrap_or(0.0),
        memory_limit_mib: (plane::MEMORY_LIMIT >> 20) as f64,
    })
}

fn sandbox_config(options: &BenchOptions) -> SandboxConfig {
    let config = SandboxConfig { scale: options.scale, quotas: Quotas::generous(), ..Default::default() };
    match options.latency {
        LatencyModel::Default => config.with_default_latency(),
        LatencyModel::Zero => config.with_latency(Latency::default()),
    }
}

/// Runs every workload on OmniSQL and on the naive engine, then the sustained mix; writes the report.
pub async fn run(options: &BenchOptions) -> Result<Report, BenchError> {
    let sandbox = Sandbox::start(sandbox_config(options)).await?;
    let connections: Vec<_> =
        sandbox.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let tenants = options.mix_tenants.max(1);
    let config = testing::config(
        (0..tenants).map(|t| testing::single_tenant(&format!("tenant{t:02}"), "bench", &token(t), connections.clone())).collect(),
    );
    std::fs::create_dir_all(&options.out_dir)
        .map_err(|source| BenchError::Write { path: options.out_dir.display().to_string(), source })?;
    let config_path = options.out_dir.join("bench-data-plane.toml");
    let text = toml::to_string(&config).unwrap_or_default();
    std::fs::write(&config_path, text).map_err(|source| BenchError::Write { path: config_path.display().to_string(), source })?;

    let http = reqwest::Client::new();
    let workloads = workloads::all(&sandbox.world);
    let limit =
        |w: &Workload| w.min_round_trips.iter().map(|(app, n)| options.latency.millis(*app) * *n as f64).fold(0.0, f64::max);
    let mut report = Report {
        quick: options.quick,
        latency_model: options.latency,
        scale: options.scale,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kept_results: options.kept_results,
        workloads: Vec::new(),
        mix: Vec::new(),
        neighbour: None,
        peak_rss_mib: BTreeMap::new(),
        dlt: None,
        samples_ms: BTreeMap::new(),
        protocols: Vec::new(),
    };
    let engines: &[(&'static str, bool)] =
        if options.skip_naive { &[("omnisql", false)] } else { &[("omnisql", false), ("naive", true)] };
    for &(engine, naive) in engines {
        let plane = DataPlane::start(&options.omnisql_bin, &config_path, naive, options.kept_results).await?;
        // Cold: the first query of a fresh data plane (logins, object discovery); then warm.
        let runs = if naive { options.naive_iterations } else { options.iterations };
        // Cold is the first question of a fresh data plane; warm repeats it, and may use the cache.
        let selected = |name: &str| options.workloads.is_empty() || options.workloads.iter().any(|w| w == name);
        let join = workloads.iter().find(|w| w.name == "join_3_sources" && selected(w.name)).cloned();
        if let Some(w) = &join {
            for (name, n) in [("cold_join_3_sources", 1), ("warm_join_3_sources", runs)] {
                let m = measure(&http, &sandbox, &plane, engine, name, &w.sql, n, 1, limit(w), w.selective).await?;
                report.samples_ms.insert(format!("{name}/{engine}"), m.samples);
                report.workloads.push(m.result);
            }
        }
        // Every other workload asks for fresh data: the federated path itself, not the cache.
        for w in workloads.iter().filter(|w| selected(w.name)) {
            let sql = format!("SET omnisql.max_staleness = '0'; {}", w.sql);
            let m =
                measure(&http, &sandbox, &plane, engine, w.name, &sql, runs, options.concurrency, limit(w), w.selective).await?;
            report.samples_ms.insert(format!("{}/{engine}", w.name), m.samples);
            report.workloads.push(m.result);
        }
        let mut rates: Vec<u32> = options.mix_rates.iter().copied().filter(|r| *r > 0).collect();
        rates.sort_unstable();
        if !naive && options.mix_seconds > 0.0 && !rates.is_empty() {
            for (i, rate) in rates.iter().enumerate() {
                let (mut result, samples) =
                    mix(&plane, &workloads::mix(&sandbox.world), *rate, 0..tenants, options.mix_seconds).await?;
                result.engine = engine;
                let held = result.rate_held;
                let key = if i == 0 { format!("sustained_mix/{engine}") } else { format!("sustained_mix_{rate}/{engine}") };
                report.samples_ms.insert(key, samples);
                report.mix.push(result);
                // Past the knee every higher rate only queues more.
                if !held {
                    break;
                }
            }
            if tenants > 1 {
                report.neighbour = Some(neighbour(&plane, &sandbox.world, options, tenants).await?);
            }
        }
        if !naive && options.protocols {
            // Fresh data for the two federated questions, so both protocols go upstream alike.
            let fresh = |name: &str| {
                workloads.iter().find(|w| w.name == name).map(|w| format!("SET omnisql.max_staleness = '0'; {}", w.sql))
            };
            // Seven fresh joins a minute per protocol is what Slack's Tier 3 allows without waiting.
            let mut compared = Vec::new();
            for (name, n) in [("point_lookup", runs), ("join_3_sources", runs.min(7))] {
                if let Some(sql) = fresh(name) {
                    compared.push((name, sql, n));
                }
            }
            compared.push(("rows_100k", protocols::ROWS_100K.to_string(), runs.clamp(1, 10)));
            report.protocols = protocols::compare(&plane, &token(0), &compared).await?;
        }
        if let Some(mib) = plane.peak_rss_mib() {
            report.peak_rss_mib.insert(engine, mib);
        }
        plane.stop().await;
    }
    if let Some(python) = &options.dlt_python {
        upstream(&http, &sandbox, true).await?;
        let mut result = dlt_baseline(python, &sandbox, &options.out_dir).await?;
        result.upstream_requests = upstream(&http, &sandbox, false).await?;
        report.dlt = Some(result);
    }
    report::write(&report, &options.out_dir)?;
    Ok(report)
}

/// Runs `baselines/dlt_duckdb.py` against the sandbox.
async fn dlt_baseline(python: &std::path::Path, sandbox: &Sandbox, dir: &std::path::Path) -> Result<DltResult, BenchError> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/baselines/dlt_duckdb.py");
    let endpoints = serde_json::json!({
        "github": {"base_url": sandbox.github_url, "credentials": {"token": sandbox.credentials.github_token}},
        "salesforce": {"base_url": sandbox.salesforce_url, "credentials": {
            "client_id": sandbox.credentials.salesforce_client_id,
            "client_secret": sandbox.credentials.salesforce_client_secret,
        }},
        "slack": {"base_url": sandbox.slack_url, "credentials": {"token": sandbox.credentials.slack_token}},
    });
    let path = dir.join("bench-sandbox-endpoints.json");
    std::fs::write(&path, endpoints.to_string())
        .map_err(|source| BenchError::Write { path: path.display().to_string(), source })?;
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg("--endpoints")
        .arg(&path)
        .env("RUNTIME__LOG_LEVEL", "ERROR")
        .output()
        .await
        .map_err(|source| BenchError::Spawn { bin: python.display().to_string(), source })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    match (out.status.success(), serde_json::from_str::<DltResult>(last)) {
        (true, Ok(r)) => Ok(r),
        _ => Err(BenchError::Dlt(format!("{}{}", stdout, String::from_utf8_lossy(&out.stderr)))),
    }
}
