//! `omnisql bench`.

use std::path::PathBuf;

use omnisql_bench::{BenchOptions, LatencyModel};

use crate::CliError;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Latency {
    /// GitHub 100 ms, Salesforce 150 ms, Slack 80 ms per request, ±20%.
    Default,
    /// No added latency: the engine's own overhead.
    Zero,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Sandbox latency model.
    #[arg(long, value_enum, default_value = "default")]
    latency: Latency,
    /// A run of a few seconds (zero latency, few iterations): proves the harness, measures little.
    #[arg(long)]
    quick: bool,
    /// Measured runs per workload on OmniSQL.
    #[arg(long, default_value_t = 30)]
    iterations: usize,
    /// Measured runs per workload on the naive engine (seconds each with the default latency model).
    #[arg(long, default_value_t = 5)]
    naive_iterations: usize,
    /// Client connections per workload.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Sustained mix: target queries per second (0 skips it); several (`1000,2000,4000`) are run in
    /// turn until one is not held, and the report names the knee (the highest held).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    rate: Vec<u32>,
    /// Sustained mix: tenants.
    #[arg(long, default_value_t = 20)]
    tenants: usize,
    /// Sustained mix: seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Sandbox world size.
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Skip the naive-engine baseline.
    #[arg(long)]
    skip_naive: bool,
    /// A Python with dlt and DuckDB (`pip install "dlt[duckdb]"`) for the outside baseline.
    #[arg(long, env = "OMNISQL_BENCH_DLT_PYTHON")]
    dlt_python: Option<PathBuf>,
    /// Run only these workloads (`point_lookup,join_3_sources`; `warm_join_3_sources` and
    /// `cold_join_3_sources` come with `join_3_sources`); all when not given.
    #[arg(long, value_delimiter = ',')]
    workload: Vec<String>,
    /// Start the data planes without kept results (`--result-cache-mib 0`): the baseline for them.
    #[arg(long)]
    no_kept_results: bool,
    /// Also run the point lookup, the 3-source join and a 100,000-row result over Flight SQL and over the
    /// Postgres wire protocol, one connection each (`--iterations` runs; at most 7 joins and 10 of the
    /// 100k rows). Best in a run of its own (`--workload none`): the joins share the APIs' quotas.
    #[arg(long)]
    protocols: bool,
    /// Where bench.json and bench.md go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    let bin = std::env::current_exe().map_err(|source| CliError::Write { path: "current executable".into(), source })?;
    let options = if args.quick {
        BenchOptions { dlt_python: args.dlt_python.clone(), ..BenchOptions::quick(bin, args.out.clone()) }
    } else {
        BenchOptions {
            quick: false,
            latency: match args.latency {
                Latency::Default => LatencyModel::Default,
                Latency::Zero => LatencyModel::Zero,
            },
            scale: args.scale,
            iterations: args.iterations,
            naive_iterations: args.naive_iterations,
            concurrency: args.concurrency,
            mix_rates: args.rate.clone(),
            mix_tenants: args.tenants,
            mix_seconds: args.seconds,
            skip_naive: args.skip_naive,
            workloads: args.workload.clone(),
            kept_results: !args.no_kept_results,
            protocols: args.protocols,
            dlt_python: args.dlt_python.clone(),
            out_dir: args.out.clone(),
            omnisql_bin: bin,
        }
    };
    eprintln!("running benchmarks ({:?} latency); results go to {}", options.latency, options.out_dir.display());
    let report = omnisql_bench::run(&options).await?;
    println!("{}", omnisql_bench::report::table(&report));
    eprintln!("wrote {0}/bench.json, {0}/bench.md and {0}/bench.png", options.out_dir.display());
    Ok(())
}
