//! `omnisql control-plane` and `omnisql data-plane`: the two servers, configured by flags that also read
//! `OMNISQL_*` environment variables.

use std::path::PathBuf;
use std::sync::Arc;

use omnisql_control_plane::model::{ColumnSchema, ConnectorVersion, ParameterSpec, TableSchema};
use omnisql_control_plane::{ControlPlane, Options};
use omnisql_data_plane::control::{ControlLink, LinkOptions};
use omnisql_engine::audit::Outbox;
use omnisql_engine::{Config, Engine};
use omnisql_secrets::ProviderConfig;

use crate::{CliError, EngineArgs, shutdown_signal};

/// Which key provider seals (control plane) or opens (data plane) connection credentials.
#[derive(Debug, Clone, clap::Args)]
pub struct KmsArgs {
    /// `local` (a key file) or `aws-kms`.
    #[arg(long = "kms", env = "OMNISQL_KMS", default_value = "local", value_parser = ["local", "aws-kms"])]
    provider: String,
    /// The local provider's key file (created on first use).
    #[arg(long, env = "OMNISQL_KMS_KEY_FILE")]
    kms_key_file: Option<PathBuf>,
    /// A KMS-compatible endpoint instead of AWS's (e.g. for tests).
    #[arg(long, env = "OMNISQL_KMS_ENDPOINT")]
    kms_endpoint: Option<String>,
    /// The AWS region of the KMS keys (else the AWS environment's).
    #[arg(long, env = "OMNISQL_KMS_REGION")]
    kms_region: Option<String>,
}

