//! GitHub REST as the `github` schema: `repos`, `issues`, `pulls`, `commits`, `users`, and
//! `search_issues` (GitHub's issue search; its `query` column is required).
//!
//! Without a repository filter, `issues` reads each organisation's issue list (`GET /orgs/{org}/issues?
//! filter=all`, every repository in one list), unless a filter only a repository's list takes (`creator`,
//! `assignee`) is pushed; then, like `pulls` and `commits`, it lists the configured organisations'
//! repositories and fans out over them concurrently (within the connection's concurrency bound). Lists
//! use `per_page=100`; after the first page the `link` header's `last` page lets the remaining pages be
//! fetched in parallel. Pushdown, per table:
//!
//! | table | filter | sent as | decision |
//! |---|---|---|---|
//! | all but users | `repo_full_name = / IN` | one repository path each | inexact (names ignore case) |
//! | repos | `full_name = x` | `GET /repos/{o}/{r}` | inexact |
//! | issues, pulls | `state = 'open' / 'closed'`, `IN (both)` | `state=` | exact |
//! | issues | `user_login = x` | `creator=x` | inexact |
//! | issues | `assignee_login = x`, `IS NULL`, `IS NOT NULL` | `assignee=x / none / *` | inexact / exact |
//! | issues | `array_has(labels, 'x')` | `labels=x` | inexact |
//! | issues | `updated_at >= t` (`>` t) | `since=t` | exact (inexact) |
//! | pulls | `base_ref = x` | `base=x` | exact |
//! | commits | `author_email = x`, `author_login = x` | `author=x` | inexact |
//! | commits | `committed_at >= / <= t` | `since` / `until` | exact |
//! | users | `login = / IN` | GraphQL, 100 logins per query | inexact |
//! | search_issues | `query = '…'` (required) | `GET /search/issues?q=…` | exact |
//!
//! `LIMIT` becomes a smaller `per_page` and an early stop when every filter is exact.
//!
//! Users' names, emails and companies come from the GraphQL API, 100 users per query (one point of its
//! own hourly budget), where REST would need a request per user.

mod graphql;
mod search;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::common::stats::Precision;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use omnisql_connector::filter::{self, pinned_texts};
use omnisql_connector::governor::{BucketSpec, Observed};
use omnisql_connector::http::{classify_common, retry_after, until_epoch};
use omnisql_connector::pagination::{link, page_number};
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
    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let base = omnisql_connector::spec_connector::base_url(NAME, &params)?;
        let mut headers = HeaderMap::new();
        headers.insert("accept", HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
        let token = params.require(NAME, "token")?.to_string();
        let client = ApiClient::new(&ctx, Arc::new(GithubDialect), Arc::new(BearerToken(token)), headers)?;
        let api = Api { client, graphql: graphql::endpoint(&base), base, orgs: params.list("orgs") };
        Ok(Arc::new(GithubConnector { api: Arc::new(api), scan: ctx.scan }))
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
    client: ApiClient,
    base: String,
    /// The GraphQL endpoint beside `base`.
    graphql: String,
    orgs: Vec<String>,
}

