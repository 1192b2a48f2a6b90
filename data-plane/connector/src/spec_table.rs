//! A table served by its spec ([`crate::spec`]): the requests a scan makes — a list, a lookup of one
//! row, a list per parent row (fan-out) or its unpinned alternative — each followed through its pages,
//! with the connection's variables (e.g. GitHub's `orgs`) in the paths.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::error::{ConnectorError, Result};
use crate::filter;
use crate::http::{ApiClient, QueryContext};
use crate::json::Column;
use crate::spec::{ConnectorSpec, Pagination, TableSpec, json_scalar};
use crate::table::{ApiTable, ScanRequest};

/// A table served by its spec through the connection's client.
#[derive(Debug)]
pub struct SpecTable {
    connector: String,
    spec: TableSpec,
    parent: Option<TableSpec>,
    columns: Vec<Column>,
    endpoint: Endpoint,
}

/// Where a connection's requests go: its governed client, base URL and path variables.
#[derive(Debug, Clone)]
struct Endpoint {
    client: Arc<ApiClient>,
    base: String,
    app: &'static str,
    /// `{name}` in a path → the connection's values (one request chain each).
    vars: Arc<BTreeMap<String, Vec<String>>>,
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
            endpoint: Endpoint { client, base: base.trim_end_matches('/').to_string(), app, vars: Arc::default() },
        })
    }

    /// The connection's values of the paths' variables (`{orgs}` → every organisation).
    pub fn with_vars(mut self, vars: Arc<BTreeMap<String, Vec<String>>>) -> SpecTable {
        self.endpoint.vars = vars;
        self
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

    /// Which requests a scan makes.
    fn route(&self, scan: &ScanRequest) -> Route {
        if let Some(key) = self.spec.lookup_key(scan) {
            return Route::Lookup(key);
        }
        match (&self.spec.fan_out, self.spec.pinned_keys(scan)) {
            (None, _) => Route::List,
            (Some(_), Some(keys)) => Route::Keys(keys),
            (Some(_), None) if self.spec.unpinned.is_some() => Route::Unpinned,
            (Some(_), None) => Route::Parent,
        }
    }

    /// The parameters of the unpinned list: its own, without those it does not take.
    fn unpinned_params(&self, scan: &ScanRequest) -> Vec<(String, String)> {
        let Some(u) = &self.spec.unpinned else { return vec![] };
        let mut params: Vec<(String, String)> = u.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        params.extend(self.spec.params(scan).into_iter().filter(|(k, _)| !u.drop.contains(k)));
        params
    }
}

/// The requests of one scan.
enum Route {
    /// The table's own path (for each value of its variables).
    List,
    /// One row at the lookup path.
    Lookup(String),
    /// A list per pinned key.
    Keys(Vec<String>),
    /// The parent's rows, then a list per row.
    Parent,
    /// The one list that holds every parent's rows.
    Unpinned,
}