impl KmsArgs {
    fn provider(&self, data_dir: &std::path::Path) -> ProviderConfig {
        match self.provider.as_str() {
            "aws-kms" => ProviderConfig::AwsKms { endpoint: self.kms_endpoint.clone(), region: self.kms_region.clone() },
            _ => ProviderConfig::Local { key_file: self.kms_key_file.clone().unwrap_or_else(|| data_dir.join("master.key")) },
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Admin REST API listen address.
    #[arg(long, env = "OMNISQL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: String,
    /// Data-plane gRPC listen address.
    #[arg(long, env = "OMNISQL_GRPC_ADDR", default_value = "127.0.0.1:7070")]
    grpc_addr: String,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB` (default: SQLite in the data folder).
    #[arg(long, env = "OMNISQL_DATABASE_URL")]
    database_url: Option<String>,
    /// Folder for the SQLite database and the local key file.
    #[arg(long, env = "OMNISQL_DATA_DIR", default_value = "omnisql-data")]
    data_dir: PathBuf,
    #[command(flatten)]
    kms: KmsArgs,
    /// The key-encryption key of tenants that name none (a KMS key id or ARN; `local` for the local provider).
    #[arg(long, env = "OMNISQL_DEFAULT_KEY_ID", default_value = "local")]
    default_key_id: String,
    /// On first start, write the platform operator's API key here instead of printing it.
    #[arg(long, env = "OMNISQL_BOOTSTRAP_KEY_FILE")]
    bootstrap_key_file: Option<PathBuf>,
    /// The platform operator's API key to register on first start (at least 32 letters, digits, `_`,
    /// `-`), instead of generating one: set it from a secret store, e.g. a Kubernetes Secret.
    #[arg(long, env = "OMNISQL_BOOTSTRAP_KEY", hide_env_values = true, conflicts_with = "bootstrap_key_file")]
    bootstrap_key: Option<String>,
    /// Serve the data planes' gRPC over TLS: the certificate chain (PEM; re-read when it changes, so a
    /// renewed certificate needs no restart); needs `--grpc-tls-key`.
    #[arg(long, env = "OMNISQL_GRPC_TLS_CERT", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// The private key of `--grpc-tls-cert` (PEM).
    #[arg(long, env = "OMNISQL_GRPC_TLS_KEY", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// Accept tenants' OIDC issuers over plain `http` (development and tests only).
    #[arg(long, env = "OMNISQL_OIDC_ALLOW_HTTP")]
    pub oidc_allow_http: bool,
    /// The URL browsers reach the admin API and dashboard at (e.g. `https://omnisql.example.com`): the
    /// identity provider sends browsers back to `<URL>/v1/sign-in/callback`, which must be registered with
    /// it. Without it, the host the browser used, over http (development only).
    #[arg(long, env = "OMNISQL_PUBLIC_URL")]
    pub public_url: Option<String>,
}

impl ControlPlaneArgs {
    /// `omnisql dev`'s control plane: SQLite and a local key in `data_dir`.
    pub fn for_dev(http_addr: &str, grpc_addr: &str, data_dir: &std::path::Path) -> ControlPlaneArgs {
        ControlPlaneArgs {
            http_addr: http_addr.into(),
            grpc_addr: grpc_addr.into(),
            database_url: None,
            data_dir: data_dir.to_path_buf(),
            kms: KmsArgs { provider: "local".into(), kms_key_file: None, kms_endpoint: None, kms_region: None },
            default_key_id: "local".into(),
            bootstrap_key_file: None,
            bootstrap_key: None,
            grpc_tls_cert: None,
            grpc_tls_key: None,
            oidc_allow_http: false,
            public_url: None,
        }
    }
}

/// The catalog entries of the connectors this build runs.
pub async fn catalog() -> Result<Vec<ConnectorVersion>, CliError> {
    Ok(omnisql_connectors::describe()
        .await?
        .into_iter()
        .map(|d| ConnectorVersion {
            name: d.name,
            version: d.version,
            parameters: d
                .parameters
                .into_iter()
                .map(|(name, description, required, secret)| ParameterSpec { name, description, required, secret })
                .collect(),
            tables: d
                .tables
                .into_iter()
                .map(|(name, columns)| TableSchema {
                    name,
                    columns: columns.into_iter().map(|(name, data_type)| ColumnSchema { name, data_type }).collect(),
                })
                .collect(),
            created_at: omnisql_control_plane::model::now_ms(),
        })
        .collect())
}

pub async fn start_control_plane(args: &ControlPlaneArgs) -> Result<ControlPlane, CliError> {
    let database_url =
        args.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", args.data_dir.join("control-plane.db").display()));
    let grpc_tls = server_tls(&args.grpc_tls_cert, &args.grpc_tls_key)?;
    let options = Options {
        grpc_tls,
        bootstrap_key: args.bootstrap_key.clone(),
        http_addr: args.http_addr.clone(),
        grpc_addr: args.grpc_addr.clone(),
        database_url,
        kms: args.kms.provider(&args.data_dir),
        default_key_id: args.default_key_id.clone(),
        connectors: catalog().await?,
        oidc_allow_http: args.oidc_allow_http,
        public_url: args.public_url.clone(),
        // Connection upgrades run the target version's smoke tests against an in-process sandbox.
        smoke_tests: Some(std::sync::Arc::new(omnisql_cli::smoke::SandboxSmokeTests::new())),
    };
    Ok(ControlPlane::start(options).await?)
}

pub async fn control_plane(args: ControlPlaneArgs) -> Result<(), CliError> {
    let shutdown = shutdown_signal()?;
    let cp = start_control_plane(&args).await?;
    if let Some(key) = &cp.bootstrap_key {
        match &args.bootstrap_key_file {
            Some(path) => {
                std::fs::write(path, format!("{key}\n"))
                    .map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
                eprintln!("First start: the platform operator's API key is in {}", path.display());
            }
            None => eprintln!("First start: the platform operator's API key (shown once, keep it safe):\n\n  {key}\n"),
        }
    }
    eprintln!("OmniSQL control plane: admin API {} · data-plane gRPC {}", cp.admin_url(), cp.grpc_url());
    shutdown.await;
    cp.shutdown().await;
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct DataPlaneArgs {
    /// Tenants, API keys and connections from a TOML file (without a control plane).
    #[arg(long, env = "OMNISQL_CONFIG", conflicts_with = "control_plane", required_unless_present = "control_plane")]
    config: Option<PathBuf>,
    /// The control plane's data-plane gRPC URL, e.g. http://127.0.0.1:7070.
    #[arg(long, env = "OMNISQL_CONTROL_PLANE")]
    control_plane: Option<String>,
    /// One-time enrollment token (first start only).
    #[arg(long, env = "OMNISQL_ENROLLMENT_TOKEN", conflicts_with = "enrollment_token_file")]
    enrollment_token: Option<String>,
    /// PEM certificates to trust for an `https://` control plane besides the public roots (its own CA).
    #[arg(long, env = "OMNISQL_CONTROL_PLANE_CA_FILE")]
    control_plane_ca_file: Option<PathBuf>,
    /// A file holding the enrollment token, read on a start without an identity (the operator leaves one
    /// per replica); a missing file is no token.
    #[arg(long, env = "OMNISQL_ENROLLMENT_TOKEN_FILE")]
    enrollment_token_file: Option<PathBuf>,
    /// Credential, last configuration and audit outbox.
    #[arg(long, env = "OMNISQL_STATE_DIR", default_value = "omnisql-data/data-plane")]
    state_dir: PathBuf,
    #[command(flatten)]
    kms: KmsArgs,
    /// Flight SQL listen address.
    #[arg(long, env = "OMNISQL_FLIGHT_ADDR", default_value = "127.0.0.1:50051")]
    flight_addr: String,
    #[command(flatten)]
    flight_tls: FlightTlsArgs,
    /// Also serve the Postgres wire protocol here (psql, psycopg, JDBC's and BI tools' Postgres
    /// drivers), e.g. `0.0.0.0:5432`; with `--flight-tls-cert` it uses the same certificate and accepts
    /// only TLS connections.
    #[arg(long, env = "OMNISQL_PG_ADDR")]
    pg_addr: Option<String>,
    /// HTTP health endpoints for orchestrators: `GET /live` (the process runs) and `GET /ready` (it
    /// serves Flight SQL with a configuration from its control plane).
    #[arg(long, env = "OMNISQL_HEALTH_ADDR")]
    health_addr: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// A data plane's engine, outbox and (with a control plane) link.
pub struct DataPlane {
    pub engine: Arc<Engine>,
    pub outbox: Arc<Outbox>,
    pub link: Option<ControlLink>,
}

impl DataPlane {
    /// Serves the Postgres protocol on `addr` (with `tls`, the Flight SQL certificate) in the background
    /// for as long as the process runs; returns the bound address.
    pub async fn serve_postgres(&self, addr: &str, tls: Option<&omnisql_tls::ServerTls>) -> Result<String, CliError> {
        let listener = omnisql_data_plane::bind(addr).await?;
        let bound = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
        let pg =
            omnisql_data_plane::pg::serve(self.engine.clone(), Some(self.outbox.clone()), listener, tls, std::future::pending())?;
        tokio::spawn(pg);
        Ok(bound)
    }
}

pub async fn start_data_plane(
    config: Option<&std::path::Path>,
    link: Option<LinkOptions>,
    state_dir: &std::path::Path,
    engine: &EngineArgs,
) -> Result<DataPlane, CliError> {
    let config = match config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let engine = Arc::new(Engine::new(&config, engine.options().await?)?);
    let outbox = Outbox::open(&state_dir.join("audit"))?;
    let link = match link {
        Some(options) => Some(omnisql_data_plane::control::start(engine.clone(), outbox.clone(), options).await?),
        None => None,
    };
    Ok(DataPlane { engine, outbox, link })
}

pub async fn data_plane(args: DataPlaneArgs) -> Result<(), CliError> {
    let token_from_file = args
        .enrollment_token_file
        .as_ref()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let ca_pem = match &args.control_plane_ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|source| CliError::Write { path: path.display().to_string(), source })?),
        None => None,
    };
    let link = args.control_plane.as_ref().map(|url| LinkOptions {
        url: url.clone(),
        enrollment_token: args.enrollment_token.clone().or(token_from_file),
        ca_pem: ca_pem.clone(),
        state_dir: args.state_dir.clone(),
        kms: args.kms.provider(&args.state_dir),
    });
    let tls = args.flight_tls.load()?;
    let dp = start_data_plane(args.config.as_deref(), link, &args.state_dir, &args.engine).await?;
    let listener = omnisql_data_plane::bind(&args.flight_addr).await?;
    let shutdown = shutdown_signal()?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(args.flight_addr.clone());
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    match &dp.link {
        Some(l) => eprintln!("OmniSQL data plane {} (region {}): Flight SQL on {scheme}://{addr}", l.data_plane_id, l.region),
        None => eprintln!("OmniSQL data plane: Flight SQL on {scheme}://{addr}"),
    }
    if let Some(pg_addr) = &args.pg_addr {
        let bound = dp.serve_postgres(pg_addr, tls.as_ref()).await?;
        let ssl = if tls.is_some() { "require" } else { "disable" };
        eprintln!("Postgres protocol on {bound} (sslmode={ssl})");
    }
    if let Some(health) = &args.health_addr {
        let revision = dp.link.as_ref().map(|l| l.revision_watch());
        let gauges = crate::health::data_plane_gauges(dp.engine.clone(), dp.outbox.clone());
        let bound = crate::health::serve(health, revision, gauges).await?;
        eprintln!("health endpoints on http://{bound} (/live, /ready, /metrics)");
    }
    omnisql_data_plane::serve(dp.engine.clone(), Some(dp.outbox.clone()), listener, tls.as_ref(), shutdown).await?;
    Ok(())
}

/// Flight SQL over TLS, for `omnisql data-plane` and `omnisql dev`.
#[derive(Debug, clap::Args)]
pub struct FlightTlsArgs {
    /// Serve Flight SQL over TLS (`grpc+tls://`): the certificate chain (PEM, e.g. a `kubernetes.io/tls`
    /// Secret's `tls.crt`; re-read when it changes, so a renewed certificate needs no restart); needs
    /// `--flight-tls-key`.
    #[arg(long, env = "OMNISQL_FLIGHT_TLS_CERT", requires = "flight_tls_key")]
    flight_tls_cert: Option<PathBuf>,
    /// The private key of `--flight-tls-cert` (PEM).
    #[arg(long, env = "OMNISQL_FLIGHT_TLS_KEY", requires = "flight_tls_cert")]
    flight_tls_key: Option<PathBuf>,
}

impl FlightTlsArgs {
    /// The identity to serve, or none for plain Flight SQL; files that do not load are an error now.
    pub fn load(&self) -> Result<Option<omnisql_tls::ServerTls>, CliError> {
        server_tls(&self.flight_tls_cert, &self.flight_tls_key)
    }
}

/// A TLS identity from a certificate and key file, when both are given (clap requires one with the other).
fn server_tls(cert: &Option<PathBuf>, key: &Option<PathBuf>) -> Result<Option<omnisql_tls::ServerTls>, CliError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(omnisql_tls::ServerTls::from_files(cert, key)?)),
        _ => Ok(None),
    }
}
