//! The Postgres wire protocol on the data plane, for the tools that speak it (psql, psycopg, BI tools).
//!
//! The same tenants, sessions, limits, audit and errors as Flight SQL: the password is the API key (or a
//! sign-in JWT), sent in clear text — so outside a laptop, over TLS; every statement is planned and run
//! by the [`Engine`] for the caller the key names (checked again per statement, so a revoked key stops at
//! once), `SET omnisql.…` lasts for the connection, each attempt is one audit event, and Postgres cancel
//! requests stop the running statement, while it is planned or while its rows stream. Results are Arrow
//! batches encoded as Postgres rows (text or binary) as they come. Both the simple and the extended query
//! protocol are served; the extended one binds typed parameters to `$1`, `$2`, …, typed from the plan
//! where the client sends none. Statements see `pg_catalog` ([`omnisql_engine::postgres`]), and the
//! session statements clients send besides queries are answered by [`compat`].

mod compat;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow_pg::datatypes::df::deserialize_parameters;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use futures::{Sink, SinkExt, StreamExt};
use omnisql_engine::audit::Outbox;
use omnisql_engine::{Caller, Engine, QuerySettings};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::attempt::Attempt;

/// The Postgres protocol on `listener`, served until `shutdown` resolves by the future returned. With
/// `tls` (the data plane's certificate, as for Flight SQL) clients negotiate TLS, and a password is
/// accepted over TLS only.
pub fn serve(
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
    listener: TcpListener,
    tls: Option<&omnisql_tls::ServerTls>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, omnisql_tls::TlsError> {
    let acceptor = match tls {
        Some(tls) => Some(pgwire::tokio::TlsAcceptor::from(tls.server_config(&[b"postgresql"])?)),
        None => None,
    };
    let handler = Handler {
        engine,
        audit,
        connections: Arc::new(ConnectionManager::new()),
        streams: Arc::default(),
        tls_required: acceptor.is_some(),
    };
    let service = Arc::new(PgService { handler: Arc::new(handler) });
    tracing::info!(addr = ?listener.local_addr().ok(), tls = acceptor.is_some(), "Postgres wire protocol listening");
    Ok(async move {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                accepted = listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        let _ = socket.set_nodelay(true);
                        let (service, acceptor) = (service.clone(), acceptor.clone());
                        tokio::spawn(async move {
                            let sessions = &omnisql_telemetry::metrics().postgres_sessions;
                            sessions.inc();
                            if let Err(e) = pgwire::tokio::process_socket(socket, acceptor, service).await {
                                tracing::debug!(error = %e, "Postgres connection ended with an error");
                            }
                            sessions.dec();
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot accept a Postgres connection"),
                },
            }
        }
    })
}

struct PgService {
    handler: Arc<Handler>,
}

impl PgWireServerHandlers for PgService {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.handler.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.handler.clone()
    }
}

/// A signed-in connection: its credential (checked again for every statement), its `SET`s, and the
/// cancel requests made for it.
struct Session {
    token: String,
    state: Mutex<(QuerySettings, compat::Parameters)>,
    cancels: watch::Receiver<u64>,
    _registered: StreamsGuard,
}

impl Session {
    fn settings(&self) -> QuerySettings {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }
}

/// Cancel requests by connection, for statements whose rows are streaming (pgwire's own handling,
/// through [`ConnectionManager`], stops a statement only while it is planned): each request bumps the
/// connection's counter, and a stream ends when it changes.
#[derive(Default)]
struct Streams(Mutex<HashMap<(i32, Bytes), watch::Sender<u64>>>);

/// Removes a connection from [`Streams`] when it closes.
struct StreamsGuard(Arc<Streams>, (i32, Bytes));

