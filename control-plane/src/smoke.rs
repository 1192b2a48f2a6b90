//! Smoke tests a connector version passes before a connection moves to it: every table of that version
//! read against the sandbox's world. The control plane only asks for them ([`SmokeTests`]); whoever runs
//! it (the `omnisql` binary) supplies the runner, which starts a sandbox and an engine with that version.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What one version's smoke tests found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SmokeReport {
    pub connector: String,
    pub version: String,
    /// Every check passed (and there was at least one).
    pub passed: bool,
    pub checks: Vec<SmokeCheck>,
}

/// One table read through the version under test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SmokeCheck {
    pub table: String,
    pub ok: bool,
    pub rows: u64,
    pub api_requests: u64,
    /// Why it failed, or what it answered instead of rows.
    pub error: Option<String>,
}

impl SmokeReport {
    /// A report of checks; it passes when there are some and each did.
    pub fn of(connector: &str, version: &str, checks: Vec<SmokeCheck>) -> SmokeReport {
        let passed = !checks.is_empty() && checks.iter().all(|c| c.ok);
        SmokeReport { connector: connector.into(), version: version.into(), passed, checks }
    }

    /// A version that could not be tested at all.
    pub fn untestable(connector: &str, version: &str, why: String) -> SmokeReport {
        let check = SmokeCheck { table: "*".into(), ok: false, rows: 0, api_requests: 0, error: Some(why) };
        SmokeReport { connector: connector.into(), version: version.into(), passed: false, checks: vec![check] }
    }
}

/// Runs a connector version's smoke tests.
pub trait SmokeTests: Send + Sync + Debug {
    fn run<'a>(&'a self, connector: &'a str, version: &'a str) -> Pin<Box<dyn Future<Output = SmokeReport> + Send + 'a>>;
}
