//! Results of recent queries, answered again without planning or running them.
//!
//! A dashboard asks the same question many times a minute. Once a query's result is complete it is kept
//! (if small), keyed by everything that could change it: the tenant and the version of its configuration
//! (connections, policies, principals), the caller with their groups, the statement and its parameters.
//! A later identical query takes it when every source it read is still as fresh as that query accepts —
//! the same rule the response cache applies to each API answer (`omnisql.max_staleness`, else each
//! connection's TTL) — so a kept result is never older than the query accepts, exactly as if it had run
//! over cached API answers. Fresh queries (`max_staleness = 0`) always run, and store what they got.
//!
//! Only results that are a function of API data alone are kept: no volatile or time-dependent function
//! (`now()`, `random()`), no system or `information_schema` table, no `EXPLAIN`, and never for a tenant
//! whose OPA server decides its policies (its decisions may change without a new configuration).
//! A popular entry past half its allowance is refreshed in the background, so readers never wait. While a
//! statement runs, identical ones that would take its result wait for it (at most [`FOLLOW_WAIT`]) instead
//! of planning and running it too: a burst of one dashboard's refreshes costs one run, not many. A run
//! counts from its execution, not its planning: a client that plans (`GetFlightInfo`) and never fetches
//! makes nobody wait.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use futures::{Stream, StreamExt};
use omnisql_connector::QueryContext;
use omnisql_connector::lru::{Lru, TenantKey};

use crate::Caller;

/// What a result depends on, besides the data.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultKey {
    pub caller: Caller,
    /// Changes whenever the tenant's configuration does.
    pub generation: u64,
    pub sql: String,
    /// The bound parameters, as text.
    pub params: String,
}

/// A complete result and how old its data is.
#[derive(Debug)]
pub struct CachedResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// `connection.table` for every table the query read.
    pub tables: Vec<String>,
    /// Per connection read, when its oldest data was fetched from the API.
    pub sources: BTreeMap<String, SystemTime>,
    size: usize,
    hits: AtomicU64,
    refreshing: AtomicBool,
}

impl CachedResult {
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>, tables: Vec<String>, sources: BTreeMap<String, SystemTime>) -> Self {
        let size = batches.iter().map(|b| b.get_array_memory_size()).sum::<usize>() + 256;
        CachedResult { schema, batches, tables, sources, size, hits: AtomicU64::new(0), refreshing: AtomicBool::new(false) }
    }

    /// Whether every source is within what the reader accepts (`allowed` per connection), and whether the
    /// entry should be refreshed now: read before, past half its allowance, no refresh under way.
    pub fn check(&self, allowed: impl Fn(&str) -> Duration) -> Option<bool> {
        let now = SystemTime::now();
        let mut past_half = false;
        for (connection, fetched) in &self.sources {
            let limit = allowed(connection);
            let age = now.duration_since(*fetched).unwrap_or_default();
            if limit.is_zero() || age > limit {
                return None;
            }
            past_half |= age >= limit / 2;
        }
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        Some(past_half && hits >= 2 && !self.refreshing.swap(true, Ordering::AcqRel))
    }

    /// A refresh that failed: the next reader may start another.
    pub fn refresh_failed(&self) {
        self.refreshing.store(false, Ordering::Release);
    }
}

/// At most this share of the cache's bytes in one entry.
const ENTRY_SHARE: usize = 64;

/// How long a statement waits for an identical one already running before it runs itself.
pub const FOLLOW_WAIT: Duration = Duration::from_secs(2);

