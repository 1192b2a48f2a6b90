//! GitHub REST as the `github` schema: `repos`, `issues`, `pulls` and `commits` are declared in
//! `github.toml` (requests, pages, columns, pushdown — the file is the table of what is pushed down and
//! how exactly); `users` (GitHub's GraphQL, 100 logins per query) and `search_issues` (GitHub's issue
//! search; its `query` column is required) are code, as is the dialect: GitHub's rate-limit headers,
//! secondary limits and 404s.
//!
//! | table | filter | sent as | decision |
//! |---|---|---|---|
//! | users | `login = / IN` | GraphQL, 100 logins per query | inexact |
//! | search_issues | `query = '…'` (required) | `GET /search/issues?q=…` | exact |
//!
//! Users' names, emails and companies come from the GraphQL API, 100 users per query (one point of its
//! own hourly budget), where REST would need a request per user.

mod graphql;
mod search;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::stats::Precision;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use omnisql_connector::filter::{self, pinned_texts};
use omnisql_connector::governor::{BucketSpec, Observed};
use omnisql_connector::http::{classify_common, retry_after, until_epoch};
use omnisql_connector::pagination::link;
use omnisql_connector::spec::{ConnectorSpec, SpecTable};
use omnisql_connector::{
    ApiClient, ApiTable, ApiTableProvider, BearerToken, Column, Connector, ConnectorContext, ConnectorError, ConnectorFactory,
    Dialect, Kind, ParameterSpec, Parameters, QueryContext, Result, ScanOptions, ScanRequest, Verdict,
};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

const NAME: &str = "github";
const VERSION: &str = "1.0.0";
const PER_PAGE: usize = 100;

/// The tables declared as data (`github.toml`).
fn spec() -> Result<&'static ConnectorSpec> {
    static SPEC: OnceLock<std::result::Result<ConnectorSpec, String>> = OnceLock::new();
    ConnectorSpec::built_in(&SPEC, NAME, include_str!("../github.toml"))
}

/// The tables that are code.
const CODE_TABLES: &[&str] = &["users", "search_issues"];

static PARAMETERS: &[ParameterSpec] = &[
    ParameterSpec::optional("base_url", "GitHub REST API base URL", Some("https://api.github.com")),
    ParameterSpec::secret("token", "personal access token or GitHub App installation token"),
    ParameterSpec::required("orgs", "comma-separated organisations whose repositories the tables cover"),
];

#[derive(Debug, Default)]
pub struct GithubFactory;

#[async_trait]
impl ConnectorFactory for GithubFactory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> &'static str {
        VERSION
    }
    fn parameters(&self) -> &'static [ParameterSpec] {
        PARAMETERS
    }
    fn spec(&self) -> Result<Option<&'static ConnectorSpec>> {
        spec().map(Some)
    }
    fn code_tables(&self) -> Vec<(String, Vec<Column>)> {
        vec![("users".into(), user_columns()), ("search_issues".into(), search::columns())]
    }
    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let spec = spec()?;
        let base = omnisql_connector::spec_connector::base_url(NAME, &params)?;
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
        let token = params.require(NAME, "token")?.to_string();
        let client = Arc::new(ApiClient::new(&ctx, Arc::new(GithubDialect), Arc::new(BearerToken(token)), headers)?);
        let orgs = params.list("orgs");
        let vars = Arc::new(BTreeMap::from([("orgs".to_string(), orgs)]));
        let api = Api { client, graphql: graphql::endpoint(&base), base };
        Ok(Arc::new(GithubConnector { spec, api: Arc::new(api), vars, scan: ctx.scan }))
    }
}

/// Reads GitHub's answers: rate limits (primary: remaining 0 until reset; secondary: `retry-after`).
#[derive(Debug)]
struct GithubDialect;

