//! Tables as data: one declarative spec per table (request, records, pagination, columns, filter rules,
//! limit, fan-out over a parent table, rate-limit bucket) from which everything about the table derives —
//! the pushdown answer for each filter, the parameters sent, `EXPLAIN`'s requests, the catalog's schema
//! and the fetch itself. A filter is declared pushed down only by the rule that also sends it, so the two
//! cannot drift apart (ADR 0013).
//!
//! Specs are TOML files compiled into the binary (`include_str!`) and parsed once; [`ConnectorSpec::parse`]
//! checks them (unknown keys, columns a rule names, a fan-out's parent), and each connector's tests parse
//! its own. What a spec cannot say stays code behind [`crate::Dialect`] (errors, auth) or as a hand-written
//! [`ApiTable`] for one table.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ConnectorError, Result};
use crate::filter;
use crate::governor::BucketSpec;
use crate::http::{ApiClient, QueryContext};
use crate::json::{Column, Kind};
use crate::table::{ApiTable, ScanRequest};

/// A connector's tables, as its spec file declares them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorSpec {
    /// The connector's name, also its default SQL schema (e.g. `slack`).
    pub name: String,
    pub version: String,
    /// The app's name in errors, metrics and traces (e.g. `Slack`).
    pub app: String,
    /// The app's public API URL: the default of a spec connector's `base_url` parameter (none: the
    /// connection must name its own, e.g. a Jira site).
    pub base_url: Option<String>,
    /// JSON pointers to an error answer's message, tried in order (e.g. Stripe's `/error/message`).
    #[serde(default)]
    pub error_message: Vec<String>,
    /// Response headers that report the rate-limit bucket's state.
    pub rate_limit_headers: Option<RateLimitHeaders>,
    #[serde(rename = "table")]
    pub tables: Vec<TableSpec>,
}

/// Headers an API reports its rate-limit state in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitHeaders {
    pub limit: Option<String>,
    pub remaining: String,
    /// The window's length in milliseconds (a rolling window refills within it).
    pub window_ms: Option<String>,
}

/// One table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    /// Path under the connection's base URL, e.g. `/api/users.list`.
    pub path: String,
    /// Query parameters every request of the table sends.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the array of rows in an answer (`""`: the answer is the array).
    pub records: String,
    #[serde(default)]
    pub pagination: Pagination,
    /// Rows per page: the parameter and the most the API gives; a query's limit asks for fewer when every
    /// filter was exact.
    pub page_size: Option<PageSize>,
    /// The rate-limit bucket its requests take from.
    pub bucket: Option<Bucket>,
    #[serde(rename = "column")]
    pub columns: Vec<ColumnSpec>,
    #[serde(default, rename = "filter")]
    pub filters: Vec<FilterRule>,
    /// One request (chain of pages) per row of another table of the connector.
    pub fan_out: Option<FanOut>,
    /// API error codes that mean "no such parent": that request's rows are none, not an error.
    #[serde(default)]
    pub missing_is_empty: Vec<String>,
}

