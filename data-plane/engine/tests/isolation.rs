#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A hostile tenant's statements: nothing reaches the host, nothing ends the process, nothing takes
//! more than the tenant's share of memory, time or query slots.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use omnisql_engine::{Caller, Engine, EngineOptions, MemoryLimits, QuerySettings, testing};
use omnisql_sandbox::SandboxConfig;

fn limited_engine(
    sb: &omnisql_sandbox::Sandbox,
    memory: MemoryLimits,
    tenants: &[(&str, Option<u64>, Option<u32>)],
) -> Arc<Engine> {
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let tenants = tenants
        .iter()
        .map(|(id, timeout, slots)| {
            let mut t = testing::single_tenant(id, "p", &format!("{id}-token-0123456789"), connections.clone());
            t.statement_timeout_seconds = *timeout;
            t.max_concurrent_queries = *slots;
            t
        })
        .collect();
    // Operators on a pool of their own, as in the data plane.
    let options = EngineOptions {
        cache_bytes: None,
        memory,
        operator_threads: Some(4),
        connectors: omnisql_connectors::all(),
        ..Default::default()
    };
    Arc::new(Engine::new(&testing::config(tenants), options).unwrap())
}

fn of(tenant: &str) -> Caller {
    Caller::new(tenant, "p")
}

async fn error_of(engine: &Engine, caller: &Caller, sql: &str) -> String {
    match engine.query(caller, sql).await {
        Ok((batches, _)) => panic!("{sql} succeeded:\n{}", pretty(&batches)),
        Err(e) => e.strip_backtrace(),
    }
}

/// Runs `f` on a runtime whose threads have the stack the data plane's runtime gives them.
fn on_engine_threads<F: std::future::Future<Output = ()> + Send + 'static>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(omnisql_engine::THREAD_STACK_BYTES)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move { tokio::spawn(f).await.unwrap() });
}

