//! `omnisql`: the one binary.
//!
//! - `omnisql dev`: sandbox SaaS world + control plane + data plane + a demo tenant, in one process.
//! - `omnisql sql`: run a query against a Flight SQL endpoint (or an interactive prompt).
//! - `omnisql control-plane`: the control plane (admin REST API + data-plane gRPC).
//! - `omnisql data-plane --control-plane URL --enrollment-token T` (or `--config FILE`): a data plane.
//! - `omnisql admin …`: the admin API from the command line.
//! - `omnisql sandbox`: the sandbox GitHub, Salesforce and Slack servers alone.
//! - `omnisql bench`: latency, throughput and upstream requests, against baselines.
//! - `omnisql operator crd`: the `DataPlane` CustomResourceDefinition the Kubernetes operator serves.

mod admin;
mod bench;
mod client;
mod connector;
mod control;
mod dev;
mod health;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "omnisql", version, about = "Federated SQL over live SaaS data")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sandbox + control plane + data plane + demo tenant in one process, on loopback.
    Dev(dev::DevArgs),
    /// Run SQL against a Flight SQL endpoint; without a query, an interactive prompt.
    Sql(client::SqlArgs),
    /// The control plane: admin REST API and the data planes' gRPC service.
    ControlPlane(control::ControlPlaneArgs),
    /// A data plane, configured by a control plane (or by a TOML file).
    DataPlane(control::DataPlaneArgs),
    /// Tenants, principals, keys, connections, policies and audit, through the admin API.
    Admin(admin::AdminArgs),
    /// Serve the sandbox GitHub, Salesforce and Slack APIs alone.
    Sandbox(dev::SandboxArgs),
    /// The Kubernetes operator that runs data planes from `DataPlane` resources.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// Benchmark OmniSQL against the naive engine and the physical limit; writes JSON and Markdown.
    Bench(bench::BenchArgs),
    /// Connector tooling: draft a table spec from an OpenAPI document.
    #[command(subcommand)]
    Connector(connector::ConnectorCommand),
}

#[derive(Debug, Subcommand)]
enum OperatorCommand {
    /// Print the `DataPlane` CustomResourceDefinition (YAML), generated from the operator's types.
    Crd,
    /// Run the operator: reconcile `DataPlane` resources with the cluster from `KUBECONFIG` (or the
    /// pod's service account).
    Run {
        /// Watch this namespace only (default: every namespace the operator may read).
        #[arg(long, env = "OMNISQL_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
    },
}

