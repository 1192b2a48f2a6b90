//! Rate limits and fairness: OmniSQL never sends a request an upstream quota would refuse, fails a
//! query it cannot finish within quota with an error that says so, and shares a contended limit between
//! tenants by weight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Quotas, Sandbox, SandboxConfig};

async fn stats(url: &str) -> serde_json::Value {
    reqwest::get(format!("{url}/_sandbox/stats")).await.unwrap().json().await.unwrap()
}

/// The tests that measure latency or shares under load run one at a time: run beside another saturating
/// test of this file, they would measure its CPU use rather than the limiter's fairness.
static UNDER_LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn engine_without_cache(sb: &Sandbox, timeout: Duration, tenants: &[(&str, f64)], rps: Option<f64>) -> Arc<Engine> {
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let tenants = tenants
        .iter()
        .map(|(id, weight)| {
            let mut t = testing::single_tenant(id, "p", &format!("{id}-token-0123456789"), connections.clone());
            t.weight = Some(*weight);
            for c in &mut t.connections {
                c.requests_per_second = rps;
            }
            t
        })
        .collect();
    let options =
        EngineOptions { cache_bytes: None, query_timeout: timeout, connectors: omnisql_connectors::all(), ..Default::default() };
    Arc::new(Engine::new(&testing::config(tenants), options).unwrap())
}

fn caller_of(id: &str) -> Caller {
    Caller::new(id, "p")
}

#[tokio::test]
async fn ten_times_the_github_quota_sends_nothing_github_would_refuse() {
    let sb = sandbox(SandboxConfig { quotas: Quotas { github_per_hour: 30, ..Quotas::generous() }, ..Default::default() }).await;
    let engine = engine_without_cache(&sb, Duration::from_secs(10), &[("acme", 1.0)], None);
    // Each query needs 2 requests (two pages of the organisation's issue list): 60 ask for 120.
    let mut tasks = Vec::new();
    for _ in 0..60 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move { engine.query(&caller_of("acme"), "SELECT count(*) FROM github.issues").await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("GitHub quota of connection `github` is exhausted"), "{e}");
                refused += 1;
            }
        }
    }
    let sent = stats(&sb.github_url).await["total"].as_u64().unwrap();
    assert!(sent <= 30, "{sent} requests sent against a quota of 30: GitHub would have refused {}", sent.saturating_sub(30));
    println!(
        "60 queries needing 120 requests against a quota of 30: {ok} answered, {refused} refused with a quota error, {sent} requests sent"
    );
    // At most 15 queries' worth of requests fit in the quota; every other query is refused.
    assert!((1..=15).contains(&ok) && ok + refused == 60, "{ok} answered, {refused} refused");
}

#[tokio::test]
async fn slack_tiers_are_respected_without_a_single_429() {
    let sb = sandbox(SandboxConfig { quotas: Quotas { slack_tier_multiplier: 1.0, ..Quotas::generous() }, ..Default::default() })
        .await;
    let engine = engine_without_cache(&sb, Duration::from_secs(3), &[("acme", 1.0)], None);
    // Each query lists channels (Tier 2: 20/min) and reads six histories (Tier 3: 50/min).
    let mut failures = 0;
    for _ in 0..10 {
        if let Err(e) = engine.query(&caller_of("acme"), "SELECT count(*) FROM slack.messages").await {
            let e = e.to_string();
            assert!(
                e.contains("rate limit has no request left before the query's deadline")
                    || e.contains("ran out of time waiting for Slack"),
                "{e}"
            );
            failures += 1;
        }
    }
    let s = stats(&sb.slack_url).await;
    assert!(s["endpoints"]["GET /api/conversations.history"].as_u64().unwrap_or(0) <= 50, "{s}");
    assert!(s["endpoints"]["GET /api/conversations.list"].as_u64().unwrap_or(0) <= 20, "{s}");
    println!("10 Slack queries needing 70 calls at real tiers: {failures} refused, calls sent: {s}");
    assert!(failures >= 2, "ten queries need 60 history calls; some must be refused ({failures})");
}