#[tokio::test]
async fn no_statement_reads_or_writes_files() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let dir = std::env::temp_dir().join(format!("omnisql-isolation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret.csv");
    std::fs::write(&secret, "name\nthe-host-secret\n").unwrap();
    let written = dir.join("written.csv");
    let (s, w) = (secret.display(), written.display());
    for sql in [
        format!("COPY (SELECT 1) TO '{w}'"),
        format!("COPY (SELECT 1) TO '{w}' STORED AS CSV"),
        format!("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{s}'"),
        format!("CREATE EXTERNAL TABLE t (name VARCHAR) STORED AS CSV LOCATION '{s}' OPTIONS ('format.has_header' 'true')"),
        format!("SELECT * FROM '{s}'"),
        format!("SELECT * FROM \"{s}\""),
        format!("EXPLAIN COPY (SELECT 1) TO '{w}'"),
        "INSERT INTO github.issues SELECT * FROM github.issues".to_string(),
        "CREATE TABLE x AS SELECT 1".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "DROP SCHEMA github".to_string(),
        "SET datafusion.execution.batch_size = 0".to_string(),
        "SET datafusion.execution.target_partitions = 1000".to_string(),
        "RESET datafusion.execution.batch_size".to_string(),
    ] {
        let e = error_of(&engine, &caller(), &sql).await;
        assert!(!e.contains("the-host-secret"), "{sql}: the error shows the file's content: {e}");
        assert!(
            e.contains("is not allowed") || e.contains("not found") || e.contains("never files or URLs"),
            "{sql}: unexpected error {e}"
        );
        // Prepared statements plan through the same gate.
        assert!(engine.logical_plan(&caller(), &sql, &Default::default()).await.is_err(), "{sql} was prepared");
    }
    assert!(!written.exists(), "a statement wrote a file on the host");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_statement_the_limits_allow_plans_and_runs_on_the_engine_threads() {
    on_engine_threads(async {
        let sb = sandbox(SandboxConfig::default()).await;
        let engine = engine(&sb, true);
        let limits = omnisql_engine::StatementLimits::default();
        let unions = vec!["SELECT 1 AS a"; limits.max_set_operation_arms].join(" UNION ALL ");
        let sum = format!("SELECT {} AS s", vec!["1"; limits.max_operators].join(" + "));
        let nested = format!("SELECT {}1{} AS n", "(".repeat(limits.max_nesting), ")".repeat(limits.max_nesting));
        let subqueries = format!(
            "SELECT * FROM {} (SELECT 1 AS a) {}",
            "(SELECT * FROM ".repeat(limits.max_nesting - 1),
            ") AS s".repeat(limits.max_nesting - 1)
        );
        let in_list = format!(
            "SELECT count(*) FROM (VALUES (1)) t(a) WHERE a IN ({})",
            (0..limits.max_in_list).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
        );
        let joins = format!(
            "SELECT count(*) FROM (VALUES (1)) t0(a) {}",
            (1..limits.max_tables).map(|i| format!("JOIN (VALUES (1)) t{i}(a) ON t{i}.a = t0.a")).collect::<Vec<_>>().join(" ")
        );
        let ors = format!(
            "SELECT count(*) FROM (VALUES (1)) t(a) WHERE {}",
            (0..limits.max_operators / 2).map(|i| format!("a = {i}")).collect::<Vec<_>>().join(" OR ")
        );
        let case = format!(
            "SELECT CASE {} END AS c",
            (0..limits.max_operators / 2).map(|i| format!("WHEN {i} = 1 THEN {i}")).collect::<Vec<_>>().join(" ")
        );
        for (what, sql) in [
            ("unions", unions),
            ("sum", sum),
            ("nested", nested),
            ("subqueries", subqueries),
            ("in list", in_list),
            ("joins", joins),
            ("case", case),
            ("or chain", ors),
        ] {
            let t = Instant::now();
            engine.query(&caller(), &sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
            println!("{what} at the limit: {:?}", t.elapsed());
        }
        let over = vec!["SELECT 1"; 3_000].join(" UNION ALL ");
        let e = error_of(&engine, &caller(), &over).await;
        assert!(e.contains("3000 UNION/INTERSECT/EXCEPT arms; the limit is 256"), "{e}");
    });
}

#[tokio::test]
async fn functions_cannot_allocate_past_the_limits() {
    let sb = sandbox(SandboxConfig::default()).await;
    let memory = MemoryLimits::for_process(256 << 20);
    let engine = limited_engine(&sb, memory, &[("acme", None, None)]);
    let acme = of("acme");
    for (sql, named) in [
        ("SELECT repeat('x', 2000000000)", "repeat() would build 1.9 GiB"),
        ("SELECT length(lpad('x', 2000000000, 'y'))", "lpad() would build"),
        ("SELECT rpad('x', 2000000000)", "rpad() would build"),
        ("SELECT array_repeat('abc', 500000000)", "array_repeat() would build"),
        ("SELECT generate_series(1, 1000000000)", "generate_series() would build"),
        ("SELECT range(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 minute')", "range() would build"),
        ("SELECT array_resize([1], 1000000000)", "array_resize() would build"),
    ] {
        let e = error_of(&engine, &acme, sql).await;
        assert!(e.contains(named) && e.contains("more than one function call may build (8 MiB)"), "{sql}: {e}");
    }
    // Within the bound they work as usual.
    let (batches, _) =
        engine.query(&acme, "SELECT length(repeat('ab', 1000)) AS n, cardinality(generate_series(1, 10)) AS c").await.unwrap();
    assert!(pretty(&batches).contains("| 2000 | 10 |"), "{}", pretty(&batches));

    let e = error_of(&engine, &acme, "SELECT array_agg(v) FROM generate_series(1, 300000000) t(v)").await;
    assert!(e.contains("exceeded the memory limit of 64 MiB per query"), "{e}");
    // The failed query's operators let go of their memory as they are dropped.
    let released = Instant::now() + Duration::from_secs(5);
    while engine.memory_reserved() > 0 && Instant::now() < released {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(engine.memory_reserved(), 0, "a failed query kept memory");
}

#[tokio::test]
async fn sorts_spill_instead_of_failing() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = limited_engine(&sb, MemoryLimits::for_process(64 << 20), &[("acme", None, None)]);
    // 3 million rows (24 MB) sorted under a 16 MiB per-query limit.
    let (batches, _) = engine.query(&of("acme"), "SELECT v FROM generate_series(1, 3000000) t(v) ORDER BY v DESC").await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3_000_000);
    assert!(pretty(&batches[..1]).contains("| 3000000 |"));
}

#[tokio::test]
async fn a_statement_stops_at_its_timeout_and_a_session_may_only_lower_it() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = limited_engine(&sb, MemoryLimits::for_process(256 << 20), &[("acme", Some(2), None)]);
    let acme = of("acme");
    let bombs = [
        "SELECT count(*) FROM generate_series(1, 5000000000)",
        // Emits from memory without touching a scan: only the engine's yields let the deadline in.
        "SELECT count(*) FROM github.issues a, github.issues b, github.issues c, github.issues d",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r",
    ];
    for ((setting, timeout), bomb) in
        [("500 ms", Duration::from_millis(500)), ("1 hour", Duration::from_secs(2)), ("1 s", Duration::from_secs(1))]
            .into_iter()
            .zip(bombs)
    {
        let mut settings = QuerySettings::default();
        let sql = format!("SET omnisql.statement_timeout = '{setting}'; {bomb}");
        let t = Instant::now();
        let q = engine.plan(&acme, &sql, None, &mut settings).await.unwrap().unwrap();
        let stream = engine.execute(q).await.unwrap();
        let e = datafusion::physical_plan::common::collect(stream).await.unwrap_err().strip_backtrace();
        let took = t.elapsed();
        println!("{bomb} with SET {setting}: stopped after {took:?}");
        assert!(e.contains(&format!("ran past its timeout of {}", omnisql_engine::settings::show_duration(timeout))), "{e}");
        assert!(took >= timeout && took < timeout + Duration::from_millis(400), "stopped after {took:?}, timeout {timeout:?}");
    }
}