/// How the pages of an answer chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "style", rename_all = "snake_case")]
pub enum Pagination {
    /// One answer.
    #[default]
    None,
    /// The answer names the next page's cursor at `next` (JSON pointer; absent or `""` at the end), sent
    /// back as `param`.
    Cursor { next: String, param: String },
    /// The `link` header's `rel="next"` URL (RFC 8288, as GitHub pages), followed while it stays under
    /// the connection's base URL.
    Link,
    /// Rows are numbered: the next page starts at `param` = the rows read so far (Jira's `startAt`). It
    /// ends at an empty page, a page shorter than asked for, where the boolean at `last` is true, or once
    /// the rows read reach the number at `total`.
    Offset { param: String, last: Option<String>, total: Option<String> },
    /// The next page starts after the last row's `key`, sent as `param`, while the boolean at `more` is
    /// true (Stripe's `starting_after` and `has_more`).
    AfterLast { more: String, key: String, param: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSize {
    pub param: String,
    pub max: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub name: String,
    /// Requests per window.
    pub capacity: f64,
    pub window_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// `text`, `int`, `float`, `bool`, `timestamp` (ISO 8601), `date`, `epoch_seconds`, `present`,
    /// `text_list`.
    #[serde(rename = "type")]
    pub kind: String,
    /// JSON pointer into one row, e.g. `/profile/email`.
    pub pointer: String,
}

/// What the API does with filters on some columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// The columns (one, or several that mean the same thing, like Slack's `ts` and `posted_at`).
    pub columns: Vec<String>,
    /// `=` (sent as `param`, as the fan-out's key, or as both bounds), `in` (the fan-out's keys, or
    /// `clause_in`), `<`, `<=`, `>`, `>=` (sent as `lower` / `upper`).
    pub ops: Vec<String>,
    pub param: Option<String>,
    /// The filter as a clause of a query language sent in `param`, `{}` standing for the written value
    /// (e.g. Jira's `project = {}`); every clause sent in one parameter is joined with ` AND `, and
    /// replaces that parameter's default in `query`.
    pub clause: Option<String>,
    /// The clause for `in`, `{}` standing for the values written and joined with `, `.
    pub clause_in: Option<String>,
    pub lower: Option<String>,
    pub upper: Option<String>,
    /// How values are written in parameters: `text` (default), `seconds_6` (epoch seconds with six
    /// decimals, from a number, a numeric text or a timestamp), `epoch_seconds` (whole seconds, rounded
    /// down) or `quoted` (a double-quoted string literal, `"` and `\` escaped: a clause's value can never
    /// end its string).
    #[serde(default)]
    pub value: ValueFormat,
    /// Whether the API's answer is exactly the filter's rows (else the engine checks them again).
    pub exact: bool,
    /// `=` / `in` values are the fan-out's keys: one request per value instead of listing the parent.
    #[serde(default)]
    pub fan_out: bool,
    /// Parameters sent along whenever the rule sends one (e.g. Slack's `inclusive=true`).
    #[serde(default)]
    pub with: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    #[default]
    Text,
    #[serde(rename = "seconds_6")]
    Seconds6,
    EpochSeconds,
    Quoted,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanOut {
    /// The parent table (of this connector) whose rows are listed.
    pub parent: String,
    /// JSON pointer to the key in a parent row.
    pub key: String,
    /// The parameter the key is sent as.
    pub param: String,
    /// Field added to each row with the key it was fetched for (columns may point at it: `/<field>`).
    pub field: String,
}

impl ConnectorSpec {
    /// Parses and checks a spec file.
    pub fn parse(text: &str) -> std::result::Result<ConnectorSpec, String> {
        let spec: ConnectorSpec = toml::from_str(text).map_err(|e| format!("connector spec: {e}"))?;
        for t in &spec.tables {
            let problem = |what: String| format!("connector spec `{}`, table `{}`: {what}", spec.name, t.name);
            for c in &t.columns {
                kind(&c.kind).ok_or_else(|| problem(format!("column `{}` has unknown type `{}`", c.name, c.kind)))?;
            }
            for r in &t.filters {
                for c in &r.columns {
                    if !t.columns.iter().any(|col| &col.name == c) {
                        return Err(problem(format!("a filter rule names unknown column `{c}`")));
                    }
                }
                for op in &r.ops {
                    let sent = match op.as_str() {
                        "=" => r.param.is_some() || r.fan_out || (r.lower.is_some() && r.upper.is_some()),
                        "in" => r.fan_out || (r.clause_in.is_some() && r.param.is_some()),
                        "<" | "<=" => r.upper.is_some(),
                        ">" | ">=" => r.lower.is_some(),
                        other => return Err(problem(format!("unknown operator `{other}`"))),
                    };
                    if !sent {
                        return Err(problem(format!("operator `{op}` on {:?} names no parameter to send it as", r.columns)));
                    }
                }
                if (r.clause.is_some() || r.clause_in.is_some()) && r.param.is_none() {
                    return Err(problem(format!("the clause on {:?} names no parameter to send it in", r.columns)));
                }
                if r.fan_out && t.fan_out.is_none() {
                    return Err(problem("a rule feeds the fan-out, but the table has none".into()));
                }
            }
            if let Some(f) = &t.fan_out
                && !spec.tables.iter().any(|p| p.name == f.parent && p.fan_out.is_none())
            {
                return Err(problem(format!("fan-out parent `{}` is not a table of the connector without a fan-out", f.parent)));
            }
        }
        Ok(spec)
    }

    /// A connector's built-in spec (`include_str!` of its file), parsed once: its first use reports a
    /// defect as [`ConnectorError::InvalidSpec`] (each connector's tests parse its file, so none ships).
    pub fn built_in(
        cell: &'static std::sync::OnceLock<std::result::Result<ConnectorSpec, String>>,
        connector: &str,
        text: &str,
    ) -> Result<&'static ConnectorSpec> {
        cell.get_or_init(|| ConnectorSpec::parse(text))
            .as_ref()
            .map_err(|message| ConnectorError::InvalidSpec { connector: connector.into(), message: message.clone() })
    }

    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The bucket of the table whose path `url` ends with.
    pub fn bucket(&self, url: &str) -> Option<BucketSpec> {
        let path = url.split('?').next().unwrap_or_default();
        let t = self.tables.iter().find(|t| path.ends_with(&t.path))?;
        let b = t.bucket.as_ref()?;
        Some(BucketSpec {
            name: b.name.clone(),
            capacity: b.capacity,
            window: std::time::Duration::from_secs(b.window_seconds),
            trusted: true,
        })
    }

    /// Every table's columns, for the catalog (no connection needed).
    pub fn schemas(&self) -> Vec<(String, Vec<Column>)> {
        self.tables.iter().map(|t| (t.name.clone(), t.column_list())).collect()
    }
}

fn kind(name: &str) -> Option<Kind> {
    Some(match name {
        "text" => Kind::Str,
        "int" => Kind::Int,
        "float" => Kind::Float,
        "bool" => Kind::Bool,
        "timestamp" => Kind::Timestamp,
        "date" => Kind::Date,
        "epoch_seconds" => Kind::EpochSeconds,
        "present" => Kind::Present,
        "text_list" => Kind::StrList(""),
        _ => return None,
    })
}

impl TableSpec {
    pub fn column_list(&self) -> Vec<Column> {
        self.columns.iter().filter_map(|c| Some(Column::new(&c.name, kind(&c.kind)?, &c.pointer))).collect()
    }

