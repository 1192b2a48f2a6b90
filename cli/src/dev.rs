//! `omnisql dev` and `omnisql sandbox`.
//!
//! `omnisql dev` runs the whole system in one process: the sandbox SaaS world, a control plane (SQLite
//! and a local key in a data folder), and a data plane enrolled with it. The demo tenant is created
//! through the admin API, exactly as a user would, and reaches the data plane through the watch.

use omnisql_data_plane::control::LinkOptions;
use omnisql_sandbox::{Latency, Quotas, Sandbox, SandboxConfig};
use serde::Serialize;
use serde_json::json;

use crate::admin::AdminClient;
use crate::{CliError, shutdown_signal};

/// The demo tenant's API key unless `--token` says otherwise. `omnisql sql` uses it by default.
pub const DEV_TOKEN: &str = "omnisql-dev-demo-key-not-secret";

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Flight SQL listen address.
    #[arg(long, env = "OMNISQL_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: String,
    #[command(flatten)]
    flight_tls: crate::control::FlightTlsArgs,
    /// Postgres wire protocol listen address (the password is the API key).
    #[arg(long, env = "OMNISQL_PG_ADDR", default_value = "127.0.0.1:55432")]
    pg_addr: String,
    /// The demo tenant's API key.
    #[arg(long, env = "OMNISQL_DEV_TOKEN", default_value = DEV_TOKEN)]
    token: String,
    #[command(flatten)]
    engine: crate::EngineArgs,
    /// Also write the endpoints, token and sandbox credentials to this JSON file.
    #[arg(long, env = "OMNISQL_ENDPOINTS_FILE")]
    endpoints_file: Option<std::path::PathBuf>,
    /// Control plane admin API listen address.
    #[arg(long, env = "OMNISQL_HTTP_ADDR", default_value = "127.0.0.1:0")]
    http_addr: String,
    /// Control plane data-plane gRPC listen address.
    #[arg(long, env = "OMNISQL_GRPC_ADDR", default_value = "127.0.0.1:0")]
    grpc_addr: String,
    /// Keep the control plane's database, key and the data plane's state here (default: a temporary
    /// folder removed on exit).
    #[arg(long, env = "OMNISQL_DATA_DIR")]
    data_dir: Option<std::path::PathBuf>,
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
    /// The benchmark's latency model instead (`omnisql bench --latency default`: GitHub 100 ms,
    /// Salesforce 150 ms, Slack 80 ms, ±20%), to look into its runs with `EXPLAIN ANALYZE`.
    #[arg(long, env = "OMNISQL_SANDBOX_BENCH_LATENCY", conflicts_with = "latency_ms")]
    bench_latency: bool,
    /// Enforce the real services' quotas (GitHub 5,000/h, Slack tiers…) instead of generous ones.
    #[arg(long, env = "OMNISQL_SANDBOX_REAL_QUOTAS")]
    real_quotas: bool,
}