impl Api {
    /// All pages of a list endpoint: the first, then the rest in parallel (known from `rel="last"`),
    /// or one after another when a limit may stop early.
    fn list(
        self: &Arc<Self>,
        q: Arc<QueryContext>,
        path: String,
        params: Vec<(String, String)>,
        limit: Option<usize>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let api = self.clone();
        let per_page = limit.map_or(PER_PAGE, |l| l.clamp(1, PER_PAGE));
        let url = format!("{}{}", api.base, path);
        let with_page = move |page: usize| {
            let mut p = params.clone();
            p.push(("per_page".into(), per_page.to_string()));
            p.push(("page".into(), page.to_string()));
            p
        };
        let first = {
            let (api, q, url, params) = (api.clone(), q.clone(), url.clone(), with_page(1));
            async move { api.client.get(&q, &url, &params).await }
        };
        stream::once(first)
            .map(move |resp| -> Result<BoxStream<'static, Result<Vec<Value>>>> {
                let resp = resp?;
                let last = link(resp.header("link"), "last").and_then(|u| page_number(&u)).unwrap_or(1);
                let rows = rows_of(&api, resp.body)?;
                let wanted = limit.map_or(last, |l| l.div_ceil(per_page).min(last));
                let rest = (2..=wanted).map({
                    let (api, q, url, with_page) = (api.clone(), q.clone(), url.clone(), with_page.clone());
                    move |page| {
                        let (api, q, url, params) = (api.clone(), q.clone(), url.clone(), with_page(page));
                        async move { rows_of(&api, api.client.get(&q, &url, &params).await?.body) }
                    }
                });
                let concurrency = if limit.is_some() { 1 } else { api.client.max_concurrency() };
                Ok(stream::once(async move { Ok(rows) }).chain(stream::iter(rest).buffered(concurrency)).boxed())
            })
            .try_flatten()
            .boxed()
    }

    /// Full names of the organisations' repositories.
    async fn repositories(&self, q: &QueryContext) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for org in &self.orgs {
            let mut url = Some(format!("{}/orgs/{org}/repos", self.base));
            let mut params = vec![("type".to_string(), "all".to_string()), ("per_page".to_string(), PER_PAGE.to_string())];
            while let Some(u) = url {
                let resp = self.client.get(q, &u, &params).await?;
                for r in resp.body.as_array().into_iter().flatten() {
                    if let Some(n) = r.get("full_name").and_then(Value::as_str) {
                        names.push(n.to_string());
                    }
                }
                url = link(resp.header("link"), "next");
                params.clear();
            }
        }
        Ok(names)
    }
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
    api: Arc<Api>,
    scan: ScanOptions,
}

#[async_trait]
impl Connector for GithubConnector {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let kind = match name {
            "repos" => TableKind::Repos,
            "issues" => TableKind::Issues,
            "pulls" => TableKind::Pulls,
            "commits" => TableKind::Commits,
            "users" => TableKind::Users,
            "search_issues" => {
                let table = search::SearchIssues::new(self.api.clone());
                return Ok(Some(Arc::new(ApiTableProvider::new(Arc::new(table), self.scan))));
            }
            _ => return Ok(None),
        };
        let table = GithubTable { api: self.api.clone(), columns: columns(kind), kind };
        Ok(Some(Arc::new(ApiTableProvider::new(Arc::new(table), self.scan))))
    }
}

const TABLES: &[&str] = &["repos", "issues", "pulls", "commits", "users", "search_issues"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Repos,
    Issues,
    Pulls,
    Commits,
    Users,
}

