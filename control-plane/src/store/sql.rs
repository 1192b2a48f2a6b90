//! [`Store`] over SQLite or PostgreSQL through sqlx's `Any` driver: one set of queries (numbered `$n`
//! parameters work on both), two migration folders, and the few dialect differences named in
//! [`Backend`].

use std::collections::BTreeMap;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, AssertSqlSafe, Row, Transaction};

use super::{IdempotentResponse, NewConnection, RegionChanges, Result, Store, StoreError, TenantSnapshot};
use crate::audit;
use crate::model::*;
use crate::usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

/// The scope that sees every tenant's rows (platform-wide work: tenants, key lookup, data planes).
const ALL_TENANTS: &str = "*";

impl SqlStore {
    /// Connects to `sqlite://PATH` (created if missing) or `postgres://…`, and applies migrations.
    pub async fn connect(url: &str) -> Result<SqlStore> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if let Some(dir) = std::path::Path::new(path.split('?').next().unwrap_or(path)).parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
            }
            let sep = if path.contains('?') { "&" } else { "?" };
            (Backend::Sqlite, format!("sqlite://{path}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.into()));
        };
        let options = match backend {
            // One writer at a time is SQLite's model; a single connection also avoids upgrade deadlocks.
            Backend::Sqlite => AnyPoolOptions::new().max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;")
                        .await?;
                    Ok(())
                })
            }),
            Backend::Postgres => AnyPoolOptions::new().max_connections(16),
        };
        let pool = options.connect(&url).await.map_err(StoreError::Database)?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        }
        .map_err(StoreError::Migrate)?;
        Ok(SqlStore { pool, backend })
    }

    /// Runs `sql` within `scope`, behind the store's back: for tests that tamper with stored rows.
    pub async fn execute_unchecked(&self, scope: &str, sql: &str) -> Result<u64> {
        let mut tx = self.begin(scope).await?;
        let done = sqlx::query(AssertSqlSafe(sql.to_string())).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// A transaction that sees `scope`'s rows only (on Postgres, enforced by row-level security).
    async fn begin(&self, scope: &str) -> Result<Transaction<'static, Any>> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT set_config('omnisql.tenant', $1, true)").bind(scope.to_string()).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Bumps the configuration revision and stamps it on the tenant, so watchers see the change.
    async fn bump(tx: &mut Transaction<'static, Any>, tenant: &TenantId) -> Result<i64> {
        let revision: i64 = sqlx::query_scalar("UPDATE config_revision SET value = value + 1 WHERE id = 1 RETURNING value")
            .fetch_one(&mut **tx)
            .await?;
        sqlx::query("UPDATE tenants SET revision = $1 WHERE id = $2")
            .bind(revision)
            .bind(tenant.0.clone())
            .execute(&mut **tx)
            .await?;
        Ok(revision)
    }

    async fn principal_in(tx: &mut Transaction<'static, Any>, tenant: &TenantId, id: &str) -> Result<Principal> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE tenant_id = $1 AND id = $2")))
                .bind(tenant.0.clone())
                .bind(id.to_string())
                .fetch_one(&mut **tx)
                .await
                .map_err(StoreError::from)
                .map_err(not_found(format!("principal `{id}`")))?;
        principal_row(&row)
    }

    /// Sets one of the tenant's JSON settings (`column` is a constant of this file), bumping its revision.
    async fn set_tenant_json(&self, id: &TenantId, column: &'static str, value: Option<String>) -> Result<Tenant> {
        let mut tx = self.begin(&id.0).await?;
        let updated =
            sqlx::query(AssertSqlSafe(format!("UPDATE tenants SET {column} = $1 WHERE id = $2 AND deleted_at IS NULL")))
                .bind(value)
                .bind(id.0.clone())
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant `{id}`")));
        }
        Self::bump(&mut tx, id).await?;
        tx.commit().await?;
        self.get_tenant(id).await
    }

    fn lock_clause(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    fn contains(&self, column: &str, param: usize) -> String {
        match self.backend {
            Backend::Sqlite => format!("instr({column}, ${param}) > 0"),
            Backend::Postgres => format!("strpos({column}, ${param}) > 0"),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Invalid(format!("stored {what} is not valid JSON: {e}")))
}

fn tenant_row(r: &AnyRow) -> Result<Tenant> {
    Ok(Tenant {
        id: TenantId(r.try_get("id")?),
        name: r.try_get("name")?,
        region: r.try_get("region")?,
        key_id: r.try_get("key_id")?,
        weight: r.try_get("weight")?,
        statement_timeout_seconds: r.try_get("statement_timeout_seconds")?,
        max_concurrent_queries: r.try_get("max_concurrent_queries")?,
        created_at: r.try_get("created_at")?,
        oidc: r.try_get::<Option<String>, _>("oidc")?.map(|t| parse_json(&t, "OIDC trust")).transpose()?,
        opa: r.try_get::<Option<String>, _>("opa")?.map(|t| parse_json(&t, "OPA server")).transpose()?,
    })
}

fn principal_row(r: &AnyRow) -> Result<Principal> {
    principal_columns(r, TenantId(r.try_get("tenant_id")?), r.try_get("id")?, "created_at")
}

/// A principal from its columns in `r` (its own row, or joined to a key's).
fn principal_columns(r: &AnyRow, tenant_id: TenantId, id: String, created_at: &str) -> Result<Principal> {
    let kind: String = r.try_get("kind")?;
    let role: String = r.try_get("role")?;
    let groups: Option<String> = r.try_get("group_names")?;
    let attributes: Option<String> = r.try_get("attributes")?;
    Ok(Principal {
        tenant_id,
        id,
        kind: PrincipalKind::parse(&kind).ok_or_else(|| StoreError::Invalid(format!("unknown principal kind `{kind}`")))?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Invalid(format!("unknown role `{role}`")))?,
        created_at: r.try_get(created_at)?,
        regions: regions(r.try_get("regions")?),
        groups: groups.map(|g| parse_json(&g, "principal groups")).transpose()?.unwrap_or_default(),
        attributes: attributes.map(|a| parse_json(&a, "principal attributes")).transpose()?.unwrap_or_default(),
    })
}

