//! Admin API requests traced and counted, and `/metrics` for platform operators (Prometheus sends the operator key as a bearer token): the admin
//! API's requests, audit events stored, and each data plane's heartbeat age, revision lag and audit
//! backlog, read from the store at scrape time.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::{ApiError, AppState, Caller};
use crate::model::now_ms;

/// Counts every matched admin API request by method, route template and status, in a span that continues
/// the caller's trace (`traceparent`).
pub async fn track(req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let span = tracing::info_span!("admin_api", method = %method, route = %route, status = tracing::field::Empty);
    let headers = req.headers();
    omnisql_telemetry::trace::continue_trace(&span, |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string));
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    let m = omnisql_telemetry::metrics();
    let status = response.status().as_u16().to_string();
    m.http_requests
        .get_or_create(&omnisql_telemetry::labels([("method", &method), ("route", &route), ("status", &status)]))
        .inc();
    omnisql_telemetry::observe(
        &m.http_seconds,
        omnisql_telemetry::labels([("method", &method), ("route", &route)]),
        started.elapsed(),
    );
    response
}

pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    if !caller.is_operator() {
        return Err(ApiError::Forbidden("metrics need the platform_operator role".into()));
    }
    let m = omnisql_telemetry::metrics();
    let latest = state.store.revision().await?;
    let planes = state.store.list_data_planes().await?;
    // Rebuilt from the store each time, so a removed data plane's series go away.
    m.data_plane_heartbeat_age_seconds.clear();
    m.data_plane_revision_lag.clear();
    m.data_plane_audit_backlog.clear();
    let now = now_ms();
    for d in planes {
        let labels = omnisql_telemetry::labels([("data_plane", &d.id), ("region", &d.region)]);
        if let Some(at) = d.last_heartbeat_at {
            m.data_plane_heartbeat_age_seconds.get_or_create(&labels).set((now - at).max(0) as f64 / 1000.0);
        }
        m.data_plane_revision_lag.get_or_create(&labels).set((latest - d.acked_revision).max(0));
        m.data_plane_audit_backlog.get_or_create(&labels).set(d.audit_pending);
    }
    Ok(([(header::CONTENT_TYPE, omnisql_telemetry::CONTENT_TYPE)], m.render()).into_response())
}
