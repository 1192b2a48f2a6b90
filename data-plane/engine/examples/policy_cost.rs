//! What row- and column-level policies cost a query: the same statements with and without a tenant
//! policy (a row filter, a mask and a hidden column), warm (decisions cached, API answers cached), in one
//! run, evaluated in-process and, when `scripts/tools` built OPA, by a real OPA server (decisions cached,
//! and asked on every query); then the cost of deciding uncached in-process, per (principal, table).
//!
//! ```sh
//! cargo run --release -p omnisql-engine --example policy_cost
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use omnisql_engine::config::{ApiKeyConfig, OpaConfig, PolicyConfig, PrincipalConfig};
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

/// How a tenant's queries are governed in one column of the table.
enum Mode {
    Open,
    Rego,
    /// The tenant's OPA server, reusing decisions for this many seconds.
    Opa(String, u64),
}

fn engine(sb: &Sandbox, mode: &Mode) -> Arc<Engine> {
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut tenant = testing::single_tenant("acme", "sam", "sam-token-0123456789", connections);
    tenant.api_keys = vec![ApiKeyConfig::with_token("sam", "sam-token-0123456789")];
    tenant.principals = vec![PrincipalConfig { id: "sam".into(), groups: vec!["sales".into()], ..Default::default() }];
    let mut options = EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() };
    match mode {
        Mode::Open => {}
        Mode::Rego => tenant.policies = vec![PolicyConfig { name: "access".into(), version: 1, rego: POLICY.into() }],
        Mode::Opa(url, cache_seconds) => {
            tenant.opa = Some(OpaConfig { cache_seconds: *cache_seconds, ..OpaConfig::new(url) });
            options.opa_allowed_urls = vec![url.clone()];
        }
    }
    Arc::new(Engine::new(&testing::config(vec![tenant]), options).unwrap())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// A real OPA server with the policy and docs/policies/opa-batch.rego, if `scripts/tools` built one.
fn start_opa() -> Option<(std::process::Child, String)> {
    let tools = std::env::var("OMNISQL_TOOLS_DIR").unwrap_or_else(|_| "/var/tmp/omnisql-tools".into());
    let binary = std::path::Path::new(&tools).join("bin/opa");
    if !binary.exists() {
        println!("(no OPA at {}: run scripts/tools for the external-OPA columns)", binary.display());
        return None;
    }
    let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policies");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(binary)
        .args(["run", "--server", "--addr", &format!("127.0.0.1:{port}")])
        .arg(format!("{docs}/sales-access.rego"))
        .arg(format!("{docs}/opa-batch.rego"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((child, format!("http://127.0.0.1:{port}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("OPA did not start");
}

#[tokio::main]
async fn main() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let caller = Caller::new("acme", "sam");
    let opa = start_opa();
    let mut modes = vec![("open", Mode::Open), ("rego", Mode::Rego)];
    if let Some((_, url)) = &opa {
        modes.push(("opa cached", Mode::Opa(url.clone(), 60)));
        modes.push(("opa 1 s", Mode::Opa(url.clone(), 1)));
    }
    let engines: Vec<Arc<Engine>> = modes.iter().map(|(_, m)| engine(&sb, m)).collect();
    let runs = 300;
    print!("{:<92}", "query (warm: API answers cached; decisions cached, for 1 s in the last column)");
    for (name, _) in &modes {
        print!(" {:>14} {:>14}", format!("{name} p50"), format!("{name} p99"));
    }
    println!();
    let mut added_p50 = Vec::new();
    for sql in QUERIES {
        for engine in &engines {
            for _ in 0..5 {
                engine.query(&caller, sql).await.unwrap();
            }
        }
        let mut results = vec![Vec::with_capacity(runs); engines.len()];
        // Alternate the engines so all see the same machine state.
        for _ in 0..runs {
            for (i, engine) in engines.iter().enumerate() {
                let started = Instant::now();
                engine.query(&caller, sql).await.unwrap();
                results[i].push(started.elapsed());
            }
        }
        print!("{sql:<92}");
        let mut p50s = Vec::new();
        for r in &mut results {
            r.sort();
            p50s.push(percentile(r, 0.5));
            print!(" {:>12.2}ms {:>12.2}ms", percentile(r, 0.5), percentile(r, 0.99));
        }
        println!();
        added_p50.push(p50s.iter().skip(1).map(|p| p - p50s[0]).collect::<Vec<_>>());
    }
    for (i, (name, _)) in modes.iter().enumerate().skip(1) {
        let added: Vec<String> = added_p50.iter().map(|a| format!("{:+.3} ms", a[i - 1])).collect();
        println!("{name} adds p50 per query: {}", added.join(", "));
    }
    if let Some((mut child, _)) = opa {
        let _ = child.kill();
        let _ = child.wait();
    }

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
