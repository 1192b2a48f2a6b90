//! The Flight SQL service: authentication, statements, prepared statements with parameters, metadata
//! (SqlInfo, catalogs, schemas, tables, table types), and streamed results.
//!
//! Every call authenticates its own bearer token (`authorization: Bearer <key>`; a Basic handshake with
//! the key as password answers with the bearer header for clients that only speak user/password).
//! Tickets carry only SQL text or a prepared-statement handle, never a tenant: whoever redeems a ticket
//! runs it as themselves, and prepared statements answer only to the tenant that created them.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementSubstraitPlan, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedCaseSensitivity, TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use base64::Engine as _;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::{ParamValues, ScalarValue};
use futures::{Stream, StreamExt, TryStreamExt};
use omnisql_engine::audit::Outbox;
use omnisql_engine::{CATALOG, Caller, Engine, QuerySettings};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::attempt::{Attempt, grpc_header, query_span};
use crate::metadata;
use crate::status;
use tracing::Instrument;

type FlightStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// A prepared statement and the parameters bound to it.
#[derive(Debug, Clone)]
struct Prepared {
    caller: Caller,
    sql: String,
    params: Option<Vec<ScalarValue>>,
}

/// A client's session: tenant, principal and the connection it came on.
type SessionKey = (String, String, Option<std::net::SocketAddr>);
/// Sessions kept before idle ones are dropped, and how long one may sit idle.
const MAX_SESSIONS: usize = 10_000;
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A query planned for GetFlightInfo waits this long for its DoGet, which then runs that plan instead of
/// planning again; at most this many wait (memory), others are planned again.
const PLANNED_TTL: std::time::Duration = std::time::Duration::from_secs(5);
const MAX_PLANNED: usize = 256;

/// A planned query's key: the session it was planned in, its text and its parameters.
type PlanKey = (SessionKey, String, Option<Vec<ScalarValue>>);

/// A planned query waiting for its DoGet: when it was planned, by whom, under which policy revision.
struct Planned {
    at: Instant,
    caller: Caller,
    revision: String,
    query: omnisql_engine::PreparedQuery,
    /// The statement's span, begun at GetFlightInfo: DoGet's execution continues it.
    span: tracing::Span,
}

/// Statements prepared but not yet closed, per server, at most this many (oldest evicted first).
const MAX_PREPARED: usize = 10_000;

pub struct OmniFlightSql {
    engine: Arc<Engine>,
    /// Where every attempt's audit event goes; `None` only for data planes without a state folder.
    audit: Option<Arc<Outbox>>,
    sessions: Mutex<HashMap<SessionKey, (Instant, QuerySettings)>>,
    prepared: Mutex<HashMap<String, (Instant, Prepared)>>,
    planned: Mutex<HashMap<PlanKey, Planned>>,
    sql_info: SqlInfoData,
}

impl std::fmt::Debug for OmniFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OmniFlightSql").finish_non_exhaustive()
    }
}

