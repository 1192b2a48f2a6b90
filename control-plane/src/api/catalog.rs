//! The connector catalog, and each tenant's connections (with sealed secrets) and policies.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use omnisql_secrets::Binding;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Body, Caller, ErrorBody, FieldError, PageQuery, idempotent, json, valid};
use crate::model::*;
use crate::store::NewConnection;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/connectors", get(list_connectors).post(publish_connector))
        .route("/v1/tenants/{tenant}/connections", get(list_connections).post(create_connection))
        .route("/v1/tenants/{tenant}/connections/{name}", get(get_connection).delete(delete_connection))
        .route("/v1/tenants/{tenant}/connections/{name}/test", axum::routing::post(test_connection))
        .route("/v1/tenants/{tenant}/connections/{name}/upgrade", axum::routing::post(upgrade_connection))
        .route("/v1/tenants/{tenant}/rate-limits", get(rate_limits))
        .route("/v1/tenants/{tenant}/policies", get(list_policies))
        .route("/v1/tenants/{tenant}/principals/{principal}/access", get(explain_policy))
        .route("/v1/tenants/{tenant}/policies/{name}", get(policy_versions).put(put_policy).delete(delete_policy))
}

/// Every connector version in the catalog.
#[utoipa::path(get, path = "/v1/connectors", tag = "catalog", responses((status = 200, body = Vec<ConnectorVersion>)))]
pub async fn list_connectors(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<axum::Json<Vec<ConnectorVersion>>, ApiError> {
    Ok(axum::Json(state.store.list_connectors().await?))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishConnector {
    pub name: String,
    pub version: String,
    pub parameters: Vec<ParameterSpec>,
    #[serde(default)]
    pub tables: Vec<TableSchema>,
}

/// Publishes a connector version (platform operators); publishing the same version again updates it.
#[utoipa::path(post, path = "/v1/connectors", tag = "catalog", request_body = PublishConnector,
    responses((status = 201, body = ConnectorVersion), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn publish_connector(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<PublishConnector>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    let mut errors = Vec::new();
    super::check_id("name", &req.name, 63, &mut errors);
    if !is_version(&req.version) {
        errors.push(FieldError { field: "version".into(), message: "must be a version like 1.2.0".into() });
    }
    valid(errors)?;
    let c = ConnectorVersion {
        name: req.name,
        version: req.version,
        parameters: req.parameters,
        tables: req.tables,
        created_at: now_ms(),
    };
    Ok(json(StatusCode::CREATED, &state.store.upsert_connector(&c).await?))
}

fn is_version(v: &str) -> bool {
    let parts: Vec<_> = v.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn version_key(v: &str) -> Vec<u64> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// The SQL schema its tables appear under: lower-case letters, digits and `_`.
    pub name: String,
    pub connector: String,
    /// The connector version to pin; the newest in the catalog when absent.
    pub version: Option<String>,
    /// Parameter values, secret ones included (they are sealed before they are stored).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub cache_ttl_seconds: Option<u64>,
    pub requests_per_second: Option<f64>,
    pub quota_share: Option<f64>,
}

/// Checks a connection against its connector's parameters; pure, so it is unit-tested.
pub fn validate_connection(req: &CreateConnection, connector: &ConnectorVersion) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let ident = !req.name.is_empty()
        && req.name.len() <= 63
        && req.name.starts_with(|c: char| c.is_ascii_lowercase())
        && req.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ident || matches!(req.name.as_str(), "information_schema" | "omnisql" | "public") {
        errors.push(FieldError {
            field: "name".into(),
            message: "must be a lower-case SQL identifier (a-z, 0-9, _) other than information_schema, omnisql and public".into(),
        });
    }
    for name in req.options.keys() {
        if !connector.parameters.iter().any(|p| &p.name == name) {
            let known = connector.parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
            errors.push(FieldError {
                field: format!("options.{name}"),
                message: format!("connector `{}` has no parameter `{name}` (it has: {known})", connector.name),
            });
        }
    }
    for p in connector.parameters.iter().filter(|p| p.required) {
        if req.options.get(&p.name).is_none_or(|v| v.is_empty()) {
            errors.push(FieldError { field: format!("options.{}", p.name), message: format!("is required: {}", p.description) });
        }
    }
    if req.cache_ttl_seconds.is_some_and(|t| t > 86_400 * 30) {
        errors.push(FieldError { field: "cache_ttl_seconds".into(), message: "must be at most 30 days".into() });
    }
    if req.requests_per_second.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        errors.push(FieldError { field: "requests_per_second".into(), message: "must be greater than 0".into() });
    }
    if req.quota_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
        errors.push(FieldError { field: "quota_share".into(), message: "must be in (0, 1]".into() });
    }
    errors
}