impl Drop for StreamsGuard {
    fn drop(&mut self) {
        self.0.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

struct Handler {
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
    connections: Arc<ConnectionManager>,
    streams: Arc<Streams>,
    /// The listener offers TLS: a client that did not negotiate it may not send its key.
    tls_required: bool,
}

/// A statement of the extended protocol, planned when parsed so that its parameters and columns can be
/// described.
#[derive(Debug, Clone)]
pub struct Parsed {
    sql: String,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Session(compat::Compat),
    /// Parameter types by position (`Null` where the plan does not say), and the result's columns.
    Query {
        parameters: Vec<DataType>,
        schema: SchemaRef,
    },
}

fn session_of(client: &impl ClientInfo) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Session>()
        .ok_or_else(|| PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), "28000".into(), "not signed in".into()))))
}

/// The connection's caller, signed in again; a refusal is an audited attempt.
async fn caller(engine: &Arc<Engine>, audit: &Option<Arc<Outbox>>, session: &Session) -> PgWireResult<Caller> {
    match crate::service::sign_in(engine, &session.token, None).await {
        Ok(c) => Ok(c),
        Err(status) => Err(error(&Attempt::start(engine, audit, None, "", None).fail("unauthenticated", status).await)),
    }
}

impl Handler {
    async fn caller(&self, session: &Session) -> PgWireResult<Caller> {
        caller(&self.engine, &self.audit, session).await
    }

    /// Answers a session statement.
    fn session_statement(&self, session: &Session, statement: &compat::Compat, format: &Format) -> PgWireResult<Response> {
        use compat::Compat;
        Ok(match statement {
            Compat::Begin => Response::TransactionStart(Tag::new("BEGIN")),
            Compat::End(tag) => Response::TransactionEnd(Tag::new(tag)),
            Compat::Ignore(tag) => Response::Execution(Tag::new(tag)),
            Compat::Set { name, value } => {
                let mut state = session.state.lock().unwrap_or_else(|e| e.into_inner());
                let (settings, parameters) = &mut *state;
                parameters.set(name, value, settings).map_err(|m| user_error("22023", m))?;
                Response::Execution(Tag::new("SET"))
            }
            Compat::Show(name) => {
                let state = session.state.lock().unwrap_or_else(|e| e.into_inner());
                let value = state
                    .1
                    .show(name, &server_version())
                    .ok_or_else(|| user_error("42704", format!("unrecognized configuration parameter \"{name}\"")))?;
                let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, false)]));
                let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![value]))])
                    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
                let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, None)?);
                let rows: Vec<_> = encode_recordbatch(fields.clone(), batch).collect();
                Response::Query(QueryResponse::new(fields, futures::stream::iter(rows)))
            }
        })
    }

    async fn run(
        &self,
        caller: &Caller,
        session: &Session,
        sql: &str,
        params: Option<ParamValues>,
        format: &Format,
    ) -> PgWireResult<Response> {
        let mut attempt = Attempt::start(&self.engine, &self.audit, Some(caller), sql, None);
        let mut settings = session.settings();
        let planning = tracing::info_span!(parent: &attempt.span, "plan");
        let planned = tracing::Instrument::instrument(self.engine.plan(caller, sql, params, &mut settings), planning).await;
        session.state.lock().unwrap_or_else(|e| e.into_inner()).0 = settings;
        let mut q = match planned {
            Ok(Some(q)) => q,
            Ok(None) => {
                attempt.finish("ok", None).await.map_err(|s| error(&s))?;
                return Ok(Response::Execution(Tag::new("SET")));
            }
            Err(e) => return Err(error(&attempt.fail("error", crate::status::from_datafusion(&e)).await)),
        };
        attempt.tables = q.tables();
        q.context.trace_under(attempt.span.clone());
        attempt.context = Some(q.context.clone());
        if let Some(refresh) = q.take_refresh() {
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.refresh_result(refresh).await });
        }
        let schema = q.schema();
        let fields = match arrow_schema_to_pg_fields(&schema, format, None) {
            Ok(f) => Arc::new(f),
            Err(e) => return Err(error(&attempt.fail("error", Status::unimplemented(e.to_string())).await)),
        };
        // Cancel requests from now on stop the stream; earlier ones were for earlier statements.
        let mut cancels = session.cancels.clone();
        cancels.mark_unchanged();
        let stream = match self.engine.execute(q).await {
            Ok(s) => s,
            Err(e) => return Err(error(&attempt.fail("error", crate::status::from_datafusion(&e)).await)),
        };
        let streamed = attempt.streamed.clone();
        let rows = {
            let fields = fields.clone();
            stream.map(move |batch| -> PgWireResult<Vec<_>> {
                let batch = batch.map_err(|e| error(&crate::status::from_datafusion(&e)))?;
                streamed.rows.fetch_add(batch.num_rows() as u64, std::sync::atomic::Ordering::Relaxed);
                streamed.bytes.fetch_add(batch.get_array_memory_size() as u64, std::sync::atomic::Ordering::Relaxed);
                encode_recordbatch(fields.clone(), batch).collect()
            })
        };
        // The audit event is written when the last row has been produced (or the first error, or a cancel
        // request), before the client hears the statement is complete.
        let audited =
            futures::stream::unfold((rows.boxed(), Some(attempt), cancels), |(mut rows, attempt, mut cancels)| async move {
                let attempt_left = attempt?;
                let next = tokio::select! {
                    biased;
                    Ok(()) = cancels.changed() => {
                        let status = Status::cancelled("canceling statement due to user request");
                        let status = attempt_left.fail("cancelled", status).await;
                        return Some((Err(error(&status)), (rows, None, cancels)));
                    }
                    next = rows.next() => next,
                };
                match next {
                    Some(Ok(batch)) => Some((Ok(batch), (rows, Some(attempt_left), cancels))),
                    Some(Err(e)) => {
                        let status = Status::internal(e.to_string());
                        let _ = attempt_left.fail("error", status).await;
                        Some((Err(e), (rows, None, cancels)))
                    }
                    None => match attempt_left.finish("ok", None).await {
                        Ok(()) => None,
                        Err(status) => Some((Err(error(&status)), (rows, None, cancels))),
                    },
                }
            });
        let data_rows = audited.flat_map(|batch: PgWireResult<Vec<_>>| match batch {
            Ok(rows) => futures::stream::iter(rows.into_iter().map(Ok)).boxed(),
            Err(e) => futures::stream::iter(vec![Err(e)]).boxed(),
        });
        Ok(Response::Query(QueryResponse::new(fields, data_rows)))
    }
}

