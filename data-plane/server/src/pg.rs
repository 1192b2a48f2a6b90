//! The Postgres wire protocol on the data plane, for the tools that speak it (psql, psycopg, BI tools).
//!
//! The same tenants, sessions, limits, audit and errors as Flight SQL: the password is the API key (or a
//! sign-in JWT), sent in clear text — so outside a laptop, over TLS; every statement is planned and run
//! by the [`Engine`] for the caller the key names (checked again per statement, so a revoked key stops at
//! once), `SET omnisql.…` lasts for the connection, each attempt is one audit event, and Postgres cancel
//! requests stop the running statement. Results are Arrow batches encoded as Postgres rows as they come.
//! This first part serves the simple query protocol.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt};
use omnisql_engine::audit::Outbox;
use omnisql_engine::{Caller, Engine, QuerySettings};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::query::SimpleQueryHandler;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::attempt::Attempt;

/// Serves the Postgres protocol on `listener` until `shutdown` resolves.
pub async fn serve(
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let service = Arc::new(PgService { engine, audit, connections: Arc::new(ConnectionManager::new()) });
    tracing::info!(addr = ?listener.local_addr().ok(), "Postgres wire protocol listening");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    let service = service.clone();
                    tokio::spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, service).await {
                            tracing::debug!(error = %e, "Postgres connection ended with an error");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot accept a Postgres connection"),
            },
        }
    }
}

struct PgService {
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
    /// Running statements by connection, for Postgres cancel requests.
    connections: Arc<ConnectionManager>,
}

/// A signed-in connection: its credential (checked again for every statement) and its `SET`s.
struct Session {
    token: String,
    settings: Mutex<QuerySettings>,
}

impl PgWireServerHandlers for PgService {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(self.handle())
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(self.handle())
    }
    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(DefaultCancelHandler::new(self.connections.clone()))
    }
}

impl PgService {
    fn handle(&self) -> Handler {
        Handler { engine: self.engine.clone(), audit: self.audit.clone(), connections: self.connections.clone() }
    }
}

struct Handler {
    engine: Arc<Engine>,
    audit: Option<Arc<Outbox>>,
    connections: Arc<ConnectionManager>,
}

impl Handler {
    /// The connection's caller, signed in again; a refusal is an audited attempt.
    async fn caller(&self, session: &Session) -> PgWireResult<Caller> {
        match crate::service::sign_in(&self.engine, &session.token, None).await {
            Ok(c) => Ok(c),
            Err(status) => {
                let status = Attempt::start(&self.engine, &self.audit, None, "").fail("unauthenticated", status).await;
                Err(error(&status))
            }
        }
    }

    async fn run(&self, caller: &Caller, session: &Session, sql: &str) -> PgWireResult<Response> {
        let mut attempt = Attempt::start(&self.engine, &self.audit, Some(caller), sql);
        let mut settings = session.settings.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let planned = self.engine.plan(caller, sql, None, &mut settings).await;
        *session.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        let mut q = match planned {
            Ok(Some(q)) => q,
            Ok(None) => {
                attempt.finish("ok", None).await.map_err(|s| error(&s))?;
                return Ok(Response::Execution(Tag::new("SET")));
            }
            Err(e) => return Err(error(&attempt.fail("error", crate::status::from_datafusion(&e)).await)),
        };
        attempt.tables = q.tables();
        attempt.context = Some(q.context.clone());
        if let Some(refresh) = q.take_refresh() {
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.refresh_result(refresh).await });
        }
        let schema = q.schema();
        let fields = match arrow_schema_to_pg_fields(&schema, &pgwire::api::portal::Format::UnifiedText, None) {
            Ok(f) => Arc::new(f),
            Err(e) => return Err(error(&attempt.fail("error", Status::unimplemented(e.to_string())).await)),
        };
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
        // The audit event is written when the last row has been produced (or the first error), before the
        // client hears the statement is complete.
        let audited = futures::stream::unfold((rows.boxed(), Some(attempt)), |(mut rows, attempt)| async move {
            let attempt_left = attempt?;
            match rows.next().await {
                Some(Ok(batch)) => Some((Ok(batch), (rows, Some(attempt_left)))),
                Some(Err(e)) => {
                    let status = Status::internal(e.to_string());
                    let _ = attempt_left.fail("error", status).await;
                    Some((Err(e), (rows, None)))
                }
                None => match attempt_left.finish("ok", None).await {
                    Ok(()) => None,
                    Err(status) => Some((Err(error(&status)), (rows, None))),
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
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let token = password.into_password()?.password;
                if let Err(status) = crate::service::sign_in(&self.engine, token.trim(), None).await {
                    let status = Attempt::start(&self.engine, &self.audit, None, "").fail("unauthenticated", status).await;
                    let mut info = ErrorInfo::new("FATAL".into(), "28P01".into(), status.message().to_string());
                    info.hint = Some("the password is your OmniSQL API key (or a sign-in token)".into());
                    return Err(PgWireError::UserError(Box::new(info)));
                }
                client.session_extensions().insert(Session { token: token.trim().to_string(), settings: Mutex::default() });
                let (pid, secret) = RandomPidSecretKeyGenerator::default().generate(client);
                client.set_pid_and_secret_key(pid, secret.clone());
                let (handle, guard) = self.connections.register(pid, secret);
                client.session_extensions().insert(handle);
                client.session_extensions().insert(guard);
                let mut parameters = DefaultServerParameterProvider::default();
                parameters.server_version = format!("16.6 (OmniSQL {})", env!("CARGO_PKG_VERSION"));
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
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let Some(session) = client.session_extensions().get::<Session>() else {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), "28000".into(), "not signed in".into()))));
        };
        let caller = self.caller(&session).await?;
        Ok(vec![self.run(&caller, &session, query).await?])
    }
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