/// Creates a connection; secret options are sealed with the tenant's key before they are stored.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/connections", tag = "connections", params(("tenant" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body create once")),
    request_body = CreateConnection, responses((status = 201, body = Connection), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(req): Body<CreateConnection>,
) -> Result<Response, ApiError> {
    let tenant_id = caller.admin_of(&tenant)?;
    let tenant = state.store.get_tenant(&tenant_id).await?;
    let versions: Vec<ConnectorVersion> =
        state.store.list_connectors().await?.into_iter().filter(|c| c.name == req.connector).collect();
    let connector = match &req.version {
        Some(v) => versions.iter().find(|c| &c.version == v).cloned().ok_or_else(|| {
            let have = versions.iter().map(|c| c.version.as_str()).collect::<Vec<_>>().join(", ");
            ApiError::field(
                "version",
                format!("connector `{}` has no version {v} in the catalog (it has: {have})", req.connector),
            )
        })?,
        None => versions.iter().max_by_key(|c| version_key(&c.version)).cloned().ok_or_else(|| {
            ApiError::field("connector", format!("no connector `{}` in the catalog; see GET /v1/connectors", req.connector))
        })?,
    };
    valid(validate_connection(&req, &connector))?;
    // The fingerprint hashes secret values, so the stored idempotency record holds no secret.
    let mut fingerprint = req.clone();
    for p in connector.parameters.iter().filter(|p| p.secret) {
        if let Some(v) = fingerprint.options.get_mut(&p.name) {
            *v = crate::keys::sha256_hex(v);
        }
    }
    idempotent(&state, &tenant_id, &headers, &fingerprint, &[], || async {
        let mut options = BTreeMap::new();
        let mut sealed_options = BTreeMap::new();
        for (name, value) in &req.options {
            let secret = connector.parameters.iter().any(|p| &p.name == name && p.secret);
            if secret {
                let binding = Binding { tenant: &tenant.id.0, connection: &req.name, option: name };
                let sealed = state.sealer.seal(&tenant.key_id, binding, value).await?;
                sealed_options.insert(name.clone(), sealed.encode());
            } else {
                options.insert(name.clone(), value.clone());
            }
        }
        let new = NewConnection {
            name: req.name.clone(),
            connector: connector.name.clone(),
            version: connector.version.clone(),
            options,
            sealed_options,
            cache_ttl_seconds: req.cache_ttl_seconds,
            requests_per_second: req.requests_per_second,
            quota_share: req.quota_share,
        };
        let created = state.store.create_connection(&tenant_id, &new, now_ms()).await?;
        state.config_changed();
        Ok((StatusCode::CREATED, serde_json::to_value(created).unwrap_or_default()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/connections", tag = "connections", params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = Page<Connection>), (status = 404, body = ErrorBody)))]
pub async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Connection>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.list_connections(&tenant, &q.request()?).await?))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/connections/{name}", tag = "connections",
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = Connection), (status = 404, body = ErrorBody)))]
pub async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<axum::Json<Connection>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.get_connection(&tenant, &name).await?))
}

/// Deletes a connection: every data plane drops it within seconds.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/connections/{name}", tag = "connections",
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    state.store.delete_connection(&tenant, &name).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConnection {
    /// The connector version to move the connection to.
    pub version: String,
}

/// An upgrade, done or refused, with the smoke tests that decided it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeResult {
    pub upgraded: bool,
    pub from_version: String,
    pub to_version: String,
    /// The connection as it now is (on the old version when refused).
    pub connection: Connection,
    pub smoke: crate::smoke::SmokeReport,
}

