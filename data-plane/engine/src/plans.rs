//! Physical plans kept for statements asked again, fresh data or not: the same text with the same
//! parameters, by the same caller under the same configuration, runs its earlier plan (with state reset)
//! instead of being parsed, planned and optimized again — most of an engine's own cost for a point
//! lookup. Only plans that are safe to run again are kept: made of operators that hold no state between
//! runs once reset, reading API tables only (system and catalog tables answer when planned), and with no
//! function whose answer depends on when it is planned (`now()`, `random()`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::ExecutionPlan;

use crate::Caller;

/// Plans kept per tenant; a tenant at its bound starts again (one tenant never evicts another's).
pub const PER_TENANT: usize = 256;

/// Operators that either hold no state across runs or have it reset by `reset_state`.
const REUSABLE: &[&str] = &[
    "ApiScanExec",
    "FairShareExec",
    "FilterExec",
    "ProjectionExec",
    "RepartitionExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "SortExec",
    "SortPreservingMergeExec",
    "AggregateExec",
    "GlobalLimitExec",
    "LocalLimitExec",
    "CooperativeExec",
    "PlaceholderRowExec",
    "EmptyExec",
];

/// What a kept plan is found under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlanKey {
    pub caller: Caller,
    pub generation: u64,
    pub sql: String,
    pub params: String,
    pub postgres: bool,
}

/// A plan made for one run, and what a later run needs besides it.
#[derive(Debug)]
pub struct KeptPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub schema: SchemaRef,
    pub tables: Vec<String>,
    /// Whether the result may be kept ([`crate::results::cacheable`]), decided on the logical plan.
    pub result_cacheable: bool,
}

#[derive(Debug, Default)]
pub struct PlanCache {
    tenants: Mutex<HashMap<String, HashMap<PlanKey, Arc<KeptPlan>>>>,
}

impl PlanCache {
    /// The kept plan for `key`, ready to run: its stateful operators reset.
    pub fn get(&self, key: &PlanKey) -> Option<(Arc<dyn ExecutionPlan>, Arc<KeptPlan>)> {
        let kept = self.tenants.lock().unwrap_or_else(|e| e.into_inner()).get(&key.caller.tenant.0)?.get(key)?.clone();
        let plan = datafusion::physical_plan::execution_plan::reset_plan_states(kept.plan.clone()).ok()?;
        Some((plan, kept))
    }

    /// Keeps `kept` under `key` if its plans may run again ([`reusable`]).
    pub fn insert(&self, key: PlanKey, logical: &LogicalPlan, kept: KeptPlan) {
        if !reusable(logical, &kept.plan) {
            return;
        }
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        let plans = tenants.entry(key.caller.tenant.0.clone()).or_default();
        if plans.len() >= PER_TENANT {
            plans.clear();
        }
        plans.insert(key, Arc::new(kept));
    }
}

/// Whether a plan may run again: every operator in [`REUSABLE`], and no function of the statement
/// answers differently from one planning to the next.
pub fn reusable(logical: &LogicalPlan, physical: &Arc<dyn ExecutionPlan>) -> bool {
    let operators = physical.exists(|node| Ok(!REUSABLE.contains(&node.name()))).is_ok_and(|other| !other);
    let volatile = logical
        .exists(|node| {
            Ok(node.expressions().iter().any(|e| {
                e.exists(|e| Ok(matches!(e, Expr::ScalarFunction(f) if f.func.signature().volatility != Volatility::Immutable)))
                    .unwrap_or(true)
            }))
        })
        .unwrap_or(true);
    let has_api_scan = physical.exists(|node| Ok(node.name() == "ApiScanExec")).unwrap_or(false);
    operators && !volatile && has_api_scan
}
