//! Who is calling: the API key in `Authorization: Bearer …`, resolved by its hash to a principal with a
//! role, or a JWT from the identity provider a tenant trusts, naming one of its principals. Access to
//! another tenant's objects is reported exactly like a missing object.

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
        if omnisql_oidc::is_jwt(token) {
            let tenant = parts.headers.get("x-omnisql-tenant").and_then(|v| v.to_str().ok());
            return sign_in(state, token, tenant).await;
        }
        match state.store.authenticate(&sha256_hex(token), now_ms()).await? {
            Some((key, principal)) => Ok(Caller { principal, key_id: key.id }),
            None => Err(ApiError::Unauthenticated("unknown, revoked or expired API key".into())),
        }
    }
}

/// The principal a tenant's identity provider signs in with `token`. Only principals that exist in the
/// tenant act here (with their role): a token grants no admin right the tenant did not give.
async fn sign_in(state: &AppState, token: &str, tenant: Option<&str>) -> Result<Caller, ApiError> {
    let refused = |why: String| ApiError::Unauthenticated(format!("sign-in token refused: {why}"));
    let (issuer, audiences) = omnisql_oidc::unverified_issuer(token).map_err(|e| refused(e.to_string()))?;
    let trusting: Vec<_> = state
        .store
        .tenants_trusting(&issuer)
        .await?
        .into_iter()
        .filter(|t| t.oidc.as_ref().is_some_and(|o| audiences.contains(&o.audience)) && tenant.is_none_or(|id| id == t.id.0))
        .collect();
    let Some(t) = trusting.first() else {
        return Err(refused(format!("no tenant trusts issuer `{issuer}` for audience {audiences:?}")));
    };
    if trusting.len() > 1 {
        return Err(refused(format!(
            "more than one tenant trusts issuer `{issuer}` for this audience: name yours with the header `x-omnisql-tenant`"
        )));
    }
    let trust = t.oidc.as_ref().ok_or_else(|| refused("no trust".into()))?;
    let signed_in = state.oidc.sign_in(token, trust).await.map_err(|e| refused(e.to_string()))?;
    match state.store.get_principal(&t.id, &signed_in.principal).await {
        Ok(principal) => Ok(Caller { principal, key_id: format!("oidc:{issuer}") }),
        Err(crate::store::StoreError::NotFound(_)) => Err(refused(format!(
            "`{}` signed in through the tenant's identity provider but is not a principal of the tenant; a tenant admin can add it with `omnisql admin create-principal`",
            signed_in.principal
        ))),
        Err(e) => Err(e.into()),
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
