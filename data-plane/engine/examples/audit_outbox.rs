//! How much the audit outbox costs a query: latency of one durable append and events per second, with
//! 1 to 64 concurrent queries sharing syncs (group commit), on the disk of `$TMPDIR`.
//!
//! ```sh
//! cargo run -p omnisql-engine --example audit_outbox
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use omnisql_engine::audit::{AuditEvent, Outbox};

fn event(id: String) -> AuditEvent {
    AuditEvent {
        id,
        tenant: "acme".into(),
        principal: "ann".into(),
        sql: "SELECT repo_full_name, number, title FROM github.issues WHERE state = 'open' LIMIT 5".into(),
        tables: vec!["github.issues".into()],
        api_requests: 4,
        rows: 5,
        bytes: 2048,
        duration_ms: 12.5,
        outcome: "ok".into(),
        error: None,
        started_at: 0,
        policy_revision: String::new(),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() {
    println!("{:>8} {:>8} {:>10} {:>10} {:>10} {:>12}", "writers", "events", "p50 ms", "p99 ms", "max ms", "events/s");
    for writers in [1usize, 8, 64] {
        let dir = std::env::temp_dir().join(format!("omnisql-outbox-bench-{}", uuid::Uuid::new_v4().simple()));
        let outbox = Outbox::open(&dir).unwrap();
        let per_writer = 2000 / writers.max(1);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let outbox = outbox.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_writer);
                for i in 0..per_writer {
                    let id = format!("{w}-{i}");
                    let t = Instant::now();
                    outbox.started(&id, "acme", "ann", "SELECT 1", 0);
                    outbox.finished(event(id)).await.unwrap();
                    latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.sort_by(|a, b| a.total_cmp(b));
        let at = |p: f64| all[((all.len() - 1) as f64 * p) as usize];
        println!(
            "{writers:>8} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
            all.len(),
            at(0.5),
            at(0.99),
            all[all.len() - 1],
            all.len() as f64 / elapsed
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
