//! Who is calling: the API key in `Authorization: Bearer …`, resolved by its hash to a principal with a
//! role. Access to another tenant's objects is reported exactly like a missing object.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::keys::sha256_hex;
use crate::model::{Principal, Role, TenantId, now_ms};

#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub key_id: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthenticated("no API key: send `Authorization: Bearer <api key>`".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| ApiError::Unauthenticated("the Authorization header must be `Bearer <api key>`".into()))?;
        match state.store.authenticate(&sha256_hex(token), now_ms()).await? {
            Some((key, principal)) => Ok(Caller { principal, key_id: key.id }),
            None => Err(ApiError::Unauthenticated("unknown, revoked or expired API key".into())),
        }
    }
}

impl Caller {
    pub fn is_operator(&self) -> bool {
        self.principal.role == Role::PlatformOperator
    }

    /// The tenant, if the caller may read it. A data_plane_operator reads no tenant, not even its own.
    pub fn reader_of(&self, tenant: &str) -> Result<TenantId, ApiError> {
        let own = self.principal.tenant_id.0 == tenant && self.principal.role != Role::DataPlaneOperator;
        if self.is_operator() || own {
            Ok(TenantId(tenant.to_string()))
        } else {
            Err(ApiError::NotFound(format!("tenant `{tenant}` not found")))
        }
    }

    /// The tenant, if the caller may change it.
    pub fn admin_of(&self, tenant: &str) -> Result<TenantId, ApiError> {
        let id = self.reader_of(tenant)?;
        if self.is_operator() || self.principal.role == Role::TenantAdmin {
            Ok(id)
        } else {
            Err(ApiError::Forbidden(format!("changing tenant `{tenant}` needs the tenant_admin role")))
        }
    }

    /// Whether the caller may manage data planes of `region`: a platform operator anywhere, a
    /// data_plane_operator in its regions.
    pub fn manages_region(&self, region: &str) -> bool {
        self.is_operator()
            || (self.principal.role == Role::DataPlaneOperator && self.principal.regions.iter().any(|r| r == region))
    }

    pub fn operator(&self) -> Result<(), ApiError> {
        if self.is_operator() { Ok(()) } else { Err(ApiError::Forbidden("this needs the platform_operator role".into())) }
    }
}