#[tokio::test]
async fn a_tenant_runs_at_most_its_slots_and_others_are_not_held_up() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine =
        limited_engine(&sb, MemoryLimits::for_process(256 << 20), &[("busy", Some(1), Some(1)), ("calm", None, Some(1))]);
    // The busy tenant's one slot is held by a query whose result nobody reads yet (more batches than the
    // operator pool buffers, so its operators cannot finish ahead of the reader).
    let mut settings = QuerySettings::default();
    let held =
        engine.plan(&of("busy"), "SELECT v FROM generate_series(1, 100000) t(v)", None, &mut settings).await.unwrap().unwrap();
    let held = engine.execute(held).await.unwrap();
    let t = Instant::now();
    let e = error_of(&engine, &of("busy"), "SELECT 2").await;
    assert!(e.contains("waited its whole timeout of 1 s for a query slot"), "{e}");
    assert!(t.elapsed() >= Duration::from_secs(1));
    let t = Instant::now();
    engine.query(&of("calm"), "SELECT 3").await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(500), "another tenant waited {:?}", t.elapsed());
    // A query that finds no slot waits for one, and says how long it waited.
    let engine2 = engine.clone();
    let waiting = tokio::spawn(async move {
        let mut settings = QuerySettings::default();
        let q = engine2.plan(&of("busy"), "SELECT 4", None, &mut settings).await.unwrap().unwrap();
        let context = q.context.clone();
        datafusion::physical_plan::common::collect(engine2.execute(q).await.unwrap()).await.unwrap();
        context.queued_ms()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(held);
    let queued = waiting.await.unwrap();
    assert!((200..1000).contains(&queued), "queued {queued} ms");
}

#[tokio::test]
async fn a_fan_out_past_the_request_budget_fails_before_its_first_request() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = limited_engine(&sb, MemoryLimits::for_process(256 << 20), &[("acme", None, None)]);
    let repos = (0..3000).map(|i| format!("'acme/nothing-{i}'")).collect::<Vec<_>>().join(", ");
    let channels = (0..2000).map(|i| format!("'C{i:08}'")).collect::<Vec<_>>().join(", ");
    for (sql, table, needed) in [
        (format!("SELECT * FROM github.issues WHERE repo_full_name IN ({repos})"), "github.issues", 3000),
        (format!("SELECT * FROM slack.messages WHERE channel_id IN ({channels})"), "slack.messages", 2000),
    ] {
        let t = Instant::now();
        let e = error_of(&engine, &of("acme"), &sql).await;
        assert!(
            e.contains(&format!("budget of 1000 upstream requests (its scan of {table} alone needs at least {needed}")),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(2), "{table} took {:?}", t.elapsed());
    }
    // A session may raise its budget; then the first requests go out.
    let mut settings = QuerySettings::default();
    let sql = format!(
        "SET omnisql.request_budget = 5000; SET omnisql.statement_timeout = '1s'; SELECT * FROM github.issues WHERE repo_full_name IN ({repos})"
    );
    let q = engine.plan(&of("acme"), &sql, None, &mut settings).await.unwrap().unwrap();
    let context = q.context.clone();
    let _ = datafusion::physical_plan::common::collect(engine.execute(q).await.unwrap()).await;
    assert!(context.api_requests() > 0);
    // 3,000 users by login are 30 GraphQL queries of 100: well within the default budget.
    let logins = (0..3000).map(|i| format!("'nobody-{i}'")).collect::<Vec<_>>().join(", ");
    let (batches, requests) =
        engine.query(&of("acme"), &format!("SELECT * FROM github.users WHERE login IN ({logins})")).await.unwrap();
    assert_eq!((batches.iter().map(|b| b.num_rows()).sum::<usize>(), requests), (0, 30));
}
