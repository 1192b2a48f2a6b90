//! A connector that is its spec file alone: [`SpecFactory`] takes a built-in spec, asks for the API's
//! base URL (the spec's public URL by default) and a bearer token, and serves every table of the spec
//! through the SDK's generic [`SpecDialect`]. [`SpecConnector`] is also what a connector with its own
//! dialect (Slack's `ok: false` errors) serves its spec's tables with.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use reqwest::header::HeaderMap;

use crate::error::{ConnectorError, Result};
use crate::factory::{Connector, ConnectorContext, ConnectorFactory, ParameterSpec, Parameters, ScanOptions};
use crate::http::{ApiClient, BearerToken, Dialect};
use crate::spec::{ConnectorSpec, SpecDialect, SpecTable};
use crate::table::ApiTableProvider;

/// A connection's tables, each served by its spec through the connection's client.
#[derive(Debug)]
pub struct SpecConnector {
    spec: &'static ConnectorSpec,
    client: Arc<ApiClient>,
    base: String,
    scan: ScanOptions,
}

impl SpecConnector {
    pub fn new(spec: &'static ConnectorSpec, client: Arc<ApiClient>, base: &str, scan: ScanOptions) -> Self {
        SpecConnector { spec, client, base: base.to_string(), scan }
    }
}

#[async_trait]
impl Connector for SpecConnector {
    fn table_names(&self) -> Vec<String> {
        self.spec.tables.iter().map(|t| t.name.clone()).collect()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(SpecTable::new(self.spec, name, &self.spec.app, self.client.clone(), &self.base)
            .map(|t| Arc::new(ApiTableProvider::new(Arc::new(t), self.scan)) as Arc<dyn TableProvider>))
    }
}

/// The connection's `base_url`, checked to be a URL.
pub fn base_url(connector: &str, params: &Parameters) -> Result<String> {
    let base = params.require(connector, "base_url")?.trim_end_matches('/').to_string();
    url::Url::parse(&base).map_err(|e| ConnectorError::InvalidParameter {
        connector: connector.into(),
        parameter: "base_url".into(),
        reason: e.to_string(),
    })?;
    Ok(base)
}

/// A built-in spec once parsed, or why it did not parse.
pub type BuiltInSpec = std::result::Result<&'static ConnectorSpec, &'static str>;

/// A connector declared by its spec file alone.
#[derive(Debug, Clone, Copy)]
pub struct SpecFactory {
    spec: BuiltInSpec,
    parameters: &'static [ParameterSpec],
}

impl SpecFactory {
    /// The factory of a built-in spec file; `cells` are statics of the caller (one per file), so the
    /// file is parsed and its parameters are built once however often the registry is listed.
    pub fn built_in(
        text: &'static str,
        spec_cell: &'static OnceLock<std::result::Result<ConnectorSpec, String>>,
        parameters_cell: &'static OnceLock<Vec<ParameterSpec>>,
    ) -> SpecFactory {
        let spec = spec_cell.get_or_init(|| ConnectorSpec::parse(text)).as_ref().map_err(String::as_str);
        let parameters = parameters_cell.get_or_init(|| match spec {
            Ok(spec) => vec![
                match &spec.base_url {
                    Some(public) => ParameterSpec::optional("base_url", "API base URL", Some(public.as_str())),
                    None => ParameterSpec::required("base_url", "API base URL (the account's own site)"),
                },
                ParameterSpec::secret("token", "access token, sent as a bearer token"),
            ],
            Err(_) => Vec::new(),
        });
        SpecFactory { spec, parameters }
    }

    fn tables(&self) -> Result<&'static ConnectorSpec> {
        self.spec.map_err(|message| ConnectorError::InvalidSpec { connector: "spec".into(), message: message.into() })
    }
}

#[async_trait]
impl ConnectorFactory for SpecFactory {
    fn name(&self) -> &'static str {
        self.spec.map_or("invalid-spec", |s| s.name.as_str())
    }
    fn version(&self) -> &'static str {
        self.spec.map_or("0.0.0", |s| s.version.as_str())
    }
    fn parameters(&self) -> &'static [ParameterSpec] {
        self.parameters
    }
    fn spec(&self) -> Result<Option<&'static ConnectorSpec>> {
        self.tables().map(Some)
    }
    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let spec = self.tables()?;
        let base = base_url(self.name(), &params)?;
        let token = params.require(self.name(), "token")?.to_string();
        let dialect: Arc<dyn Dialect> = Arc::new(SpecDialect(spec));
        let client = ApiClient::new(&ctx, dialect, Arc::new(BearerToken(token)), HeaderMap::new())?;
        Ok(Arc::new(SpecConnector::new(spec, Arc::new(client), &base, ctx.scan)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const SPEC: &str = r#"
name = "notes"
version = "1.2.0"
app = "Notes"
base_url = "https://api.notes.example"

[[table]]
name = "notes"
path = "/v1/notes"
records = "/data"
column = [{ name = "id", type = "text", pointer = "/id" }]
"#;

    #[tokio::test]
    async fn a_spec_factory_takes_its_name_version_and_default_url_from_the_file() {
        static SPEC_CELL: OnceLock<std::result::Result<ConnectorSpec, String>> = OnceLock::new();
        static PARAMS: OnceLock<Vec<ParameterSpec>> = OnceLock::new();
        let f = SpecFactory::built_in(SPEC, &SPEC_CELL, &PARAMS);
        assert_eq!((f.name(), f.version()), ("notes", "1.2.0"));
        assert_eq!(f.parameters()[0].default, Some("https://api.notes.example"));
        let given = [("token".to_string(), "t".to_string())].into_iter().collect();
        let connector = f.build(&given, ConnectorContext::standalone("n")).await.unwrap();
        assert_eq!(connector.table_names(), ["notes"]);
        let bad = [("token".to_string(), "t".to_string()), ("base_url".to_string(), "not a url".to_string())];
        let e = f.build(&bad.into_iter().collect(), ConnectorContext::standalone("n")).await.unwrap_err();
        assert!(e.to_string().contains("base_url"), "{e}");
    }

    #[test]
    fn a_broken_spec_is_an_error_on_use_not_a_panic() {
        static SPEC_CELL: OnceLock<std::result::Result<ConnectorSpec, String>> = OnceLock::new();
        static PARAMS: OnceLock<Vec<ParameterSpec>> = OnceLock::new();
        let f = SpecFactory::built_in("name = 1", &SPEC_CELL, &PARAMS);
        assert_eq!(f.name(), "invalid-spec");
        assert!(f.spec().is_err());
    }
}
