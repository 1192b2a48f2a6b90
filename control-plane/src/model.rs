//! What the control plane stores, as the admin API shows it. Times are Unix milliseconds.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An OIDC issuer a tenant trusts: tokens it signs for the audience sign principals in, to the data plane
/// as any principal the claims name (with the token's groups), to the admin API as existing principals.
pub use omnisql_oidc::Trust as OidcTrust;
/// A tenant's own OPA server, which decides instead of its stored policies when set.
pub use omnisql_policy::OpaConfig as OpaServer;

/// Principals of the platform itself (operators) live under this reserved tenant id.
pub const PLATFORM_TENANT: &str = "_platform";

/// A tenant id: lower-case letters, digits, `-` and `_`, starting with a letter, at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct TenantId(pub String);

impl TenantId {
    pub fn platform() -> TenantId {
        TenantId(PLATFORM_TENANT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything within the platform: tenants, connector catalog, data planes.
    PlatformOperator,
    /// Everything within one tenant.
    TenantAdmin,
    /// Runs queries; reads the tenant's connections and its own audit events.
    TenantMember,
    /// A Kubernetes operator's credential (platform tenant only): mints enrollment tokens for its
    /// regions, lists their data planes, removes the ones enrolled with its tokens. Nothing else.
    DataPlaneOperator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformOperator => "platform_operator",
            Role::TenantAdmin => "tenant_admin",
            Role::TenantMember => "tenant_member",
            Role::DataPlaneOperator => "data_plane_operator",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "platform_operator" => Some(Role::PlatformOperator),
            "tenant_admin" => Some(Role::TenantAdmin),
            "tenant_member" => Some(Role::TenantMember),
            "data_plane_operator" => Some(Role::DataPlaneOperator),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    User,
    ServiceAccount,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::User => "user",
            PrincipalKind::ServiceAccount => "service_account",
        }
    }

    pub fn parse(s: &str) -> Option<PrincipalKind> {
        match s {
            "user" => Some(PrincipalKind::User),
            "service_account" => Some(PrincipalKind::ServiceAccount),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Data planes of this region serve the tenant.
    pub region: String,
    /// The key-encryption key that wraps the tenant's data keys (a KMS key id or ARN; `local` in dev).
    pub key_id: String,
    /// Share of contended rate limits relative to other tenants.
    pub weight: f64,
    /// Longest one of the tenant's statements may run, in seconds; the data plane's default if absent.
    pub statement_timeout_seconds: Option<i64>,
    /// Statements the tenant may run at once on one data plane (more queue); the data plane's default
    /// if absent.
    pub max_concurrent_queries: Option<i64>,
    pub created_at: i64,
    /// The identity provider whose JWTs sign the tenant's principals in, besides API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcTrust>,
    /// The tenant's OPA server, which decides instead of its policies when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opa: Option<OpaServer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Principal {
    pub tenant_id: TenantId,
    /// Unique within the tenant; the name queries and audit events carry.
    pub id: String,
    pub kind: PrincipalKind,
    pub role: Role,
    pub created_at: i64,
    /// The regions a `data_plane_operator` acts in (empty for every other role).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Groups, as policies see them (`input.context.identity.groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Attributes, as policies see them (`input.context.principal.attributes`), e.g. `region: emea`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// A change of a principal's groups and attributes; what is absent stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
}

/// An API key as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub tenant_id: TenantId,
    pub id: String,
    pub principal_id: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    #[serde(skip)]
    pub sha256: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiKey {
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// One parameter a connector accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ParameterSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    /// Secret parameters are sealed at rest and never shown.
    pub secret: bool,
}

/// A table a connector version offers, with its columns (`name: type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<ColumnSchema>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ColumnSchema {
    pub name: String,
    pub data_type: String,
}

/// One version of a connector in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectorVersion {
    pub name: String,
    pub version: String,
    pub parameters: Vec<ParameterSpec>,
    pub tables: Vec<TableSchema>,
    pub created_at: i64,
}

/// A tenant's instance of a connector at a pinned version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Connection {
    pub tenant_id: TenantId,
    /// The SQL schema its tables appear under.
    pub name: String,
    pub connector: String,
    pub version: String,
    /// Non-secret options.
    pub options: BTreeMap<String, String>,
    /// Secret options, sealed (`sealed:v1:…`); never shown.
    #[serde(skip)]
    pub sealed_options: BTreeMap<String, String>,
    /// Names of the secret options that are set.
    pub secret_options: Vec<String>,
    pub cache_ttl_seconds: Option<u64>,
    pub requests_per_second: Option<f64>,
    pub quota_share: Option<f64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One version of a tenant's Rego policy module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Policy {
    pub tenant_id: TenantId,
    pub name: String,
    pub version: i64,
    pub rego: String,
    pub created_at: i64,
}

