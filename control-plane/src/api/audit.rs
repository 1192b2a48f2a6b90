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
