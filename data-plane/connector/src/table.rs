//! API tables as DataFusion tables. A connector implements [`ApiTable`] (columns, per-filter pushdown,
//! the requests a scan makes, and a stream of JSON rows); [`ApiTableProvider`] and [`ApiScanExec`] do the
//! rest: pushdown negotiation, `EXPLAIN` output, Arrow conversion, projection and limits.

use std::fmt::{self, Debug};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Statistics;
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::stream::{BoxStream, StreamExt};
use serde_json::Value;

use crate::error::{ConnectorError, Result};
use crate::factory::ScanOptions;
use crate::filter::pinned_values;
use crate::http::QueryContext;
use crate::json::{self, Column};

/// Longest a probe-side scan waits for its join's build side to publish the keys; past it, the scan reads
/// without them (the same result, more requests).
const JOIN_KEYS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pages fetched ahead of the consumer. DataFusion builds every scan's stream when the plan starts but
/// polls a join's probe side only after its build side is complete; fetching from the moment the stream
/// exists lets all sources of a query talk to their APIs at once. The bound keeps memory flat.
const PREFETCH_PAGES: usize = 4;

/// Drives `pages` on its own task into a bounded channel. Dropping the returned stream (the query
/// finished or was cancelled) aborts the task and with it any request in flight.
fn prefetch(pages: BoxStream<'static, Result<Vec<Value>>>) -> BoxStream<'static, Result<Vec<Value>>> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return pages };
    let (tx, rx) = tokio::sync::mpsc::channel(PREFETCH_PAGES);
    let task = runtime.spawn(async move {
        let mut pages = pages;
        while let Some(page) = pages.next().await {
            let failed = page.is_err();
            if tx.send(page).await.is_err() || failed {
                break;
            }
        }
    });
    let guard = AbortOnDrop(task);
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move { rx.recv().await.map(|page| (page, (rx, guard))) }).boxed()
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a scan asks of the API: the columns it needs, the filters the table accepted, and a row limit
/// (only when every filter was evaluated exactly by the API).
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    pub projection: Option<Vec<usize>>,
    pub filters: Vec<Expr>,
    pub limit: Option<usize>,
    /// Order the API must return rows in (only keys the table accepted with [`ApiTable::sorts_exactly`]).
    pub order: Vec<SortKey>,
}

/// One `ORDER BY` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub column: String,
    pub descending: bool,
    pub nulls_first: bool,
}

/// One table of an API.
#[async_trait]
pub trait ApiTable: Send + Sync + Debug + 'static {
    /// `schema.table`, for plans and errors.
    fn name(&self) -> String;
    fn columns(&self) -> &[Column];
    /// How the API treats `filter`. Default: not at all.
    fn pushdown(&self, _filter: &Expr) -> TableProviderFilterPushDown {
        TableProviderFilterPushDown::Unsupported
    }
    /// Columns the API cannot do without (e.g. a search query): a scan without `column = …` on each
    /// fails with [`ConnectorError::RequiredFilter`]. Default: none.
    fn required_filters(&self) -> &[&'static str] {
        &[]
    }
    /// Whether the API returns rows in exactly SQL's order for this key (so the engine's sort can go).
    /// Default: no.
    fn sorts_exactly(&self, _key: &SortKey) -> bool {
        false
    }
    /// The API requests a scan will make, for `EXPLAIN`.
    fn describe(&self, scan: &ScanRequest) -> Vec<String>;
    /// The fewest requests the scan surely makes (one per pinned key where the API takes one key per
    /// request), so a query past its request budget fails before the first one is sent.
    fn least_requests(&self, _scan: &ScanRequest) -> u64 {
        0
    }
    /// Whether waiting for a join's keys on `column` saves more than the wait costs: the scan without them
    /// makes a request per row (GitHub user details) or is known to span several pages. Default: no —
    /// the scan starts at once, in parallel with the join's build side.
    fn keys_worth_waiting_for(&self, _column: &str) -> bool {
        false
    }
    /// Rows the scan will return, as far as the connector knows before asking: `Exact` where the API
    /// said, `Inexact` for an estimate or a bound; `Absent` (the default) when unknown. DataFusion builds a
    /// join's hash table from the side with fewer rows when both sides know theirs, so the small side's
    /// keys are what reaches the large side's API.
    fn estimated_rows(&self, _scan: &ScanRequest) -> Precision<usize> {
        Precision::Absent
    }
    /// The rows, a page at a time.
    fn fetch(&self, scan: ScanRequest, query: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>>;
}