impl OmniFlightSql {
    pub fn new(engine: Arc<Engine>) -> Result<Self, FlightError> {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "OmniSQL");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
        b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(SqlInfo::SqlIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlQuotedIdentifierCase, SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32);
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlNullOrdering, 2i32);
        Ok(OmniFlightSql {
            engine,
            audit: None,
            sessions: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
            planned: Mutex::new(HashMap::new()),
            sql_info: b.build()?,
        })
    }

    /// Writes an audit event for every query attempt into `outbox`.
    pub fn with_audit(mut self, outbox: Arc<Outbox>) -> Self {
        self.audit = Some(outbox);
        self
    }

    /// The caller behind a request's bearer token; a refused token is an audited attempt.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("no API key: send the header `authorization: Bearer <api key or token>`"))
            .and_then(|h| h.to_str().map_err(|_| Status::unauthenticated("the authorization header is not valid text")))
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or_else(|| Status::unauthenticated("the authorization header must be `Bearer <api key or token>`"))
            });
        let result = match header {
            Ok(token) => self.sign_in(token.trim(), req.metadata()).await,
            Err(status) => Err(status),
        };
        match result {
            Ok(c) => Ok(c),
            Err(status) => {
                let attempt = Attempt::start(&self.engine, &self.audit, None, "", None);
                Err(attempt.fail("unauthenticated", status).await)
            }
        }
    }

    /// Who `token` is ([`sign_in`]); the `x-omnisql-tenant` header picks the tenant when several trust
    /// the same issuer and audience.
    async fn sign_in(&self, token: &str, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        sign_in(&self.engine, token, metadata.get("x-omnisql-tenant").and_then(|v| v.to_str().ok())).await
    }

    fn prepared(&self, caller: &Caller, handle: &[u8]) -> Result<Prepared, Status> {
        let handle = String::from_utf8_lossy(handle).to_string();
        let map = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&handle) {
            // Another tenant's handle is reported exactly like an unknown one.
            Some((_, p)) if p.caller.tenant == caller.tenant => Ok(p.clone()),
            _ => Err(Status::not_found("unknown prepared statement: it was closed, or never created on this data plane")),
        }
    }

    /// The client connection a request came on: `SET omnisql.…` lasts as long as it does.
    fn session_key<T>(caller: &Caller, req: &Request<T>) -> SessionKey {
        (caller.tenant.0.clone(), caller.principal.clone(), req.remote_addr())
    }

    /// Plans `sql` with the session's settings (which leading `SET`s may change); `None` for SETs alone.
    async fn plan(
        &self,
        caller: &Caller,
        session: &SessionKey,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
    ) -> Result<Option<omnisql_engine::PreparedQuery>, Status> {
        let mut settings = {
            let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            sessions.get(session).map(|(_, s)| s.clone()).unwrap_or_default()
        };
        let planned = self.engine.plan(caller, sql, params.map(ParamValues::from), &mut settings).await;
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if sessions.len() >= MAX_SESSIONS {
            let idle = Instant::now() - SESSION_IDLE;
            sessions.retain(|_, (used, _)| *used > idle);
        }
        if settings != QuerySettings::default() || sessions.contains_key(session) {
            sessions.insert(session.clone(), (Instant::now(), settings));
        }
        drop(sessions);
        planned.map_err(|e| {
            tracing::info!(tenant = %caller.tenant, principal = %caller.principal, error = %e, "query rejected");
            status::from_datafusion(&e)
        })
    }

    /// Keeps `query`, planned for GetFlightInfo, for the DoGet that follows (when there is room).
    fn keep_planned(&self, key: PlanKey, caller: &Caller, query: omnisql_engine::PreparedQuery, span: tracing::Span) {
        let mut planned = self.planned.lock().unwrap_or_else(|e| e.into_inner());
        if planned.len() >= MAX_PLANNED {
            planned.retain(|_, p| p.at.elapsed() < PLANNED_TTL);
        }
        if planned.len() < MAX_PLANNED {
            let revision = self.engine.policy_revision(&caller.tenant);
            planned.insert(key, Planned { at: Instant::now(), caller: caller.clone(), revision, query, span });
        }
    }

    /// The plan GetFlightInfo made for this DoGet, if it is fresh and was made for the same caller under
    /// the same policies (a changed key, group or policy plans again).
    fn take_planned(&self, key: &PlanKey, caller: &Caller) -> Option<(omnisql_engine::PreparedQuery, tracing::Span)> {
        let p = self.planned.lock().unwrap_or_else(|e| e.into_inner()).remove(key)?;
        let fresh =
            p.at.elapsed() < PLANNED_TTL && p.caller == *caller && p.revision == self.engine.policy_revision(&caller.tenant);
        fresh.then_some((p.query, p.span))
    }

    async fn schema_of(
        &self,
        caller: &Caller,
        session: &SessionKey,
        sql: &str,
        params: Option<Vec<ScalarValue>>,
        span: tracing::Span,
    ) -> Result<SchemaRef, Status> {
        let key = (session.clone(), sql.to_string(), params.clone());
        let planning = tracing::info_span!(parent: &span, "plan");
        match self.plan(caller, session, sql, params).instrument(planning).await {
            Ok(Some(q)) => {
                let schema = q.schema();
                self.keep_planned(key, caller, q, span);
                Ok(schema)
            }
            Ok(None) => Ok(Arc::new(Schema::empty())),
            // The client's attempt ends here: it never fetches a result.
            Err(status) => {
                Err(Attempt::start(&self.engine, &self.audit, Some(caller), sql, Some(span)).fail("error", status).await)
            }
        }
    }

    /// Runs `sql` and streams its batches as Flight data. The last message carries, as `app_metadata`,
    /// how fresh each source's data was and what the query cost upstream.
    async fn run(
        &self,
        caller: Caller,
        session: SessionKey,
        sql: String,
        params: Option<Vec<ScalarValue>>,
        header: impl Fn(&str) -> Option<String> + Send + Sync,
    ) -> Result<Response<FlightStream>, Status> {
        let key = (session.clone(), sql.clone(), params.clone());
        // The span GetFlightInfo began, or (planned here) a new one continuing this request's trace.
        let (planned, span) = match self.take_planned(&key, &caller) {
            Some((q, planned_in)) => (Ok(Some(q)), planned_in),
            None => {
                let span = query_span(Some(&caller), header);
                let planning = tracing::info_span!(parent: &span, "plan");
                (self.plan(&caller, &session, &sql, params).instrument(planning).await, span)
            }
        };
        let mut attempt = Attempt::start(&self.engine, &self.audit, Some(&caller), &sql, Some(span.clone()));
        let mut q = match planned {
            Ok(Some(q)) => q,
            Ok(None) => {
                attempt.finish("ok", None).await?;
                let schema = Arc::new(Schema::empty());
                let data =
                    FlightDataEncoderBuilder::new().with_schema(schema).build(futures::stream::empty()).map_err(flight_to_status);
                return Ok(Response::new(Box::pin(data)));
            }
            Err(status) => return Err(attempt.fail("error", status).await),
        };
        attempt.tables = q.tables();
        q.context.trace_under(span);
        attempt.context = Some(q.context.clone());
        if let Some(refresh) = q.take_refresh() {
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.refresh_result(refresh).await });
        }
        // What GetFlightInfo promised: the planned schema, not the one optimisation may narrow.
        let schema: SchemaRef = q.schema();
        let context = q.context.clone();
        let kept = q.from_kept_result();
        let mut stream = match self.engine.execute(q).await {
            Ok(s) => s,
            Err(e) => return Err(attempt.fail("error", status::from_datafusion(&e)).await),
        };
        let streamed = attempt.streamed.clone();
        let promised = schema.clone();
        let batches = futures::stream::poll_fn(move |cx| {
            let next = stream.poll_next_unpin(cx);
            if let std::task::Poll::Ready(Some(Ok(b))) = &next {
                streamed.rows.fetch_add(b.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
                streamed.bytes.fetch_add(b.get_array_memory_size() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            next
        })
        .map(move |batch| conform(batch?, &promised))
        .map_err(|e| FlightError::Tonic(Box::new(status::from_datafusion(&e))));
        let data = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(flight_to_status);
        let summary = move || {
            serde_json::json!({
                "freshness": context.freshness(),
                "api_requests": context.api_requests(),
                "cache_hits": context.cache_hits(),
                "kept_result": kept,
            })
            .to_string()
        };
        Ok(Response::new(finish_with(Box::pin(data), attempt, summary)))
    }

    fn info(&self, schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket { ticket: ticket.into() });
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| status::internal(&e))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// An empty foreign-key answer: SaaS tables declare no keys.
    async fn no_foreign_keys(&self, request: &Request<Ticket>) -> Result<Response<FlightStream>, Status> {
        self.caller(request).await?;
        let schema = metadata::foreign_keys_schema();
        Self::batch_stream(schema.clone(), Ok::<_, Status>(metadata::none(schema)))
    }

    /// Refuses a write (update, ingest, Substrait plan) with the reason, audited like any refused statement.
    async fn refuse_write<T>(&self, request: &Request<T>, what: &str) -> Status {
        let caller = match self.caller(request).await {
            Ok(c) => c,
            Err(status) => return status,
        };
        let attempt = Attempt::start(&self.engine, &self.audit, Some(&caller), what, None);
        attempt.fail("error", Status::invalid_argument(metadata::READ_ONLY)).await
    }

    fn batch_stream<E: std::error::Error>(
        schema: SchemaRef,
        batch: Result<RecordBatch, E>,
    ) -> Result<Response<FlightStream>, Status> {
        let batch = batch.map_err(|e| status::internal(&e))?;
        let data = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(flight_to_status);
        Ok(Response::new(Box::pin(data)))
    }
}

