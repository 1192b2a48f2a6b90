//! Kept results: a repeated question is answered without planning or asking the APIs, only to the same
//! caller under the same configuration, only while its data is as fresh as the question accepts, and
//! never for results that depend on anything but API data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use omnisql_engine::{Caller, Engine, EngineOptions, QuerySettings, TenantId};
use omnisql_sandbox::{Sandbox, SandboxConfig};

fn keeping_engine(sb: &Sandbox, ttl: Option<u64>) -> Engine {
    Engine::new(&tenant_config(sb, ttl), EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() })
        .unwrap()
}

fn served(engine: &Engine, tenant: &str) -> u64 {
    engine.results_served(&TenantId(tenant.into()))
}

const QUESTION: &str = "SELECT i.number, c.email FROM github.issues i JOIN github.users gu ON gu.login = i.user_login
    JOIN salesforce.contact c ON c.email = gu.email WHERE i.state = 'open' ORDER BY i.number";

#[tokio::test]
async fn a_repeated_question_is_answered_without_planning_or_asking_the_apis() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = keeping_engine(&sb, None);
    let (first, rows, requests) = run(&engine, QUESTION).await;
    assert!(rows > 0 && requests > 0, "{first}");
    let planned = engine.statements_run();
    // Trailing semicolons and surrounding blanks do not make another question.
    let (second, _, second_requests) = run(&engine, &format!("  {QUESTION} ;")).await;
    assert_eq!(second, first);
    assert_eq!(second_requests, 0);
    assert_eq!(engine.statements_run(), planned, "the kept result answered: nothing ran");
    assert_eq!(served(&engine, "acme"), 1);
    let api = engine.cache_stats(&TenantId("acme".into()));
    assert_eq!(api.hits, 0, "not even the response cache was asked: {api:?}");
    let (stats, _, _) = run(&engine, "SELECT results_served FROM omnisql.cache_stats").await;
    assert!(stats.contains("| 1 "), "{stats}");
}

#[tokio::test]
async fn only_the_same_caller_under_the_same_configuration_gets_a_kept_result() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = keeping_engine(&sb, None);
    run(&engine, QUESTION).await;
    // Another principal of the tenant (policies may show them other rows), another tenant, and the
    // same caller with other groups from a sign-in token: each plans its own.
    let analyst = Caller::new("acme", "analyst");
    let mut grouped = caller();
    grouped.groups = vec!["sales".into()];
    for who in [analyst, Caller::new("other", "someone"), grouped] {
        let planned = engine.statements_run();
        engine.query(&who, QUESTION).await.unwrap();
        assert_eq!(engine.statements_run(), planned + 1, "{who:?} got another caller's result");
    }
    assert_eq!(served(&engine, "acme") + served(&engine, "other"), 0);

    // A new configuration of the tenant (here: a connection's TTL) retires what was kept under the old.
    engine.apply(&tenant_config(&sb, Some(120))).unwrap();
    let planned = engine.statements_run();
    run(&engine, QUESTION).await;
    assert_eq!(engine.statements_run(), planned + 1);
    run(&engine, QUESTION).await;
    assert_eq!(engine.statements_run(), planned + 1, "kept again under the new configuration");
    // The same configuration applied again (the control plane resends it) keeps what was kept.
    engine.apply(&tenant_config(&sb, Some(120))).unwrap();
    run(&engine, QUESTION).await;
    assert_eq!(engine.statements_run(), planned + 1);
}

#[tokio::test]
async fn a_kept_result_is_served_only_while_its_data_is_as_fresh_as_the_question_accepts() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = keeping_engine(&sb, None);
    let sql = "SELECT count(*) AS n FROM salesforce.account";
    run(&engine, sql).await;
    // Fresh data asked for: the query runs and goes upstream, and its result replaces the kept one.
    let (_, _, requests) = run(&engine, &format!("SET omnisql.max_staleness = '0'; {sql}")).await;
    assert!(requests > 0);
    assert_eq!(served(&engine, "acme"), 0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Older than 100 ms is too old for this question...
    let planned = engine.statements_run();
    run(&engine, &format!("SET omnisql.max_staleness = '100 ms'; {sql}")).await;
    assert_eq!(engine.statements_run(), planned + 1);
    // ...and fine for one that accepts a minute.
    run(&engine, &format!("SET omnisql.max_staleness = '60s'; {sql}")).await;
    assert_eq!(engine.statements_run(), planned + 1);
    assert_eq!(served(&engine, "acme"), 1);

    // A connection that caches nothing (TTL 0) has no kept results either.
    let uncached = keeping_engine(&sb, Some(0));
    run(&uncached, sql).await;
    let planned = uncached.statements_run();
    run(&uncached, sql).await;
    assert_eq!(uncached.statements_run(), planned + 1);
}

