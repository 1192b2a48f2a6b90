//! Salesforce REST as the `salesforce` schema: one table per queryable sObject, standard and custom
//! alike, with columns from describe (`AnnualRevenue` → `annual_revenue`, `Foo__c` → `foo__c`).
//!
//! Scans become one SOQL query: the projection is the SELECT list, filters (`= != < <= > >= IN LIKE
//! IS [NOT] NULL AND OR NOT`) become WHERE, `ORDER BY` on number, date and boolean columns becomes
//! ORDER BY … NULLS FIRST/LAST, and LIMIT becomes LIMIT when every filter is exact; batches follow
//! `nextRecordsUrl`. SOQL compares strings ignoring case and treats NULL in two-valued logic,
//! so string comparisons and `NOT` are pushed as inexact (the engine rechecks); numbers, dates,
//! booleans and NULL tests are exact. Sessions come from OAuth (client credentials, or a refresh token
//! when one is configured) and are renewed once on `INVALID_SESSION_ID`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use futures::StreamExt;
use futures::stream::BoxStream;
use omnisql_connector::governor::{BucketSpec, Observed};
use omnisql_connector::http::classify_common;
use omnisql_connector::{
    ApiClient, ApiTable, ApiTableProvider, Auth, Column, Connector, ConnectorContext, ConnectorError, ConnectorFactory, Dialect,
    Kind, ParameterSpec, Parameters, QueryContext, Result, ScanOptions, ScanRequest, SortKey, Verdict, filter, snake_case,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::{OnceCell, RwLock};

const NAME: &str = "salesforce";
const VERSION: &str = "1.0.0";
const APP: &str = "Salesforce";

static PARAMETERS: &[ParameterSpec] = &[
    ParameterSpec::required("login_url", "OAuth host, e.g. https://login.salesforce.com or the org's My Domain"),
    ParameterSpec::required("client_id", "connected app consumer key"),
    ParameterSpec::secret("client_secret", "connected app consumer secret"),
    ParameterSpec {
        name: "refresh_token",
        description: "refresh token (else the client-credentials flow is used)",
        required: false,
        secret: true,
        default: None,
    },
    ParameterSpec::optional("api_version", "REST API version", Some("v62.0")),
];

#[derive(Debug, Default)]
pub struct SalesforceFactory;

#[async_trait]
impl ConnectorFactory for SalesforceFactory {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> &'static str {
        VERSION
    }
    fn parameters(&self) -> &'static [ParameterSpec] {
        PARAMETERS
    }
    fn discovers_tables(&self) -> bool {
        true
    }

    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let version = params.require(NAME, "api_version")?.to_string();
        if !version.starts_with('v') || version[1..].parse::<f64>().is_err() {
            return Err(ConnectorError::InvalidParameter {
                connector: NAME.into(),
                parameter: "api_version".into(),
                reason: "expected e.g. v62.0".into(),
            });
        }
        let auth = Arc::new(OAuth {
            connection: ctx.connection.clone(),
            login_url: params.require(NAME, "login_url")?.trim_end_matches('/').to_string(),
            client_id: params.require(NAME, "client_id")?.to_string(),
            client_secret: params.require(NAME, "client_secret")?.to_string(),
            refresh_token: params.get("refresh_token").map(str::to_string),
            session: RwLock::new(None),
        });
        let client = ApiClient::new(&ctx, Arc::new(SalesforceDialect), auth.clone(), HeaderMap::new())?;
        let api = Arc::new(Api { client, auth, version });
        let objects = api.sobjects(&QueryContext::default()).await?;
        let described = objects.iter().map(|o| (o.clone(), OnceCell::new())).collect();
        Ok(Arc::new(SalesforceConnector { api, objects, described, scan: ctx.scan }))
    }
}

/// An OAuth session: the access token and the instance it is valid on.
#[derive(Clone)]
struct Session {
    access_token: String,
    instance_url: String,
}

struct OAuth {
    connection: String,
    login_url: String,
    client_id: String,
    client_secret: String,
    refresh_token: Option<String>,
    session: RwLock<Option<Session>>,
}

impl Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").field("login_url", &self.login_url).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