/// A DataFusion table over an [`ApiTable`].
#[derive(Debug)]
pub struct ApiTableProvider {
    table: Arc<dyn ApiTable>,
    schema: SchemaRef,
    pushdown: bool,
    options: ScanOptions,
}

impl ApiTableProvider {
    fn pins_required(&self, filter: &Expr) -> bool {
        pinned_values(filter).is_some_and(|(c, _)| self.table.required_filters().contains(&c))
    }

    /// With pushdown off, every filter, order and limit stays in the engine (the correctness gate's
    /// baseline).
    pub fn new(table: Arc<dyn ApiTable>, options: ScanOptions) -> Self {
        let schema = json::schema_of(table.columns());
        ApiTableProvider { table, schema, pushdown: options.pushdown, options }
    }
}

#[async_trait]
impl TableProvider for ApiTableProvider {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                // A required filter is an input of the API, not an optimisation: it is always sent.
                if self.pushdown || self.pins_required(f) {
                    self.table.pushdown(f)
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        for column in self.table.required_filters() {
            if !filters.iter().any(|f| pinned_values(f).is_some_and(|(c, _)| c == *column)) {
                return Err(ConnectorError::RequiredFilter { table: self.table.name(), column: column.to_string() }.into());
            }
        }
        let request = ScanRequest {
            projection: projection.cloned(),
            filters: if self.pushdown {
                filters.to_vec()
            } else {
                filters.iter().filter(|f| self.pins_required(f)).cloned().collect()
            },
            limit: if self.pushdown { limit } else { None },
            order: Vec::new(),
        };
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let options = self.options;
        Ok(Arc::new(ApiScanExec::new(self.table.clone(), request, schema, options, None, Vec::new())))
    }
}

impl ApiScanExec {
    /// Whether the API filters on the single key column of this join (e.g. SOQL `Email IN (…)`, GitHub
    /// users by login), judged on a sample key of the column's type, and the table says the keys are
    /// worth waiting for.
    fn takes_keys(&self, join: &DynamicFilterPhysicalExpr) -> bool {
        let [key] = join.children()[..] else { return false };
        let Some(column) = key.downcast_ref::<PhysicalColumn>() else { return false };
        if !self.table.keys_worth_waiting_for(column.name()) {
            return false;
        }
        let Ok(field) = self.schema.field_with_name(column.name()) else { return false };
        let sample = match field.data_type() {
            datafusion::arrow::datatypes::DataType::Utf8 => datafusion::common::ScalarValue::from("key"),
            other => match datafusion::common::ScalarValue::new_zero(other) {
                Ok(v) => v,
                Err(_) => return false,
            },
        };
        let probe = datafusion::logical_expr::col(column.name()).in_list(vec![datafusion::logical_expr::lit(sample)], false);
        self.table.pushdown(&probe) != TableProviderFilterPushDown::Unsupported
    }

    /// The pages of the scan with the join keys it receives: waits (at most [`JOIN_KEYS_WAIT`]) for each
    /// join's build side, adds the keys the API can take as filters, then fetches. `EXPLAIN ANALYZE`
    /// shows the keys received (`join_keys`), the requests they became where the API takes keys per
    /// request or in slices (`join_keyed_requests`) and the wait (`join_wait`).
    fn fetch_with_join_keys(&self, query: Arc<QueryContext>) -> BoxStream<'static, Result<Vec<Value>>> {
        let (table, mut request, filters) = (self.table.clone(), self.request.clone(), self.join_filters.clone());
        let keys = MetricBuilder::new(&self.metrics).global_counter("join_keys");
        let keyed_requests = MetricBuilder::new(&self.metrics).global_counter("join_keyed_requests");
        let wait = MetricBuilder::new(&self.metrics).subset_time("join_wait", 0);
        futures::stream::once(async move {
            let started = std::time::Instant::now();
            for f in &filters {
                let Some(dynamic) = f.downcast_ref::<DynamicFilterPhysicalExpr>() else { continue };
                if tokio::time::timeout(JOIN_KEYS_WAIT, dynamic.wait_complete()).await.is_err() {
                    tracing::debug!(table = %table.name(), "join keys did not arrive in time; scanning without them");
                    continue;
                }
                let Some(filter) = dynamic.current().ok().as_ref().and_then(crate::join_keys::filter_of) else { continue };
                if table.pushdown(&filter) != TableProviderFilterPushDown::Unsupported {
                    keys.add(crate::join_keys::key_count(&filter));
                    request.filters.push(filter);
                }
            }
            wait.add_duration(started.elapsed());
            // The requests the keys became, where the API takes keys one per request or in slices.
            keyed_requests.add(table.least_requests(&request) as usize);
            table.fetch(request, query)
        })
        .flatten()
        .boxed()
    }
}

