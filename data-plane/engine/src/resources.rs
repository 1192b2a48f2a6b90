//! What every query draws from the process: memory, spill space, and (deliberately) no object stores.
//!
//! One DataFusion memory pool bounds the whole data plane ([`MemoryLimits::process`]). Each query gets
//! a [`QueryPool`] in front of it that also holds the query to its own cap and its tenant to a share of
//! the process, so one tenant can neither take the memory others need nor starve them by holding it.
//! Operators that can spill (sort, aggregate, join) spill to one bounded temporary folder; the others
//! fail the query with an error that names the limit. Functions whose output size depends on an
//! argument are bounded separately ([`crate::bounded`]) since they allocate outside the pool.
//!
//! The runtime has no object store at all: no table, `COPY` or URL can reach a file or the network
//! through DataFusion, whatever a statement says.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryLimit, MemoryPool, MemoryReservation};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::object_store::ObjectStore;

/// How much memory queries may hold, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryLimits {
    /// All queries of the data plane together.
    pub process: usize,
    /// One tenant's queries together, as a fraction of `process`.
    pub tenant_share: f64,
    /// One query.
    pub query: usize,
    /// Spill files of all queries together.
    pub spill: u64,
}

impl MemoryLimits {
    /// Limits for a process allowed `process` bytes for queries: a tenant may hold half of it, one query
    /// a quarter, and spill files up to four times it.
    pub fn for_process(process: usize) -> Self {
        MemoryLimits { process, tenant_share: 0.5, query: process / 4, spill: 4 * process as u64 }
    }

    /// The default for this machine: 60% of the container's memory limit (or of the machine's memory),
    /// leaving the rest for the response cache, HTTP bodies, results on their way to clients, and the
    /// allocator's own overhead.
    pub fn from_environment() -> Self {
        let available = container_memory_limit().or_else(machine_memory).unwrap_or(4 << 30);
        Self::for_process((available as f64 * 0.6) as usize)
    }

    /// The largest value one function call may build (see [`crate::bounded`]).
    pub fn max_function_output(&self) -> usize {
        (self.query / 8).max(1 << 20)
    }
}

/// cgroup v2, then v1; `None` when unlimited or not in a container.
fn container_memory_limit() -> Option<usize> {
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<usize>().ok();
    read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .filter(|&limit| limit < (1 << 50))
}

fn machine_memory() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `512MiB`, `2 GiB`, `1.5g`, `1048576`: a size in bytes.
pub fn parse_size(text: &str) -> Option<usize> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number.parse().ok()?;
    let scale = match unit.trim() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    let bytes = n * scale as f64;
    (bytes.is_finite() && bytes >= 1.0).then_some(bytes as usize)
}

/// Bytes as people read them: `512 MiB`, `1.5 GiB`.
pub fn human_bytes(bytes: usize) -> String {
    let b = bytes as f64;
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.0} KiB", b / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.0} MiB", b / 1_048_576.0),
        _ => format!("{:.1} GiB", b / 1_073_741_824.0),
    }
}

/// The process's memory pool, spill folder and tenant accounts; hands each query its runtime.
#[derive(Debug)]
pub struct Resources {
    limits: MemoryLimits,
    pool: Arc<dyn MemoryPool>,
    disk: Arc<DiskManager>,
    tenants: Mutex<HashMap<String, Arc<AtomicUsize>>>,
}

impl Resources {
    pub fn new(limits: MemoryLimits) -> Result<Self> {
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::OsTmpDirectory)
            .with_max_temp_directory_size(limits.spill)
            .build()?;
        Ok(Resources {
            limits,
            pool: Arc::new(GreedyMemoryPool::new(limits.process)),
            disk: Arc::new(disk),
            tenants: Mutex::default(),
        })
    }

    pub fn limits(&self) -> &MemoryLimits {
        &self.limits
    }

    /// Bytes held by all queries now.
    pub fn reserved(&self) -> usize {
        self.pool.reserved()
    }

    /// A runtime for one query of `tenant`: its own pool in front of the process's, the shared spill
    /// folder, and no object stores.
    pub fn runtime_for(&self, tenant: &str) -> Result<Arc<RuntimeEnv>> {
        let tenant_used = self.tenants.lock().unwrap_or_else(|e| e.into_inner()).entry(tenant.to_string()).or_default().clone();
        let pool = QueryPool { process: self.pool.clone(), used: AtomicUsize::new(0), limits: self.limits, tenant_used };
        let mut runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .with_object_store_registry(Arc::new(NoObjectStores))
            .build()?;
        runtime.disk_manager = self.disk.clone();
        Ok(Arc::new(runtime))
    }
}

