//! What every sandbox request goes through before the app sees it: counting, latency and faults.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::world::Rng;

/// Delay added to every request: `fixed_ms` ± `jitter_pct` percent.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub fixed_ms: u64,
    pub jitter_pct: f64,
}

/// Fractions (0..1) of requests answered with a fault instead of the real response.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Answer with the app's 5xx.
    pub server_error_rate: f64,
    /// Answer with the app's rate-limit response (`Retry-After` = `retry_after_secs`).
    pub rate_limit_rate: f64,
    pub retry_after_secs: u64,
    /// Answer 200 with a body that is not JSON.
    pub malformed_rate: f64,
    /// Answer with the real body cut in half.
    pub truncated_rate: f64,
    /// Send the real body slowly: this many milliseconds between two halves.
    pub slow_body_ms: u64,
    /// Send half the real body, then break the connection.
    pub reset_rate: f64,
}

/// Settings of one app that can change while it runs (`POST /_sandbox/settings`).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    pub latency: Latency,
    pub faults: Faults,
}

/// Which app a harness fronts; decides the shape of injected faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum App {
    Github,
    Salesforce,
    Slack,
    Jira,
    Stripe,
    Hubspot,
}

#[derive(Debug)]
pub struct Harness {
    app: App,
    settings: RwLock<Settings>,
    total: AtomicU64,
    endpoints: Mutex<BTreeMap<String, u64>>,
    traces: Mutex<std::collections::BTreeSet<String>>,
    rng: Mutex<Rng>,
}

/// At most this many trace ids are remembered between resets.
const TRACES_KEPT: usize = 10_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    pub total: u64,
    pub endpoints: BTreeMap<String, u64>,
    /// Trace ids of the W3C `traceparent` headers requests carried (as a traced API would continue them).
    #[serde(default)]
    pub trace_ids: std::collections::BTreeSet<String>,
}

impl Harness {
    pub fn new(app: App, settings: Settings, seed: u64) -> Arc<Self> {
        Arc::new(Harness {
            app,
            settings: RwLock::new(settings),
            total: AtomicU64::new(0),
            endpoints: Mutex::new(BTreeMap::new()),
            traces: Mutex::default(),
            rng: Mutex::new(Rng::new(seed ^ app as u64)),
        })
    }

    pub fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> Stats {
        Stats {
            total: self.total.load(Ordering::SeqCst),
            endpoints: self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            trace_ids: self.traces.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.traces.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn roll(&self) -> f64 {
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn delay(&self, latency: Latency) -> Duration {
        if latency.fixed_ms == 0 {
            return Duration::ZERO;
        }
        let jitter = (self.roll() * 2.0 - 1.0) * latency.jitter_pct / 100.0;
        Duration::from_secs_f64((latency.fixed_ms as f64 * (1.0 + jitter)).max(0.0) / 1000.0)
    }

    fn server_error(&self) -> Response {
        match self.app {
            App::Github => (StatusCode::BAD_GATEWAY, Json(serde_json::json!({"message": "Server Error"}))).into_response(),
            App::Salesforce => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!([{"message": "Server temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}])),
            )
                .into_response(),
            App::Slack => {
                (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"ok": false, "error": "service_unavailable"})))
                    .into_response()
            }
            App::Jira => (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"errorMessages": ["Service unavailable. Try again later."], "errors": {}})),
            )
                .into_response(),
            App::Stripe => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(serde_json::json!({"error": {"type": "api_error", "message": "An unknown error occurred"}})),
            )
                .into_response(),
            App::Hubspot => (
                StatusCode::BAD_GATEWAY,
                Json(serde_json::json!({
                    "status": "error", "message": "Bad Gateway", "correlationId": "00000000-0000-4000-8000-000000000502",
                    "category": "UNKNOWN"
                })),
            )
                .into_response(),
        }
    }

    fn rate_limited(&self, retry_after: u64) -> Response {
        let mut resp = match self.app {
            App::Github => (
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({
                    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
                })),
            )
                .into_response(),
            // Salesforce has no per-minute limit with Retry-After; its overload answer is a 503.
            App::Salesforce => return self.server_error(),
            App::Slack => {
                (StatusCode::TOO_MANY_REQUESTS, Json(serde_json::json!({"ok": false, "error": "ratelimited"}))).into_response()
            }
            App::Jira => crate::jira::rate_limited(),
            App::Stripe => crate::stripe::rate_limited(),
            App::Hubspot => crate::hubspot::rate_limited(),
        };
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            resp.headers_mut().insert("retry-after", v);
        }
        resp
    }
}

