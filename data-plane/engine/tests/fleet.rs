//! Fleet-wide limits through a real Redis server: two data-plane replicas sharing a credential stay
//! within its limit together; without Redis, each would spend the whole limit on its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use omnisql_connector::shared_limit::SharedLimiter;
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

/// A throwaway `redis-server` on a free port; killed on drop.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        let out = BufReader::new(child.stdout.take().unwrap());
        for line in out.lines() {
            if line.unwrap().contains("Ready to accept connections") {
                break;
            }
        }
        Redis { child, url: format!("redis://127.0.0.1:{port}") }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn replica(sb: &Sandbox, shared: Option<SharedLimiter>) -> Arc<Engine> {
    let connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut tenant = testing::single_tenant("acme", "p", TOKEN, connections);
    for c in &mut tenant.connections {
        c.requests_per_second = Some(10.0);
    }
    let options =
        EngineOptions { cache_bytes: None, shared_limits: shared, connectors: omnisql_connectors::all(), ..Default::default() };
    Arc::new(Engine::new(&testing::config(vec![tenant]), options).unwrap())
}

async fn hammer(engine: Arc<Engine>, until: Instant) {
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let caller = Caller::new("acme", "p");
            while Instant::now() < until {
                let _ = engine.query(&caller, "SELECT count(*) FROM salesforce.account").await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn salesforce_requests(sb: &Sandbox, reset: bool) -> u64 {
    let c = reqwest::Client::new();
    if reset {
        c.post(format!("{}/_sandbox/stats/reset", sb.salesforce_url)).send().await.unwrap();
        return 0;
    }
    let s: serde_json::Value = c.get(format!("{}/_sandbox/stats", sb.salesforce_url)).send().await.unwrap().json().await.unwrap();
    s["endpoints"]["GET /services/data/{version}/query"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn two_replicas_sharing_a_credential_stay_within_its_limit_through_redis() {
    let redis = Redis::start();
    let sb = sandbox(SandboxConfig::default()).await;
    let window = Duration::from_secs(2);

    let mut sent = Vec::new();
    let mut elapsed = Vec::new();
    for shared in [false, true] {
        let limiter = if shared { Some(SharedLimiter::connect(&redis.url).await.unwrap()) } else { None };
        let (a, b) = (replica(&sb, limiter.clone()), replica(&sb, limiter));
        // Log in and discover objects first, so only queries are counted.
        for e in [&a, &b] {
            let caller = Caller::new("acme", "p");
            e.query(&caller, "SELECT count(*) FROM salesforce.account").await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await; // let the first window pass
        salesforce_requests(&sb, true).await;
        let started = Instant::now();
        tokio::join!(hammer(a, started + window), hammer(b, started + window));
        elapsed.push(started.elapsed().as_secs_f64());
        sent.push(salesforce_requests(&sb, false).await);
    }
    let (independent, shared) = (sent[0], sent[1]);
    println!(
        "queries sent at 10/s per credential: two independent replicas {independent} in {:.2} s, sharing through Redis {shared} in {:.2} s",
        elapsed[0], elapsed[1]
    );
    // At most 10 in any window (1.07 s with its margin): 10 per started window of the run.
    let allowed = 10 * (elapsed[1] / 1.07).ceil() as u64;
    assert!(shared <= allowed, "the replicas together sent {shared}, more than {allowed}");
    let independent_rate = independent as f64 / elapsed[0];
    let shared_rate = shared as f64 / elapsed[1];
    assert!(
        independent_rate > 1.4 * shared_rate,
        "without Redis each replica spends the limit on its own ({independent_rate:.1}/s vs {shared_rate:.1}/s)"
    );
}
