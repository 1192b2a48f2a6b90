//! A connection's tables as one principal may see them: the tenant's policy decisions applied inside
//! each table's scan.
//!
//! A table with row filters, masks or hidden columns becomes a [`PolicyTable`] whose scan is
//! `PolicyExec(row filters, then masks) ← the connector's scan`. Doing this inside the scan, in one
//! operator that lets no filter, projection or limit through, is what makes it hold against both
//! optimizers: nothing the query asks for is evaluated below the policy, so an expression that fails
//! on some value (a division, a cast) can neither see a filtered row nor echo a masked value in its
//! error. (A rewrite of the logical plan would not hold: the physical optimizer merges the query's
//! filter into the policy's, user predicate first.) The user's
//! filters still reach the API when they cannot fail and touch no masked column (comparisons, `IN`,
//! `LIKE`, `IS NULL` of columns with literals); the row filters are offered to the API the same way and
//! always checked again above it. `EXPLAIN` shows the filter and mask expressions, never a value.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError};
use datafusion::execution::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, ExprSchemable, Operator, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::catalog::ConnectionSchema;
use crate::config::PrincipalConfig;
use crate::policy::{Identity, Policies, PolicyError, TableDecision};

/// Who reads, under which policies, and how policy expressions are parsed.
#[derive(Debug, Clone)]
pub struct Access {
    pub identity: Identity,
    pub policies: Arc<Policies>,
    /// Plans made from the policies' decisions, kept with them.
    pub plans: Arc<PolicyPlans>,
    /// Parses policy expressions: the same functions as queries (with the bounded ones).
    pub parser: Arc<SessionState>,
}

/// A connection's schema seen through a principal's policies ([`Access`]); without policies, the
/// connection's tables as they are.
#[derive(Debug)]
pub struct GovernedSchema {
    connection: Arc<ConnectionSchema>,
    access: Option<Access>,
}

impl GovernedSchema {
    pub fn new(connection: Arc<ConnectionSchema>, access: Option<Access>) -> GovernedSchema {
        let access = access.filter(|a| a.policies.active());
        GovernedSchema { connection, access }
    }

    pub fn name(&self) -> &str {
        self.connection.name()
    }

    /// The tables the principal may read, creating the connector if needed.
    pub async fn tables(&self) -> Result<Vec<String>, omnisql_connector::ConnectorError> {
        let names = self.connection.tables().await?;
        if let Some(a) = self.access.as_ref().filter(|a| a.policies.is_external()) {
            let mut tables = Vec::new();
            for name in &names {
                if let Ok(Some(t)) = self.connection.table(name).await {
                    tables.push((self.name().to_string(), name.clone(), columns_of(&t.schema())));
                }
            }
            a.policies.prefetch(&a.identity, &tables).await;
        }
        Ok(names.into_iter().filter(|t| self.visible(t)).collect())
    }

    fn visible(&self, table: &str) -> bool {
        match &self.access {
            None => true,
            // A table whose policy cannot be evaluated is listed, so reading it says why it is refused.
            Some(a) => a.policies.table_allowed(&a.identity, self.name(), table).unwrap_or(true),
        }
    }
}

