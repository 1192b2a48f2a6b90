//! The connectors this build runs — one cargo feature each, all on by default — and what the control
//! plane's catalog publishes of them. The engine depends on the SDK only and is handed this list
//! (`EngineOptions::connectors`), so adding a connector touches this crate, not the engine.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use omnisql_connector::{ConnectorContext, ConnectorError, ConnectorFactory};

/// The factory of a connector that is its spec file alone, parsed once.
#[allow(unused_macros)]
macro_rules! spec_file {
    ($file:literal) => {{
        use std::sync::OnceLock;
        static SPEC: OnceLock<Result<omnisql_connector::spec::ConnectorSpec, String>> = OnceLock::new();
        static PARAMETERS: OnceLock<Vec<omnisql_connector::ParameterSpec>> = OnceLock::new();
        Arc::new(omnisql_connector::spec_connector::SpecFactory::built_in(include_str!($file), &SPEC, &PARAMETERS))
            as Arc<dyn ConnectorFactory>
    }};
}

/// Every connector of this build; where a connector runs in several versions, its default (what a
/// connection that pins none gets) comes first.
pub fn all() -> Vec<Arc<dyn ConnectorFactory>> {
    vec![
        #[cfg(feature = "github")]
        Arc::new(omnisql_connector_github::GithubFactory),
        #[cfg(feature = "salesforce")]
        Arc::new(omnisql_connector_salesforce::SalesforceFactory),
        #[cfg(feature = "slack")]
        Arc::new(omnisql_connector_slack::SlackFactory::V1),
        #[cfg(feature = "slack")]
        Arc::new(omnisql_connector_slack::SlackFactory::V2),
        #[cfg(feature = "jira")]
        spec_file!("../jira/jira.toml"),
        #[cfg(feature = "stripe")]
        spec_file!("../stripe/stripe.toml"),
        #[cfg(feature = "hubspot")]
        spec_file!("../hubspot/hubspot.toml"),
    ]
}

/// A connector as the control plane's catalog lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectorDescription {
    pub name: String,
    pub version: String,
    /// (name, description, required, secret)
    pub parameters: Vec<(String, String, bool, bool)>,
    /// Tables and their (column, Arrow type) pairs; empty when the connector discovers its tables.
    pub tables: Vec<(String, Vec<(String, String)>)>,
}

/// Describes every connector of this build. Tables come from a connector's spec where it has one; a
/// connector whose tables are fixed in code is built offline with placeholder parameters (nothing is
/// called), and one that cannot be is an error, never an empty schema.
pub async fn describe() -> Result<Vec<ConnectorDescription>, ConnectorError> {
    let mut out = Vec::new();
    for f in all() {
        let parameters = f
            .parameters()
            .iter()
            .map(|p| (p.name.to_string(), p.description.to_string(), p.required && p.default.is_none(), p.secret))
            .collect();
        let mut tables = Vec::new();
        if let Some(spec) = f.spec()? {
            for (name, columns) in spec.schemas().into_iter().chain(f.code_tables()) {
                let schema = omnisql_connector::json::schema_of(&columns);
                tables.push((name, schema.fields().iter().map(|c| (c.name().clone(), c.data_type().to_string())).collect()));
            }
        } else if !f.discovers_tables() {
            let placeholders =
                f.parameters().iter().map(|p| (p.name.to_string(), p.default.unwrap_or("placeholder").to_string())).collect();
            let connector = f.build(&placeholders, ConnectorContext::standalone("catalog")).await?;
            for name in connector.table_names() {
                let table: Arc<dyn TableProvider> = connector.table(&name).await?.ok_or_else(|| ConnectorError::InvalidSpec {
                    connector: f.name().into(),
                    message: format!("it lists table `{name}` but does not build it"),
                })?;
                tables.push((
                    name,
                    table.schema().fields().iter().map(|c| (c.name().clone(), c.data_type().to_string())).collect(),
                ));
            }
        }
        out.push(ConnectorDescription { name: f.name().into(), version: f.version().into(), parameters, tables });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_catalog_lists_fixed_tables_and_leaves_discovered_ones_to_connections() {
        let described = describe().await.unwrap();
        let names: Vec<_> = described.iter().map(|d| format!("{} {}", d.name, d.version)).collect();
        assert_eq!(
            names,
            ["github 1.0.0", "salesforce 1.0.0", "slack 1.0.0", "slack 2.0.0", "jira 1.0.0", "stripe 1.0.0", "hubspot 1.0.0"]
        );
        let jira = described.iter().find(|d| d.name == "jira").unwrap();
        assert_eq!(jira.tables.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["projects", "issues", "users"]);
        assert!(jira.parameters.iter().any(|(p, _, required, _)| p == "base_url" && *required), "a Jira site is the user's own");
        let stripe = described.iter().find(|d| d.name == "stripe").unwrap();
        assert!(stripe.parameters.iter().any(|(p, _, required, secret)| p == "token" && *required && *secret));
        let slack = described.iter().find(|d| d.name == "slack").unwrap();
        let messages = &slack.tables.iter().find(|(t, _)| t == "messages").unwrap().1;
        assert!(messages.iter().any(|(c, t)| c == "posted_at" && t.starts_with("Timestamp")), "{messages:?}");
        assert!(described.iter().find(|d| d.name == "github").unwrap().tables.iter().any(|(t, _)| t == "issues"));
        assert!(described.iter().find(|d| d.name == "salesforce").unwrap().tables.is_empty(), "discovered per connection");
    }
}
