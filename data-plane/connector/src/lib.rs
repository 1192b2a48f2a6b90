//! The OmniSQL connector SDK: how a SaaS API becomes SQL tables.
//!
//! A [`ConnectorFactory`] declares a connector's name, version and parameters (which are secret), and
//! validates them before building a [`Connector`], which hands out DataFusion tables. Most tables are an
//! [`ApiTable`]: columns as JSON pointers ([`json`]), a pushdown decision per filter ([`filter`] reads the
//! shapes APIs accept), the requests a scan makes (shown by `EXPLAIN`), and a stream of pages
//! ([`pagination`]) fetched through the governed [`http::ApiClient`] (retries, `Retry-After`, rate-limit
//! resets, deadline, concurrency bound).
//!
//! Data flows one way: SQL → DataFusion → [`ApiTableProvider`] → [`ApiTable::fetch`] → `ApiClient` → API,
//! and JSON pages back → Arrow batches.

pub mod cache;
pub mod draft;
pub mod error;
pub mod factory;
pub mod filter;
pub mod flights;
pub mod governor;
pub mod http;
pub mod join_keys;
pub mod json;
pub mod lru;
pub mod pagination;
pub mod prune;
pub mod shared_limit;
pub mod spec;
pub mod spec_connector;
pub mod spec_table;
pub mod table;

pub use cache::{CacheStats, ResponseCache};
pub use error::{ConnectorError, Result};
pub use factory::{Connector, ConnectorContext, ConnectorFactory, ParameterSpec, Parameters, ScanOptions};
pub use http::{ApiClient, ApiResponse, Auth, BearerToken, Dialect, Freshness, HttpSettings, QueryContext, Verdict};
pub use json::{Column, Kind};
pub use table::{ApiScanExec, ApiTable, ApiTableProvider, ScanRequest, SortKey};

/// `AnnualRevenue` → `annual_revenue`, `Foo__c` → `foo__c`, `IsWon` → `is_won`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(char::is_uppercase) && next.is_some_and(|n| n.is_lowercase()));
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn snake_case_follows_the_documented_rule() {
        for (api, sql) in [
            ("AnnualRevenue", "annual_revenue"),
            ("Foo__c", "foo__c"),
            ("Customer_Tier__c", "customer_tier__c"),
            ("IsWon", "is_won"),
            ("Id", "id"),
            ("AccountId", "account_id"),
            ("NumberOfEmployees", "number_of_employees"),
            ("SLAExpiration__c", "sla_expiration__c"),
        ] {
            assert_eq!(super::snake_case(api), sql);
        }
    }
}