fn columns(kind: TableKind) -> Vec<Column> {
    use Kind::*;
    let c = Column::new;
    match kind {
        TableKind::Repos => vec![
            c("id", Int, "/id"),
            c("name", Str, "/name"),
            c("full_name", Str, "/full_name"),
            c("owner_login", Str, "/owner/login"),
            c("private", Bool, "/private"),
            c("description", Str, "/description"),
            c("language", Str, "/language"),
            c("default_branch", Str, "/default_branch"),
            c("open_issues_count", Int, "/open_issues_count"),
            c("stargazers_count", Int, "/stargazers_count"),
            c("forks_count", Int, "/forks_count"),
            c("archived", Bool, "/archived"),
            c("html_url", Str, "/html_url"),
            c("created_at", Timestamp, "/created_at"),
            c("updated_at", Timestamp, "/updated_at"),
            c("pushed_at", Timestamp, "/pushed_at"),
        ],
        TableKind::Issues => vec![
            c("repo_full_name", Str, "/_repo"),
            c("id", Int, "/id"),
            c("number", Int, "/number"),
            c("title", Str, "/title"),
            c("body", Str, "/body"),
            c("state", Str, "/state"),
            c("state_reason", Str, "/state_reason"),
            c("user_login", Str, "/user/login"),
            c("labels", StrList("name"), "/labels"),
            c("assignee_login", Str, "/assignee/login"),
            c("comments", Int, "/comments"),
            c("author_association", Str, "/author_association"),
            c("created_at", Timestamp, "/created_at"),
            c("updated_at", Timestamp, "/updated_at"),
            c("closed_at", Timestamp, "/closed_at"),
            c("is_pull_request", Present, "/pull_request"),
            c("html_url", Str, "/html_url"),
        ],
        TableKind::Pulls => vec![
            c("repo_full_name", Str, "/_repo"),
            c("id", Int, "/id"),
            c("number", Int, "/number"),
            c("title", Str, "/title"),
            c("state", Str, "/state"),
            c("user_login", Str, "/user/login"),
            c("assignee_login", Str, "/assignee/login"),
            c("labels", StrList("name"), "/labels"),
            c("head_ref", Str, "/head/ref"),
            c("base_ref", Str, "/base/ref"),
            c("draft", Bool, "/draft"),
            c("created_at", Timestamp, "/created_at"),
            c("updated_at", Timestamp, "/updated_at"),
            c("closed_at", Timestamp, "/closed_at"),
            c("merged_at", Timestamp, "/merged_at"),
            c("html_url", Str, "/html_url"),
        ],
        TableKind::Commits => vec![
            c("repo_full_name", Str, "/_repo"),
            c("sha", Str, "/sha"),
            c("message", Str, "/commit/message"),
            c("author_name", Str, "/commit/author/name"),
            c("author_email", Str, "/commit/author/email"),
            c("author_login", Str, "/author/login"),
            c("committer_email", Str, "/commit/committer/email"),
            c("committed_at", Timestamp, "/commit/author/date"),
            c("html_url", Str, "/html_url"),
        ],
        TableKind::Users => vec![
            c("id", Int, "/id"),
            c("login", Str, "/login"),
            c("name", Str, "/name"),
            c("email", Str, "/email"),
            c("company", Str, "/company"),
            c("type", Str, "/type"),
            c("site_admin", Bool, "/site_admin"),
            c("created_at", Timestamp, "/created_at"),
        ],
    }
}

#[cfg(test)]
mod tests {
    /// The organisation's list does not take `creator` or `assignee`; the scan applies them as a
    /// repository's list would.
    #[test]
    fn repository_only_parameters_are_applied_to_the_organisations_rows() {
        use serde_json::json;
        let row = |number: i64, author: &str, assignees: &[&str]| {
            let people: Vec<serde_json::Value> = assignees.iter().map(|a| json!({ "login": a })).collect();
            json!({ "number": number, "user": { "login": author }, "assignee": people.first(), "assignees": people })
        };
        let rows = vec![row(1, "Ada", &[]), row(2, "bob", &["carol", "Dave"]), row(3, "ada", &["dave"])];
        let numbers = |params: &[(&str, &str)]| -> Vec<i64> {
            let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            super::IssueFilter::of(&params).apply(rows.clone()).iter().map(|r| r["number"].as_i64().unwrap()).collect()
        };
        assert_eq!(numbers(&[]), [1, 2, 3]);
        assert_eq!(numbers(&[("creator", "ADA")]), [1, 3]);
        assert_eq!(numbers(&[("assignee", "none")]), [1]);
        assert_eq!(numbers(&[("assignee", "*")]), [2, 3]);
        // Any of the assignees, not only the first.
        assert_eq!(numbers(&[("assignee", "dave")]), [2, 3]);
        assert_eq!(numbers(&[("creator", "ada"), ("assignee", "*")]), [3]);
    }

    #[test]
    fn endpoints_hide_names_in_the_path() {
        assert_eq!(super::endpoint_of("http://h:1/repos/acme/api/issues?page=2"), "/repos/{owner}/{repo}/issues");
        assert_eq!(super::endpoint_of("https://api.github.com/users/ada"), "/users/{name}");
        assert_eq!(super::endpoint_of("https://api.github.com/search/issues?q=x"), "/search/issues");
    }
}

#[derive(Debug)]
struct GithubTable {
    api: Arc<Api>,
    columns: Vec<Column>,
    kind: TableKind,
}

fn is_state_literal(v: &ScalarValue) -> bool {
    matches!(filter::text(v).as_deref(), Some("open" | "closed"))
}

