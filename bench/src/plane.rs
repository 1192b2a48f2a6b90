//! A data plane child process (`omnisql data-plane`), so its memory is measured apart from the sandbox
//! and the clients.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BenchError;

/// Memory for queries on the benchmark's data planes: the noisy-neighbour workload's bombs meet it, the
/// other workloads never come near.
pub const MEMORY_LIMIT: usize = 1 << 30;

#[derive(Debug)]
pub struct DataPlane {
    child: Child,
    pub uri: String,
    /// Where it serves the Postgres wire protocol.
    pub pg_addr: Option<String>,
}

impl DataPlane {
    /// Starts `bin data-plane --config config` on a free port; `naive` selects the baseline engine,
    /// `kept_results: false` turns kept results off.
    pub async fn start(bin: &Path, config: &Path, naive: bool, kept_results: bool) -> Result<DataPlane, BenchError> {
        let mut cmd = Command::new(bin);
        cmd.args(["data-plane", "--flight-addr", "127.0.0.1:0", "--pg-addr", "127.0.0.1:0", "--config"]).arg(config);
        // Each data plane keeps its own audit outbox.
        let state = config.with_file_name(format!("state-{}", if naive { "naive" } else { "omnisql" }));
        cmd.arg("--state-dir").arg(state);
        cmd.arg("--memory-limit").arg(MEMORY_LIMIT.to_string());
        if naive {
            cmd.arg("--naive");
        }
        if !kept_results {
            cmd.arg("--result-cache-mib=0");
        }
        cmd.env("OMNISQL_LOG", "warn,omnisql_data_plane::warmup=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|source| BenchError::Spawn { bin: bin.display().to_string(), source })?;
        let stderr = child.stderr.take().ok_or_else(|| BenchError::Start("no stderr".into()))?;
        let mut lines = BufReader::new(stderr).lines();
        let mut seen = Vec::new();
        // Listening first, then every connection logged in: measurements start after both.
        let (mut uri, mut pg_addr) = (None, None);
        loop {
            match lines.next_line().await {
                Ok(Some(line)) => {
                    if let Some((_, u)) = line.split_once("Flight SQL on ") {
                        uri = Some(u.trim().to_string());
                    } else if let Some((_, a)) = line.split_once("Postgres protocol on ") {
                        pg_addr = a.split_whitespace().next().map(str::to_string);
                    } else if line.contains("connections ready") {
                        break;
                    }
                    seen.push(line);
                }
                _ => return Err(BenchError::Start(format!("the data plane exited before it was ready:\n{}", seen.join("\n")))),
            }
        }
        let uri = uri.ok_or_else(|| BenchError::Start("the data plane did not say where it listens".into()))?;
        // Keep draining its log so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(DataPlane { child, uri, pg_addr })
    }

    /// Peak resident memory so far, in MiB (Linux `VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb / 1024.0)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
