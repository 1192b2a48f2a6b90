//! The OmniSQL query engine: per-tenant DataFusion sessions over the tenant's connections only.
//!
//! [`Engine`] holds the tenants of a data plane (from [`config::Config`]), resolves bearer tokens to a
//! tenant and principal, and builds for each query a DataFusion session whose catalog `omnisql` holds
//! exactly that tenant's connections, one schema each ([`catalog::ConnectionSchema`]). The session
//! carries a [`QueryContext`] (deadline, upstream request count) that connector scans read.
//!
//! SQL → [`Engine::plan`] (admit: only queries, of bounded size, see [`guard`]; parse, plan, optimise
//! with pushdown into connector scans) → [`Engine::execute`] (a stream of Arrow batches, contained: see
//! [`contain`]). Every query runs within its tenant's statement timeout, concurrency slots and memory
//! share ([`resources`]), so no tenant's statement can end, exhaust or starve the process.
//!
//! The configuration can be replaced while queries run ([`Engine::apply`], fed by the control plane);
//! API keys are known only by their SHA-256. Every query attempt's audit event goes through the durable
//! outbox in [`audit`].

pub mod audit;
pub mod bounded;
pub mod catalog;
pub mod config;
pub mod contain;
pub mod cpu;
pub mod eager;
pub mod governed;
pub use omnisql_policy as policy;
pub mod guard;
pub mod plans;
pub mod pool;
pub mod postgres;
pub mod resources;
pub mod results;
pub mod settings;
pub mod system;
pub mod testing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider, SchemaProvider};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use omnisql_connector::governor::Governor;
use omnisql_connector::{CacheStats, ConnectorContext, ConnectorFactory, HttpSettings, QueryContext, ResponseCache, ScanOptions};

pub use catalog::ConnectionSchema;
pub use config::{Config, ConfigError};
pub use guard::StatementLimits;
pub use resources::MemoryLimits;
pub use settings::{QuerySettings, SettingsError};

/// How long API answers count as fresh when neither the connection nor the query says.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 60;

/// Stack for every thread that plans or runs queries: enough for the deepest statement the
/// [`StatementLimits`] admit (tests/isolation.rs runs each limit at its value on threads this size).
pub const THREAD_STACK_BYTES: usize = 32 << 20;

/// Threads of the [`pool::QueryPool`] that runs query operators: eight per core. Some operator steps are
/// long and synchronous (sorting a buffer as large as the query's memory share, building a join's hash
/// table); with more threads than cores the operating system shares the CPU between them, so one
/// tenant's heavy step never leaves another tenant's query waiting for a thread (measured by `omnisql
/// bench`'s noisy neighbour: other tenants' p99 12× their unloaded p99 with one thread per core, 3.1×
/// with four, 2.0× with eight, debug build on 2 cores, when requests and operators shared one runtime).
pub fn operator_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).saturating_mul(8).clamp(8, 256)
}

/// The SQL catalog every tenant's schemas live in.
pub const CATALOG: &str = "omnisql";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(pub String);

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who runs a query.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub tenant: TenantId,
    pub principal: String,
    /// Groups the caller's sign-in token grants, on top of those the tenant configures for the principal.
    pub groups: Vec<String>,
}

impl Caller {
    /// `principal` of `tenant`, with only the groups the tenant configures.
    pub fn new(tenant: &str, principal: &str) -> Caller {
        Caller { tenant: TenantId(tenant.into()), principal: principal.into(), groups: Vec::new() }
    }
}

/// Why a sign-in token was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("no tenant of this data plane trusts tokens of issuer `{issuer}` for audience {audiences:?}")]
    Untrusted { issuer: String, audiences: Vec<String> },
    #[error("more than one tenant trusts issuer `{0}` for this audience: name yours with the header `x-omnisql-tenant`")]
    Ambiguous(String),
    #[error(transparent)]
    Token(#[from] omnisql_oidc::OidcError),
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The connectors connections may name (`omnisql_connectors::all()`); none by default, so an engine
    /// runs exactly the connectors it is given.
    pub connectors: Vec<Arc<dyn ConnectorFactory>>,
    /// Pushdown and prefetch; both off only for the correctness gate and the naive baseline.
    pub scan: ScanOptions,
    pub http: HttpSettings,
    /// Longest a statement may run, for tenants whose configuration does not say.
    pub query_timeout: Duration,
    /// Statements one tenant runs at once, for tenants whose configuration does not say.
    pub max_concurrent_queries: u32,
    /// Upstream requests one query may make unless its session sets `omnisql.request_budget`.
    pub request_budget: Option<u64>,
    /// How large a statement may be.
    pub statement_limits: StatementLimits,
    /// Memory for queries: the process, each tenant's share, each query.
    pub memory: MemoryLimits,
    /// DataFusion partitions per query; pinned so plans do not depend on the machine.
    pub target_partitions: usize,
    /// Memory for cached API answers, shared by all tenants (each sees only its own, and holds at most an
    /// equal share among those using it); `None` turns the cache off.
    pub cache_bytes: Option<usize>,
    /// Memory for recent query results answered again ([`results`]); `None` turns them off.
    pub result_cache_bytes: Option<usize>,
    /// Enforce rate limits (the APIs' and the connections' own) with fair scheduling between tenants.
    pub rate_limits: bool,
    /// Fleet-wide windows in Redis, for replicas that share credentials.
    pub shared_limits: Option<omnisql_connector::shared_limit::SharedLimiter>,
    /// Cores shared fairly between tenants' operators ([`cpu`]); `None` leaves scheduling to the runtime
    /// alone (a baseline for the noisy-neighbour benchmark).
    pub fair_cpu_cores: Option<usize>,
    /// Verifies OIDC sign-in tokens against the issuers tenants trust (keys cached across tenants).
    pub oidc: omnisql_oidc::Verifier,
    /// OPA servers tenants may have decide their policies, as URL prefixes (e.g. `http://opa.policy:8181/`):
    /// the data plane's operator chooses which servers its pods may reach; a tenant naming another is
    /// refused every table.
    pub opa_allowed_urls: Vec<String>,
    /// Run query operators on a [`pool::QueryPool`] of this many threads, apart from the caller's
    /// runtime (the data plane: [`operator_threads`]); `None` runs them where the result is read.
    pub operator_threads: Option<usize>,
}

impl EngineOptions {
    /// The naive federated engine, as a baseline: no pushdown, no prefetch, no cache, one request at a
    /// time per connection.
    pub fn naive() -> Self {
        let mut options = EngineOptions {
            scan: ScanOptions { pushdown: false, prefetch: false, join_keys: false },
            cache_bytes: None,
            result_cache_bytes: None,
            ..Default::default()
        };
        options.http.max_concurrency = Some(1);
        options
    }

