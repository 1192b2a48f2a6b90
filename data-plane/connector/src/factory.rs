//! Factories declare a connector's name, version and parameters, validate them, and build connectors.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;

use crate::error::{ConnectorError, Result};
use crate::http::HttpSettings;

/// One parameter a connector accepts.
#[derive(Debug, Clone, Copy)]
pub struct ParameterSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub required: bool,
    /// Secret parameters never appear in logs, errors, `EXPLAIN` or audit.
    pub secret: bool,
    pub default: Option<&'static str>,
}

impl ParameterSpec {
    pub const fn required(name: &'static str, description: &'static str) -> Self {
        ParameterSpec { name, description, required: true, secret: false, default: None }
    }
    pub const fn optional(name: &'static str, description: &'static str, default: Option<&'static str>) -> Self {
        ParameterSpec { name, description, required: false, secret: false, default }
    }
    pub const fn secret(name: &'static str, description: &'static str) -> Self {
        ParameterSpec { name, description, required: true, secret: true, default: None }
    }
}

/// Parameter values checked against a factory's specs: every required one present, no unknown ones,
/// defaults filled in.
#[derive(Clone, Default)]
pub struct Parameters {
    values: BTreeMap<String, String>,
    secret: Vec<&'static str>,
}

impl Debug for Parameters {
    /// Secret values are redacted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.values {
            if self.secret.contains(&k.as_str()) {
                m.entry(k, &"<redacted>");
            } else {
                m.entry(k, v);
            }
        }
        m.finish()
    }
}

impl Parameters {
    pub fn validate(connector: &str, specs: &[ParameterSpec], given: &BTreeMap<String, String>) -> Result<Self> {
        for k in given.keys() {
            if !specs.iter().any(|s| s.name == k) {
                return Err(ConnectorError::UnknownParameter {
                    connector: connector.into(),
                    parameter: k.clone(),
                    accepted: specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", "),
                });
            }
        }
        let mut values = BTreeMap::new();
        for s in specs {
            match given.get(s.name).filter(|v| !v.trim().is_empty()).cloned().or(s.default.map(str::to_string)) {
                Some(v) => {
                    values.insert(s.name.to_string(), v);
                }
                None if s.required => {
                    return Err(ConnectorError::MissingParameter { connector: connector.into(), parameter: s.name.into() });
                }
                None => {}
            }
        }
        Ok(Parameters { values, secret: specs.iter().filter(|s| s.secret).map(|s| s.name).collect() })
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A parameter the specs mark required (so validation already proved it present).
    pub fn require(&self, connector: &str, name: &str) -> Result<&str> {
        self.get(name).ok_or_else(|| ConnectorError::MissingParameter { connector: connector.into(), parameter: name.into() })
    }

    /// A comma-separated list parameter.
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name).map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    }
}

/// What a connector gets from the engine: the connection's name (for errors), HTTP behaviour, and how
/// its scans run.
#[derive(Debug, Clone)]
pub struct ConnectorContext {
    pub tenant: String,
    pub connection: String,
    /// Fingerprint of the connection's credentials (cache entries never cross credentials).
    pub credential: u64,
    pub http: HttpSettings,
    pub scan: ScanOptions,
    /// The shared response cache, if caching is on.
    pub cache: Option<std::sync::Arc<crate::cache::ResponseCache>>,
    /// How long this connection's answers count as fresh unless a query says otherwise.
    pub cache_ttl: std::time::Duration,
    /// The shared rate limiter, if limits are enforced.
    pub governor: Option<std::sync::Arc<crate::governor::Governor>>,
    /// The tenant's weight in fair scheduling.
    pub weight: f64,
    /// The connection's own limit on top of the API's, if configured.
    pub requests_per_second: Option<f64>,
    /// The largest share (0..1) of the API's quota this tenant may use, if limited.
    pub quota_share: Option<f64>,
}

impl ConnectorContext {
    /// A context for tests and tools: no cache, default HTTP and scan behaviour.
    pub fn standalone(connection: &str) -> Self {
        ConnectorContext {
            tenant: String::new(),
            connection: connection.into(),
            credential: 0,
            http: HttpSettings::default(),
            scan: ScanOptions::default(),
            cache: None,
            cache_ttl: std::time::Duration::ZERO,
            governor: None,
            weight: 1.0,
            requests_per_second: None,
            quota_share: None,
        }
    }
}

/// How scans run. Both are on in production; off only for the correctness gate and the naive baseline.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    /// Send filters, projections, orders and limits to the API.
    pub pushdown: bool,
    /// Fetch pages from the moment the plan starts, so every source of a query works at once.
    pub prefetch: bool,
    /// On a join's probe side, wait for the build side's keys and send them to the API (with pushdown).
    pub join_keys: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { pushdown: true, prefetch: true, join_keys: true }
    }
}

/// A connector instance for one connection: hands out DataFusion tables.
#[async_trait]
pub trait Connector: Send + Sync + Debug {
    /// Names of the tables, as SQL sees them.
    fn table_names(&self) -> Vec<String>;
    /// The table, or `None` when there is no such table.
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>>;
}

/// Declares a connector and builds instances of it.
#[async_trait]
pub trait ConnectorFactory: Send + Sync + Debug {
    fn name(&self) -> &'static str;
    fn version(&self) -> &'static str;
    fn parameters(&self) -> &'static [ParameterSpec];
    /// Whether the tables come from the API at connect time (e.g. one per Salesforce object), so the
    /// catalog cannot list them ahead of a connection.
    fn discovers_tables(&self) -> bool {
        false
    }
    /// The connector's tables as a spec, when they are declared as one (the catalog reads their schemas
    /// from it without building a connector). An error is a built-in spec that does not parse.
    fn spec(&self) -> Result<Option<&'static crate::spec::ConnectorSpec>> {
        Ok(None)
    }
    /// Tables a connector with a spec serves from code besides (GitHub's `users`), with their columns,
    /// so the catalog lists them too.
    fn code_tables(&self) -> Vec<(String, Vec<crate::json::Column>)> {
        Vec::new()
    }
    /// Builds a connector from validated parameters. May call the API (e.g. to discover tables).
    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>>;

    /// Validates raw parameters, then creates.
    async fn build(&self, given: &BTreeMap<String, String>, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let params = Parameters::validate(self.name(), self.parameters(), given)?;
        self.create(params, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParameterSpec] = &[
        ParameterSpec::required("base_url", "API base URL"),
        ParameterSpec::secret("token", "access token"),
        ParameterSpec::optional("orgs", "organisations", Some("acme")),
    ];

    fn given(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn validation_fills_defaults_and_redacts_secrets() {
        let p = Parameters::validate("github", SPECS, &given(&[("base_url", "http://x"), ("token", "s3cret")])).unwrap();
        assert_eq!(p.get("orgs"), Some("acme"));
        let shown = format!("{p:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn validation_names_missing_and_unknown_parameters() {
        let e = Parameters::validate("github", SPECS, &given(&[("base_url", "http://x")])).unwrap_err();
        assert_eq!(e.to_string(), "connector `github` needs parameter `token`");
        let e = Parameters::validate("github", SPECS, &given(&[("base_url", "x"), ("token", "t"), ("tokn", "t")])).unwrap_err();
        assert!(e.to_string().contains("does not take parameter `tokn`"), "{e}");
    }
}
