//! Starting the control plane: open the store (migrating it), build the key provider, publish the
//! built-in connector catalog, create the platform operator on first start, and serve the admin API
//! (HTTP) and the data-plane service (gRPC) until shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use omnisql_secrets::{ProviderConfig, Sealer};
use omnisql_tls::ServerTls;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::grpc::DataPlaneGrpc;
use crate::keys;
use crate::model::*;
use crate::store::{SqlStore, Store, StoreError};

#[derive(Debug, Clone)]
pub struct Options {
    /// Admin REST API listen address (port 0 picks one).
    pub http_addr: String,
    /// Data-plane gRPC listen address.
    pub grpc_addr: String,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    pub kms: ProviderConfig,
    /// The key-encryption key of new tenants that name none.
    pub default_key_id: String,
    /// Connector versions to publish in the catalog at start.
    pub connectors: Vec<ConnectorVersion>,
    /// Serve the data planes' gRPC over TLS with this identity (from files, re-read when they change).
    pub grpc_tls: Option<ServerTls>,
    /// The platform operator's API key to register on the first start, chosen by whoever deploys (e.g. from
    /// a Kubernetes Secret); without it the first start generates one and hands it back once.
    pub bootstrap_key: Option<String>,
    /// Accept OIDC issuers over plain `http` (development and tests only; production issuers are https).
    pub oidc_allow_http: bool,
    /// The URL browsers reach the admin API at, for sign-in redirects (none: the host they used, over http).
    pub public_url: Option<String>,
    /// Runs connector versions' smoke tests before connection upgrades (none: upgrades are refused).
    pub smoke_tests: Option<Arc<dyn crate::smoke::SmokeTests>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the control plane's database")]
    Store(#[from] StoreError),
    #[error("cannot set up the key provider")]
    Secrets(#[from] omnisql_secrets::SecretsError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve TLS with the given certificate and key")]
    Tls(#[from] omnisql_tls::TlsError),
    #[error("the bootstrap key must be at least 32 characters of letters, digits, `_` or `-`")]
    WeakBootstrapKey,
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    grpc_tls: bool,
    pub state: AppState,
    /// The platform operator's API key, when this start created it (shown once).
    pub bootstrap_key: Option<String>,
    cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ControlPlane {
    pub async fn start(options: Options) -> Result<ControlPlane, StartError> {
        let store: Arc<dyn Store> = Arc::new(SqlStore::connect(&options.database_url).await?);
        let sealer = Sealer::new(options.kms.build().await?);
        let state = AppState::new(store.clone(), sealer, options.default_key_id.clone())
            .with_oidc(omnisql_oidc::Verifier::new().allow_http(options.oidc_allow_http))
            .with_public_url(options.public_url.clone())
            .with_smoke_tests(options.smoke_tests.clone());
        for c in &options.connectors {
            store.upsert_connector(c).await?;
        }
        if let Some(k) = &options.bootstrap_key {
            if k.len() < 32 || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(StartError::WeakBootstrapKey);
            }
        }
        let bootstrap_key = bootstrap(store.as_ref(), options.bootstrap_key.as_deref()).await?;

        let bind = |addr: String| async move {
            tokio::net::TcpListener::bind(&addr).await.map_err(|source| StartError::Bind { addr, source })
        };
        let http = bind(options.http_addr.clone()).await?;
        let grpc = bind(options.grpc_addr.clone()).await?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind { addr: options.http_addr.clone(), source })?;
        let grpc_addr = grpc.local_addr().map_err(|source| StartError::Bind { addr: options.grpc_addr.clone(), source })?;
        let cancel = CancellationToken::new();
        let service = DataPlaneGrpc::new(state.clone(), cancel.clone()).server();

        let router = api::router(state.clone());
        let stop = cancel.clone();
        let http_task = tokio::spawn(async move {
            // Small request/response pairs: without TCP_NODELAY, Nagle and delayed ACKs add ~40 ms.
            use axum::serve::ListenerExt;
            let http = http.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let serve = axum::serve(http, router).with_graceful_shutdown(async move { stop.cancelled().await });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
        let server = tonic::transport::Server::builder().add_service(service);
        let stop = cancel.clone();
        let stopped = async move { stop.cancelled().await };
        let report = |served: Result<(), tonic::transport::Error>| {
            if let Err(e) = served {
                tracing::error!(error = %e, "data-plane service stopped");
            }
        };
        let grpc_task = match &options.grpc_tls {
            Some(tls) => {
                let incoming = tls.incoming(grpc, &[b"h2"])?;
                tokio::spawn(async move { report(server.serve_with_incoming_shutdown(incoming, stopped).await) })
            }
            None => {
                let incoming = omnisql_tls::plain_incoming(grpc);
                tokio::spawn(async move { report(server.serve_with_incoming_shutdown(incoming, stopped).await) })
            }
        };
        tracing::info!(%http_addr, %grpc_addr, store = store.backend(), kms = state.sealer.provider(), "control plane listening");
        let grpc_tls = options.grpc_tls.is_some();
        Ok(ControlPlane { http_addr, grpc_addr, grpc_tls, state, bootstrap_key, cancel, tasks: vec![http_task, grpc_task] })
    }

    pub fn admin_url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn grpc_url(&self) -> String {
        format!("{}://{}", if self.grpc_tls { "https" } else { "http" }, self.grpc_addr)
    }

    /// Stops serving (open watch streams end) and waits for both servers.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Resolves when the servers stop.
    pub async fn wait(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// On first start, creates the platform tenant and its operator, and returns the operator's API key.
/// On the first start (no platform tenant yet), creates it with its operator and the operator's key:
/// `provided`, or a new one that is returned (shown once).
async fn bootstrap(store: &dyn Store, provided: Option<&str>) -> Result<Option<String>, StoreError> {
    let platform = TenantId::platform();
    match store.get_tenant(&platform).await {
        Ok(_) => return Ok(None),
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e),
    }
    let now = now_ms();
    store
        .create_tenant(&Tenant {
            id: platform.clone(),
            name: "OmniSQL platform".into(),
            // No data plane serves the platform tenant: its keys are for the admin API only.
            region: String::new(),
            key_id: "none".into(),
            weight: 1.0,
            statement_timeout_seconds: None,
            max_concurrent_queries: None,
            created_at: now,
            oidc: None,
            opa: None,
        })
        .await?;
    store
        .create_principal(&Principal {
            tenant_id: platform.clone(),
            id: "operator".into(),
            kind: PrincipalKind::User,
            role: Role::PlatformOperator,
            created_at: now,
            regions: Vec::new(),
            groups: Vec::new(),
            attributes: Default::default(),
        })
        .await?;
    let secret = provided.map_or_else(|| keys::generate("omk"), str::to_string);
    store
        .create_api_key(&ApiKey {
            tenant_id: platform,
            id: uuid::Uuid::now_v7().to_string(),
            principal_id: "operator".into(),
            prefix: keys::display_prefix(&secret),
            sha256: keys::sha256_hex(&secret),
            created_at: now,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        })
        .await?;
    Ok(provided.is_none().then_some(secret))
}
