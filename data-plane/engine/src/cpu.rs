//! CPU shared fairly between tenants.
//!
//! DataFusion runs a query as tokio tasks that poll operator streams; tokio knows nothing of tenants, so
//! a tenant with four CPU-bound statements would get four times the CPU of a neighbour with one. Here
//! every stream a task polls first passes its tenant's [`Gate`]: at most one operator poll runs per core,
//! and when polls wait for a core the next one goes to the waiting tenant that has used the least CPU
//! for its weight (the virtual-time rule of fair queueing). A tenant running bombs slows itself; the
//! others wait at most about one poll — which [`FairShareExec`] keeps short by yielding every few
//! batches. Polls that wait for an API hold no core: they return `Pending` and give it back.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Statistics;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{CardinalityEffect, SchedulingType, replace_children_if_necessary};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterDescription, FilterPushdownPhase, FilterPushdownPropagation,
};
use datafusion::physical_plan::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// How long one poll may hold a core while another tenant's poll waits for one. Past it, the next
/// gate down the operator tree hands the core back (returns `Pending` after waking its task, as tokio's
/// cooperative budget does), so a CPU-bound statement is preempted every few milliseconds.
pub const SLICE: Duration = Duration::from_millis(2);

/// A tenant that took a core this recently counts as active.
const ACTIVE: Duration = Duration::from_millis(100);

/// Cores handed out to tenants' operator polls.
#[derive(Debug)]
pub struct CpuScheduler {
    cores: usize,
    state: Mutex<State>,
    /// Polls waiting for a core (a copy of the count under the lock, read without it).
    waiting: AtomicUsize,
}

#[derive(Debug, Default)]
struct State {
    /// Cores taken, including those handed to a waiting gate that has not polled yet.
    running: usize,
    waiting: usize,
    next_gate: u64,
    /// Virtual time of the latest hand-off; a tenant coming back from idle starts here, so being idle
    /// banks no credit.
    clock: f64,
    tenants: HashMap<Arc<str>, Account>,
    /// Gates handed a core while they waited; they take it on their next poll.
    granted: HashSet<u64>,
}

#[derive(Debug, Default)]
struct Account {
    /// CPU seconds used, divided by the tenant's weight.
    used: f64,
    running: usize,
    queue: VecDeque<(u64, Waker)>,
    /// When a poll of this tenant last took a core.
    entered: Option<Instant>,
}

impl State {
    fn account(&mut self, tenant: &Arc<str>) -> &mut Account {
        self.tenants.entry(tenant.clone()).or_default()
    }

    /// Whether `tenant` holds as many cores as it may while others are active. One core always stays
    /// for the others: a poll that cannot be preempted (a large copy, a spill) then delays them by
    /// nothing, not by its length.
    fn capped(&self, tenant: &Arc<str>, cores: usize, now: Instant) -> bool {
        let running = self.tenants.get(tenant).map_or(0, |a| a.running);
        running >= (cores - 1).max(1)
            && self.tenants.iter().any(|(t, a)| {
                t != tenant
                    && (a.running > 0
                        || !a.queue.is_empty()
                        || a.entered.is_some_and(|at| now.saturating_duration_since(at) < ACTIVE))
            })
    }

    /// Gives a freed core to the waiting tenant that has used least and may take it, or frees it.
    /// Returns the waker to call once the lock is released.
    fn hand_off(&mut self, cores: usize) -> Option<Waker> {
        let now = Instant::now();
        let next = self
            .tenants
            .iter()
            .filter(|(t, a)| !a.queue.is_empty() && !self.capped(t, cores, now))
            .min_by(|(_, a), (_, b)| a.used.total_cmp(&b.used))
            .map(|(t, a)| (t.clone(), a.used));
        let Some((next, used)) = next else {
            self.running -= 1;
            return None;
        };
        let (gate, waker) = self.account(&next).queue.pop_front()?;
        self.waiting -= 1;
        self.clock = self.clock.max(used);
        self.granted.insert(gate);
        Some(waker)
    }
}

impl CpuScheduler {
    /// A scheduler with one slot per core the process may use.
    pub fn new(cores: usize) -> Arc<Self> {
        Arc::new(CpuScheduler { cores: cores.max(1), state: Mutex::new(State::default()), waiting: AtomicUsize::new(0) })
    }

