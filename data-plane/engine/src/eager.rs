//! Probe sides that start at once. DataFusion polls a hash join's probe side only after its build side is
//! complete. When the probe side holds another join, that join's own build side is not read until then
//! either — and when that build side publishes its keys to an API scan (ADR 0008), the API call that needs
//! them waits for the outer build side's API calls first: one app after another instead of all at once.
//! [`EagerExec`] drives its input from the moment the plan starts, into a small buffer, so every join's
//! build side is read as soon as its data arrives (API scans prefetch their own pages the same way).

use std::fmt;
use std::sync::Arc;

use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{CardinalityEffect, replace_children_if_necessary};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{
    ChildStats, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream, StatisticsArgs,
};
use futures::StreamExt;

/// Batches an eager input may run ahead of its consumer, per partition: enough to have every build side
/// read, small enough that memory stays flat.
const BUFFER_BATCHES: usize = 2;

/// Runs its input on a task of its own from `execute`, buffering up to [`BUFFER_BATCHES`] batches per
/// partition; dropping the output stream stops the task.
#[derive(Debug)]
pub struct EagerExec {
    input: Arc<dyn ExecutionPlan>,
}

impl EagerExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        EagerExec { input }
    }
}

impl DisplayAs for EagerExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "EagerExec")
    }
}

impl ExecutionPlan for EagerExec {
    fn name(&self) -> &str {
        "EagerExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }
    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
    #[allow(deprecated)] // required by the trait; `replace_children` calls it
    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(EagerExec::new(input))),
            _ => Err(DataFusionError::Internal("EagerExec takes one input".into())),
        }
    }
    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }
    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }
    fn statistics_from_inputs(&self, inputs: &[Arc<Statistics>], _args: &StatisticsArgs) -> Result<Arc<Statistics>> {
        Ok(inputs.first().cloned().unwrap_or_else(|| Arc::new(Statistics::new_unknown(&self.schema()))))
    }
    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, context)?;
        // Without a runtime to spawn on (never the case in the data plane), read it lazily.
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(input);
        }
        let mut builder = RecordBatchReceiverStream::builder(input.schema(), BUFFER_BATCHES);
        let tx = builder.tx();
        builder.spawn(async move {
            while let Some(batch) = input.next().await {
                let failed = batch.is_err();
                // The consumer is gone (finished or cancelled), or the error is passed on: stop.
                if tx.send(batch).await.is_err() || failed {
                    break;
                }
            }
            Ok(())
        });
        Ok(builder.build())
    }
}

/// Puts an [`EagerExec`] over the probe side of every hash join whose probe side holds a hash join of its
/// own. Runs after DataFusion's rules, so dynamic filters are already in place.
#[derive(Debug, Default)]
pub struct EagerProbe;

fn holds_a_hash_join(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let _ = plan.apply(|node| {
        found = node.name() == "HashJoinExec";
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

impl PhysicalOptimizerRule for EagerProbe {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if node.name() != "HashJoinExec" {
                return Ok(Transformed::no(node));
            }
            let mut children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
            match children.get_mut(1) {
                Some(probe) if holds_a_hash_join(probe) && probe.name() != "EagerExec" => {
                    *probe = Arc::new(EagerExec::new(probe.clone()));
                    Ok(Transformed::yes(replace_children_if_necessary(node, children)?))
                }
                _ => Ok(Transformed::no(node)),
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "omnisql_eager_probe"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