#[tokio::test]
async fn results_that_depend_on_more_than_api_data_are_never_kept() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = keeping_engine(&sb, None);
    for sql in [
        "SELECT count(*), now() FROM github.issues",
        "SELECT number, random() FROM github.issues LIMIT 3",
        "SELECT count(*) FROM github.issues WHERE created_at < current_date",
        "SELECT hits FROM omnisql.cache_stats",
        "SELECT count(*) FROM information_schema.tables",
        "EXPLAIN SELECT count(*) FROM github.issues",
        "SELECT 1",
    ] {
        run(&engine, sql).await;
        let planned = engine.statements_run();
        run(&engine, sql).await;
        assert_eq!(engine.statements_run(), planned + 1, "{sql} was answered from a kept result");
    }
    assert_eq!(served(&engine, "acme"), 0);
}

async fn plan(engine: &Engine, sql: &str) -> omnisql_engine::PreparedQuery {
    let mut settings = QuerySettings { max_staleness: Some(ALLOWANCE), ..QuerySettings::default() };
    engine.plan(&caller(), sql, None, &mut settings).await.unwrap().unwrap()
}

/// The staleness `plan` accepts: a kept result is due for a refresh once older than half of it.
const ALLOWANCE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_popular_aging_result_is_refreshed_in_the_background_once() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = keeping_engine(&sb, None);
    let sql = "SELECT count(*) AS n FROM salesforce.account";
    run(&engine, sql).await;
    run(&engine, sql).await;
    // Past half the allowance, well within all of it.
    tokio::time::sleep(ALLOWANCE * 5 / 8).await;
    let mut q = plan(&engine, sql).await;
    assert!(q.from_kept_result());
    let refresh = q.take_refresh().expect("read twice and past half its allowance: due for a refresh");
    assert!(plan(&engine, sql).await.take_refresh().is_none(), "one refresh at a time");
    let before = engine.statements_run();
    engine.refresh_result(refresh).await;
    assert_eq!(engine.statements_run(), before + 1, "the refresh ran the query");
    // The refreshed result is young again: served, and not due for another refresh.
    let mut q = plan(&engine, sql).await;
    assert!(q.from_kept_result());
    assert!(q.take_refresh().is_none());
}

/// Identical statements arriving while one runs wait for its result instead of planning and running too; a
/// statement asking for fresh data does not wait (the running one may have read before it began).
#[tokio::test]
async fn identical_statements_wait_for_the_one_running_instead_of_running_too() {
    let mut config = SandboxConfig::default();
    config.github.latency = omnisql_sandbox::Latency { fixed_ms: 600, jitter_pct: 0.0 };
    let sb = sandbox(config).await;
    let engine = std::sync::Arc::new(keeping_engine(&sb, None));
    // The connector is made by a first, different statement, so the one below plans in milliseconds.
    run(&engine, "SELECT count(*) FROM github.repos").await;
    let sql = "SELECT count(*) AS n FROM github.issues WHERE repo_full_name = 'acme/api'";
    let asked = github_requests(&sb).await;
    let first = tokio::spawn({
        let engine = engine.clone();
        async move { run(&engine, sql).await }
    });
    // Once the first one runs (GitHub has its request and takes 600 ms to answer), five more arrive.
    until_github_asked(&sb, asked).await;
    let planned = engine.statements_run();
    let followers = futures::future::join_all((0..5).map(|_| run(&engine, sql))).await;
    let (expected, _, requests) = first.await.unwrap();
    assert!(requests > 0);
    for (answer, _, requests) in followers {
        assert_eq!((answer, requests), (expected.clone(), 0));
    }
    assert_eq!(engine.statements_run(), planned, "the followers planned nothing");
    assert_eq!(served(&engine, "acme"), 5);

    // Fresh data asked for while an identical statement runs: it runs itself.
    let fresh = format!("SET omnisql.max_staleness = '0'; {sql}");
    let asked = github_requests(&sb).await;
    let running = tokio::spawn({
        let engine = engine.clone();
        let fresh = fresh.clone();
        async move { run(&engine, &fresh).await }
    });
    until_github_asked(&sb, asked).await;
    let planned = engine.statements_run();
    let (_, _, requests) = run(&engine, &fresh).await;
    assert!(requests > 0);
    assert_eq!(engine.statements_run(), planned + 1);
    running.await.unwrap();
}

async fn github_requests(sb: &Sandbox) -> u64 {
    let stats: serde_json::Value = reqwest::get(format!("{}/_sandbox/stats", sb.github_url)).await.unwrap().json().await.unwrap();
    stats["total"].as_u64().unwrap()
}

/// Returns once GitHub has received a request past the `before` count (it counts on arrival).
async fn until_github_asked(sb: &Sandbox, before: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while github_requests(sb).await == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("GitHub was asked within 10 s");
}