/// `v` as a URL path, `/` kept between its segments; every other character that is not plain is
/// percent-encoded, and `.` / `..` segments are encoded too, so a value cannot climb to another endpoint.
fn path_value(v: &str) -> String {
    v.split('/')
        .map(|segment| match segment {
            "." => "%2E".to_string(),
            ".." => "%2E%2E".to_string(),
            s => s
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                    b => format!("%{b:02X}"),
                })
                .collect(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl Endpoint {
    /// `path` with `{key}` and the connection's variables filled in: one path per value of a variable.
    fn paths(&self, path: &str, key: Option<&str>) -> Result<Vec<String>> {
        let mut paths = vec![match key {
            Some(k) => path.replace("{key}", &path_value(k)),
            None => path.to_string(),
        }];
        while let Some(start) = paths[0].find('{') {
            let end = paths[0][start..].find('}').map(|e| start + e).unwrap_or(paths[0].len() - 1);
            let name = paths[0][start + 1..end].to_string();
            let values = self.vars.get(&name).filter(|v| !v.is_empty()).ok_or_else(|| ConnectorError::InvalidSpec {
                connector: self.app.to_lowercase(),
                message: format!("path `{path}` names `{{{name}}}`, which the connection does not give"),
            })?;
            let pattern = format!("{{{name}}}");
            paths = paths.iter().flat_map(|p| values.iter().map(|v| p.replace(&pattern, &path_value(v)))).collect();
        }
        Ok(paths)
    }

    /// Every page of `table`'s answers at each of `paths`, concurrently within the connection's bound.
    fn lists(
        &self,
        table: &TableSpec,
        paths: Vec<String>,
        q: Arc<QueryContext>,
        params: Vec<(String, String)>,
        limit: Option<usize>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let concurrency = self.client.max_concurrency();
        let (endpoint, table) = (self.clone(), table.clone());
        stream::iter(paths)
            .map(move |path| missing_is_none(&table, endpoint.pages(&table, &path, q.clone(), params.clone(), limit)))
            .flatten_unordered(concurrency)
            .boxed()
    }

    /// Every page of `table`'s answer at `path` to `params` — or, with a limit (every filter was exact),
    /// as many as hold it.
    fn pages(
        &self,
        table: &TableSpec,
        path: &str,
        q: Arc<QueryContext>,
        params: Vec<(String, String)>,
        limit: Option<usize>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let needed = limit.map(|l| {
            let per_page = table.page_size.as_ref().map_or(l, |s| l.clamp(1, s.max));
            l.div_ceil(per_page.max(1)).max(1)
        });
        if let Pagination::Link { page: Some(page) } = &table.pagination {
            return self.numbered_pages(table, path, q, params, page.clone(), needed);
        }
        let (client, url, app) = (self.client.clone(), format!("{}{}", self.base, path), self.app);
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
                    (Some(next), Pagination::Link { .. }) => {
                        params.clear();
                        next
                    }
                    _ => url,
                };
                let response = client.get(&q, &target, &params).await?;
                let link = response.headers.get(reqwest::header::LINK).and_then(|v| v.to_str().ok()).map(str::to_string);
                let mut body = response.body;
                let rows = take_rows(&mut body, &records, app, client.connection())?;
                let next = match &pagination {
                    Pagination::None => None,
                    Pagination::Cursor { next, .. } => {
                        body.pointer(next).and_then(Value::as_str).filter(|c| !c.is_empty()).map(str::to_string)
                    }
                    Pagination::Link { .. } => match crate::pagination::link(link.as_deref(), "next") {
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
        .take(needed.unwrap_or(usize::MAX))
        .boxed()
    }

    /// Link-paged answers whose pages are numbered: the first page, then — from its `rel="last"` link —
    /// every other page at once (within the connection's bound), or one by one when a limit may stop
    /// the scan early.
    fn numbered_pages(
        &self,
        table: &TableSpec,
        path: &str,
        q: Arc<QueryContext>,
        params: Vec<(String, String)>,
        page: String,
        needed: Option<usize>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let (client, url, app, records) =
            (self.client.clone(), format!("{}{}", self.base, path), self.app, table.records.clone());
        let with_page = move |n: usize| {
            let mut p = params.clone();
            p.push((page.clone(), n.to_string()));
            p
        };
        let first = {
            let (client, q, url, params) = (client.clone(), q.clone(), url.clone(), with_page(1));
            async move { client.get(&q, &url, &params).await }
        };
        stream::once(first)
            .map(move |response| -> Result<BoxStream<'static, Result<Vec<Value>>>> {
                let response = response?;
                let link = response.headers.get(reqwest::header::LINK).and_then(|v| v.to_str().ok());
                let last = crate::pagination::link(link, "last").and_then(|u| crate::pagination::page_number(&u)).unwrap_or(1);
                let mut body = response.body;
                let rows = take_rows(&mut body, &records, app, client.connection())?;
                let rest = (2..=last.min(needed.unwrap_or(usize::MAX))).map({
                    let (client, q, url, records, with_page) =
                        (client.clone(), q.clone(), url.clone(), records.clone(), with_page.clone());
                    move |n| {
                        let (client, q, url, records, params) =
                            (client.clone(), q.clone(), url.clone(), records.clone(), with_page(n));
                        async move {
                            let mut body = client.get(&q, &url, &params).await?.body;
                            take_rows(&mut body, &records, app, client.connection())
                        }
                    }
                });
                let concurrency = if needed.is_some() { 1 } else { client.max_concurrency() };
                Ok(stream::once(async move { Ok(rows) }).chain(stream::iter(rest).buffered(concurrency)).boxed())
            })
            .try_flatten()
            .boxed()
    }
}

/// The rows at `records` in an answer (`""`: the answer is the array).
fn take_rows(body: &mut Value, records: &str, app: &'static str, connection: &str) -> Result<Vec<Value>> {
    match body.pointer_mut(records).map(Value::take) {
        Some(Value::Array(rows)) => Ok(rows),
        _ => Err(ConnectorError::UnexpectedShape {
            app,
            connection: connection.into(),
            field: if records.is_empty() { "[…] (a list)".into() } else { records.trim_start_matches('/').into() },
        }),
    }
}

/// A parent or key the API says is not there is no rows, not an error.
fn missing_is_none(table: &TableSpec, pages: BoxStream<'static, Result<Vec<Value>>>) -> BoxStream<'static, Result<Vec<Value>>> {
    let (codes, statuses) = (table.missing_is_empty.clone(), table.missing_status.clone());
    if codes.is_empty() && statuses.is_empty() {
        return pages;
    }
    pages
        .or_else(move |e| {
            let missing = match &e {
                ConnectorError::Upstream { message, status, .. } => codes.contains(message) || statuses.contains(status),
                _ => false,
            };
            async move { if missing { Ok(vec![]) } else { Err(e) } }
        })
        .boxed()
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
        match self.spec.pushdown(f) {
            Some(true) => TableProviderFilterPushDown::Exact,
            Some(false) => TableProviderFilterPushDown::Inexact,
            None => TableProviderFilterPushDown::Unsupported,
        }
    }

    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        let params = Self::query_string(&self.spec.params(scan));
        let paged = self.paged();
        let shown = |path: &str, key: Option<&str>| self.endpoint.paths(path, key).unwrap_or_else(|_| vec![path.to_string()]);
        let with = |extra: String, params: &str| match (extra.is_empty(), params.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("?{params}"),
            (false, true) => format!("?{extra}"),
            (false, false) => format!("?{extra}&{params}"),
        };
        let key_param = |k: &str| match self.spec.fan_out.as_ref().and_then(|f| f.param.as_ref()) {
            Some(p) => format!("{p}={k}"),
            None => String::new(),
        };
        match self.route(scan) {
            Route::List => {
                shown(&self.spec.path, None).iter().map(|p| format!("GET {p}{}{paged}", with(String::new(), &params))).collect()
            }
            Route::Lookup(key) => shown(self.spec.lookup_path.as_deref().unwrap_or_default(), Some(&key))
                .iter()
                .map(|p| format!("GET {p}"))
                .collect(),
            Route::Keys(keys) => keys
                .iter()
                .flat_map(|k| shown(&self.spec.path, Some(k)).into_iter().map(move |p| (p, k)))
                .map(|(p, k)| format!("GET {p}{}{paged}", with(key_param(k), &params)))
                .collect(),
            Route::Unpinned => {
                let u = self.spec.unpinned.as_ref().map_or("", |u| u.path.as_str());
                let params = Self::query_string(&self.unpinned_params(scan));
                shown(u, None).iter().map(|p| format!("GET {p}{}{paged}", with(String::new(), &params))).collect()
            }
            Route::Parent => {
                let (Some(fan), Some(parent)) = (&self.spec.fan_out, &self.parent) else { return vec![] };
                let parent_params = Self::query_string(&parent.params(&ScanRequest::default()));
                let mut lines: Vec<String> = shown(&parent.path, None)
                    .iter()
                    .map(|p| format!("GET {p}{} (all pages)", with(String::new(), &parent_params)))
                    .collect();
                let key = format!("{{{}}}", fan.key.trim_start_matches('/'));
                let path = self.spec.path.replace("{key}", &key);
                let path = shown(&path, None).join(", ");
                lines.push(format!("GET {path}{} per {} row{paged}", with(key_param(&key), &params), parent.name));
                lines
            }
        }
    }

    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        let count = |path: &str| self.endpoint.paths(path, None).map_or(0, |p| p.len() as u64);
        match self.route(scan) {
            Route::List => count(&self.spec.path),
            Route::Lookup(_) => 1,
            Route::Keys(keys) => keys.len() as u64,
            Route::Unpinned => self.spec.unpinned.as_ref().map_or(0, |u| count(&u.path)),
            Route::Parent => 0,
        }
    }

    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let table = self.spec.clone();
        let endpoint = self.endpoint.clone();
        let derive = {
            let table = table.clone();
            move |mut rows: Vec<Value>| {
                table.derive(&mut rows);
                rows
            }
        };
        let listed = |path: &str, key: Option<&str>, params: Vec<(String, String)>| match endpoint.paths(path, key) {
            Ok(paths) => endpoint.lists(&table, paths, q.clone(), params, scan.limit),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        };
        let rows = match self.route(&scan) {
            Route::List => listed(&table.path, None, table.params(&scan)),
            Route::Unpinned => {
                let path = table.unpinned.as_ref().map(|u| u.path.clone()).unwrap_or_default();
                listed(&path, None, self.unpinned_params(&scan))
            }
            Route::Lookup(key) => {
                let path = table.lookup_path.clone().unwrap_or_default();
                let one = match endpoint.paths(&path, Some(&key)) {
                    Ok(paths) => {
                        let (endpoint, q) = (endpoint.clone(), q.clone());
                        let lookups = stream::iter(paths).then(move |p| {
                            let (endpoint, q) = (endpoint.clone(), q.clone());
                            async move { Ok(vec![endpoint.client.get(&q, &format!("{}{p}", endpoint.base), &[]).await?.body]) }
                        });
                        lookups.boxed()
                    }
                    Err(e) => stream::once(async move { Err(e) }).boxed(),
                };
                missing_is_none(&table, one)
            }
            Route::Keys(keys) => self.fan_out(Box::pin(async move { Ok(keys) }), &scan, q.clone()),
            Route::Parent => {
                let (Some(fan), Some(parent)) = (table.fan_out.clone(), self.parent.clone()) else {
                    return stream::empty().boxed();
                };
                let parents = match endpoint.paths(&parent.path, None) {
                    Ok(paths) => endpoint.lists(&parent, paths, q.clone(), parent.params(&ScanRequest::default()), None),
                    Err(e) => stream::once(async move { Err(e) }).boxed(),
                };
                let keys = async move {
                    let pages: Vec<Vec<Value>> = parents.try_collect().await?;
                    Ok(pages
                        .into_iter()
                        .flatten()
                        .filter_map(|row| row.pointer(&fan.key).and_then(|k| filter::text(&json_scalar(k)?)))
                        .collect())
                };
                self.fan_out(Box::pin(keys), &scan, q.clone())
            }
        };
        rows.map_ok(derive).boxed()
    }
}