    /// Only pushdown off (the correctness gate compares exactly that).
    pub fn without_pushdown() -> Self {
        EngineOptions { scan: ScanOptions { pushdown: false, prefetch: true, join_keys: false }, ..Default::default() }
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            connectors: Vec::new(),
            scan: ScanOptions::default(),
            http: HttpSettings::default(),
            query_timeout: Duration::from_secs(120),
            max_concurrent_queries: 16,
            request_budget: Some(1000),
            statement_limits: StatementLimits::default(),
            memory: MemoryLimits::from_environment(),
            target_partitions: 4,
            cache_bytes: Some(64 << 20),
            result_cache_bytes: Some(16 << 20),
            rate_limits: true,
            shared_limits: None,
            fair_cpu_cores: Some(std::thread::available_parallelism().map_or(1, |n| n.get())),
            oidc: omnisql_oidc::Verifier::new(),
            opa_allowed_urls: Vec::new(),
            operator_threads: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "connection `{connection}` of tenant `{tenant}` uses connector `{connector}`, which this data plane does not have (it has: {available})"
    )]
    UnknownConnector { tenant: String, connection: String, connector: String, available: String },
    #[error(
        "connection `{connection}` pins connector `{connector}` version {wanted}, but this data plane runs version(s) {running}"
    )]
    VersionMismatch { connection: String, connector: String, wanted: String, running: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot set up the query runtime: {0}")]
    Runtime(#[source] DataFusionError),
}

#[derive(Debug)]
struct Tenant {
    config: config::TenantConfig,
    schemas: Vec<Arc<ConnectionSchema>>,
    /// Compiled once per policy revision, with its decisions and the plans made from them; kept while
    /// the policies and principals are unchanged.
    policies: Arc<policy::Policies>,
    policy_plans: Arc<governed::PolicyPlans>,
    /// Slots for the tenant's running statements; kept across configurations unless the limit changes.
    slots: Arc<tokio::sync::Semaphore>,
    /// Changes whenever the tenant's configuration does: kept results of older ones are never served.
    generation: u64,
}

/// Tenant configuration versions, unique in the process.
static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A key the data plane accepts: who it is, and until when.
#[derive(Debug, Clone)]
struct KeyEntry {
    caller: Caller,
    expires_at: Option<i64>,
}

/// The tenants and keys of one configuration; replaced whole when the configuration changes.
#[derive(Debug, Default)]
struct TenantSet {
    tenants: HashMap<TenantId, Tenant>,
    /// By the key's SHA-256 (hex): the data plane never needs the keys themselves.
    keys: HashMap<String, KeyEntry>,
    /// The tenants trusting each OIDC issuer, with their trust.
    issuers: HashMap<String, Vec<(TenantId, config::OidcConfig)>>,
}

/// The tenants of one data plane and their sessions.
#[derive(Debug)]
pub struct Engine {
    logs: Arc<system::QueryLogs>,
    current: std::sync::RwLock<Arc<TenantSet>>,
    options: EngineOptions,
    cache: Option<Arc<ResponseCache>>,
    results: Option<Arc<results::ResultCache>>,
    governor: Option<Arc<Governor>>,
    /// When each key (by hash) was last accepted, since the control plane was last told.
    key_uses: Mutex<HashMap<String, i64>>,
    resources: resources::Resources,
    /// `repeat`, `generate_series`, … wrapped to refuse outputs past the per-call limit.
    bounded: Vec<Arc<datafusion::logical_expr::ScalarUDF>>,
    /// Parses policy expressions with the functions queries have (the bounded ones included).
    policy_parser: Arc<datafusion::execution::SessionState>,
    cpu: Option<Arc<cpu::CpuScheduler>>,
    /// Asks tenants' OPA servers (no redirects: only allowed servers are reached).
    opa_http: reqwest::Client,
    /// Statements planned since start, for metrics and tests.
    planned: std::sync::atomic::AtomicU64,
    /// Statements run from a plan (made now or kept) since start: not answered with a kept result.
    ran: std::sync::atomic::AtomicU64,
    /// Physical plans of statements run before, run again instead of planning anew.
    plans: plans::PlanCache,
    /// Postgres clients' `pg_catalog` by caller and configuration ([`Engine::pg_catalog`]).
    pg_catalogs: Mutex<HashMap<(Caller, u64), Arc<dyn SchemaProvider>>>,
    /// Where query operators run, when not on the runtime that reads the result.
    pool: Option<pool::QueryPool>,
}

/// A query ready to run: its plan (or a kept result), the context that counts its upstream requests,
/// and its limits.
#[derive(Debug)]
pub struct PreparedQuery {
    run: Run,
    pub context: Arc<QueryContext>,
    /// When the statement must be done, and the timeout that set it (for the error message).
    pub deadline: Instant,
    pub timeout: Duration,
    slots: Arc<tokio::sync::Semaphore>,
    tenant: TenantId,
    /// Where the complete result is kept, for a query whose result may be answered again.
    keep: Option<results::Keep>,
}

#[derive(Debug)]
enum Run {
    /// Planned now; kept under the key, if any, once its physical plan is made.
    Plan(DataFrame, Option<plans::PlanKey>),
    /// A plan kept from an earlier run ([`plans`]), reset, and the context it runs in.
    Reused { plan: Arc<dyn ExecutionPlan>, task: Arc<TaskContext>, kept: Arc<plans::KeptPlan> },
    /// A kept result; `refresh`: it is popular and aging, to be fetched again in the background.
    Kept { result: Arc<results::CachedResult>, refresh: Option<Refresh> },
}

/// The tables `plan` reads, as `schema.table`.
fn tables_of(plan: &LogicalPlan) -> Vec<String> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    let mut tables = std::collections::BTreeSet::new();
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = &scan.table_name;
            tables.insert(match name.schema() {
                Some(schema) => format!("{schema}.{}", name.table()),
                None => name.table().to_string(),
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables.into_iter().collect()
}

/// A kept result to fetch again: who asked, what, with which parameters.
#[derive(Debug)]
pub struct Refresh {
    key: results::ResultKey,
    params: Option<ParamValues>,
}

impl PreparedQuery {
    /// The result's schema.
    pub fn schema(&self) -> datafusion::arrow::datatypes::SchemaRef {
        match &self.run {
            Run::Plan(df, _) => Arc::new(df.schema().as_arrow().clone()),
            Run::Reused { kept, .. } => kept.schema.clone(),
            Run::Kept { result, .. } => result.schema.clone(),
        }
    }

    /// Whether a kept result answers this query (no plan runs, nothing is asked upstream).
    pub fn from_kept_result(&self) -> bool {
        matches!(self.run, Run::Kept { .. })
    }

    /// The kept result answering this query is popular and past half its allowed age: hand this to
    /// [`Engine::refresh_result`] in the background.
    pub fn take_refresh(&mut self) -> Option<Refresh> {
        match &mut self.run {
            Run::Kept { refresh, .. } => refresh.take(),
            Run::Plan(..) | Run::Reused { .. } => None,
        }
    }

    /// The tables the query reads, as `connection.table`.
    pub fn tables(&self) -> Vec<String> {
        match &self.run {
            Run::Plan(df, _) => tables_of(df.logical_plan()),
            Run::Reused { kept, .. } => kept.tables.clone(),
            Run::Kept { result, .. } => result.tables.clone(),
        }
    }
}

impl Engine {
    pub fn new(config: &Config, options: EngineOptions) -> Result<Engine, EngineError> {
        let cache = options.cache_bytes.map(ResponseCache::new);
        let governor = options.rate_limits.then(|| Arc::new(Governor::with_shared(options.shared_limits.clone())));
        let resources = resources::Resources::new(options.memory).map_err(EngineError::Runtime)?;
        let bounded = bounded::functions(options.memory.max_function_output());
        let mut parser = datafusion::execution::SessionStateBuilder::new().with_default_features().build();
        for f in &bounded {
            datafusion::execution::FunctionRegistry::register_udf(&mut parser, f.clone()).map_err(EngineError::Runtime)?;
        }
        let cpu = options.fair_cpu_cores.map(cpu::CpuScheduler::new);
        let pool = match options.operator_threads {
            Some(threads) => {
                Some(pool::QueryPool::new(threads).map_err(|e| EngineError::Runtime(DataFusionError::External(Box::new(e))))?)
            }
            None => None,
        };
        let engine = Engine {
            logs: Arc::default(),
            current: Default::default(),
            results: options.result_cache_bytes.map(results::ResultCache::new),
            options,
            cache,
            governor,
            key_uses: Default::default(),
            resources,
            bounded,
            policy_parser: Arc::new(parser),
            cpu,
            opa_http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            planned: Default::default(),
            pg_catalogs: Default::default(),
            plans: Default::default(),
            ran: Default::default(),
            pool,
        };
        engine.apply(config)?;
        Ok(engine)
    }

    /// The connectors this engine runs.
    pub fn connectors(&self) -> &[Arc<dyn ConnectorFactory>] {
        &self.options.connectors
    }

    /// Replaces the configuration (a new one from the control plane). Connections whose configuration
    /// did not change keep their connector (logins, discovered tables); queries already running finish
    /// with the configuration they started with. An invalid configuration changes nothing.
    pub fn apply(&self, config: &Config) -> Result<(), EngineError> {
        config.validate()?;
        let factories = &self.options.connectors;
        let previous = self.current();
        let mut set = TenantSet::default();
        for t in &config.tenants {
            let tenant = TenantId(t.id.clone());
            for k in &t.api_keys {
                if let Some(hash) = k.hash() {
                    let caller = Caller { tenant: tenant.clone(), principal: k.principal.clone(), groups: Vec::new() };
                    set.keys.insert(hash, KeyEntry { caller, expires_at: k.expires_at });
                }
            }
            if let Some(trust) = &t.oidc {
                set.issuers.entry(trust.issuer.clone()).or_default().push((tenant.clone(), trust.clone()));
            }
            let slots = match previous.tenants.get(&tenant) {
                Some(old) if old.config.max_concurrent_queries == t.max_concurrent_queries => old.slots.clone(),
                _ => Arc::new(tokio::sync::Semaphore::new(
                    t.max_concurrent_queries.unwrap_or(self.options.max_concurrent_queries).max(1) as usize,
                )),
            };
            let old = previous.tenants.get(&tenant).filter(|old| old.config.weight == t.weight);
            let mut schemas = Vec::new();
            for c in &t.connections {
                if let Some(kept) = old.and_then(|o| o.schemas.iter().find(|s| s.config() == c)) {
                    schemas.push(kept.clone());
                    continue;
                }
                schemas.push(Arc::new(self.connection_schema(factories, t, c)?));
            }
            let (policies, policy_plans) = match previous.tenants.get(&tenant) {
                Some(old)
                    if old.config.policies == t.policies && old.config.principals == t.principals && old.config.opa == t.opa =>
                {
                    (old.policies.clone(), old.policy_plans.clone())
                }
                _ => (Arc::new(self.policies_of(t)), Arc::default()),
            };
            let generation = match previous.tenants.get(&tenant) {
                Some(old) if old.config == *t => old.generation,
                _ => GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            };
            set.tenants.insert(tenant, Tenant { config: t.clone(), schemas, slots, policies, policy_plans, generation });
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// The tenant's policies: its OPA server's if it names one this data plane may ask, else its Rego
    /// modules compiled.
    fn policies_of(&self, t: &config::TenantConfig) -> policy::Policies {
        let Some(opa) = &t.opa else { return policy::Policies::compile(&t.policies) };
        let allowed = self.options.opa_allowed_urls.iter().any(|prefix| opa.url.starts_with(prefix.as_str()));
        if allowed {
            policy::Policies::external(opa, self.opa_http.clone())
        } else {
            let message = format!(
                "this data plane may not ask OPA server `{}` (its operator allows: {}); every table is refused until a tenant admin names an allowed server",
                opa.url,
                if self.options.opa_allowed_urls.is_empty() { "none".into() } else { self.options.opa_allowed_urls.join(", ") }
            );
            policy::Policies::refused(opa.revision(), message)
        }
    }

    fn connection_schema(
        &self,
        factories: &[Arc<dyn ConnectorFactory>],
        t: &config::TenantConfig,
        c: &config::ConnectionConfig,
    ) -> Result<ConnectionSchema, EngineError> {
        // Several versions of a connector may run side by side: the pinned one, else the first listed
        // (the registry lists each connector's default version first).
        let versions: Vec<&Arc<dyn ConnectorFactory>> = factories.iter().filter(|f| f.name() == c.connector).collect();
        if versions.is_empty() {
            return Err(EngineError::UnknownConnector {
                tenant: t.id.clone(),
                connection: c.name.clone(),
                connector: c.connector.clone(),
                available: if factories.is_empty() {
                    "none: this engine was given no connectors (EngineOptions::connectors)".into()
                } else {
                    factories.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
                },
            });
        }
        let factory = match &c.version {
            None => versions[0].clone(),
            Some(v) => {
                versions.iter().find(|f| f.version() == v).map(|f| (*f).clone()).ok_or_else(|| EngineError::VersionMismatch {
                    connection: c.name.clone(),
                    connector: c.connector.clone(),
                    wanted: v.clone(),
                    running: versions.iter().map(|f| f.version()).collect::<Vec<_>>().join(", "),
                })?
            }
        };
        let context = ConnectorContext {
            tenant: t.id.clone(),
            connection: c.name.clone(),
            credential: c.credential_fingerprint(),
            http: self.options.http.clone(),
            scan: self.options.scan,
            cache: self.cache.clone(),
            cache_ttl: Duration::from_secs(c.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECS)),
            governor: self.governor.clone(),
            weight: t.weight.unwrap_or(1.0),
            requests_per_second: c.requests_per_second,
            quota_share: c.quota_share,
        };
        Ok(ConnectionSchema::new(c.clone(), factory, context))
    }

    fn current(&self) -> Arc<TenantSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The caller a bearer token belongs to, if the key is known and not expired.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        // Keys are looked up by their full hash, so no prefix or partial key matches.
        let hash = config::sha256_hex(token);
        let entry = self.current().keys.get(&hash).cloned()?;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        match entry.expires_at {
            Some(at) if at * 1000 <= now_ms => None,
            _ => {
                self.key_uses.lock().unwrap_or_else(|e| e.into_inner()).insert(hash, now_ms);
                Some(entry.caller)
            }
        }
    }

    /// The caller an OIDC token signs in: verified with the trust of the tenant whose issuer and audience
    /// it names (`tenant` chooses when several tenants trust the same ones).
    pub async fn sign_in(&self, token: &str, tenant: Option<&str>) -> Result<Caller, SignInError> {
        let (issuer, audiences) = omnisql_oidc::unverified_issuer(token)?;
        let candidates: Vec<(TenantId, config::OidcConfig)> = self
            .current()
            .issuers
            .get(&issuer)
            .into_iter()
            .flatten()
            .filter(|(id, trust)| audiences.contains(&trust.audience) && tenant.is_none_or(|t| t == id.0))
            .cloned()
            .collect();
        let (id, trust) = match candidates.as_slice() {
            [] => return Err(SignInError::Untrusted { issuer, audiences }),
            [one] => one.clone(),
            _ => return Err(SignInError::Ambiguous(issuer)),
        };
        let signed_in = self.options.oidc.sign_in(token, &trust).await?;
        Ok(Caller { tenant: id, principal: signed_in.principal, groups: signed_in.groups })
    }

    /// The keys accepted since the last call, by hash, with when each was last accepted (Unix ms).
    pub fn take_key_uses(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.key_uses.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect()
    }

    /// Every tenant this data plane serves.
    pub fn tenants(&self) -> Vec<TenantId> {
        self.current().tenants.keys().cloned().collect()
    }

    /// The tenant's connection schemas.
    pub fn schemas(&self, tenant: &TenantId) -> Vec<Arc<ConnectionSchema>> {
        self.current().tenants.get(tenant).map(|t| t.schemas.clone()).unwrap_or_default()
    }

    /// The caller's tenant's connection schemas as the caller may see them under the tenant's policies.
    pub fn schemas_for(&self, caller: &Caller) -> Vec<Arc<governed::GovernedSchema>> {
        let access = self.access_for(caller);
        self.schemas(&caller.tenant).into_iter().map(|s| Arc::new(governed::GovernedSchema::new(s, access.clone()))).collect()
    }

    /// Who the caller is to the tenant's policies, and those policies.
    fn access_for(&self, caller: &Caller) -> Option<governed::Access> {
        let current = self.current();
        let tenant = current.tenants.get(&caller.tenant)?;
        let mut principal = tenant
            .config
            .principals
            .iter()
            .find(|p| p.id == caller.principal)
            .cloned()
            .unwrap_or_else(|| config::PrincipalConfig { id: caller.principal.clone(), ..Default::default() });
        if !caller.groups.is_empty() {
            principal.groups.extend(caller.groups.iter().cloned());
            principal.groups.sort();
            principal.groups.dedup();
        }
        Some(governed::Access {
            identity: policy::Identity { tenant: caller.tenant.0.clone(), principal },
            policies: tenant.policies.clone(),
            plans: tenant.policy_plans.clone(),
            parser: self.policy_parser.clone(),
        })
    }

    /// Requests made to the tenant's OPA server so far (0 when its policies run in-process).
    pub fn opa_requests(&self, tenant: &TenantId) -> u64 {
        self.current().tenants.get(tenant).map(|t| t.policies.external_requests()).unwrap_or(0)
    }

    /// For a tenant whose OPA server decides: fetches, in one request, the decisions on every table
    /// `statement` reads (every table of the tenant when it reads `information_schema`).
    async fn fetch_decisions(
        &self,
        caller: &Caller,
        references: &[datafusion::common::TableReference],
        everything: bool,
    ) -> Result<(), DataFusionError> {
        // Every statement passes here: tenants whose policies run in-process leave at once.
        if !self.current().tenants.get(&caller.tenant).is_some_and(|t| t.policies.is_external()) {
            return Ok(());
        }
        let Some(access) = self.access_for(caller) else { return Ok(()) };
        let schemas = self.schemas(&caller.tenant);
        let mut wanted: Vec<(Arc<ConnectionSchema>, String)> = Vec::new();
        if everything {
            for s in &schemas {
                for t in s.tables().await.unwrap_or_default() {
                    wanted.push((s.clone(), t));
                }
            }
        } else {
            for r in references {
                if r.catalog().is_some_and(|c| c != CATALOG) {
                    continue;
                }
                if let Some(s) = schemas.iter().find(|s| Some(s.name()) == r.schema()) {
                    wanted.push((s.clone(), r.table().to_string()));
                }
            }
        }
        let mut tables = Vec::new();
        for (s, name) in wanted {
            if let Ok(Some(t)) = SchemaProvider::table(s.as_ref(), &name).await {
                tables.push((s.name().to_string(), name, governed::columns_of(&t.schema())));
            }
        }
        access.policies.prefetch(&access.identity, &tables).await;
        Ok(())
    }

    fn policies_active(&self, tenant: &TenantId) -> bool {
        self.current().tenants.get(tenant).is_some_and(|t| t.policies.active())
    }

    /// The revision of the tenant's policies (`name@version,…`; empty without policies), for audit events.
    pub fn policy_revision(&self, tenant: &TenantId) -> String {
        self.current().tenants.get(tenant).map(|t| t.policies.revision().to_string()).unwrap_or_default()
    }

    /// A DataFusion session that sees only `tenant`'s connections, draws memory from the tenant's
    /// share, and has no object stores (no file or URL can be read or written through it).
    /// With `postgres`, it also has `pg_catalog` and the functions Postgres clients call.
    pub fn session(&self, caller: &Caller, query: Arc<QueryContext>, postgres: bool) -> Result<SessionContext, DataFusionError> {
        let tenant = &caller.tenant;
        let mut state = datafusion::execution::SessionStateBuilder::new()
            .with_config(self.session_config(caller, query))
            .with_runtime_env(self.resources.runtime_for(&tenant.0)?)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(eager::EagerProbe))
            .with_physical_optimizer_rule(Arc::new(cpu::FairShare))
            .build();
        for f in &self.bounded {
            datafusion::execution::FunctionRegistry::register_udf(&mut state, f.clone())?;
        }
        let ctx = SessionContext::new_with_state(state);
        let catalog = MemoryCatalogProvider::new();
        for s in self.schemas_for(caller) {
            let name = s.name().to_string();
            let schema: Arc<dyn SchemaProvider> = s;
            // Names were validated unique; a repeated one cannot occur.
            let _ = catalog.register_schema(&name, schema);
        }
        let schemas = self.schemas(tenant);
        let _ = catalog.register_schema("public", Arc::new(datafusion::catalog::MemorySchemaProvider::new()));
        let system = system::SystemSchema {
            tenant: tenant.0.clone(),
            connections: schemas.iter().map(|s| (s.name().to_string(), s.credential())).collect(),
            cache: self.cache.clone(),
            results: self.results.clone(),
            governor: self.governor.clone(),
            logs: self.logs.clone(),
            only_principal: self.policies_active(tenant).then(|| caller.principal.clone()),
        };
        let _ = catalog.register_schema("omnisql", Arc::new(system));
        let pg_catalog = if postgres { Some(self.pg_catalog(caller, &catalog)?) } else { None };
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        if let Some(pg_catalog) = pg_catalog {
            postgres::install(&ctx, CATALOG, pg_catalog)?;
        }
        Ok(ctx)
    }

    /// A session's settings: its query's context and the tenant's CPU share travel in it to the operators.
    fn session_config(&self, caller: &Caller, query: Arc<QueryContext>) -> SessionConfig {
        let mut config = SessionConfig::new()
            .with_target_partitions(self.options.target_partitions)
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_extension(query);
        // API scans take a hash join's keys (sent to the API) but not a TopK's or an aggregate's dynamic
        // filter: those change while the scan runs, and an API request cannot follow them.
        config.options_mut().optimizer.enable_topk_dynamic_filter_pushdown = false;
        config.options_mut().optimizer.enable_aggregate_dynamic_filter_pushdown = false;
        if let Some(cpu) = &self.cpu {
            let weight = self.current().tenants.get(&caller.tenant).and_then(|t| t.config.weight).unwrap_or(1.0);
            config = config.with_extension(Arc::new(cpu.share(&caller.tenant.0, weight)));
        }
        config
    }

    /// What a kept plan runs in: the session's settings and the tenant's memory, without the catalog a
    /// plan no longer needs.
    fn task_context(&self, caller: &Caller, query: Arc<QueryContext>) -> Result<Arc<TaskContext>, DataFusionError> {
        let runtime = self.resources.runtime_for(&caller.tenant.0)?;
        let config = self.session_config(caller, query);
        let id = uuid::Uuid::new_v4().to_string();
        Ok(Arc::new(TaskContext::new(None, id, config, HashMap::new(), HashMap::new(), HashMap::new(), HashMap::new(), runtime)))
    }

    /// The caller's `pg_catalog`, kept per configuration so that object ids stay the same from one
    /// statement to the next.
    fn pg_catalog(&self, caller: &Caller, catalog: &MemoryCatalogProvider) -> Result<Arc<dyn SchemaProvider>, DataFusionError> {
        let generation = self.current().tenants.get(&caller.tenant).map_or(0, |t| t.generation);
        let key = (caller.clone(), generation);
        if let Some(kept) = self.pg_catalogs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(kept.clone());
        }
        let schemas = catalog.schema_names().into_iter().filter_map(|n| catalog.schema(&n).map(|s| (n, s))).collect();
        let made = postgres::catalog_schema(CATALOG, schemas)?;
        let mut kept = self.pg_catalogs.lock().unwrap_or_else(|e| e.into_inner());
        // Callers and configurations come and go; a rare clear bounds the map.
        if kept.len() >= 4096 {
            kept.clear();
        }
        Ok(kept.entry(key).or_insert(made).clone())
    }

    /// The longest `caller`'s statement may run: the session's `omnisql.statement_timeout`, never more
    /// than the tenant's limit (or the data plane's default).
    fn statement_timeout(&self, caller: &Caller, settings: &QuerySettings) -> Duration {
        let limit = self
            .current()
            .tenants
            .get(&caller.tenant)
            .and_then(|t| t.config.statement_timeout_seconds)
            .map(Duration::from_secs)
            .unwrap_or(self.options.query_timeout);
        settings.statement_timeout.map_or(limit, |asked| asked.min(limit))
    }

    /// Makes every connection's connector ready (so their tables are listed), reporting the ones that
    /// could not be created.
    pub async fn warm_up(&self, tenant: &TenantId) -> Vec<(String, omnisql_connector::ConnectorError)> {
        let mut failed = Vec::new();
        for s in self.schemas(tenant) {
            if let Err(e) = s.connector().await {
                failed.push((s.name().to_string(), e));
            }
        }
        failed
    }

    /// [`Engine::warm_up`], and every table of every connection resolved too (a Salesforce object is
    /// described on first use), all connections at once: what a data plane does at start, so that no
    /// tenant's first queries pay for logins and discovery.
    pub async fn warm_tables(&self, tenant: &TenantId) -> Vec<(String, omnisql_connector::ConnectorError)> {
        let schemas = self.schemas(tenant);
        let warmed = schemas.iter().map(|s| async move {
            let connector = s.connector().await.map_err(|e| vec![(s.name().to_string(), e)])?;
            let tables = connector.table_names();
            let resolved = futures::future::join_all(tables.iter().map(|t| connector.table(t))).await;
            let failed: Vec<_> = resolved.into_iter().filter_map(Result::err).map(|e| (s.name().to_string(), e)).collect();
            if failed.is_empty() { Ok(()) } else { Err(failed) }
        });
        futures::future::join_all(warmed).await.into_iter().filter_map(Result::err).flatten().collect()
    }

    /// Plans `sql` for `caller`, binding `params` to `$1`, `$2`, … placeholders. Leading
    /// `SET omnisql.…` statements update `settings` (the caller's session) first; `Ok(None)` when the text
    /// held nothing else.
    pub async fn plan(
        &self,
        caller: &Caller,
        sql: &str,
        params: Option<ParamValues>,
        settings: &mut QuerySettings,
    ) -> Result<Option<PreparedQuery>, DataFusionError> {
        let (sets, rest) = settings::split_sets(sql);
        for (name, value) in sets {
            settings.set(&name, &value).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        }
        if rest.trim().trim_end_matches(';').trim().is_empty() {
            return Ok(None);
        }
        let slots = self
            .current()
            .tenants
            .get(&caller.tenant)
            .map(|t| t.slots.clone())
            .unwrap_or_else(|| Arc::new(tokio::sync::Semaphore::new(1)));
        let timeout = self.statement_timeout(caller, settings);
        let deadline = Instant::now() + timeout;
        let key = self.result_key(caller, rest, params.as_ref());
        if let (Some(key), Some(results)) = (&key, &self.results) {
            let kept = |params: Option<ParamValues>| {
                let (result, refresh) = self.kept(key, settings)?;
                let mut context = QueryContext::with_deadline(Some(deadline));
                context.principal = caller.principal.clone();
                for (connection, fetched) in &result.sources {
                    context.observe_fetched(connection, *fetched);
                }
                let refresh = refresh.then(|| Refresh { key: key.clone(), params });
                let run = Run::Kept { result, refresh };
                let (tenant, slots) = (caller.tenant.clone(), slots.clone());
                Some(PreparedQuery { run, context: Arc::new(context), deadline, timeout, slots, tenant, keep: None })
            };
            if let Some(q) = kept(params.clone()) {
                return Ok(Some(q));
            }
            // The same statement is running: its result will do, unless this one wants fresh data (the
            // running one may have read before this one began).
            if let Some(mut running) = results.running(key)
                && settings.max_staleness != Some(Duration::ZERO)
            {
                let until = deadline.min(Instant::now() + results::FOLLOW_WAIT);
                let _ = tokio::time::timeout_at(until.into(), running.changed()).await;
                if let Some(q) = kept(params.clone()) {
                    return Ok(Some(q));
                }
            }
        }
        let mut context = QueryContext::with_deadline(Some(deadline));
        context.max_staleness = settings.max_staleness;
        context.request_budget = settings.request_budget.or(self.options.request_budget);
        context.principal = caller.principal.clone();
        let context = Arc::new(context);
        let plan_key = self.plan_key(caller, rest, params.as_ref(), settings.postgres);
        if let Some((plan, kept)) = plan_key.as_ref().and_then(|k| self.plans.get(k)) {
            let task = self.task_context(caller, context.clone())?;
            let keep = key.filter(|_| kept.result_cacheable).map(|key| results::Keep { key, leader: None });
            let run = Run::Reused { plan, task, kept };
            return Ok(Some(PreparedQuery { run, context, deadline, timeout, slots, tenant: caller.tenant.clone(), keep }));
        }
        self.planned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let postgres = settings.postgres;
        let ctx = self.session(caller, context.clone(), postgres)?;
        let limits = self.options.statement_limits;
        let dataframe = contain::catch(deadline, timeout, async move {
            let plan = self.admitted_plan(caller, &ctx, rest, &limits, postgres).await?;
            let dataframe = ctx.execute_logical_plan(plan).await?;
            match params {
                Some(p) => dataframe.with_param_values(p),
                None => Ok(dataframe),
            }
        })
        .await?;
        let keep = key
            .filter(|_| results::cacheable(dataframe.logical_plan(), &self.connection_names(&caller.tenant)))
            .map(|key| results::Keep { key, leader: None });
        let run = Run::Plan(dataframe, plan_key);
        Ok(Some(PreparedQuery { run, context, deadline, timeout, slots, tenant: caller.tenant.clone(), keep }))
    }

    /// Under what `caller`'s plan of `sql` is kept ([`plans`]); `None` where the tenant's OPA server
    /// decides its policies (its answers may change without the configuration changing).
    fn plan_key(&self, caller: &Caller, sql: &str, params: Option<&ParamValues>, postgres: bool) -> Option<plans::PlanKey> {
        let current = self.current();
        let tenant = current.tenants.get(&caller.tenant)?;
        if tenant.policies.is_external() {
            return None;
        }
        Some(plans::PlanKey {
            caller: caller.clone(),
            generation: tenant.generation,
            sql: sql.trim().trim_end_matches(';').trim().to_string(),
            params: params.map(|p| format!("{p:?}")).unwrap_or_default(),
            postgres,
        })
    }

    fn connection_names(&self, tenant: &TenantId) -> Vec<String> {
        self.schemas(tenant).iter().map(|s| s.name().to_string()).collect()
    }

    /// Under what a kept result of `caller`'s `sql` would be found; `None` where results are not kept
    /// (no cache, or the tenant's OPA server decides its policies).
    fn result_key(&self, caller: &Caller, sql: &str, params: Option<&ParamValues>) -> Option<results::ResultKey> {
        self.results.as_ref()?;
        self.cache.as_ref()?;
        let current = self.current();
        let tenant = current.tenants.get(&caller.tenant)?;
        if tenant.policies.is_external() {
            return None;
        }
        Some(results::ResultKey {
            caller: caller.clone(),
            generation: tenant.generation,
            sql: sql.trim().trim_end_matches(';').trim().to_string(),
            params: params.map(|p| format!("{p:?}")).unwrap_or_default(),
        })
    }

    /// The kept result under `key` if every source it read is as fresh as `settings` accept (each
    /// connection's TTL unless the session sets `omnisql.max_staleness`), and whether to refresh it.
    fn kept(&self, key: &results::ResultKey, settings: &QuerySettings) -> Option<(Arc<results::CachedResult>, bool)> {
        if settings.max_staleness == Some(Duration::ZERO) {
            return None;
        }
        let results = self.results.as_ref()?;
        let result = results.get(key)?;
        let current = self.current();
        let tenant = current.tenants.get(&key.caller.tenant)?;
        let ttl = |connection: &str| {
            tenant
                .config
                .connections
                .iter()
                .find(|c| c.name == connection)
                .map_or(Duration::ZERO, |c| Duration::from_secs(c.cache_ttl_seconds.unwrap_or(DEFAULT_CACHE_TTL_SECS)))
        };
        // A connection whose answers are not cached (TTL 0) never has a kept result either.
        let refresh = result.check(|connection| {
            if ttl(connection).is_zero() { Duration::ZERO } else { settings.max_staleness.unwrap_or(ttl(connection)) }
        })?;
        results.served(&key.caller.tenant.0);
        Some((result, refresh))
    }

    /// The columns of `caller`'s `sql` when a result of it run without parameters is kept (however old):
    /// under the same configuration they cannot have changed, so a prepared statement needs no plan.
    /// `None` when nothing is kept or a leading `SET` is invalid (planning reports it).
    pub fn kept_schema(&self, caller: &Caller, sql: &str) -> Option<datafusion::arrow::datatypes::SchemaRef> {
        let (sets, rest) = settings::split_sets(sql);
        let mut settings = QuerySettings::default();
        for (name, value) in sets {
            settings.set(&name, &value).ok()?;
        }
        let key = self.result_key(caller, rest, None)?;
        self.results.as_ref()?.get(&key).map(|r| r.schema.clone())
    }

    /// Runs a kept result's query again on fresh data and keeps the new result; a failure leaves the old
    /// one to expire (and lets a later reader try again).
    pub async fn refresh_result(&self, refresh: Refresh) {
        let Refresh { key, params } = refresh;
        let mut settings = QuerySettings { max_staleness: Some(Duration::ZERO), ..Default::default() };
        let run = async {
            let Some(q) = self.plan(&key.caller, &key.sql, params, &mut settings).await? else { return Ok(()) };
            datafusion::physical_plan::common::collect(self.execute(q).await?).await.map(|_| ())
        };
        if let Err(e) = run.await {
            tracing::warn!(tenant = %key.caller.tenant, error = %e, "refreshing a kept query result failed");
            if let Some(r) = self.results.as_ref().and_then(|r| r.get(&key)) {
                r.refresh_failed();
            }
        }
    }

    /// `sql` as a logical plan, if [`guard`] admits it: one read-only query within the size limits.
    /// A statement that reads `information_schema` (or `SHOW …`) first makes the tenant's connectors
    /// ready, since a connection lists its tables only once its connector exists.
    async fn admitted_plan(
        &self,
        caller: &Caller,
        ctx: &SessionContext,
        sql: &str,
        limits: &StatementLimits,
        postgres: bool,
    ) -> Result<LogicalPlan, DataFusionError> {
        let tenant = &caller.tenant;
        let statement = if postgres { guard::admit_postgres(sql, limits)? } else { guard::admit(sql, limits)? };
        let state = ctx.state();
        let references = state.resolve_table_references(&statement)?;
        let lists_tables = references.iter().any(|r| {
            r.schema() == Some(datafusion::catalog::information_schema::INFORMATION_SCHEMA) || r.schema() == Some("pg_catalog")
        });
        if lists_tables {
            for (connection, error) in self.warm_up(tenant).await {
                tracing::warn!(%tenant, %connection, %error, "connection unavailable; it lists no tables");
            }
        }
        self.fetch_decisions(caller, &references, lists_tables).await?;
        let plan = state.statement_to_plan(statement).await?;
        guard::verify_plan(&plan)?;
        Ok(plan)
    }

    /// Remembers a finished query for `omnisql.api_requests`.
    pub fn record_query(&self, tenant: &TenantId, log: system::QueryLog) {
        self.logs.push(&tenant.0, log);
    }

    /// What the response cache did for `tenant`.
    pub fn cache_stats(&self, tenant: &TenantId) -> CacheStats {
        self.cache.as_ref().map(|c| c.stats(&tenant.0)).unwrap_or_default()
    }

    /// Bytes held by the response cache and by kept results, for the metrics.
    pub fn cache_bytes(&self) -> (usize, usize) {
        (self.cache.as_ref().map_or(0, |c| c.bytes()), self.results.as_ref().map_or(0, |r| r.bytes()))
    }

    /// Queries of `tenant` answered with a kept result.
    pub fn results_served(&self, tenant: &TenantId) -> u64 {
        self.results.as_ref().map_or(0, |r| r.hits(&tenant.0))
    }

    /// Plans without binding, for prepared statements: the logical plan with its placeholders.
    /// Leading `SET omnisql.…` statements are checked here (on a copy of `session`) and applied when the
    /// statement runs.
    pub async fn logical_plan(
        &self,
        caller: &Caller,
        sql: &str,
        session: &QuerySettings,
    ) -> Result<LogicalPlan, DataFusionError> {
        let (sets, rest) = settings::split_sets(sql);
        let mut settings = session.clone();
        for (name, value) in sets {
            settings.set(&name, &value).map_err(|e| DataFusionError::Plan(e.to_string()))?;
        }
        if rest.trim().trim_end_matches(';').trim().is_empty() {
            let empty = Arc::new(datafusion::common::DFSchema::empty());
            return Ok(LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: empty,
            }));
        }
        self.planned.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut context = QueryContext::default();
        context.principal = caller.principal.clone();
        let ctx = self.session(caller, Arc::new(context), settings.postgres)?;
        let timeout = self.statement_timeout(caller, &settings);
        let limits = self.options.statement_limits;
        let plan = self.admitted_plan(caller, &ctx, rest, &limits, settings.postgres);
        contain::catch(Instant::now() + timeout, timeout, plan).await
    }

    /// Runs a planned query as a stream of batches, once one of its tenant's slots is free. The stream
    /// holds the slot until it ends or is dropped, and ends with an error at the statement's deadline.
    pub async fn execute(&self, query: PreparedQuery) -> Result<SendableRecordBatchStream, DataFusionError> {
        let tables = if query.keep.is_some() { query.tables() } else { Vec::new() };
        let PreparedQuery { run, context, deadline, timeout, slots, tenant, keep } = query;
        let planned = match run {
            Run::Plan(df, reuse) => Ok((df, reuse)),
            Run::Reused { plan, task, .. } => Err((plan, task)),
            Run::Kept { result, .. } => {
                let batches = result.batches.clone().into_iter().map(Ok);
                let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    result.schema.clone(),
                    futures::stream::iter(batches),
                );
                return Ok(Box::pin(stream));
            }
        };
        let schema = match &planned {
            Ok((df, _)) => Arc::new(df.schema().as_arrow().clone()),
            Err((plan, _)) => plan.schema(),
        };
        let started = std::time::SystemTime::now();
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                tracing::info!(%tenant, "query queued: all of the tenant's query slots are in use");
                let queued = Instant::now();
                let slot = tokio::time::timeout_at(deadline.into(), slots.acquire_owned()).await;
                context.set_queued(queued.elapsed());
                match slot {
                    Ok(Ok(slot)) => slot,
                    Ok(Err(_)) | Err(_) => return Err(contain::Stopped::Queued(timeout).into()),
                }
            }
        };
        self.ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let run = async {
            let (plan, task) = match planned {
                Ok((df, reuse)) => {
                    let task = Arc::new(df.task_ctx());
                    let logical = df.logical_plan().clone();
                    let plan = df.create_physical_plan().await?;
                    if let Some(key) = reuse {
                        let kept = plans::KeptPlan {
                            plan: plan.clone(),
                            schema: schema.clone(),
                            tables: tables_of(&logical),
                            result_cacheable: keep.is_some(),
                        };
                        self.plans.insert(key, &logical, kept);
                    }
                    (plan, task)
                }
                Err(reused) => reused,
            };
            // Operators that start tasks as they are executed start them on the pool.
            let _on_pool = self.pool.as_ref().and_then(pool::QueryPool::enter);
            datafusion::physical_plan::execute_stream(plan, task)
        };
        let stream = contain::catch(deadline, timeout, run).await?;
        let stream: SendableRecordBatchStream = Box::pin(contain::Contained::new(stream, deadline, timeout, slot));
        let stream = match &self.pool {
            Some(pool) => pool.drive(stream),
            None => stream,
        };
        Ok(match (keep, &self.results) {
            (Some(mut keep), Some(results)) => {
                // Identical statements planned from now on wait for this run (unless one already runs).
                keep.leader = results.lead(&keep.key);
                let pending = results::Pending { keep, schema, tables, context, started };
                Box::pin(results::Keeper::new(stream, results.clone(), pending))
            }
            _ => stream,
        })
    }

    /// Statements planned since start, preparing one included (SET-only statements not counted).
    pub fn statements_planned(&self) -> u64 {
        self.planned.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Statements run since start, from a new plan or a kept one ([`plans`]); a kept result runs nothing.
    pub fn statements_run(&self) -> u64 {
        self.ran.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of query memory held now, across all tenants.
    pub fn memory_reserved(&self) -> usize {
        self.resources.reserved()
    }

    /// Every tenant connection's rate-limit buckets as they stand now: (tenant, connection, bucket). A
    /// bucket shared by connections with the same credentials is listed under each.
    pub fn rate_limits(&self) -> Vec<(TenantId, String, omnisql_connector::governor::BucketState)> {
        let Some(governor) = &self.governor else { return Vec::new() };
        let buckets = governor.snapshot();
        let current = self.current();
        let mut out = Vec::new();
        for (tenant, t) in &current.tenants {
            for schema in &t.schemas {
                for b in buckets.iter().filter(|b| b.credential == schema.credential()) {
                    out.push((tenant.clone(), schema.name().to_string(), b.clone()));
                }
            }
        }
        out
    }

    /// Reads one row with `connection`'s credentials, fresh from its API, from the first of its tables (by
    /// name) that needs no filter: the check behind an admin's "test connection". Policies do not apply,
    /// since no row leaves the data plane — only how many tables there are, which was read, and the count.
    pub async fn test_connection(
        &self,
        tenant: &TenantId,
        connection: &str,
        context: Arc<QueryContext>,
    ) -> Result<ConnectionCheck, DataFusionError> {
        let schema = self.schemas(tenant).into_iter().find(|s| s.name() == connection).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "this data plane has no connection `{connection}` for the tenant (its configuration may still be on the way; retry in a few seconds)"
            ))
        })?;
        let deadline = context.deadline.unwrap_or_else(|| Instant::now() + self.options.query_timeout);
        let timeout = deadline.saturating_duration_since(Instant::now());
        let caller = Caller::new(&tenant.0, "connection-test");
        let ctx = self.session(&caller, context, false)?;
        let check = async {
            let mut tables = schema.tables().await?;
            tables.sort();
            for table in &tables {
                let Some(provider) = schema.table(table).await? else { continue };
                // Up to the first row: dropping the stream then stops any further page.
                let read = async {
                    let scan = provider.scan(&ctx.state(), None, &[], Some(1)).await?;
                    let one = Arc::new(datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec::new(scan));
                    let mut stream = datafusion::physical_plan::execute_stream(one, ctx.task_ctx())?;
                    while let Some(batch) = futures::StreamExt::next(&mut stream).await {
                        if batch?.num_rows() > 0 {
                            return Ok::<_, DataFusionError>(1);
                        }
                    }
                    Ok(0)
                };
                match read.await {
                    Ok(rows) => return Ok(ConnectionCheck { tables: tables.len(), table: Some(table.clone()), rows }),
                    // A table the API cannot list without a filter (e.g. a search) is skipped: nothing was sent.
                    Err(e) if required_filter(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Ok(ConnectionCheck { tables: tables.len(), table: None, rows: 0 })
        };
        contain::catch(deadline, timeout, check).await
    }

    /// Plans and collects, for tests and the CLI.
    pub async fn query(
        &self,
        caller: &Caller,
        sql: &str,
    ) -> Result<(Vec<datafusion::arrow::record_batch::RecordBatch>, u64), DataFusionError> {
        let mut settings = QuerySettings::default();
        let Some(q) = self.plan(caller, sql, None, &mut settings).await? else { return Ok((Vec::new(), 0)) };
        let context = q.context.clone();
        let batches = datafusion::physical_plan::common::collect(self.execute(q).await?).await?;
        Ok((batches, context.api_requests()))
    }
}

/// What [`Engine::test_connection`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionCheck {
    pub tables: usize,
    /// The table read; `None` when every table needs a filter (or there are none).
    pub table: Option<String>,
    pub rows: usize,
}

/// Whether `e` says a table cannot be scanned without a filter on some column.
fn required_filter(e: &DataFusionError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if matches!(
            err.downcast_ref::<omnisql_connector::ConnectorError>(),
            Some(omnisql_connector::ConnectorError::RequiredFilter { .. })
        ) {
            return true;
        }
        if let Some(DataFusionError::External(inner)) = err.downcast_ref::<DataFusionError>()
            && matches!(
                inner.downcast_ref::<omnisql_connector::ConnectorError>(),
                Some(omnisql_connector::ConnectorError::RequiredFilter { .. })
            )
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// The policy refusal inside a DataFusion error, if any.
pub fn policy_error(e: &DataFusionError) -> Option<&policy::PolicyError> {
    find_error(e)
}

/// The connector error inside a DataFusion error, if any.
pub fn connector_error(e: &DataFusionError) -> Option<&omnisql_connector::ConnectorError> {
    find_error(e)
}

/// The first `T` in `e`'s chain of sources, looking inside `DataFusionError::External` too.
fn find_error<T: std::error::Error + 'static>(e: &DataFusionError) -> Option<&T> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(DataFusionError::External(inner)) = err.downcast_ref::<DataFusionError>()
            && let Some(found) = inner.downcast_ref::<T>()
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}
