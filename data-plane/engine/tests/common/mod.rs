#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
//! Shared setup: a sandbox and engines over it.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub async fn sandbox(config: SandboxConfig) -> Sandbox {
    Sandbox::start(config).await.expect("sandbox starts")
}

pub fn engine(sandbox: &Sandbox, pushdown: bool) -> Arc<Engine> {
    let connections =
        sandbox.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("acme", "tester", TOKEN, connections)]);
    let options = if pushdown { EngineOptions::default() } else { EngineOptions::without_pushdown() };
    // No response cache: these tests count what each query itself asks of the APIs.
    Arc::new(
        Engine::new(&config, EngineOptions { cache_bytes: None, connectors: omnisql_connectors::all(), ..options })
            .expect("engine builds"),
    )
}

pub fn caller() -> Caller {
    Caller::new("acme", "tester")
}

pub async fn run(engine: &Engine, sql: &str) -> (String, usize, u64) {
    let (batches, requests) = engine.query(&caller(), sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    (pretty(&batches), batches.iter().map(RecordBatch::num_rows).sum(), requests)
}

pub fn pretty(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).map(|d| d.to_string()).unwrap_or_default()
}

/// Tenant `acme` (principals `tester` and `analyst`) and tenant `other` over the sandbox's apps, with each of
/// acme's connections caching answers for `ttl` seconds (the default where `None`).
pub fn tenant_config(sb: &Sandbox, ttl: Option<u64>) -> omnisql_engine::config::Config {
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut acme = testing::single_tenant("acme", "tester", TOKEN, connections.clone());
    acme.api_keys.push(omnisql_engine::config::ApiKeyConfig::with_token("analyst", "analyst-token-0123456789"));
    for c in &mut acme.connections {
        c.cache_ttl_seconds = ttl;
    }
    testing::config(vec![acme, testing::single_tenant("other", "someone", "other-token-0123456789", connections)])
}
