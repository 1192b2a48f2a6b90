//! Tenants, their principals and API keys.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Body, Caller, ErrorBody, FieldError, PageQuery, check_id, idempotent, json, valid};
use crate::keys;
use crate::model::*;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/tenants", get(list_tenants).post(create_tenant))
        .route("/v1/tenants/{tenant}", get(get_tenant).patch(update_tenant).delete(delete_tenant))
        .route("/v1/tenants/{tenant}/oidc", get(get_oidc).put(put_oidc).delete(delete_oidc))
        .route("/v1/tenants/{tenant}/opa", get(get_opa).put(put_opa).delete(delete_opa))
        .route("/v1/tenants/{tenant}/principals", get(list_principals).post(create_principal))
        .route("/v1/tenants/{tenant}/principals/{principal}", delete(delete_principal).patch(update_principal))
        .route("/v1/tenants/{tenant}/api-keys", get(list_api_keys).post(create_api_key))
        .route("/v1/tenants/{tenant}/api-keys/{key}", delete(revoke_api_key))
}

/// The caller.
#[utoipa::path(get, path = "/v1/me", tag = "access", responses((status = 200, body = Principal), (status = 401, body = ErrorBody)))]
pub async fn me(caller: Caller) -> axum::Json<Principal> {
    axum::Json(caller.principal)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lower-case letters, digits, `_`, `-`; starts with a letter.
    pub id: String,
    pub name: String,
    /// The region whose data planes serve this tenant, e.g. `eu-west-1`.
    pub region: String,
    /// The tenant's key-encryption key (a KMS key id or ARN); the control plane's default if absent.
    pub key_id: Option<String>,
    /// Share of contended rate limits (default 1).
    pub weight: Option<f64>,
    /// Longest one of the tenant's statements may run, in seconds (1 to 86400); the data plane's
    /// default if absent. Users may lower it for their session, never raise it.
    pub statement_timeout_seconds: Option<i64>,
    /// Statements the tenant may run at once on one data plane (1 to 10000; more queue); the data
    /// plane's default if absent.
    pub max_concurrent_queries: Option<i64>,
    /// Also create this tenant admin and an API key for it.
    pub admin: Option<String>,
}

/// Changes to a tenant (platform operators); absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    pub name: Option<String>,
    pub weight: Option<f64>,
    pub statement_timeout_seconds: Option<i64>,
    pub max_concurrent_queries: Option<i64>,
}