/// One query's view of the process pool: it counts what the query and its tenant hold, and refuses
/// past their caps before asking the process pool.
#[derive(Debug)]
struct QueryPool {
    process: Arc<dyn MemoryPool>,
    used: AtomicUsize,
    limits: MemoryLimits,
    tenant_used: Arc<AtomicUsize>,
}

impl QueryPool {
    fn tenant_limit(&self) -> usize {
        (self.limits.process as f64 * self.limits.tenant_share) as usize
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        self.tenant_used.fetch_sub(bytes, Ordering::Relaxed);
    }
}

impl std::fmt::Display for QueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "query pool: {} of {} held", human_bytes(self.reserved()), human_bytes(self.limits.query))
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "omnisql-query"
    }

    fn register(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.process.register(consumer)
    }

    fn unregister(&self, consumer: &datafusion::execution::memory_pool::MemoryConsumer) {
        self.process.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::Relaxed);
        self.tenant_used.fetch_add(additional, Ordering::Relaxed);
        self.process.grow(reservation, additional)
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.release(shrink);
        self.process.shrink(reservation, shrink)
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let query = self.used.fetch_add(additional, Ordering::Relaxed) + additional;
        let tenant = self.tenant_used.fetch_add(additional, Ordering::Relaxed) + additional;
        let refuse = |message: String| {
            self.release(additional);
            Err(DataFusionError::ResourcesExhausted(message))
        };
        if query > self.limits.query {
            return refuse(format!(
                "the query exceeded the memory limit of {} per query ({} needed more by {}): filter more, aggregate \
                 before joining, or add a LIMIT",
                human_bytes(self.limits.query),
                reservation.consumer().name(),
                human_bytes(additional),
            ));
        }
        if tenant > self.tenant_limit() {
            return refuse(format!(
                "your queries together exceeded the memory limit of {} per tenant on this data plane: wait for your \
                 other queries to finish, or make this one smaller",
                human_bytes(self.tenant_limit()),
            ));
        }
        if let Err(e) = self.process.try_grow(reservation, additional) {
            tracing::debug!(error = %e, "process memory pool refused");
            return refuse(format!(
                "the data plane's memory for queries ({}) is in use by other queries: retry shortly",
                human_bytes(self.limits.process),
            ));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limits.query)
    }
}

/// An object store registry with nothing in it, which cannot be given anything: DataFusion finds no
/// store for any path or URL, so no table can be backed by a file or a remote object.
#[derive(Debug)]
struct NoObjectStores;

impl ObjectStoreRegistry for NoObjectStores {
    fn register_store(&self, _url: &url::Url, _store: Arc<dyn ObjectStore>) -> Option<Arc<dyn ObjectStore>> {
        None
    }

    fn get_store(&self, _url: &url::Url) -> Result<Arc<dyn ObjectStore>> {
        Err(DataFusionError::Plan("OmniSQL reads only your connections' tables, never files or URLs".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    #[test]
    fn sizes_read_the_usual_spellings() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("1.5g"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(human_bytes(512 << 20), "512 MiB");
    }

    #[test]
    fn a_query_is_held_to_its_cap_and_a_tenant_to_its_share() {
        let resources = Resources::new(MemoryLimits { process: 1000, tenant_share: 0.5, query: 300, spill: 0 }).unwrap();
        let pool = |tenant| resources.runtime_for(tenant).unwrap().memory_pool.clone();
        let a1 = pool("a");
        let r1 = MemoryConsumer::new("sort").register(&a1);
        assert!(r1.try_grow(301).unwrap_err().to_string().contains("memory limit of 300 B per query"));
        r1.try_grow(300).unwrap();
        let a2 = pool("a");
        let r2 = MemoryConsumer::new("join").register(&a2);
        r2.try_grow(200).unwrap();
        // Tenant a holds 500 of its 500; a third query of it is refused, another tenant is not.
        let r3 = MemoryConsumer::new("agg").register(&pool("a"));
        assert!(r3.try_grow(1).unwrap_err().to_string().contains("per tenant"));
        let b = MemoryConsumer::new("agg").register(&pool("b"));
        b.try_grow(300).unwrap();
        assert_eq!(resources.reserved(), 800);
        // The process has 200 left: tenant b's second query gets them, then the process refuses.
        let b2 = MemoryConsumer::new("agg").register(&pool("b"));
        b2.try_grow(200).unwrap();
        let c = MemoryConsumer::new("agg").register(&pool("c"));
        assert!(c.try_grow(1).unwrap_err().to_string().contains("in use by other queries"));
        drop((r1, r2, b, b2));
        assert_eq!(resources.reserved(), 0);
        c.try_grow(300).unwrap();
    }
}
