//! Telemetry of both planes: logs and OpenTelemetry traces ([`trace`]), and Prometheus metrics: one registry per process, filled where things happen (a query
//! ends, an upstream request returns, a rate limiter lets a request go) and rendered at `/metrics` in the
//! text exposition format. A global, like a logger: the connector's HTTP client, the engine and the
//! servers all count into it without threading a handle through every call.
//!
//! Labels stay bounded: tenants, apps, outcomes, HTTP statuses, rate-limit buckets, route templates and
//! data planes — never SQL text, principals or URLs.

pub mod trace;

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

fn seconds() -> Histogram {
    // 0.5 ms to ~65 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn histograms() -> Histograms {
    Family::new_with_constructor(seconds)
}

/// Every metric of the process (a data plane fills some, a control plane others).
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Query attempts by tenant and outcome (`ok`, `error`, `denied`, `cancelled`, …).
    pub queries: Family<Labels, Counter>,
    pub query_seconds: Histograms,
    /// Statements of each tenant between their first RPC and their outcome.
    pub active_queries: Family<Labels, Gauge>,
    /// Open Postgres-protocol sessions.
    pub postgres_sessions: Gauge,
    /// Upstream API requests by app and HTTP status (`error` when none came back).
    pub upstream_requests: Family<Labels, Counter>,
    pub upstream_seconds: Histograms,
    /// Time a request waited before it was sent: its rate-limit bucket, the tenant's fair share, the
    /// connection's concurrency bound.
    pub upstream_wait_seconds: Histograms,
    /// Response-cache lookups by tenant and result (`hit`, `miss`, `coalesced`, `revalidated`).
    pub cache_lookups: Family<Labels, Counter>,
    /// Bytes held by the response cache and by kept results.
    pub cache_bytes: Family<Labels, Gauge>,
    /// Audit events written locally and not yet stored by the control plane.
    pub audit_backlog: Gauge,
    /// Configuration revisions: `applied` by this data plane, `latest` at the control plane.
    pub config_revision: Family<Labels, Gauge>,
    /// Control plane: admin API requests by method, route template and status.
    pub http_requests: Family<Labels, Counter>,
    pub http_seconds: Histograms,
    /// Control plane: audit events stored, by tenant (acknowledged to a data plane; one sent again after a
    /// lost acknowledgement counts again).
    pub audit_events_stored: Family<Labels, Counter>,
    /// Control plane, per data plane: seconds since its last heartbeat, revisions behind, audit backlog.
    pub data_plane_heartbeat_age_seconds: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub data_plane_revision_lag: Family<Labels, Gauge>,
    pub data_plane_audit_backlog: Family<Labels, Gauge>,
}

impl Metrics {
    fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("omnisql")),
            queries: Family::default(),
            query_seconds: histograms(),
            active_queries: Family::default(),
            postgres_sessions: Gauge::default(),
            upstream_requests: Family::default(),
            upstream_seconds: histograms(),
            upstream_wait_seconds: histograms(),
            cache_lookups: Family::default(),
            cache_bytes: Family::default(),
            audit_backlog: Gauge::default(),
            config_revision: Family::default(),
            http_requests: Family::default(),
            http_seconds: histograms(),
            audit_events_stored: Family::default(),
            data_plane_heartbeat_age_seconds: Family::default(),
            data_plane_revision_lag: Family::default(),
            data_plane_audit_backlog: Family::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register("queries", "Query attempts by tenant and outcome", m.queries.clone());
            r.register(
                "query_duration_seconds",
                "Query attempts' duration, from the first RPC to the outcome",
                m.query_seconds.clone(),
            );
            r.register("active_queries", "Statements between their first RPC and their outcome", m.active_queries.clone());
            r.register("postgres_sessions", "Open Postgres-protocol sessions", m.postgres_sessions.clone());
            r.register("upstream_requests", "Upstream API requests by app and HTTP status", m.upstream_requests.clone());
            r.register(
                "upstream_request_duration_seconds",
                "Upstream API requests' duration, sent to answered",
                m.upstream_seconds.clone(),
            );
            r.register(
                "upstream_wait_seconds",
                "Time upstream requests waited before they were sent (rate limit, fair share, concurrency)",
                m.upstream_wait_seconds.clone(),
            );
            r.register("cache_lookups", "Response-cache lookups by tenant and result", m.cache_lookups.clone());
            r.register("cache_bytes", "Bytes held by the response cache and kept results", m.cache_bytes.clone());
            r.register("audit_backlog", "Audit events not yet stored by the control plane", m.audit_backlog.clone());
            r.register(
                "config_revision",
                "Configuration revision applied here and latest at the control plane",
                m.config_revision.clone(),
            );
            r.register("http_requests", "Admin API requests by method, route and status", m.http_requests.clone());
            r.register("http_request_duration_seconds", "Admin API requests' duration", m.http_seconds.clone());
            r.register("audit_events_stored", "Audit events stored, by tenant", m.audit_events_stored.clone());
            r.register(
                "data_plane_heartbeat_age_seconds",
                "Seconds since each data plane's last heartbeat",
                m.data_plane_heartbeat_age_seconds.clone(),
            );
            r.register(
                "data_plane_revision_lag",
                "Configuration revisions each data plane is behind",
                m.data_plane_revision_lag.clone(),
            );
            r.register(
                "data_plane_audit_backlog",
                "Audit events each data plane last reported holding",
                m.data_plane_audit_backlog.clone(),
            );
        }
        m
    }

    /// The registry in the text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// `[("tenant", "acme"), …]` as a label set.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// Records `elapsed` in `histogram` under `labels`.
pub fn observe(histogram: &Histograms, labels: Labels, elapsed: Duration) {
    histogram.get_or_create(&labels).observe(elapsed.as_secs_f64());
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = metrics();
        m.queries.get_or_create(&labels([("tenant", "acme"), ("outcome", "ok")])).inc();
        observe(&m.query_seconds, labels([("tenant", "acme"), ("outcome", "ok")]), Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains(r#"omnisql_queries_total{tenant="acme",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"omnisql_query_duration_seconds_bucket{le="0.004",tenant="acme",outcome="ok"} 1"#), "{text}");
        assert!(text.contains("omnisql_audit_backlog 0"), "{text}");
    }
}
