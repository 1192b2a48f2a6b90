//! The Slack Web API as the `slack` schema: `channels` (conversations.list), `users` (users.list) and
//! `messages` (conversations.history).
//!
//! Slack reports failures as HTTP 200 with `ok: false`; the dialect reads them (`invalid_auth`,
//! `token_revoked`, … are credential errors) and honours `Retry-After` on 429. Pages follow
//! `response_metadata.next_cursor` until it is empty (never by page size). Pushdown on `messages`:
//! `channel_id = / IN` picks the channels (else every channel is read, concurrently); `ts` and
//! `posted_at` ranges become `oldest` / `latest` (inexact: Slack compares numerically, the engine
//! rechecks).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use omnisql_connector::governor::BucketSpec;
use omnisql_connector::http::classify_common;
use omnisql_connector::{
    ApiClient, ApiTable, ApiTableProvider, BearerToken, Column, Connector, ConnectorContext, ConnectorError, ConnectorFactory,
    Dialect, Kind, ParameterSpec, Parameters, QueryContext, Result, ScanOptions, ScanRequest, Verdict, filter,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

const NAME: &str = "slack";
const VERSION: &str = "1.0.0";
const APP: &str = "Slack";

static PARAMETERS: &[ParameterSpec] = &[
    ParameterSpec::optional("base_url", "Slack Web API base URL", Some("https://slack.com")),
    ParameterSpec::secret("token", "bot (xoxb-) or user (xoxp-) token"),
];

#[derive(Debug, Default)]
pub struct SlackFactory;

#[async_trait]
impl ConnectorFactory for SlackFactory {
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
        let base = params.require(NAME, "base_url")?.trim_end_matches('/').to_string();
        url::Url::parse(&base).map_err(|e| ConnectorError::InvalidParameter {
            connector: NAME.into(),
            parameter: "base_url".into(),
            reason: e.to_string(),
        })?;
        let token = params.require(NAME, "token")?.to_string();
        let client = ApiClient::new(&ctx, Arc::new(SlackDialect), Arc::new(BearerToken(token)), HeaderMap::new())?;
        Ok(Arc::new(SlackConnector { api: Arc::new(Api { client, base }), scan: ctx.scan }))
    }
}

#[derive(Debug)]
struct SlackDialect;

impl Dialect for SlackDialect {
    fn app(&self) -> &'static str {
        APP
    }
    /// One bucket per method, at its tier's calls per minute. Slack sends no remaining-count headers, so
    /// the model is trusted and a 429's `Retry-After` corrects it.
    fn bucket(&self, url: &str) -> Option<BucketSpec> {
        let method = url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default();
        let per_minute = match method {
            "conversations.history" => 50.0,
            "conversations.list" | "users.list" => 20.0,
            _ => 20.0,
        };
        Some(BucketSpec {
            name: format!("slack:{method}"),
            capacity: per_minute,
            window: std::time::Duration::from_secs(60),
            trusted: true,
        })
    }
    /// Slack limits calls per minute per method, not concurrency; a few at once is plenty.
    fn default_concurrency(&self) -> usize {
        8
    }
    fn classify(&self, connection: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if !status.is_success() {
            return classify_common(APP, connection, status, headers, format!("HTTP {status}"));
        }
        // A body that does not parse is left to the client, which retries it as garbled.
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Verdict::Ok;
        };
        if v.get("ok").and_then(Value::as_bool) != Some(false) {
            return Verdict::Ok;
        }
        let error = v.get("error").and_then(Value::as_str).unwrap_or("unknown_error").to_string();
        let connection = connection.to_string();
        match error.as_str() {
            "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
                Verdict::Fail(ConnectorError::Unauthorized { app: APP, connection, status: 200, message: error })
            }
            "missing_scope" | "not_allowed_token_type" | "no_permission" => {
                let needed = v.get("needed").and_then(Value::as_str).unwrap_or("?");
                Verdict::Fail(ConnectorError::Forbidden {
                    app: APP,
                    connection,
                    status: 200,
                    message: format!("{error} (needs scope {needed})"),
                })
            }
            "ratelimited" => Verdict::Retry { after: omnisql_connector::http::retry_after(headers), reason: error },
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                Verdict::Retry { after: None, reason: error }
            }
            _ => Verdict::Fail(ConnectorError::Upstream { app: APP, connection, status: 200, message: error }),
        }
    }
}

#[derive(Debug)]
struct Api {
    client: ApiClient,
    base: String,
}