/// Moves a connection to another version of its connector — only after that version's smoke tests pass
/// against the sandbox (every table read through it). Refused with 409 and the failing checks otherwise,
/// and the connection keeps answering on its version; on success every data plane switches within seconds.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/connections/{name}/upgrade", tag = "connections",
    params(("tenant" = String, Path), ("name" = String, Path)), request_body = UpgradeConnection,
    responses((status = 200, body = UpgradeResult), (status = 409, body = UpgradeResult, description = "the version's smoke tests failed"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn upgrade_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Body(req): Body<UpgradeConnection>,
) -> Result<Response, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let connection = state.store.get_connection(&tenant, &name).await?;
    if connection.version == req.version {
        return Err(ApiError::field("version", format!("the connection already runs version {}", req.version)));
    }
    let versions: Vec<String> =
        state.store.list_connectors().await?.into_iter().filter(|c| c.name == connection.connector).map(|c| c.version).collect();
    if !versions.contains(&req.version) {
        return Err(ApiError::field(
            "version",
            format!(
                "connector `{}` has no version {} in the catalog (it has: {})",
                connection.connector,
                req.version,
                versions.join(", ")
            ),
        ));
    }
    let Some(smoke) = &state.smoke_tests else {
        return Err(ApiError::Unavailable(
            "this control plane runs no connector smoke tests, so it cannot check a version before an upgrade; the upgrade is refused".into(),
        ));
    };
    let report = smoke.run(&connection.connector, &req.version).await;
    let from_version = connection.version.clone();
    if !report.passed {
        tracing::warn!(tenant = %tenant.0, connection = %name, version = %req.version, "upgrade refused: smoke tests failed");
        let refused = UpgradeResult { upgraded: false, from_version, to_version: req.version, connection, smoke: report };
        return Ok(json(StatusCode::CONFLICT, &refused));
    }
    let connection = state.store.set_connection_version(&tenant, &name, &req.version, now_ms()).await?;
    state.config_changed();
    tracing::info!(tenant = %tenant.0, connection = %name, from = %from_version, to = %req.version, "connection upgraded");
    Ok(json(StatusCode::OK, &UpgradeResult { upgraded: true, from_version, to_version: req.version, connection, smoke: report }))
}

/// The rate-limit buckets of the tenant's connections, as each data plane of its region last reported
/// them (every few seconds): how many requests each could send at once, and how many wait.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/rate-limits", tag = "connections", params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<RateLimitReport>), (status = 404, body = ErrorBody)))]
pub async fn rate_limits(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Vec<RateLimitReport>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.rate_limits(&tenant).await?))
}

/// How long a test waits for a data plane to take it and report.
const TEST_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A data plane counts as connected when its last heartbeat is this recent.
const CONNECTED_MS: i64 = 30_000;

/// Asks a data plane of the tenant's region to read one row through the connection, with its
/// credentials, and answers with what it found (`result.ok` false with the error when the API refused
/// or failed). No row leaves the data plane; the data plane audits the read.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/connections/{name}/test", tag = "connections",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ConnectionTest), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn test_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<axum::Json<ConnectionTest>, ApiError> {
    let tenant_id = caller.admin_of(&tenant)?;
    let tenant = state.store.get_tenant(&tenant_id).await?;
    state.store.get_connection(&tenant_id, &name).await?;
    let now = now_ms();
    let connected = state
        .store
        .list_data_planes()
        .await?
        .into_iter()
        .any(|dp| dp.region == tenant.region && dp.last_heartbeat_at.is_some_and(|at| now - at < CONNECTED_MS));
    if !connected {
        return Err(ApiError::Unavailable(format!(
            "no data plane of region `{}` is connected (none sent a heartbeat in the last {} s): start or enroll one, then test again",
            tenant.region,
            CONNECTED_MS / 1000
        )));
    }
    let test = ConnectionTest {
        id: format!("ct-{}", uuid::Uuid::now_v7().simple()),
        connection: name,
        requested_by: caller.principal.id.clone(),
        requested_at: now,
        data_plane: None,
        finished_at: None,
        result: None,
    };
    let mut woken = state.tests.subscribe();
    state.store.create_connection_test(&tenant_id, &tenant.region, &test).await?;
    state.tests_changed();
    let deadline = tokio::time::Instant::now() + TEST_WAIT;
    loop {
        let current = state.store.get_connection_test(&tenant_id, &test.id).await?;
        if current.result.is_some() {
            return Ok(axum::Json(current));
        }
        // Reports reach this replica's watch at once; another replica's, at the next look.
        let woke = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(250)),
            woken.changed(),
        );
        let _ = woke.await;
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::Unavailable(match current.data_plane {
                Some(dp) => format!(
                    "data plane `{dp}` took the test but did not report within {} s; its log says why",
                    TEST_WAIT.as_secs()
                ),
                None => format!(
                    "no data plane of region `{}` took the test within {} s (are they running this version?); try again",
                    tenant.region,
                    TEST_WAIT.as_secs()
                ),
            }));
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutPolicy {
    /// A Rego module (`package …`).
    pub rego: String,
}