/// Holds each message back by one, so the last (the final batch, or the schema of an empty result)
/// can carry `metadata()`, computed once the query is done; and records the attempt's outcome before
/// the client sees the last message or the error.
fn finish_with(data: FlightStream, attempt: Attempt, metadata: impl FnOnce() -> String + Send + 'static) -> FlightStream {
    let state = (data, None::<FlightData>, Some((attempt, metadata)));
    Box::pin(futures::stream::unfold(state, |(mut data, mut held, mut rest)| async move {
        loop {
            match data.next().await {
                Some(Ok(message)) => {
                    if let Some(previous) = held.replace(message) {
                        return Some((Ok(previous), (data, held, rest)));
                    }
                }
                Some(Err(status)) => {
                    let (attempt, _) = rest.take()?;
                    return Some((Err(attempt.fail("error", status).await), (data, None, None)));
                }
                None => {
                    let (attempt, metadata) = rest.take()?;
                    if let Err(status) = attempt.finish("ok", None).await {
                        return Some((Err(status), (data, None, None)));
                    }
                    let mut last = held.take()?;
                    last.app_metadata = metadata().into_bytes().into();
                    return Some((Ok(last), (data, None, None)));
                }
            }
        }
    }))
}

/// The `$1`, `$2`, … placeholders of `plan`, in order, typed where the statement says.
pub(crate) fn parameter_schema(plan: &datafusion::logical_expr::LogicalPlan) -> Result<Schema, Status> {
    let mut parameters: Vec<(String, Field)> = plan
        .get_parameter_fields()
        .map_err(|e| status::from_datafusion(&e))?
        .into_iter()
        .map(|(name, field)| {
            let data_type = field.map(|f| f.data_type().clone()).unwrap_or(datafusion::arrow::datatypes::DataType::Null);
            (name.clone(), Field::new(name, data_type, true))
        })
        .collect();
    parameters.sort_by_key(|(name, _)| name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX));
    Ok(Schema::new(parameters.into_iter().map(|(_, f)| f).collect::<Vec<_>>()))
}

