//! Caching with explicit staleness: repeated questions within the window cost no upstream call,
//! `max_staleness = 0` goes back to the API (GitHub revalidates for free), nothing crosses tenants,
//! and a request budget stops a query with an error that names it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use omnisql_engine::{Caller, Engine, EngineOptions, QuerySettings, TenantId, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

fn cached_engine(sb: &Sandbox) -> Engine {
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![
        testing::single_tenant("acme", "tester", TOKEN, connections.clone()),
        testing::single_tenant("other", "someone", "other-token-0123456789", connections),
    ]);
    // Kept results off: these tests are about the API answers a query reads.
    Engine::new(
        &config,
        EngineOptions { result_cache_bytes: None, connectors: omnisql_connectors::all(), ..EngineOptions::default() },
    )
    .unwrap()
}

async fn upstream_total(sb: &Sandbox) -> u64 {
    let mut total = 0;
    for url in [&sb.github_url, &sb.salesforce_url, &sb.slack_url] {
        let stats: serde_json::Value = reqwest::get(format!("{url}/_sandbox/stats")).await.unwrap().json().await.unwrap();
        total += stats["total"].as_u64().unwrap();
    }
    total
}

const JOIN: &str = "SELECT count(*) AS n FROM github.issues i JOIN github.users gu ON gu.login = i.user_login
    JOIN salesforce.contact c ON c.email = gu.email JOIN slack.users su ON su.email IS NOT NULL AND su.real_name IS NOT NULL
    WHERE i.state = 'open'";

#[tokio::test]
async fn a_repeated_question_within_the_staleness_window_makes_no_upstream_call() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    let (first, _, first_requests) = run(&engine, JOIN).await;
    assert!(first_requests > 0);
    let before = upstream_total(&sb).await;
    let (second, _, second_requests) = run(&engine, JOIN).await;
    assert_eq!(first, second);
    assert_eq!(second_requests, 0);
    assert_eq!(upstream_total(&sb).await, before, "the sandbox saw no request");
    let stats = engine.cache_stats(&TenantId("acme".into()));
    assert!(stats.hits > 0 && stats.saved_calls >= stats.hits, "{stats:?}");
}

#[tokio::test]
async fn zero_staleness_goes_back_to_the_api_and_github_revalidates_for_free() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    run(&engine, "SELECT count(*) FROM github.issues").await;
    let before = upstream_total(&sb).await;
    let (_, _, requests) = run(&engine, "SET omnisql.max_staleness = '0'; SELECT count(*) FROM github.issues").await;
    assert!(requests > 0 && upstream_total(&sb).await > before, "fresh data means asking the API");
    let stats = engine.cache_stats(&TenantId("acme".into()));
    assert_eq!(stats.revalidations, requests, "every GitHub page was confirmed with a free 304: {stats:?}");
}

#[tokio::test]
async fn cached_answers_are_never_shared_between_tenants() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    run(&engine, "SELECT count(*) FROM salesforce.account").await;
    let other = Caller::new("other", "someone");
    let (_, requests) = engine.query(&other, "SELECT count(*) FROM salesforce.account").await.unwrap();
    assert!(requests > 0, "the other tenant's first question goes to the API");
    assert_eq!(engine.cache_stats(&TenantId("other".into())).hits, 0);
}

#[tokio::test]
async fn multi_batch_salesforce_results_are_read_again_correctly() {
    let sb = sandbox(SandboxConfig { scale: 250, ..Default::default() }).await;
    let engine = cached_engine(&sb);
    let expected = format!("| {} |", sb.world.contacts.len());
    for _ in 0..2 {
        let (out, _, _) = run(&engine, "SELECT count(*) AS n FROM salesforce.contact").await;
        assert!(out.contains(&expected), "{out}");
    }
}

#[tokio::test]
async fn a_request_budget_fails_the_query_and_names_the_budget() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    let e = engine
        .query(&caller(), "SET omnisql.request_budget = 1; SELECT count(*) FROM github.issues")
        .await
        .unwrap_err()
        .to_string();
    // The organisation's issues are two pages of 100.
    assert!(e.contains("budget of 1 upstream requests"), "{e}");
    let (out, _, _) = run(&engine, "SET omnisql.request_budget = 100; SELECT count(*) AS n FROM github.issues").await;
    assert!(out.contains(&format!("| {} |", sb.world.issues.len())), "{out}");
}