    /// The rule that sends `f`, and whether exactly.
    fn rule_for(&self, f: &Expr) -> Option<&FilterRule> {
        if let Some((column, values)) = filter::pinned_values(f) {
            let op = if values.len() == 1 { "=" } else { "in" };
            return self.filters.iter().find(|r| {
                r.columns.iter().any(|c| c == column)
                    && r.ops.iter().any(|o| o == op)
                    && values.iter().all(|v| format_value(r.value, v).is_some())
                    // Several values go as the fan-out's keys or an `in` clause; a plain parameter takes one.
                    && (values.len() == 1 || r.fan_out || r.clause_in.is_some())
            });
        }
        let (column, op, value) = filter::comparison(f)?;
        let op = match op {
            Operator::Lt => "<",
            Operator::LtEq => "<=",
            Operator::Gt => ">",
            Operator::GtEq => ">=",
            _ => return None,
        };
        self.filters.iter().find(|r| {
            r.columns.iter().any(|c| c == column) && r.ops.iter().any(|o| o == op) && format_value(r.value, &value).is_some()
        })
    }

    /// The keys the fan-out is pinned to by the scan's filters, if any.
    fn pinned_keys(&self, scan: &ScanRequest) -> Option<Vec<String>> {
        let rule = self.filters.iter().find(|r| r.fan_out)?;
        rule.columns.iter().find_map(|c| filter::pinned_texts(&scan.filters, c))
    }

