//! The data plane's link to the control plane.
//!
//! On first start the data plane trades its one-time enrollment token for a credential, kept in its
//! state folder. It then watches its region's configuration: each update is merged, written to disk
//! (sealed secrets stay sealed there), unsealed with the data plane's own key access, and applied to
//! the engine. When the control plane is unreachable the data plane serves the configuration on disk
//! and resumes the watch from its revision once it is back. Heartbeats report the revision applied and
//! the audit backlog; a shipper sends the audit outbox until each event is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use omnisql_engine::Engine;
use omnisql_engine::audit::Outbox;
use omnisql_engine::config::{
    ApiKeyConfig, Config, ConnectionConfig, OidcConfig, OpaConfig, PolicyConfig, PrincipalConfig, TenantConfig,
};
use omnisql_proto::v1;
use omnisql_proto::v1::data_plane_service_client::DataPlaneServiceClient;
use omnisql_secrets::{Binding, ProviderConfig, Sealed, Sealer};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// The control plane's data-plane gRPC URL, e.g. `http://control-plane:7070`.
    pub url: String,
    /// Needed on first start only.
    pub enrollment_token: Option<String>,
    /// Holds the credential, the last configuration and the audit outbox.
    pub state_dir: PathBuf,
    /// How this data plane opens sealed credentials.
    pub kms: ProviderConfig,
    /// Certificates (PEM) to trust for an `https://` control plane besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "this data plane is not enrolled yet: pass --enrollment-token (an operator creates one with `omnisql admin enrollment-token`)"
    )]
    NotEnrolled,
    #[error("the control plane refused the enrollment: {0}")]
    Enrollment(String),
    #[error("cannot reach the control plane at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("cannot use the state folder {path}")]
    State {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the key provider")]
    Secrets(#[from] omnisql_secrets::SecretsError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Identity {
    data_plane_id: String,
    credential: String,
    region: String,
}

type Client = DataPlaneServiceClient<InterceptedService<Channel, Bearer>>;

#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

/// A running link; its tasks stop when it is dropped.
#[derive(Debug)]
pub struct ControlLink {
    pub data_plane_id: String,
    pub region: String,
    revision: tokio::sync::watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ControlLink {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl ControlLink {
    /// The configuration revision applied to the engine.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Follows the applied revision (0 until a first configuration is applied).
    pub fn revision_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.clone()
    }

    /// Waits until a revision at least `revision` is applied.
    pub async fn applied(&self, revision: u64) {
        let mut rx = self.revision.clone();
        let _ = rx.wait_for(|r| *r >= revision).await;
    }
}

fn state_error(path: &Path) -> impl FnOnce(std::io::Error) -> LinkError + '_ {
    move |source| LinkError::State { path: path.display().to_string(), source }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LinkError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(state_error(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    f.write_all(bytes).map_err(state_error(&tmp))?;
    f.sync_all().map_err(state_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(state_error(path))
}

/// A status's message and the errors under it (a refused certificate is two levels down).
fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

fn channel(url: &str, ca_pem: Option<&[u8]>) -> Result<Channel, LinkError> {
    let mut endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|e| LinkError::Unreachable { url: url.into(), message: e.to_string() })?;
    if url.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = ca_pem {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| LinkError::Unreachable { url: url.into(), message: e.to_string() })?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

/// Enrolls if needed, applies the configuration on disk, and starts watching, heartbeats and shipping.
pub async fn start(engine: Arc<Engine>, outbox: Arc<Outbox>, options: LinkOptions) -> Result<ControlLink, LinkError> {
    let dir = options.state_dir.clone();
    std::fs::create_dir_all(&dir).map_err(state_error(&dir))?;
    let identity_path = dir.join("identity.json");
    let identity = match std::fs::read(&identity_path) {
        Ok(bytes) => serde_json::from_slice::<Identity>(&bytes)
            .map_err(|e| LinkError::State { path: identity_path.display().to_string(), source: std::io::Error::other(e) })?,
        Err(_) => {
            let token = options.enrollment_token.clone().ok_or(LinkError::NotEnrolled)?;
            let mut client = DataPlaneServiceClient::new(channel(&options.url, options.ca_pem.as_deref())?);
            let hostname = std::env::var("HOSTNAME").unwrap_or_default();
            let response = client
                .enroll(v1::EnrollRequest { enrollment_token: token, version: env!("CARGO_PKG_VERSION").into(), hostname })
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::Unavailable | tonic::Code::Unknown => {
                        LinkError::Unreachable { url: options.url.clone(), message: status_text(&s) }
                    }
                    _ => LinkError::Enrollment(s.message().into()),
                })?
                .into_inner();
            let identity =
                Identity { data_plane_id: response.data_plane_id, credential: response.credential, region: response.region };
            write_atomically(&identity_path, &serde_json::to_vec_pretty(&identity).unwrap_or_default())?;
            tracing::info!(data_plane = %identity.data_plane_id, region = %identity.region, "enrolled with the control plane");
            identity
        }
    };
    let bearer = tonic::metadata::MetadataValue::try_from(format!("Bearer {}", identity.credential))
        .map_err(|e| LinkError::State { path: identity_path.display().to_string(), source: std::io::Error::other(e) })?;
    let client: Client =
        DataPlaneServiceClient::with_interceptor(channel(&options.url, options.ca_pem.as_deref())?, Bearer(bearer));
    let sealer = Sealer::new(options.kms.build().await?);
    let mut applier = Applier { engine, sealer, dir: dir.clone(), tenants: BTreeMap::new(), opened: HashMap::new() };
    let (revision_tx, revision) = tokio::sync::watch::channel(0u64);

    // Serve the last known configuration at once, whatever the control plane's state.
    let cached = dir.join("config.pb");
    if let Ok(bytes) = std::fs::read(&cached) {
        match v1::ConfigUpdate::decode(bytes.as_slice()) {
            Ok(update) => {
                let r = update.revision;
                applier.apply(update).await;
                revision_tx.send_replace(r);
                tracing::info!(revision = r, "serving the configuration saved on disk");
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable saved configuration"),
        }
    }

    let engine = applier.engine.clone();
    let applier_engine = engine.clone();
    let watch = tokio::spawn(watch_loop(client.clone(), applier, revision_tx));
    let heartbeat = tokio::spawn(heartbeat_loop(client.clone(), revision.clone(), outbox.clone(), engine));
    let tests = tokio::spawn(tests_loop(client.clone(), applier_engine, outbox.clone()));
    let ship = tokio::spawn(ship_loop(client, outbox));
    Ok(ControlLink {
        data_plane_id: identity.data_plane_id,
        region: identity.region,
        revision,
        tasks: vec![watch, heartbeat, tests, ship],
    })
}

/// Merges updates, saves them, unseals and applies them.
struct Applier {
    engine: Arc<Engine>,
    sealer: Sealer,
    dir: PathBuf,
    tenants: BTreeMap<String, v1::TenantConfig>,
    /// Opened secrets by their sealed text, so an unchanged secret is not sent to the KMS again.
    opened: HashMap<String, String>,
}

impl Applier {
    async fn apply(&mut self, update: v1::ConfigUpdate) {
        if update.full {
            self.tenants.clear();
        }
        for t in &update.removed_tenants {
            self.tenants.remove(t);
        }
        for t in update.tenants {
            self.tenants.insert(t.id.clone(), t);
        }
        let config = self.engine_config().await;
        match self.engine.apply(&config) {
            Ok(()) => {
                tracing::info!(revision = update.revision, tenants = config.tenants.len(), "configuration applied");
                // Log in to new connections now, so their first query does not wait for it.
                tokio::spawn(crate::warm_up(self.engine.clone()));
            }
            Err(e) => tracing::error!(revision = update.revision, error = %e, "configuration rejected; keeping the previous one"),
        }
        // Saved after applying, so a revocation takes effect without waiting for the disk. A crash in
        // between only means the next start resumes the watch from the previous revision.
        let snapshot = v1::ConfigUpdate {
            revision: update.revision,
            full: true,
            tenants: self.tenants.values().cloned().collect(),
            removed_tenants: Vec::new(),
        };
        if let Err(e) = write_atomically(&self.dir.join("config.pb"), &snapshot.encode_to_vec()) {
            tracing::error!(error = %e, "cannot save the configuration; serving it from memory");
        }
    }

    /// The control plane no longer knows this data plane (an operator removed it): fail closed — serve
    /// no tenant, and drop the saved identity and configuration so it can only come back by enrolling.
    async fn forget(&mut self, reason: &str) {
        if self.tenants.is_empty() && !self.dir.join("identity.json").exists() {
            return;
        }
        tracing::error!(
            reason,
            "the control plane refused this data plane's credential; serving no tenant until it is enrolled again"
        );
        self.tenants.clear();
        self.opened.clear();
        if let Err(e) = self.engine.apply(&Config::default()) {
            tracing::error!(error = %e, "cannot clear the configuration");
        }
        for file in ["config.pb", "identity.json"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
    }

    /// The engine's configuration: secrets opened, connections this data plane cannot run left out
    /// (and logged) so one bad connection does not hold back every other change.
    async fn engine_config(&mut self) -> Config {
        let factories = self.engine.connectors();
        let mut config = Config::default();
        let mut opened = HashMap::new();
        for t in self.tenants.values() {
            let mut connections = Vec::new();
            'connection: for c in &t.connections {
                if !factories.iter().any(|f| f.name() == c.connector && f.version() == c.version) {
                    tracing::error!(tenant = %t.id, connection = %c.name, connector = %c.connector, version = %c.version,
                        "this data plane does not run that connector version; the connection is unavailable here");
                    continue;
                }
                let mut options: BTreeMap<String, String> = c.options.clone().into_iter().collect();
                for (name, sealed_text) in &c.sealed_options {
                    let plain = match self.opened.get(sealed_text) {
                        Some(p) => p.clone(),
                        None => {
                            let binding = Binding { tenant: &t.id, connection: &c.name, option: name };
                            let result = match Sealed::decode(sealed_text) {
                                Ok(sealed) => self.sealer.open(&sealed, binding).await,
                                Err(e) => Err(e),
                            };
                            match result {
                                Ok(p) => p,
                                Err(e) => {
                                    tracing::error!(tenant = %t.id, connection = %c.name, option = %name, error = %e,
                                        "cannot open the connection's sealed credential; the connection is unavailable");
                                    continue 'connection;
                                }
                            }
                        }
                    };
                    opened.insert(sealed_text.clone(), plain.clone());
                    options.insert(name.clone(), plain);
                }
                connections.push(ConnectionConfig {
                    name: c.name.clone(),
                    connector: c.connector.clone(),
                    version: Some(c.version.clone()),
                    options,
                    cache_ttl_seconds: c.cache_ttl_seconds,
                    requests_per_second: c.requests_per_second,
                    quota_share: c.quota_share,
                });
            }
            config.tenants.push(TenantConfig {
                id: t.id.clone(),
                weight: (t.weight > 0.0).then_some(t.weight),
                statement_timeout_seconds: (t.statement_timeout_seconds > 0).then_some(t.statement_timeout_seconds),
                max_concurrent_queries: (t.max_concurrent_queries > 0).then_some(t.max_concurrent_queries),
                api_keys: t
                    .api_keys
                    .iter()
                    .map(|k| ApiKeyConfig {
                        principal: k.principal.clone(),
                        token: None,
                        sha256: Some(k.sha256.clone()),
                        expires_at: (k.expires_at > 0).then_some(k.expires_at),
                    })
                    .collect(),
                connections,
                principals: t
                    .principals
                    .iter()
                    .map(|p| PrincipalConfig {
                        id: p.id.clone(),
                        kind: (!p.kind.is_empty()).then(|| p.kind.clone()),
                        role: (!p.role.is_empty()).then(|| p.role.clone()),
                        groups: p.groups.clone(),
                        attributes: p.attributes.clone().into_iter().collect(),
                    })
                    .collect(),
                policies: t
                    .policies
                    .iter()
                    .map(|p| PolicyConfig { name: p.name.clone(), version: p.version, rego: p.rego.clone() })
                    .collect(),
                oidc: t.oidc.as_ref().map(|o| OidcConfig {
                    issuer: o.issuer.clone(),
                    audience: o.audience.clone(),
                    principal_claim: o.principal_claim.clone(),
                    groups_claim: o.groups_claim.clone(),
                }),
                opa: t.opa.as_ref().map(|o| OpaConfig {
                    url: o.url.clone(),
                    path: o.path.clone(),
                    timeout_ms: o.timeout_ms,
                    cache_seconds: o.cache_seconds,
                }),
            });
        }
        self.opened = opened;
        config
    }
}

async fn watch_loop(mut client: Client, mut applier: Applier, revision: tokio::sync::watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = *revision.borrow();
        match client.watch(v1::WatchRequest { from_revision: from }).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                tracing::info!(from_revision = from, "watching the control plane's configuration");
                loop {
                    match stream.message().await {
                        Ok(Some(update)) => {
                            backoff = Duration::from_millis(200);
                            let r = update.revision;
                            applier.apply(update).await;
                            revision.send_replace(r);
                        }
                        Ok(None) => break,
                        Err(status) if status.code() == tonic::Code::Unauthenticated => {
                            applier.forget(status.message()).await;
                            revision.send_replace(0);
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(error = %status.message(), "configuration watch interrupted; serving the last configuration");
                            break;
                        }
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unauthenticated => {
                applier.forget(status.message()).await;
                revision.send_replace(0);
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), retry_in_ms = backoff.as_millis() as u64,
                    "cannot reach the control plane; serving the last configuration");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

async fn heartbeat_loop(
    mut client: Client,
    mut revision: tokio::sync::watch::Receiver<u64>,
    outbox: Arc<Outbox>,
    engine: Arc<Engine>,
) {
    let mut unsent: HashMap<String, i64> = HashMap::new();
    loop {
        unsent.extend(engine.take_key_uses());
        let request_revision = *revision.borrow_and_update();
        let request = v1::HeartbeatRequest {
            version: env!("CARGO_PKG_VERSION").into(),
            config_revision: request_revision,
            audit_pending: outbox.backlog() as u64,
            key_uses: unsent.iter().map(|(sha256, at)| v1::KeyUse { sha256: sha256.clone(), last_used_at: *at }).collect(),
            rate_limits: engine
                .rate_limits()
                .into_iter()
                .map(|(tenant, connection, b)| v1::RateLimit {
                    tenant: tenant.0,
                    connection,
                    bucket: b.bucket,
                    capacity: b.capacity,
                    window_seconds: b.window_seconds,
                    available: b.tokens.floor(),
                    waiting: b.waiting.min(u32::MAX as usize) as u32,
                    paused_for_seconds: b.paused_for_seconds,
                })
                .collect(),
        };
        match client.heartbeat(request).await {
            Ok(response) => {
                unsent.clear();
                let m = omnisql_telemetry::metrics();
                let applied = request_revision as i64;
                m.config_revision.get_or_create(&omnisql_telemetry::labels([("revision", "applied")])).set(applied);
                let latest = response.into_inner().latest_revision as i64;
                m.config_revision.get_or_create(&omnisql_telemetry::labels([("revision", "latest")])).set(latest);
            }
            Err(status) => tracing::debug!(error = %status.message(), "heartbeat failed"),
        }
        // Every 5 s, and at once when a new configuration is applied: operators see it applied promptly.
        tokio::select! {
            changed = revision.changed() => if changed.is_err() { tokio::time::sleep(Duration::from_secs(5)).await },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Longest a connection test may take (the control plane waits 20 s for the report).
const TEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs the connection tests admins ask for, each as soon as it arrives, and reports each.
async fn tests_loop(mut client: Client, engine: Arc<Engine>, outbox: Arc<Outbox>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match client.tests(v1::TestsRequest {}).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                while let Ok(Some(test)) = stream.message().await {
                    backoff = Duration::from_millis(200);
                    let (mut client, engine, outbox) = (client.clone(), engine.clone(), outbox.clone());
                    tokio::spawn(async move {
                        let report = run_test(&engine, &outbox, test).await;
                        if let Err(status) = client.report_test(report).await {
                            tracing::warn!(error = %status.message(), "cannot report a connection test");
                        }
                    });
                }
            }
            Err(status) => tracing::debug!(error = %status.message(), "cannot take connection tests yet"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(3));
    }
}

/// One connection test, audited like a query of the admin who asked.
async fn run_test(engine: &Arc<Engine>, outbox: &Arc<Outbox>, test: v1::ConnectionTest) -> v1::TestReport {
    let caller = omnisql_engine::Caller::new(&test.tenant, &test.requested_by);
    let sql = format!("-- connection test: one row of the first table of `{}`", test.connection);
    let mut attempt = crate::attempt::Attempt::start(engine, &Some(outbox.clone()), Some(&caller), &sql, None);
    let mut context = omnisql_connector::QueryContext::with_deadline(Some(std::time::Instant::now() + TEST_TIMEOUT));
    context.max_staleness = Some(Duration::ZERO);
    context.principal = test.requested_by.clone();
    let context = Arc::new(context);
    attempt.context = Some(context.clone());
    let started = std::time::Instant::now();
    let result = engine.test_connection(&caller.tenant, &test.connection, context.clone()).await;
    let mut report = v1::TestReport {
        id: test.id,
        api_requests: context.api_requests(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        ..Default::default()
    };
    let audited = match result {
        Ok(check) => {
            report.ok = true;
            report.tables = check.tables.min(u32::MAX as usize) as u32;
            report.rows = check.rows as u64;
            if let Some(table) = check.table {
                attempt.tables.push(format!("{}.{table}", test.connection));
                report.table = table;
            }
            attempt.finish("ok", None).await
        }
        Err(e) => {
            let status = crate::status::from_datafusion(&e);
            report.error = status.message().to_string();
            Err(attempt.fail("error", status).await)
        }
    };
    if let Err(status) = audited
        && report.ok
    {
        // The read could not be audited: it does not count as a working connection.
        report.ok = false;
        report.error = status.message().to_string();
    }
    report
}

/// Ships the audit outbox, oldest first, until every event is acknowledged.
async fn ship_loop(mut client: Client, outbox: Arc<Outbox>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let (events, offset) = match outbox.pending(500) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit outbox");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if events.is_empty() {
            if let Err(e) = outbox.acknowledge(&[], offset).await {
                tracing::error!(error = %e, "cannot update the audit outbox");
            }
            tokio::select! {
                _ = outbox.written() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
        let batch = v1::AuditBatch {
            events: events
                .into_iter()
                .map(|e| v1::AuditEvent {
                    id: e.id,
                    tenant: e.tenant,
                    principal: e.principal,
                    sql: e.sql,
                    tables: e.tables,
                    api_requests: e.api_requests,
                    rows: e.rows,
                    bytes: e.bytes,
                    duration_ms: e.duration_ms,
                    outcome: e.outcome,
                    error: e.error.unwrap_or_default(),
                    started_at: e.started_at,
                    data_plane: String::new(),
                    policy_revision: e.policy_revision,
                    api_requests_by_app: e.api_requests_by_app.into_iter().collect(),
                    cache_hits: e.cache_hits,
                })
                .collect(),
        };
        match client.ingest_audit(batch).await {
            Ok(ack) => {
                backoff = Duration::from_millis(200);
                let stored = ack.into_inner().stored;
                let all = ids.iter().all(|id| stored.contains(id));
                // Only a fully stored batch moves the offset; anything missing is sent again.
                let result = if all { outbox.acknowledge(&stored, offset).await } else { outbox.acknowledge(&stored, 0).await };
                if let Err(e) = result {
                    tracing::error!(error = %e, "cannot update the audit outbox");
                }
            }
            Err(status) => {
                tracing::debug!(error = %status.message(), pending = ids.len(), "cannot ship audit events yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(3));
            }
        }
    }
}
