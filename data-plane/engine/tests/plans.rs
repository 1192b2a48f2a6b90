//! Kept plans: a statement asked again runs its earlier plan, with the same answers as a new plan, one run
//! apart from the next (even at once), and only where that cannot change an answer: not across callers or
//! configurations, not for functions of the moment, not for plans with state (joins).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use omnisql_engine::{Caller, Engine, EngineOptions, QuerySettings};
use omnisql_sandbox::SandboxConfig;

/// An engine without the response cache or kept results: every run goes to the APIs.
fn fresh_engine(sb: &omnisql_sandbox::Sandbox) -> Arc<Engine> {
    let options = EngineOptions {
        cache_bytes: None,
        result_cache_bytes: None,
        connectors: omnisql_connectors::all(),
        ..EngineOptions::default()
    };
    Arc::new(Engine::new(&tenant_config(sb, None), options).unwrap())
}

async fn run_as(engine: &Engine, who: &Caller, sql: &str, params: Option<Vec<datafusion::scalar::ScalarValue>>) -> (String, u64) {
    let mut settings = QuerySettings::default();
    let q = engine.plan(who, sql, params.map(Into::into), &mut settings).await.unwrap().unwrap();
    let context = q.context.clone();
    let batches = datafusion::physical_plan::common::collect(engine.execute(q).await.unwrap()).await.unwrap();
    (pretty(&batches), context.api_requests())
}

#[tokio::test]
async fn a_statement_asked_again_runs_its_kept_plan_with_the_same_answers() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = fresh_engine(&sb);
    let sql = "SELECT name, industry FROM salesforce.account WHERE industry = 'Retail' ORDER BY name";
    let (first, requests) = run_as(&engine, &caller(), sql, None).await;
    assert!(requests >= 1 && first.lines().count() > 4, "{first}");
    let planned = engine.statements_planned();
    for _ in 0..3 {
        let (again, requests) = run_as(&engine, &caller(), sql, None).await;
        assert_eq!(again, first);
        assert!(requests >= 1, "a kept plan still asks the API: only planning is skipped");
    }
    assert_eq!(engine.statements_planned(), planned, "the kept plan ran");
    // Runs at once do not share state (the plan's repartitioning is reset for each).
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move { run_as(&engine, &caller(), sql, None).await.0 })
        })
        .collect();
    for r in runs {
        assert_eq!(r.await.unwrap(), first);
    }
    // Other parameters are another statement.
    let by_param = "SELECT name FROM salesforce.account WHERE industry = $1 ORDER BY name";
    let retail = run_as(&engine, &caller(), by_param, Some(vec!["Retail".into()])).await.0;
    let finance = run_as(&engine, &caller(), by_param, Some(vec!["Finance".into()])).await.0;
    assert_ne!(retail, finance);
    assert_eq!(run_as(&engine, &caller(), by_param, Some(vec!["Retail".into()])).await.0, retail);
}

#[tokio::test]
async fn plans_are_not_kept_where_a_new_plan_could_answer_differently() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = fresh_engine(&sb);
    for sql in [
        // Functions of the moment are folded when planned.
        "SELECT name, now() AS at FROM salesforce.account WHERE industry = 'Retail'",
        "SELECT count(*) FROM github.issues WHERE created_at < current_date",
        // Joins hold state between the build and probe sides.
        "SELECT i.number FROM github.issues i JOIN github.users u ON u.login = i.user_login WHERE i.state = 'open'",
        // System tables answer when planned.
        "SELECT hits FROM omnisql.cache_stats",
        "SELECT count(*) FROM information_schema.tables",
    ] {
        run_as(&engine, &caller(), sql, None).await;
        let planned = engine.statements_planned();
        run_as(&engine, &caller(), sql, None).await;
        assert_eq!(engine.statements_planned(), planned + 1, "{sql} ran a kept plan");
    }
    // Another principal of the same tenant (its policies may differ) plans its own.
    let sql = "SELECT name FROM salesforce.account WHERE industry = 'Energy'";
    run_as(&engine, &caller(), sql, None).await;
    let planned = engine.statements_planned();
    run_as(&engine, &Caller::new("acme", "analyst"), sql, None).await;
    assert_eq!(engine.statements_planned(), planned + 1);
    // A new configuration of the tenant (policies are part of it) plans anew.
    engine.apply(&tenant_config(&sb, Some(120))).unwrap();
    let planned = engine.statements_planned();
    run_as(&engine, &caller(), sql, None).await;
    assert_eq!(engine.statements_planned(), planned + 1, "a plan made under the old configuration ran");
}