impl OAuth {
    async fn session(&self, http: &reqwest::Client) -> Result<Session> {
        if let Some(s) = self.session.read().await.clone() {
            return Ok(s);
        }
        let mut slot = self.session.write().await;
        if let Some(s) = slot.clone() {
            return Ok(s);
        }
        let mut form = vec![("client_id", self.client_id.as_str()), ("client_secret", self.client_secret.as_str())];
        match &self.refresh_token {
            Some(t) => form.extend([("grant_type", "refresh_token"), ("refresh_token", t.as_str())]),
            None => form.push(("grant_type", "client_credentials")),
        }
        let url = format!("{}/services/oauth2/token", self.login_url);
        let transport =
            |source| ConnectorError::Transport { app: APP, connection: self.connection.clone(), url: url.clone(), source };
        let resp = http.post(&url).form(&form).send().await.map_err(transport)?;
        let status = resp.status();
        let body: Value = resp.json().await.map_err(transport)?;
        if !status.is_success() {
            let message = format!(
                "{}: {}",
                body.get("error").and_then(Value::as_str).unwrap_or("error"),
                body.get("error_description").and_then(Value::as_str).unwrap_or("token request refused")
            );
            return Err(ConnectorError::Unauthorized {
                app: APP,
                connection: self.connection.clone(),
                status: status.as_u16(),
                message,
            });
        }
        let field = |name: &str| {
            body.get(name).and_then(Value::as_str).map(str::to_string).ok_or_else(|| ConnectorError::UnexpectedShape {
                app: APP,
                connection: self.connection.clone(),
                field: name.into(),
            })
        };
        let session = Session {
            access_token: field("access_token")?,
            instance_url: field("instance_url")?.trim_end_matches('/').to_string(),
        };
        *slot = Some(session.clone());
        Ok(session)
    }
}

#[async_trait]
impl Auth for OAuth {
    async fn authorization(&self, http: &reqwest::Client) -> Result<String> {
        Ok(format!("Bearer {}", self.session(http).await?.access_token))
    }
    async fn invalidate(&self) {
        *self.session.write().await = None;
    }
}

#[derive(Debug)]
struct SalesforceDialect;

impl Dialect for SalesforceDialect {
    fn app(&self) -> &'static str {
        APP
    }
    /// The org's rolling 24-hour allocation (15,000 on a Developer Edition until the header says more).
    fn bucket(&self, _url: &str) -> Option<BucketSpec> {
        Some(BucketSpec {
            name: "salesforce:daily".into(),
            capacity: 15_000.0,
            window: std::time::Duration::from_secs(86_400),
            trusted: false,
        })
    }
    /// `Sforce-Limit-Info: api-usage=USED/MAX`.
    fn observe(&self, headers: &HeaderMap) -> Option<Observed> {
        let info = headers.get("sforce-limit-info")?.to_str().ok()?;
        let usage = info.split(',').find_map(|p| p.trim().strip_prefix("api-usage="))?;
        let (used, max) = usage.split_once('/')?;
        let (used, max) = (used.trim().parse::<f64>().ok()?, max.trim().parse::<f64>().ok()?);
        Some(Observed { limit: Some(max), remaining: (max - used).max(0.0), reset_in: std::time::Duration::from_secs(3600) })
    }
    /// A batch that continues through a query locator cannot be served again: the locator is one-shot.
    fn cacheable(&self, url: &str, response: &omnisql_connector::ApiResponse) -> bool {
        !url.contains("/query/") && response.body.get("nextRecordsUrl").is_none()
    }
    /// Salesforce caps an org at 25 concurrent long-running requests; stay well inside it.
    fn default_concurrency(&self) -> usize {
        10
    }
    fn classify(&self, connection: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Ok;
        }
        let first = serde_json::from_slice::<Value>(body).ok().and_then(|v| v.get(0).cloned()).unwrap_or(Value::Null);
        let code = first.get("errorCode").and_then(Value::as_str).unwrap_or("");
        let message =
            first.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
        match code {
            "INVALID_SESSION_ID" => Verdict::Reauthenticate,
            "REQUEST_LIMIT_EXCEEDED" => Verdict::Fail(ConnectorError::QuotaExhausted {
                app: APP,
                connection: connection.into(),
                message: format!("{message} (rolling 24-hour allocation)"),
                reset_in: std::time::Duration::from_secs(3600),
            }),
            _ => classify_common(
                APP,
                connection,
                status,
                headers,
                if code.is_empty() { message } else { format!("{code}: {message}") },
            ),
        }
    }
}