impl Dialect for GithubDialect {
    fn app(&self) -> &'static str {
        "GitHub"
    }
    /// The hourly core quota (5,000 for a user token), the search quota (30 a minute) and GraphQL's
    /// hourly points (5,000; each query the connector sends costs one).
    fn bucket(&self, url: &str) -> Option<BucketSpec> {
        Some(if url.ends_with("/graphql") {
            BucketSpec {
                name: "github:graphql".into(),
                capacity: 5000.0,
                window: std::time::Duration::from_secs(3600),
                trusted: false,
            }
        } else if url.contains("/search/") {
            BucketSpec {
                name: "github:search".into(),
                capacity: 30.0,
                window: std::time::Duration::from_secs(60),
                trusted: false,
            }
        } else {
            BucketSpec {
                name: "github:core".into(),
                capacity: 5000.0,
                window: std::time::Duration::from_secs(3600),
                trusted: false,
            }
        })
    }
    /// The secondary limit: at most 900 points (GETs) a minute per REST endpoint, 2,000 (queries) for
    /// GraphQL.
    fn secondary_buckets(&self, url: &str) -> Vec<BucketSpec> {
        vec![BucketSpec {
            name: format!("github:secondary {}", endpoint_of(url)),
            capacity: if url.ends_with("/graphql") { 2000.0 } else { 900.0 },
            window: std::time::Duration::from_secs(60),
            trusted: true,
        }]
    }
    /// `x-ratelimit-limit`, `-remaining` and `-reset` (epoch seconds).
    fn observe(&self, headers: &HeaderMap) -> Option<Observed> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        Some(Observed {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining")?,
            reset_in: until_epoch(headers, "x-ratelimit-reset").unwrap_or(std::time::Duration::from_secs(60)),
        })
    }
    /// GitHub allows 100 concurrent requests per token; half leaves room for its other users.
    fn default_concurrency(&self) -> usize {
        50
    }
    /// An organisation's issue list embeds each issue's whole repository; the name comes from the
    /// issue's own `url`.
    fn unread_fields(&self, url: &str) -> &'static [&'static str] {
        if endpoint_of(url) == "/orgs/{name}/issues" { &["repository"] } else { &[] }
    }
    fn classify(&self, connection: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Ok;
        }
        // REST errors carry `message`; GraphQL's `errors[].message`.
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("message").or_else(|| v.pointer("/errors/0/message")).and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        if matches!(status.as_u16(), 403 | 429) {
            let remaining = headers.get("x-ratelimit-remaining").and_then(|v| v.to_str().ok());
            if remaining == Some("0") {
                let reset_in = until_epoch(headers, "x-ratelimit-reset").unwrap_or_default();
                return Verdict::RateLimited { reset_in, message };
            }
            if let Some(after) = retry_after(headers) {
                return Verdict::Retry { after: Some(after), reason: message };
            }
            if message.contains("secondary rate limit") {
                return Verdict::Retry { after: Some(std::time::Duration::from_secs(60)), reason: message };
            }
        }
        if status == StatusCode::NOT_FOUND {
            let message = format!("{message} (the organisation or repository does not exist, or the token cannot see it)");
            return Verdict::Fail(ConnectorError::Upstream {
                app: "GitHub",
                connection: connection.into(),
                status: 404,
                message,
            });
        }
        classify_common("GitHub", connection, status, headers, message)
    }
}

#[derive(Debug)]
pub(crate) struct Api {
    client: Arc<ApiClient>,
    base: String,
    /// The GraphQL endpoint beside `base`.
    graphql: String,
}

/// The endpoint a URL calls, with names in the path replaced: `/repos/{owner}/{repo}/issues`.
fn endpoint_of(url: &str) -> String {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest.split_once('/').map_or("", |(_, p)| p));
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let shape: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| match (segments.first().copied(), i) {
            (Some("repos"), 1) => "{owner}",
            (Some("repos"), 2) => "{repo}",
            (Some("users" | "orgs"), 1) => "{name}",
            _ => s,
        })
        .collect();
    format!("/{}", shape.join("/"))
}
fn rows_of(api: &Api, body: Value) -> Result<Vec<Value>> {
    match body {
        Value::Array(rows) => Ok(rows),
        _ => Err(ConnectorError::UnexpectedShape {
            app: "GitHub",
            connection: api.client.connection().into(),
            field: "[…] (a list)".into(),
        }),
    }
}

#[derive(Debug)]
struct GithubConnector {
    spec: &'static ConnectorSpec,
    api: Arc<Api>,
    /// `{orgs}` in the spec's paths.
    vars: Arc<BTreeMap<String, Vec<String>>>,
    scan: ScanOptions,
}

#[async_trait]
impl Connector for GithubConnector {
    fn table_names(&self) -> Vec<String> {
        self.spec.tables.iter().map(|t| t.name.clone()).chain(CODE_TABLES.iter().map(|t| t.to_string())).collect()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let table: Arc<dyn ApiTable> = match name {
            "users" => Arc::new(UsersTable { api: self.api.clone(), columns: user_columns() }),
            "search_issues" => Arc::new(search::SearchIssues::new(self.api.clone())),
            _ => match SpecTable::new(self.spec, name, "GitHub", self.api.client.clone(), &self.api.base) {
                Some(t) => Arc::new(t.with_vars(self.vars.clone())),
                None => return Ok(None),
            },
        };
        Ok(Some(Arc::new(ApiTableProvider::new(table, self.scan))))
    }
}

