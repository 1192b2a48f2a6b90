//! Audit search and chain verification.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller, ErrorBody};
use crate::model::*;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants/{tenant}/audit", get(search_audit))
        .route("/v1/tenants/{tenant}/audit/verify", get(verify_audit))
        .route("/v1/tenants/{tenant}/usage", get(usage))
}

/// The longest range one usage request covers.
const MAX_USAGE_MS: i64 = 7 * 24 * 3_600_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// From this time (Unix ms, rounded down to its minute; default: an hour before `to`).
    pub from: Option<i64>,
    /// Until this time (Unix ms, default: now); at most 7 days after `from`.
    pub to: Option<i64>,
}

/// The tenant's queries per minute (those with any): counts, failures, upstream requests per app, cache
/// hits and latency percentiles, rolled up from the audit trail as it is stored. For tenant admins and
/// operators: it covers every principal of the tenant.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/usage", tag = "audit", params(("tenant" = String, Path), UsageQuery),
    responses((status = 200, body = Vec<crate::usage::UsageMinute>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<axum::Json<Vec<crate::usage::UsageMinute>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    if caller.principal.role == Role::TenantMember {
        return Err(ApiError::Forbidden("the tenant's usage covers every principal: it needs the tenant_admin role".into()));
    }
    let to = q.to.unwrap_or_else(now_ms);
    let from = q.from.unwrap_or(to - 3_600_000);
    if from > to || to - from > MAX_USAGE_MS {
        return Err(ApiError::field("from", "must be before `to`, by at most 7 days"));
    }
    Ok(axum::Json(state.store.usage(&tenant, from, to).await?))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Events that started at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Events that started before this time (Unix ms).
    pub to: Option<i64>,
    pub principal: Option<String>,
    /// `connection.table`, e.g. `github.issues`.
    pub table: Option<String>,
    /// ok, error, denied, cancelled, unauthenticated or interrupted.
    pub outcome: Option<String>,
    /// The `next` cursor of the previous page.
    pub after: Option<String>,
    pub limit: Option<u32>,
}

/// Searches a tenant's audit trail, oldest first. Tenant members see their own events only.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", tag = "audit", params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, body = Page<AuditEvent>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn search_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<axum::Json<Page<AuditEvent>>, ApiError> {
    let tenant = caller.reader_of(&tenant)?;
    if let Some(o) = &q.outcome
        && !OUTCOMES.contains(&o.as_str())
    {
        return Err(ApiError::field("outcome", format!("must be one of {}", OUTCOMES.join(", "))));
    }
    let mut filter = AuditFilter { from: q.from, to: q.to, principal: q.principal, table: q.table, outcome: q.outcome };
    if caller.principal.role == Role::TenantMember {
        filter.principal = Some(caller.principal.id.clone());
    }
    let page = super::PageQuery { after: q.after, limit: q.limit }.request()?;
    Ok(axum::Json(state.store.search_audit(&tenant, &filter, &page).await?))
}

/// Recomputes the tenant's hash chain and says whether every stored event is intact.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit/verify", tag = "audit", params(("tenant" = String, Path)),
    responses((status = 200, body = ChainVerification), (status = 404, body = ErrorBody)))]
pub async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant): Path<String>,
) -> Result<axum::Json<ChainVerification>, ApiError> {
    let tenant = caller.admin_of(&tenant)?;
    Ok(axum::Json(state.store.verify_audit(&tenant).await?))
}