/// Query parameters the filters become, and whether `LIMIT` may be sent (all filters exact).
#[derive(Debug, Default)]
struct Plan {
    repos: Option<Vec<String>>,
    params: Vec<(String, String)>,
    /// Issues of every repository, listed organisation-wide (`GET /orgs/{org}/issues?filter=all`): one
    /// round trip fewer than listing the repositories first, and no request per empty repository.
    org_wide: bool,
}

impl GithubTable {
    fn repo_column(&self) -> &'static str {
        if self.kind == TableKind::Repos { "full_name" } else { "repo_full_name" }
    }

    fn plan(&self, scan: &ScanRequest) -> Plan {
        let mut plan = Plan { repos: pinned_texts(&scan.filters, self.repo_column()), ..Plan::default() };
        let mut put = |k: &str, v: String| {
            if !plan.params.iter().any(|(key, _)| key == k) {
                plan.params.push((k.to_string(), v));
            }
        };
        for f in &scan.filters {
            match (self.kind, f) {
                (TableKind::Issues | TableKind::Pulls, f) if filter::pinned_values(f).is_some_and(|(c, _)| c == "state") => {
                    if let Some((_, values)) = filter::pinned_values(f) {
                        let states: Vec<String> = values.iter().filter_map(filter::text).collect();
                        put("state", if states.len() == 1 { states[0].clone() } else { "all".into() });
                    }
                }
                (TableKind::Issues, Expr::IsNull(e)) if filter::column(e) == Some("assignee_login") => {
                    put("assignee", "none".into())
                }
                (TableKind::Issues, Expr::IsNotNull(e)) if filter::column(e) == Some("assignee_login") => {
                    put("assignee", "*".into())
                }
                _ => {}
            }
            if let Some((c, op, v)) = filter::comparison(f) {
                let text = filter::text(&v);
                match (self.kind, c, op) {
                    (TableKind::Issues, "user_login", Operator::Eq) => text.into_iter().for_each(|t| put("creator", t)),
                    (TableKind::Issues, "assignee_login", Operator::Eq) => text.into_iter().for_each(|t| put("assignee", t)),
                    (TableKind::Issues, "updated_at", Operator::Gt | Operator::GtEq) => {
                        iso(&v).into_iter().for_each(|t| put("since", t));
                    }
                    (TableKind::Pulls, "base_ref", Operator::Eq) => text.into_iter().for_each(|t| put("base", t)),
                    (TableKind::Commits, "author_email" | "author_login", Operator::Eq) => {
                        text.into_iter().for_each(|t| put("author", t))
                    }
                    (TableKind::Commits, "committed_at", Operator::Gt | Operator::GtEq) => {
                        iso(&v).into_iter().for_each(|t| put("since", t))
                    }
                    (TableKind::Commits, "committed_at", Operator::Lt | Operator::LtEq) => {
                        iso(&v).into_iter().for_each(|t| put("until", t))
                    }
                    _ => {}
                }
            }
            if let Some(label) = label_filter(f) {
                put("labels", label);
            }
        }
        if matches!(self.kind, TableKind::Issues | TableKind::Pulls) && !plan.params.iter().any(|(k, _)| k == "state") {
            plan.params.push(("state".into(), "all".into()));
        }
        plan.org_wide = self.kind == TableKind::Issues && plan.repos.is_none();
        if plan.org_wide {
            plan.params.insert(0, ("filter".into(), "all".into()));
        }
        plan
    }

    /// What the organisation's issue list is asked: its own parameters, without `creator` and
    /// `assignee` (a repository's list takes them; [`IssueFilter`] applies them to the rows instead).
    fn org_params(plan: &Plan) -> Vec<(String, String)> {
        plan.params.iter().filter(|(k, _)| !matches!(k.as_str(), "creator" | "assignee")).cloned().collect()
    }

    fn path(&self, repo: &str) -> String {
        match self.kind {
            TableKind::Issues => format!("/repos/{repo}/issues"),
            TableKind::Pulls => format!("/repos/{repo}/pulls"),
            TableKind::Commits => format!("/repos/{repo}/commits"),
            TableKind::Repos => format!("/repos/{repo}"),
            TableKind::Users => "/users".into(),
        }
    }
}