impl Api {
    /// Every page of a cursor-paged method; `key` names the array of rows.
    fn pages(
        self: &Arc<Self>,
        q: Arc<QueryContext>,
        method: &'static str,
        params: Vec<(String, String)>,
        key: &'static str,
    ) -> BoxStream<'static, Result<Vec<Value>>> {
        let api = self.clone();
        omnisql_connector::pagination::follow(move |cursor: Option<String>| {
            let (api, q, mut params) = (api.clone(), q.clone(), params.clone());
            async move {
                if let Some(c) = cursor {
                    params.push(("cursor".into(), c));
                }
                let mut body = api.client.get(&q, &format!("{}/api/{method}", api.base), &params).await?.body;
                let rows = match body.get_mut(key).map(Value::take) {
                    Some(Value::Array(rows)) => rows,
                    _ => {
                        return Err(ConnectorError::UnexpectedShape {
                            app: APP,
                            connection: api.client.connection().into(),
                            field: key.into(),
                        });
                    }
                };
                let next = body
                    .pointer("/response_metadata/next_cursor")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string);
                Ok((rows, next))
            }
        })
    }

    fn channels(self: &Arc<Self>, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let params = vec![
            ("types".to_string(), "public_channel,private_channel".to_string()),
            ("exclude_archived".to_string(), "false".to_string()),
            ("limit".to_string(), "1000".to_string()),
        ];
        self.pages(q, "conversations.list", params, "channels")
    }
}

#[derive(Debug)]
struct SlackConnector {
    api: Arc<Api>,
    scan: ScanOptions,
}

