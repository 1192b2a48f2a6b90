//! Persistence behind one trait, [`Store`], with two backends through sqlx ([`SqlStore`]): SQLite (the
//! embedded default, a file in the data folder) and PostgreSQL (production). Each backend has its own
//! migrations (`migrations/sqlite`, `migrations/postgres`), applied at start; one conformance suite
//! (`tests/store_conformance.rs`) runs against both.
//!
//! Every tenant-owned method takes the tenant and filters by it; on Postgres each transaction is also
//! scoped with `omnisql.tenant` so row-level security hides other tenants' rows even from a query that
//! forgot its filter.

mod sql;

use std::collections::BTreeMap;

pub use sql::SqlStore;

use crate::model::*;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the database failed")]
    Database(#[source] sqlx::Error),
    #[error("cannot apply the database migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict("an object with this key".into()),
            _ => StoreError::Database(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone)]
pub struct NewConnection {
    pub name: String,
    pub connector: String,
    pub version: String,
    pub options: BTreeMap<String, String>,
    pub sealed_options: BTreeMap<String, String>,
    pub cache_ttl_seconds: Option<u64>,
    pub requests_per_second: Option<f64>,
    pub quota_share: Option<f64>,
}

/// A replayable answer stored under an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: u16,
    pub body: String,
}

/// The configuration of one tenant, as data planes receive it.
#[derive(Debug, Clone)]
pub struct TenantSnapshot {
    pub tenant: Tenant,
    pub api_keys: Vec<(ApiKey, Principal)>,
    pub connections: Vec<Connection>,
    /// The latest version of each policy.
    pub policies: Vec<Policy>,
    /// Every principal of the tenant (those signing in with OIDC tokens have no API key).
    pub principals: Vec<Principal>,
}

/// What changed in a region since a revision.
#[derive(Debug, Clone)]
pub struct RegionChanges {
    pub revision: i64,
    pub tenants: Vec<TenantSnapshot>,
    pub removed: Vec<TenantId>,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    // --- tenants (platform-wide) ---
    async fn create_tenant(&self, tenant: &Tenant) -> Result<Tenant>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant>;
    /// Replaces the tenant's name, weight and limits (its id, region and key stay).
    async fn update_tenant(&self, tenant: &Tenant) -> Result<Tenant>;
    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>>;
    /// Removes the tenant and everything it owns except its audit trail.
    async fn delete_tenant(&self, id: &TenantId) -> Result<()>;
    /// Sets (or with `None` removes) the OIDC issuer the tenant trusts.
    async fn set_oidc(&self, id: &TenantId, trust: Option<&OidcTrust>) -> Result<Tenant>;
    /// Sets (or with `None` removes) the OPA server that decides the tenant's policies.
    async fn set_opa(&self, id: &TenantId, server: Option<&OpaServer>) -> Result<Tenant>;
    /// The tenants that trust `issuer`, across tenants: to find whose trust verifies a token.
    async fn tenants_trusting(&self, issuer: &str) -> Result<Vec<Tenant>>;