    pub fn for_this_machine() -> Arc<Self> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// `tenant`'s share, weighted (1.0 is the default weight).
    pub fn share(self: &Arc<Self>, tenant: &str, weight: f64) -> Share {
        Share { scheduler: self.clone(), tenant: tenant.into(), weight: if weight > 0.0 { weight } else { 1.0 } }
    }

    fn lock(&self) -> Locked<'_> {
        Locked { state: self.state.lock().unwrap_or_else(|e| e.into_inner()), published: &self.waiting }
    }

    /// Whether a poll waits for a core.
    fn contended(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// Tenants' CPU use so far (seconds divided by weight), for tests and diagnostics.
    pub fn used(&self, tenant: &str) -> f64 {
        self.lock().tenants.get(tenant).map_or(0.0, |a| a.used)
    }
}

/// The scheduler's state, locked; publishes the count of waiting polls when released.
struct Locked<'a> {
    state: std::sync::MutexGuard<'a, State>,
    published: &'a AtomicUsize,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.published.store(self.state.waiting, Ordering::Relaxed);
    }
}

/// What a query's session carries: its tenant's claim on the scheduler.
#[derive(Debug, Clone)]
pub struct Share {
    scheduler: Arc<CpuScheduler>,
    tenant: Arc<str>,
    weight: f64,
}

impl Share {
    pub fn gate(&self) -> Gate {
        let id = {
            let mut s = self.scheduler.lock();
            s.next_gate += 1;
            s.next_gate
        };
        Gate { share: self.clone(), id, queued: false }
    }

    fn release(&self, ran: Duration) {
        let waker = {
            let mut s = self.scheduler.lock();
            let account = s.account(&self.tenant);
            account.used += ran.as_secs_f64() / self.weight;
            account.running -= 1;
            s.hand_off(self.scheduler.cores)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// One stream's place in line for a core.
#[derive(Debug)]
pub struct Gate {
    share: Share,
    id: u64,
    queued: bool,
}

impl Gate {
    /// Ready once this stream holds a core; the holder must give it back with [`Held`]'s drop.
    fn poll_enter(&mut self, cx: &mut Context<'_>) -> Poll<Held<'_>> {
        let cores = self.share.scheduler.cores;
        let mut s = self.share.scheduler.lock();
        let granted = s.granted.remove(&self.id);
        let now = Instant::now();
        let free = !granted && !self.queued && s.running < cores && !s.capped(&self.share.tenant, cores, now);
        if granted || free {
            if free {
                s.running += 1;
                let clock = s.clock;
                let account = s.account(&self.share.tenant);
                if account.running == 0 && account.queue.is_empty() {
                    account.used = account.used.max(clock);
                }
            }
            let account = s.account(&self.share.tenant);
            account.running += 1;
            account.entered = Some(now);
            self.queued = false;
            return Poll::Ready(Held { share: &self.share, since: now });
        }
        let clock = s.clock;
        let id = self.id;
        let account = s.account(&self.share.tenant);
        if self.queued {
            if let Some(entry) = account.queue.iter_mut().find(|(g, _)| *g == id) {
                entry.1.clone_from(cx.waker());
            }
        } else {
            if account.running == 0 && account.queue.is_empty() {
                account.used = account.used.max(clock);
            }
            account.queue.push_back((id, cx.waker().clone()));
            s.waiting += 1;
            self.queued = true;
        }
        Poll::Pending
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if !self.queued {
            return;
        }
        let waker = {
            let mut s = self.share.scheduler.lock();
            if s.granted.remove(&self.id) {
                // Handed a core it will never use: pass it on.
                s.hand_off(self.share.scheduler.cores)
            } else {
                let id = self.id;
                let account = s.account(&self.share.tenant);
                let before = account.queue.len();
                account.queue.retain(|(g, _)| *g != id);
                let removed = before - account.queue.len();
                s.waiting -= removed;
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// A core, held for one poll; charged to the tenant and handed on when dropped (also on unwinding).
struct Held<'a> {
    share: &'a Share,
    since: Instant,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.share.release(self.since.elapsed());
    }
}

thread_local! {
    /// Since when this thread has polled under a held core: the gates below run in the same poll and
    /// let it through until its slice is over.
    static HOLDING: Cell<Option<Instant>> = const { Cell::new(None) };
}

struct Holding;

impl Holding {
    fn enter(since: Instant) -> Self {
        HOLDING.with(|h| h.set(Some(since)));
        Holding
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        HOLDING.with(|h| h.set(None));
    }
}

/// A stream polled only while its tenant holds a core.
pub struct Gated {
    inner: SendableRecordBatchStream,
    gate: Gate,
}

impl Gated {
    pub fn new(inner: SendableRecordBatchStream, gate: Gate) -> Self {
        Gated { inner, gate }
    }
}

impl Stream for Gated {
    type Item = Result<RecordBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(since) = HOLDING.with(Cell::get) {
            if since.elapsed() >= SLICE && this.gate.share.scheduler.contended() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return this.inner.poll_next_unpin(cx);
        }
        let Poll::Ready(held) = this.gate.poll_enter(cx) else {
            return Poll::Pending;
        };
        let holding = Holding::enter(held.since);
        let polled = this.inner.poll_next_unpin(cx);
        drop(holding);
        drop(held);
        polled
    }
}

impl RecordBatchStream for Gated {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }
}

/// Polls its input only while the query's tenant holds a core (see the module), and hands control
/// back to the runtime every few batches so no poll holds a core for long.
#[derive(Debug)]
pub struct FairShareExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl FairShareExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = PlanProperties::clone(input.properties()).with_scheduling_type(SchedulingType::Cooperative).into();
        FairShareExec { input, properties }
    }
}

impl DisplayAs for FairShareExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FairShareExec")
    }
}

