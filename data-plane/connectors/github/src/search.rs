//! `github.search_issues`: GitHub's issue search as a table. `WHERE query = 'repo:acme/api is:open bug'`
//! is required (it is the search). GitHub returns at most 1,000 results per search and may report
//! `incomplete_results` when a search times out; both fail the query instead of returning a silently
//! partial answer, unless a `LIMIT` asks for no more than GitHub can give.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use futures::stream::{BoxStream, StreamExt};
use omnisql_connector::filter::{self, pinned_texts};
use omnisql_connector::pagination::link;
use omnisql_connector::{ApiTable, Column, ConnectorError, Kind, QueryContext, Result, ScanRequest};
use serde_json::Value;

use crate::Api;

/// GitHub serves at most this many results of one search.
const MAX_RESULTS: u64 = 1000;

#[derive(Debug)]
pub struct SearchIssues {
    api: Arc<Api>,
    columns: Vec<Column>,
}

impl SearchIssues {
    pub fn new(api: Arc<Api>) -> Self {
        SearchIssues { api, columns: columns() }
    }
}

/// The table's columns (the catalog lists them without a connection).
pub fn columns() -> Vec<Column> {
    use Kind::*;
    let c = Column::new;
    vec![
        c("query", Str, "/_query"),
        c("repo_full_name", Str, "/_repo"),
        c("number", Int, "/number"),
        c("title", Str, "/title"),
        c("state", Str, "/state"),
        c("user_login", Str, "/user/login"),
        c("labels", StrList("name"), "/labels"),
        c("assignee_login", Str, "/assignee/login"),
        c("comments", Int, "/comments"),
        c("created_at", Timestamp, "/created_at"),
        c("updated_at", Timestamp, "/updated_at"),
        c("closed_at", Timestamp, "/closed_at"),
        c("is_pull_request", Present, "/pull_request"),
        c("score", Float, "/score"),
        c("html_url", Str, "/html_url"),
    ]
}

#[async_trait]
impl ApiTable for SearchIssues {
    fn name(&self) -> String {
        "github.search_issues".into()
    }
    fn columns(&self) -> &[Column] {
        &self.columns
    }
    fn required_filters(&self) -> &[&'static str] {
        &["query"]
    }
    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        match filter::pinned_values(f) {
            Some(("query", values)) if values.len() == 1 && filter::texts(&values).is_some() => {
                TableProviderFilterPushDown::Exact
            }
            _ => TableProviderFilterPushDown::Unsupported,
        }
    }
    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        let q = pinned_texts(&scan.filters, "query").and_then(|q| q.into_iter().next()).unwrap_or_default();
        let query =
            url::form_urlencoded::Serializer::new(String::new()).append_pair("q", &q).append_pair("per_page", "100").finish();
        vec![format!("GET /search/issues?{query} (all pages, at most 1,000 results)")]
    }
    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let api = self.api.clone();
        let search = pinned_texts(&scan.filters, "query").and_then(|q| q.into_iter().next()).unwrap_or_default();
        let limit = scan.limit.map(|l| l as u64);
        omnisql_connector::pagination::follow(move |next: Option<String>| {
            let (api, q, search) = (api.clone(), q.clone(), search.clone());
            async move {
                let (url, params) = match next {
                    Some(url) => (url, vec![]),
                    None => (format!("{}/search/issues", api.base), vec![("q".to_string(), search.clone()), ("per_page".to_string(), "100".to_string())]),
                };
                let resp = api.client.get(&q, &url, &params).await?;
                let connection = api.client.connection().to_string();
                let total = resp.body.get("total_count").and_then(Value::as_u64).unwrap_or(0);
                let wanted = limit.map_or(total, |l| l.min(total));
                if resp.body.get("incomplete_results").and_then(Value::as_bool) == Some(true) {
                    let message = format!("the search `{search}` timed out on GitHub's side and its results are incomplete; narrow it");
                    return Err(ConnectorError::Upstream { app: "GitHub", connection, status: 200, message });
                }
                if wanted > MAX_RESULTS {
                    let message =
                        format!("the search `{search}` matches {total} issues but GitHub returns at most 1,000; narrow it or add LIMIT 1000");
                    return Err(ConnectorError::Upstream { app: "GitHub", connection, status: 422, message });
                }
                let next = link(resp.header("link"), "next");
                let mut body = resp.body;
                let Some(Value::Array(mut items)) = body.get_mut("items").map(Value::take) else {
                    return Err(ConnectorError::UnexpectedShape { app: "GitHub", connection, field: "items".into() });
                };
                for item in &mut items {
                    let repo = item
                        .get("repository_url")
                        .and_then(Value::as_str)
                        .and_then(|u| u.split_once("/repos/"))
                        .map(|(_, r)| r.to_string());
                    if let Some(o) = item.as_object_mut() {
                        o.insert("_query".into(), Value::String(search.clone()));
                        o.insert("_repo".into(), repo.map(Value::String).unwrap_or(Value::Null));
                    }
                }
                Ok((items, next))
            }
        })
        .boxed()
    }
}