impl WorldArgs {
    fn config(&self) -> SandboxConfig {
        let config = SandboxConfig {
            seed: self.seed,
            scale: self.scale,
            quotas: if self.real_quotas { Quotas::default() } else { Quotas::generous() },
            ..Default::default()
        };
        if self.bench_latency {
            return config.with_default_latency();
        }
        config.with_latency(Latency { fixed_ms: self.latency_ms, jitter_pct: if self.latency_ms > 0 { 20.0 } else { 0.0 } })
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
    #[arg(long, default_value_t = 8084)]
    jira_port: u16,
    #[arg(long, default_value_t = 8085)]
    stripe_port: u16,
    #[arg(long, default_value_t = 8086)]
    hubspot_port: u16,
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
    /// `host:port` of the Postgres wire protocol.
    postgres: String,
    token: String,
    admin_api: String,
    control_plane_grpc: String,
    operator_key: String,
    data_dir: String,
    /// Each sandbox app by connection name (`github`, `salesforce`, …).
    #[serde(flatten)]
    apps: std::collections::BTreeMap<String, AppEndpoint>,
}

fn app_endpoints(sandbox: &Sandbox) -> std::collections::BTreeMap<String, AppEndpoint> {
    sandbox
        .connections()
        .into_iter()
        .map(|c| {
            let base_url = c.options.get("base_url").or(c.options.get("login_url")).cloned().unwrap_or_default();
            let credentials = c.options.into_iter().filter(|(k, _)| k != "base_url" && k != "login_url" && k != "orgs").collect();
            (c.name.to_string(), AppEndpoint { base_url, credentials })
        })
        .collect()
}

/// Removes a temporary data folder on exit.
struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(d) = &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

pub async fn run(args: DevArgs) -> Result<(), CliError> {
    let shutdown = shutdown_signal()?;
    let tls = args.flight_tls.load()?;
    let (data_dir, _cleanup) = match &args.data_dir {
        Some(d) => (d.clone(), TempDir(None)),
        None => {
            let d = std::env::temp_dir().join(format!("omnisql-dev-{}", std::process::id()));
            (d.clone(), TempDir(Some(d)))
        }
    };
    let sandbox = Sandbox::start(args.world.config()).await?;
    let mut cp_args = crate::control::ControlPlaneArgs::for_dev(&args.http_addr, &args.grpc_addr, &data_dir);
    cp_args.oidc_allow_http = args.engine.oidc_allow_http;
    let cp = crate::control::start_control_plane(&cp_args).await?;
    let admin = AdminClient::new(&cp.admin_url(), cp.bootstrap_key.as_deref().unwrap_or_default());
    let operator_key = match &cp.bootstrap_key {
        Some(k) => k.clone(),
        None => std::fs::read_to_string(data_dir.join("operator.key")).unwrap_or_default().trim().to_string(),
    };
    if let Some(k) = &cp.bootstrap_key {
        let path = data_dir.join("operator.key");
        std::fs::write(&path, k).map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
        setup_demo_tenant(&admin, &args.token).await?;
    }
    let admin = AdminClient::new(&cp.admin_url(), &operator_key);
    connect_sandbox(&admin, &sandbox).await?;
    // The data plane keeps its identity in the data folder, so a kept `--data-dir` reuses it.
    let state_dir = data_dir.join("data-plane");
    let enrollment_token = if state_dir.join("identity.json").exists() {
        None
    } else {
        let token = admin.post("/v1/enrollment-tokens", json!({"region": "local"})).await?;
        token["token"].as_str().map(str::to_string)
    };
    let link = LinkOptions {
        url: cp.grpc_url(),
        enrollment_token,
        state_dir,
        kms: omnisql_secrets::ProviderConfig::Local { key_file: data_dir.join("master.key") },
        ca_pem: None,
    };
    let state_dir = link.state_dir.clone();
    let dp = crate::control::start_data_plane(None, Some(link), &state_dir, &args.engine).await?;
    // Serve once the demo tenant's configuration is in.
    let revision = cp.state.store.revision().await.map_err(omnisql_control_plane::server::StartError::from)?;
    if let Some(l) = &dp.link {
        l.applied(revision.max(0) as u64).await;
    }
    let listener = omnisql_data_plane::bind(&args.flight_addr).await?;
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let flight = format!("{scheme}://{}", listener.local_addr().map(|a| a.to_string()).unwrap_or(args.flight_addr.clone()));
    let postgres = dp.serve_postgres(&args.pg_addr, tls.as_ref()).await?;
    let endpoints = Endpoints {
        flight_sql: flight.clone(),
        postgres: postgres.clone(),
        token: args.token.clone(),
        admin_api: cp.admin_url(),
        control_plane_grpc: cp.grpc_url(),
        operator_key: operator_key.clone(),
        data_dir: data_dir.display().to_string(),
        apps: app_endpoints(&sandbox),
    };
    if let Some(path) = &args.endpoints_file {
        let json = serde_json::to_string_pretty(&endpoints).unwrap_or_default();
        std::fs::write(path, json).map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
    }
    let (pg_host, pg_port) = postgres.rsplit_once(':').unwrap_or((postgres.as_str(), "5432"));
    let endpoint_flag = match (&tls, args.flight_addr.as_str()) {
        (None, "127.0.0.1:50051") => String::new(),
        (None, _) => format!(" --endpoint {flight}"),
        (Some(_), _) => format!(" --endpoint {flight} --ca-file <your CA>"),
    };
    eprintln!(
        "\nOmniSQL dev is running (demo tenant `demo`, sandbox world seed {} scale {}).\n\
         \n  Flight SQL   {flight}\n  Postgres     {postgres} (psql \"host={pg_host} port={pg_port} user=demo\", the API key as password)\n  API key      {}\n  Admin API    {} (operator key {operator_key})\n  GitHub       {}\n  Salesforce   {}\n  Slack        {}\n  Jira         {}\n  Stripe       {}\n  HubSpot      {}\n\
         \nTry:\n  omnisql sql{endpoint_flag} \"SELECT repo_full_name, number, title FROM github.issues WHERE state = 'open' LIMIT 5\"\n\
         \nCtrl-C stops it.\n",
        args.world.seed,
        args.world.scale,
        args.token,
        cp.admin_url(),
        sandbox.github_url,
        sandbox.salesforce_url,
        sandbox.slack_url,
        sandbox.jira_url,
        sandbox.stripe_url,
        sandbox.hubspot_url
    );
    omnisql_data_plane::serve(dp.engine.clone(), Some(dp.outbox.clone()), listener, tls.as_ref(), shutdown).await?;
    drop(dp);
    cp.shutdown().await;
    Ok(())
}

/// Creates the demo tenant through the admin API: a tenant and its member with the demo key (registered
/// by hash, so the control plane never sees it).
async fn setup_demo_tenant(admin: &AdminClient, token: &str) -> Result<(), CliError> {
    admin.post("/v1/tenants", json!({"id": "demo", "name": "Demo", "region": "local", "admin": "demo-admin"})).await?;
    admin.post("/v1/tenants/demo/principals", json!({"id": "demo-user", "kind": "user", "role": "tenant_member"})).await?;
    let hash = omnisql_engine::config::sha256_hex(token);
    admin.post("/v1/tenants/demo/api-keys", json!({"principal": "demo-user", "sha256": hash})).await?;
    Ok(())
}

/// (Re)creates one demo connection per sandbox app: the sandbox listens on new ports each start.
async fn connect_sandbox(admin: &AdminClient, sandbox: &Sandbox) -> Result<(), CliError> {
    for c in sandbox.connections() {
        match admin.call(reqwest::Method::DELETE, &format!("/v1/tenants/demo/connections/{}", c.name), None).await {
            Ok(_) | Err(crate::admin::AdminError::Refused { status: 404, .. }) => {}
            Err(e) => return Err(e.into()),
        }
        admin
            .post("/v1/tenants/demo/connections", json!({"name": c.name, "connector": c.connector, "options": c.options}))
            .await?;
    }
    Ok(())
}

pub async fn sandbox(args: SandboxArgs) -> Result<(), CliError> {
    let config = SandboxConfig {
        host: args.host.clone(),
        github_port: args.github_port,
        salesforce_port: args.salesforce_port,
        slack_port: args.slack_port,
        jira_port: args.jira_port,
        stripe_port: args.stripe_port,
        hubspot_port: args.hubspot_port,
        ..args.world.config()
    };
    let sandbox = Sandbox::start(config).await?;
    let shutdown = shutdown_signal()?;
    let show = app_endpoints(&sandbox);
    println!("{}", serde_json::to_string_pretty(&show).unwrap_or_default());
    eprintln!("Sandbox running; GET /_sandbox/stats on each base URL counts requests. Ctrl-C stops it.");
    shutdown.await;
    drop(sandbox);
    Ok(())
}
