//! The gRPC service data planes call: enrollment, the configuration watch, heartbeats and audit
//! ingestion. Every call but `Enroll` carries the data plane's credential as a bearer token.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use omnisql_proto::v1;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::api::AppState;
use crate::keys;
use crate::model::*;
use crate::store::{RegionChanges, StoreError};

/// How often a watch also polls the store, for changes made through another control-plane replica.
const POLL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct DataPlaneGrpc {
    state: AppState,
    /// Ends open watch streams when the control plane shuts down (they would otherwise hold it open).
    shutdown: tokio_util::sync::CancellationToken,
}

impl DataPlaneGrpc {
    pub fn new(state: AppState, shutdown: tokio_util::sync::CancellationToken) -> DataPlaneGrpc {
        DataPlaneGrpc { state, shutdown }
    }

    pub fn server(self) -> v1::data_plane_service_server::DataPlaneServiceServer<DataPlaneGrpc> {
        v1::data_plane_service_server::DataPlaneServiceServer::new(self).max_decoding_message_size(64 << 20)
    }

    #[allow(clippy::result_large_err)]
    async fn data_plane<T>(&self, req: &Request<T>) -> Result<DataPlane, Status> {
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("send the data-plane credential as `authorization: Bearer …`"))?;
        match self.state.store.data_plane_by_credential(&keys::sha256_hex(token.trim())).await.map_err(store_status)? {
            Some(dp) => Ok(dp),
            None => Err(Status::unauthenticated("unknown data-plane credential: enroll again with a new enrollment token")),
        }
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotFound(what) => Status::not_found(format!("{what} not found")),
        StoreError::Conflict(what) => Status::already_exists(format!("{what} already exists")),
        StoreError::Invalid(m) => Status::invalid_argument(m),
        other => {
            tracing::error!(error = %other, source = ?std::error::Error::source(&other), "store failed");
            Status::unavailable("the control plane's database is unavailable; retry shortly")
        }
    }
}

