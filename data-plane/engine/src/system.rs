//! The `omnisql` system schema of each tenant: `omnisql.api_requests` (its recent queries and what
//! they cost upstream), `omnisql.cache_stats` and `omnisql.rate_limits` (its connections' buckets), so
//! users can see with SQL why a query waited and what it cost. Built on demand; a tenant sees only its
//! own rows.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use omnisql_connector::ResponseCache;
use omnisql_connector::governor::Governor;

/// Queries remembered per tenant for `omnisql.api_requests`.
const RECENT_QUERIES: usize = 1000;

/// One finished query, as `omnisql.api_requests` shows it.
#[derive(Debug, Clone)]
pub struct QueryLog {
    pub started_unix: f64,
    pub principal: String,
    pub sql: String,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub duration_ms: f64,
    pub rows: u64,
    pub api_requests: u64,
    pub cache_hits: u64,
    /// Waited for one of the tenant's query slots.
    pub queued_ms: u64,
}

/// Recent queries per tenant.
#[derive(Debug, Default)]
pub struct QueryLogs(Mutex<HashMap<String, VecDeque<QueryLog>>>);

impl QueryLogs {
    pub fn push(&self, tenant: &str, mut log: QueryLog) {
        log.sql.truncate(2000);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let list = map.entry(tenant.to_string()).or_default();
        if list.len() >= RECENT_QUERIES {
            list.pop_front();
        }
        list.push_back(log);
    }

    fn of(&self, tenant: &str) -> Vec<QueryLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(tenant).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct SystemSchema {
    pub tenant: String,
    /// The tenant's connections and their credential fingerprints.
    pub connections: Vec<(String, u64)>,
    pub cache: Option<Arc<ResponseCache>>,
    pub results: Option<Arc<crate::results::ResultCache>>,
    pub governor: Option<Arc<Governor>>,
    pub logs: Arc<QueryLogs>,
    /// Under row- or column-level policies each principal sees only its own queries: another's SQL text
    /// and error messages may hold values the policies hide from this one.
    pub only_principal: Option<String>,
}

const TABLES: [&str; 3] = ["api_requests", "cache_stats", "rate_limits"];

fn strings(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

impl SystemSchema {
    fn batch(&self, name: &str) -> Result<Option<RecordBatch>, DataFusionError> {
        let batch = match name {
            "api_requests" => {
                let mut logs = self.logs.of(&self.tenant);
                if let Some(p) = &self.only_principal {
                    logs.retain(|l| &l.principal == p);
                }
                RecordBatch::try_from_iter(vec![
                    ("started_unix", Arc::new(Float64Array::from_iter_values(logs.iter().map(|l| l.started_unix))) as ArrayRef),
                    ("principal", strings(logs.iter().map(|l| l.principal.clone()).collect())),
                    ("sql", strings(logs.iter().map(|l| l.sql.clone()).collect())),
                    ("outcome", strings(logs.iter().map(|l| l.outcome.to_string()).collect())),
                    ("error", Arc::new(StringArray::from(logs.iter().map(|l| l.error.clone()).collect::<Vec<_>>())) as ArrayRef),
                    ("duration_ms", Arc::new(Float64Array::from_iter_values(logs.iter().map(|l| l.duration_ms))) as ArrayRef),
                    ("rows", Arc::new(Int64Array::from_iter_values(logs.iter().map(|l| l.rows as i64))) as ArrayRef),
                    (
                        "api_requests",
                        Arc::new(Int64Array::from_iter_values(logs.iter().map(|l| l.api_requests as i64))) as ArrayRef,
                    ),
                    ("cache_hits", Arc::new(Int64Array::from_iter_values(logs.iter().map(|l| l.cache_hits as i64))) as ArrayRef),
                    ("queued_ms", Arc::new(Int64Array::from_iter_values(logs.iter().map(|l| l.queued_ms as i64))) as ArrayRef),
                ])?
            }
            "cache_stats" => {
                let s = self.cache.as_ref().map(|c| c.stats(&self.tenant)).unwrap_or_default();
                let one = |v: u64| Arc::new(Int64Array::from(vec![v as i64])) as ArrayRef;
                RecordBatch::try_from_iter(vec![
                    ("hits", one(s.hits)),
                    ("misses", one(s.misses)),
                    ("revalidations", one(s.revalidations)),
                    ("saved_calls", one(s.saved_calls)),
                    ("coalesced", one(s.coalesced)),
                    ("refreshed_ahead", one(s.refreshed_ahead)),
                    ("results_served", one(self.results.as_ref().map_or(0, |r| r.hits(&self.tenant)))),
                ])?
            }
            "rate_limits" => {
                let buckets = self.governor.as_ref().map(|g| g.snapshot()).unwrap_or_default();
                let rows: Vec<_> = buckets
                    .into_iter()
                    .filter_map(|b| self.connections.iter().find(|(_, c)| *c == b.credential).map(|(name, _)| (name.clone(), b)))
                    .collect();
                RecordBatch::try_from_iter(vec![
                    ("connection", strings(rows.iter().map(|(c, _)| c.clone()).collect())),
                    ("bucket", strings(rows.iter().map(|(_, b)| b.bucket.clone()).collect())),
                    ("capacity", Arc::new(Float64Array::from_iter_values(rows.iter().map(|(_, b)| b.capacity))) as ArrayRef),
                    (
                        "window_seconds",
                        Arc::new(Float64Array::from_iter_values(rows.iter().map(|(_, b)| b.window_seconds))) as ArrayRef,
                    ),
                    (
                        "available",
                        Arc::new(Float64Array::from_iter_values(rows.iter().map(|(_, b)| b.tokens.floor()))) as ArrayRef,
                    ),
                    (
                        "paused_for_seconds",
                        Arc::new(Float64Array::from(rows.iter().map(|(_, b)| b.paused_for_seconds).collect::<Vec<_>>()))
                            as ArrayRef,
                    ),
                    ("waiting", Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, b)| b.waiting as i64))) as ArrayRef),
                ])?
            }
            _ => return Ok(None),
        };
        Ok(Some(batch))
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let Some(batch) = self.batch(name)? else { return Ok(None) };
        Ok(Some(Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch]])?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
