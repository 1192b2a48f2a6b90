//! What row- and column-level policies cost a query: the same statements with and without a tenant
//! policy (a row filter, a mask and a hidden column), warm (decisions cached, API answers cached), in one
//! run; then the cost of deciding uncached, per (principal, table).
//!
//! ```sh
//! cargo run --release -p omnisql-engine --example policy_cost
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnisql_engine::config::{ApiKeyConfig, PolicyConfig, PrincipalConfig};
use omnisql_engine::policy::{Identity, Policies};
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

/// The example of docs/policies.md: a row filter on accounts, a hidden column, a masked email.
const POLICY: &str = include_str!("../../../docs/policies/sales-access.rego");

const QUERIES: &[&str] = &[
    "SELECT id, name FROM salesforce.account WHERE industry = 'Retail'",
    "SELECT c.email, a.name FROM salesforce.contact c JOIN salesforce.account a ON a.id = c.account_id",
    "SELECT repo_full_name, number FROM github.issues WHERE state = 'open' LIMIT 20",
];

fn engine(sb: &Sandbox, policy: bool) -> Arc<Engine> {
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut tenant = testing::single_tenant("acme", "sam", "sam-token-0123456789", connections);
    tenant.api_keys = vec![ApiKeyConfig::with_token("sam", "sam-token-0123456789")];
    tenant.principals = vec![PrincipalConfig { id: "sam".into(), groups: vec!["sales".into()], ..Default::default() }];
    if policy {
        tenant.policies = vec![PolicyConfig { name: "access".into(), version: 1, rego: POLICY.into() }];
    }
    Arc::new(Engine::new(&testing::config(vec![tenant]), EngineOptions::default()).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let caller = Caller::new("acme", "sam");
    let (open, governed) = (engine(&sb, false), engine(&sb, true));
    let runs = 300;
    println!(
        "{:<92} {:>9} {:>9} {:>9} {:>9}",
        "query (warm: decisions and API answers cached)", "open p50", "open p99", "pol. p50", "pol. p99"
    );
    let mut added_p50 = Vec::new();
    for sql in QUERIES {
        let mut results = Vec::new();
        for engine in [&open, &governed] {
            for _ in 0..5 {
                engine.query(&caller, sql).await.unwrap();
            }
            results.push(Vec::with_capacity(runs));
        }
        // Alternate the two so both see the same machine state.
        for _ in 0..runs {
            for (i, engine) in [&open, &governed].iter().enumerate() {
                let started = Instant::now();
                engine.query(&caller, sql).await.unwrap();
                results[i].push(started.elapsed());
            }
        }
        for r in &mut results {
            r.sort();
        }
        let (o50, o99, g50, g99) = (
            percentile(&results[0], 0.5),
            percentile(&results[0], 0.99),
            percentile(&results[1], 0.5),
            percentile(&results[1], 0.99),
        );
        added_p50.push(g50 - o50);
        println!("{sql:<92} {o50:>7.2}ms {o99:>7.2}ms {g50:>7.2}ms {g99:>7.2}ms");
    }
    println!("policy adds p50 per query: {}", added_p50.iter().map(|d| format!("{d:+.3} ms")).collect::<Vec<_>>().join(", "));

    // Deciding without the cache: one (principal, table) decision, as the first query after a change.
    let policies = Policies::compile(&[PolicyConfig { name: "access".into(), version: 1, rego: POLICY.into() }]);
    let columns: Vec<(String, String)> = (0..30).map(|i| (format!("column_{i}"), "Utf8".to_string())).collect();
    let mut times = Vec::new();
    for i in 0..200 {
        let who = Identity {
            tenant: "acme".into(),
            principal: PrincipalConfig { id: format!("p{i}"), groups: vec!["sales".into()], ..Default::default() },
        };
        let started = Instant::now();
        policies.decide(&who, "salesforce", "account", &columns).unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "uncached decision for a 30-column table (allow + rowFilters + 30 × FilterColumns and columnMask): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
