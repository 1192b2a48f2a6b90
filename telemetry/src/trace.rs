//! Logs and traces. Every process logs through `tracing` (text, or JSON lines with
//! `OMNISQL_LOG_FORMAT=json`), and every span is also an OpenTelemetry span: with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. `http://collector:4317`) they are exported over OTLP/gRPC in
//! batches; without it they only give log lines their trace id. W3C trace context (`traceparent`) is taken
//! from incoming Flight SQL and HTTP requests, so a client's trace continues through OmniSQL.

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes spans not yet exported when dropped (at the end of `main`).
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs logging and tracing for `service` (e.g. `omnisql-data-plane`); `OMNISQL_LOG` filters (else
/// `default_filter`).
pub fn init(service: &'static str, default_filter: &str) -> Telemetry {
    let exporting = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_string()))
        .build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    let mut export_error = None;
    if exporting {
        match exporter_on_its_own_thread() {
            Ok(exporter) => provider = provider.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e),
        }
    }
    let provider = provider.build();
    let tracer = provider.tracer("omnisql");
    let filter = || EnvFilter::try_from_env("OMNISQL_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("OMNISQL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter()).boxed()
    };
    // Spans (not log events) at `info` and above go to OpenTelemetry whatever the log filter says, so a
    // quiet log keeps full traces. Without an exporter they still give log lines a trace id.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span()
                && *meta.level() <= tracing::Level::INFO
                && !["h2", "hyper", "tonic", "tower"].iter().any(|t| meta.target().starts_with(t))
        }));
    let _ = tracing_subscriber::registry().with(logs).with(spans).try_init();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(e) = export_error {
        tracing::warn!(error = %e, "cannot export traces over OTLP; spans stay local");
    }
    Telemetry { provider }
}

/// The OTLP/gRPC exporter, its connection driven by a runtime thread of its own: exports neither wait
/// for the request threads (one per core, busy under load) nor take them.
fn exporter_on_its_own_thread() -> Result<opentelemetry_otlp::SpanExporter, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let _ = tx.send(opentelemetry_otlp::SpanExporter::builder().with_tonic().build().map_err(|e| e.to_string()));
                std::future::pending::<()>().await
            });
        })
        .map_err(|e| e.to_string())?;
    rx.recv().map_err(|_| "the export thread stopped".to_string())?
}

/// Makes `span` a child of the trace that `header` (a request's headers, by lower-case name) carries in
/// `traceparent`, if any.
pub fn continue_trace(span: &Span, header: impl Fn(&str) -> Option<String>) {
    let Some(traceparent) = header("traceparent") else { return };
    let tracestate = header("tracestate");
    let map: std::collections::HashMap<String, String> =
        [("traceparent".to_string(), traceparent)].into_iter().chain(tracestate.map(|s| ("tracestate".to_string(), s))).collect();
    let cx = TraceContextPropagator::new().extract(&map);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceparent` of `span`, to pass the trace on to another OmniSQL service.
pub fn traceparent(span: &Span) -> Option<String> {
    struct One(Option<String>);
    impl Injector for One {
        fn set(&mut self, key: &str, value: String) {
            if key == "traceparent" {
                self.0 = Some(value);
            }
        }
    }
    let mut out = One(None);
    TraceContextPropagator::new().inject_context(&span.context(), &mut out);
    out.0
}

/// The trace id of `span` (32 hex digits), for log lines and error messages.
pub fn trace_id(span: &Span) -> String {
    span.context().span().span_context().trace_id().to_string()
}