impl SpecTable {
    /// A list per key (as the path's `{key}` or the fan-out's parameter), concurrently.
    fn fan_out(
        &self,
        keys: std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>>> + Send>>,
        scan: &ScanRequest,
        q: Arc<QueryContext>,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let Some(fan) = self.spec.fan_out.clone() else { return stream::empty().boxed() };
        let (endpoint, table, params) = (self.endpoint.clone(), self.spec.clone(), self.spec.params(scan));
        // With a limit every filter was exact, so one key's first rows suffice for it.
        let limit = scan.limit;
        stream::once(keys)
            .map_ok(move |keys: Vec<String>| {
                let concurrency = endpoint.client.max_concurrency();
                let (endpoint, table, q, params, fan) = (endpoint.clone(), table.clone(), q.clone(), params.clone(), fan.clone());
                stream::iter(keys)
                    .map(move |key| {
                        let mut p = params.clone();
                        if let Some(param) = &fan.param {
                            p.insert(0, (param.clone(), key.clone()));
                        }
                        let pages = match endpoint.paths(&table.path, Some(&key)) {
                            Ok(paths) => stream::iter(paths)
                                .map({
                                    let (endpoint, table, q) = (endpoint.clone(), table.clone(), q.clone());
                                    move |path| endpoint.pages(&table, &path, q.clone(), p.clone(), limit)
                                })
                                .flatten()
                                .boxed(),
                            Err(e) => stream::once(async move { Err(e) }).boxed(),
                        };
                        let field = fan.field.clone();
                        missing_is_none(&table, pages)
                            .map_ok(move |mut rows| {
                                if let Some(field) = &field {
                                    for r in &mut rows {
                                        if let Some(o) = r.as_object_mut() {
                                            o.insert(field.clone(), Value::String(key.clone()));
                                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_values_cannot_leave_their_segments() {
        assert_eq!(path_value("acme/api"), "acme/api");
        assert_eq!(path_value("acme/../../orgs/other"), "acme/%2E%2E/%2E%2E/orgs/other");
        assert_eq!(path_value("a b?c#d"), "a%20b%3Fc%23d");
    }
}
