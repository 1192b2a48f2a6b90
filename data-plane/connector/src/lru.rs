//! Entries bounded by bytes, in all and per tenant, least recently used out first: the bookkeeping of the
//! response cache and of the engine's kept results.
//!
//! A tenant holds at most an equal share of the budget among the tenants holding entries, and never less
//! than a quarter: one tenant's many different questions evict its own older entries, not its neighbours';
//! a data plane serving one tenant gives it the whole budget.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// The fewest tenants the budget is divided between once several hold entries.
const TENANT_SHARE: usize = 4;

/// A key that belongs to one tenant.
pub trait TenantKey: Eq + Hash + Clone {
    fn tenant(&self) -> &str;
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    size: usize,
    tick: u64,
}

#[derive(Debug)]
pub struct Lru<K, V> {
    max_bytes: usize,
    entries: HashMap<K, Slot<V>>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, K>,
    bytes: usize,
    tenant_bytes: HashMap<String, usize>,
    tick: u64,
}

impl<K: TenantKey, V> Lru<K, V> {
    pub fn new(max_bytes: usize) -> Self {
        Lru { max_bytes, entries: HashMap::new(), order: BTreeMap::new(), bytes: 0, tenant_bytes: HashMap::new(), tick: 0 }
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The entry, marked as the most recently used.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.tick += 1;
        let slot = self.entries.get_mut(key)?;
        let old = std::mem::replace(&mut slot.tick, self.tick);
        self.order.remove(&old);
        self.order.insert(self.tick, key.clone());
        Some(&mut slot.value)
    }

    /// The entry, without counting a use.
    pub fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        self.entries.get_mut(key).map(|s| &mut s.value)
    }

    /// Keeps `value` (counted as `size` bytes) under `key`, replacing an older one, then evicts: first the
    /// tenant's own oldest entries while it is over its share, then the oldest of all while over budget.
    pub fn insert(&mut self, key: K, value: V, size: usize) {
        self.remove(&key);
        self.tick += 1;
        let tenant = key.tenant().to_string();
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, Slot { value, size, tick: self.tick });
        self.bytes += size;
        *self.tenant_bytes.entry(tenant.clone()).or_default() += size;
        let holding = self.tenant_bytes.values().filter(|b| **b > 0).count().clamp(1, TENANT_SHARE);
        while self.tenant_bytes(&tenant) > self.max_bytes / holding {
            let Some(oldest) = self.order.values().find(|k| k.tenant() == tenant).cloned() else { break };
            self.remove(&oldest);
        }
        while self.bytes > self.max_bytes {
            let Some(oldest) = self.order.values().next().cloned() else { break };
            self.remove(&oldest);
        }
    }

    pub fn remove(&mut self, key: &K) {
        if let Some(old) = self.entries.remove(key) {
            self.order.remove(&old.tick);
            self.bytes -= old.size;
            if let Some(b) = self.tenant_bytes.get_mut(key.tenant()) {
                *b -= old.size;
            }
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes `tenant`'s entries hold.
    pub fn tenant_bytes(&self, tenant: &str) -> usize {
        self.tenant_bytes.get(tenant).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Hash)]
    struct Key(&'static str, String);

    impl TenantKey for Key {
        fn tenant(&self) -> &str {
            self.0
        }
    }

    fn k(tenant: &'static str, name: impl Into<String>) -> Key {
        Key(tenant, name.into())
    }

    #[test]
    fn the_least_recently_used_goes_first_and_a_replaced_entry_counts_once() {
        let mut lru = Lru::new(400);
        for name in ["a", "b", "c", "d"] {
            lru.insert(k("t", name), (), 100);
        }
        lru.insert(k("t", "b"), (), 100);
        assert_eq!(lru.bytes(), 400);
        assert!(lru.get_mut(&k("t", "a")).is_some(), "a is now the most recently used");
        lru.insert(k("t", "e"), (), 100);
        assert!(lru.peek_mut(&k("t", "c")).is_none(), "c was the least recently used");
        for name in ["a", "b", "d", "e"] {
            assert!(lru.peek_mut(&k("t", name)).is_some(), "{name}");
        }
    }

    #[test]
    fn a_tenant_alone_may_fill_the_budget_beside_others_it_keeps_its_share() {
        let mut lru = Lru::new(1600);
        for i in 0..16 {
            lru.insert(k("only", i.to_string()), (), 100);
        }
        assert_eq!(lru.tenant_bytes("only"), 1600);

        let mut lru = Lru::new(1600);
        for quiet in ["a", "b", "c"] {
            lru.insert(k(quiet, "q"), (), 100);
        }
        for i in 0..40 {
            lru.insert(k("busy", format!("{i:02}")), (), 100);
        }
        assert_eq!(lru.tenant_bytes("busy"), 400, "a quarter among four tenants");
        for quiet in ["a", "b", "c"] {
            assert!(lru.peek_mut(&k(quiet, "q")).is_some(), "{quiet}'s entry stays");
        }
        assert!(lru.peek_mut(&k("busy", "39")).is_some());
        assert!(lru.peek_mut(&k("busy", "35")).is_none());
        lru.remove(&k("busy", "39"));
        assert_eq!((lru.tenant_bytes("busy"), lru.bytes()), (300, 600));
    }
}
