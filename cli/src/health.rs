//! The data plane's health endpoints, for Kubernetes probes and Prometheus: `/live` answers while the
//! process runs; `/ready` once it serves with a configuration from its control plane (a data plane
//! configured from a file is ready at once); `/metrics` in the Prometheus text format. The listener is
//! meant for the cluster's own network (the operator's NetworkPolicy admits it), not for tenants.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::routing::get;

use crate::CliError;

/// Serves on `addr` in the background; returns the bound address. `refresh` sets the gauges that are
/// read rather than counted (audit backlog, cache bytes) just before each scrape.
pub async fn serve(
    addr: &str,
    revision: Option<tokio::sync::watch::Receiver<u64>>,
    refresh: Arc<dyn Fn() + Send + Sync>,
) -> Result<std::net::SocketAddr, CliError> {
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
    let metrics = move || {
        let refresh = refresh.clone();
        async move {
            refresh();
            ([(header::CONTENT_TYPE, omnisql_telemetry::CONTENT_TYPE)], omnisql_telemetry::metrics().render())
        }
    };
    let app = axum::Router::new()
        .route("/live", get(|| async { "live\n" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoints stopped");
        }
    });
    Ok(bound)
}

/// What a data plane's scrape reads at that moment: the audit outbox's backlog and the caches' bytes.
pub fn data_plane_gauges(
    engine: Arc<omnisql_engine::Engine>,
    outbox: Arc<omnisql_engine::audit::Outbox>,
) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || {
        let m = omnisql_telemetry::metrics();
        m.audit_backlog.set(outbox.backlog() as i64);
        let (responses, results) = engine.cache_bytes();
        m.cache_bytes.get_or_create(&omnisql_telemetry::labels([("cache", "responses")])).set(responses as i64);
        m.cache_bytes.get_or_create(&omnisql_telemetry::labels([("cache", "results")])).set(results as i64);
    })
}