/// Stores a new version of a policy.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/policies/{name}", tag = "policies",
    params(("tenant" = String, Path), ("name" = String, Path)), request_body = PutPolicy,
    responses((status = 201, body = Policy), (status = 422, body = ErrorBody)))]
pub async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    Body(req): Body<PutPolicy>,
) -> Result<Response, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let mut errors = Vec::new();
    super::check_id("name", &name, 63, &mut errors);
    if let Err(message) = check_rego(&name, &req.rego) {
        errors.push(FieldError { field: "rego".into(), message });
    }
    valid(errors)?;
    state.store.get_tenant(&tenant).await?;
    let policy = state.store.put_policy(&tenant, &name, &req.rego, now_ms()).await?;
    state.config_changed();
    Ok(json(StatusCode::CREATED, &policy))
}

/// Parses the module with the Rego interpreter data planes use, so a policy that cannot load is refused
/// here rather than on every data plane.
pub fn check_rego(name: &str, rego: &str) -> Result<(), String> {
    if rego.len() > 256 * 1024 {
        return Err("must be at most 256 KiB".into());
    }
    let mut engine = regorus::Engine::new();
    engine.add_policy(format!("{name}.rego"), rego.to_string()).map(|_| ()).map_err(|e| format!("is not valid Rego: {e}"))
}

/// Which table to explain a principal's access to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccessQuery {
    /// `connection.table`, e.g. `salesforce.account`.
    pub table: String,
}

/// What a principal sees of a table under the tenant's current policies, and why.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyExplanation {
    pub principal: String,
    pub table: String,
    /// `name@version` of each policy, joined by `,` (empty: the tenant has none, so every table is open).
    pub policy_revision: String,
    /// `allowed` (with the filters and masks below), `denied`, `error` (the policies cannot be
    /// evaluated, which denies too), or `external` (the tenant's OPA server decides).
    pub decision: String,
    pub reason: String,
    /// SQL boolean expressions every row must pass.
    pub row_filters: Vec<String>,
    /// Column → the SQL expression shown in its place.
    pub masks: std::collections::BTreeMap<String, String>,
    pub hidden_columns: Vec<String>,
    /// Whether the table's columns were known from the connector catalog (masks and hidden columns are
    /// decided per column; tables a connector discovers at run time, such as Salesforce custom objects,
    /// are known to data planes only).
    pub columns_known: bool,
}

/// Explains what `principal` sees of `table`: the decision, row filters, masks and hidden columns, by
/// the same evaluation data planes run.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/principals/{principal}/access", tag = "policies",
    params(("tenant" = String, Path), ("principal" = String, Path), AccessQuery),
    responses((status = 200, body = PolicyExplanation), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn explain_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, principal)): Path<(String, String)>,
    Query(req): Query<AccessQuery>,
) -> Result<axum::Json<PolicyExplanation>, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let Some((schema, table)) = req.table.split_once('.') else {
        return Err(ApiError::Invalid(vec![FieldError { field: "table".into(), message: "must be connection.table".into() }]));
    };
    let principal = state.store.get_principal(&tenant, &principal).await?;
    if let Some(config) = state.store.get_tenant(&tenant).await?.opa {
        // The server runs beside the tenant's data planes, out of the control plane's reach.
        return Ok(axum::Json(PolicyExplanation {
            principal: principal.id,
            table: req.table,
            policy_revision: config.revision(),
            decision: "external".into(),
            reason: format!(
                "the tenant's OPA server decides: data planes ask POST {} (input shape in docs/policies.md, \"External OPA\"); ask it the same to see why",
                config.endpoint()
            ),
            row_filters: Vec::new(),
            masks: Default::default(),
            hidden_columns: Vec::new(),
            columns_known: false,
        }));
    }
    let connection = state.store.get_connection(&tenant, schema).await?;
    let columns: Option<Vec<(String, String)>> = state
        .store
        .get_connector(&connection.connector, &connection.version)
        .await
        .ok()
        .and_then(|c| c.tables.into_iter().find(|t| t.name == table))
        .map(|t| t.columns.into_iter().map(|c| (c.name, c.data_type)).collect());
    let policies: Vec<omnisql_policy::PolicyConfig> = state
        .store
        .list_policies(&tenant)
        .await?
        .into_iter()
        .map(|p| omnisql_policy::PolicyConfig { name: p.name, version: p.version.max(0) as u32, rego: p.rego })
        .collect();
    let compiled = omnisql_policy::Policies::compile(&policies);
    let who = omnisql_policy::Identity {
        tenant: tenant.0.clone(),
        principal: omnisql_policy::PrincipalConfig {
            id: principal.id.clone(),
            kind: Some(principal.kind.as_str().into()),
            role: Some(principal.role.as_str().into()),
            groups: principal.groups.clone(),
            attributes: principal.attributes.clone(),
        },
    };
    let mut out = PolicyExplanation {
        principal: principal.id.clone(),
        table: req.table.clone(),
        policy_revision: compiled.revision().to_string(),
        decision: "allowed".into(),
        reason: String::new(),
        row_filters: Vec::new(),
        masks: Default::default(),
        hidden_columns: Vec::new(),
        columns_known: columns.is_some(),
    };
    let decided = compiled.decide(&who, schema, table, columns.as_deref().unwrap_or_default());
    match decided {
        Ok(d) => {
            out.row_filters = d.row_filters.clone();
            out.masks = d.masks.clone();
            out.hidden_columns = d.hidden.iter().cloned().collect();
            out.reason = if !compiled.active() {
                "the tenant has no policies: every table is read as it is".into()
            } else {
                "`allow` admits the table (FilterTables); rowFilters, columnMask and FilterColumns decide the rest".into()
            };
        }
        Err(e) => {
            out.decision = if matches!(e, omnisql_policy::PolicyError::Denied { .. }) { "denied" } else { "error" }.into();
            out.reason = e.to_string();
        }
    }
    Ok(axum::Json(out))
}

