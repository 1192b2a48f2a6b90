//! The governed HTTP client every connector uses: bounded concurrency per connection, retries of
//! transient failures (5xx, 429, secondary limits, garbled bodies) with exponential backoff that honours
//! `Retry-After` and rate-limit reset headers, one re-authentication on an expired session, and the
//! query's deadline. Each connector supplies a [`Dialect`] that reads its API's answers.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::cache::{CacheKey, ResponseCache};
use crate::error::{ConnectorError, Result};
use crate::factory::ConnectorContext;
use crate::flights::{self, FlightKey, Landed, Role};
use crate::governor::{BucketKey, BucketSpec, Denied, Governor, Observed, Requester};

/// How a connection talks HTTP.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Longest single wait for a rate limit to reset before the query fails with a quota error.
    pub max_rate_limit_wait: Duration,
    pub request_timeout: Duration,
    /// Requests in flight at once per connection; `None` takes the API's own default
    /// ([`Dialect::default_concurrency`]).
    pub max_concurrency: Option<usize>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            max_attempts: 5,
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_rate_limit_wait: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            max_concurrency: None,
        }
    }
}

/// Per-query state, carried in DataFusion's session config: the deadline and what the query cost.
#[derive(Debug, Default)]
pub struct QueryContext {
    pub deadline: Option<Instant>,
    /// How old a cached answer the query accepts; `None`: each connection's default TTL; zero: fresh
    /// (revalidated) data only.
    pub max_staleness: Option<Duration>,
    /// Most upstream requests the query may make; one more fails it.
    pub request_budget: Option<u64>,
    /// Who runs the query, for fair scheduling within a tenant.
    pub principal: String,
    /// Order of arrival: when tokens are scarce, older queries of a tenant are served first, so they
    /// finish instead of every query getting a little.
    seq: u64,
    api_requests: AtomicU64,
    /// The same requests by app (e.g. `GitHub`), for usage reports.
    requests_by_app: Mutex<BTreeMap<&'static str, u64>>,
    cache_hits: AtomicU64,
    /// How long the query waited for one of its tenant's query slots.
    queued_ms: AtomicU64,
    log: Mutex<Vec<String>>,
    /// Per connection, the age of the oldest answer the query used.
    freshness: Mutex<BTreeMap<String, Freshness>>,
    /// The query's trace span: scans and upstream requests are its children.
    span: std::sync::OnceLock<tracing::Span>,
}

/// How current one source's data in a result is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Freshness {
    pub oldest_age_seconds: f64,
    /// When the oldest answer was fetched from the API (Unix seconds).
    pub as_of_unix: f64,
}

/// Counts one response-cache lookup of `tenant` (`hit`, `miss`, `coalesced`, `revalidated`).
fn cache_lookup(tenant: &str, result: &str) {
    let labels = omnisql_telemetry::labels([("tenant", tenant), ("result", result)]);
    omnisql_telemetry::metrics().cache_lookups.get_or_create(&labels).inc();
}

/// At most this many requests are remembered per query (all are counted).
const LOG_LIMIT: usize = 1000;
/// How long a background cache refresh may take before it gives up.
const REFRESH_DEADLINE: Duration = Duration::from_secs(30);

impl QueryContext {
    /// Traces the query's scans and requests under `span` (once; later calls are ignored).
    pub fn trace_under(&self, span: tracing::Span) {
        let _ = self.span.set(span);
    }

    /// The query's span, or none when it is not traced.
    pub fn span(&self) -> tracing::Span {
        self.span.get().cloned().unwrap_or_else(tracing::Span::none)
    }

