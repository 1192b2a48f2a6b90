//! Data planes: enrollment tokens and the registry (platform operators, and data_plane_operators
//! within their regions: a Kubernetes operator's credential).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, AppState, Body, Caller, ErrorBody, FieldError, idempotent, valid};
use crate::keys;
use crate::model::*;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/data-planes", get(list_data_planes))
        .route("/v1/data-planes/{id}", axum::routing::delete(delete_data_plane))
        .route("/v1/enrollment-tokens", post(create_enrollment_token))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentToken {
    /// The region the enrolled data plane will serve.
    pub region: String,
    /// How long the token may be used (default one hour).
    pub expires_in_seconds: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnrollmentToken {
    pub region: String,
    pub expires_at: i64,
    /// One-time token for `omnisql data-plane --enrollment-token`; shown only here.
    pub token: Option<String>,
}

/// Creates a one-time enrollment token for a data plane of a region.
#[utoipa::path(post, path = "/v1/enrollment-tokens", tag = "data planes", request_body = CreateEnrollmentToken,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key and body create once (the token is not shown again)")),
    responses((status = 201, body = EnrollmentToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Body(req): Body<CreateEnrollmentToken>,
) -> Result<Response, ApiError> {
    if !caller.manages_region(&req.region) {
        return Err(ApiError::Forbidden(format!(
            "minting enrollment tokens for region `{}` needs the platform_operator role, or a data_plane_operator of that region",
            req.region
        )));
    }
    let mut errors = Vec::new();
    super::check_id("region", &req.region, 63, &mut errors);
    if req.expires_in_seconds.is_some_and(|s| s == 0 || s > 30 * 86_400) {
        errors.push(FieldError { field: "expires_in_seconds".into(), message: "must be between 1 and 30 days".into() });
    }
    valid(errors)?;
    idempotent(&state, &TenantId::platform(), &headers, &req, &["/token"], || async {
        let token = keys::generate("omen");
        let now = now_ms();
        let expires_at = now + i64::try_from(req.expires_in_seconds.unwrap_or(3600)).unwrap_or(3600) * 1000;
        state
            .store
            .create_enrollment_token(&keys::sha256_hex(&token), &req.region, &caller.principal.id, now, expires_at)
            .await?;
        let body = EnrollmentToken { region: req.region.clone(), expires_at, token: Some(token) };
        Ok((StatusCode::CREATED, serde_json::to_value(body).unwrap_or_default()))
    })
    .await
}

/// Every enrolled data plane (a data_plane_operator sees its regions'), its version, last heartbeat and
/// the configuration revision it applied.
#[utoipa::path(get, path = "/v1/data-planes", tag = "data planes", responses((status = 200, body = Vec<DataPlane>), (status = 403, body = ErrorBody)))]
pub async fn list_data_planes(State(state): State<AppState>, caller: Caller) -> Result<axum::Json<Vec<DataPlane>>, ApiError> {
    if !caller.is_operator() && caller.principal.role != Role::DataPlaneOperator {
        return Err(ApiError::Forbidden("listing data planes needs the platform_operator or data_plane_operator role".into()));
    }
    let all = state.store.list_data_planes().await?;
    let latest = state.store.revision().await?;
    let mine = all.into_iter().filter(|d| caller.manages_region(&d.region));
    Ok(axum::Json(mine.map(|d| DataPlane { latest_revision: latest, ..d }).collect()))
}

/// Removes a data plane: its credential stops working and its configuration watch ends. A
/// data_plane_operator removes only those enrolled with its own tokens.
#[utoipa::path(delete, path = "/v1/data-planes/{id}", tag = "data planes", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_data_plane(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<StatusCode, ApiError> {
    if !caller.is_operator() && caller.principal.role != Role::DataPlaneOperator {
        return Err(ApiError::Forbidden("removing data planes needs the platform_operator or data_plane_operator role".into()));
    }
    if !caller.is_operator() {
        let own = state.store.list_data_planes().await?.into_iter().any(|d| {
            d.id == id && caller.manages_region(&d.region) && d.enrolled_by.as_deref() == Some(caller.principal.id.as_str())
        });
        if !own {
            return Err(ApiError::NotFound(format!("data plane `{id}` not found")));
        }
    }
    state.store.delete_data_plane(&id).await?;
    // Wake the watches so the removed data plane's stream notices.
    state.config_changed();
    Ok(StatusCode::NO_CONTENT)
}
