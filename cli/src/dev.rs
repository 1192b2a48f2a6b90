//! `omnisql dev` and `omnisql sandbox`.

use std::sync::Arc;

use omnisql_engine::{Engine, testing};
use omnisql_sandbox::{Latency, Quotas, Sandbox, SandboxConfig};
use serde::Serialize;

use crate::{CliError, shutdown_signal};

/// The demo tenant's API key unless `--token` says otherwise. `omnisql sql` uses it by default.
pub const DEV_TOKEN: &str = "omnisql-dev-demo-key-not-secret";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Flight SQL listen address.
    #[arg(long, env = "OMNISQL_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: String,
    /// The demo tenant's API key.
    #[arg(long, env = "OMNISQL_DEV_TOKEN", default_value = DEV_TOKEN)]
    token: String,
    #[command(flatten)]
    engine: crate::EngineArgs,
    /// Also write the endpoints, token and sandbox credentials to this JSON file.
    #[arg(long, env = "OMNISQL_ENDPOINTS_FILE")]
    endpoints_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Debug, clap::Args)]
pub struct WorldArgs {
    /// Seed of the sandbox world.
    #[arg(long, env = "OMNISQL_SANDBOX_SEED", default_value_t = 42)]
    seed: u64,
    /// Size of the sandbox world (1: ~200 issues; 500: 100k issues).
    #[arg(long, env = "OMNISQL_SANDBOX_SCALE", default_value_t = 1)]
    scale: u32,
    /// Latency added to every sandbox request, in milliseconds (±20% jitter).
    #[arg(long, env = "OMNISQL_SANDBOX_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Enforce the real services' quotas (GitHub 5,000/h, Slack tiers…) instead of generous ones.
    #[arg(long, env = "OMNISQL_SANDBOX_REAL_QUOTAS")]
    real_quotas: bool,
}

impl WorldArgs {
    fn config(&self) -> SandboxConfig {
        SandboxConfig {
            seed: self.seed,
            scale: self.scale,
            quotas: if self.real_quotas { Quotas::default() } else { Quotas::generous() },
            ..Default::default()
        }
        .with_latency(Latency { fixed_ms: self.latency_ms, jitter_pct: if self.latency_ms > 0 { 20.0 } else { 0.0 } })
    }
}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    #[arg(long, env = "OMNISQL_SANDBOX_HOST", default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8081)]
    github_port: u16,
    #[arg(long, default_value_t = 8082)]
    salesforce_port: u16,
    #[arg(long, default_value_t = 8083)]
    slack_port: u16,
    #[command(flatten)]
    world: WorldArgs,
}

#[derive(Debug, Serialize)]
struct AppEndpoint {
    base_url: String,
    credentials: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Endpoints {
    flight_sql: String,
    token: String,
    github: AppEndpoint,
    salesforce: AppEndpoint,
    slack: AppEndpoint,
}

fn app_endpoints(sandbox: &Sandbox) -> (AppEndpoint, AppEndpoint, AppEndpoint) {
    let mut apps = sandbox.connections().into_iter().map(|c| {
        let base_url = c.options.get("base_url").or(c.options.get("login_url")).cloned().unwrap_or_default();
        let credentials = c.options.into_iter().filter(|(k, _)| k != "base_url" && k != "login_url" && k != "orgs").collect();
        AppEndpoint { base_url, credentials }
    });
    let mut next = || apps.next().unwrap_or(AppEndpoint { base_url: String::new(), credentials: Default::default() });
    (next(), next(), next())
}

pub async fn run(args: DevArgs) -> Result<(), CliError> {
    let sandbox = Sandbox::start(args.world.config()).await?;
    let connections =
        sandbox.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("demo", "demo-user", &args.token, connections)]);
    let engine = Arc::new(Engine::new(&config, args.engine.options().await?)?);
    let listener = omnisql_data_plane::bind(&args.flight_addr).await?;
    let shutdown = shutdown_signal()?;
    let flight = format!("grpc://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or(args.flight_addr.clone()));
    let (github, salesforce, slack) = app_endpoints(&sandbox);
    let endpoints = Endpoints { flight_sql: flight.clone(), token: args.token.clone(), github, salesforce, slack };
    if let Some(path) = &args.endpoints_file {
        let json = serde_json::to_string_pretty(&endpoints).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
    }
    let endpoint_flag =
        if args.flight_addr == "127.0.0.1:50051" { String::new() } else { format!(" --endpoint http://{}", args.flight_addr) };
    eprintln!(
        "\nOmniSQL dev is running (demo tenant `demo`, sandbox world seed {} scale {}).\n\
         \n  Flight SQL   {flight}\n  API key      {}\n  GitHub       {}\n  Salesforce   {}\n  Slack        {}\n\
         \nTry:\n  omnisql sql{endpoint_flag} \"SELECT repo_full_name, number, title FROM github.issues WHERE state = 'open' LIMIT 5\"\n\
         \nCtrl-C stops it.\n",
        args.world.seed, args.world.scale, args.token, sandbox.github_url, sandbox.salesforce_url, sandbox.slack_url
    );
    omnisql_data_plane::serve(engine, listener, shutdown).await?;
    Ok(())
}

pub async fn sandbox(args: SandboxArgs) -> Result<(), CliError> {
    let config = SandboxConfig {
        host: args.host.clone(),
        github_port: args.github_port,
        salesforce_port: args.salesforce_port,
        slack_port: args.slack_port,
        ..args.world.config()
    };
    let sandbox = Sandbox::start(config).await?;
    let shutdown = shutdown_signal()?;
    let (github, salesforce, slack) = app_endpoints(&sandbox);
    let show = serde_json::json!({"github": github, "salesforce": salesforce, "slack": slack});
    println!("{}", serde_json::to_string_pretty(&show).unwrap_or_default());
    eprintln!("Sandbox running; GET /_sandbox/stats on each base URL counts requests. Ctrl-C stops it.");
    shutdown.await;
    drop(sandbox);
    Ok(())
}