    /// The parameters of the scan's requests (before the fan-out's key and the page cursor).
    fn params(&self, scan: &ScanRequest) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = self.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(size) = &self.page_size {
            params.push((size.param.clone(), scan.limit.map_or(size.max, |l| l.clamp(1, size.max)).to_string()));
        }
        let mut with = BTreeMap::new();
        let mut clauses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rule in self.filters.iter().filter(|r| !r.fan_out) {
            let mut lower: Option<(f64, String)> = None;
            let mut upper: Option<(f64, String)> = None;
            let mut equal: Option<String> = None;
            for f in &scan.filters {
                if !self.rule_for(f).is_some_and(|r| std::ptr::eq(r, rule)) {
                    continue;
                }
                if let (Some(param), Some((_, values))) = (&rule.param, filter::pinned_values(f))
                    && (rule.clause.is_some() || rule.clause_in.is_some())
                {
                    let written: Option<Vec<String>> = values.iter().map(|v| format_value(rule.value, v)).collect();
                    let template = if values.len() == 1 { rule.clause.as_ref() } else { rule.clause_in.as_ref() };
                    if let (Some(written), Some(template)) = (written, template) {
                        clauses.entry(param.clone()).or_default().push(template.replace("{}", &written.join(", ")));
                        with.extend(rule.with.clone());
                    }
                    continue;
                }
                if let Some((_, values)) = filter::pinned_values(f) {
                    if let Some(v) = values.first().and_then(|v| format_value(rule.value, v)) {
                        match (&rule.param, rule.value) {
                            (Some(_), _) => equal = Some(v),
                            // `=` on a range-only rule: both bounds.
                            (None, _) => {
                                let n = v.parse::<f64>().unwrap_or(f64::NAN);
                                lower = Some((n, v.clone()));
                                upper = Some((n, v));
                            }
                        }
                    }
                    continue;
                }
                let Some((_, op, value)) = filter::comparison(f) else { continue };
                let Some(v) = format_value(rule.value, &value) else { continue };
                let n = v.parse::<f64>().unwrap_or(f64::NAN);
                match op {
                    Operator::Gt | Operator::GtEq if lower.as_ref().is_none_or(|(l, _)| n > *l) => lower = Some((n, v)),
                    Operator::Lt | Operator::LtEq if upper.as_ref().is_none_or(|(u, _)| n < *u) => upper = Some((n, v)),
                    _ => {}
                }
            }
            let mut sent = false;
            if let (Some(p), Some(v)) = (&rule.param, equal) {
                params.push((p.clone(), v));
                sent = true;
            }
            for (p, bound) in [(&rule.lower, lower), (&rule.upper, upper)] {
                if let (Some(p), Some((_, v))) = (p, bound) {
                    params.push((p.clone(), v));
                    sent = true;
                }
            }
            if sent {
                with.extend(rule.with.clone());
            }
        }
        for (param, sent) in clauses {
            params.retain(|(k, _)| k != &param);
            params.push((param, sent.join(" AND ")));
        }
        params.extend(with);
        params
    }
}

/// A filter value as the API reads it.
fn format_value(format: ValueFormat, v: &ScalarValue) -> Option<String> {
    match format {
        ValueFormat::Text => filter::text(v),
        ValueFormat::Seconds6 => {
            let seconds = match v {
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
                    s.parse::<f64>().ok()?
                }
                ScalarValue::Int64(Some(n)) => *n as f64,
                ScalarValue::Float64(Some(n)) => *n,
                other => filter::timestamp_micros(other)? as f64 / 1e6,
            };
            seconds.is_finite().then(|| format!("{seconds:.6}"))
        }
        ValueFormat::EpochSeconds => match v {
            ScalarValue::Int64(Some(n)) => Some(n.to_string()),
            other => Some(filter::timestamp_micros(other)?.div_euclid(1_000_000).to_string()),
        },
        ValueFormat::Quoted => {
            let text = filter::text(v)?;
            Some(format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\"")))
        }
    }
}

