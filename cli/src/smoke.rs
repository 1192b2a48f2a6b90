//! The sandbox smoke tests a connector version passes before a connection is upgraded to it: a fresh
//! sandbox world, an engine that runs only that version, and every table of the version read through it
//! (`SELECT * … LIMIT 3`). A table passes when it answers with rows, or says which filter it needs.

use std::sync::Arc;

use omnisql_control_plane::smoke::{SmokeCheck, SmokeReport, SmokeTests};
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Quotas, Sandbox, SandboxConfig};

/// Runs smoke tests against a sandbox started with `config` for each run.
#[derive(Debug, Clone)]
pub struct SandboxSmokeTests {
    config: SandboxConfig,
}

impl SandboxSmokeTests {
    /// The sandbox's default world, with allowances no smoke test meets.
    pub fn new() -> Self {
        SandboxSmokeTests { config: SandboxConfig { quotas: Quotas::generous(), ..SandboxConfig::default() } }
    }

    /// Against a sandbox started with `config` (e.g. with faults injected).
    pub fn with_config(config: SandboxConfig) -> Self {
        SandboxSmokeTests { config }
    }

    async fn check(&self, connector: &str, version: &str) -> SmokeReport {
        let Some(factory) = omnisql_connectors::all().into_iter().find(|f| f.name() == connector && f.version() == version)
        else {
            return SmokeReport::untestable(connector, version, format!("this build does not run {connector} {version}"));
        };
        let sandbox = match Sandbox::start(self.config.clone()).await {
            Ok(s) => s,
            Err(e) => return SmokeReport::untestable(connector, version, format!("the sandbox did not start: {e}")),
        };
        let Some(connection) = sandbox.connections().into_iter().find(|c| c.connector == connector) else {
            return SmokeReport::untestable(connector, version, format!("the sandbox has no {connector} app to test against"));
        };
        let tables: Vec<String> = match factory.spec() {
            Ok(Some(spec)) => spec.tables.iter().map(|t| t.name.clone()).collect(),
            Ok(None) => {
                let ctx = omnisql_connector::ConnectorContext::standalone("smoke");
                match factory.build(&connection.options, ctx).await {
                    Ok(c) => c.table_names(),
                    Err(e) => return SmokeReport::untestable(connector, version, e.to_string()),
                }
            }
            Err(e) => return SmokeReport::untestable(connector, version, e.to_string()),
        };
        let mut tenant =
            testing::single_tenant("smoke", "smoke", TOKEN, vec![(connection.name.into(), connector.into(), connection.options)]);
        tenant.connections[0].version = Some(version.into());
        let options = EngineOptions { cache_bytes: None, connectors: omnisql_connectors::all(), ..EngineOptions::default() };
        let engine: Arc<Engine> = match Engine::new(&testing::config(vec![tenant]), options) {
            Ok(e) => Arc::new(e),
            Err(e) => return SmokeReport::untestable(connector, version, e.to_string()),
        };
        let caller = Caller::new("smoke", "smoke");
        let mut checks = Vec::new();
        for table in tables {
            let sql = format!("SELECT * FROM \"{}\".\"{table}\" LIMIT 3", connection.name);
            let check = match engine.query(&caller, &sql).await {
                Ok((batches, requests)) => {
                    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
                    let error = (rows == 0).then(|| "answered no rows from the sandbox world".to_string());
                    SmokeCheck { table, ok: rows > 0, rows, api_requests: requests, error }
                }
                // A table that needs a filter said so: that is its contract, not a failure.
                Err(e) if e.to_string().contains("needs a filter on") => {
                    SmokeCheck { table, ok: true, rows: 0, api_requests: 0, error: Some(e.to_string()) }
                }
                Err(e) => SmokeCheck { table, ok: false, rows: 0, api_requests: 0, error: Some(e.to_string()) },
            };
            checks.push(check);
        }
        SmokeReport::of(connector, version, checks)
    }
}

impl Default for SandboxSmokeTests {
    fn default() -> Self {
        Self::new()
    }
}

const TOKEN: &str = "smoke-test-token-0123456789";

impl SmokeTests for SandboxSmokeTests {
    fn run<'a>(
        &'a self,
        connector: &'a str,
        version: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = SmokeReport> + Send + 'a>> {
        Box::pin(self.check(connector, version))
    }
}