fn iso(v: &ScalarValue) -> Option<String> {
    let micros = filter::timestamp_micros(v)?;
    chrono::DateTime::from_timestamp_micros(micros).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// `array_has(labels, 'x')`.
fn label_filter(f: &Expr) -> Option<String> {
    let Expr::ScalarFunction(func) = f else {
        return None;
    };
    if func.name() != "array_has" || func.args.len() != 2 || filter::column(&func.args[0]) != Some("labels") {
        return None;
    }
    filter::text(&filter::literal(&func.args[1])?)
}

/// Adds `_repo`: the repository's full name as GitHub spells it (from the row's own `url`, since the
/// name in the request path may differ in case), else the requested name.
fn with_repo(repo: &str, mut rows: Vec<Value>) -> Vec<Value> {
    for r in &mut rows {
        let canonical = r
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| u.split_once("/repos/"))
            .and_then(|(_, rest)| {
                let mut parts = rest.splitn(3, '/');
                Some(format!("{}/{}", parts.next()?, parts.next()?))
            })
            .unwrap_or_else(|| repo.to_string());
        if let Some(o) = r.as_object_mut() {
            o.insert("_repo".into(), Value::String(canonical));
        }
    }
    rows
}

/// `creator` and `assignee` as a repository's issue list applies them (logins ignore case; `assignee`
/// `none` and `*` ask for no assignee and any), for the organisation's list, which does not take them.
#[derive(Debug, Clone, Default)]
struct IssueFilter {
    creator: Option<String>,
    assignee: Option<String>,
}

impl IssueFilter {
    fn of(params: &[(String, String)]) -> Self {
        let get = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        IssueFilter { creator: get("creator"), assignee: get("assignee") }
    }

    fn is_everything(&self) -> bool {
        self.creator.is_none() && self.assignee.is_none()
    }

    fn apply(&self, mut rows: Vec<Value>) -> Vec<Value> {
        let login = |u: &Value| u.get("login").and_then(Value::as_str).map(str::to_string);
        rows.retain(|r| {
            let creator = r.get("user").and_then(login);
            // `assignee=x` matches any of the assignees, not only the first (`assignee`).
            let assignees: Vec<String> = match r.get("assignees").and_then(Value::as_array) {
                Some(list) => list.iter().filter_map(login).collect(),
                None => r.get("assignee").and_then(login).into_iter().collect(),
            };
            let creator_ok = self.creator.as_ref().is_none_or(|c| creator.is_some_and(|l| l.eq_ignore_ascii_case(c)));
            let assignee_ok = match self.assignee.as_deref() {
                None => true,
                Some("none") => assignees.is_empty(),
                Some("*") => !assignees.is_empty(),
                Some(a) => assignees.iter().any(|l| l.eq_ignore_ascii_case(a)),
            };
            creator_ok && assignee_ok
        });
        rows
    }
}

