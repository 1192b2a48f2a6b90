//! The data plane's health endpoints, for Kubernetes probes: `/live` answers while the process runs;
//! `/ready` once it serves with a configuration from its control plane (a data plane configured from a
//! file is ready at once).

use axum::http::StatusCode;
use axum::routing::get;

use crate::CliError;

/// Serves on `addr` in the background; returns the bound address.
pub async fn serve(addr: &str, revision: Option<tokio::sync::watch::Receiver<u64>>) -> Result<std::net::SocketAddr, CliError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| CliError::Write { path: format!("health address {addr}"), source })?;
    let bound = listener.local_addr().map_err(|source| CliError::Write { path: format!("health address {addr}"), source })?;
    let ready = move || {
        let revision = revision.clone();
        async move {
            match revision.map(|r| *r.borrow()) {
                Some(0) => (StatusCode::SERVICE_UNAVAILABLE, "waiting for the first configuration from the control plane\n"),
                _ => (StatusCode::OK, "ready\n"),
            }
        }
    };
    let app = axum::Router::new().route("/live", get(|| async { "live\n" })).route("/ready", get(ready));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoints stopped");
        }
    });
    Ok(bound)
}
