//! One query attempt, from the first RPC to its outcome: it writes the attempt's single audit event
//! (durably, before the client hears the outcome), the query log line, the query metrics, and the entry
//! in `omnisql.api_requests`. An attempt dropped without an outcome was cancelled by its client.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use omnisql_connector::QueryContext;
use omnisql_engine::audit::{AuditEvent, NO_TENANT, Outbox};
use omnisql_engine::{Caller, Engine};
use tonic::Status;

/// Rows and bytes streamed so far.
#[derive(Debug, Default)]
pub struct Streamed {
    pub rows: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct Attempt {
    id: String,
    engine: Arc<Engine>,
    outbox: Option<Arc<Outbox>>,
    tenant: String,
    principal: String,
    sql: String,
    started: Instant,
    started_at: i64,
    policy_revision: String,
    pub tables: Vec<String>,
    pub context: Option<Arc<QueryContext>>,
    pub streamed: Arc<Streamed>,
    /// The statement's trace span: planning, scans, upstream requests and the audit write are children.
    pub span: tracing::Span,
    done: bool,
}

/// A statement's trace span, continuing the client's trace when `header` (its request's headers by name)
/// has a `traceparent`; its log lines carry the tenant, principal, query id and trace id.
pub fn query_span(caller: Option<&Caller>, header: impl Fn(&str) -> Option<String>) -> tracing::Span {
    use tracing::field::Empty;
    let (tenant, principal) = caller.map_or((NO_TENANT, ""), |c| (c.tenant.0.as_str(), c.principal.as_str()));
    let span = tracing::info_span!("query", tenant, principal, query_id = Empty, trace_id = Empty, outcome = Empty);
    omnisql_telemetry::trace::continue_trace(&span, header);
    span.record("trace_id", omnisql_telemetry::trace::trace_id(&span));
    span
}

/// The headers of a Flight SQL request, by name, for [`query_span`].
pub fn grpc_header(metadata: &tonic::metadata::MetadataMap) -> impl Fn(&str) -> Option<String> + '_ {
    |name| metadata.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

impl Attempt {
    /// Starts the attempt in `span` (from [`query_span`]), or in a span of its own.
    pub fn start(
        engine: &Arc<Engine>,
        outbox: &Option<Arc<Outbox>>,
        caller: Option<&Caller>,
        sql: &str,
        span: Option<tracing::Span>,
    ) -> Attempt {
        let started_at = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let (tenant, principal, policy_revision) = match caller {
            Some(c) => (c.tenant.0.clone(), c.principal.clone(), engine.policy_revision(&c.tenant)),
            None => (NO_TENANT.to_string(), String::new(), String::new()),
        };
        let id = uuid::Uuid::now_v7().to_string();
        let span = span.unwrap_or_else(|| query_span(caller, |_| None));
        span.record("query_id", id.as_str());
        omnisql_telemetry::metrics().active_queries.get_or_create(&omnisql_telemetry::labels([("tenant", &tenant)])).inc();
        if let Some(o) = outbox {
            o.started(&id, &tenant, &principal, sql, started_at);
        }
        Attempt {
            id,
            engine: engine.clone(),
            outbox: outbox.clone(),
            tenant,
            principal,
            sql: sql.to_string(),
            started: Instant::now(),
            started_at,
            policy_revision,
            tables: Vec::new(),
            context: None,
            streamed: Arc::default(),
            span,
            done: false,
        }
    }

    fn event(&mut self, outcome: &str, error: Option<String>) -> AuditEvent {
        self.done = true;
        self.span.record("outcome", outcome);
        AuditEvent {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            principal: self.principal.clone(),
            sql: std::mem::take(&mut self.sql),
            tables: std::mem::take(&mut self.tables),
            api_requests: self.context.as_ref().map(|c| c.api_requests()).unwrap_or(0),
            api_requests_by_app: self.context.as_ref().map(|c| c.api_requests_by_app()).unwrap_or_default(),
            cache_hits: self.context.as_ref().map(|c| c.cache_hits()).unwrap_or(0),
            rows: self.streamed.rows.load(Ordering::Relaxed),
            bytes: self.streamed.bytes.load(Ordering::Relaxed),
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            outcome: outcome.into(),
            error,
            started_at: self.started_at,
            policy_revision: self.policy_revision.clone(),
        }
    }

    fn log(&self, event: &AuditEvent) {
        let _in_query = self.span.enter();
        let m = omnisql_telemetry::metrics();
        m.active_queries.get_or_create(&omnisql_telemetry::labels([("tenant", &event.tenant)])).dec();
        let labels = omnisql_telemetry::labels([("tenant", &event.tenant), ("outcome", &event.outcome)]);
        m.queries.get_or_create(&labels).inc();
        omnisql_telemetry::observe(&m.query_seconds, labels, self.started.elapsed());
        tracing::info!(
            tenant = %event.tenant,
            principal = %event.principal,
            outcome = %event.outcome,
            rows = event.rows,
            api_requests = event.api_requests,
            elapsed_ms = event.duration_ms as u64,
            error = event.error.as_deref().unwrap_or(""),
            "query"
        );
        if event.tenant != NO_TENANT {
            self.engine.record_query(
                &omnisql_engine::TenantId(event.tenant.clone()),
                omnisql_engine::system::QueryLog {
                    started_unix: event.started_at as f64 / 1000.0,
                    principal: event.principal.clone(),
                    sql: event.sql.clone(),
                    outcome: match event.outcome.as_str() {
                        "ok" => "ok",
                        "cancelled" => "cancelled",
                        _ => "error",
                    },
                    error: event.error.clone(),
                    duration_ms: event.duration_ms,
                    rows: event.rows,
                    api_requests: event.api_requests,
                    cache_hits: self.context.as_ref().map(|c| c.cache_hits()).unwrap_or(0),
                    queued_ms: self.context.as_ref().map(|c| c.queued_ms()).unwrap_or(0),
                },
            );
        }
    }

    /// Records the outcome durably; an error means the event could not be written, and the client
    /// must not be told the query succeeded.
    pub async fn finish(mut self, outcome: &str, error: Option<String>) -> Result<(), Status> {
        let event = self.event(outcome, error);
        self.log(&event);
        let audit_write = tracing::info_span!(parent: &self.span, "audit_write");
        if let Some(o) = &self.outbox
            && let Err(e) = tracing::Instrument::instrument(o.finished(event), audit_write).await
        {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "cannot write the audit event");
            return Err(Status::unavailable(
                "the data plane cannot record this query in its audit log (disk full or unwritable); the result was withheld — retry later",
            ));
        }
        Ok(())
    }

    /// Records a failure and hands the failure back, for `return Err(attempt.fail(status).await)`. A
    /// policy's refusal is outcome `denied`, with the refused table among the tables.
    pub async fn fail(mut self, outcome: &str, status: Status) -> Status {
        let outcome = match crate::status::denied_table(&status) {
            Some(table) => {
                if !self.tables.contains(&table) {
                    self.tables.push(table);
                }
                "denied"
            }
            None => outcome,
        };
        match self.finish(outcome, Some(status.message().to_string())).await {
            Ok(()) => status,
            Err(audit) => audit,
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.done {
            let event = self.event("cancelled", Some("the client cancelled the query or went away".into()));
            self.log(&event);
            if let Some(o) = &self.outbox {
                o.finished_in_background(event);
            }
        }
    }
}