/// The latest version of each policy.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policies", tag = "policies", params(("tenant" = String, Path)),
    responses((status = 200, body = Vec<Policy>)))]
pub async fn list_policies(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Vec<Policy>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.list_policies(&tenant).await?))
}

/// Every version of one policy, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/policies/{name}", tag = "policies",
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 200, body = Vec<Policy>), (status = 404, body = ErrorBody)))]
pub async fn policy_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<axum::Json<Vec<Policy>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.policy_versions(&tenant, &name).await?))
}

/// Deletes a policy, every version of it: data planes stop applying it within seconds.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/policies/{name}", tag = "policies",
    params(("tenant" = String, Path), ("name" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    state.store.delete_policy(&tenant, &name).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github() -> ConnectorVersion {
        ConnectorVersion {
            name: "github".into(),
            version: "1.0.0".into(),
            parameters: vec![
                ParameterSpec { name: "token".into(), description: "PAT".into(), required: true, secret: true },
                ParameterSpec { name: "orgs".into(), description: "orgs".into(), required: true, secret: false },
                ParameterSpec { name: "base_url".into(), description: "URL".into(), required: false, secret: false },
            ],
            tables: vec![],
            created_at: 0,
        }
    }

    fn request(name: &str, options: &[(&str, &str)]) -> CreateConnection {
        CreateConnection {
            name: name.into(),
            connector: "github".into(),
            version: None,
            options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cache_ttl_seconds: None,
            requests_per_second: None,
            quota_share: Some(1.5),
        }
    }

    #[test]
    fn connection_validation_names_every_wrong_field() {
        let errors = validate_connection(&request("Bad Name", &[("orgs", "acme"), ("tokn", "x")]), &github());
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "options.tokn", "options.token", "quota_share"]);
        assert!(errors[1].message.contains("token, orgs, base_url"));
    }

    #[test]
    fn rego_is_parsed_and_errors_say_where() {
        assert!(check_rego("rows", "package omnisql.rows\n\ndefault allow := false\nallow if input.role == \"admin\"\n").is_ok());
        let err = check_rego("rows", "package omnisql\nallow if {").unwrap_err();
        assert!(err.starts_with("is not valid Rego") && err.contains("rows.rego"), "{err}");
        assert!(check_rego("rows", "allow := true").is_err(), "a module needs a package");
    }

    #[test]
    fn a_complete_connection_is_valid() {
        let mut ok = request("gh", &[("orgs", "acme"), ("token", "t")]);
        ok.quota_share = Some(0.5);
        assert!(validate_connection(&ok, &github()).is_empty());
        assert!(is_version("1.10.0") && !is_version("1.0") && !is_version("v1.0.0"));
        assert!(version_key("1.10.0") > version_key("1.9.3"));
    }
}