/// `batch` with exactly the `schema` the client was promised. Optimisation may prove a column non-null
/// or fold it to a constant of a narrower type; clients compare the schema of every message with the
/// one announced, so the batch is relabelled (and cast where the type differs).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, datafusion::error::DataFusionError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                datafusion::arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}

fn flight_to_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => status::internal(&other),
    }
}

#[tonic::async_trait]
impl FlightSqlService for OmniFlightSql {
    type FlightService = OmniFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        // Bearer clients need no handshake; Basic clients send the API key (or a sign-in token) as the
        // password.
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let token = if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .map_err(|_| Status::unauthenticated("the Basic credentials are not valid base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| Status::unauthenticated("the Basic credentials are not text"))?;
            text.split_once(':').map(|(_, p)| p.to_string()).unwrap_or(text)
        } else if let Some(b) = header.strip_prefix("Bearer ") {
            b.trim().to_string()
        } else {
            return Err(Status::unauthenticated(
                "send `authorization: Bearer <api key>`, or Basic credentials with the API key as password",
            ));
        };
        if let Err(status) = self.sign_in(&token, request.metadata()).await {
            return Err(Attempt::start(&self.engine, &self.audit, None, "", None).fail("unauthenticated", status).await);
        }
        let bearer = format!("Bearer {token}");
        let response = HandshakeResponse { protocol_version: 0, payload: token.into_bytes().into() };
        let mut resp: Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>> =
            Response::new(Box::pin(futures::stream::once(async { Ok(response) })));
        let value = MetadataValue::try_from(bearer.as_str())
            .map_err(|_| Status::unauthenticated("the API key is not valid header text"))?;
        resp.metadata_mut().insert("authorization", value);
        Ok(resp)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let session = Self::session_key(&caller, &request);
        let span = query_span(Some(&caller), grpc_header(request.metadata()));
        let schema = self.schema_of(&caller, &session, &query.query, None, span).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        self.info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let caller = self.caller(&request).await?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not a query"))?;
        let session = Self::session_key(&caller, &request);
        self.run(caller, session, sql, None, grpc_header(request.metadata())).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request).await?;
        let p = self.prepared(&caller, &cmd.prepared_statement_handle)?;
        let session = Self::session_key(&caller, &request);
        let span = query_span(Some(&caller), grpc_header(request.metadata()));
        let schema = self.schema_of(&caller, &session, &p.sql, p.params.clone(), span).await?;
        self.info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let caller = self.caller(&request).await?;
        let p = self.prepared(&caller, &cmd.prepared_statement_handle)?;
        let session = Self::session_key(&caller, &request);
        self.run(caller, session, p.sql, p.params, grpc_header(request.metadata())).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        // A statement whose result is kept ran without parameters: its columns are known, nothing to plan.
        let (dataset_schema, parameter_schema) = match self.engine.kept_schema(&caller, &query.query) {
            Some(schema) => (schema.as_ref().clone(), Schema::empty()),
            None => {
                let plan = match self.engine.logical_plan(&caller, &query.query, &QuerySettings::default()).await {
                    Ok(p) => p,
                    Err(e) => {
                        let attempt = Attempt::start(&self.engine, &self.audit, Some(&caller), &query.query, None);
                        return Err(attempt.fail("error", status::from_datafusion(&e)).await);
                    }
                };
                (plan.schema().as_arrow().clone(), parameter_schema(&plan)?)
            }
        };
        let handle = uuid::Uuid::new_v4().to_string();
        {
            let mut map = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= MAX_PREPARED
                && let Some(oldest) = map.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
            map.insert(handle.clone(), (Instant::now(), Prepared { caller, sql: query.query, params: None }));
        }
        let options = IpcWriteOptions::default();
        let ipc = |s: &Schema| -> Result<IpcMessage, Status> {
            SchemaAsIpc::new(s, &options).try_into().map_err(|e: datafusion::arrow::error::ArrowError| status::internal(&e))
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: ipc(&dataset_schema)?.0,
            parameter_schema: ipc(&parameter_schema)?.0,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request).await?;
        self.prepared(&caller, &cmd.prepared_statement_handle)?;
        let stream = request.into_inner().map_err(|s| FlightError::Tonic(Box::new(s)));
        let batches: Vec<RecordBatch> = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("the bound parameters are not valid Arrow data: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!("bind one row of parameters per execution (got {rows})")));
        }
        let params = match batches.iter().find(|b| b.num_rows() == 1) {
            Some(b) => Some(
                b.columns()
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, 0))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Status::invalid_argument(format!("cannot read a bound parameter: {e}")))?,
            ),
            None => None,
        };
        let handle = String::from_utf8_lossy(&cmd.prepared_statement_handle).to_string();
        if let Some((_, p)) = self.prepared.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&handle) {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(cmd.prepared_statement_handle) })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request).await?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        self.prepared.lock().unwrap_or_else(|e| e.into_inner()).remove(&handle);
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&self.sql_info);
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        let caller = self.caller(&request).await?;
        let mut builder = query.into_builder();
        for s in self.engine.schemas_for(&caller) {
            builder.append(CATALOG, s.name());
        }
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.clone().into_builder().schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_tables(&self, query: CommandGetTables, request: Request<Ticket>) -> Result<Response<FlightStream>, Status> {
        let caller = self.caller(&request).await?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        for s in self.engine.schemas_for(&caller) {
            // A connection that cannot be reached lists no tables rather than failing the whole catalog.
            let names = match s.tables().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(tenant = %caller.tenant, connection = s.name(), error = %e, "cannot list tables");
                    continue;
                }
            };
            for name in names {
                let table_schema = if include_schema {
                    match datafusion::catalog::SchemaProvider::table(s.as_ref(), &name).await {
                        Ok(Some(t)) => t.schema(),
                        _ => Arc::new(Schema::empty()),
                    }
                } else {
                    Arc::new(Schema::empty())
                };
                builder.append(CATALOG, s.name(), &name, "TABLE", &table_schema).map_err(|e| status::internal(&e))?;
            }
        }
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder().schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let schema = query.into_builder(&metadata::XDBC_TYPES).schema();
        self.info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&metadata::XDBC_TYPES);
        Self::batch_stream(builder.schema(), builder.build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        self.info(&metadata::primary_keys_schema(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        let schema = metadata::primary_keys_schema();
        Self::batch_stream(schema.clone(), Ok::<_, Status>(metadata::none(schema)))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        self.info(&metadata::foreign_keys_schema(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(&request).await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        self.info(&metadata::foreign_keys_schema(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(&request).await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        self.info(&metadata::foreign_keys_schema(), query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<FlightStream>, Status> {
        self.no_foreign_keys(&request).await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.refuse_write(&request, &command.query).await)
    }

    async fn do_put_prepared_statement_update(
        &self,
        _command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.refuse_write(&request, "(a prepared update)").await)
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.refuse_write(&request, &format!("(bulk ingest into {})", command.table)).await)
    }

    async fn do_put_substrait_plan(
        &self,
        _command: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(self.refuse_write(&request, "(a Substrait plan)").await)
    }

    async fn do_get_fallback(&self, request: Request<Ticket>, message: Any) -> Result<Response<FlightStream>, Status> {
        self.caller(&request).await?;
        Err(Status::unimplemented(format!("OmniSQL does not serve {}", message.type_url)))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Who `token` is: an API key, or a JWT of an issuer a tenant trusts (`tenant` picks one when several
/// trust the same issuer and audience). Flight SQL and the Postgres protocol sign in alike.
pub(crate) async fn sign_in(engine: &Engine, token: &str, tenant: Option<&str>) -> Result<Caller, Status> {
    if !omnisql_oidc::is_jwt(token) {
        return engine.authenticate(token).ok_or_else(|| {
            tracing::warn!("rejected an unknown or revoked API key");
            Status::unauthenticated("unknown or revoked API key: ask your OmniSQL admin for a valid key")
        });
    }
    engine.sign_in(token, tenant).await.map_err(|e| {
        tracing::warn!(error = %e, "rejected a sign-in token");
        Status::unauthenticated(format!("sign-in token refused: {e}"))
    })
}

/// The tonic server type that serves [`OmniFlightSql`].
pub type Server = arrow_flight::flight_service_server::FlightServiceServer<OmniFlightSql>;
