//! A tenant's catalog: one schema per connection, built from the connection's connector on first use.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use omnisql_connector::{Connector, ConnectorContext, ConnectorFactory};
use tokio::sync::OnceCell;

use crate::config::ConnectionConfig;

/// A connection's schema. The connector is created lazily (creating it may call the API, e.g. to list
/// Salesforce objects) and again on the next query if creating it failed.
#[derive(Debug)]
pub struct ConnectionSchema {
    config: ConnectionConfig,
    factory: Arc<dyn ConnectorFactory>,
    context: ConnectorContext,
    connector: OnceCell<Arc<dyn Connector>>,
}

impl ConnectionSchema {
    pub fn new(config: ConnectionConfig, factory: Arc<dyn ConnectorFactory>, context: ConnectorContext) -> Self {
        ConnectionSchema { config, factory, context, connector: OnceCell::new() }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The fingerprint of this connection's credentials (rate-limit buckets are keyed by it).
    pub fn credential(&self) -> u64 {
        self.context.credential
    }

    pub fn connector_name(&self) -> &str {
        self.factory.name()
    }

    pub async fn connector(&self) -> Result<&Arc<dyn Connector>, omnisql_connector::ConnectorError> {
        self.connector.get_or_try_init(|| self.factory.build(&self.config.options, self.context.clone())).await
    }

    /// Table names, creating the connector if needed.
    pub async fn tables(&self) -> Result<Vec<String>, omnisql_connector::ConnectorError> {
        Ok(self.connector().await?.table_names())
    }
}

#[async_trait]
impl SchemaProvider for ConnectionSchema {
    fn table_names(&self) -> Vec<String> {
        self.connector.get().map(|c| c.table_names()).unwrap_or_default()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let connector = self.connector().await?;
        Ok(connector.table(name).await?)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|t| t == name)
    }
}