/// How the engine runs queries; the defaults are the production ones.
#[derive(Debug, clap::Args)]
pub(crate) struct EngineArgs {
    /// Keep every filter, order and limit in the engine (a baseline for comparisons).
    #[arg(long, env = "OMNISQL_NO_PUSHDOWN")]
    no_pushdown: bool,
    /// The naive federated engine: no pushdown, no prefetch, one request at a time per connection.
    #[arg(long, env = "OMNISQL_NAIVE", conflicts_with = "no_pushdown")]
    naive: bool,
    /// Do not wait for a join's keys to send them to the probe side's API (a baseline for comparisons).
    #[arg(long, env = "OMNISQL_NO_JOIN_KEYS")]
    no_join_keys: bool,
    /// Memory for cached API answers, in MiB (0 turns the cache off).
    #[arg(long, env = "OMNISQL_CACHE_MIB", default_value_t = 64)]
    cache_mib: usize,
    /// Memory for recent query results answered again to the same caller while their data is fresh
    /// enough, in MiB (0 turns them off; so does `--cache-mib 0`).
    #[arg(long, env = "OMNISQL_RESULT_CACHE_MIB", default_value_t = 16)]
    result_cache_mib: usize,
    /// Keep rate-limit windows in Redis, so replicas sharing credentials stay within limits together.
    #[arg(long, env = "OMNISQL_REDIS_URL")]
    redis_url: Option<String>,
    /// Memory for running queries, all tenants together (e.g. `2GiB`); a tenant may hold half, one
    /// query a quarter. Default: 60% of the container's memory limit (or of the machine's memory).
    #[arg(long, env = "OMNISQL_MEMORY_LIMIT", value_parser = parse_size)]
    memory_limit: Option<usize>,
    /// Longest a statement may run, for tenants whose configuration does not say (e.g. `2 min`).
    #[arg(long, env = "OMNISQL_STATEMENT_TIMEOUT", default_value = "120 s", value_parser = parse_timeout)]
    statement_timeout: std::time::Duration,
    /// Statements one tenant may run at once, for tenants whose configuration does not say; more queue.
    #[arg(long, env = "OMNISQL_MAX_CONCURRENT_QUERIES", default_value_t = 16)]
    max_concurrent_queries: u32,
    /// Upstream requests one query may make unless its session sets `omnisql.request_budget` (0: no
    /// budget). A query that surely needs more fails before its first request.
    #[arg(long, env = "OMNISQL_REQUEST_BUDGET", default_value_t = 1000)]
    request_budget: u64,
    /// Cores whose CPU is shared fairly between tenants' queries (0: leave it to the runtime, a
    /// baseline for the noisy-neighbour benchmark). Default: the cores this process may use.
    #[arg(long, env = "OMNISQL_FAIR_CPU_CORES")]
    fair_cpu_cores: Option<usize>,
    /// Accept tenants' OIDC issuers over plain `http` (development and tests only).
    #[arg(long, env = "OMNISQL_OIDC_ALLOW_HTTP")]
    pub(crate) oidc_allow_http: bool,
    /// An OPA server tenants may have decide their policies, as a URL prefix (repeat, or separate with
    /// commas); a tenant naming another server is refused every table.
    #[arg(long = "opa-allow-url", env = "OMNISQL_OPA_ALLOW_URLS", value_delimiter = ',')]
    opa_allowed_urls: Vec<String>,
    /// Threads that run query operators, apart from the threads that answer requests (0: operators run
    /// on the request threads, a baseline for comparisons). Default: eight per core.
    #[arg(long, env = "OMNISQL_OPERATOR_THREADS")]
    operator_threads: Option<usize>,
}

fn parse_size(text: &str) -> Result<usize, String> {
    omnisql_engine::resources::parse_size(text).ok_or_else(|| format!("expected a size such as 512MiB or 2GiB, not {text:?}"))
}

fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    omnisql_engine::settings::parse_duration(text)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 30s or 2 min, not {text:?}"))
}

