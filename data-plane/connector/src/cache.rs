//! The response cache: API answers kept in memory, bounded by bytes, keyed by tenant, connection,
//! credential and the normalised request, so nothing is ever shared between tenants or credentials.
//! A query states how old an answer it accepts; older entries are revalidated (GitHub's `ETag`, where a
//! 304 costs no quota) or fetched again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::flights::Flights;
use crate::lru::{Lru, TenantKey};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub tenant: String,
    pub connection: String,
    /// A fingerprint of the connection's credentials: a new token never sees the old one's answers.
    pub credential: u64,
    /// Method, URL and sorted query parameters.
    pub request: String,
}

/// What one tenant's queries got from the cache.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Stale entries confirmed current by the API (304), at no quota cost.
    pub revalidations: u64,
    /// Upstream calls avoided (hits, answers shared in flight) or made free (revalidations).
    pub saved_calls: u64,
    /// Answers taken from an identical request already in flight (possibly another tenant's with the
    /// same credential) instead of asking again.
    pub coalesced: u64,
    /// Popular entries fetched again in the background before they grew too old, so no query waited.
    pub refreshed_ahead: u64,
}

#[derive(Debug, Clone)]
pub struct Cached {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    /// The raw body: what is counted against the cache's memory bound is what is kept.
    pub body: bytes::Bytes,
    pub fetched_at: Instant,
    pub fetched_wall: SystemTime,
    pub etag: Option<String>,
    /// Times the entry was read since it was stored: refresh-ahead keeps only popular entries warm.
    pub hits: u64,
}

#[derive(Debug)]
struct Inner {
    entries: Lru<CacheKey, Cached>,
    stats: HashMap<String, CacheStats>,
}

impl TenantKey for CacheKey {
    fn tenant(&self) -> &str {
        &self.tenant
    }
}

#[derive(Debug)]
pub struct ResponseCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
    flights: Arc<Flights>,
}

impl ResponseCache {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        let inner = Inner { entries: Lru::new(max_bytes), stats: HashMap::new() };
        Arc::new(ResponseCache { max_bytes, inner: Mutex::new(inner), flights: Flights::new() })
    }

    /// Requests in flight, shared by every client of this cache.
    pub fn flights(&self) -> &Arc<Flights> {
        &self.flights
    }

    /// The entry, without counting a use (a background refresh is not a reader).
    pub fn peek(&self, key: &CacheKey) -> Option<Cached> {
        self.lock().entries.peek_mut(key).map(|c| c.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &CacheKey) -> Option<Cached> {
        let mut inner = self.lock();
        let cached = inner.entries.get_mut(key)?;
        cached.hits += 1;
        Some(cached.clone())
    }

    pub fn put(&self, key: CacheKey, status: reqwest::StatusCode, headers: reqwest::header::HeaderMap, body: bytes::Bytes) {
        let size = body.len() + key.request.len() + 256;
        if size > self.max_bytes / 4 {
            return; // one answer may not crowd out the rest
        }
        let etag = headers.get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        // A copy of exactly the body: the buffer it came in may be larger, and would be kept whole.
        let body = bytes::Bytes::copy_from_slice(&body);
        let cached = Cached { status, headers, body, fetched_at: Instant::now(), fetched_wall: SystemTime::now(), etag, hits: 0 };
        self.lock().entries.insert(key, cached, size);
    }

    /// Marks an entry current again after the API answered 304.
    pub fn refresh(&self, key: &CacheKey) {
        if let Some(c) = self.lock().entries.peek_mut(key) {
            c.fetched_at = Instant::now();
            c.fetched_wall = SystemTime::now();
        }
    }

    pub fn count(&self, tenant: &str, f: impl FnOnce(&mut CacheStats)) {
        f(self.lock().stats.entry(tenant.to_string()).or_default());
    }

    pub fn stats(&self, tenant: &str) -> CacheStats {
        self.lock().stats.get(tenant).copied().unwrap_or_default()
    }

    pub fn bytes(&self) -> usize {
        self.lock().entries.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn key(tenant: &str, request: &str) -> CacheKey {
        CacheKey { tenant: tenant.into(), connection: "c".into(), credential: 1, request: request.into() }
    }

    fn put(cache: &ResponseCache, k: CacheKey, size: usize) {
        let body = bytes::Bytes::from(vec![b' '; size - k.request.len() - 256]);
        cache.put(k, StatusCode::OK, HeaderMap::new(), body);
    }

    #[test]
    fn entries_are_per_tenant_and_the_least_recently_used_goes_first() {
        let cache = ResponseCache::new(1600);
        put(&cache, key("a", "GET /x"), 400);
        assert!(cache.get(&key("b", "GET /x")).is_none(), "another tenant never sees it");
        put(&cache, key("a", "GET /y"), 400);
        put(&cache, key("a", "GET /z"), 400);
        assert!(cache.get(&key("a", "GET /x")).is_some()); // x is now the most recent
        put(&cache, key("a", "GET /w"), 400);
        put(&cache, key("a", "GET /v"), 400);
        assert!(cache.get(&key("a", "GET /y")).is_none(), "y was least recently used");
        assert!(cache.get(&key("a", "GET /x")).is_some());
        assert!(cache.bytes() <= 1600);
    }

    #[test]
    fn a_tenant_over_its_share_evicts_its_own_answers_not_its_neighbours() {
        let cache = ResponseCache::new(4000);
        for quiet in ["a", "b", "c"] {
            put(&cache, key(quiet, "GET /q"), 400);
        }
        for i in 0..20 {
            put(&cache, key("busy", &format!("GET /q{i:02}")), 400);
        }
        // Four tenants hold answers: the busy one keeps a quarter (1,000 bytes: two answers).
        for quiet in ["a", "b", "c"] {
            assert!(cache.get(&key(quiet, "GET /q")).is_some(), "{quiet}'s answer stays");
        }
        assert!(cache.get(&key("busy", "GET /q19")).is_some());
        assert!(cache.get(&key("busy", "GET /q17")).is_none());
        assert_eq!(cache.bytes(), 5 * 400);
    }
}
