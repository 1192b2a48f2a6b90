//! A connector that is nothing but a spec: GitHub's organisation repository list declared in TOML, read
//! through the SDK's generic dialect with `link`-header pages, against the sandbox — the same repositories
//! the hand-written GitHub connector lists, page by page.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use futures::TryStreamExt;
use omnisql_connector::spec::{ConnectorSpec, SpecDialect, SpecTable};
use omnisql_connector::{ApiClient, ApiTable, BearerToken, ConnectorContext, QueryContext, ScanRequest};
use omnisql_sandbox::SandboxConfig;
use serde_json::Value;

const SPEC: &str = r#"
name = "gh_lite"
version = "0.1.0"
app = "GitHub"

[[table]]
name = "repos"
path = "/orgs/acme/repos"
records = ""
pagination = { style = "link" }
page_size = { param = "per_page", max = 2 }
bucket = { name = "github:core", capacity = 5000, window_seconds = 3600 }
column = [
  { name = "full_name", type = "text", pointer = "/full_name" },
  { name = "private", type = "bool", pointer = "/private" },
  { name = "created_at", type = "timestamp", pointer = "/created_at" },
]
"#;

#[tokio::test]
async fn a_spec_alone_reads_every_page_of_a_link_paged_list() {
    let sb = sandbox(SandboxConfig::default()).await;
    let spec: &'static ConnectorSpec = Box::leak(Box::new(ConnectorSpec::parse(SPEC).unwrap()));
    let client = ApiClient::new(
        &ConnectorContext::standalone("gh_lite"),
        Arc::new(SpecDialect(spec)),
        Arc::new(BearerToken(sb.credentials.github_token.clone())),
        Default::default(),
    )
    .unwrap();
    let table = SpecTable::new(spec, "repos", &spec.app, Arc::new(client), &sb.github_url).unwrap();
    assert_eq!(table.describe(&ScanRequest::default()), ["GET /orgs/acme/repos?per_page=2 (all pages)"]);

    // The hand-written connector's answer, through the engine.
    let (expected, count, _) = run(&engine(&sb, true), "SELECT full_name FROM github.repos ORDER BY full_name").await;
    let http = reqwest::Client::new();
    http.post(format!("{}/_sandbox/stats/reset", sb.github_url)).send().await.unwrap();
    let pages: Vec<Vec<Value>> =
        table.fetch(ScanRequest::default(), Arc::new(QueryContext::default())).try_collect().await.unwrap();
    let mut names: Vec<String> = pages.iter().flatten().map(|r| r["full_name"].as_str().unwrap().to_string()).collect();
    names.sort();

    assert!(count > 2, "the sandbox organisation has more repositories than one page of two");
    assert_eq!(names.len(), count);
    for name in &names {
        assert!(expected.contains(name.as_str()), "{name} is not among {expected}");
    }
    let stats: Value = http.get(format!("{}/_sandbox/stats", sb.github_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["endpoints"]["GET /orgs/{org}/repos"].as_u64(), Some(count.div_ceil(2) as u64), "{stats}");
    assert_eq!(pages.len(), count.div_ceil(2), "one page per request, two rows each");
}

#[tokio::test]
async fn a_spec_only_connection_gets_the_apps_errors_from_its_statuses() {
    let sb = sandbox(SandboxConfig::default()).await;
    let spec: &'static ConnectorSpec = Box::leak(Box::new(ConnectorSpec::parse(SPEC).unwrap()));
    let client = ApiClient::new(
        &ConnectorContext::standalone("gh_lite"),
        Arc::new(SpecDialect(spec)),
        Arc::new(BearerToken("ghp_not-a-token".into())),
        Default::default(),
    )
    .unwrap();
    let table = SpecTable::new(spec, "repos", &spec.app, Arc::new(client), &sb.github_url).unwrap();
    let refused =
        table.fetch(ScanRequest::default(), Arc::new(QueryContext::default())).try_collect::<Vec<_>>().await.unwrap_err();
    assert!(matches!(refused, omnisql_connector::ConnectorError::Unauthorized { app: "GitHub", status: 401, .. }), "{refused}");
}