impl ExecutionPlan for FairShareExec {
    fn name(&self) -> &str {
        "FairShareExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
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
            (Some(input), true) => Ok(Arc::new(FairShareExec::new(input))),
            _ => Err(DataFusionError::Internal("FairShareExec takes one input".into())),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let share = context.session_config().get_extension::<Share>();
        let stream = make_cooperative(self.input.execute(partition, context)?);
        Ok(match share {
            Some(share) => Box::pin(Gated::new(stream, share.gate())),
            None => stream,
        })
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
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

    // Filters, including the dynamic ones a join publishes, pass through to the input.
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        Ok(FilterPushdownPropagation::if_all(child_pushdown_result))
    }
}

/// Operators that take one input batch per output batch: no loop of theirs needs a gate below it.
const ONE_FOR_ONE: &[&str] = &["CooperativeExec", "FairShareExec", "ProjectionExec"];

/// Puts a [`FairShareExec`] at the plan's root and under every operator that may loop over its input
/// within one poll (aggregates, joins, sorts, filters, and those that poll their inputs from tasks of
/// their own), so every poll is gated, yields every few batches, and gives its core back when its slice
/// is over. Runs after DataFusion's own rules.
#[derive(Debug, Default)]
pub struct FairShare;

fn fair(node: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
    if node.name() == "FairShareExec" { node.clone() } else { Arc::new(FairShareExec::new(node.clone())) }
}