/// A table served by its spec through the connection's client.
#[derive(Debug)]
pub struct SpecTable {
    connector: String,
    spec: TableSpec,
    parent: Option<TableSpec>,
    columns: Vec<Column>,
    endpoint: Endpoint,
}

/// Where a connection's requests go: its governed client and base URL.
#[derive(Debug, Clone)]
struct Endpoint {
    client: Arc<ApiClient>,
    base: String,
    app: &'static str,
}

impl SpecTable {
    /// Table `name` of `spec`, fetched with `client` from `base` (the connection's base URL).
    pub fn new(spec: &ConnectorSpec, name: &str, app: &'static str, client: Arc<ApiClient>, base: &str) -> Option<SpecTable> {
        let table = spec.table(name)?.clone();
        let parent = table.fan_out.as_ref().and_then(|f| spec.table(&f.parent)).cloned();
        Some(SpecTable {
            connector: spec.name.clone(),
            columns: table.column_list(),
            spec: table,
            parent,
            endpoint: Endpoint { client, base: base.trim_end_matches('/').to_string(), app },
        })
    }

    fn query_string(params: &[(String, String)]) -> String {
        url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish()
    }

    fn paged(&self) -> &'static str {
        match self.spec.pagination {
            Pagination::None => "",
            _ => " (all pages)",
        }
    }
}

impl Endpoint {
    /// Every page of `table`'s answer to `params`.
    fn pages(
        &self,
        table: &TableSpec,
        q: Arc<QueryContext>,
        params: Vec<(String, String)>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let (client, url, app) = (self.client.clone(), format!("{}{}", self.base, table.path), self.app);
        let base = format!("{}/", self.base);
        let (records, pagination) = (table.records.clone(), table.pagination.clone());
        // Rows asked for per page: a shorter page is the last (offset pages).
        let asked = table
            .page_size
            .as_ref()
            .and_then(|size| params.iter().find(|(k, _)| k == &size.param))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        crate::pagination::follow(move |cursor: Option<String>| {
            let (client, url, q, mut params, records, pagination, base) =
                (client.clone(), url.clone(), q.clone(), params.clone(), records.clone(), pagination.clone(), base.clone());
            let start = cursor.as_deref().and_then(|c| c.parse::<usize>().ok()).unwrap_or(0);
            async move {
                let target = match (cursor, &pagination) {
                    (Some(c), Pagination::Cursor { param, .. })
                    | (Some(c), Pagination::Offset { param, .. })
                    | (Some(c), Pagination::AfterLast { param, .. }) => {
                        params.push((param.clone(), c));
                        url
                    }
                    // The next link carries every parameter itself.
                    (Some(next), Pagination::Link) => {
                        params.clear();
                        next
                    }
                    _ => url,
                };
                let response = client.get(&q, &target, &params).await?;
                let link = response.headers.get(reqwest::header::LINK).and_then(|v| v.to_str().ok()).map(str::to_string);
                let mut body = response.body;
                let rows = match body.pointer_mut(&records).map(Value::take) {
                    Some(Value::Array(rows)) => rows,
                    _ => {
                        return Err(ConnectorError::UnexpectedShape {
                            app,
                            connection: client.connection().into(),
                            field: records.trim_start_matches('/').into(),
                        });
                    }
                };
                let next = match &pagination {
                    Pagination::None => None,
                    Pagination::Cursor { next, .. } => {
                        body.pointer(next).and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
                    }
                    Pagination::Link => match crate::pagination::link(link.as_deref(), "next") {
                        Some(next) if next.starts_with(&base) => Some(next),
                        Some(elsewhere) => {
                            return Err(ConnectorError::UnexpectedShape {
                                app,
                                connection: client.connection().into(),
                                field: format!("link rel=next to {elsewhere}, outside the connection's base URL"),
                            });
                        }
                        None => None,
                    },
                    Pagination::Offset { last, total, .. } => {
                        let at_end = rows.is_empty()
                            || last.as_ref().is_some_and(|p| body.pointer(p).and_then(Value::as_bool) == Some(true))
                            || total
                                .as_ref()
                                .and_then(|p| body.pointer(p)?.as_u64())
                                .is_some_and(|t| (start + rows.len()) as u64 >= t)
                            || asked.is_some_and(|n| rows.len() < n);
                        (!at_end).then(|| (start + rows.len()).to_string())
                    }
                    Pagination::AfterLast { more, key, .. } => match body.pointer(more).and_then(Value::as_bool) {
                        Some(true) => rows.last().and_then(|r| r.pointer(key)).and_then(|k| filter::text(&json_scalar(k)?)),
                        _ => None,
                    },
                };
                Ok((rows, next))
            }
        })
    }
}

