//! Rate limits and fair scheduling. Every request takes a token from its rate-limit bucket (per
//! credential and API bucket: GitHub's hourly core quota, Salesforce's daily allocation, one bucket per
//! Slack method tier) before it is sent. Buckets start from the connector's model of its API, learn the
//! truth from response headers (`x-ratelimit-*`, `Sforce-Limit-Info`, `Retry-After`), and send one probe
//! request at a time until they have. When tokens are scarce, waiting requests are served by weighted
//! fair queuing across tenants, so a heavy tenant cannot starve a light one.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// An API's rate-limit bucket, as the connector models it.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    /// E.g. `github:core`, `slack:conversations.history`.
    pub name: String,
    /// Requests allowed per window.
    pub capacity: f64,
    pub window: Duration,
    /// The model is exact (no response header will correct it), so no probing first.
    pub trusted: bool,
}

/// What a response said about its bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    pub limit: Option<f64>,
    pub remaining: f64,
    /// When the bucket refills (to `limit`).
    pub reset_in: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BucketKey {
    pub credential: u64,
    pub bucket: String,
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    window: Duration,
    tokens: f64,
    last: Instant,
    /// No tokens until then (the API said so).
    paused_until: Option<Instant>,
    /// Learned from headers at least once; until then one probe request at a time.
    learned: bool,
    probing: bool,
    /// Grants within the last window: never more than `capacity` per window, as APIs that count per
    /// fixed minute or hour do (a token bucket alone would allow a burst plus its refill).
    grants: VecDeque<Instant>,
    /// Work done per tenant, divided by its weight: the next token goes to the smallest.
    served: HashMap<String, f64>,
    /// (query, arrival) → tenant.
    waiting: Vec<(Ticket, Who)>,
    /// Work done per (tenant, principal): within a tenant, its principals share the same way.
    served_principal: HashMap<Who, f64>,
}

/// A waiting request: its query's order of arrival, then its own.
type Ticket = (u64, u64);
/// (tenant, principal).
type Who = (String, String);

impl Bucket {
    /// The window, with a margin for clock and network skew against the API's own counting.
    fn counted_window(&self) -> Duration {
        self.window.mul_f64(1.02) + Duration::from_millis(250).min(self.window / 20)
    }

    fn window_full(&mut self, now: Instant) -> bool {
        let window = self.counted_window();
        while self.grants.front().is_some_and(|t| *t + window <= now) {
            self.grants.pop_front();
        }
        self.grants.len() as f64 >= self.capacity
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.capacity / self.window.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + rate * now.duration_since(self.last).as_secs_f64()).min(self.capacity);
        self.last = now;
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
            self.tokens = self.tokens.max(1.0);
        }
    }

    /// Time until the next token, from now.
    fn next_token_in(&self, now: Instant) -> Duration {
        if let Some(t) = self.paused_until {
            return t.saturating_duration_since(now);
        }
        if self.grants.len() as f64 >= self.capacity {
            if let Some(oldest) = self.grants.front() {
                return (*oldest + self.counted_window()).saturating_duration_since(now).max(Duration::from_millis(1));
            }
        }
        let rate = self.capacity / self.window.as_secs_f64().max(1e-9);
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0) / rate).max(0.001))
    }

    /// The waiting ticket whose tenant has been served least, by weight; among equals, the oldest query.
    fn next_in_line(&self) -> Option<Ticket> {
        let load =
            |who: &Who| (self.served.get(&who.0).copied().unwrap_or(0.0), self.served_principal.get(who).copied().unwrap_or(0.0));
        self.waiting
            .iter()
            .min_by(|(a_ticket, a), (b_ticket, b)| {
                let (ta, pa) = load(a);
                let (tb, pb) = load(b);
                ta.total_cmp(&tb).then(pa.total_cmp(&pb)).then(a_ticket.cmp(b_ticket))
            })
            .map(|(ticket, _)| *ticket)
    }
}

/// Who asks for a token: the tenant (and its weight), the principal, and the query's order of arrival.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub tenant: &'a str,
    pub principal: &'a str,
    pub weight: f64,
    pub query: u64,
}

/// Why a request may not be sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Denied {
    /// The next token comes after the query's deadline.
    WouldExceedDeadline { bucket: String, wait: Duration },
}

/// Shared by every connection of a data plane.
#[derive(Debug, Default)]
pub struct Governor {
    /// Fleet-wide windows in Redis, when replicas share credentials.
    shared: Option<crate::shared_limit::SharedLimiter>,
    buckets: Mutex<HashMap<BucketKey, Bucket>>,
    changed: Notify,
    seq: Mutex<u64>,
}