/// The physical scan: one partition streaming the API's pages as record batches. On the probe side of a
/// hash join it takes the join's dynamic filter and, once the build side is complete, sends its keys to
/// the API as a filter the connector understands ([`crate::join_keys`]).
#[derive(Debug)]
pub struct ApiScanExec {
    table: Arc<dyn ApiTable>,
    request: ScanRequest,
    schema: SchemaRef,
    options: ScanOptions,
    ordering: Option<LexOrdering>,
    properties: Arc<PlanProperties>,
    /// Dynamic filters of joins above (their keys once the build side is done).
    join_filters: Vec<Arc<dyn PhysicalExpr>>,
    metrics: ExecutionPlanMetricsSet,
}

impl ApiScanExec {
    fn new(
        table: Arc<dyn ApiTable>,
        request: ScanRequest,
        schema: SchemaRef,
        options: ScanOptions,
        ordering: Option<LexOrdering>,
        join_filters: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        let equivalences = match &ordering {
            Some(o) => EquivalenceProperties::new_with_orderings(schema.clone(), [o.clone()]),
            None => EquivalenceProperties::new(schema.clone()),
        };
        let properties = Arc::new(PlanProperties::new(
            equivalences,
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        ApiScanExec { table, request, schema, options, ordering, properties, join_filters, metrics: Default::default() }
    }

    fn with_request(&self, request: ScanRequest, ordering: Option<LexOrdering>) -> Self {
        Self::new(self.table.clone(), request, self.schema.clone(), self.options, ordering, self.join_filters.clone())
    }

    pub fn table_name(&self) -> String {
        self.table.name()
    }

    /// The requests this scan will make.
    pub fn requests(&self) -> Vec<String> {
        self.table.describe(&self.request)
    }
}

impl DisplayAs for ApiScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "ApiScanExec: table={}", self.table.name())?;
        if let Some(limit) = self.request.limit {
            write!(f, ", limit={limit}")?;
        }
        if !self.request.order.is_empty() {
            let keys: Vec<String> =
                self.request.order.iter().map(|k| format!("{}{}", k.column, if k.descending { " DESC" } else { "" })).collect();
            write!(f, ", order=[{}]", keys.join(", "))?;
        }
        if !self.request.filters.is_empty() {
            let filters: Vec<String> = self.request.filters.iter().map(|e| e.to_string()).collect();
            write!(f, ", pushed=[{}]", filters.join(", "))?;
        }
        write!(f, ", requests=[{}]", self.requests().join("; "))?;
        if !self.join_filters.is_empty() {
            write!(f, ", join_keys=dynamic")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ApiScanExec {
    fn name(&self) -> &str {
        "ApiScanExec"
    }

    /// The connector's row estimate, so join order follows the sizes of the apps' answers.
    fn partition_statistics(&self, _partition: Option<usize>) -> DfResult<Arc<Statistics>> {
        let mut stats = Statistics::new_unknown(&self.schema());
        stats.num_rows = self.table.estimated_rows(&self.request);
        if let Some(limit) = self.request.limit {
            stats.num_rows = stats.num_rows.min(&Precision::Exact(limit)).to_inexact();
        }
        Ok(Arc::new(stats))
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    /// The join filters held: a hash join computes its dynamic filter only if its probe side shows it here.
    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for e in &self.join_filters {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    /// Keeps the dynamic filters of joins above (the join still applies them: nothing is reported as
    /// pushed down); other filters stay where they are.
    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &datafusion::config::ConfigOptions,
    ) -> DfResult<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters = child_pushdown_result.parent_filters.iter().map(|_| PushedDown::No).collect();
        // Only a join whose keys this API can take is worth waiting for (waiting delays the scan).
        let dynamic: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .into_iter()
            .map(|r| r.filter)
            .filter(|f| f.downcast_ref::<DynamicFilterPhysicalExpr>().is_some_and(|d| self.takes_keys(d)))
            .collect();
        let propagation = FilterPushdownPropagation::with_parent_pushdown_result(filters);
        if !(self.options.pushdown && self.options.join_keys) || dynamic.is_empty() {
            return Ok(propagation);
        }
        let mut join_filters = self.join_filters.clone();
        join_filters.extend(dynamic);
        let node = Self::new(
            self.table.clone(),
            self.request.clone(),
            self.schema.clone(),
            self.options,
            self.ordering.clone(),
            join_filters,
        );
        Ok(propagation.with_updated_node(Arc::new(node)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    /// Takes over an `ORDER BY` when the API sorts exactly as SQL does, so the engine's sort is removed.
    fn try_pushdown_sort(&self, order: &[PhysicalSortExpr]) -> DfResult<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        if !self.options.pushdown || order.is_empty() {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let mut keys = Vec::with_capacity(order.len());
        for e in order {
            let Some(column) = e.expr.downcast_ref::<PhysicalColumn>() else {
                return Ok(SortOrderPushdownResult::Unsupported);
            };
            let key = SortKey {
                column: column.name().to_string(),
                descending: e.options.descending,
                nulls_first: e.options.nulls_first,
            };
            if !self.table.sorts_exactly(&key) {
                return Ok(SortOrderPushdownResult::Unsupported);
            }
            keys.push(key);
        }
        let request = ScanRequest { order: keys, ..self.request.clone() };
        let inner: Arc<dyn ExecutionPlan> = Arc::new(self.with_request(request, LexOrdering::new(order.to_vec())));
        Ok(SortOrderPushdownResult::Exact { inner })
    }

    /// A limit directly above the scan (no engine filter between) goes to the API.
    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        if !self.options.pushdown {
            return None;
        }
        let limit = match (limit, self.request.limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(self.with_request(ScanRequest { limit, ..self.request.clone() }, self.ordering.clone())))
    }

    fn fetch(&self) -> Option<usize> {
        self.request.limit
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("ApiScanExec has one partition, asked for {partition}")));
        }
        let query = context.session_config().get_extension::<QueryContext>().unwrap_or_default();
        if let Some(budget) = query.request_budget {
            let least = self.table.least_requests(&self.request);
            if query.api_requests() + least > budget {
                let error = crate::ConnectorError::BudgetExceeded { budget, needed: Some(least), table: Some(self.table.name()) };
                return Err(DataFusionError::External(Box::new(error)));
            }
        }
        let columns: Vec<Column> = match &self.request.projection {
            Some(p) => p.iter().map(|i| self.table.columns()[*i].clone()).collect(),
            None => self.table.columns().to_vec(),
        };
        let schema = self.schema.clone();
        let mut remaining = self.request.limit;
        // The scan's span is entered whenever its pages are polled (on whichever task), so the upstream
        // requests it makes are its children.
        let span = tracing::info_span!(parent: &query.span(), "scan", table = %self.table.name(), join_keys = !self.join_filters.is_empty());
        let mut pages = if self.join_filters.is_empty() {
            self.table.fetch(self.request.clone(), query)
        } else {
            self.fetch_with_join_keys(query)
        };
        let pages = futures::stream::poll_fn(move |cx| {
            let _entered = span.enter();
            pages.poll_next_unpin(cx)
        })
        .boxed();
        let pages = if self.options.prefetch { prefetch(pages) } else { pages };
        let batches = pages
            .take_while(move |_| {
                let more = remaining != Some(0);
                futures::future::ready(more)
            })
            .map(move |page| {
                let mut rows = page.map_err(DataFusionError::from)?;
                if let Some(left) = remaining.as_mut() {
                    rows.truncate(*left);
                    *left -= rows.len();
                }
                let refs: Vec<&Column> = columns.iter().collect();
                json::to_batch(schema.clone(), &refs, &rows).map_err(DataFusionError::from)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), batches)))
    }
}