#[async_trait::async_trait]
impl ApiTable for SpecTable {
    fn name(&self) -> String {
        format!("{}.{}", self.connector, self.spec.name)
    }

    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        match self.spec.rule_for(f) {
            Some(r) if r.exact => TableProviderFilterPushDown::Exact,
            Some(_) => TableProviderFilterPushDown::Inexact,
            None => TableProviderFilterPushDown::Unsupported,
        }
    }

    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        let params = Self::query_string(&self.spec.params(scan));
        let sep = if params.is_empty() { "" } else { "&" };
        let paged = self.paged();
        let (Some(fan), Some(parent)) = (&self.spec.fan_out, &self.parent) else {
            let q = if params.is_empty() { String::new() } else { format!("?{params}") };
            return vec![format!("GET {}{q}{paged}", self.spec.path)];
        };
        match self.spec.pinned_keys(scan) {
            Some(keys) => keys.iter().map(|k| format!("GET {}?{}={k}{sep}{params}{paged}", self.spec.path, fan.param)).collect(),
            None => {
                let parent_params = Self::query_string(&parent.params(&ScanRequest::default()));
                vec![
                    format!("GET {}?{parent_params} (all pages)", parent.path),
                    format!(
                        "GET {}?{}={{{}}}{sep}{params} per {} row{paged}",
                        self.spec.path,
                        fan.param,
                        fan.key.trim_start_matches('/'),
                        parent.name
                    ),
                ]
            }
        }
    }

    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        self.spec.pinned_keys(scan).map_or(0, |k| k.len() as u64)
    }

    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let params = self.spec.params(&scan);
        let endpoint = self.endpoint.clone();
        let (Some(fan), Some(parent)) = (self.spec.fan_out.clone(), self.parent.clone()) else {
            return endpoint.pages(&self.spec, q, params);
        };
        let pinned = self.spec.pinned_keys(&scan);
        let keys = {
            let parents = endpoint.pages(&parent, q.clone(), parent.params(&ScanRequest::default()));
            let pointer = fan.key.clone();
            async move {
                match pinned {
                    Some(keys) => Ok::<_, ConnectorError>(keys),
                    None => {
                        let pages: Vec<Vec<Value>> = parents.try_collect().await?;
                        Ok(pages
                            .into_iter()
                            .flatten()
                            .filter_map(|row| row.pointer(&pointer).and_then(|k| filter::text(&json_scalar(k)?)))
                            .collect())
                    }
                }
            }
        };
        let table = self.spec.clone();
        let limited = scan.limit.is_some();
        stream::once(Box::pin(keys))
            .map_ok(move |keys: Vec<String>| {
                let concurrency = endpoint.client.max_concurrency();
                let (endpoint, table, q, params, fan) = (endpoint.clone(), table.clone(), q.clone(), params.clone(), fan.clone());
                stream::iter(keys)
                    .map(move |key| {
                        let mut p = params.clone();
                        p.insert(0, (fan.param.clone(), key.clone()));
                        let pages = endpoint.pages(&table, q.clone(), p);
                        // With a limit every filter was exact, so one key's first rows suffice for it.
                        let pages = if limited { pages.take(1).boxed() } else { pages };
                        let (missing, field) = (table.missing_is_empty.clone(), fan.field.clone());
                        pages
                            .or_else(move |e| {
                                let missing = missing.clone();
                                async move {
                                    match e {
                                        ConnectorError::Upstream { ref message, .. } if missing.contains(message) => Ok(vec![]),
                                        e => Err(e),
                                    }
                                }
                            })
                            .map_ok(move |mut rows| {
                                for r in &mut rows {
                                    if let Some(o) = r.as_object_mut() {
                                        o.insert(field.clone(), Value::String(key.clone()));
                                    }
                                }
                                rows
                            })
                            .boxed()
                    })
                    .flatten_unordered(concurrency)
            })
            .try_flatten()
            .boxed()
    }
}