/// Whether the result of `plan` depends only on the tables of `connections` it reads (at least one).
pub fn cacheable(plan: &LogicalPlan, connections: &[String]) -> bool {
    let mut ok = true;
    let mut scans = 0;
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                scans += 1;
                ok &= scan.table_name.schema().is_some_and(|s| connections.iter().any(|c| c == s));
            }
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::Statement(_) | LogicalPlan::DescribeTable(_) => {
                ok = false
            }
            _ => {}
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    ok = false;
                }
                Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
            })
        })?;
        Ok(if ok { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    ok && scans > 0
}

#[derive(Debug)]
struct Inner {
    entries: Lru<ResultKey, Arc<CachedResult>>,
    hits: HashMap<String, u64>,
    /// Statements running whose result will be kept: closed when they end.
    running: HashMap<ResultKey, (u64, tokio::sync::watch::Receiver<()>)>,
    next_run: u64,
}

impl TenantKey for ResultKey {
    fn tenant(&self) -> &str {
        &self.caller.tenant.0
    }
}

/// Recent results, bounded by bytes (in all and per tenant), least recently used out first.
#[derive(Debug)]
pub struct ResultCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

impl ResultCache {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        let inner = Inner { entries: Lru::new(max_bytes), hits: HashMap::new(), running: HashMap::new(), next_run: 0 };
        Arc::new(ResultCache { max_bytes, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The entry for `key`, counted as used.
    pub fn get(&self, key: &ResultKey) -> Option<Arc<CachedResult>> {
        self.lock().entries.get_mut(key).map(|r| r.clone())
    }

    /// Counts a query the cache answered, for `omnisql.cache_stats`.
    pub fn served(&self, tenant: &str) {
        *self.lock().hits.entry(tenant.to_string()).or_default() += 1;
    }

    /// Queries of `tenant` answered from here.
    pub fn hits(&self, tenant: &str) -> u64 {
        self.lock().hits.get(tenant).copied().unwrap_or(0)
    }

    /// Keeps `result` under `key` (replacing an older one) if it is small enough.
    pub fn put(&self, key: ResultKey, result: CachedResult) {
        if result.size > self.max_bytes / ENTRY_SHARE {
            return;
        }
        let size = result.size;
        self.lock().entries.insert(key, Arc::new(result), size);
    }

    /// Bytes `tenant`'s kept results hold.
    pub fn tenant_bytes(&self, tenant: &str) -> usize {
        self.lock().entries.tenant_bytes(tenant)
    }

    pub fn bytes(&self) -> usize {
        self.lock().entries.bytes()
    }

    /// A run of `key`'s statement under way: its receiver closes when the run ends.
    pub fn running(&self, key: &ResultKey) -> Option<tokio::sync::watch::Receiver<()>> {
        self.lock().running.get(key).map(|(_, r)| r.clone())
    }

    /// Registers a run of `key`'s statement for others to wait for; `None` if one already runs.
    pub fn lead(self: &Arc<Self>, key: &ResultKey) -> Option<Leader> {
        let mut inner = self.lock();
        if inner.running.contains_key(key) {
            return None;
        }
        inner.next_run += 1;
        let id = inner.next_run;
        let (done, running) = tokio::sync::watch::channel(());
        inner.running.insert(key.clone(), (id, running));
        Some(Leader { cache: self.clone(), key: key.clone(), id, _done: done })
    }

    fn max_entry(&self) -> usize {
        self.max_bytes / ENTRY_SHARE
    }
}

/// The run of a statement others may be waiting for; they wake when it is dropped (after its result was
/// kept, or when it failed or was cancelled and they must run themselves).
#[derive(Debug)]
pub struct Leader {
    cache: Arc<ResultCache>,
    key: ResultKey,
    id: u64,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Leader {
    fn drop(&mut self) {
        let mut inner = self.cache.lock();
        if inner.running.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            inner.running.remove(&self.key);
        }
    }
}

/// Where a planned statement's result goes: the key it is kept under, and its run if others wait for it.
#[derive(Debug)]
pub struct Keep {
    pub key: ResultKey,
    pub leader: Option<Leader>,
}

/// What a running query's result will be kept as, once complete.
#[derive(Debug)]
pub struct Pending {
    pub keep: Keep,
    /// The schema the query was planned with (what clients are promised).
    pub schema: SchemaRef,
    pub tables: Vec<String>,
    pub context: Arc<QueryContext>,
    /// When the query started: the fetch time of a source it read without asking the API.
    pub started: SystemTime,
}

/// Passes a query's batches through and keeps a copy; a result that ends without error and stays small
/// enough is kept when its last batch has passed.
pub struct Keeper {
    inner: SendableRecordBatchStream,
    cache: Arc<ResultCache>,
    pending: Option<(Pending, Vec<RecordBatch>, usize)>,
}

impl Keeper {
    pub fn new(inner: SendableRecordBatchStream, cache: Arc<ResultCache>, pending: Pending) -> Self {
        Keeper { inner, cache, pending: Some((pending, Vec::new(), 0)) }
    }

    fn keep(&mut self) {
        let Some((p, batches, _)) = self.pending.take() else { return };
        let Keep { key, leader } = p.keep;
        let mut sources: BTreeMap<String, SystemTime> = p
            .context
            .freshness()
            .into_iter()
            .map(|(connection, f)| (connection, UNIX_EPOCH + Duration::from_secs_f64(f.as_of_unix.max(0.0))))
            .collect();
        for table in &p.tables {
            if let Some((connection, _)) = table.split_once('.') {
                sources.entry(connection.to_string()).or_insert(p.started);
            }
        }
        self.cache.put(key, CachedResult::new(p.schema, batches, p.tables, sources));
        // Only now may those waiting look for it.
        drop(leader);
    }
}

impl Stream for Keeper {
    type Item = Result<RecordBatch, DataFusionError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(Some(Ok(batch))) => {
                let max = self.cache.max_entry();
                if let Some((_, batches, bytes)) = &mut self.pending {
                    *bytes += batch.get_array_memory_size();
                    batches.push(batch.clone());
                    if *bytes > max {
                        self.pending = None;
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => self.pending = None,
            Poll::Ready(None) => self.keep(),
            Poll::Pending => {}
        }
        next
    }
}

impl RecordBatchStream for Keeper {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn result(rows: usize, fetched: SystemTime) -> CachedResult {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1i64; rows]))]).unwrap();
        CachedResult::new(schema, vec![batch], vec!["github.issues".into()], BTreeMap::from([("github".into(), fetched)]))
    }

    fn key(sql: &str) -> ResultKey {
        ResultKey { caller: Caller::new("t1", "alice"), generation: 1, sql: sql.into(), params: String::new() }
    }

    #[test]
    fn a_result_is_served_only_while_its_oldest_source_is_within_the_allowance() {
        let r = result(1, SystemTime::now() - Duration::from_secs(10));
        assert_eq!(r.check(|_| Duration::from_secs(60)), Some(false), "young, first read: no refresh");
        assert_eq!(r.check(|_| Duration::from_secs(5)), None, "older than the reader accepts");
        assert_eq!(r.check(|_| Duration::ZERO), None, "a fresh query never takes a kept result");
        assert_eq!(r.check(|_| Duration::from_secs(15)), Some(true), "past half, read before: refresh once");
        assert_eq!(r.check(|_| Duration::from_secs(15)), Some(false), "a refresh is already under way");
        r.refresh_failed();
        assert_eq!(r.check(|_| Duration::from_secs(15)), Some(true));
    }

    fn key_of(tenant: &str, sql: &str) -> ResultKey {
        ResultKey { caller: Caller::new(tenant, "alice"), generation: 1, sql: sql.into(), params: String::new() }
    }

    #[test]
    fn entries_are_bounded_by_bytes_and_the_least_recently_used_goes_first() {
        let one = result(1000, SystemTime::now()).size;
        // An entry larger than its share of the cache is never kept.
        let tight = ResultCache::new(one * ENTRY_SHARE - 1);
        tight.put(key("big"), result(1000, SystemTime::now()));
        assert!(tight.get(&key("big")).is_none());

        // Room for exactly ENTRY_SHARE entries of this size, spread over four tenants (each within its share).
        let cache = ResultCache::new(one * ENTRY_SHARE);
        let k = |i: usize| key_of(&format!("t{}", i % 4), &format!("q{i}"));
        for i in 0..ENTRY_SHARE {
            cache.put(k(i), result(1000, SystemTime::now()));
        }
        assert_eq!(cache.bytes(), one * ENTRY_SHARE);
        // The same key again replaces its entry; it is not counted twice.
        cache.put(k(5), result(1000, SystemTime::now()));
        assert_eq!(cache.bytes(), one * ENTRY_SHARE);
        assert!(cache.get(&k(0)).is_some(), "q0 read again: now the most recently used");
        cache.put(key_of("t4", "new"), result(1000, SystemTime::now()));
        assert!(cache.get(&k(0)).is_some());
        assert!(cache.get(&k(1)).is_none(), "the least recently used left");
        assert!(cache.get(&key_of("t4", "new")).is_some());
        assert_eq!(cache.bytes(), one * ENTRY_SHARE);
    }

    #[test]
    fn a_tenant_over_its_share_evicts_its_own_results_not_others() {
        let one = result(1000, SystemTime::now()).size;
        // Alone, a tenant may fill the whole cache.
        let alone = ResultCache::new(one * ENTRY_SHARE);
        for i in 0..ENTRY_SHARE {
            alone.put(key_of("only", &format!("q{i}")), result(1000, SystemTime::now()));
        }
        assert_eq!(alone.tenant_bytes("only"), one * ENTRY_SHARE);

        // Beside four others, a busy tenant keeps a quarter: its own oldest results go, theirs stay.
        let cache = ResultCache::new(one * ENTRY_SHARE);
        for quiet in ["a", "b", "c"] {
            cache.put(key_of(quiet, "q"), result(1000, SystemTime::now()));
        }
        let share = ENTRY_SHARE / 4;
        for i in 0..ENTRY_SHARE * 2 {
            cache.put(key_of("busy", &format!("q{i}")), result(1000, SystemTime::now()));
        }
        assert_eq!(cache.tenant_bytes("busy"), one * share, "held to its share");
        for quiet in ["a", "b", "c"] {
            assert!(cache.get(&key_of(quiet, "q")).is_some(), "{quiet}'s result stays");
        }
        assert!(cache.get(&key_of("busy", "q0")).is_none());
        assert!(cache.get(&key_of("busy", &format!("q{}", ENTRY_SHARE * 2 - 1))).is_some());
    }

    #[tokio::test]
    async fn waiters_wake_when_the_run_ends_however_it_ends() {
        let cache = ResultCache::new(64 << 20);
        let leader = cache.lead(&key("q")).expect("nothing runs yet");
        assert!(cache.lead(&key("q")).is_none(), "one run at a time");
        let mut waiting = cache.running(&key("q")).expect("a run to wait for");
        assert!(cache.running(&key("other")).is_none());
        // A run that ends without a result (failed, cancelled, too large) wakes its waiters too.
        drop(leader);
        assert!(waiting.changed().await.is_err(), "closed: the run ended");
        assert!(cache.running(&key("q")).is_none());
        assert!(cache.lead(&key("q")).is_some());
    }

    #[test]
    fn another_caller_or_configuration_is_another_key() {
        let cache = ResultCache::new(64 << 20);
        cache.put(key("q"), result(1, SystemTime::now()));
        let mut bob = key("q");
        bob.caller = Caller::new("t1", "bob");
        let mut other_tenant = key("q");
        other_tenant.caller = Caller::new("t2", "alice");
        let mut newer = key("q");
        newer.generation = 2;
        let mut grouped = key("q");
        grouped.caller.groups = vec!["sales".into()];
        for k in [bob, other_tenant, newer, grouped] {
            assert!(cache.get(&k).is_none(), "{k:?}");
        }
        assert!(cache.get(&key("q")).is_some());
    }
}