/// An enrolled data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DataPlane {
    pub id: String,
    pub region: String,
    pub hostname: String,
    pub version: String,
    pub enrolled_at: i64,
    pub last_heartbeat_at: Option<i64>,
    /// The configuration revision it last reported applied.
    pub acked_revision: i64,
    /// The control plane's latest configuration revision (filled in by the API, beside `acked_revision`).
    #[serde(default)]
    pub latest_revision: i64,
    /// Audit events it last reported holding that are not stored here yet.
    #[serde(default)]
    pub audit_pending: i64,
    /// The principal whose enrollment token it used.
    pub enrolled_by: Option<String>,
    #[serde(skip)]
    pub credential_sha256: String,
}

/// An admin's request that a data plane of the tenant's region read one row through a connection, with
/// its credentials: proof that the connection works from where queries run. Only counts come back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionTest {
    pub id: String,
    pub connection: String,
    pub requested_by: String,
    pub requested_at: i64,
    /// The data plane that took the test; absent while none has.
    pub data_plane: Option<String>,
    pub finished_at: Option<i64>,
    /// What the data plane found; absent until it reports.
    pub result: Option<ConnectionTestResult>,
}

/// What a data plane found when it tested a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConnectionTestResult {
    pub ok: bool,
    /// Tables the connection lists, and the one read (the first by name).
    pub tables: u32,
    pub table: Option<String>,
    /// Rows that came back (0 or 1).
    pub rows: u64,
    pub api_requests: u64,
    pub duration_ms: f64,
    /// Why it failed, as a query's error would say it.
    pub error: Option<String>,
}

/// One rate-limit bucket of a tenant's connection, as a data plane last reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RateLimitReport {
    pub data_plane: String,
    pub connection: String,
    pub bucket: String,
    pub capacity: f64,
    pub window_seconds: f64,
    /// Requests that could be sent at once when reported.
    pub available: f64,
    /// Requests waiting for the bucket when reported.
    pub waiting: i64,
    /// Set while the API had asked for a pause.
    pub paused_for_seconds: Option<f64>,
    /// Unix ms.
    pub reported_at: i64,
}

/// The outcome of a query attempt.
pub const OUTCOMES: &[&str] = &["ok", "error", "denied", "cancelled", "unauthenticated", "interrupted"];

/// One query attempt on a data plane, as stored: what the data plane shipped, chained within its tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    #[serde(flatten)]
    pub event: NewAuditEvent,
    /// Position in the tenant's chain, from 1.
    pub seq: i64,
    pub received_at: i64,
    /// Hex SHA-256 of the previous event's hash and this event's content.
    pub hash: String,
}

/// An audit event as a data plane ships it (before it is chained).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewAuditEvent {
    pub id: String,
    pub tenant_id: TenantId,
    pub principal: String,
    pub sql: String,
    /// `connection.table` for every table the query read.
    pub tables: Vec<String>,
    pub api_requests: i64,
    pub rows: i64,
    /// Arrow bytes returned.
    pub bytes: i64,
    pub duration_ms: f64,
    /// ok, error, denied, cancelled, unauthenticated or interrupted.
    pub outcome: String,
    pub error: Option<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    /// Set by the control plane from the shipping data plane's identity.
    pub data_plane: String,
    /// The tenant's policies the query was checked against (`name@version,…`; absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_revision: Option<String>,
    /// `api_requests` by app (e.g. `GitHub`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_requests_by_app: BTreeMap<String, i64>,
    /// Answers served from the response cache instead of an upstream request.
    #[serde(default)]
    pub cache_hits: i64,
}

/// What to look for in the audit trail.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct AuditFilter {
    /// Events that started at or after this time (Unix ms).
    pub from: Option<i64>,
    /// Events that started before this time (Unix ms).
    pub to: Option<i64>,
    pub principal: Option<String>,
    /// Events whose query touched this table (`connection.table`).
    pub table: Option<String>,
    pub outcome: Option<String>,
}

/// The result of checking a tenant's audit chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChainVerification {
    pub tenant_id: TenantId,
    pub events: i64,
    pub valid: bool,
    /// The first event whose hash does not match, if any.
    pub first_broken_seq: Option<i64>,
    pub head_hash: String,
}

/// A page of results, and the cursor for the next one.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 500;

    pub fn first(limit: u32) -> PageRequest {
        PageRequest { after: None, limit }
    }

    pub fn limit(&self) -> i64 {
        i64::from(if self.limit == 0 { Self::DEFAULT_LIMIT } else { self.limit.min(Self::MAX_LIMIT) })
    }
}

/// Builds a page from `limit + 1` fetched rows: the extra row only says there is a next page.
pub fn page_of<T>(mut rows: Vec<T>, request: &PageRequest, cursor: impl Fn(&T) -> String) -> Page<T> {
    let limit = request.limit() as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(&cursor)
    } else {
        None
    };
    Page { items: rows, next }
}

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
