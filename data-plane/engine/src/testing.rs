//! Helpers for tests and the dev command: a configuration for one tenant over given connections.

use std::collections::BTreeMap;

use crate::config::{ApiKeyConfig, Config, ConnectionConfig, TenantConfig};

/// One tenant with one API key and the given `(name, connector, options)` connections.
pub fn single_tenant(
    tenant: &str,
    principal: &str,
    token: &str,
    connections: Vec<(String, String, BTreeMap<String, String>)>,
) -> TenantConfig {
    TenantConfig {
        id: tenant.into(),
        weight: None,
        statement_timeout_seconds: None,
        max_concurrent_queries: None,
        api_keys: vec![ApiKeyConfig::with_token(principal, token)],
        connections: connections
            .into_iter()
            .map(|(name, connector, options)| ConnectionConfig {
                name,
                connector,
                version: None,
                options,
                cache_ttl_seconds: None,
                requests_per_second: None,
                quota_share: None,
            })
            .collect(),
        principals: Vec::new(),
        policies: Vec::new(),
        opa: None,
        oidc: None,
    }
}

pub fn config(tenants: Vec<TenantConfig>) -> Config {
    Config { tenants }
}