/// The protocol form of a region's changes.
pub fn config_update(changes: RegionChanges, full: bool) -> v1::ConfigUpdate {
    v1::ConfigUpdate {
        revision: changes.revision.max(0) as u64,
        full,
        removed_tenants: changes.removed.into_iter().map(|t| t.0).collect(),
        tenants: changes
            .tenants
            .into_iter()
            .map(|t| v1::TenantConfig {
                id: t.tenant.id.0.clone(),
                weight: t.tenant.weight,
                statement_timeout_seconds: t.tenant.statement_timeout_seconds.unwrap_or(0).max(0) as u64,
                max_concurrent_queries: t.tenant.max_concurrent_queries.unwrap_or(0).max(0) as u32,
                key_id: t.tenant.key_id.clone(),
                principals: t
                    .principals
                    .iter()
                    .map(|p| v1::Principal {
                        id: p.id.clone(),
                        kind: p.kind.as_str().into(),
                        role: p.role.as_str().into(),
                        groups: p.groups.clone(),
                        attributes: p.attributes.clone().into_iter().collect(),
                    })
                    .collect(),
                oidc: t.tenant.oidc.as_ref().map(|o| v1::OidcTrust {
                    issuer: o.issuer.clone(),
                    audience: o.audience.clone(),
                    principal_claim: o.principal_claim.clone(),
                    groups_claim: o.groups_claim.clone(),
                }),
                opa: t.tenant.opa.as_ref().map(|o| v1::OpaServer {
                    url: o.url.clone(),
                    path: o.path.clone(),
                    timeout_ms: o.timeout_ms,
                    cache_seconds: o.cache_seconds,
                }),
                api_keys: t
                    .api_keys
                    .into_iter()
                    .map(|(k, _)| v1::ApiKey {
                        id: k.id,
                        principal: k.principal_id,
                        sha256: k.sha256,
                        expires_at: k.expires_at.map(|ms| ms / 1000).unwrap_or(0),
                    })
                    .collect(),
                connections: t
                    .connections
                    .into_iter()
                    .map(|c| v1::Connection {
                        name: c.name,
                        connector: c.connector,
                        version: c.version,
                        options: c.options.into_iter().collect(),
                        sealed_options: c.sealed_options.into_iter().collect(),
                        cache_ttl_seconds: c.cache_ttl_seconds,
                        requests_per_second: c.requests_per_second,
                        quota_share: c.quota_share,
                    })
                    .collect(),
                policies: t
                    .policies
                    .into_iter()
                    .map(|p| v1::Policy { name: p.name, version: p.version.max(0) as u32, rego: p.rego })
                    .collect(),
            })
            .collect(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::ConfigUpdate, Status>> + Send>>;
type TestsStream = Pin<Box<dyn Stream<Item = Result<v1::ConnectionTest, Status>> + Send>>;

/// Tests older than this are not handed out: the admin who asked has stopped waiting.
const TEST_MAX_AGE_MS: i64 = 30_000;

#[tonic::async_trait]
impl v1::data_plane_service_server::DataPlaneService for DataPlaneGrpc {
    async fn enroll(&self, request: Request<v1::EnrollRequest>) -> Result<Response<v1::EnrollResponse>, Status> {
        let req = request.into_inner();
        let credential = keys::generate("omdp");
        let dp = DataPlane {
            id: format!("dp-{}", uuid::Uuid::now_v7().simple()),
            region: String::new(),
            hostname: req.hostname.chars().take(255).collect(),
            version: req.version.chars().take(64).collect(),
            enrolled_at: now_ms(),
            last_heartbeat_at: None,
            enrolled_by: None,
            acked_revision: 0,
            latest_revision: 0,
            audit_pending: 0,
            credential_sha256: keys::sha256_hex(&credential),
        };
        let dp = self.state.store.enroll(&keys::sha256_hex(req.enrollment_token.trim()), dp).await.map_err(|e| match e {
            StoreError::NotFound(_) => {
                Status::permission_denied("the enrollment token is unknown, used or expired: ask an operator for a new one")
            }
            other => store_status(other),
        })?;
        tracing::info!(data_plane = %dp.id, region = %dp.region, "data plane enrolled");
        Ok(Response::new(v1::EnrollResponse { data_plane_id: dp.id, credential, region: dp.region }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let dp = self.data_plane(&request).await?;
        let mut since = request.into_inner().from_revision as i64;
        let store = self.state.store.clone();
        let mut changed = self.state.changes.subscribe();
        let shutdown = self.shutdown.clone();
        let current = store.revision().await.map_err(store_status)?;
        // A revision from the future (the control plane's database was replaced) gets a full snapshot.
        if since > current {
            since = 0;
        }
        tracing::info!(data_plane = %dp.id, region = %dp.region, from_revision = since, "configuration watch started");
        let stream = async_stream(move |tx| async move {
            let mut first = true;
            loop {
                // A data plane removed by an operator loses its watch at the next change.
                match store.data_plane_by_credential(&dp.credential_sha256).await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let _ = tx.send(Err(Status::unauthenticated("this data plane was removed; enroll it again"))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                }
                match store.region_changes(&dp.region, since).await {
                    Ok(changes) => {
                        let full = since == 0;
                        let revision = changes.revision;
                        if first || !changes.tenants.is_empty() || !changes.removed.is_empty() {
                            let push = tracing::info_span!("config_push", data_plane = %dp.id, region = %dp.region, revision,
                                tenants = changes.tenants.len(), full);
                            if tx.send(Ok(config_update(changes, full))).instrument(push).await.is_err() {
                                return;
                            }
                        }
                        since = revision;
                        first = false;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                }
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("the control plane is shutting down; reconnect"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn heartbeat(&self, request: Request<v1::HeartbeatRequest>) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let dp = self.data_plane(&request).await?;
        let req = request.into_inner();
        let version: String = req.version.chars().take(64).collect();
        let pending = req.audit_pending.min(i64::MAX as u64) as i64;
        self.state
            .store
            .heartbeat(&dp.id, &version, req.config_revision as i64, pending, now_ms())
            .await
            .map_err(store_status)?;
        let uses: Vec<(String, i64)> =
            req.key_uses.into_iter().take(100_000).map(|u| (u.sha256, u.last_used_at.min(now_ms()))).collect();
        if !uses.is_empty() {
            self.state.store.record_key_uses(&dp.region, &uses).await.map_err(store_status)?;
        }
        // Only this region's tenants, a bounded number: a data plane reports on no one else.
        let now = now_ms();
        let mut reports = Vec::new();
        let mut in_region: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        for r in req.rate_limits.into_iter().take(10_000) {
            let ok = match in_region.get(&r.tenant) {
                Some(ok) => *ok,
                None => {
                    let ok = self.state.store.get_tenant(&TenantId(r.tenant.clone())).await.is_ok_and(|t| t.region == dp.region);
                    in_region.insert(r.tenant.clone(), ok);
                    ok
                }
            };
            if ok {
                reports.push((
                    TenantId(r.tenant),
                    RateLimitReport {
                        data_plane: dp.id.clone(),
                        connection: r.connection.chars().take(128).collect(),
                        bucket: r.bucket.chars().take(128).collect(),
                        capacity: r.capacity,
                        window_seconds: r.window_seconds,
                        available: r.available,
                        waiting: i64::from(r.waiting),
                        paused_for_seconds: r.paused_for_seconds,
                        reported_at: now,
                    },
                ));
            }
        }
        self.state.store.replace_rate_limits(&dp.id, &reports).await.map_err(store_status)?;
        let latest = self.state.store.revision().await.map_err(store_status)?;
        Ok(Response::new(v1::HeartbeatResponse { latest_revision: latest.max(0) as u64 }))
    }

    type TestsStream = TestsStream;

    async fn tests(&self, request: Request<v1::TestsRequest>) -> Result<Response<Self::TestsStream>, Status> {
        let dp = self.data_plane(&request).await?;
        let store = self.state.store.clone();
        let mut asked = self.state.tests.subscribe();
        let shutdown = self.shutdown.clone();
        let stream = async_stream(move |tx| async move {
            loop {
                let now = now_ms();
                match store.claim_connection_tests(&dp.region, &dp.id, now - TEST_MAX_AGE_MS, now).await {
                    Ok(tests) => {
                        for (tenant, t) in tests {
                            tracing::info!(data_plane = %dp.id, tenant = %tenant, connection = %t.connection, test = %t.id, "connection test handed out");
                            let test = v1::ConnectionTest {
                                id: t.id,
                                tenant: tenant.0,
                                connection: t.connection,
                                requested_by: t.requested_by,
                            };
                            if tx.send(Ok(test)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store_status(e))).await;
                        return;
                    }
                }
                tokio::select! {
                    r = asked.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(POLL) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.cancelled() => return,
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn report_test(&self, request: Request<v1::TestReport>) -> Result<Response<v1::TestAck>, Status> {
        let dp = self.data_plane(&request).await?;
        let r = request.into_inner();
        let result = ConnectionTestResult {
            ok: r.ok,
            tables: r.tables,
            table: Some(r.table).filter(|t| !t.is_empty()),
            rows: r.rows,
            api_requests: r.api_requests,
            duration_ms: r.duration_ms,
            error: Some(r.error.chars().take(4000).collect::<String>()).filter(|e| !e.is_empty()),
        };
        self.state.store.finish_connection_test(&dp.id, &r.id, &result, now_ms()).await.map_err(store_status)?;
        self.state.tests_changed();
        Ok(Response::new(v1::TestAck {}))
    }

    async fn ingest_audit(&self, request: Request<v1::AuditBatch>) -> Result<Response<v1::AuditAck>, Status> {
        let dp = self.data_plane(&request).await?;
        let batch = request.into_inner();
        if batch.events.len() > 10_000 {
            return Err(Status::invalid_argument("send at most 10,000 audit events per batch"));
        }
        let mut events = Vec::with_capacity(batch.events.len());
        let mut regions: std::collections::HashMap<String, Option<String>> = std::collections::HashMap::new();
        for e in batch.events {
            if e.id.is_empty() || e.tenant.is_empty() {
                return Err(Status::invalid_argument("every audit event needs an id and a tenant"));
            }
            if !OUTCOMES.contains(&e.outcome.as_str()) {
                return Err(Status::invalid_argument(format!("unknown audit outcome `{}`", e.outcome)));
            }
            // A data plane reports for its own region's tenants (and the platform, for failed logins).
            if !regions.contains_key(&e.tenant) {
                let region = self.state.store.get_tenant(&TenantId(e.tenant.clone())).await.ok().map(|t| t.region);
                regions.insert(e.tenant.clone(), region);
            }
            if e.tenant != PLATFORM_TENANT
                && let Some(Some(region)) = regions.get(&e.tenant)
                && region != &dp.region
            {
                return Err(Status::permission_denied(format!(
                    "tenant `{}` is not served by this data plane's region `{}`",
                    e.tenant, dp.region
                )));
            }
            events.push(NewAuditEvent {
                id: e.id,
                tenant_id: TenantId(e.tenant),
                principal: e.principal,
                sql: e.sql,
                tables: e.tables,
                api_requests: e.api_requests.min(i64::MAX as u64) as i64,
                rows: e.rows.min(i64::MAX as u64) as i64,
                bytes: e.bytes.min(i64::MAX as u64) as i64,
                duration_ms: e.duration_ms,
                outcome: e.outcome,
                error: (!e.error.is_empty()).then_some(e.error),
                started_at: e.started_at,
                data_plane: dp.id.clone(),
                policy_revision: (!e.policy_revision.is_empty()).then_some(e.policy_revision),
                api_requests_by_app: e
                    .api_requests_by_app
                    .into_iter()
                    .take(64)
                    .map(|(app, n)| (app.chars().take(64).collect(), n.min(i64::MAX as u64) as i64))
                    .collect(),
                cache_hits: e.cache_hits.min(i64::MAX as u64) as i64,
            });
        }
        let store = tracing::info_span!("audit_ingest", data_plane = %dp.id, events = events.len());
        let stored = self.state.store.append_audit(&events, now_ms()).instrument(store).await.map_err(store_status)?;
        let acknowledged: std::collections::HashSet<&str> = stored.iter().map(String::as_str).collect();
        let metric = &omnisql_telemetry::metrics().audit_events_stored;
        for e in events.iter().filter(|e| acknowledged.contains(e.id.as_str())) {
            metric.get_or_create(&omnisql_telemetry::labels([("tenant", &e.tenant_id.0)])).inc();
        }
        Ok(Response::new(v1::AuditAck { stored }))
    }
}

/// A stream fed by a task through a small channel (the task stops when the receiver is dropped).
fn async_stream<T: Send + 'static, F, Fut>(f: F) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<T, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