fn validate_limits(
    weight: Option<f64>,
    statement_timeout_seconds: Option<i64>,
    max_concurrent_queries: Option<i64>,
    errors: &mut Vec<FieldError>,
) {
    if weight.is_some_and(|w| !(w > 0.0 && w <= 1000.0)) {
        errors.push(FieldError { field: "weight".into(), message: "must be in (0, 1000]".into() });
    }
    if statement_timeout_seconds.is_some_and(|s| !(1..=86_400).contains(&s)) {
        errors.push(FieldError { field: "statement_timeout_seconds".into(), message: "must be 1 to 86400".into() });
    }
    if max_concurrent_queries.is_some_and(|n| !(1..=10_000).contains(&n)) {
        errors.push(FieldError { field: "max_concurrent_queries".into(), message: "must be 1 to 10000".into() });
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantCreated {
    pub tenant: Tenant,
    pub admin: Option<ApiKeyCreated>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    pub api_key: ApiKey,
    /// The key itself: shown only in this response. Absent when an `Idempotency-Key` replays it.
    pub key: Option<String>,
}

/// Where shown-once keys sit in the answers, so `Idempotency-Key` replays do not store them.
const SHOWN_ONCE_KEYS: &[&str] = &["/key", "/admin/key"];

fn validate_tenant(req: &CreateTenant) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    check_id("id", &req.id, 63, &mut errors);
    if req.name.trim().is_empty() || req.name.len() > 200 {
        errors.push(FieldError { field: "name".into(), message: "must be 1 to 200 characters".into() });
    }
    check_id("region", &req.region, 63, &mut errors);
    validate_limits(req.weight, req.statement_timeout_seconds, req.max_concurrent_queries, &mut errors);
    if let Some(a) = &req.admin {
        check_id("admin", a, 128, &mut errors);
    }
    valid(errors)
}

/// Creates a key for a principal; the key is returned once, its hash stored.
async fn new_api_key(
    state: &AppState,
    tenant: &TenantId,
    principal: &str,
    expires_at: Option<i64>,
    own_hash: Option<&str>,
) -> Result<ApiKeyCreated, ApiError> {
    let secret = match own_hash {
        Some(_) => None,
        None => Some(keys::generate("omk")),
    };
    let key = ApiKey {
        tenant_id: tenant.clone(),
        id: uuid::Uuid::now_v7().to_string(),
        principal_id: principal.into(),
        prefix: secret.as_deref().map(keys::display_prefix).unwrap_or_default(),
        sha256: match (own_hash, &secret) {
            (Some(h), _) => h.to_ascii_lowercase(),
            (None, Some(s)) => keys::sha256_hex(s),
            (None, None) => return Err(ApiError::Internal),
        },
        created_at: now_ms(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    let api_key = state.store.create_api_key(&key).await?;
    state.config_changed();
    Ok(ApiKeyCreated { api_key, key: secret })
}

/// Creates a tenant (platform operators), optionally with its first admin and API key.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body create once")),
    responses((status = 201, body = TenantCreated), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_tenant(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(req): Body<CreateTenant>,
) -> Result<Response, ApiError> {
    caller.operator()?;
    validate_tenant(&req)?;
    let scope = TenantId::platform();
    idempotent(&state, &scope, &headers, &req, SHOWN_ONCE_KEYS, || async {
        let tenant = Tenant {
            id: TenantId(req.id.clone()),
            name: req.name.clone(),
            region: req.region.clone(),
            key_id: req.key_id.clone().unwrap_or_else(|| state.default_key_id.clone()),
            weight: req.weight.unwrap_or(1.0),
            statement_timeout_seconds: req.statement_timeout_seconds,
            max_concurrent_queries: req.max_concurrent_queries,
            created_at: now_ms(),
            oidc: None,
            opa: None,
        };
        let tenant = state.store.create_tenant(&tenant).await?;
        let admin = match &req.admin {
            Some(id) => {
                let p = Principal {
                    tenant_id: tenant.id.clone(),
                    id: id.clone(),
                    kind: PrincipalKind::User,
                    role: Role::TenantAdmin,
                    created_at: now_ms(),
                    regions: Vec::new(),
                    groups: Vec::new(),
                    attributes: Default::default(),
                };
                state.store.create_principal(&p).await?;
                Some(new_api_key(&state, &tenant.id, id, None, None).await?)
            }
            None => None,
        };
        state.config_changed();
        Ok((StatusCode::CREATED, serde_json::to_value(TenantCreated { tenant, admin }).unwrap_or_default()))
    })
    .await
}

/// Lists tenants: every tenant for platform operators, one's own otherwise.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", params(PageQuery), responses((status = 200, body = Page<Tenant>)))]
pub async fn list_tenants(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Tenant>>, ApiError> {
    let page = q.request()?;
    if caller.is_operator() {
        return Ok(axum::Json(state.store.list_tenants(&page).await?));
    }
    // Only tenants the caller may read: its own (a data_plane_operator reads none).
    let own = caller.reader_of(&caller.principal.tenant_id.0).ok();
    let items = match own {
        Some(id) => vec![state.store.get_tenant(&id).await?],
        None => Vec::new(),
    };
    Ok(axum::Json(Page { items, next: None }))
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<Tenant>, ApiError> {
    let id = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.get_tenant(&id).await?))
}

/// Changes a tenant's name, weight or limits (platform operators); data planes apply them at once.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)), request_body = UpdateTenant,
    responses((status = 200, body = Tenant), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Body(req): Body<UpdateTenant>,
) -> Result<axum::Json<Tenant>, ApiError> {
    caller.operator()?;
    let mut errors = Vec::new();
    if req.name.as_ref().is_some_and(|n| n.trim().is_empty() || n.len() > 200) {
        errors.push(FieldError { field: "name".into(), message: "must be 1 to 200 characters".into() });
    }
    validate_limits(req.weight, req.statement_timeout_seconds, req.max_concurrent_queries, &mut errors);
    valid(errors)?;
    let mut t = state.store.get_tenant(&TenantId(tenant)).await?;
    t.name = req.name.unwrap_or(t.name);
    t.weight = req.weight.unwrap_or(t.weight);
    t.statement_timeout_seconds = req.statement_timeout_seconds.or(t.statement_timeout_seconds);
    t.max_concurrent_queries = req.max_concurrent_queries.or(t.max_concurrent_queries);
    let t = state.store.update_tenant(&t).await?;
    state.config_changed();
    Ok(axum::Json(t))
}

/// The OIDC issuer the tenant trusts.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/oidc", tag = "access", params(("tenant" = String, Path)),
    responses((status = 200, body = OidcTrust), (status = 404, body = ErrorBody)))]
pub async fn get_oidc(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<OidcTrust>, ApiError> {
    let id = caller.reader_of(&tenant)?;
    let t = state.store.get_tenant(&id).await?;
    t.oidc.map(axum::Json).ok_or_else(|| ApiError::NotFound(format!("tenant `{tenant}` trusts no OIDC issuer")))
}

/// Trusts an OIDC issuer (tenant admins): its tokens for `audience` sign principals in, to the data
/// plane as any principal the claims name, to this API as existing principals only.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/oidc", tag = "access", params(("tenant" = String, Path)), request_body = OidcTrust,
    responses((status = 200, body = OidcTrust), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_oidc(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Body(req): Body<OidcTrust>,
) -> Result<axum::Json<OidcTrust>, ApiError> {
    let id = caller.admin_of(&tenant)?;
    let mut errors = Vec::new();
    if let Err(e) = state.oidc.check_issuer_url(&req.issuer) {
        errors.push(FieldError { field: "issuer".into(), message: e.to_string() });
    }
    if req.audience.trim().is_empty() || req.audience.len() > 200 {
        errors.push(FieldError { field: "audience".into(), message: "must be 1 to 200 characters".into() });
    }
    for (field, claim) in [("principal_claim", &req.principal_claim), ("groups_claim", &req.groups_claim)] {
        if claim.is_empty() || claim.len() > 100 || claim.chars().any(char::is_whitespace) {
            errors
                .push(FieldError { field: field.into(), message: "must be a claim name: 1 to 100 characters, no spaces".into() });
        }
    }
    valid(errors)?;
    let t = state.store.set_oidc(&id, Some(&req)).await?;
    state.config_changed();
    t.oidc.map(axum::Json).ok_or_else(|| ApiError::NotFound(format!("tenant `{tenant}`")))
}

/// Stops trusting the tenant's OIDC issuer (tenant admins): its tokens are refused at once.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/oidc", tag = "access", params(("tenant" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_oidc(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = caller.admin_of(&tenant)?;
    state.store.set_oidc(&id, None).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The OPA server that decides the tenant's policies.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/opa", tag = "policies", params(("tenant" = String, Path)),
    responses((status = 200, body = OpaServer), (status = 404, body = ErrorBody)))]
pub async fn get_opa(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<OpaServer>, ApiError> {
    let id = caller.reader_of(&tenant)?;
    let t = state.store.get_tenant(&id).await?;
    t.opa.map(axum::Json).ok_or_else(|| ApiError::NotFound(format!("tenant `{tenant}` has no OPA server")))
}

/// Has the tenant's own OPA server decide its policies (tenant admins), instead of the Rego policies
/// stored here; data planes ask it only if their operator allows its URL.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/opa", tag = "policies", params(("tenant" = String, Path)), request_body = OpaServer,
    responses((status = 200, body = OpaServer), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn put_opa(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Body(req): Body<OpaServer>,
) -> Result<axum::Json<OpaServer>, ApiError> {
    let id = caller.admin_of(&tenant)?;
    let mut errors = Vec::new();
    let url_ok = req.url.len() <= 500
        && (req.url.starts_with("http://") || req.url.starts_with("https://"))
        && !req.url.contains(['?', '#', ' ']);
    if !url_ok {
        errors.push(FieldError { field: "url".into(), message: "must be an http(s) URL without query or fragment".into() });
    }
    let path_ok = !req.path.is_empty()
        && req.path.len() <= 200
        && req.path.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    if !path_ok {
        errors.push(FieldError { field: "path".into(), message: "must be a rule path such as omnisql/batch".into() });
    }
    if !(1..=30_000).contains(&req.timeout_ms) {
        errors.push(FieldError { field: "timeout_ms".into(), message: "must be 1 to 30000".into() });
    }
    if !(1..=86_400).contains(&req.cache_seconds) {
        errors.push(FieldError { field: "cache_seconds".into(), message: "must be 1 to 86400".into() });
    }
    valid(errors)?;
    let t = state.store.set_opa(&id, Some(&req)).await?;
    state.config_changed();
    t.opa.map(axum::Json).ok_or_else(|| ApiError::NotFound(format!("tenant `{tenant}`")))
}

/// Goes back to the tenant's stored Rego policies, evaluated by the data planes (tenant admins).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/opa", tag = "policies", params(("tenant" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_opa(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = caller.admin_of(&tenant)?;
    state.store.set_opa(&id, None).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a tenant and its configuration (platform operators); its audit trail is kept.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}", tag = "tenants", params(("tenant" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_tenant(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.operator()?;
    state.store.delete_tenant(&TenantId(tenant)).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    pub id: String,
    pub kind: PrincipalKind,
    /// `tenant_admin` or `tenant_member`; in the platform tenant `platform_operator` or
    /// `data_plane_operator`.
    pub role: Role,
    /// For `data_plane_operator` only: the regions it may mint enrollment tokens for and manage data
    /// planes of.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Groups, as policies see them (`input.context.identity.groups`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Attributes, as policies see them (`input.context.principal.attributes`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Groups and attributes a policy can match: names are identifiers, values short text.
fn check_policy_attributes(
    groups: Option<&[String]>,
    attributes: Option<&std::collections::BTreeMap<String, String>>,
    errors: &mut Vec<FieldError>,
) {
    for g in groups.unwrap_or_default() {
        if g.is_empty() || g.len() > 128 || g.chars().any(|c| c.is_control()) {
            errors.push(FieldError {
                field: "groups".into(),
                message: format!("group {g:?} must be 1 to 128 printable characters"),
            });
        }
    }
    if groups.is_some_and(|g| g.len() > 256) {
        errors.push(FieldError { field: "groups".into(), message: "at most 256 groups".into() });
    }
    for (k, v) in attributes.into_iter().flatten() {
        check_id("attributes", k, 64, errors);
        if v.len() > 1024 {
            errors.push(FieldError {
                field: "attributes".into(),
                message: format!("the value of `{k}` is longer than 1024 bytes"),
            });
        }
    }
    if attributes.is_some_and(|a| a.len() > 64) {
        errors.push(FieldError { field: "attributes".into(), message: "at most 64 attributes".into() });
    }
}

#[utoipa::path(post, path = "/v1/tenants/{tenant}/principals", tag = "access", params(("tenant" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body create once")),
    request_body = CreatePrincipal, responses((status = 201, body = Principal), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_principal(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(req): Body<CreatePrincipal>,
) -> Result<Response, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let mut errors = Vec::new();
    check_id("id", &req.id, 128, &mut errors);
    let platform_role = matches!(req.role, Role::PlatformOperator | Role::DataPlaneOperator);
    if platform_role != (tenant.0 == PLATFORM_TENANT) {
        errors.push(FieldError {
            field: "role".into(),
            message: "platform_operator and data_plane_operator exist only in the platform tenant, which has no other roles"
                .into(),
        });
    }
    if (req.role == Role::DataPlaneOperator) == req.regions.is_empty() {
        errors.push(FieldError {
            field: "regions".into(),
            message: "a data_plane_operator needs the regions it acts in; other roles take none".into(),
        });
    }
    for r in &req.regions {
        check_id("regions", r, 63, &mut errors);
    }
    check_policy_attributes(Some(&req.groups), Some(&req.attributes), &mut errors);
    valid(errors)?;
    state.store.get_tenant(&tenant).await?;
    idempotent(&state, &tenant, &headers, &req, &[], || async {
        let p = Principal {
            tenant_id: tenant.clone(),
            id: req.id.clone(),
            kind: req.kind,
            role: req.role,
            created_at: now_ms(),
            regions: req.regions.clone(),
            groups: req.groups.clone(),
            attributes: req.attributes.clone(),
        };
        let p = state.store.create_principal(&p).await?;
        state.config_changed();
        Ok((StatusCode::CREATED, serde_json::to_value(p).unwrap_or_default()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/principals", tag = "access", params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = Page<Principal>), (status = 404, body = ErrorBody)))]
pub async fn list_principals(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Principal>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    Ok(axum::Json(state.store.list_principals(&tenant, &q.request()?).await?))
}

/// Changes a principal's groups and attributes (what the body leaves out stays); data planes apply
/// them with the tenant's next configuration.
#[utoipa::path(patch, path = "/v1/tenants/{tenant}/principals/{principal}", tag = "access",
    params(("tenant" = String, Path), ("principal" = String, Path)), request_body = PrincipalUpdate,
    responses((status = 200, body = Principal), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_principal(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, principal)): Path<(String, String)>,
    Body(req): Body<PrincipalUpdate>,
) -> Result<axum::Json<Principal>, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let mut errors = Vec::new();
    check_policy_attributes(req.groups.as_deref(), req.attributes.as_ref(), &mut errors);
    valid(errors)?;
    let p = state.store.update_principal(&tenant, &principal, &req).await?;
    state.config_changed();
    Ok(axum::Json(p))
}

/// Deletes a principal and its API keys.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/principals/{principal}", tag = "access",
    params(("tenant" = String, Path), ("principal" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_principal(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, principal)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    state.store.delete_principal(&tenant, &principal).await?;
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    pub principal: String,
    /// Seconds until the key expires; never when absent.
    pub expires_in_seconds: Option<u64>,
    /// Register a key you generated yourself by its SHA-256 (64 hex digits): the control plane never
    /// sees the key, and the response holds none.
    pub sha256: Option<String>,
}

/// Creates an API key; the key is in this response only.
#[utoipa::path(post, path = "/v1/tenants/{tenant}/api-keys", tag = "access", params(("tenant" = String, Path),
    ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body create once (the key itself is not shown again)")),
    request_body = CreateApiKey, responses((status = 201, body = ApiKeyCreated), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Body(req): Body<CreateApiKey>,
) -> Result<Response, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    if req.expires_in_seconds == Some(0) {
        return Err(ApiError::field("expires_in_seconds", "must be at least 1"));
    }
    if let Some(h) = &req.sha256
        && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(ApiError::field("sha256", "must be 64 hex digits (the SHA-256 of the key)"));
    }
    idempotent(&state, &tenant, &headers, &req, SHOWN_ONCE_KEYS, || async {
        let expires_at =
            req.expires_in_seconds.map(|s| now_ms().saturating_add(i64::try_from(s).unwrap_or(i64::MAX / 2000) * 1000));
        let created = new_api_key(&state, &tenant, &req.principal, expires_at, req.sha256.as_deref()).await?;
        Ok((StatusCode::CREATED, serde_json::to_value(created).unwrap_or_default()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tenants/{tenant}/api-keys", tag = "access", params(("tenant" = String, Path), PageQuery),
    responses((status = 200, body = Page<ApiKey>), (status = 404, body = ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ApiKey>>, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    Ok(axum::Json(state.store.list_api_keys(&tenant, &q.request()?).await?))
}

/// Revokes an API key: every data plane refuses it within seconds.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/api-keys/{key}", tag = "access",
    params(("tenant" = String, Path), ("key" = String, Path, description = "The key's id")),
    responses((status = 200, body = ApiKey), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    let revoked = state.store.revoke_api_key(&tenant, &key, now_ms()).await?;
    state.config_changed();
    Ok(json(StatusCode::OK, &revoked))
}