#[async_trait]
impl Connector for SlackConnector {
    fn table_names(&self) -> Vec<String> {
        vec!["channels".into(), "users".into(), "messages".into()]
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let kind = match name {
            "channels" => TableKind::Channels,
            "users" => TableKind::Users,
            "messages" => TableKind::Messages,
            _ => return Ok(None),
        };
        let table = SlackTable { api: self.api.clone(), columns: columns(kind), kind };
        Ok(Some(Arc::new(ApiTableProvider::new(Arc::new(table), self.scan))))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TableKind {
    Channels,
    Users,
    Messages,
}

fn columns(kind: TableKind) -> Vec<Column> {
    use Kind::*;
    let c = Column::new;
    match kind {
        TableKind::Channels => vec![
            c("id", Str, "/id"),
            c("name", Str, "/name"),
            c("is_private", Bool, "/is_private"),
            c("is_archived", Bool, "/is_archived"),
            c("created", EpochSeconds, "/created"),
            c("creator", Str, "/creator"),
            c("topic", Str, "/topic/value"),
            c("purpose", Str, "/purpose/value"),
            c("num_members", Int, "/num_members"),
        ],
        TableKind::Users => vec![
            c("id", Str, "/id"),
            c("name", Str, "/name"),
            c("real_name", Str, "/profile/real_name"),
            c("display_name", Str, "/profile/display_name"),
            c("email", Str, "/profile/email"),
            c("title", Str, "/profile/title"),
            c("is_bot", Bool, "/is_bot"),
            c("deleted", Bool, "/deleted"),
            c("tz", Str, "/tz"),
        ],
        TableKind::Messages => vec![
            c("channel_id", Str, "/_channel"),
            c("ts", Str, "/ts"),
            c("posted_at", EpochSeconds, "/ts"),
            c("user_id", Str, "/user"),
            c("text", Str, "/text"),
            c("thread_ts", Str, "/thread_ts"),
            c("type", Str, "/type"),
            c("subtype", Str, "/subtype"),
        ],
    }
}

#[derive(Debug)]
struct SlackTable {
    api: Arc<Api>,
    columns: Vec<Column>,
    kind: TableKind,
}

/// `oldest` / `latest` bounds (Slack ts strings) from filters on `ts` or `posted_at`.
fn time_bounds(filters: &[Expr]) -> (Option<String>, Option<String>) {
    let (mut oldest, mut latest): (Option<f64>, Option<f64>) = (None, None);
    for f in filters {
        let Some((c, op, v)) = filter::comparison(f) else {
            continue;
        };
        let t = match c {
            "ts" => filter::text(&v).and_then(|s| s.parse::<f64>().ok()),
            "posted_at" => filter::timestamp_micros(&v).map(|m| m as f64 / 1e6),
            _ => None,
        };
        let Some(t) = t else { continue };
        match op {
            Operator::Gt | Operator::GtEq => oldest = Some(oldest.map_or(t, |o| o.max(t))),
            Operator::Lt | Operator::LtEq => latest = Some(latest.map_or(t, |l| l.min(t))),
            Operator::Eq => {
                oldest = Some(oldest.map_or(t, |o| o.max(t)));
                latest = Some(latest.map_or(t, |l| l.min(t)));
            }
            _ => {}
        }
    }
    let fmt = |t: f64| format!("{t:.6}");
    (oldest.map(fmt), latest.map(fmt))
}

impl SlackTable {
    fn history_params(&self, scan: &ScanRequest) -> Vec<(String, String)> {
        let (oldest, latest) = time_bounds(&scan.filters);
        let mut params = vec![("limit".to_string(), scan.limit.map_or(999, |l| l.clamp(1, 999)).to_string())];
        if let Some(o) = oldest {
            params.push(("oldest".into(), o));
        }
        if let Some(l) = latest {
            params.push(("latest".into(), l));
        }
        if params.len() > 1 {
            params.push(("inclusive".into(), "true".into()));
        }
        params
    }
}

#[async_trait]
impl ApiTable for SlackTable {
    fn name(&self) -> String {
        format!(
            "slack.{}",
            match self.kind {
                TableKind::Channels => "channels",
                TableKind::Users => "users",
                TableKind::Messages => "messages",
            }
        )
    }
    fn columns(&self) -> &[Column] {
        &self.columns
    }
    fn pushdown(&self, f: &Expr) -> TableProviderFilterPushDown {
        if self.kind != TableKind::Messages {
            return TableProviderFilterPushDown::Unsupported;
        }
        if let Some(("channel_id", values)) = filter::pinned_values(f)
            && filter::texts(&values).is_some()
        {
            return TableProviderFilterPushDown::Exact;
        }
        match filter::comparison(f) {
            Some(("ts" | "posted_at", Operator::Gt | Operator::GtEq | Operator::Lt | Operator::LtEq | Operator::Eq, _))
                if time_bounds(std::slice::from_ref(f)) != (None, None) =>
            {
                TableProviderFilterPushDown::Inexact
            }
            _ => TableProviderFilterPushDown::Unsupported,
        }
    }
    fn describe(&self, scan: &ScanRequest) -> Vec<String> {
        match self.kind {
            TableKind::Channels => {
                vec!["GET /api/conversations.list?types=public_channel,private_channel&limit=1000 (all cursors)".into()]
            }
            TableKind::Users => vec!["GET /api/users.list?limit=1000 (all cursors)".into()],
            TableKind::Messages => {
                let params =
                    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(self.history_params(scan)).finish();
                match filter::pinned_texts(&scan.filters, "channel_id") {
                    Some(ids) => {
                        ids.iter().map(|c| format!("GET /api/conversations.history?channel={c}&{params} (all cursors)")).collect()
                    }
                    None => vec![
                        "GET /api/conversations.list?types=public_channel,private_channel&limit=1000".into(),
                        format!("GET /api/conversations.history?channel={{id}}&{params} per channel (all cursors)"),
                    ],
                }
            }
        }
    }
    fn least_requests(&self, scan: &ScanRequest) -> u64 {
        match self.kind {
            TableKind::Messages => filter::pinned_texts(&scan.filters, "channel_id").map_or(0, |c| c.len() as u64),
            _ => 0,
        }
    }
    fn fetch(&self, scan: ScanRequest, q: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let api = self.api.clone();
        match self.kind {
            TableKind::Channels => api.channels(q),
            TableKind::Users => api.pages(q, "users.list", vec![("limit".into(), "1000".into())], "members"),
            TableKind::Messages => {
                let params = self.history_params(&scan);
                let limit = scan.limit;
                let channel_ids = {
                    let (api, q) = (api.clone(), q.clone());
                    let pinned = filter::pinned_texts(&scan.filters, "channel_id");
                    async move {
                        match pinned {
                            Some(ids) => Ok::<_, ConnectorError>(ids),
                            None => {
                                let pages: Vec<Vec<Value>> = api.channels(q).try_collect().await?;
                                Ok(pages
                                    .into_iter()
                                    .flatten()
                                    .filter_map(|c| c.get("id").and_then(Value::as_str).map(str::to_string))
                                    .collect())
                            }
                        }
                    }
                };
                stream::once(Box::pin(channel_ids))
                    .map_ok(move |ids: Vec<String>| {
                        let (api, q, params) = (api.clone(), q.clone(), params.clone());
                        let concurrency = api.client.max_concurrency();
                        stream::iter(ids)
                            .map(move |id| {
                                let mut p = params.clone();
                                p.insert(0, ("channel".into(), id.clone()));
                                let pages = api.pages(q.clone(), "conversations.history", p, "messages");
                                // With a limit every filter was exact, so one channel's first rows suffice for it.
                                let pages = if limit.is_some() { pages.take(1).boxed() } else { pages };
                                pages
                                    // A channel named in the query that does not exist matches no rows.
                                    .or_else(|e| async move {
                                        match e {
                                            ConnectorError::Upstream { ref message, .. } if message == "channel_not_found" => {
                                                Ok(vec![])
                                            }
                                            e => Err(e),
                                        }
                                    })
                                    .map_ok(move |mut rows| {
                                        for r in &mut rows {
                                            if let Some(o) = r.as_object_mut() {
                                                o.insert("_channel".into(), Value::String(id.clone()));
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
    }
}