    pub fn with_deadline(deadline: Option<Instant>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        QueryContext { deadline, seq: NEXT.fetch_add(1, Ordering::Relaxed), ..Default::default() }
    }
    /// Milliseconds the query waited for a query slot before it ran.
    pub fn queued_ms(&self) -> u64 {
        self.queued_ms.load(Ordering::Relaxed)
    }
    pub fn set_queued(&self, waited: Duration) {
        self.queued_ms.store(waited.as_millis() as u64, Ordering::Relaxed);
    }
    /// Answers served from the cache without any upstream call.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }
    /// Per connection, how old the oldest data the query used is.
    pub fn freshness(&self) -> BTreeMap<String, Freshness> {
        self.freshness.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Notes that the query used data of `connection` fetched at `fetched` (a kept result's sources).
    pub fn observe_fetched(&self, connection: &str, fetched: SystemTime) {
        self.observe_age(connection, fetched)
    }
    fn observe_age(&self, connection: &str, fetched: SystemTime) {
        let age = SystemTime::now().duration_since(fetched).unwrap_or_default().as_secs_f64();
        let as_of = fetched.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let mut map = self.freshness.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(connection.to_string()).or_insert(Freshness { oldest_age_seconds: age, as_of_unix: as_of });
        if age > entry.oldest_age_seconds {
            *entry = Freshness { oldest_age_seconds: age, as_of_unix: as_of };
        }
    }
    /// Upstream requests sent (every attempt counts).
    pub fn api_requests(&self) -> u64 {
        self.api_requests.load(Ordering::Relaxed)
    }
    /// Upstream requests sent, by app.
    pub fn api_requests_by_app(&self) -> BTreeMap<String, u64> {
        self.requests_by_app.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(a, n)| (a.to_string(), *n)).collect()
    }
    /// The first requests sent, as `GET url` lines.
    pub fn request_log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn record(&self, app: &'static str, line: String) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
        *self.requests_by_app.lock().unwrap_or_else(|e| e.into_inner()).entry(app).or_default() += 1;
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() < LOG_LIMIT {
            log.push(line);
        }
    }
    fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// What a dialect makes of one response.
#[derive(Debug)]
pub enum Verdict {
    /// Use the body.
    Ok,
    /// Transient: try again, after `after` if the API said how long.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Out of quota until `reset_in`: wait if that fits, else fail with a quota error.
    RateLimited {
        reset_in: Duration,
        message: String,
    },
    /// The session expired: authenticate again and retry once.
    Reauthenticate,
    Fail(ConnectorError),
}

/// How one API answers: which statuses are transient, what a rate limit looks like, where errors live.
pub trait Dialect: Send + Sync + Debug {
    fn app(&self) -> &'static str;
    /// The rate-limit bucket a request to `url` draws from, as this API is known to limit it.
    fn bucket(&self, _url: &str) -> Option<BucketSpec> {
        None
    }
    /// Further limits the request counts against that no header reports (e.g. per-minute secondary
    /// limits); their models are trusted as they are.
    fn secondary_buckets(&self, _url: &str) -> Vec<BucketSpec> {
        Vec::new()
    }
    /// What a response says about its bucket (remaining requests, reset), if anything.
    fn observe(&self, _headers: &HeaderMap) -> Option<Observed> {
        None
    }
    /// Whether an answer may be served again from the cache (not, e.g., a page of a one-shot cursor).
    fn cacheable(&self, _url: &str, _response: &ApiResponse) -> bool {
        true
    }
    /// Requests a connection keeps in flight unless configured otherwise: what the API tolerates from
    /// one credential, with headroom for its other clients.
    fn default_concurrency(&self) -> usize {
        16
    }
    fn classify(&self, connection: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict;
    /// Fields of each item of a list answer from `url` that no table reads: left out while parsing.
    fn unread_fields(&self, _url: &str) -> &'static [&'static str] {
        &[]
    }
}

/// Supplies the `Authorization` header, refreshing sessions where the API has them.
#[async_trait]
pub trait Auth: Send + Sync + Debug {
    async fn authorization(&self, http: &reqwest::Client) -> Result<String>;
    /// Forget a session the API rejected.
    async fn invalidate(&self) {}
}

/// A fixed bearer token.
pub struct BearerToken(pub String);

impl Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

#[async_trait]
impl Auth for BearerToken {
    async fn authorization(&self, _: &reqwest::Client) -> Result<String> {
        Ok(format!("Bearer {}", self.0))
    }
}

#[derive(Debug, Clone)]
pub struct ApiResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl ApiResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Seconds in `Retry-After`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get("retry-after")?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Time until an epoch-seconds reset header.
pub fn until_epoch(headers: &HeaderMap, name: &str) -> Option<Duration> {
    let reset = headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now)))
}

