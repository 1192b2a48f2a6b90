//! Fleet-wide rate limits in Redis: when several data-plane replicas share a credential, each request
//! also takes a slot in a sliding window kept in Redis (one atomic script, Redis's own clock), so the
//! replicas together stay within the API's limit. A pause learned from one replica (quota exhausted,
//! `Retry-After`) holds for all. If Redis cannot be reached, each replica falls back to its own limiter
//! and says so in the log.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::governor::BucketKey;

const TAKE: &str = r"
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
";

#[derive(Clone)]
pub struct SharedLimiter {
    redis: ConnectionManager,
    script: redis::Script,
    prefix: String,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// Connects to `url` (e.g. `redis://127.0.0.1:6379`).
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let redis = ConnectionManager::new(client).await?;
        Ok(SharedLimiter { redis, script: redis::Script::new(TAKE), prefix: "omnisql:limit".into() })
    }

    fn keys(&self, key: &BucketKey) -> (String, String) {
        let base = format!("{}:{:016x}:{}", self.prefix, key.credential, key.bucket);
        (format!("{base}:window"), format!("{base}:pause"))
    }

    /// Takes a slot of `capacity` per `window`: `Ok(None)` when granted, `Ok(Some(wait))` when full.
    pub async fn take(&self, key: &BucketKey, capacity: f64, window: Duration) -> Result<Option<Duration>, redis::RedisError> {
        let (window_key, pause_key) = self.keys(key);
        let member = format!("{:x}", rand_id());
        let mut conn = self.redis.clone();
        let wait_ms: i64 = self
            .script
            .key(window_key)
            .key(pause_key)
            .arg(window.as_millis() as u64)
            .arg(capacity.floor().max(1.0) as u64)
            .arg(member)
            .invoke_async(&mut conn)
            .await?;
        Ok((wait_ms > 0).then(|| Duration::from_millis(wait_ms as u64)))
    }

    /// No slots for anyone until `for_how_long` has passed.
    pub async fn pause(&self, key: &BucketKey, for_how_long: Duration) -> Result<(), redis::RedisError> {
        let (_, pause_key) = self.keys(key);
        let mut conn = self.redis.clone();
        redis::cmd("SET")
            .arg(pause_key)
            .arg(1)
            .arg("PX")
            .arg(for_how_long.as_millis().max(1) as u64)
            .query_async::<()>(&mut conn)
            .await
    }
}

/// A unique member per grant (time and a counter are enough within one process; the pid across).
fn rand_id() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    t ^ ((std::process::id() as u128) << 96) ^ ((N.fetch_add(1, Ordering::Relaxed) as u128) << 64)
}
