//! The admin API's OpenAPI document, generated from the handlers. The committed copy
//! (`control-plane/openapi.json`) is checked by a test; `OMNISQL_UPDATE_OPENAPI=1 cargo test -p
//! omnisql-control-plane --test admin_api` rewrites it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, catalog, error, platform, sign_in, tenants};
use crate::model;

#[derive(OpenApi)]
#[openapi(
    info(title = "OmniSQL control plane admin API", version = "1", description = "Tenants, principals, API keys, connector catalog, connections with sealed credentials, policies, data planes and the audit trail. Authenticate with `Authorization: Bearer <api key>`, or with a JWT from the OIDC issuer your tenant trusts (for an existing principal)."),
    paths(
        tenants::me, tenants::create_tenant, tenants::list_tenants, tenants::get_tenant, tenants::update_tenant, tenants::delete_tenant,
        tenants::get_oidc, tenants::put_oidc, tenants::delete_oidc, tenants::get_opa, tenants::put_opa, tenants::delete_opa,
        tenants::create_principal, tenants::list_principals, tenants::update_principal, tenants::delete_principal,
        tenants::create_api_key, tenants::list_api_keys, tenants::revoke_api_key,
        catalog::list_connectors, catalog::publish_connector,
        catalog::create_connection, catalog::list_connections, catalog::get_connection, catalog::delete_connection,
        catalog::test_connection, catalog::upgrade_connection, catalog::rate_limits,
        catalog::put_policy, catalog::list_policies, catalog::explain_policy, catalog::policy_versions, catalog::delete_policy,
        platform::create_enrollment_token, platform::list_data_planes, platform::delete_data_plane,
        audit::search_audit, audit::verify_audit, audit::usage,
        sign_in::start, sign_in::callback, sign_in::session,
    ),
    components(schemas(
        error::ErrorBody, error::ErrorDetail, error::FieldError,
        model::Tenant, model::OidcTrust, model::OpaServer, model::Principal, model::PrincipalUpdate, model::ApiKey, model::ConnectorVersion, model::Connection, model::Policy,
        catalog::AccessQuery, catalog::PolicyExplanation, model::DataPlane, model::ConnectionTest, model::ConnectionTestResult, catalog::UpgradeConnection, catalog::UpgradeResult, crate::smoke::SmokeReport, crate::smoke::SmokeCheck, model::RateLimitReport, model::AuditEvent, model::NewAuditEvent, model::ChainVerification, model::Role, model::PrincipalKind,
        sign_in::SignInSession, crate::usage::UsageMinute,
    )),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components
                .add_security_scheme("api_key", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
        }
    }
}

/// The OpenAPI document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_text() -> String {
    format!("{}\n", serde_json::to_string_pretty(&document()).unwrap_or_default())
}