fn user_columns() -> Vec<Column> {
    use Kind::*;
    let c = Column::new;
    vec![
        c("id", Int, "/id"),
        c("login", Str, "/login"),
        c("name", Str, "/name"),
        c("email", Str, "/email"),
        c("company", Str, "/company"),
        c("type", Str, "/type"),
        c("site_admin", Bool, "/site_admin"),
        c("created_at", Timestamp, "/created_at"),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn endpoints_hide_names_in_the_path() {
        assert_eq!(super::endpoint_of("http://h:1/repos/acme/api/issues?page=2"), "/repos/{owner}/{repo}/issues");
        assert_eq!(super::endpoint_of("https://api.github.com/users/ada"), "/users/{name}");
        assert_eq!(super::endpoint_of("https://api.github.com/search/issues?q=x"), "/search/issues");
    }

    #[test]
    fn the_spec_parses_and_its_tables_and_the_code_tables_are_the_schema() {
        let spec = super::spec().unwrap();
        assert_eq!(spec.version, super::VERSION);
        let names: Vec<&str> = spec.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["repos", "issues", "pulls", "commits"]);
    }
}

/// `github.users`: by login, GraphQL lookups of 100 logins per query; otherwise `GET /users` pages, with
/// the GraphQL details of each page's logins when a detail column is read.
#[derive(Debug)]
struct UsersTable {
    api: Arc<Api>,
    columns: Vec<Column>,
}

#[async_trait]
impl ApiTable for UsersTable {
    fn name(&self) -> String {
        "github.users".into()
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Without logins, users are listed and then fetched one by one for their emails: keys save that.
    fn keys_worth_waiting_for(&self, column: &str) -> bool {
        column == "login"
    }

    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        match filter::pinned_values(f) {
            Some((c, values)) if c == "login" && filter::texts(&values).is_some() => TableProviderFilterPushDown::Inexact,
            _ => TableProviderFilterPushDown::Unsupported,
        }
    }

    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        match pinned_texts(&scan.filters, "login") {
            Some(logins) => logins
                .chunks(graphql::LOGINS_PER_QUERY)
                .map(|c| format!("POST /graphql (repositoryOwner for {})", c.join(", ")))
                .collect(),
            None => {
                let per_page = scan.limit.map_or(PER_PAGE, |l| l.clamp(1, PER_PAGE));
                let mut v = vec![format!("GET /users?per_page={per_page} (paged by since)")];
                if self.needs_user_details(scan) {
                    v.push("POST /graphql per page of users (for name, email, company)".into());
                }
                v
            }
        }
    }

    /// Users by login: at most one row per login.
    fn estimated_rows(&self, scan: &ScanRequest) -> Precision<usize> {
        match pinned_texts(&scan.filters, "login") {
            Some(logins) => Precision::Inexact(logins.len()),
            None => Precision::Absent,
        }
    }

    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        pinned_texts(&scan.filters, "login").map_or(0, |l| l.len().div_ceil(graphql::LOGINS_PER_QUERY) as u64)
    }

    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let details = self.needs_user_details(&scan);
        users(self.api.clone(), q, pinned_texts(&scan.filters, "login"), details, scan.limit)
    }
}

impl UsersTable {
    /// `GET /users` lists ids and logins only; name, email and company need one request per user.
    fn needs_user_details(&self, scan: &ScanRequest) -> bool {
        let detail = ["name", "email", "company", "created_at"];
        match &scan.projection {
            Some(p) => p.iter().any(|i| detail.contains(&self.columns[*i].name.as_str())),
            None => true,
        }
    }
}

fn users(
    api: Arc<Api>,
    q: Arc<QueryContext>,
    logins: Option<Vec<String>>,
    details: bool,
    limit: Option<usize>,
) -> BoxStream<'static, Result<Vec<Value>>> {
    let concurrency = api.client.max_concurrency();
    // One GraphQL query per 100 logins; sorted, so that the same set is the same cached request.
    let details_of = {
        let (api, q) = (api.clone(), q.clone());
        move |mut logins: Vec<String>| {
            let (api, q) = (api.clone(), q.clone());
            logins.sort();
            let chunks: Vec<Vec<String>> = logins.chunks(graphql::LOGINS_PER_QUERY).map(<[String]>::to_vec).collect();
            stream::iter(chunks)
                .map(move |chunk| {
                    let (api, q) = (api.clone(), q.clone());
                    async move { graphql::owners(&api, &q, &chunk).await }
                })
                .buffered(concurrency)
        }
    };
    if let Some(logins) = logins {
        return details_of(logins).boxed();
    }
    let per_page = limit.map_or(PER_PAGE, |l| l.clamp(1, PER_PAGE));
    let pages = omnisql_connector::pagination::follow(move |next: Option<String>| {
        let (api, q) = (api.clone(), q.clone());
        async move {
            let url = next.unwrap_or_else(|| format!("{}/users?per_page={per_page}", api.base));
            let resp = api.client.get(&q, &url, &[]).await?;
            let next = link(resp.header("link"), "next");
            Ok((rows_of(&api, resp.body)?, next))
        }
    });
    if !details {
        return pages;
    }
    pages
        .map_ok(move |rows| {
            let logins: Vec<String> =
                rows.iter().filter_map(|r| r.get("login").and_then(Value::as_str).map(str::to_string)).collect();
            details_of(logins).try_concat()
        })
        .try_buffered(1)
        .boxed()
}
