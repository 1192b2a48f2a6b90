//! Usage per tenant and minute, rolled up from audit events as they are stored, so charts of an hour or a
//! week read one row per minute however many queries ran (at 1,000 queries a second an hour is 3.6 million
//! events). Latency is kept as a histogram over fixed bounds; percentiles are interpolated within the
//! bucket that holds them, as Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::NewAuditEvent;

/// Upper bounds of the latency buckets, ms (about 1.5× apart); one more bucket holds everything slower.
pub const LATENCY_BOUNDS_MS: [f64; 32] = [
    0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 750.0,
    1_000.0, 1_500.0, 2_000.0, 3_000.0, 5_000.0, 7_500.0, 10_000.0, 15_000.0, 30_000.0, 60_000.0, 120_000.0, 300_000.0,
];

pub const MINUTE_MS: i64 = 60_000;

/// One tenant's queries in one minute (by start time), as counters and a latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rollup {
    pub queries: i64,
    pub not_ok: i64,
    pub api_requests: i64,
    pub cache_hits: i64,
    pub api_requests_by_app: BTreeMap<String, i64>,
    /// Queries per latency bucket: `LATENCY_BOUNDS_MS.len() + 1` counts.
    pub latency_buckets: Vec<i64>,
}

impl Rollup {
    /// Counts one stored event.
    pub fn add(&mut self, e: &NewAuditEvent) {
        self.queries += 1;
        self.not_ok += i64::from(e.outcome != "ok");
        self.api_requests += e.api_requests;
        self.cache_hits += e.cache_hits;
        for (app, n) in &e.api_requests_by_app {
            *self.api_requests_by_app.entry(app.clone()).or_default() += n;
        }
        self.latency_buckets.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
        let bucket = LATENCY_BOUNDS_MS.iter().position(|b| e.duration_ms <= *b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency_buckets[bucket] += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Rollup) {
        self.queries += other.queries;
        self.not_ok += other.not_ok;
        self.api_requests += other.api_requests;
        self.cache_hits += other.cache_hits;
        for (app, n) in &other.api_requests_by_app {
            *self.api_requests_by_app.entry(app.clone()).or_default() += n;
        }
        self.latency_buckets.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *mine += theirs;
        }
    }

    /// The `q` quantile of latency (0 < q ≤ 1), interpolated within its bucket; the slowest bucket has no
    /// upper bound, so a quantile there is its lower bound. None without queries.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut below = 0i64;
        for (i, n) in self.latency_buckets.iter().enumerate() {
            if *n > 0 && (below + n) as f64 >= rank {
                let lower = if i == 0 { 0.0 } else { LATENCY_BOUNDS_MS[i - 1] };
                let Some(upper) = LATENCY_BOUNDS_MS.get(i) else { return Some(lower) };
                return Some(lower + (upper - lower) * ((rank - below as f64) / *n as f64));
            }
            below += n;
        }
        LATENCY_BOUNDS_MS.last().copied()
    }

    /// The minute as the API shows it.
    pub fn minute(&self, start_ms: i64) -> UsageMinute {
        UsageMinute {
            minute: start_ms,
            queries: self.queries,
            not_ok: self.not_ok,
            api_requests: self.api_requests,
            cache_hits: self.cache_hits,
            api_requests_by_app: self.api_requests_by_app.clone(),
            p50_ms: self.latency_quantile(0.5),
            p95_ms: self.latency_quantile(0.95),
        }
    }
}

/// One minute of a tenant's queries, by the time they started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageMinute {
    /// The minute's start (Unix ms).
    pub minute: i64,
    pub queries: i64,
    /// Queries whose outcome was not `ok`.
    pub not_ok: i64,
    /// Upstream API requests the queries made.
    pub api_requests: i64,
    /// Answers the response cache gave without an upstream request.
    pub cache_hits: i64,
    pub api_requests_by_app: BTreeMap<String, i64>,
    /// Median latency, ms, estimated from a histogram (buckets about 1.5× apart).
    pub p50_ms: Option<f64>,
    /// 95th-percentile latency, ms, estimated the same way.
    pub p95_ms: Option<f64>,
}

/// Each minute's rollup of `events` (only those just stored: a resent event must not count twice).
pub fn by_minute<'a>(events: impl IntoIterator<Item = &'a NewAuditEvent>) -> BTreeMap<i64, Rollup> {
    let mut minutes: BTreeMap<i64, Rollup> = BTreeMap::new();
    for e in events {
        minutes.entry(e.started_at.div_euclid(MINUTE_MS) * MINUTE_MS).or_default().add(e);
    }
    minutes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::TenantId;

    fn event(started_at: i64, duration_ms: f64, outcome: &str) -> NewAuditEvent {
        NewAuditEvent {
            id: format!("e{started_at}-{duration_ms}"),
            tenant_id: TenantId("acme".into()),
            principal: "ann".into(),
            sql: "SELECT 1".into(),
            tables: vec![],
            api_requests: 2,
            rows: 1,
            bytes: 8,
            duration_ms,
            outcome: outcome.into(),
            error: None,
            started_at,
            data_plane: "dp".into(),
            policy_revision: None,
            api_requests_by_app: BTreeMap::from([("GitHub".into(), 2)]),
            cache_hits: 1,
        }
    }

    #[test]
    fn events_fall_into_their_start_minute_and_merge() {
        let events = [event(60_000, 1.0, "ok"), event(119_999, 4.0, "error"), event(120_000, 40.0, "ok")];
        let minutes = by_minute(&events);
        assert_eq!(minutes.keys().copied().collect::<Vec<_>>(), [60_000, 120_000]);
        let first = &minutes[&60_000];
        assert_eq!((first.queries, first.not_ok, first.api_requests, first.cache_hits), (2, 1, 4, 2));
        assert_eq!(first.api_requests_by_app["GitHub"], 4);
        let mut merged = first.clone();
        merged.merge(&minutes[&120_000]);
        assert_eq!((merged.queries, merged.api_requests_by_app["GitHub"]), (3, 6));
        assert_eq!(merged.latency_buckets.iter().sum::<i64>(), 3);
        // Round trip through the stored JSON.
        let back: Rollup = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
        assert_eq!(back, merged);
    }

    #[test]
    fn percentiles_are_interpolated_within_their_bucket() {
        let mut r = Rollup::default();
        assert_eq!(r.latency_quantile(0.5), None);
        // 100 queries of 1.2 ms (bucket 1–1.5 ms) and 10 of 400 ms (bucket 300–500 ms).
        for _ in 0..100 {
            r.add(&event(0, 1.2, "ok"));
        }
        for _ in 0..10 {
            r.add(&event(0, 400.0, "ok"));
        }
        let p50 = r.latency_quantile(0.5).unwrap();
        assert!((1.0..=1.5).contains(&p50), "{p50}");
        let p95 = r.latency_quantile(0.95).unwrap();
        assert!((300.0..=500.0).contains(&p95), "{p95}");
        // Beyond the last bound: its lower bound, never infinity.
        let mut slow = Rollup::default();
        slow.add(&event(0, 1e9, "ok"));
        assert_eq!(slow.latency_quantile(0.99), Some(300_000.0));
    }
}