fn server_version() -> String {
    format!("16.6 (OmniSQL {})", env!("CARGO_PKG_VERSION"))
}

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                if self.tls_required && !client.is_secure() {
                    let mut info =
                        ErrorInfo::new("FATAL".into(), "28000".into(), "this server accepts connections over TLS only".into());
                    info.hint = Some("connect with sslmode=require (or verify-full with the server's CA as sslrootcert)".into());
                    return Err(PgWireError::UserError(Box::new(info)));
                }
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let token = password.into_password()?.password;
                if let Err(status) = crate::service::sign_in(&self.engine, token.trim(), None).await {
                    let status = Attempt::start(&self.engine, &self.audit, None, "", None).fail("unauthenticated", status).await;
                    let mut info = ErrorInfo::new("FATAL".into(), "28P01".into(), status.message().to_string());
                    info.hint = Some("the password is your OmniSQL API key (or a sign-in token)".into());
                    return Err(PgWireError::UserError(Box::new(info)));
                }
                let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                let key = (pid, secret.to_bytes());
                let (cancel, cancels) = watch::channel(0u64);
                self.streams.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), cancel);
                let settings = QuerySettings { postgres: true, ..Default::default() };
                client.session_extensions().insert(Session {
                    token: token.trim().to_string(),
                    state: Mutex::new((settings, compat::Parameters::default())),
                    cancels,
                    _registered: StreamsGuard(self.streams.clone(), key),
                });
                let (handle, guard) = self.connections.register(pid, secret);
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                let mut parameters = DefaultServerParameterProvider::default();
                parameters.server_version = server_version();
                parameters.default_transaction_read_only = true;
                parameters.is_superuser = false;
                finish_authentication(client, &parameters).await?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl CancelHandler for Handler {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.connections.cancel(request.pid, &request.secret_key).await;
        let key = (request.pid, request.secret_key.to_bytes());
        if let Some(cancel) = self.streams.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            cancel.send_modify(|n| *n += 1);
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        if let Some(statement) = compat::classify(query) {
            return Ok(vec![self.session_statement(&session, &statement, &Format::UnifiedText)?]);
        }
        let caller = self.caller(&session).await?;
        Ok(vec![self.run(&caller, &session, query, None, &Format::UnifiedText).await?])
    }
}