#[async_trait]
impl ApiTable for GithubTable {
    fn name(&self) -> String {
        format!(
            "github.{}",
            match self.kind {
                TableKind::Repos => "repos",
                TableKind::Issues => "issues",
                TableKind::Pulls => "pulls",
                TableKind::Commits => "commits",
                TableKind::Users => "users",
            }
        )
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Without logins, users are listed and then fetched one by one for their emails: keys save that.
    fn keys_worth_waiting_for(&self, column: &str) -> bool {
        self.kind == TableKind::Users && column == "login"
    }
    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        use TableProviderFilterPushDown::*;
        if let Some((c, values)) = filter::pinned_values(f) {
            if c == self.repo_column() && filter::texts(&values).is_some() && self.kind != TableKind::Users {
                return Inexact;
            }
            if self.kind == TableKind::Users && c == "login" && filter::texts(&values).is_some() {
                return Inexact;
            }
            if c == "state"
                && matches!(self.kind, TableKind::Issues | TableKind::Pulls)
                && !values.is_empty()
                && values.iter().all(is_state_literal)
            {
                return Exact;
            }
        }
        match (self.kind, f) {
            (TableKind::Issues, Expr::IsNull(e) | Expr::IsNotNull(e)) if filter::column(e) == Some("assignee_login") => {
                return Exact;
            }
            (TableKind::Issues, f) if label_filter(f).is_some() => return Inexact,
            _ => {}
        }
        let Some((c, op, v)) = filter::comparison(f) else {
            return Unsupported;
        };
        match (self.kind, c, op) {
            (TableKind::Issues, "user_login" | "assignee_login", Operator::Eq) if filter::text(&v).is_some() => Inexact,
            (TableKind::Issues, "updated_at", Operator::GtEq) if iso(&v).is_some() => exact_if_whole_second(&v),
            (TableKind::Issues, "updated_at", Operator::Gt) if iso(&v).is_some() => Inexact,
            (TableKind::Pulls, "base_ref", Operator::Eq) if filter::text(&v).is_some() => Exact,
            (TableKind::Commits, "author_email" | "author_login", Operator::Eq) if filter::text(&v).is_some() => Inexact,
            (TableKind::Commits, "committed_at", Operator::GtEq | Operator::LtEq) if iso(&v).is_some() => {
                exact_if_whole_second(&v)
            }
            (TableKind::Commits, "committed_at", Operator::Gt | Operator::Lt) if iso(&v).is_some() => Inexact,
            _ => Unsupported,
        }
    }

    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        let plan = self.plan(scan);
        let query = |extra: &[(String, String)]| {
            let mut all = plan.params.clone();
            all.extend_from_slice(extra);
            if all.is_empty() {
                String::new()
            } else {
                format!("?{}", url::form_urlencoded::Serializer::new(String::new()).extend_pairs(all).finish())
            }
        };
        let per_page = [("per_page".to_string(), scan.limit.map_or(PER_PAGE, |l| l.clamp(1, PER_PAGE)).to_string())];
        match (self.kind, &plan.repos) {
            (TableKind::Users, _) => match pinned_texts(&scan.filters, "login") {
                Some(logins) => logins
                    .chunks(graphql::LOGINS_PER_QUERY)
                    .map(|c| format!("POST /graphql (repositoryOwner for {})", c.join(", ")))
                    .collect(),
                None => {
                    let mut v = vec![format!("GET /users{} (paged by since)", query(&per_page))];
                    if self.needs_user_details(scan) {
                        v.push("POST /graphql per page of users (for name, email, company)".into());
                    }
                    v
                }
            },
            (TableKind::Repos, Some(repos)) if repos.len() == 1 => {
                repos.iter().map(|r| format!("GET {}", self.path(r))).collect()
            }
            (TableKind::Repos, _) => {
                self.api.orgs.iter().map(|o| format!("GET /orgs/{o}/repos?type=all&per_page=100 (all pages)")).collect()
            }
            (_, Some(repos)) => repos.iter().map(|r| format!("GET {}{} (all pages)", self.path(r), query(&per_page))).collect(),
            (_, None) if plan.org_wide => {
                let params = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(Self::org_params(&plan).iter().chain(&per_page))
                    .finish();
                self.api.orgs.iter().map(|o| format!("GET /orgs/{o}/issues?{params} (all pages)")).collect()
            }
            (_, None) => {
                let mut v: Vec<String> =
                    self.api.orgs.iter().map(|o| format!("GET /orgs/{o}/repos?type=all&per_page=100")).collect();
                v.push(format!("GET {}{} per repository (all pages)", self.path("{repo}"), query(&per_page)));
                v
            }
        }
    }

    /// Users by login: at most one row per login.
    fn estimated_rows(&self, scan: &ScanRequest) -> Precision<usize> {
        match (self.kind, pinned_texts(&scan.filters, "login")) {
            (TableKind::Users, Some(logins)) => Precision::Inexact(logins.len()),
            _ => Precision::Absent,
        }
    }

    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        match self.kind {
            TableKind::Users => {
                pinned_texts(&scan.filters, "login").map_or(0, |l| l.len().div_ceil(graphql::LOGINS_PER_QUERY) as u64)
            }
            _ => {
                let plan = self.plan(scan);
                plan.repos.map_or(if plan.org_wide { self.api.orgs.len() as u64 } else { 0 }, |r| r.len() as u64)
            }
        }
    }

    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let plan = self.plan(&scan);
        let api = self.api.clone();
        let kind = self.kind;
        let limit = scan.limit;
        match kind {
            TableKind::Users => {
                let details = self.needs_user_details(&scan);
                users(api, q, pinned_texts(&scan.filters, "login"), details, limit)
            }
            // One pinned repository is one request; several cost more than listing the organisation.
            TableKind::Repos => match plan.repos.filter(|r| r.len() == 1) {
                Some(repos) => {
                    let concurrency = api.client.max_concurrency();
                    stream::iter(repos)
                        .map(move |r| {
                            let (api, q) = (api.clone(), q.clone());
                            async move {
                                match api.client.get(&q, &format!("{}/repos/{r}", api.base), &[]).await {
                                    Ok(resp) => Ok(vec![resp.body]),
                                    // A repository that does not exist is no row, as a filter that matches nothing.
                                    Err(ConnectorError::Upstream { status: 404, .. }) => Ok(vec![]),
                                    Err(e) => Err(e),
                                }
                            }
                        })
                        .buffered(concurrency)
                        .boxed()
                }
                None => {
                    let orgs = api.orgs.clone();
                    stream::iter(orgs)
                        .map(move |org| {
                            api.list(q.clone(), format!("/orgs/{org}/repos"), vec![("type".into(), "all".into())], None)
                        })
                        .flatten()
                        .boxed()
                }
            },
            TableKind::Issues if plan.org_wide => {
                let concurrency = api.client.max_concurrency();
                let keep = IssueFilter::of(&plan.params);
                // Rows the list returns that a filter drops cannot count towards `LIMIT`.
                let limit = if keep.is_everything() { limit } else { None };
                let params = Self::org_params(&plan);
                stream::iter(api.orgs.clone())
                    .map(move |org| {
                        let keep = keep.clone();
                        api.list(q.clone(), format!("/orgs/{org}/issues"), params.clone(), limit)
                            .map_ok(move |rows| keep.apply(with_repo("", rows)))
                    })
                    .flatten_unordered(concurrency)
                    .boxed()
            }
            _ => {
                let path_of = move |repo: &str| match kind {
                    TableKind::Pulls => format!("/repos/{repo}/pulls"),
                    TableKind::Commits => format!("/repos/{repo}/commits"),
                    _ => format!("/repos/{repo}/issues"),
                };
                let params = plan.params.clone();
                let repos_fut = {
                    let (api, q) = (api.clone(), q.clone());
                    async move {
                        match plan.repos {
                            Some(r) => Ok(r),
                            None => api.repositories(&q).await,
                        }
                    }
                };
                stream::once(Box::pin(repos_fut))
                    .map_ok(move |repos| {
                        let (api, q, params) = (api.clone(), q.clone(), params.clone());
                        let concurrency = api.client.max_concurrency();
                        stream::iter(repos)
                            .map(move |repo| {
                                let pages = api.list(q.clone(), path_of(&repo), params.clone(), limit);
                                let repo = repo.clone();
                                pages
                                    .or_else(|e| async move {
                                        match e {
                                            // A filtered repository that does not exist matches no rows.
                                            ConnectorError::Upstream { status: 404, .. } => Ok(vec![]),
                                            e => Err(e),
                                        }
                                    })
                                    .map_ok(move |rows| with_repo(&repo, rows))
                                    .boxed()
                            })
                            .flatten_unordered(concurrency)
                    })
                    .try_flatten()
                    .boxed()
            }
        }
    }
}

fn exact_if_whole_second(v: &ScalarValue) -> TableProviderFilterPushDown {
    // GitHub takes whole seconds; a sub-second bound is rounded, so the engine must recheck.
    match filter::timestamp_micros(v) {
        Some(m) if m % 1_000_000 == 0 => TableProviderFilterPushDown::Exact,
        _ => TableProviderFilterPushDown::Inexact,
    }
}

impl GithubTable {
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