impl EngineArgs {
    pub(crate) async fn options(&self) -> Result<omnisql_engine::EngineOptions, CliError> {
        let mut options = if self.naive {
            omnisql_engine::EngineOptions::naive()
        } else if self.no_pushdown {
            omnisql_engine::EngineOptions::without_pushdown()
        } else {
            omnisql_engine::EngineOptions::default()
        };
        options.connectors = omnisql_connectors::all();
        if !self.naive {
            options.cache_bytes = (self.cache_mib > 0).then_some(self.cache_mib << 20);
            options.result_cache_bytes = (self.result_cache_mib > 0).then_some(self.result_cache_mib << 20);
        }
        if self.no_join_keys {
            options.scan.join_keys = false;
        }
        if let Some(bytes) = self.memory_limit {
            options.memory = omnisql_engine::MemoryLimits::for_process(bytes);
        }
        options.query_timeout = self.statement_timeout;
        options.max_concurrent_queries = self.max_concurrent_queries.max(1);
        options.request_budget = (self.request_budget > 0).then_some(self.request_budget);
        options.oidc = omnisql_oidc::Verifier::new().allow_http(self.oidc_allow_http);
        options.opa_allowed_urls = self.opa_allowed_urls.clone();
        options.operator_threads = match self.operator_threads {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(omnisql_engine::operator_threads()),
        };
        if let Some(cores) = self.fair_cpu_cores {
            options.fair_cpu_cores = (cores > 0).then_some(cores);
        }
        if let Some(url) = &self.redis_url {
            let limiter = omnisql_connector::shared_limit::SharedLimiter::connect(url)
                .await
                .map_err(|source| CliError::Redis { url: url.clone(), source })?;
            options.shared_limits = Some(limiter);
        }
        Ok(options)
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot reach the Kubernetes API (KUBECONFIG or the pod's service account): {0}")]
    Kubernetes(String),
    #[error(transparent)]
    Config(#[from] omnisql_engine::ConfigError),
    #[error(transparent)]
    Engine(#[from] omnisql_engine::EngineError),
    #[error(transparent)]
    Serve(#[from] omnisql_data_plane::ServeError),
    #[error(transparent)]
    Tls(#[from] omnisql_tls::TlsError),
    #[error(transparent)]
    Sandbox(#[from] omnisql_sandbox::SandboxError),
    #[error(transparent)]
    Client(#[from] client::ClientError),
    #[error(transparent)]
    Bench(#[from] omnisql_bench::BenchError),
    #[error(transparent)]
    ControlPlane(#[from] omnisql_control_plane::server::StartError),
    #[error(transparent)]
    Link(#[from] omnisql_data_plane::control::LinkError),
    #[error(transparent)]
    Outbox(#[from] omnisql_engine::audit::OutboxError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Draft(#[from] connector::DraftError),
    #[error("cannot describe this build's connectors for the catalog")]
    Catalog(#[from] omnisql_connector::ConnectorError),
    #[error("cannot connect to Redis at {url}")]
    Redis {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot install the shutdown signal handlers")]
    Signal {
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// mimalloc returns freed memory to the system promptly and keeps per-thread heaps small; with the C
/// library's allocator a data plane that has run a large query keeps most of that memory resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Both rustls crypto backends are linked; pick one before any TLS is used.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Sql(_) | Command::Admin(_) | Command::Connector(_));
    let service = match cli.command {
        Command::Dev(_) => "omnisql-dev",
        Command::ControlPlane(_) => "omnisql-control-plane",
        Command::DataPlane(_) => "omnisql-data-plane",
        _ => "omnisql",
    };
    // One thread per core answers requests and plans queries (stacks that fit the deepest statement
    // admitted); a data plane's query operators run on a pool of their own (`omnisql_engine::pool`).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(omnisql_engine::THREAD_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Inside the runtime: the OTLP exporter runs on it. Dropped at the end, which flushes spans.
        let _telemetry = omnisql_telemetry::trace::init(service, if quiet { "warn" } else { "info" });
        match cli.command {
            Command::Dev(args) => dev::run(args).await,
            Command::Sql(args) => client::run(args).await.map_err(CliError::from),
            Command::ControlPlane(args) => control::control_plane(args).await,
            Command::DataPlane(args) => control::data_plane(args).await,
            Command::Admin(args) => admin::run(args).await.map_err(CliError::from),
            Command::Sandbox(args) => dev::sandbox(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Connector(command) => connector::run(command),
            Command::Operator(OperatorCommand::Crd) => {
                print!("{}", omnisql_operator::crd_yaml());
                Ok(())
            }
            Command::Operator(OperatorCommand::Run { namespace }) => {
                let client = kube::Client::try_default().await.map_err(|e| CliError::Kubernetes(e.to_string()))?;
                eprintln!(
                    "OmniSQL operator: watching DataPlane resources in {}",
                    namespace.as_deref().unwrap_or("every namespace")
                );
                omnisql_operator::controller::run(client, namespace.as_deref()).await;
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// A future that resolves on Ctrl-C or SIGTERM. The handlers are installed now, before the caller
/// announces it is ready, so a signal that arrives right after the announcement is not missed.
pub(crate) fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let install = |kind: SignalKind| signal(kind).map_err(|source| CliError::Signal { source });
    let mut interrupt = install(SignalKind::interrupt())?;
    let mut terminate = install(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        eprintln!("shutting down");
    })
}
