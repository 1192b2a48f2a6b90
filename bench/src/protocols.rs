//! The same questions over Flight SQL and over the Postgres wire protocol, one connection each, in one
//! run: what a Postgres client pays (row-by-row text encoding) against Arrow batches.

use std::time::Instant;

use omnisql_data_plane::client;
use serde::Serialize;

use crate::plane::DataPlane;
use crate::{BenchError, percentile};

/// One workload over one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct ProtocolResult {
    pub workload: String,
    /// `flight_sql` or `postgres`.
    pub protocol: &'static str,
    pub runs: usize,
    pub errors: usize,
    pub rows: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Rows and result bytes per second of one connection running the workload back to back. Bytes are
    /// what the client decoded: Arrow buffers over Flight SQL, the text values over Postgres.
    pub rows_per_s: f64,
    pub bytes_per_s: f64,
}

/// A result of 100,000 rows made by the engine itself (no upstream call): the protocols' own cost.
pub const ROWS_100K: &str =
    "SELECT value AS id, concat('row ', value) AS label, value * 1.5 AS amount FROM generate_series(1, 100000)";

/// Runs each `(name, sql, runs)` over both protocols on `plane`, as `token`.
pub async fn compare(
    plane: &DataPlane,
    token: &str,
    workloads: &[(&str, String, usize)],
) -> Result<Vec<ProtocolResult>, BenchError> {
    let pg_addr =
        plane.pg_addr.as_deref().ok_or_else(|| BenchError::Start("the data plane serves no Postgres protocol".into()))?;
    let (host, port) = pg_addr.rsplit_once(':').ok_or_else(|| BenchError::Start(format!("bad Postgres address {pg_addr}")))?;
    let dsn = format!("host={host} port={port} user=bench dbname=omnisql password={token}");
    let (pg, connection) =
        tokio_postgres::connect(&dsn, tokio_postgres::NoTls).await.map_err(|e| BenchError::Start(format!("Postgres: {e}")))?;
    tokio::spawn(connection);
    let mut flight = client::connect(&plane.uri, token).await?;
    let mut out = Vec::new();
    for (name, sql, runs) in workloads {
        let mut flight_run = Run::default();
        let mut pg_run = Run::default();
        for _ in 0..*runs {
            let t = Instant::now();
            match client::query(&mut flight, sql).await {
                Ok(batches) => {
                    let rows = batches.iter().map(|b| b.num_rows()).sum();
                    let bytes = batches.iter().map(|b| b.get_array_memory_size()).sum();
                    flight_run.ok(t, rows, bytes);
                }
                Err(e) => flight_run.failed(&e.to_string()),
            }
            let t = Instant::now();
            match pg.simple_query(sql).await {
                Ok(messages) => {
                    let (mut rows, mut bytes) = (0, 0);
                    for m in &messages {
                        if let tokio_postgres::SimpleQueryMessage::Row(row) = m {
                            rows += 1;
                            bytes += (0..row.len()).map(|i| row.get(i).map_or(0, str::len)).sum::<usize>();
                        }
                    }
                    pg_run.ok(t, rows, bytes);
                }
                Err(e) => pg_run.failed(&e.to_string()),
            }
        }
        out.push(flight_run.result(name, "flight_sql"));
        out.push(pg_run.result(name, "postgres"));
    }
    Ok(out)
}

#[derive(Default)]
struct Run {
    latencies: Vec<f64>,
    errors: usize,
    rows: usize,
    total_rows: usize,
    total_bytes: usize,
    seconds: f64,
}

impl Run {
    fn ok(&mut self, started: Instant, rows: usize, bytes: usize) {
        let elapsed = started.elapsed().as_secs_f64();
        self.latencies.push(elapsed * 1000.0);
        self.seconds += elapsed;
        self.rows = rows;
        self.total_rows += rows;
        self.total_bytes += bytes;
    }

    fn failed(&mut self, error: &str) {
        tracing::warn!(%error, "benchmark query failed");
        self.errors += 1;
    }

    fn result(mut self, workload: &str, protocol: &'static str) -> ProtocolResult {
        self.latencies.sort_by(f64::total_cmp);
        let per_s = |n: usize| if self.seconds > 0.0 { n as f64 / self.seconds } else { 0.0 };
        ProtocolResult {
            workload: workload.to_string(),
            protocol,
            runs: self.latencies.len(),
            errors: self.errors,
            rows: self.rows,
            p50_ms: percentile(&self.latencies, 50.0),
            p99_ms: percentile(&self.latencies, 99.0),
            rows_per_s: per_s(self.total_rows),
            bytes_per_s: per_s(self.total_bytes),
        }
    }
}