    // --- principals and API keys ---
    async fn create_principal(&self, principal: &Principal) -> Result<Principal>;
    async fn get_principal(&self, tenant: &TenantId, id: &str) -> Result<Principal>;
    async fn list_principals(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Principal>>;
    async fn delete_principal(&self, tenant: &TenantId, id: &str) -> Result<()>;
    /// Replaces what `update` sets of a principal's groups and attributes (a new configuration revision).
    async fn update_principal(&self, tenant: &TenantId, id: &str, update: &PrincipalUpdate) -> Result<Principal>;
    async fn create_api_key(&self, key: &ApiKey) -> Result<ApiKey>;
    async fn list_api_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>>;
    async fn revoke_api_key(&self, tenant: &TenantId, id: &str, at: i64) -> Result<ApiKey>;
    /// The active key with this hash and its principal, across tenants; records its use.
    async fn authenticate(&self, sha256: &str, now: i64) -> Result<Option<(ApiKey, Principal)>>;

    // --- connector catalog (platform-wide) ---
    async fn upsert_connector(&self, connector: &ConnectorVersion) -> Result<ConnectorVersion>;
    async fn get_connector(&self, name: &str, version: &str) -> Result<ConnectorVersion>;
    async fn list_connectors(&self) -> Result<Vec<ConnectorVersion>>;

    // --- connections and policies ---
    async fn create_connection(&self, tenant: &TenantId, connection: &NewConnection, now: i64) -> Result<Connection>;
    async fn get_connection(&self, tenant: &TenantId, name: &str) -> Result<Connection>;
    async fn list_connections(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Connection>>;
    async fn delete_connection(&self, tenant: &TenantId, name: &str) -> Result<()>;
    /// Pins the connection to another version of its connector.
    async fn set_connection_version(&self, tenant: &TenantId, name: &str, version: &str, now: i64) -> Result<Connection>;
    /// Stores a new version of the named policy (1 for the first).
    async fn put_policy(&self, tenant: &TenantId, name: &str, rego: &str, now: i64) -> Result<Policy>;
    /// The latest version of each policy.
    async fn list_policies(&self, tenant: &TenantId) -> Result<Vec<Policy>>;
    async fn policy_versions(&self, tenant: &TenantId, name: &str) -> Result<Vec<Policy>>;
    /// Removes every version of the named policy.
    async fn delete_policy(&self, tenant: &TenantId, name: &str) -> Result<()>;

    // --- idempotent creates ---
    async fn idempotent_response(&self, tenant: &TenantId, key: &str) -> Result<Option<IdempotentResponse>>;
    async fn save_idempotent_response(&self, tenant: &TenantId, key: &str, response: &IdempotentResponse, now: i64)
    -> Result<()>;

    // --- data planes ---
    async fn create_enrollment_token(
        &self,
        sha256: &str,
        region: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()>;
    /// Uses up an enrollment token and registers the data plane in the token's region.
    async fn enroll(&self, token_sha256: &str, data_plane: DataPlane) -> Result<DataPlane>;
    async fn data_plane_by_credential(&self, sha256: &str) -> Result<Option<DataPlane>>;
    async fn heartbeat(&self, id: &str, version: &str, acked_revision: i64, audit_pending: i64, now: i64) -> Result<()>;
    async fn list_data_planes(&self) -> Result<Vec<DataPlane>>;
    /// Removes a data plane: its credential stops working at once.
    async fn delete_data_plane(&self, id: &str) -> Result<()>;
    /// Records when keys (by hash) were last used on a data plane of `region`; keys of other regions'
    /// tenants are left alone.
    async fn record_key_uses(&self, region: &str, uses: &[(String, i64)]) -> Result<()>;

    // --- configuration for data planes ---
    /// The latest configuration revision.
    /// Replaces what `data_plane` last reported of its rate-limit buckets.
    async fn replace_rate_limits(&self, data_plane: &str, reports: &[(TenantId, RateLimitReport)]) -> Result<()>;
    /// The tenant's buckets as each data plane last reported them.
    async fn rate_limits(&self, tenant: &TenantId) -> Result<Vec<RateLimitReport>>;

    /// Queues a connection test for a data plane of `region`.
    async fn create_connection_test(&self, tenant: &TenantId, region: &str, test: &ConnectionTest) -> Result<()>;
    async fn get_connection_test(&self, tenant: &TenantId, id: &str) -> Result<ConnectionTest>;
    /// Hands `data_plane` the tests of `region` requested since `since` that no data plane has taken.
    async fn claim_connection_tests(
        &self,
        region: &str,
        data_plane: &str,
        since: i64,
        now: i64,
    ) -> Result<Vec<(TenantId, ConnectionTest)>>;
    /// Records the result of a test `data_plane` took (once; a second report is refused).
    async fn finish_connection_test(&self, data_plane: &str, id: &str, result: &ConnectionTestResult, now: i64) -> Result<()>;

    async fn revision(&self) -> Result<i64>;
    /// The tenants of `region` changed after revision `since` (all of them when `since` is 0).
    async fn region_changes(&self, region: &str, since: i64) -> Result<RegionChanges>;

    // --- audit ---
    /// Chains and stores events not stored before; returns the ids of all given events that are now
    /// stored (so a resent batch is acknowledged without being stored twice).
    async fn append_audit(&self, events: &[NewAuditEvent], received_at: i64) -> Result<Vec<String>>;
    async fn search_audit(&self, tenant: &TenantId, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>>;
    async fn verify_audit(&self, tenant: &TenantId) -> Result<ChainVerification>;
    /// The tenant's usage per minute that has any, for minutes starting in `[from, to)` (Unix ms; `from`
    /// is rounded down to its minute), rolled up as events were appended.
    async fn usage(&self, tenant: &TenantId, from: i64, to: i64) -> Result<Vec<crate::usage::UsageMinute>>;
}