#[async_trait]
impl SchemaProvider for GovernedSchema {
    fn table_names(&self) -> Vec<String> {
        self.connection.table_names().into_iter().filter(|t| self.visible(t)).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        // An OPA server's decisions were fetched for the whole statement; this asks for one the statement
        // did not name (a no-op when it is cached).
        if let Some(a) = self.access.as_ref().filter(|a| a.policies.is_external())
            && let Some(t) = self.connection.table(name).await?
        {
            let table = [(self.name().to_string(), name.to_string(), columns_of(&t.schema()))];
            a.policies.prefetch_undecided(&a.identity, &table).await;
        }
        // A refused table costs no API call (a connector may describe a table when it is first named).
        if let Some(a) = &self.access
            && !a.policies.table_allowed(&a.identity, self.name(), name).map_err(|e| DataFusionError::External(Box::new(e)))?
        {
            let denied = PolicyError::Denied {
                principal: a.identity.principal.id.clone(),
                table: format!("{}.{name}", self.name()),
                revision: a.policies.revision().to_string(),
            };
            return Err(DataFusionError::External(Box::new(denied)));
        }
        let Some(table) = self.connection.table(name).await? else { return Ok(None) };
        let Some(access) = &self.access else { return Ok(Some(table)) };
        let schema = table.schema();
        let columns = columns_of(&schema);
        let decision = access
            .policies
            .decide(&access.identity, self.name(), name, &columns)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        if decision.is_open() {
            return Ok(Some(table));
        }
        let qualified = format!("{}.{name}", self.name());
        let plan = access
            .plans
            .get_or_make(&access.identity.principal, &qualified, &schema, || {
                PolicyPlan::new(schema.clone(), &decision, &qualified, &access.parser)
            })
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Some(Arc::new(PolicyTable { inner: table, plan })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.connection.table_exist(name) && self.visible(name)
    }
}

/// A table's columns as policies see them: (name, SQL type).
pub(crate) fn columns_of(schema: &Schema) -> Vec<(String, String)> {
    schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect()
}

/// A table with a policy's row filters, masks and hidden columns applied in its scan.
#[derive(Debug)]
pub struct PolicyTable {
    inner: Arc<dyn TableProvider>,
    plan: Arc<PolicyPlan>,
}

/// A policy decision turned into expressions over one table's columns: parsed once per principal and
/// table while the policies and the table's schema stay the same.
#[derive(Debug)]
pub struct PolicyPlan {
    /// The table's schema the expressions were planned for.
    inner_arrow: SchemaRef,
    /// The columns the principal sees, with their types (a mask keeps its column's type).
    schema: SchemaRef,
    /// For each visible column, its index in the inner table and its mask (over the inner columns).
    columns: Vec<(usize, Option<Expr>)>,
    /// All row filters as one conjunction over the inner columns.
    row_filter: Option<Expr>,
    /// The inner table's schema as a DataFusion schema, for planning the expressions.
    inner_schema: Arc<DFSchema>,
}

impl PolicyPlan {
    fn new(
        inner_arrow: SchemaRef,
        decision: &TableDecision,
        table: &str,
        parser: &SessionState,
    ) -> Result<PolicyPlan, PolicyError> {
        let unusable = |what: String, message: String| PolicyError::Unusable {
            table: table.into(),
            revision: decision.revision.clone(),
            what,
            message,
        };
        let inner_schema = Arc::new(
            DFSchema::try_from(inner_arrow.as_ref().clone()).map_err(|e| unusable("table schema".into(), e.to_string()))?,
        );
        let parse = |what: String, sql: &str| -> Result<Expr, PolicyError> {
            let expr = parser.create_logical_expr(sql, &inner_schema).map_err(|e| unusable(what.clone(), first_line(&e)))?;
            check_policy_expr(&expr).map_err(|m| unusable(what, m))?;
            Ok(expr)
        };
        let mut row_filter: Option<Expr> = None;
        for (i, sql) in decision.row_filters.iter().enumerate() {
            let expr = parse(format!("row filter {} `{sql}`", i + 1), sql)?;
            row_filter = Some(match row_filter {
                Some(f) => f.and(expr),
                None => expr,
            });
        }
        let mut fields = Vec::new();
        let mut columns = Vec::new();
        for (index, field) in inner_arrow.fields().iter().enumerate() {
            if decision.hidden.contains(field.name()) {
                continue;
            }
            let mask = match decision.masks.get(field.name()) {
                Some(sql) => {
                    let what = format!("mask of `{}` `{sql}`", field.name());
                    let expr = parse(what.clone(), sql)?;
                    let from = expr.get_type(&inner_schema).map_err(|e| unusable(what.clone(), first_line(&e)))?;
                    if !datafusion::arrow::compute::can_cast_types(&from, field.data_type()) {
                        return Err(unusable(what, format!("its type {from} cannot become the column's {}", field.data_type())));
                    }
                    Some(expr.cast_to(field.data_type(), &inner_schema).map_err(|e| unusable(what, first_line(&e)))?)
                }
                None => None,
            };
            // A masked value may be NULL even where the column is not.
            fields.push(Field::new(field.name(), field.data_type().clone(), field.is_nullable() || mask.is_some()));
            columns.push((index, mask));
        }
        Ok(PolicyPlan { inner_arrow, schema: Arc::new(Schema::new(fields)), columns, row_filter, inner_schema })
    }

