//! The OmniSQL data plane: Flight SQL in front of the engine.
//!
//! A Flight SQL client (ADBC, JDBC, pyarrow, BI tools) sends a bearer token and SQL; [`service`]
//! authenticates it to a tenant, plans and runs the query with [`omnisql_engine::Engine`], and streams
//! Arrow batches back as they are produced (memory stays bounded by the batches in flight). Errors become
//! gRPC statuses in one place, [`status`]. Every attempt is audited ([`attempt`]); with a control plane,
//! [`control`] keeps the engine's configuration current and ships the audit outbox.

pub mod attempt;
pub mod client;
pub mod control;
pub mod metadata;
pub mod pg;
pub mod service;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use omnisql_engine::Engine;
use tokio::net::TcpListener;

pub use omnisql_tls::ServerTls;
pub use service::OmniFlightSql;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen for Flight SQL on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the Flight SQL server stopped")]
    Serve(#[source] tonic::transport::Error),
    #[error("cannot build the Flight SQL service")]
    Init(#[source] arrow_flight::error::FlightError),
    #[error("cannot serve Flight SQL over TLS")]
    Tls(#[from] omnisql_tls::TlsError),
}

/// Tenants whose connections are made ready at once when the data plane starts.
const WARM_TENANTS_AT_ONCE: usize = 8;

/// Readies every tenant's connections and tables ([`Engine::warm_tables`]), a few tenants at a time;
/// connections that fail are logged (their queries fail until they recover).
pub(crate) async fn warm_up(engine: Arc<Engine>) {
    let tenants = futures::stream::iter(engine.tenants()).map(|tenant| {
        let engine = engine.clone();
        async move {
            for (connection, error) in engine.warm_tables(&tenant).await {
                tracing::warn!(%tenant, %connection, %error, "connection unavailable; its queries will fail until it recovers");
            }
        }
    });
    tenants.buffer_unordered(WARM_TENANTS_AT_ONCE).collect::<()>().await;
}

/// Binds the Flight SQL listener (port 0 picks a free port).
pub async fn bind(addr: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr: addr.into(), source })
}

/// Serves Flight SQL on `listener` (over TLS with `tls`) until `shutdown` resolves; every query attempt's
/// audit event goes to `audit` when given.
pub async fn serve(
    engine: Arc<Engine>,
    audit: Option<Arc<omnisql_engine::audit::Outbox>>,
    listener: TcpListener,
    tls: Option<&ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Connect every connection and discover its tables now (in the background, a few tenants at a time)
    // so the first query does not pay for logins and object discovery, and a misconfigured connection
    // shows in the log at start.
    let warm = engine.clone();
    tokio::spawn(async move {
        warm_up(warm).await;
        tracing::info!(target: "omnisql_data_plane::warmup", "connections ready");
    });
    let mut service = OmniFlightSql::new(engine).map_err(ServeError::Init)?;
    if let Some(outbox) = audit {
        service = service.with_audit(outbox);
    }
    let local: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(addr = ?local, tls = tls.is_some(), "Flight SQL listening");
    let server = tonic::transport::Server::builder()
        .add_service(service::Server::new(service).max_decoding_message_size(64 * 1024 * 1024));
    let served = match tls {
        Some(tls) => server.serve_with_incoming_shutdown(tls.incoming(listener, &[b"h2"])?, shutdown).await,
        None => server.serve_with_incoming_shutdown(omnisql_tls::plain_incoming(listener), shutdown).await,
    };
    served.map_err(ServeError::Serve)
}