/// The middleware: count, wait, maybe fail, then call the app.
pub async fn layer(State(h): State<Arc<Harness>>, req: Request, next: Next) -> Response {
    let endpoint = format!(
        "{} {}",
        req.method(),
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| req.uri().path().to_string())
    );
    if endpoint.contains("/_sandbox/") {
        return next.run(req).await;
    }
    h.total.fetch_add(1, Ordering::SeqCst);
    *h.endpoints.lock().unwrap_or_else(|e| e.into_inner()).entry(endpoint).or_default() += 1;
    // `00-<trace id>-<span id>-<flags>`
    if let Some(trace) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).and_then(|v| v.split('-').nth(1)) {
        let mut traces = h.traces.lock().unwrap_or_else(|e| e.into_inner());
        if traces.len() < TRACES_KEPT {
            traces.insert(trace.to_string());
        }
    }

    let s = h.settings();
    let delay = h.delay(s.latency);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let f = s.faults;
    if f.server_error_rate > 0.0 && h.roll() < f.server_error_rate {
        return h.server_error();
    }
    if f.rate_limit_rate > 0.0 && h.roll() < f.rate_limit_rate {
        return h.rate_limited(f.retry_after_secs);
    }
    if f.malformed_rate > 0.0 && h.roll() < f.malformed_rate {
        return (StatusCode::OK, [("content-type", "application/json")], "{\"ok\": tru<html>").into_response();
    }
    let truncate = f.truncated_rate > 0.0 && h.roll() < f.truncated_rate;
    let reset = f.reset_rate > 0.0 && h.roll() < f.reset_rate;
    let resp = next.run(req).await;
    if !truncate && !reset && f.slow_body_ms == 0 {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return h.server_error();
    };
    parts.headers.remove("content-length");
    if truncate {
        let cut = bytes.slice(..bytes.len() / 2);
        return Response::from_parts(parts, Body::from(cut));
    }
    if reset {
        // A body stream that fails makes the server abort the connection mid-response.
        let half = bytes.slice(..bytes.len() / 2);
        let broken = futures::stream::iter([Ok(half), Err(std::io::Error::other("connection reset by the sandbox"))]);
        return Response::from_parts(parts, Body::from_stream(broken));
    }
    let pause = Duration::from_millis(f.slow_body_ms);
    let half = bytes.len() / 2;
    let (a, b) = (bytes.slice(..half), bytes.slice(half..));
    let stream = futures::stream::unfold(0u8, move |step| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(a), 1)),
                1 => {
                    tokio::time::sleep(pause).await;
                    Some((Ok(b), 2))
                }
                _ => None,
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `/_sandbox/stats`, `/_sandbox/stats/reset` and `/_sandbox/settings` for one app.
pub fn control_routes(h: Arc<Harness>) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(|State(h): State<Arc<Harness>>| async move { Json(h.stats()) }))
        .route(
            "/_sandbox/stats/reset",
            post(|State(h): State<Arc<Harness>>| async move {
                h.reset();
                Json(h.stats())
            }),
        )
        .route(
            "/_sandbox/settings",
            get(|State(h): State<Arc<Harness>>| async move { Json(h.settings()) }).post(
                |State(h): State<Arc<Harness>>, Json(s): Json<Settings>| async move {
                    *h.settings.write().unwrap_or_else(|e| e.into_inner()) = s;
                    Json(s)
                },
            ),
        )
        .with_state(h)
}

/// Wraps an app router with the harness and its control routes.
pub fn wrap(app: Router, h: Arc<Harness>) -> Router {
    app.merge(control_routes(h.clone())).layer(axum::middleware::from_fn_with_state(h, layer))
}

/// A limit of `limit` requests per window of `window`, counted from the window's first request — how
/// the apps without a header-reported quota limit a credential.
#[derive(Debug)]
pub struct Window {
    limit: u64,
    length: Duration,
    state: Mutex<(std::time::Instant, u64)>,
}

impl Window {
    pub fn new(limit: u64, length: Duration) -> Self {
        Window { limit: limit.max(1), length, state: Mutex::new((std::time::Instant::now(), 0)) }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Takes one request: `Ok(remaining)`, or `Err(time until the window ends)` when none is left.
    pub fn take(&self) -> Result<u64, Duration> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0.elapsed() >= self.length {
            *state = (std::time::Instant::now(), 0);
        }
        if state.1 >= self.limit {
            return Err(self.length.saturating_sub(state.0.elapsed()));
        }
        state.1 += 1;
        Ok(self.limit - state.1)
    }
}

/// The bearer token of a request, if it sent one.
pub fn bearer(req: &Request) -> Option<&str> {
    req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}