impl PhysicalOptimizerRule for FairShare {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = plan
            .transform_up(|node| {
                if node.children().is_empty() || ONE_FOR_ONE.contains(&node.name()) {
                    return Ok(Transformed::no(node));
                }
                let children = node.children().into_iter().map(fair).collect();
                Ok(Transformed::yes(replace_children_if_necessary(node, children)?))
            })?
            .data;
        Ok(fair(&plan))
    }

    fn name(&self) -> &str {
        "omnisql_fair_share"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker;

    /// A held core that has run for `ran`, as if the poll had taken that long.
    fn ran(mut held: Held<'_>, ran: Duration) {
        held.since -= ran;
    }

    fn context() -> Context<'static> {
        Context::from_waker(Box::leak(Box::new(noop_waker())))
    }

    #[test]
    fn a_free_core_is_taken_at_once_and_given_back() {
        let scheduler = CpuScheduler::new(1);
        let mut gate = scheduler.share("a", 1.0).gate();
        let mut cx = context();
        let Poll::Ready(held) = gate.poll_enter(&mut cx) else { panic!("a free core waits") };
        drop(held);
        assert!(gate.poll_enter(&mut cx).is_ready());
    }

    #[test]
    fn the_tenant_that_used_least_gets_the_next_core() {
        let scheduler = CpuScheduler::new(1);
        let heavy = scheduler.share("heavy", 1.0);
        let light = scheduler.share("light", 1.0);
        let mut cx = context();
        let mut h1 = heavy.gate();
        let mut h2 = heavy.gate();
        let mut l1 = light.gate();
        // heavy runs a long poll while its second stream and then light's queue.
        let Poll::Ready(held) = h1.poll_enter(&mut cx) else { panic!() };
        assert!(h2.poll_enter(&mut cx).is_pending());
        assert!(l1.poll_enter(&mut cx).is_pending());
        ran(held, Duration::from_millis(5));
        // heavy queued first, but light has used less: the core goes to light.
        assert!(h2.poll_enter(&mut cx).is_pending());
        let Poll::Ready(held) = l1.poll_enter(&mut cx) else { panic!("light was passed over") };
        drop(held);
        assert!(h2.poll_enter(&mut cx).is_ready());
        assert!(scheduler.used("heavy") >= 0.005);
    }

    #[test]
    fn a_tenant_alone_takes_every_core_but_leaves_one_while_others_are_active() {
        let scheduler = CpuScheduler::new(2);
        let heavy = scheduler.share("heavy", 1.0);
        let mut cx = context();
        let (mut h1, mut h2, mut h3) = (heavy.gate(), heavy.gate(), heavy.gate());
        let Poll::Ready(held1) = h1.poll_enter(&mut cx) else { panic!() };
        let Poll::Ready(held2) = h2.poll_enter(&mut cx) else { panic!("alone, heavy may use both cores") };
        drop((held1, held2));
        // light polls once; for a while heavy may hold only one core, and light finds the other free.
        let mut light = scheduler.share("light", 1.0).gate();
        drop(light.poll_enter(&mut cx));
        let Poll::Ready(held1) = h1.poll_enter(&mut cx) else { panic!() };
        assert!(h2.poll_enter(&mut cx).is_pending(), "heavy took the last core while light is active");
        let Poll::Ready(held_light) = light.poll_enter(&mut cx) else { panic!("no core was left for light") };
        drop(held_light);
        // heavy's own release lets its waiting stream run.
        drop(held1);
        let Poll::Ready(held2) = h2.poll_enter(&mut cx) else { panic!("heavy's waiting stream was not handed the core") };
        assert!(h3.poll_enter(&mut cx).is_pending());
        drop(held2);
        drop(h3);
        let s = scheduler.lock();
        assert_eq!((s.running, s.waiting), (0, 0));
    }

    #[test]
    fn weight_divides_what_a_tenant_is_charged() {
        let scheduler = CpuScheduler::new(1);
        for (tenant, weight) in [("one", 1.0), ("four", 4.0)] {
            let mut gate = scheduler.share(tenant, weight).gate();
            let Poll::Ready(held) = gate.poll_enter(&mut context()) else { panic!() };
            ran(held, Duration::from_millis(8));
        }
        assert!(scheduler.used("four") < scheduler.used("one") / 2.0);
    }

    #[test]
    fn a_dropped_waiter_gives_up_its_place_and_any_core_it_was_handed() {
        let scheduler = CpuScheduler::new(1);
        let share = scheduler.share("a", 1.0);
        let mut cx = context();
        let mut first = share.gate();
        let mut second = share.gate();
        let mut third = share.gate();
        let Poll::Ready(held) = first.poll_enter(&mut cx) else { panic!() };
        assert!(second.poll_enter(&mut cx).is_pending());
        assert!(third.poll_enter(&mut cx).is_pending());
        drop(held); // handed to `second`
        drop(second); // which goes away without using it
        assert!(third.poll_enter(&mut cx).is_ready(), "the core was passed on");
        let s = scheduler.lock();
        assert_eq!((s.running, s.waiting), (0, 0));
    }

    #[test]
    fn an_idle_tenant_banks_no_credit() {
        let scheduler = CpuScheduler::new(1);
        let busy = scheduler.share("busy", 1.0);
        let mut cx = context();
        let mut gate = busy.gate();
        for _ in 0..3 {
            let Poll::Ready(held) = gate.poll_enter(&mut cx) else { panic!() };
            ran(held, Duration::from_millis(3));
        }
        // Contention makes the clock advance to busy's use; a newcomer starts there, not at zero.
        let mut a = busy.gate();
        let mut b = busy.gate();
        let Poll::Ready(held) = a.poll_enter(&mut cx) else { panic!() };
        assert!(b.poll_enter(&mut cx).is_pending());
        drop(held);
        let Poll::Ready(held) = b.poll_enter(&mut cx) else { panic!() };
        let mut newcomer = scheduler.share("new", 1.0).gate();
        assert!(newcomer.poll_enter(&mut cx).is_pending());
        drop(held);
        assert!(scheduler.used("new") >= scheduler.used("busy") - 0.004, "{}", scheduler.used("new"));
    }
}