#[tokio::test]
async fn session_settings_persist_until_changed_and_bad_ones_are_named() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    let mut session = QuerySettings::default();
    assert!(engine.plan(&caller(), "SET omnisql.max_staleness = '5 minutes'", None, &mut session).await.unwrap().is_none());
    assert_eq!(session.max_staleness, Some(std::time::Duration::from_secs(300)));
    let e = engine.plan(&caller(), "SET omnisql.max_staleness = 'soon'", None, &mut session).await.unwrap_err().to_string();
    assert!(e.contains("invalid value \"soon\" for omnisql.max_staleness"), "{e}");
    let e = engine.plan(&caller(), "SET omnisql.colour = 'blue'", None, &mut session).await.unwrap_err().to_string();
    assert!(e.contains("unknown setting `omnisql.colour`"), "{e}");
}

#[tokio::test]
async fn the_system_schema_shows_the_tenants_cache_and_rate_limits_only() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = cached_engine(&sb);
    run(&engine, "SELECT count(*) FROM github.issues").await;
    run(&engine, "SELECT count(*) FROM github.issues").await;
    let (out, _, _) = run(&engine, "SELECT hits, misses FROM omnisql.cache_stats").await;
    // Two pages of the organisation's issue list, then the same two from the cache.
    assert!(out.contains("| 2    | 2      |"), "{out}");
    let (out, rows, _) =
        run(&engine, "SELECT connection, bucket, capacity, available FROM omnisql.rate_limits ORDER BY bucket").await;
    // The hourly core quota, and the per-minute secondary limit of the one endpoint used.
    assert_eq!(rows, 2, "{out}");
    assert!(out.contains("github:core") && out.contains("5000.0"), "{out}");
    assert!(out.contains("github:secondary /orgs/{name}/issues") && out.contains("900.0"), "{out}");
    let other = Caller::new("other", "someone");
    let (batches, _) = engine.query(&other, "SELECT hits FROM omnisql.cache_stats").await.unwrap();
    assert!(pretty(&batches).contains("| 0    |"), "another tenant sees its own, empty, statistics");
}

/// Identical questions at once, from two tenants that share a credential: each upstream request is
/// made once, the other queries take its answer as it lands.
#[tokio::test]
async fn identical_requests_in_flight_are_asked_once_across_queries_and_tenants() {
    let mut config = SandboxConfig::default();
    config.github.latency = omnisql_sandbox::Latency { fixed_ms: 300, jitter_pct: 0.0 };
    let sb = sandbox(config).await;
    let sql = "SELECT count(*) AS n FROM github.issues WHERE repo_full_name = 'acme/api'";
    let (expected, _, single) = run(&engine(&sb, true), sql).await;
    let cached = cached_engine(&sb);
    let before = upstream_total(&sb).await;
    let (acme, other) = (caller(), Caller::new("other", "someone"));
    let answers = futures::future::join_all((0..6).map(|i| cached.query(if i % 2 == 0 { &acme } else { &other }, sql))).await;
    for answer in answers {
        assert_eq!(pretty(&answer.unwrap().0), expected);
    }
    assert_eq!(upstream_total(&sb).await - before, single, "six queries cost what one does");
    let coalesced =
        cached.cache_stats(&TenantId("acme".into())).coalesced + cached.cache_stats(&TenantId("other".into())).coalesced;
    assert!(coalesced >= 1, "answers were shared in flight");
}

/// An entry read again past half its time to live is fetched in the background, so a query after the
/// original expiry still finds it fresh and makes no request.
#[tokio::test]
async fn popular_entries_are_refreshed_ahead_of_expiry_so_queries_do_not_wait() {
    let sb = sandbox(SandboxConfig::default()).await;
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut tenant = testing::single_tenant("acme", "tester", TOKEN, connections);
    for c in &mut tenant.connections {
        c.cache_ttl_seconds = Some(2);
    }
    // Kept results off: this is about the API answers themselves (results.rs tests their own refresh).
    let options = EngineOptions { result_cache_bytes: None, connectors: omnisql_connectors::all(), ..EngineOptions::default() };
    let engine = Engine::new(&testing::config(vec![tenant]), options).unwrap();
    let sql = "SELECT count(*) AS n FROM github.repos";
    // Real time, not a paused clock: the cache ages entries by `std::time::Instant`, and a TTL is whole
    // seconds, so the test waits past half of it and past the first answer's expiry.
    let started = std::time::Instant::now();
    let (expected, _, requests) = run(&engine, sql).await;
    assert!(requests > 0);
    assert_eq!(run(&engine, sql).await.2, 0);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(run(&engine, sql).await.2, 0, "still within the time to live; this read starts a refresh");
    // The refresh runs in the background: wait for it (it must land before the first answer expires).
    while engine.cache_stats(&TenantId("acme".into())).refreshed_ahead == 0 {
        assert!(started.elapsed() < std::time::Duration::from_millis(1900), "no refresh before the first answer expired");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(2300).saturating_sub(started.elapsed())).await;
    let (again, _, requests) = run(&engine, sql).await;
    assert_eq!((again, requests), (expected, 0), "past the first answer's expiry, the refreshed entry answers");
}