/// Regions are stored comma-separated (region names are identifiers without commas).
fn regions(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split(',').filter(|r| !r.is_empty()).map(str::to_string).collect()).unwrap_or_default()
}

fn api_key_row(r: &AnyRow) -> Result<ApiKey> {
    Ok(ApiKey {
        tenant_id: TenantId(r.try_get("tenant_id")?),
        id: r.try_get("id")?,
        principal_id: r.try_get("principal_id")?,
        prefix: r.try_get("prefix")?,
        sha256: r.try_get("sha256")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        last_used_at: r.try_get("last_used_at")?,
    })
}

fn connector_row(r: &AnyRow) -> Result<ConnectorVersion> {
    Ok(ConnectorVersion {
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        parameters: parse_json(&r.try_get::<String, _>("parameters")?, "connector parameters")?,
        tables: parse_json(&r.try_get::<String, _>("tables")?, "connector tables")?,
        created_at: r.try_get("created_at")?,
    })
}

fn connection_row(r: &AnyRow) -> Result<Connection> {
    let sealed_options: BTreeMap<String, String> = parse_json(&r.try_get::<String, _>("sealed_options")?, "sealed options")?;
    Ok(Connection {
        secret_options: sealed_options.keys().cloned().collect(),
        sealed_options,
        tenant_id: TenantId(r.try_get("tenant_id")?),
        name: r.try_get("name")?,
        connector: r.try_get("connector")?,
        version: r.try_get("version")?,
        options: parse_json(&r.try_get::<String, _>("options")?, "connection options")?,
        cache_ttl_seconds: r.try_get::<Option<i64>, _>("cache_ttl_seconds")?.map(|v| v.max(0) as u64),
        requests_per_second: r.try_get("requests_per_second")?,
        quota_share: r.try_get("quota_share")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn policy_row(r: &AnyRow) -> Result<Policy> {
    Ok(Policy {
        tenant_id: TenantId(r.try_get("tenant_id")?),
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        rego: r.try_get("rego")?,
        created_at: r.try_get("created_at")?,
    })
}

fn data_plane_row(r: &AnyRow) -> Result<DataPlane> {
    Ok(DataPlane {
        id: r.try_get("id")?,
        region: r.try_get("region")?,
        hostname: r.try_get("hostname")?,
        version: r.try_get("version")?,
        enrolled_at: r.try_get("enrolled_at")?,
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        acked_revision: r.try_get("acked_revision")?,
        latest_revision: 0,
        audit_pending: r.try_get("audit_pending")?,
        enrolled_by: r.try_get("enrolled_by")?,
        credential_sha256: r.try_get("credential_sha256")?,
    })
}

fn connection_test_row(r: &AnyRow) -> Result<ConnectionTest> {
    let result: Option<String> = r.try_get("result")?;
    Ok(ConnectionTest {
        id: r.try_get("id")?,
        connection: r.try_get("connection")?,
        requested_by: r.try_get("requested_by")?,
        requested_at: r.try_get("requested_at")?,
        data_plane: r.try_get("data_plane")?,
        finished_at: r.try_get("finished_at")?,
        result: result.map(|j| serde_json::from_str(&j)).transpose().map_err(|e| StoreError::Invalid(e.to_string()))?,
    })
}

fn audit_row(r: &AnyRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        event: NewAuditEvent {
            id: r.try_get("id")?,
            tenant_id: TenantId(r.try_get("tenant_id")?),
            principal: r.try_get("principal")?,
            sql: r.try_get("sql")?,
            tables: parse_json(&r.try_get::<String, _>("tables")?, "audit tables")?,
            api_requests: r.try_get("api_requests")?,
            rows: r.try_get("rows")?,
            bytes: r.try_get("bytes")?,
            duration_ms: r.try_get("duration_ms")?,
            outcome: r.try_get("outcome")?,
            error: r.try_get("error")?,
            started_at: r.try_get("started_at")?,
            data_plane: r.try_get("data_plane")?,
            policy_revision: r.try_get("policy_revision")?,
            api_requests_by_app: parse_json(&r.try_get::<String, _>("api_requests_by_app")?, "audit requests by app")?,
            cache_hits: r.try_get("cache_hits")?,
        },
        seq: r.try_get("seq")?,
        received_at: r.try_get("received_at")?,
        hash: r.try_get("hash")?,
    })
}

fn not_found(what: impl Into<String>) -> impl FnOnce(StoreError) -> StoreError {
    let what = what.into();
    move |e| match e {
        StoreError::NotFound(_) => StoreError::NotFound(what),
        other => other,
    }
}

fn conflict(what: impl Into<String>) -> impl FnOnce(StoreError) -> StoreError {
    let what = what.into();
    move |e| match e {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

const TENANT_COLUMNS: &str =
    "id, name, region, key_id, weight, statement_timeout_seconds, max_concurrent_queries, created_at, oidc, opa";
const KEY_COLUMNS: &str =
    "k.tenant_id, k.id, k.principal_id, k.prefix, k.sha256, k.created_at, k.expires_at, k.revoked_at, k.last_used_at";
const AUDIT_COLUMNS: &str = "tenant_id, seq, id, principal, sql, tables, api_requests, rows, bytes, duration_ms, outcome, error, started_at, data_plane, received_at, hash, policy_revision, api_requests_by_app, cache_hits";
/// A principal's own columns.
const PRINCIPAL_COLUMNS: &str = "tenant_id, id, kind, role, created_at, regions, group_names, attributes";
/// A key's principal, joined as `p`.
const JOINED_PRINCIPAL_COLUMNS: &str =
    "p.kind, p.role, p.created_at AS principal_created_at, p.regions, p.group_names, p.attributes";

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    async fn create_tenant(&self, t: &Tenant) -> Result<Tenant> {
        let mut tx = self.begin(&t.id.0).await?;
        sqlx::query(
            "INSERT INTO tenants (id, name, region, key_id, weight, statement_timeout_seconds, max_concurrent_queries, \
             created_at, oidc, opa, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)",
        )
        .bind(t.id.0.clone())
        .bind(t.name.clone())
        .bind(t.region.clone())
        .bind(t.key_id.clone())
        .bind(t.weight)
        .bind(t.statement_timeout_seconds)
        .bind(t.max_concurrent_queries)
        .bind(t.created_at)
        .bind(t.oidc.as_ref().map(json))
        .bind(t.opa.as_ref().map(json))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)
        .map_err(conflict(format!("tenant `{}`", t.id)))?;
        Self::bump(&mut tx, &t.id).await?;
        tx.commit().await?;
        Ok(t.clone())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<Tenant> {
        let mut tx = self.begin(&t.id.0).await?;
        let updated = sqlx::query(
            "UPDATE tenants SET name = $1, weight = $2, statement_timeout_seconds = $3, max_concurrent_queries = $4 \
             WHERE id = $5 AND deleted_at IS NULL",
        )
        .bind(t.name.clone())
        .bind(t.weight)
        .bind(t.statement_timeout_seconds)
        .bind(t.max_concurrent_queries)
        .bind(t.id.0.clone())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant `{}`", t.id)));
        }
        Self::bump(&mut tx, &t.id).await?;
        tx.commit().await?;
        Ok(t.clone())
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let mut tx = self.begin(&id.0).await?;
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1 AND deleted_at IS NULL")))
                .bind(id.0.clone())
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)
                .map_err(not_found(format!("tenant `{id}`")))?;
        tenant_row(&row)
    }

    async fn set_oidc(&self, id: &TenantId, trust: Option<&OidcTrust>) -> Result<Tenant> {
        self.set_tenant_json(id, "oidc", trust.map(json)).await
    }

    async fn set_opa(&self, id: &TenantId, server: Option<&OpaServer>) -> Result<Tenant> {
        self.set_tenant_json(id, "opa", server.map(json)).await
    }

    async fn tenants_trusting(&self, issuer: &str) -> Result<Vec<Tenant>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        // A text match narrows the rows; the parsed trust decides.
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE deleted_at IS NULL AND oidc IS NOT NULL AND {} ORDER BY id",
            self.contains("oidc", 1)
        )))
        .bind(issuer.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let tenants = rows.iter().map(tenant_row).collect::<Result<Vec<_>>>()?;
        Ok(tenants.into_iter().filter(|t| t.oidc.as_ref().is_some_and(|o| o.issuer == issuer)).collect())
    }

    async fn list_tenants(&self, page: &PageRequest) -> Result<Page<Tenant>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS} FROM tenants WHERE deleted_at IS NULL AND id > $1 AND id <> $2 ORDER BY id LIMIT $3"
        )))
        .bind(page.after.clone().unwrap_or_default())
        .bind(PLATFORM_TENANT)
        .bind(page.limit() + 1)
        .fetch_all(&mut *tx)
        .await?;
        let tenants = rows.iter().map(tenant_row).collect::<Result<Vec<_>>>()?;
        Ok(page_of(tenants, page, |t| t.id.0.clone()))
    }

    async fn delete_tenant(&self, id: &TenantId) -> Result<()> {
        let mut tx = self.begin(&id.0).await?;
        let done = sqlx::query("UPDATE tenants SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
            .bind(now_ms())
            .bind(id.0.clone())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("tenant `{id}`")));
        }
        for table in ["api_keys", "principals", "connections", "policies", "idempotency_keys"] {
            sqlx::query(AssertSqlSafe(format!("DELETE FROM {table} WHERE tenant_id = $1")))
                .bind(id.0.clone())
                .execute(&mut *tx)
                .await?;
        }
        Self::bump(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_principal(&self, p: &Principal) -> Result<Principal> {
        let mut tx = self.begin(&p.tenant_id.0).await?;
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO principals ({PRINCIPAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(p.tenant_id.0.clone())
        .bind(p.id.clone())
        .bind(p.kind.as_str())
        .bind(p.role.as_str())
        .bind(p.created_at)
        .bind((!p.regions.is_empty()).then(|| p.regions.join(",")))
        .bind((!p.groups.is_empty()).then(|| json(&p.groups)))
        .bind((!p.attributes.is_empty()).then(|| json(&p.attributes)))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)
        .map_err(conflict(format!("principal `{}`", p.id)))?;
        // Data planes see every principal (one signing in with a token has no key).
        Self::bump(&mut tx, &p.tenant_id).await?;
        tx.commit().await?;
        Ok(p.clone())
    }

    async fn get_principal(&self, tenant: &TenantId, id: &str) -> Result<Principal> {
        let mut tx = self.begin(&tenant.0).await?;
        Self::principal_in(&mut tx, tenant, id).await
    }

    async fn update_principal(&self, tenant: &TenantId, id: &str, update: &PrincipalUpdate) -> Result<Principal> {
        let mut tx = self.begin(&tenant.0).await?;
        let mut p = Self::principal_in(&mut tx, tenant, id).await?;
        if let Some(groups) = &update.groups {
            p.groups = groups.clone();
        }
        if let Some(attributes) = &update.attributes {
            p.attributes = attributes.clone();
        }
        sqlx::query("UPDATE principals SET group_names = $1, attributes = $2 WHERE tenant_id = $3 AND id = $4")
            .bind((!p.groups.is_empty()).then(|| json(&p.groups)))
            .bind((!p.attributes.is_empty()).then(|| json(&p.attributes)))
            .bind(tenant.0.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        // Data planes see principals with the tenant's configuration.
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(p)
    }

    async fn list_principals(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Principal>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        )))
        .bind(tenant.0.clone())
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.limit() + 1)
        .fetch_all(&mut *tx)
        .await?;
        let items = rows.iter().map(principal_row).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |p| p.id.clone()))
    }

    async fn delete_principal(&self, tenant: &TenantId, id: &str) -> Result<()> {
        let mut tx = self.begin(&tenant.0).await?;
        sqlx::query("DELETE FROM api_keys WHERE tenant_id = $1 AND principal_id = $2")
            .bind(tenant.0.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM principals WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("principal `{id}`")));
        }
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_api_key(&self, k: &ApiKey) -> Result<ApiKey> {
        let mut tx = self.begin(&k.tenant_id.0).await?;
        let principal: Option<String> = sqlx::query_scalar("SELECT id FROM principals WHERE tenant_id = $1 AND id = $2")
            .bind(k.tenant_id.0.clone())
            .bind(k.principal_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
        if principal.is_none() {
            return Err(StoreError::NotFound(format!("principal `{}`", k.principal_id)));
        }
        sqlx::query(
            "INSERT INTO api_keys (tenant_id, id, principal_id, prefix, sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(k.tenant_id.0.clone())
        .bind(k.id.clone())
        .bind(k.principal_id.clone())
        .bind(k.prefix.clone())
        .bind(k.sha256.clone())
        .bind(k.created_at)
        .bind(k.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)
        .map_err(conflict(format!("API key `{}`", k.id)))?;
        Self::bump(&mut tx, &k.tenant_id).await?;
        tx.commit().await?;
        Ok(k.clone())
    }

    async fn list_api_keys(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<ApiKey>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 AND k.id > $2 ORDER BY k.id LIMIT $3"
        )))
        .bind(tenant.0.clone())
        .bind(page.after.clone().unwrap_or_default())
        .bind(page.limit() + 1)
        .fetch_all(&mut *tx)
        .await?;
        let items = rows.iter().map(api_key_row).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |k| k.id.clone()))
    }

    async fn revoke_api_key(&self, tenant: &TenantId, id: &str, at: i64) -> Result<ApiKey> {
        let mut tx = self.begin(&tenant.0).await?;
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE tenant_id = $2 AND id = $3 AND revoked_at IS NULL")
            .bind(at)
            .bind(tenant.0.clone())
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys k WHERE k.tenant_id = $1 AND k.id = $2")))
                .bind(tenant.0.clone())
                .bind(id.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)
                .map_err(not_found(format!("API key `{id}`")))?;
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        api_key_row(&row)
    }

    async fn authenticate(&self, sha256: &str, now: i64) -> Result<Option<(ApiKey, Principal)>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS}, {JOINED_PRINCIPAL_COLUMNS}
             FROM api_keys k JOIN principals p ON p.tenant_id = k.tenant_id AND p.id = k.principal_id
             JOIN tenants t ON t.id = k.tenant_id AND t.deleted_at IS NULL
             WHERE k.sha256 = $1 AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > $2)"
        )))
        .bind(sha256.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_row(&row)?;
        let principal = principal_columns(&row, key.tenant_id.clone(), key.principal_id.clone(), "principal_created_at")?;
        // Last use is recorded at minute granularity, so a busy key does not write on every call.
        if key.last_used_at.is_none_or(|t| now - t > 60_000) {
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE sha256 = $2")
                .bind(now)
                .bind(sha256.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some((key, principal)))
    }

    async fn upsert_connector(&self, c: &ConnectorVersion) -> Result<ConnectorVersion> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        sqlx::query(
            "INSERT INTO connectors (name, version, parameters, tables, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name, version) DO UPDATE SET parameters = excluded.parameters, tables = excluded.tables",
        )
        .bind(c.name.clone())
        .bind(c.version.clone())
        .bind(json(&c.parameters))
        .bind(json(&c.tables))
        .bind(c.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.get_connector(&c.name, &c.version).await
    }

    async fn get_connector(&self, name: &str, version: &str) -> Result<ConnectorVersion> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let row =
            sqlx::query("SELECT name, version, parameters, tables, created_at FROM connectors WHERE name = $1 AND version = $2")
                .bind(name.to_string())
                .bind(version.to_string())
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::from)
                .map_err(not_found(format!("connector `{name}` version {version}")))?;
        connector_row(&row)
    }

    async fn list_connectors(&self) -> Result<Vec<ConnectorVersion>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let rows = sqlx::query("SELECT name, version, parameters, tables, created_at FROM connectors ORDER BY name, version")
            .fetch_all(&mut *tx)
            .await?;
        rows.iter().map(connector_row).collect()
    }

    async fn create_connection(&self, tenant: &TenantId, c: &NewConnection, now: i64) -> Result<Connection> {
        let mut tx = self.begin(&tenant.0).await?;
        sqlx::query(
            "INSERT INTO connections (tenant_id, name, connector, version, options, sealed_options, cache_ttl_seconds,
                requests_per_second, quota_share, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(tenant.0.clone())
        .bind(c.name.clone())
        .bind(c.connector.clone())
        .bind(c.version.clone())
        .bind(json(&c.options))
        .bind(json(&c.sealed_options))
        .bind(c.cache_ttl_seconds.map(|v| v.min(i64::MAX as u64) as i64))
        .bind(c.requests_per_second)
        .bind(c.quota_share)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)
        .map_err(conflict(format!("connection `{}`", c.name)))?;
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        self.get_connection(tenant, &c.name).await
    }

    async fn get_connection(&self, tenant: &TenantId, name: &str) -> Result<Connection> {
        let mut tx = self.begin(&tenant.0).await?;
        let row = sqlx::query("SELECT * FROM connections WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)
            .map_err(not_found(format!("connection `{name}`")))?;
        connection_row(&row)
    }

    async fn list_connections(&self, tenant: &TenantId, page: &PageRequest) -> Result<Page<Connection>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query("SELECT * FROM connections WHERE tenant_id = $1 AND name > $2 ORDER BY name LIMIT $3")
            .bind(tenant.0.clone())
            .bind(page.after.clone().unwrap_or_default())
            .bind(page.limit() + 1)
            .fetch_all(&mut *tx)
            .await?;
        let items = rows.iter().map(connection_row).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |c| c.name.clone()))
    }

    async fn delete_connection(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let mut tx = self.begin(&tenant.0).await?;
        let done = sqlx::query("DELETE FROM connections WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("connection `{name}`")));
        }
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_connection_version(&self, tenant: &TenantId, name: &str, version: &str, now: i64) -> Result<Connection> {
        let mut tx = self.begin(&tenant.0).await?;
        let done = sqlx::query("UPDATE connections SET version = $3, updated_at = $4 WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .bind(version.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("connection `{name}`")));
        }
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        self.get_connection(tenant, name).await
    }

    async fn delete_policy(&self, tenant: &TenantId, name: &str) -> Result<()> {
        let mut tx = self.begin(&tenant.0).await?;
        let done = sqlx::query("DELETE FROM policies WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("policy `{name}`")));
        }
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn put_policy(&self, tenant: &TenantId, name: &str, rego: &str, now: i64) -> Result<Policy> {
        let mut tx = self.begin(&tenant.0).await?;
        let latest: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM policies WHERE tenant_id = $1 AND name = $2")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .fetch_one(&mut *tx)
            .await?;
        let policy = Policy {
            tenant_id: tenant.clone(),
            name: name.into(),
            version: latest.unwrap_or(0) + 1,
            rego: rego.into(),
            created_at: now,
        };
        sqlx::query("INSERT INTO policies (tenant_id, name, version, rego, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant.0.clone())
            .bind(policy.name.clone())
            .bind(policy.version)
            .bind(policy.rego.clone())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        Self::bump(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(policy)
    }

    async fn list_policies(&self, tenant: &TenantId) -> Result<Vec<Policy>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query(
            "SELECT p.* FROM policies p WHERE p.tenant_id = $1
               AND p.version = (SELECT MAX(q.version) FROM policies q WHERE q.tenant_id = p.tenant_id AND q.name = p.name)
             ORDER BY p.name",
        )
        .bind(tenant.0.clone())
        .fetch_all(&mut *tx)
        .await?;
        rows.iter().map(policy_row).collect()
    }

    async fn policy_versions(&self, tenant: &TenantId, name: &str) -> Result<Vec<Policy>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query("SELECT * FROM policies WHERE tenant_id = $1 AND name = $2 ORDER BY version")
            .bind(tenant.0.clone())
            .bind(name.to_string())
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!("policy `{name}`")));
        }
        rows.iter().map(policy_row).collect()
    }

    async fn idempotent_response(&self, tenant: &TenantId, key: &str) -> Result<Option<IdempotentResponse>> {
        let mut tx = self.begin(&tenant.0).await?;
        let row = sqlx::query("SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant.0.clone())
            .bind(key.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        row.map(|r| {
            Ok(IdempotentResponse {
                request_hash: r.try_get("request_hash")?,
                status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(500),
                body: r.try_get("response")?,
            })
        })
        .transpose()
    }

    async fn save_idempotent_response(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &IdempotentResponse,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin(&tenant.0).await?;
        sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, response, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, key) DO NOTHING",
        )
        .bind(tenant.0.clone())
        .bind(key.to_string())
        .bind(response.request_hash.clone())
        .bind(i64::from(response.status))
        .bind(response.body.clone())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_enrollment_token(
        &self,
        sha256: &str,
        region: &str,
        created_by: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        sqlx::query(
            "INSERT INTO enrollment_tokens (sha256, region, created_at, expires_at, created_by) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256.to_string())
        .bind(region.to_string())
        .bind(now)
        .bind(expires_at)
        .bind(created_by.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn enroll(&self, token_sha256: &str, mut dp: DataPlane) -> Result<DataPlane> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let token = sqlx::query(
            "UPDATE enrollment_tokens SET used_at = $1 WHERE sha256 = $2 AND used_at IS NULL AND expires_at > $1 RETURNING region, created_by",
        )
        .bind(dp.enrolled_at)
        .bind(token_sha256.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = token else {
            return Err(StoreError::NotFound("an unused, unexpired enrollment token with this value".into()));
        };
        dp.region = token.try_get("region")?;
        dp.enrolled_by = token.try_get("created_by")?;
        sqlx::query(
            "INSERT INTO data_planes (id, region, hostname, version, enrolled_at, acked_revision, credential_sha256, enrolled_by)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
        )
        .bind(dp.id.clone())
        .bind(dp.region.clone())
        .bind(dp.hostname.clone())
        .bind(dp.version.clone())
        .bind(dp.enrolled_at)
        .bind(dp.credential_sha256.clone())
        .bind(dp.enrolled_by.clone())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(dp)
    }

    async fn data_plane_by_credential(&self, sha256: &str) -> Result<Option<DataPlane>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let row = sqlx::query("SELECT * FROM data_planes WHERE credential_sha256 = $1")
            .bind(sha256.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        row.as_ref().map(data_plane_row).transpose()
    }

    async fn heartbeat(&self, id: &str, version: &str, acked_revision: i64, audit_pending: i64, now: i64) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        sqlx::query(
            "UPDATE data_planes SET version = $1, acked_revision = $2, last_heartbeat_at = $3, audit_pending = $5 WHERE id = $4",
        )
        .bind(version.to_string())
        .bind(acked_revision)
        .bind(now)
        .bind(id.to_string())
        .bind(audit_pending)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn list_data_planes(&self) -> Result<Vec<DataPlane>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let rows = sqlx::query("SELECT * FROM data_planes ORDER BY region, id").fetch_all(&mut *tx).await?;
        rows.iter().map(data_plane_row).collect()
    }

    async fn delete_data_plane(&self, id: &str) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        sqlx::query("DELETE FROM rate_limits WHERE data_plane = $1").bind(id.to_string()).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM data_planes WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("data plane `{id}`")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_key_uses(&self, region: &str, uses: &[(String, i64)]) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        for (sha256, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE sha256 = $2 AND (last_used_at IS NULL OR last_used_at < $1)
                   AND tenant_id IN (SELECT id FROM tenants WHERE region = $3)",
            )
            .bind(*at)
            .bind(sha256.clone())
            .bind(region.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn replace_rate_limits(&self, data_plane: &str, reports: &[(TenantId, RateLimitReport)]) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        sqlx::query("DELETE FROM rate_limits WHERE data_plane = $1").bind(data_plane.to_string()).execute(&mut *tx).await?;
        for (tenant, r) in reports {
            sqlx::query(
                "INSERT INTO rate_limits (data_plane, tenant_id, connection, bucket, capacity, window_seconds, available, waiting,
                   paused_for_seconds, reported_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (data_plane, tenant_id, connection, bucket) DO NOTHING",
            )
            .bind(data_plane.to_string())
            .bind(tenant.0.clone())
            .bind(r.connection.clone())
            .bind(r.bucket.clone())
            .bind(r.capacity)
            .bind(r.window_seconds)
            .bind(r.available)
            .bind(r.waiting)
            .bind(r.paused_for_seconds)
            .bind(r.reported_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn rate_limits(&self, tenant: &TenantId) -> Result<Vec<RateLimitReport>> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows = sqlx::query(
            "SELECT * FROM rate_limits WHERE tenant_id = $1 AND data_plane IN (SELECT id FROM data_planes)
               ORDER BY connection, bucket, data_plane",
        )
        .bind(tenant.0.clone())
        .fetch_all(&mut *tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RateLimitReport {
                    data_plane: r.try_get("data_plane")?,
                    connection: r.try_get("connection")?,
                    bucket: r.try_get("bucket")?,
                    capacity: r.try_get("capacity")?,
                    window_seconds: r.try_get("window_seconds")?,
                    available: r.try_get("available")?,
                    waiting: r.try_get("waiting")?,
                    paused_for_seconds: r.try_get("paused_for_seconds")?,
                    reported_at: r.try_get("reported_at")?,
                })
            })
            .collect()
    }

    async fn create_connection_test(&self, tenant: &TenantId, region: &str, test: &ConnectionTest) -> Result<()> {
        let mut tx = self.begin(&tenant.0).await?;
        sqlx::query(
            "INSERT INTO connection_tests (id, tenant_id, connection, region, requested_by, requested_at)
               VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(test.id.clone())
        .bind(tenant.0.clone())
        .bind(test.connection.clone())
        .bind(region.to_string())
        .bind(test.requested_by.clone())
        .bind(test.requested_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_connection_test(&self, tenant: &TenantId, id: &str) -> Result<ConnectionTest> {
        let mut tx = self.begin(&tenant.0).await?;
        let row = sqlx::query("SELECT * FROM connection_tests WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.0.clone())
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)
            .map_err(not_found(format!("connection test `{id}`")))?;
        connection_test_row(&row)
    }

    async fn claim_connection_tests(
        &self,
        region: &str,
        data_plane: &str,
        since: i64,
        now: i64,
    ) -> Result<Vec<(TenantId, ConnectionTest)>> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        // One statement: of data planes claiming at once, each test goes to exactly one.
        let rows = sqlx::query(
            "UPDATE connection_tests SET data_plane = $1, claimed_at = $2
               WHERE data_plane IS NULL AND region = $3 AND requested_at >= $4 RETURNING *",
        )
        .bind(data_plane.to_string())
        .bind(now)
        .bind(region.to_string())
        .bind(since)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(|r| Ok((TenantId(r.try_get("tenant_id")?), connection_test_row(r)?))).collect()
    }

    async fn finish_connection_test(&self, data_plane: &str, id: &str, result: &ConnectionTestResult, now: i64) -> Result<()> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let json = serde_json::to_string(result).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE connection_tests SET finished_at = $1, result = $2 WHERE id = $3 AND data_plane = $4 AND finished_at IS NULL",
        )
        .bind(now)
        .bind(json)
        .bind(id.to_string())
        .bind(data_plane.to_string())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("open connection test `{id}` taken by this data plane")));
        }
        tx.commit().await?;
        Ok(())
    }

    async fn revision(&self) -> Result<i64> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        Ok(sqlx::query_scalar("SELECT value FROM config_revision WHERE id = 1").fetch_one(&mut *tx).await?)
    }

    async fn region_changes(&self, region: &str, since: i64) -> Result<RegionChanges> {
        let mut tx = self.begin(ALL_TENANTS).await?;
        let revision: i64 = sqlx::query_scalar("SELECT value FROM config_revision WHERE id = 1").fetch_one(&mut *tx).await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TENANT_COLUMNS}, deleted_at FROM tenants WHERE region = $1 AND revision > $2 AND revision <= $3 ORDER BY id"
        )))
        .bind(region.to_string())
        .bind(since)
        .bind(revision)
        .fetch_all(&mut *tx)
        .await?;
        let mut changes = RegionChanges { revision, tenants: Vec::new(), removed: Vec::new() };
        for row in &rows {
            let tenant = tenant_row(row)?;
            if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
                changes.removed.push(tenant.id);
                continue;
            }
            let id = tenant.id.0.clone();
            let keys = sqlx::query(AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS}, {JOINED_PRINCIPAL_COLUMNS}
                 FROM api_keys k JOIN principals p ON p.tenant_id = k.tenant_id AND p.id = k.principal_id
                 WHERE k.tenant_id = $1 AND k.revoked_at IS NULL ORDER BY k.id"
            )))
            .bind(id.clone())
            .fetch_all(&mut *tx)
            .await?;
            let mut api_keys = Vec::new();
            for r in &keys {
                let key = api_key_row(r)?;
                let principal = principal_columns(r, key.tenant_id.clone(), key.principal_id.clone(), "principal_created_at")?;
                api_keys.push((key, principal));
            }
            let connections = sqlx::query("SELECT * FROM connections WHERE tenant_id = $1 ORDER BY name")
                .bind(id.clone())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(connection_row)
                .collect::<Result<Vec<_>>>()?;
            let policies = sqlx::query(
                "SELECT p.* FROM policies p WHERE p.tenant_id = $1
                   AND p.version = (SELECT MAX(q.version) FROM policies q WHERE q.tenant_id = p.tenant_id AND q.name = p.name)
                 ORDER BY p.name",
            )
            .bind(id.clone())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(policy_row)
            .collect::<Result<Vec<_>>>()?;
            let principals = sqlx::query(AssertSqlSafe(format!(
                "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE tenant_id = $1 ORDER BY id"
            )))
            .bind(id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(principal_row)
            .collect::<Result<Vec<_>>>()?;
            changes.tenants.push(TenantSnapshot { tenant, api_keys, connections, policies, principals });
        }
        Ok(changes)
    }

    async fn append_audit(&self, events: &[NewAuditEvent], received_at: i64) -> Result<Vec<String>> {
        let mut by_tenant: BTreeMap<&TenantId, Vec<&NewAuditEvent>> = BTreeMap::new();
        for e in events {
            by_tenant.entry(&e.tenant_id).or_default().push(e);
        }
        let mut stored = Vec::with_capacity(events.len());
        for (tenant, events) in by_tenant {
            let mut tx = self.begin(&tenant.0).await?;
            // The chain head is locked for the transaction, so concurrent batches chain one after another.
            let head = sqlx::query(AssertSqlSafe(format!(
                "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1{}",
                self.lock_clause()
            )))
            .bind(tenant.0.clone())
            .fetch_optional(&mut *tx)
            .await?;
            let (mut seq, mut hash) = match &head {
                Some(r) => (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?),
                None => (0, audit::GENESIS.to_string()),
            };
            let mut fresh = Vec::with_capacity(events.len());
            for e in events {
                let exists: Option<String> = sqlx::query_scalar("SELECT id FROM audit_events WHERE id = $1")
                    .bind(e.id.clone())
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    fresh.push(e);
                    seq += 1;
                    hash = audit::chain_hash(&hash, seq, e);
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO audit_events ({AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
                    )))
                    .bind(tenant.0.clone())
                    .bind(seq)
                    .bind(e.id.clone())
                    .bind(e.principal.clone())
                    .bind(e.sql.clone())
                    .bind(json(&e.tables))
                    .bind(e.api_requests)
                    .bind(e.rows)
                    .bind(e.bytes)
                    .bind(e.duration_ms)
                    .bind(e.outcome.clone())
                    .bind(e.error.clone())
                    .bind(e.started_at)
                    .bind(e.data_plane.clone())
                    .bind(received_at)
                    .bind(hash.clone())
                    .bind(e.policy_revision.clone())
                    .bind(json(&e.api_requests_by_app))
                    .bind(e.cache_hits)
                    .execute(&mut *tx)
                    .await
                    .map_err(StoreError::from)
                    .map_err(conflict(format!("audit event `{}` (stored under another tenant)", e.id)))?;
                }
                stored.push(e.id.clone());
            }
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, $2, $3)
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(tenant.0.clone())
            .bind(seq)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
            // The usage rollup changes with the events, under the same lock: a resent event counts once.
            for (minute, rollup) in usage::by_minute(fresh) {
                let stored: Option<String> =
                    sqlx::query_scalar("SELECT rollup FROM usage_minutes WHERE tenant_id = $1 AND minute = $2")
                        .bind(tenant.0.clone())
                        .bind(minute)
                        .fetch_optional(&mut *tx)
                        .await?;
                let mut total: usage::Rollup = stored.map(|t| parse_json(&t, "usage rollup")).transpose()?.unwrap_or_default();
                total.merge(&rollup);
                sqlx::query(
                    "INSERT INTO usage_minutes (tenant_id, minute, rollup) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant_id, minute) DO UPDATE SET rollup = excluded.rollup",
                )
                .bind(tenant.0.clone())
                .bind(minute)
                .bind(json(&total))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Ok(stored)
    }

    async fn usage(&self, tenant: &TenantId, from: i64, to: i64) -> Result<Vec<usage::UsageMinute>> {
        let mut tx = self.begin(&tenant.0).await?;
        let first = from.div_euclid(usage::MINUTE_MS) * usage::MINUTE_MS;
        let rows = sqlx::query(
            "SELECT minute, rollup FROM usage_minutes WHERE tenant_id = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
        )
        .bind(tenant.0.clone())
        .bind(first)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?;
        rows.iter()
            .map(|r| {
                let rollup: usage::Rollup = parse_json(&r.try_get::<String, _>("rollup")?, "usage rollup")?;
                Ok(rollup.minute(r.try_get("minute")?))
            })
            .collect()
    }

    async fn search_audit(&self, tenant: &TenantId, filter: &AuditFilter, page: &PageRequest) -> Result<Page<AuditEvent>> {
        let mut tx = self.begin(&tenant.0).await?;
        let after: i64 = match &page.after {
            Some(a) => {
                a.parse().map_err(|_| StoreError::Invalid(format!("`after` must be an event sequence number, not `{a}`")))?
            }
            None => 0,
        };
        let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2");
        let mut n = 3;
        let clause = |sql: &mut String, condition: String| {
            sql.push_str(" AND ");
            sql.push_str(&condition);
        };
        if filter.from.is_some() {
            clause(&mut sql, format!("started_at >= ${n}"));
            n += 1;
        }
        if filter.to.is_some() {
            clause(&mut sql, format!("started_at < ${n}"));
            n += 1;
        }
        if filter.principal.is_some() {
            clause(&mut sql, format!("principal = ${n}"));
            n += 1;
        }
        if filter.outcome.is_some() {
            clause(&mut sql, format!("outcome = ${n}"));
            n += 1;
        }
        if filter.table.is_some() {
            clause(&mut sql, self.contains("tables", n));
            n += 1;
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT ${n}"));
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(tenant.0.clone()).bind(after);
        if let Some(v) = filter.from {
            query = query.bind(v);
        }
        if let Some(v) = filter.to {
            query = query.bind(v);
        }
        if let Some(v) = &filter.principal {
            query = query.bind(v.clone());
        }
        if let Some(v) = &filter.outcome {
            query = query.bind(v.clone());
        }
        if let Some(v) = &filter.table {
            // Tables are stored as a JSON array of strings; match one whole element.
            query = query.bind(json(v));
        }
        let rows = query.bind(page.limit() + 1).fetch_all(&mut *tx).await?;
        let items = rows.iter().map(audit_row).collect::<Result<Vec<_>>>()?;
        Ok(page_of(items, page, |e| e.seq.to_string()))
    }

    async fn verify_audit(&self, tenant: &TenantId) -> Result<ChainVerification> {
        let mut tx = self.begin(&tenant.0).await?;
        let rows =
            sqlx::query(AssertSqlSafe(format!("SELECT {AUDIT_COLUMNS} FROM audit_events WHERE tenant_id = $1 ORDER BY seq")))
                .bind(tenant.0.clone())
                .fetch_all(&mut *tx)
                .await?;
        let events = rows.iter().map(audit_row).collect::<Result<Vec<_>>>()?;
        let head: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_heads WHERE tenant_id = $1")
            .bind(tenant.0.clone())
            .fetch_optional(&mut *tx)
            .await?;
        let count = events.len() as i64;
        Ok(match audit::verify(&events) {
            // The head must name the last event too: deleting the newest events would otherwise go unseen.
            Ok((_, last)) if head.as_deref().unwrap_or(audit::GENESIS) == last => ChainVerification {
                tenant_id: tenant.clone(),
                events: count,
                valid: true,
                first_broken_seq: None,
                head_hash: last,
            },
            Ok((_, last)) => ChainVerification {
                tenant_id: tenant.clone(),
                events: count,
                valid: false,
                first_broken_seq: Some(count + 1),
                head_hash: last,
            },
            Err(seq) => ChainVerification {
                tenant_id: tenant.clone(),
                events: count,
                valid: false,
                first_broken_seq: Some(seq),
                head_hash: head.unwrap_or_default(),
            },
        })
    }
}