/// Plans statements of the extended protocol when they are parsed.
struct Parser {
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Parsed;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Parsed>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(client)?;
        let sql = sql.to_string();
        if let Some(statement) = compat::classify(&sql) {
            return Ok(Some(Parsed { sql, kind: Kind::Session(statement) }));
        }
        let caller = caller(&self.engine, &self.audit, &session).await?;
        let plan = match self.engine.logical_plan(&caller, &sql, &session.settings()).await {
            Ok(plan) => plan,
            Err(e) => {
                let attempt = Attempt::start(&self.engine, &self.audit, Some(&caller), &sql, None);
                return Err(error(&attempt.fail("error", crate::status::from_datafusion(&e)).await));
            }
        };
        let parameters = crate::service::parameter_schema(&plan)
            .map_err(|s| error(&s))?
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        Ok(Some(Parsed { sql, kind: Kind::Query { parameters, schema: Arc::new(plan.schema().as_arrow().clone()) } }))
    }

    fn get_parameter_types(&self, statement: &Parsed) -> PgWireResult<Vec<Type>> {
        let Kind::Query { parameters, .. } = &statement.kind else { return Ok(Vec::new()) };
        Ok(parameters
            .iter()
            .map(|t| if t.is_null() { Type::UNKNOWN } else { into_pg_type(t).unwrap_or(Type::UNKNOWN) })
            .collect())
    }

    fn get_result_schema(&self, statement: &Parsed, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match &statement.kind {
            Kind::Query { schema, .. } => arrow_schema_to_pg_fields(schema, format, None),
            Kind::Session(compat::Compat::Show(name)) => {
                arrow_schema_to_pg_fields(&Schema::new(vec![Field::new(name, DataType::Utf8, false)]), format, None)
            }
            Kind::Session(_) => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Parsed;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        Arc::new(Parser { engine: self.engine.clone(), audit: self.audit.clone() })
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Parsed>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Parsed>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let statement = &portal.statement.statement;
        match &statement.kind {
            Kind::Session(s) => self.session_statement(&session, s, &portal.result_column_format),
            Kind::Query { parameters, .. } => {
                let caller = self.caller(&session).await?;
                let params = if parameters.is_empty() {
                    None
                } else {
                    let types: Vec<Option<&DataType>> = parameters.iter().map(|t| (!t.is_null()).then_some(t)).collect();
                    Some(deserialize_parameters(portal, &types)?)
                };
                self.run(&caller, &session, &statement.sql, params, &portal.result_column_format).await
            }
        }
    }
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

/// A gRPC status as a Postgres error, with the SQLSTATE class that fits.
fn error(status: &Status) -> PgWireError {
    let code = match status.code() {
        Code::InvalidArgument => "42000",
        Code::NotFound => "42P01",
        Code::PermissionDenied => "42501",
        Code::Unauthenticated => "28000",
        Code::DeadlineExceeded | Code::Cancelled => "57014",
        Code::ResourceExhausted => "53000",
        Code::Unimplemented => "0A000",
        Code::Unavailable => "08006",
        _ => "XX000",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), status.message().to_string())))
}