    fn masked(&self, name: &str) -> bool {
        self.columns.iter().any(|(i, mask)| mask.is_some() && self.inner_schema.field(*i).name() == name)
    }
}

/// The policy plans made so far, per principal and table; they go with the policies they came from.
#[derive(Debug, Default)]
pub struct PolicyPlans(std::sync::Mutex<HashMap<(PrincipalConfig, String), Arc<PolicyPlan>>>);

impl PolicyPlans {
    fn get_or_make(
        &self,
        who: &PrincipalConfig,
        table: &str,
        inner: &SchemaRef,
        make: impl FnOnce() -> Result<PolicyPlan, PolicyError>,
    ) -> Result<Arc<PolicyPlan>, PolicyError> {
        let key = (who.clone(), table.to_string());
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = lock().get(&key).filter(|p| &p.inner_arrow == inner) {
            return Ok(plan.clone());
        }
        let plan = Arc::new(make()?);
        let mut plans = lock();
        if plans.len() >= crate::policy::CACHED_DECISIONS {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }
}

fn first_line(e: &DataFusionError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Policy expressions read the row's own columns: no subqueries, aggregates, windows or placeholders.
fn check_policy_expr(expr: &Expr) -> Result<(), String> {
    let mut problem = None;
    let _ = expr.apply(|e| {
        problem = match e {
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_) => Some("subqueries are not allowed"),
            Expr::AggregateFunction(_) | Expr::WindowFunction(_) => Some("aggregate and window functions are not allowed"),
            Expr::Placeholder(_) => Some("placeholders are not allowed"),
            _ => None,
        };
        Ok(if problem.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    problem.map_or(Ok(()), |p| Err(p.to_string()))
}

/// Whether evaluating `expr` can neither fail nor depend on how values compare once transformed: only
/// then may it run before the policy (in the API). Comparisons, boolean logic, `IN`, `LIKE`,
/// `BETWEEN` and `IS NULL` over columns and literals.
fn cannot_fail(expr: &Expr) -> bool {
    match expr {
        Expr::Column(_) | Expr::Literal(..) => true,
        Expr::BinaryExpr(b) => {
            matches!(
                b.op,
                Operator::Eq
                    | Operator::NotEq
                    | Operator::Lt
                    | Operator::LtEq
                    | Operator::Gt
                    | Operator::GtEq
                    | Operator::And
                    | Operator::Or
                    | Operator::IsDistinctFrom
                    | Operator::IsNotDistinctFrom
            ) && cannot_fail(&b.left)
                && cannot_fail(&b.right)
        }
        Expr::Not(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => cannot_fail(e),
        Expr::InList(l) => cannot_fail(&l.expr) && l.list.iter().all(|e| matches!(e, Expr::Literal(..))),
        Expr::Between(b) => cannot_fail(&b.expr) && matches!(*b.low, Expr::Literal(..)) && matches!(*b.high, Expr::Literal(..)),
        Expr::Like(l) => cannot_fail(&l.expr) && matches!(*l.pattern, Expr::Literal(..)) && l.escape_char.is_none(),
        // A cast of a constant fails (or not) whatever the data is.
        Expr::Cast(c) => matches!(*c.expr, Expr::Literal(..)),
        _ => false,
    }
}

#[async_trait]
impl TableProvider for PolicyTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>, DataFusionError> {
        // A filter may go below the policy only if it cannot fail and reads no masked value; the API
        // decides whether it can use it. Anything else runs above, on what the policy lets through.
        let safe: Vec<bool> =
            filters.iter().map(|f| cannot_fail(f) && f.column_refs().iter().all(|c| !self.plan.masked(&c.name))).collect();
        let offered: Vec<&Expr> = filters.iter().zip(&safe).filter(|(_, s)| **s).map(|(f, _)| *f).collect();
        let mut inner = self.inner.supports_filters_pushdown(&offered)?.into_iter();
        Ok(safe
            .iter()
            .map(|s| {
                if *s {
                    inner.next().unwrap_or(TableProviderFilterPushDown::Unsupported)
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>, DataFusionError> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.plan.columns.len()).collect(),
        };
        // The inner columns the visible ones, their masks and the row filter read.
        let inner_fields = self.plan.inner_schema.fields();
        let mut needed = BTreeSet::new();
        let mut read = |e: &Expr| {
            for c in e.column_refs() {
                if let Some(i) = inner_fields.iter().position(|f| f.name() == &c.name) {
                    needed.insert(i);
                }
            }
        };
        for &w in &wanted {
            let (index, mask) = &self.plan.columns[w];
            read(&Expr::Column(datafusion::common::Column::from_name(inner_fields[*index].name().clone())));
            if let Some(m) = mask {
                read(m);
            }
        }
        if let Some(f) = &self.plan.row_filter {
            read(f);
        }
        let inner_projection: Vec<usize> = needed.into_iter().collect();
        // The row filter's conjuncts go to the API too where it can use them; it is checked again above.
        let mut inner_filters = filters.to_vec();
        if let Some(f) = &self.plan.row_filter {
            let conjuncts = datafusion::logical_expr::utils::split_conjunction_owned(f.clone());
            let refs: Vec<&Expr> = conjuncts.iter().collect();
            let support = self.inner.supports_filters_pushdown(&refs)?;
            inner_filters.extend(
                conjuncts
                    .iter()
                    .zip(support)
                    .filter(|(_, s)| *s != TableProviderFilterPushDown::Unsupported)
                    .map(|(e, _)| e.clone()),
            );
        }
        // With a row filter, a limit counts the rows that pass it, so the API cannot apply it.
        let inner_limit = if self.plan.row_filter.is_some() { None } else { limit };
        let scan = self.inner.scan(state, Some(&inner_projection), &inner_filters, inner_limit).await?;
        let scanned = DFSchema::try_from(scan.schema().as_ref().clone())?;
        let filter = match &self.plan.row_filter {
            Some(f) => Some(state.create_physical_expr(f.clone(), &scanned)?),
            None => None,
        };
        let mut columns = Vec::with_capacity(wanted.len());
        let mut fields = Vec::with_capacity(wanted.len());
        for &w in &wanted {
            let (index, mask) = &self.plan.columns[w];
            let name = inner_fields[*index].name().clone();
            let expr = match mask {
                Some(m) => m.clone(),
                None => Expr::Column(datafusion::common::Column::from_name(name.clone())),
            };
            columns.push((state.create_physical_expr(expr, &scanned)?, name));
            fields.push(self.plan.schema.field(w).clone());
        }
        Ok(Arc::new(PolicyExec::new(scan, filter, columns, Arc::new(Schema::new(fields)))))
    }
}

/// Applies a policy to its input's batches: keeps the rows that pass `filter`, then computes the
/// visible columns (masks in place of raw values). A barrier for the optimizers: it takes no filter,
/// projection, limit or sort from above, so what the query asks is only ever evaluated on its output.
#[derive(Debug)]
pub struct PolicyExec {
    input: Arc<dyn ExecutionPlan>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    columns: Vec<(Arc<dyn PhysicalExpr>, String)>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PolicyExec {
    fn new(
        input: Arc<dyn ExecutionPlan>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        columns: Vec<(Arc<dyn PhysicalExpr>, String)>,
        schema: SchemaRef,
    ) -> PolicyExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            datafusion::physical_plan::Partitioning::UnknownPartitioning(
                input.properties().output_partitioning().partition_count(),
            ),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        PolicyExec { input, filter, columns, schema, properties: Arc::new(properties), metrics: ExecutionPlanMetricsSet::new() }
    }

    fn apply(&self, batch: RecordBatch) -> Result<RecordBatch, DataFusionError> {
        let batch = match &self.filter {
            Some(f) => datafusion::physical_plan::filter::batch_filter(&batch, f)?,
            None => batch,
        };
        let rows = batch.num_rows();
        let arrays = self
            .columns
            .iter()
            .map(|(e, _)| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), arrays, &RecordBatchOptions::new().with_row_count(Some(rows)))?)
    }
}

impl DisplayAs for PolicyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PolicyExec: ")?;
        if let Some(filter) = &self.filter {
            write!(f, "row_filter={filter}, ")?;
        }
        let columns: Vec<String> = self.columns.iter().map(|(e, name)| format!("{e} as {name}")).collect();
        write!(f, "columns=[{}]", columns.join(", "))?;
        // The scan inside, described but not a child: its metrics (rows before the row filter) would tell
        // how many rows the policy hides.
        let scan = datafusion::physical_plan::displayable(self.input.as_ref()).indent(false).to_string();
        let scan: Vec<&str> = scan.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        write!(f, ", scan=[{}]", scan.join(" <- "))
    }
}

impl ExecutionPlan for PolicyExec {
    fn name(&self) -> &str {
        "PolicyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    /// None: the scan belongs to the policy. No optimizer rule reaches into it, and `EXPLAIN ANALYZE`
    /// shows this operator's output, never the scan's unfiltered counts.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::common::Result<TreeNodeRecursion>,
    ) -> datafusion::common::Result<TreeNodeRecursion> {
        for e in self.filter.iter().chain(self.columns.iter().map(|(e, _)| e)) {
            if f(e)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    #[allow(deprecated)] // required by the trait; `replace_children` calls it
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() { Ok(self) } else { Err(DataFusionError::Internal("PolicyExec has no children".into())) }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> datafusion::common::Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let this = PolicyExec::new(self.input.clone(), self.filter.clone(), self.columns.clone(), self.schema.clone());
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let output = input.map(move |batch| {
            let out = batch.and_then(|b| this.apply(b))?;
            output_rows.add(out.num_rows());
            Ok(out)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), output)))
    }
}