/// Runs `sql` in `loops` concurrent loops for `for_how_long`; returns upstream requests made.
async fn saturate(engine: Arc<Engine>, tenant: &'static str, loops: usize, for_how_long: Duration) -> u64 {
    let until = Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for _ in 0..loops {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut requests = 0;
            while Instant::now() < until {
                if let Ok((_, r)) = engine.query(&caller_of(tenant), "SELECT count(*) FROM salesforce.account").await {
                    requests += r;
                }
            }
            requests
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test]
async fn a_contended_limit_is_shared_by_weight() {
    let _alone = UNDER_LOAD.lock().await;
    let sb = sandbox(SandboxConfig::default()).await;
    // One credential, 40 requests a second, shared by both tenants; heavy has three times the weight.
    let engine = engine_without_cache(&sb, Duration::from_secs(30), &[("heavy", 3.0), ("light", 1.0)], Some(40.0));
    // Enough loops that both tenants always have requests waiting for the limit.
    let window = Duration::from_secs(4);
    let (heavy, light) =
        tokio::join!(saturate(engine.clone(), "heavy", 24, window), saturate(engine.clone(), "light", 24, window));
    let share = heavy as f64 / (heavy + light) as f64;
    println!("heavy {heavy}, light {light}: heavy's share {share:.2} (weight share 0.75)");
    assert!((share - 0.75).abs() <= 0.075, "heavy's share {share:.2} is not within 10% of 0.75");
}

#[tokio::test]
async fn a_light_tenant_is_not_starved_by_a_heavy_one() {
    let _alone = UNDER_LOAD.lock().await;
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_without_cache(&sb, Duration::from_secs(30), &[("heavy", 1.0), ("light", 1.0)], Some(40.0));
    let mut unloaded = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        engine.query(&caller_of("light"), "SELECT count(*) FROM salesforce.account").await.unwrap();
        unloaded.push(t.elapsed());
    }
    let heavy = tokio::spawn(saturate(engine.clone(), "heavy", 32, Duration::from_secs(3)));
    // Measure only once the heavy tenant has requests queued at the shared limit.
    let waiting = "SELECT sum(waiting) AS w FROM omnisql.rate_limits WHERE bucket LIKE 'connection %'";
    let queued = Instant::now() + Duration::from_secs(10);
    loop {
        let (batches, _) = engine.query(&caller_of("light"), waiting).await.unwrap();
        if !pretty(&batches).contains("| 0 |") && !pretty(&batches).contains("|   |") {
            break;
        }
        assert!(Instant::now() < queued, "the heavy tenant never queued at the limit");
        tokio::task::yield_now().await;
    }
    let mut loaded = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        engine.query(&caller_of("light"), "SELECT count(*) FROM salesforce.account").await.unwrap();
        loaded.push(t.elapsed());
    }
    heavy.await.unwrap();
    unloaded.sort();
    loaded.sort();
    let (u, l) = (unloaded[2], loaded[2]);
    println!("light tenant median latency: unloaded {u:?}, under a 32-way heavy load {l:?}");
    // One token every 25 ms goes alternately to each tenant: the light one waits about one slot.
    assert!(l <= u + Duration::from_millis(150), "light tenant median {l:?} vs unloaded {u:?}");
}

#[tokio::test]
async fn a_tenant_limited_to_a_share_of_the_quota_leaves_the_rest_to_others() {
    let _alone = UNDER_LOAD.lock().await;
    let sb =
        sandbox(SandboxConfig { quotas: Quotas { github_per_hour: 5000, ..Quotas::generous() }, ..Default::default() }).await;
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut limited = testing::single_tenant("limited", "p", "limited-token-0123456789", connections.clone());
    for c in &mut limited.connections {
        c.quota_share = Some(0.001); // 0.1% of 5,000 an hour: 5 requests
    }
    let other = testing::single_tenant("other", "p", "other-token-0123456789", connections);
    let options = EngineOptions {
        cache_bytes: None,
        query_timeout: Duration::from_secs(5),
        connectors: omnisql_connectors::all(),
        ..Default::default()
    };
    let engine = Engine::new(&testing::config(vec![limited, other]), options).unwrap();
    // Each count needs 2 requests (the organisation's issues, two pages): two fit in the share, the third does not.
    for _ in 0..2 {
        engine.query(&caller_of("limited"), "SELECT count(*) FROM github.issues").await.unwrap();
    }
    let e = engine.query(&caller_of("limited"), "SELECT count(*) FROM github.issues").await.unwrap_err().to_string();
    assert!(e.contains("github:core (0.1% share of tenant limited) rate limit has no request left"), "{e}");
    engine.query(&caller_of("other"), "SELECT count(*) FROM github.issues").await.unwrap();
}