/// A granted token; dropping it ends a probe.
#[derive(Debug)]
pub struct Permit<'a> {
    governor: &'a Governor,
    key: BucketKey,
    probe: bool,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            if let Some(b) = self.governor.lock().get_mut(&self.key) {
                b.probing = false;
            }
            self.governor.changed.notify_waiters();
        }
    }
}

impl Governor {
    /// A governor whose windows are also kept fleet-wide in Redis.
    pub fn with_shared(shared: Option<crate::shared_limit::SharedLimiter>) -> Self {
        Governor { shared, ..Default::default() }
    }

    pub fn shared(&self) -> Option<&crate::shared_limit::SharedLimiter> {
        self.shared.as_ref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<BucketKey, Bucket>> {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a token of `key`'s bucket on behalf of `tenant` (with its fair-share `weight`).
    pub async fn acquire(
        &self,
        key: &BucketKey,
        spec: &BucketSpec,
        who: &Requester<'_>,
        deadline: Option<Instant>,
    ) -> Result<Permit<'_>, Denied> {
        let Requester { tenant, principal, weight, query } = *who;
        let ticket = {
            let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
            *seq += 1;
            (query, *seq)
        };
        let weight = weight.max(1e-6);
        {
            let mut buckets = self.lock();
            let b = buckets.entry(key.clone()).or_insert_with(|| Bucket {
                capacity: spec.capacity,
                window: spec.window,
                tokens: spec.capacity,
                last: Instant::now(),
                paused_until: None,
                learned: spec.trusted,
                probing: false,
                grants: VecDeque::new(),
                served: HashMap::new(),
                waiting: Vec::new(),
                served_principal: HashMap::new(),
            });
            b.waiting.push((ticket, (tenant.to_string(), principal.to_string())));
        }
        let result = loop {
            let notified = self.changed.notified();
            let wait = {
                let mut buckets = self.lock();
                let Some(b) = buckets.get_mut(key) else {
                    break Err(Denied::WouldExceedDeadline { bucket: spec.name.clone(), wait: Duration::ZERO });
                };
                let now = Instant::now();
                b.refill(now);
                let my_turn = b.next_in_line() == Some(ticket);
                let probe_free = b.learned || !b.probing;
                let window_full = b.window_full(now);
                if my_turn && b.tokens >= 1.0 && b.paused_until.is_none() && probe_free && !window_full {
                    b.tokens -= 1.0;
                    b.grants.push_back(now);
                    *b.served.entry(tenant.to_string()).or_default() += 1.0 / weight;
                    *b.served_principal.entry((tenant.to_string(), principal.to_string())).or_default() += 1.0;
                    b.waiting.retain(|(t, _)| *t != ticket);
                    let probe = !b.learned;
                    if probe {
                        b.probing = true;
                    }
                    break Ok(probe);
                }
                let ready = b.tokens >= 1.0 && b.paused_until.is_none() && !window_full;
                let wait = if ready { Duration::from_millis(50) } else { b.next_token_in(now) };
                if deadline.is_some_and(|d| now + wait > d) {
                    b.waiting.retain(|(t, _)| *t != ticket);
                    break Err(Denied::WouldExceedDeadline { bucket: spec.name.clone(), wait });
                }
                wait
            };
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(wait) => {}
            }
        };
        self.changed.notify_waiters();
        result.map(|probe| Permit { governor: self, key: key.clone(), probe })
    }

    /// Corrects a bucket from what a response said.
    pub fn observe(&self, key: &BucketKey, observed: Observed) {
        let mut buckets = self.lock();
        if let Some(b) = buckets.get_mut(key) {
            let now = Instant::now();
            b.refill(now);
            if let Some(limit) = observed.limit {
                b.capacity = limit.max(1.0);
            }
            b.tokens = b.tokens.min(observed.remaining);
            if observed.remaining < 1.0 {
                b.paused_until = Some(now + observed.reset_in);
            }
            b.learned = true;
        }
        drop(buckets);
        self.changed.notify_waiters();
    }

    /// The API refused for rate (e.g. a 429 with `Retry-After`): no tokens until `retry_in`.
    pub fn pause(&self, key: &BucketKey, retry_in: Duration) {
        if let Some(b) = self.lock().get_mut(key) {
            b.tokens = 0.0;
            b.paused_until = Some(Instant::now() + retry_in);
            b.learned = true;
        }
    }

    /// The current capacity and window of a bucket (as learned), for the fleet-wide window.
    pub fn shape(&self, key: &BucketKey) -> Option<(f64, Duration)> {
        self.lock().get(key).map(|b| (b.capacity, b.counted_window()))
    }