/// A connection's client.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    connection: String,
    settings: HttpSettings,
    dialect: Arc<dyn Dialect>,
    auth: Arc<dyn Auth>,
    headers: HeaderMap,
    permits: Arc<Semaphore>,
    concurrency: usize,
    cache: Option<CacheScope>,
    governor: Option<GovernorScope>,
}

/// This client's place in the shared rate limiter.
#[derive(Debug, Clone)]
struct GovernorScope {
    governor: Arc<Governor>,
    tenant: String,
    weight: f64,
    credential: u64,
    connection_rps: Option<f64>,
    quota_share: Option<f64>,
}

/// Where this client's answers live in the shared cache, and for how long they count as fresh.
#[derive(Debug, Clone)]
struct CacheScope {
    cache: Arc<ResponseCache>,
    tenant: String,
    credential: u64,
    ttl: Duration,
}

/// What one governed request returned.
enum Fetched {
    /// The response, and its raw body for the cache.
    Fresh(ApiResponse, bytes::Bytes),
    NotModified,
}

impl ApiClient {
    pub fn new(ctx: &ConnectorContext, dialect: Arc<dyn Dialect>, auth: Arc<dyn Auth>, headers: HeaderMap) -> Result<Self> {
        let (connection, settings) = (ctx.connection.as_str(), ctx.http.clone());
        let concurrency = settings.max_concurrency.unwrap_or_else(|| dialect.default_concurrency()).max(1);
        let http = reqwest::Client::builder()
            .user_agent(concat!("omnisql/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(concurrency)
            .build()
            .map_err(|source| ConnectorError::Transport {
                app: dialect.app(),
                connection: connection.into(),
                url: String::new(),
                source,
            })?;
        let permits = Arc::new(Semaphore::new(concurrency));
        let cache = ctx.cache.clone().map(|cache| CacheScope {
            cache,
            tenant: ctx.tenant.clone(),
            credential: ctx.credential,
            ttl: ctx.cache_ttl,
        });
        let governor = ctx.governor.clone().map(|governor| GovernorScope {
            governor,
            tenant: ctx.tenant.clone(),
            weight: ctx.weight,
            credential: ctx.credential,
            connection_rps: ctx.requests_per_second,
            quota_share: ctx.quota_share,
        });
        Ok(ApiClient {
            http,
            connection: connection.into(),
            settings,
            dialect,
            auth,
            headers,
            permits,
            concurrency,
            cache,
            governor,
        })
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// Most requests a connection sends at once; scans size their fan-out with it.
    pub fn max_concurrency(&self) -> usize {
        self.concurrency
    }

    /// `GET url?params`: from the cache when an answer is as fresh as the query accepts, revalidated
    /// when the API supports it, else from the API (governed).
    pub async fn get(&self, q: &QueryContext, url: &str, params: &[(String, String)]) -> Result<ApiResponse> {
        self.read(q, url, params, None).await
    }

    /// `POST url` with a JSON body that only reads (a GraphQL query): cached and governed like a GET,
    /// the body part of the cache key.
    pub async fn post_read(&self, q: &QueryContext, url: &str, body: &Value) -> Result<ApiResponse> {
        let body = bytes::Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        self.read(q, url, &[], Some(body)).await
    }

    async fn read(
        &self,
        q: &QueryContext,
        url: &str,
        params: &[(String, String)],
        body: Option<bytes::Bytes>,
    ) -> Result<ApiResponse> {
        let Some(scope) = &self.cache else {
            return match self.send(q, url, params, body.as_ref(), None).await? {
                Fetched::Fresh(r, _) => Ok(r),
                Fetched::NotModified => Err(self.unexpected_304()),
            };
        };
        let mut sorted = params.to_vec();
        sorted.sort();
        let key = CacheKey {
            tenant: scope.tenant.clone(),
            connection: self.connection.clone(),
            credential: scope.credential,
            request: match &body {
                None => format!("GET {}", display_url(url, &sorted)),
                Some(b) => format!("POST {} {}", display_url(url, &sorted), String::from_utf8_lossy(b)),
            },
        };
        let allowed = q.max_staleness.unwrap_or(scope.ttl);
        let cached = scope.cache.get(&key);
        if let Some(c) = &cached {
            let age = c.fetched_at.elapsed();
            if age <= allowed && !allowed.is_zero() {
                cache_lookup(&scope.tenant, "hit");
                let parent = Some(tracing::Span::current()).filter(|s| !s.is_none()).unwrap_or_else(|| q.span());
                let endpoint = reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default();
                let _span = tracing::info_span!(parent: &parent, "upstream_request", app = self.dialect.app(), endpoint = %endpoint,
                    status = c.status.as_str(), cache_hit = true, waited_ms = 0.0);
                scope.cache.count(&scope.tenant, |s| {
                    s.hits += 1;
                    s.saved_calls += 1;
                });
                q.cache_hits.fetch_add(1, Ordering::Relaxed);
                q.observe_age(&self.connection, c.fetched_wall);
                // Past half its time to live, an entry read more than once is fetched again in the
                // background: the queries after this one find it fresh and do not wait.
                if c.hits >= 2 && age >= scope.ttl / 2 {
                    self.refresh_ahead(scope, key, url, params, body);
                }
                return self.revive(c.status, &c.headers, &c.body, url);
            }
        }
        // An identical request in flight answers this one too, unless the query wants data fresher
        // than the moment that request left.
        let flight = FlightKey { credential: scope.credential, request: key.request.clone() };
        let lead = match allowed.is_zero() {
            true => None,
            false => match scope.cache.flights().join(flight) {
                Role::Leader(lead) => Some(lead),
                Role::Follower(slot) => match flights::follow(slot).await {
                    Some(landed) => {
                        cache_lookup(&scope.tenant, "coalesced");
                        scope.cache.count(&scope.tenant, |s| {
                            s.coalesced += 1;
                            s.saved_calls += 1;
                        });
                        q.observe_age(&self.connection, landed.fetched_wall);
                        return self.revive(landed.status, &landed.headers, &landed.body, url);
                    }
                    // The leader gave up (an error, a cancelled query): ask on our own.
                    None => None,
                },
            },
        };
        let etag = cached.as_ref().and_then(|c| c.etag.clone());
        match self.send(q, url, params, body.as_ref(), etag.as_deref()).await? {
            Fetched::NotModified => {
                let Some(c) = cached else { return Err(self.unexpected_304()) };
                scope.cache.refresh(&key);
                cache_lookup(&scope.tenant, "revalidated");
                scope.cache.count(&scope.tenant, |s| {
                    s.revalidations += 1;
                    s.saved_calls += 1;
                });
                q.observe_age(&self.connection, SystemTime::now());
                if let Some(lead) = lead {
                    lead.land(Landed {
                        status: c.status,
                        headers: c.headers.clone(),
                        body: c.body.clone(),
                        fetched_wall: SystemTime::now(),
                    });
                }
                self.revive(c.status, &c.headers, &c.body, url)
            }
            Fetched::Fresh(response, raw) => {
                cache_lookup(&scope.tenant, "miss");
                scope.cache.count(&scope.tenant, |s| s.misses += 1);
                q.observe_age(&self.connection, SystemTime::now());
                if let Some(lead) = lead {
                    let (status, headers) = (response.status, response.headers.clone());
                    lead.land(Landed { status, headers, body: raw.clone(), fetched_wall: SystemTime::now() });
                }
                if self.dialect.cacheable(url, &response) {
                    scope.cache.put(key, response.status, response.headers.clone(), raw);
                }
                Ok(response)
            }
        }
    }

    /// Fetches `key` again in the background (at most one such request at a time), charged to the
    /// tenant's quota like any request; identical requests arriving meanwhile wait for it.
    fn refresh_ahead(
        &self,
        scope: &CacheScope,
        key: CacheKey,
        url: &str,
        params: &[(String, String)],
        body: Option<bytes::Bytes>,
    ) {
        let flight = FlightKey { credential: scope.credential, request: key.request.clone() };
        if scope.cache.flights().in_flight(&flight) {
            return;
        }
        let Role::Leader(lead) = scope.cache.flights().join(flight) else { return };
        let (client, scope, url, params) = (self.clone(), scope.clone(), url.to_string(), params.to_vec());
        tokio::spawn(async move {
            let q = QueryContext {
                principal: "(cache refresh)".into(),
                ..QueryContext::with_deadline(Some(Instant::now() + REFRESH_DEADLINE))
            };
            let etag = scope.cache.peek(&key).and_then(|c| c.etag);
            match client.send(&q, &url, &params, body.as_ref(), etag.as_deref()).await {
                Ok(Fetched::NotModified) => {
                    scope.cache.refresh(&key);
                    scope.cache.count(&scope.tenant, |s| s.refreshed_ahead += 1);
                    // Waiters get the entry the 304 confirmed (if it was evicted meanwhile, they ask).
                    if let Some(c) = scope.cache.peek(&key) {
                        lead.land(Landed { status: c.status, headers: c.headers, body: c.body, fetched_wall: c.fetched_wall });
                    }
                }
                Ok(Fetched::Fresh(response, raw)) => {
                    scope.cache.count(&scope.tenant, |s| s.refreshed_ahead += 1);
                    lead.land(Landed {
                        status: response.status,
                        headers: response.headers.clone(),
                        body: raw.clone(),
                        fetched_wall: SystemTime::now(),
                    });
                    if client.dialect.cacheable(&url, &response) {
                        scope.cache.put(key, response.status, response.headers, raw);
                    }
                }
                Err(e) => {
                    tracing::debug!(connection = %client.connection, error = %e, "cache refresh failed; the entry ages as before")
                }
            }
        });
    }

    /// A kept answer (cached, or shared in flight) as a response again: the raw body is what is kept,
    /// so the cache's memory bound is exact.
    fn revive(&self, status: StatusCode, headers: &HeaderMap, raw: &bytes::Bytes, url: &str) -> Result<ApiResponse> {
        let body = crate::prune::parse(raw, self.dialect.unread_fields(url)).map_err(|source| ConnectorError::Malformed {
            app: self.dialect.app(),
            connection: self.connection.clone(),
            url: url.to_string(),
            source,
        })?;
        Ok(ApiResponse { status, headers: headers.clone(), body })
    }

    fn unexpected_304(&self) -> ConnectorError {
        ConnectorError::Upstream {
            app: self.dialect.app(),
            connection: self.connection.clone(),
            status: 304,
            message: "answered 304 Not Modified to a request that was not conditional".into(),
        }
    }

    /// With Redis configured: waits for a slot in the fleet-wide window of `key`'s bucket.
    async fn take_shared(&self, governor: &Governor, key: &BucketKey, q: &QueryContext) -> Result<()> {
        let (Some(shared), Some((capacity, window))) = (governor.shared(), governor.shape(key)) else { return Ok(()) };
        loop {
            match shared.take(key, capacity, window).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => {
                    if q.remaining().is_some_and(|r| r <= wait) {
                        return Err(ConnectorError::QuotaExhausted {
                            app: self.dialect.app(),
                            connection: self.connection.clone(),
                            message: format!(
                                "the fleet-wide {} rate limit has no request left before the query's deadline",
                                key.bucket
                            ),
                            reset_in: wait,
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    tracing::warn!(connection = %self.connection, error = %e, "Redis unavailable; rate limits are per replica until it returns");
                    return Ok(());
                }
            }
        }
    }

    /// The rate-limit buckets a request to `url` draws from: the API's, then the connection's own limit.
    fn buckets(&self, url: &str) -> Vec<(BucketKey, BucketSpec)> {
        let Some(g) = &self.governor else { return Vec::new() };
        let mut out = Vec::new();
        if let Some(spec) = self.dialect.bucket(url) {
            if let Some(share) = g.quota_share {
                // The tenant's own slice of the credential's quota, kept apart from other tenants.
                let slice = BucketSpec {
                    name: format!("{} ({:.1}% share of tenant {})", spec.name, share * 100.0, g.tenant),
                    capacity: (spec.capacity * share).max(1.0),
                    window: spec.window,
                    trusted: true,
                };
                out.push((BucketKey { credential: g.credential, bucket: slice.name.clone() }, slice));
            }
            out.insert(0, (BucketKey { credential: g.credential, bucket: spec.name.clone() }, spec));
        }
        for spec in self.dialect.secondary_buckets(url) {
            out.push((BucketKey { credential: g.credential, bucket: spec.name.clone() }, spec));
        }
        if let Some(rps) = g.connection_rps {
            let spec = BucketSpec {
                name: format!("connection {} limit", self.connection),
                capacity: rps,
                window: Duration::from_secs(1),
                trusted: true,
            };
            out.push((BucketKey { credential: g.credential, bucket: spec.name.clone() }, spec));
        }
        out
    }

    /// One governed request: retries, backoff, rate limits, re-authentication, deadline.
    async fn send(
        &self,
        q: &QueryContext,
        url: &str,
        params: &[(String, String)],
        body: Option<&bytes::Bytes>,
        if_none_match: Option<&str>,
    ) -> Result<Fetched> {
        let app = self.dialect.app();
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        let shown = display_url(url, params);
        let metrics = omnisql_telemetry::metrics();
        let endpoint = reqwest::Url::parse(url).map(|u| u.path().to_string()).unwrap_or_default();
        loop {
            attempt += 1;
            let asked = Instant::now();
            // A child of the scan that asks (or of the planning step); a background refresh's, of its query.
            let parent = Some(tracing::Span::current()).filter(|s| !s.is_none()).unwrap_or_else(|| q.span());
            let span = tracing::info_span!(parent: &parent, "upstream_request", app, endpoint = %endpoint, attempt,
                bucket = tracing::field::Empty, status = tracing::field::Empty, cache_hit = false, waited_ms = tracing::field::Empty);
            let remaining = q.remaining();
            if remaining.is_some_and(|r| r.is_zero()) {
                return Err(ConnectorError::DeadlineExceeded { app, connection: self.connection.clone() });
            }
            let timeout = remaining.map_or(self.settings.request_timeout, |r| r.min(self.settings.request_timeout));
            let authorization = self.auth.authorization(&self.http).await?;
            if let Some(budget) = q.request_budget {
                if q.api_requests() >= budget {
                    return Err(ConnectorError::BudgetExceeded { budget, needed: None, table: None });
                }
            }
            // Rate limits first (they may wait), then the connection's concurrency bound.
            let buckets = self.buckets(url);
            if let Some((_, spec)) = buckets.first() {
                span.record("bucket", spec.name.as_str());
            }
            let mut tokens = Vec::with_capacity(buckets.len());
            if let Some(g) = &self.governor {
                for (key, spec) in &buckets {
                    let who = Requester { tenant: &g.tenant, principal: &q.principal, weight: g.weight, query: q.seq };
                    match g.governor.acquire(key, spec, &who, q.deadline).await {
                        Ok(permit) => {
                            tokens.push(permit);
                            self.take_shared(&g.governor, key, q).await?;
                        }
                        Err(Denied::WouldExceedDeadline { bucket, wait }) => {
                            return Err(ConnectorError::QuotaExhausted {
                                app,
                                connection: self.connection.clone(),
                                message: format!("the {bucket} rate limit has no request left before the query's deadline"),
                                reset_in: wait,
                            });
                        }
                    }
                }
            }
            let outcome = {
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| ConnectorError::DeadlineExceeded { app, connection: self.connection.clone() })?;
                q.record(app, format!("{} {shown}", if body.is_some() { "POST" } else { "GET" }));
                omnisql_telemetry::observe(
                    &metrics.upstream_wait_seconds,
                    omnisql_telemetry::labels([("app", app)]),
                    asked.elapsed(),
                );
                span.record("waited_ms", asked.elapsed().as_secs_f64() * 1000.0);
                let sent = Instant::now();
                let send = async {
                    let mut req = match body {
                        None => self.http.get(url),
                        Some(b) => self.http.post(url).header("content-type", "application/json").body(b.clone()),
                    };
                    req = req.query(params).headers(self.headers.clone()).header("authorization", authorization);
                    // The query's trace goes on with the request: a traced API or egress proxy continues it.
                    if let Some(traceparent) = omnisql_telemetry::trace::traceparent(&span) {
                        req = req.header("traceparent", traceparent);
                    }
                    if let Some(etag) = if_none_match {
                        req = req.header("if-none-match", etag);
                    }
                    let resp = req.send().await?;
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await?;
                    Ok::<_, reqwest::Error>((status, headers, body))
                };
                let outcome = tokio::time::timeout(timeout, send).await;
                let status = match &outcome {
                    Ok(Ok((status, _, _))) => status.as_str().to_string(),
                    Ok(Err(_)) => "error".to_string(),
                    Err(_) => "timeout".to_string(),
                };
                metrics.upstream_requests.get_or_create(&omnisql_telemetry::labels([("app", app), ("status", &status)])).inc();
                span.record("status", status.as_str());
                omnisql_telemetry::observe(&metrics.upstream_seconds, omnisql_telemetry::labels([("app", app)]), sent.elapsed());
                outcome
            };
            let (status, headers, body) = match outcome {
                Err(_) if q.remaining().is_some_and(|r| r.is_zero()) => {
                    return Err(ConnectorError::DeadlineExceeded { app, connection: self.connection.clone() });
                }
                Err(_) => {
                    self.backoff(q, attempt, None, "request timed out".into()).await?;
                    continue;
                }
                Ok(Err(source)) => {
                    if attempt >= self.settings.max_attempts {
                        return Err(ConnectorError::Transport { app, connection: self.connection.clone(), url: shown, source });
                    }
                    self.backoff(q, attempt, None, source.to_string()).await?;
                    continue;
                }
                Ok(Ok(parts)) => parts,
            };
            if let Some(g) = &self.governor {
                if let Some(observed) = self.dialect.observe(&headers) {
                    if let Some((key, _)) = buckets.first() {
                        g.governor.observe(key, observed);
                    }
                }
                let pause = match self.dialect.observe(&headers) {
                    Some(o) if o.remaining < 1.0 => Some(o.reset_in),
                    _ if status == StatusCode::TOO_MANY_REQUESTS => retry_after(&headers),
                    _ => None,
                };
                if let (Some(after), Some((key, _))) = (pause, buckets.first()) {
                    g.governor.pause(key, after);
                    if let Some(shared) = g.governor.shared() {
                        if let Err(e) = shared.pause(key, after).await {
                            tracing::warn!(error = %e, "cannot share a rate-limit pause through Redis");
                        }
                    }
                }
            }
            drop(tokens);
            if status == StatusCode::NOT_MODIFIED && if_none_match.is_some() {
                return Ok(Fetched::NotModified);
            }
            match self.dialect.classify(&self.connection, status, &headers, &body) {
                Verdict::Ok => match crate::prune::parse(&body, self.dialect.unread_fields(url)) {
                    Ok(parsed) => {
                        return Ok(Fetched::Fresh(ApiResponse { status, headers, body: parsed }, body));
                    }
                    Err(source) => {
                        // A garbled or cut-off body is a transient fault: ask again.
                        if attempt >= self.settings.max_attempts {
                            return Err(ConnectorError::Malformed {
                                app,
                                connection: self.connection.clone(),
                                url: shown,
                                source,
                            });
                        }
                        self.backoff(q, attempt, None, "malformed body".into()).await?;
                    }
                },
                Verdict::Retry { after, reason } => self.backoff(q, attempt, after, reason).await?,
                Verdict::RateLimited { reset_in, message } => {
                    let fits_deadline = q.remaining().is_none_or(|r| reset_in < r);
                    if reset_in > self.settings.max_rate_limit_wait || !fits_deadline || attempt >= self.settings.max_attempts {
                        return Err(ConnectorError::QuotaExhausted {
                            app,
                            connection: self.connection.clone(),
                            message,
                            reset_in,
                        });
                    }
                    tracing::info!(connection = %self.connection, wait_ms = reset_in.as_millis() as u64, "rate limited, waiting for reset");
                    tokio::time::sleep(reset_in + Duration::from_millis(50)).await;
                }
                Verdict::Reauthenticate if !reauthenticated => {
                    reauthenticated = true;
                    attempt -= 1;
                    self.auth.invalidate().await;
                }
                Verdict::Reauthenticate => {
                    return Err(ConnectorError::Unauthorized {
                        app,
                        connection: self.connection.clone(),
                        status: status.as_u16(),
                        message: "session rejected again after re-authentication".into(),
                    });
                }
                Verdict::Fail(e) => return Err(e),
            }
        }
    }

    async fn backoff(&self, q: &QueryContext, attempt: u32, after: Option<Duration>, reason: String) -> Result<()> {
        let app = self.dialect.app();
        if attempt >= self.settings.max_attempts {
            return Err(ConnectorError::RetriesExhausted {
                app,
                connection: self.connection.clone(),
                attempts: attempt,
                last: reason,
            });
        }
        let wait = after.unwrap_or_else(|| backoff_wait(self.settings.base_backoff, self.settings.max_backoff, attempt));
        if q.remaining().is_some_and(|r| r <= wait) {
            return Err(ConnectorError::DeadlineExceeded { app, connection: self.connection.clone() });
        }
        tracing::debug!(connection = %self.connection, attempt, wait_ms = wait.as_millis() as u64, %reason, "retrying");
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// The wait before retry `attempt` (1, 2, …): exponential from `base`, capped at `max`, plus up to 25%
/// random jitter so that clients that failed together do not retry together.
fn backoff_wait(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(max);
    exp + exp.mul_f64(fastrand::f64() * 0.25)
}

fn display_url(url: &str, params: &[(String, String)]) -> String {
    if params.is_empty() {
        return url.to_string();
    }
    let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' })
}

/// The common reading of statuses, for dialects to fall back on.
pub fn classify_common(app: &'static str, connection: &str, status: StatusCode, headers: &HeaderMap, message: String) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Ok,
        401 => Verdict::Fail(ConnectorError::Unauthorized { app, connection: connection.into(), status: 401, message }),
        429 => Verdict::Retry { after: retry_after(headers), reason: format!("429: {message}") },
        408 | 500 | 502 | 503 | 504 => Verdict::Retry { after: retry_after(headers), reason: format!("{status}: {message}") },
        403 => Verdict::Fail(ConnectorError::Forbidden { app, connection: connection.into(), status: 403, message }),
        s => Verdict::Fail(ConnectorError::Upstream { app, connection: connection.into(), status: s, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_its_jitter_is_random() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let waits: Vec<Duration> = (0..200).map(|_| backoff_wait(base, max, 3)).collect();
        assert!(waits.iter().all(|w| *w >= Duration::from_millis(400) && *w <= Duration::from_millis(500)), "{waits:?}");
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(distinct.len() > 100, "jitter is random, not constant: {} distinct of 200", distinct.len());
        assert!(backoff_wait(base, max, 30) <= Duration::from_millis(2500), "capped (plus jitter)");
        assert!(backoff_wait(base, max, 1) < Duration::from_millis(126));
    }
}