/// The dialect of an app with nothing special about its answers: HTTP statuses say what happened (401 is
/// the credential, 403 a refusal, 429 and 5xx are retried after `Retry-After`), and buckets come from the
/// spec. With it, a connector is its spec file alone.
#[derive(Debug)]
pub struct SpecDialect(pub &'static ConnectorSpec);

impl crate::http::Dialect for SpecDialect {
    fn app(&self) -> &'static str {
        &self.0.app
    }
    fn bucket(&self, url: &str) -> Option<BucketSpec> {
        self.0.bucket(url)
    }
    /// The bucket's state from the headers the spec names, when the answer carries them.
    fn observe(&self, headers: &reqwest::header::HeaderMap) -> Option<crate::governor::Observed> {
        let names = self.0.rate_limit_headers.as_ref()?;
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
        Some(crate::governor::Observed {
            limit: names.limit.as_deref().and_then(number),
            remaining: number(&names.remaining)?,
            reset_in: names
                .window_ms
                .as_deref()
                .and_then(number)
                .map_or(std::time::Duration::from_secs(60), |ms| std::time::Duration::from_millis(ms as u64)),
        })
    }
    fn classify(
        &self,
        connection: &str,
        status: reqwest::StatusCode,
        headers: &reqwest::header::HeaderMap,
        body: &[u8],
    ) -> crate::http::Verdict {
        if status.is_success() {
            return crate::http::Verdict::Ok;
        }
        let parsed = serde_json::from_slice::<Value>(body).ok();
        let message = self
            .0
            .error_message
            .iter()
            .find_map(|p| parsed.as_ref()?.pointer(p)?.as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
        crate::http::classify_common(self.app(), connection, status, headers, message)
    }
}

/// A JSON key as a scalar (text or number).
fn json_scalar(v: &Value) -> Option<ScalarValue> {
    match v {
        Value::String(s) => Some(ScalarValue::from(s.as_str())),
        Value::Number(n) => n.as_i64().map(ScalarValue::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use datafusion::prelude::{col, lit};

    use super::*;

    const SPEC: &str = r#"
name = "chat"
version = "1.0.0"
app = "Chat"

[[table]]
name = "rooms"
path = "/rooms"
records = "/rooms"
column = [{ name = "id", type = "text", pointer = "/id" }]

[[table]]
name = "posts"
path = "/history"
records = "/posts"
page_size = { param = "limit", max = 100 }
fan_out = { parent = "rooms", key = "/id", param = "room", field = "_room" }
column = [
  { name = "room", type = "text", pointer = "/_room" },
  { name = "ts", type = "text", pointer = "/ts" },
  { name = "at", type = "epoch_seconds", pointer = "/ts" },
  { name = "author", type = "text", pointer = "/author" },
  { name = "body", type = "text", pointer = "/body" },
]
[[table.filter]]
columns = ["room"]
ops = ["=", "in"]
fan_out = true
exact = true
[[table.filter]]
columns = ["ts", "at"]
ops = ["<", ">=", "="]
lower = "oldest"
upper = "latest"
value = "seconds_6"
exact = false
with = { inclusive = "true" }
[[table.filter]]
columns = ["author"]
ops = ["="]
param = "user"
exact = true
"#;

    fn posts() -> TableSpec {
        ConnectorSpec::parse(SPEC).unwrap().table("posts").unwrap().clone()
    }

    #[test]
    fn each_filter_is_pushed_down_only_by_the_rule_that_sends_it() {
        let t = posts();
        let answer = |e: Expr| t.rule_for(&e).map(|r| r.exact);
        assert_eq!(answer(col("room").in_list(vec![lit("a"), lit("b")], false)), Some(true));
        assert_eq!(answer(col("ts").gt_eq(lit("1700000000.000100"))), Some(false));
        assert_eq!(answer(col("author").eq(lit("ann"))), Some(true));
        // Not declared: another operator, another column, several values for a one-value parameter.
        assert_eq!(answer(col("ts").gt(lit("1"))), None);
        assert_eq!(answer(col("body").eq(lit("hi"))), None);
        assert_eq!(answer(col("author").in_list(vec![lit("ann"), lit("bob")], false)), None);
        // A value the format cannot write is not pushed down.
        assert_eq!(answer(col("ts").gt_eq(lit("not a number"))), None);
    }

    #[test]
    fn the_parameters_sent_are_those_of_the_accepted_filters() {
        let t = posts();
        let scan = |filters: Vec<Expr>, limit| ScanRequest { filters, limit, ..Default::default() };
        let at = lit(ScalarValue::TimestampMicrosecond(Some(1_700_000_000_500_000), Some("UTC".into())));
        let params = t.params(&scan(
            vec![col("ts").gt_eq(lit("5")), col("ts").gt_eq(lit("7")), col("at").lt(at), col("author").eq(lit("ann"))],
            Some(20),
        ));
        let expected: Vec<(String, String)> =
            [("limit", "20"), ("oldest", "7.000000"), ("latest", "1700000000.500000"), ("user", "ann"), ("inclusive", "true")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        assert_eq!(sorted(params), sorted(expected));
        // `=` on a range rule sends both bounds; no range filter, no `inclusive`.
        let eq = t.params(&scan(vec![col("ts").eq(lit("9"))], None));
        assert!(
            eq.contains(&("oldest".into(), "9.000000".into())) && eq.contains(&("latest".into(), "9.000000".into())),
            "{eq:?}"
        );
        assert_eq!(t.params(&scan(vec![], None)), [("limit".to_string(), "100".to_string())]);
        // The fan-out's keys are not parameters of every request.
        let keys = scan(vec![col("room").in_list(vec![lit("a"), lit("b")], false)], None);
        assert_eq!(t.pinned_keys(&keys), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(t.params(&keys), [("limit".to_string(), "100".to_string())]);
    }

    #[test]
    fn a_spec_that_would_drift_is_refused() {
        let broken = |from: &str, to: &str| ConnectorSpec::parse(&SPEC.replacen(from, to, 1)).unwrap_err();
        assert!(broken(r#"columns = ["author"]"#, r#"columns = ["writer"]"#).contains("unknown column `writer`"));
        assert!(broken(r#"param = "user""#, "").contains("names no parameter"));
        assert!(broken(r#"parent = "rooms""#, r#"parent = "halls""#).contains("fan-out parent `halls`"));
        assert!(broken(r#"type = "epoch_seconds""#, r#"type = "instant""#).contains("unknown type `instant`"));
        assert!(broken("records = \"/rooms\"", "records = \"/rooms\"\nrecord = \"/x\"").contains("unknown field"));
    }
}