    /// Every bucket's state, for `omnisql.rate_limits`.
    pub fn snapshot(&self) -> Vec<BucketState> {
        let now = Instant::now();
        self.lock()
            .iter_mut()
            .map(|(k, b)| {
                b.refill(now);
                BucketState {
                    credential: k.credential,
                    bucket: k.bucket.clone(),
                    capacity: b.capacity,
                    window_seconds: b.window.as_secs_f64(),
                    tokens: b.tokens,
                    paused_for_seconds: b.paused_until.map(|t| t.saturating_duration_since(now).as_secs_f64()),
                    waiting: b.waiting.len(),
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BucketState {
    pub credential: u64,
    pub bucket: String,
    pub capacity: f64,
    pub window_seconds: f64,
    pub tokens: f64,
    pub paused_for_seconds: Option<f64>,
    pub waiting: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec(capacity: f64, window_ms: u64) -> BucketSpec {
        BucketSpec { name: "test".into(), capacity, window: Duration::from_millis(window_ms), trusted: false }
    }

    fn key() -> BucketKey {
        BucketKey { credential: 1, bucket: "test".into() }
    }

    #[tokio::test]
    async fn a_request_past_the_deadline_is_refused_not_sent() {
        let g = Governor::default();
        let k = key();
        g.acquire(&k, &spec(1.0, 60_000), &Requester { tenant: "a", principal: "p", weight: 1.0, query: 1 }, None).await.unwrap();
        g.observe(&k, Observed { limit: Some(1.0), remaining: 0.0, reset_in: Duration::from_secs(3600) });
        let deadline = Some(Instant::now() + Duration::from_millis(100));
        let denied = g
            .acquire(&k, &spec(1.0, 60_000), &Requester { tenant: "a", principal: "p", weight: 1.0, query: 2 }, deadline)
            .await
            .unwrap_err();
        assert!(matches!(denied, Denied::WouldExceedDeadline { .. }));
    }

    #[tokio::test]
    async fn within_a_tenant_principals_share_alike() {
        let g = Arc::new(Governor::default());
        let k = key();
        let s = spec(100.0, 1000);
        drop(g.acquire(&k, &s, &Requester { tenant: "t", principal: "warmup", weight: 1.0, query: 0 }, None).await.unwrap());
        g.observe(&k, Observed { limit: Some(100.0), remaining: 0.0, reset_in: Duration::from_millis(1) });
        let mut tasks = Vec::new();
        for principal in ["alice", "bob"] {
            for i in 0..40 {
                let (g, k, s) = (g.clone(), k.clone(), s.clone());
                // Alice's queries all arrived first: without principal fairness she would go first.
                let query = if principal == "alice" { 1 } else { 2 + i };
                tasks.push(tokio::spawn(async move {
                    g.acquire(&k, &s, &Requester { tenant: "t", principal, weight: 1.0, query }, None).await.map(|_| ()).unwrap();
                    (principal, Instant::now())
                }));
            }
        }
        let mut done = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        done.sort_by_key(|(_, at)| *at);
        let bob = done.iter().take(40).filter(|(p, _)| *p == "bob").count();
        assert!((15..=25).contains(&bob), "bob got {bob} of the first 40 tokens");
    }

    #[tokio::test]
    async fn scarce_tokens_are_shared_by_weight_between_tenants() {
        // 100 tokens a second, learned, starting empty; a heavy tenant floods, a light one asks a little.
        let g = Arc::new(Governor::default());
        let k = key();
        let s = spec(100.0, 1000);
        drop(g.acquire(&k, &s, &Requester { tenant: "warmup", principal: "p", weight: 1.0, query: 0 }, None).await.unwrap());
        g.observe(&k, Observed { limit: Some(100.0), remaining: 0.0, reset_in: Duration::from_millis(1) });
        let mut tasks = Vec::new();
        for tenant in ["heavy", "light"] {
            for _ in 0..60 {
                let (g, k, s) = (g.clone(), k.clone(), s.clone());
                tasks.push(tokio::spawn(async move {
                    g.acquire(&k, &s, &Requester { tenant, principal: "p", weight: 1.0, query: 1 }, None)
                        .await
                        .map(|_| ())
                        .unwrap();
                    (tenant, Instant::now())
                }));
            }
        }
        let mut done: Vec<(&str, Instant)> = Vec::new();
        for t in tasks {
            done.push(t.await.unwrap());
        }
        done.sort_by_key(|(_, at)| *at);
        let first_half: Vec<_> = done.iter().take(60).collect();
        let light = first_half.iter().filter(|(t, _)| *t == "light").count();
        assert!((25..=35).contains(&light), "the light tenant got {light} of the first 60 tokens");
    }
}