#[derive(Debug)]
struct Api {
    client: ApiClient,
    auth: Arc<OAuth>,
    version: String,
}

impl Api {
    async fn url(&self, path: &str) -> Result<String> {
        let session = self.auth.session(self.client.http()).await?;
        Ok(format!("{}{path}", session.instance_url))
    }

    /// Queryable sObject names.
    async fn sobjects(&self, q: &QueryContext) -> Result<Vec<String>> {
        let url = self.url(&format!("/services/data/{}/sobjects", self.version)).await?;
        let body = self.client.get(q, &url, &[]).await?.body;
        let list = body.get("sobjects").and_then(Value::as_array).ok_or_else(|| ConnectorError::UnexpectedShape {
            app: APP,
            connection: self.client.connection().into(),
            field: "sobjects".into(),
        })?;
        Ok(list
            .iter()
            .filter(|o| o.get("queryable").and_then(Value::as_bool).unwrap_or(false))
            .filter_map(|o| o.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    async fn describe(&self, object: &str) -> Result<Vec<(Column, &'static str)>> {
        let url = self.url(&format!("/services/data/{}/sobjects/{object}/describe", self.version)).await?;
        let body = self.client.get(&QueryContext::default(), &url, &[]).await?.body;
        let fields = body.get("fields").and_then(Value::as_array).ok_or_else(|| ConnectorError::UnexpectedShape {
            app: APP,
            connection: self.client.connection().into(),
            field: "fields".into(),
        })?;
        Ok(fields
            .iter()
            .filter_map(|f| {
                let name = f.get("name")?.as_str()?;
                let kind = match f.get("type")?.as_str()? {
                    "boolean" => (Kind::Bool, "bool"),
                    "int" | "long" => (Kind::Int, "number"),
                    "double" | "currency" | "percent" => (Kind::Float, "number"),
                    "date" => (Kind::Date, "date"),
                    "datetime" => (Kind::Timestamp, "datetime"),
                    "address" | "location" | "base64" | "anyType" | "complexvalue" => return None,
                    _ => (Kind::Str, "string"),
                };
                Some((Column::new(&snake_case(name), kind.0, &format!("/{name}")), kind.1))
            })
            .collect())
    }
}

#[derive(Debug)]
struct SalesforceConnector {
    api: Arc<Api>,
    objects: Vec<String>,
    /// Each object's description, fetched once on first use; objects are described concurrently.
    described: HashMap<String, OnceCell<Arc<SObjectTable>>>,
    scan: ScanOptions,
}

#[async_trait]
impl Connector for SalesforceConnector {
    fn table_names(&self) -> Vec<String> {
        self.objects.iter().map(|o| snake_case(o)).collect()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(object) = self.objects.iter().find(|o| snake_case(o) == name.to_lowercase()) else {
            return Ok(None);
        };
        let Some(cell) = self.described.get(object) else {
            return Ok(None);
        };
        let table = cell
            .get_or_try_init(|| async {
                let fields = self.api.describe(object).await?;
                let (columns, types) = fields.into_iter().unzip();
                Ok::<_, ConnectorError>(Arc::new(SObjectTable {
                    api: self.api.clone(),
                    object: object.clone(),
                    columns,
                    types,
                    records: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
                }))
            })
            .await?
            .clone();
        Ok(Some(Arc::new(ApiTableProvider::new(table, self.scan))))
    }
}

#[derive(Debug)]
struct SObjectTable {
    api: Arc<Api>,
    object: String,
    columns: Vec<Column>,
    /// SOQL literal style per column: string, number, bool, date, datetime.
    types: Vec<&'static str>,
    /// Records of the object, as the last unfiltered query's `totalSize` said (`u64::MAX`: not known yet).
    records: Arc<std::sync::atomic::AtomicU64>,
}

/// Records a SOQL query returns per page (Salesforce's default batch size).
const RECORDS_PER_PAGE: u64 = 2000;

impl SObjectTable {
    fn field(&self, column: &str) -> Option<(&str, &'static str)> {
        let i = self.columns.iter().position(|c| c.name == column)?;
        Some((self.columns[i].pointer.trim_start_matches('/'), self.types[i]))
    }

    fn soql_literal(kind: &str, v: &ScalarValue) -> Option<String> {
        if v.is_null() {
            return None;
        }
        match kind {
            "string" => filter::text(v).map(|s| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
            "number" => match v {
                ScalarValue::Utf8(_) | ScalarValue::Utf8View(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Boolean(_) => None,
                v => filter::text(v).filter(|t| t.parse::<f64>().is_ok()),
            },
            "bool" => match v {
                ScalarValue::Boolean(Some(b)) => Some(b.to_string()),
                _ => None,
            },
            "datetime" => {
                let micros = filter::timestamp_micros(v)?;
                let t = chrono::DateTime::from_timestamp_micros(micros)?;
                Some(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            }
            "date" => match v {
                ScalarValue::Date32(Some(d)) => chrono::NaiveDate::from_num_days_from_ce_opt(*d + 719_163).map(|d| d.to_string()),
                _ => None,
            },
            _ => None,
        }
    }

    /// `expr` as a SOQL condition and whether SOQL's answer is exactly SQL's (else a superset).
    fn translate(&self, e: &Expr) -> Option<(String, bool)> {
        match e {
            Expr::BinaryExpr(b) if b.op == Operator::And => {
                let (l, le) = self.translate(&b.left)?;
                let (r, re) = self.translate(&b.right)?;
                Some((format!("({l} AND {r})"), le && re))
            }
            Expr::BinaryExpr(b) if b.op == Operator::Or => {
                let (l, le) = self.translate(&b.left)?;
                let (r, re) = self.translate(&b.right)?;
                Some((format!("({l} OR {r})"), le && re))
            }
            // NOT of an exact condition is a superset in SOQL (NULL rows come back); of an inexact one it
            // could be a subset, which would lose rows, so that is not pushed.
            Expr::Not(inner) => {
                let (c, exact) = self.translate(inner)?;
                exact.then(|| (format!("(NOT {c})"), false))
            }
            Expr::IsNull(inner) => Some((format!("{} = null", self.field(filter::column(inner)?)?.0), true)),
            Expr::IsNotNull(inner) => Some((format!("{} != null", self.field(filter::column(inner)?)?.0), true)),
            Expr::Like(l) if !l.negated && l.escape_char.is_none() => {
                let (field, kind) = self.field(filter::column(&l.expr)?)?;
                let pattern = filter::text(&filter::literal(&l.pattern)?)?;
                if kind != "string" || pattern.contains('\\') {
                    return None;
                }
                Some((
                    format!("{field} LIKE {}", Self::soql_literal("string", &ScalarValue::Utf8(Some(pattern)))?),
                    l.case_insensitive,
                ))
            }
            _ => {
                if let Some((c, values, negated)) = filter::in_list(e) {
                    let (field, kind) = self.field(c)?;
                    let list = values.iter().map(|v| Self::soql_literal(kind, v)).collect::<Option<Vec<_>>>()?;
                    if list.is_empty() {
                        return None;
                    }
                    let cond = if negated {
                        format!("({field} NOT IN ({}) AND {field} != null)", list.join(", "))
                    } else {
                        format!("{field} IN ({})", list.join(", "))
                    };
                    return Some((cond, kind != "string"));
                }
                let (c, op, v) = filter::comparison(e)?;
                let (field, kind) = self.field(c)?;
                let value = Self::soql_literal(kind, &v)?;
                let exact = kind != "string";
                let cond = match op {
                    Operator::Eq => format!("{field} = {value}"),
                    // SQL's `<>` drops NULLs; SOQL's keeps them.
                    Operator::NotEq => format!("({field} != {value} AND {field} != null)"),
                    Operator::Lt => format!("{field} < {value}"),
                    Operator::LtEq => format!("{field} <= {value}"),
                    Operator::Gt => format!("{field} > {value}"),
                    Operator::GtEq => format!("{field} >= {value}"),
                    _ => return None,
                };
                Some((cond, exact))
            }
        }
    }

    /// The scans that together answer `scan`, each with SOQL short enough for one request: `scan`
    /// itself, or copies that each take a slice of its longest `IN` list. Splitting keeps the answer
    /// exact (an `IN` list is a union), but not an order across slices, so an ordered scan that does not
    /// fit is refused with an error that says why.
    fn split(&self, scan: &ScanRequest) -> Result<Vec<ScanRequest>> {
        let total = url_len(&self.soql(scan));
        if total <= MAX_SOQL_URL_BYTES {
            return Ok(vec![scan.clone()]);
        }
        let too_large = |why: String| ConnectorError::RequestTooLarge {
            app: APP,
            connection: self.api.client.connection().into(),
            message: format!(
                "its SOQL for {} is {total} bytes as a URL, more than the {MAX_SOQL_URL_BYTES} Salesforce accepts, and {why}",
                self.object
            ),
        };
        if !scan.order.is_empty() {
            return Err(too_large("an ordered query cannot be split: use fewer values in IN (…) or drop the ORDER BY".into()));
        }
        let longest = scan
            .filters
            .iter()
            .enumerate()
            .filter_map(|(i, f)| match f {
                Expr::InList(l) if !l.negated && self.translate(f).is_some() => Some((i, l)),
                _ => None,
            })
            .max_by_key(|(_, l)| l.list.len());
        let Some((index, in_list)) = longest else {
            return Err(too_large("it has no IN (…) list to split: narrow the filters".into()));
        };
        // What each value adds to the URL, and what the query takes without the list's values.
        let kind = filter::column(&in_list.expr).and_then(|c| self.field(c)).map_or("string", |(_, k)| k);
        let cost =
            |e: &Expr| filter::literal(e).and_then(|v| Self::soql_literal(kind, &v)).map_or(0, |l| url_len(&l) + url_len(", "));
        let room = MAX_SOQL_URL_BYTES.saturating_sub(total - in_list.list.iter().map(cost).sum::<usize>());
        let mut chunks: Vec<Vec<Expr>> = vec![Vec::new()];
        let mut used = 0;
        // A value in two slices would return its records twice.
        let mut seen = std::collections::HashSet::new();
        for value in in_list.list.iter().filter(|v| seen.insert(v.to_string())) {
            let c = cost(value);
            if c > room {
                return Err(too_large("one of its IN (…) values alone does not fit: narrow the other filters".into()));
            }
            if used + c > room {
                chunks.push(Vec::new());
                used = 0;
            }
            used += c;
            if let Some(chunk) = chunks.last_mut() {
                chunk.push(value.clone());
            }
        }
        Ok(chunks
            .into_iter()
            .map(|values| {
                let mut part = scan.clone();
                part.filters[index] =
                    Expr::InList(datafusion::logical_expr::expr::InList::new(in_list.expr.clone(), values, false));
                part
            })
            .collect())
    }

    fn soql(&self, scan: &ScanRequest) -> String {
        let mut fields: Vec<&str> = match &scan.projection {
            Some(p) => p.iter().map(|i| self.columns[*i].pointer.trim_start_matches('/')).collect(),
            None => self.columns.iter().map(|c| c.pointer.trim_start_matches('/')).collect(),
        };
        if fields.is_empty() {
            fields.push("Id");
        }
        let mut soql = format!("SELECT {} FROM {}", fields.join(", "), self.object);
        let conditions: Vec<String> = scan.filters.iter().filter_map(|f| self.translate(f).map(|(c, _)| c)).collect();
        if !conditions.is_empty() {
            soql.push_str(" WHERE ");
            soql.push_str(&conditions.join(" AND "));
        }
        let order: Vec<String> = scan
            .order
            .iter()
            .filter_map(|k| {
                let (field, _) = self.field(&k.column)?;
                let direction = if k.descending { "DESC" } else { "ASC" };
                Some(format!("{field} {direction} NULLS {}", if k.nulls_first { "FIRST" } else { "LAST" }))
            })
            .collect();
        if !order.is_empty() {
            soql.push_str(" ORDER BY ");
            soql.push_str(&order.join(", "));
        }
        if let Some(limit) = scan.limit {
            soql.push_str(&format!(" LIMIT {limit}"));
        }
        soql
    }
}

#[async_trait]
impl ApiTable for SObjectTable {
    fn name(&self) -> String {
        format!("salesforce.{}", snake_case(&self.object))
    }
    fn columns(&self) -> &[Column] {
        &self.columns
    }
    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        match self.translate(f) {
            Some((_, true)) => TableProviderFilterPushDown::Exact,
            Some((_, false)) => TableProviderFilterPushDown::Inexact,
            None => TableProviderFilterPushDown::Unsupported,
        }
    }
    /// SOQL orders strings ignoring case (SQL does not), so only numbers, dates and booleans are exact.
    fn sorts_exactly(&self, key: &SortKey) -> bool {
        matches!(self.field(&key.column), Some((_, "number" | "date" | "datetime" | "bool")))
    }
    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        match self.split(scan) {
            Ok(parts) if parts.len() > 1 => vec![format!(
                "GET /services/data/{}/query?q=… {} times, one slice of the IN list each (then nextRecordsUrl): {}",
                self.api.version,
                parts.len(),
                self.soql(&parts[0])
            )],
            _ => vec![format!("GET /services/data/{}/query?q={} (then nextRecordsUrl)", self.api.version, self.soql(scan))],
        }
    }
    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        self.split(scan).map_or(0, |parts| parts.len() as u64)
    }
    /// Keys are worth waiting for once the object is known to span several pages (learned from an
    /// earlier unfiltered query): one keyed query then replaces a chain of `nextRecordsUrl` pages.
    fn keys_worth_waiting_for(&self, _column: &str) -> bool {
        let records = self.records.load(std::sync::atomic::Ordering::Relaxed);
        records != u64::MAX && records > RECORDS_PER_PAGE
    }
    /// The object's size once an unfiltered query has told it (a bound for a filtered scan).
    fn estimated_rows(&self, _scan: &ScanRequest) -> datafusion::common::stats::Precision<usize> {
        match self.records.load(std::sync::atomic::Ordering::Relaxed) {
            u64::MAX => datafusion::common::stats::Precision::Absent,
            n => datafusion::common::stats::Precision::Inexact(n as usize),
        }
    }
    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let parts = match self.split(&scan) {
            Ok(parts) => parts,
            Err(e) => return Box::pin(futures::stream::once(async move { Err(e) })),
        };
        if parts.len() == 1 {
            return self.fetch_one(&scan, q);
        }
        // Slices one after another; a LIMIT (pushed only when exact) is applied across them.
        let streams: Vec<_> = parts.iter().map(|p| self.fetch_one(p, q.clone())).collect();
        let mut left = scan.limit.unwrap_or(usize::MAX);
        Box::pin(futures::stream::iter(streams).flatten().take_while(move |page| {
            let go = left > 0;
            if let Ok(rows) = page {
                left = left.saturating_sub(rows.len());
            }
            futures::future::ready(go)
        }))
    }
}

/// Salesforce refuses request URLs over about 16 KB; SOQL longer than this is split.
const MAX_SOQL_URL_BYTES: usize = 15_000;

/// Bytes `text` takes percent-encoded in a URL (an upper bound).
fn url_len(text: &str) -> usize {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { 1 } else { 3 }).sum()
}

impl SObjectTable {
    /// One SOQL query and its `nextRecordsUrl` pages.
    fn fetch_one(&self, scan: &ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let soql = self.soql(scan);
        let api = self.api.clone();
        // An unfiltered query's `totalSize` is the object's size: whether join keys are worth waiting for.
        let learn = scan.filters.is_empty().then(|| self.records.clone());
        omnisql_connector::pagination::follow(move |next: Option<String>| {
            let (api, q, soql, learn) = (api.clone(), q.clone(), soql.clone(), learn.clone());
            async move {
                let resp = match next {
                    None => {
                        let url = api.url(&format!("/services/data/{}/query", api.version)).await?;
                        api.client.get(&q, &url, &[("q".to_string(), soql)]).await?
                    }
                    Some(path) => api.client.get(&q, &api.url(&path).await?, &[]).await?,
                };
                let mut body = resp.body;
                let records = match body.get_mut("records").map(Value::take) {
                    Some(Value::Array(r)) => r,
                    _ => {
                        return Err(ConnectorError::UnexpectedShape {
                            app: APP,
                            connection: api.client.connection().into(),
                            field: "records".into(),
                        });
                    }
                };
                if let (Some(records), Some(total)) = (&learn, body.get("totalSize").and_then(Value::as_u64)) {
                    records.store(total, std::sync::atomic::Ordering::Relaxed);
                }
                let done = body.get("done").and_then(Value::as_bool).unwrap_or(true);
                let next = if done { None } else { body.get("nextRecordsUrl").and_then(Value::as_str).map(str::to_string) };
                Ok((records, next))
            }
        })
    }
}
