//! The audit outbox: one durable record per query attempt, kept on local disk until the control plane
//! has acknowledged it.
//!
//! The outbox is an append-only file of JSON lines. A query writes a `start` record when it begins
//! (written, not synced: a killed process still leaves it in the page cache) and an `end` record — the
//! audit event — when it finishes, synced to disk before the client hears the query is done. Writes go
//! through one writer thread that syncs once for every batch of waiting writers (group commit). On
//! start, a `start` without its `end` means the process died mid-query: it becomes an `interrupted`
//! event. A shipper reads events past the acknowledged offset ([`Outbox::pending`]), sends them, and
//! advances the offset ([`Outbox::acknowledge`]); the file is truncated once everything is shipped.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};

/// One query attempt, as the control plane stores it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique per attempt; the control plane stores an id once however often it is shipped.
    pub id: String,
    pub tenant: String,
    pub principal: String,
    pub sql: String,
    /// `connection.table` for every table the query read.
    pub tables: Vec<String>,
    pub api_requests: u64,
    pub rows: u64,
    /// Arrow bytes returned.
    pub bytes: u64,
    pub duration_ms: f64,
    /// ok, error, denied, cancelled, unauthenticated or interrupted.
    pub outcome: String,
    pub error: Option<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    /// The tenant's policies the query was checked against (`name@version,…`; empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy_revision: String,
    /// `api_requests` by app (e.g. `GitHub`), for usage per app.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_requests_by_app: BTreeMap<String, u64>,
    /// Answers served from the response cache instead of an upstream request.
    #[serde(default)]
    pub cache_hits: u64,
}

/// Tenant of attempts that could not be tied to one (unknown or revoked keys).
pub const NO_TENANT: &str = "_platform";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    Start { id: String, tenant: String, principal: String, sql: String, started_at: i64 },
    End(AuditEvent),
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot use the audit outbox at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the audit outbox writer stopped")]
    Stopped,
}

enum Command {
    Write {
        line: Vec<u8>,
        sync: bool,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    },
    /// Truncates the log if `len` is still its length (everything shipped, nothing new).
    Compact {
        len: u64,
        done: tokio::sync::oneshot::Sender<bool>,
    },
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    writer: Mutex<mpsc::Sender<Command>>,
    /// Ids shipped in this process but not yet behind the acknowledged offset.
    shipped: Mutex<HashSet<String>>,
    notify: Arc<tokio::sync::Notify>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io { path: path.display().to_string(), source }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, turning attempts a crash interrupted into events.
    pub fn open(dir: &Path) -> Result<Arc<Outbox>, OutboxError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let log_path = dir.join("audit.log");
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&log_path).map_err(io(&log_path))?;
        // A torn last line (the process died mid-write) is cut off: its query never finished.
        let len = file.metadata().map_err(io(&log_path))?.len();
        let mut text = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io(&log_path))?;
        file.read_to_end(&mut text).map_err(io(&log_path))?;
        let valid = text.iter().rposition(|b| *b == b'\n').map(|p| p as u64 + 1).unwrap_or(0);
        if valid < len {
            file.set_len(valid).map_err(io(&log_path))?;
        }
        // Attempts that started but never ended: the process died while they ran.
        let acked = read_acknowledged(dir);
        let (records, _) = read_records(&text[..valid as usize], acked);
        let ended = ended_ids(&records);
        let mut interrupted = Vec::new();
        for (_, r) in &records {
            if let Record::Start { id, tenant, principal, sql, started_at } = r
                && !ended.contains(id.as_str())
            {
                let event = AuditEvent {
                    id: id.clone(),
                    tenant: tenant.clone(),
                    principal: principal.clone(),
                    sql: sql.clone(),
                    tables: Vec::new(),
                    api_requests: 0,
                    rows: 0,
                    bytes: 0,
                    duration_ms: 0.0,
                    outcome: "interrupted".into(),
                    error: Some("the data plane stopped while the query ran".into()),
                    started_at: *started_at,
                    ..Default::default()
                };
                let mut line = serde_json::to_vec(&Record::End(event)).map_err(|_| OutboxError::Stopped)?;
                line.push(b'\n');
                interrupted.extend(line);
            }
        }
        if !interrupted.is_empty() {
            file.write_all(&interrupted).map_err(io(&log_path))?;
            file.sync_data().map_err(io(&log_path))?;
        }
        let (tx, rx) = mpsc::channel();
        let outbox = Arc::new(Outbox {
            dir: dir.to_path_buf(),
            writer: Mutex::new(tx),
            shipped: Mutex::default(),
            notify: Arc::default(),
        });
        let notify = outbox.notify.clone();
        std::thread::Builder::new()
            .name("audit-outbox".into())
            .spawn({
                let acked = dir.join("audit.acked");
                move || writer_loop(file, acked, rx, notify)
            })
            .map_err(io(dir))?;
        Ok(outbox)
    }

    fn send(
        &self,
        record: Record,
        sync: bool,
    ) -> Result<Option<tokio::sync::oneshot::Receiver<Result<(), String>>>, OutboxError> {
        let mut line = serde_json::to_vec(&record).map_err(|_| OutboxError::Stopped)?;
        line.push(b'\n');
        let (done, wait) = if sync {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Command::Write { line, sync, done })
            .map_err(|_| OutboxError::Stopped)?;
        Ok(wait)
    }

    /// Notes that an attempt began (not synced; see the module docs).
    pub fn started(&self, id: &str, tenant: &str, principal: &str, sql: &str, started_at: i64) {
        let record =
            Record::Start { id: id.into(), tenant: tenant.into(), principal: principal.into(), sql: sql.into(), started_at };
        if let Err(e) = self.send(record, false) {
            tracing::error!(error = %e, "cannot write to the audit outbox");
        }
    }

    /// Writes the attempt's event and waits until it is on disk.
    pub async fn finished(&self, event: AuditEvent) -> Result<(), OutboxError> {
        let wait = self.send(Record::End(event), true)?;
        match wait {
            Some(rx) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(message)) => {
                    Err(OutboxError::Io { path: self.dir.display().to_string(), source: std::io::Error::other(message) })
                }
                Err(_) => Err(OutboxError::Stopped),
            },
            None => Ok(()),
        }
    }

    /// Writes the event without waiting (for attempts nobody waits on, e.g. a client that went away).
    pub fn finished_in_background(&self, event: AuditEvent) {
        if let Err(e) = self.send(Record::End(event), true) {
            tracing::error!(error = %e, "cannot write to the audit outbox");
        }
    }

    /// Resolves when new events were written.
    pub async fn written(&self) {
        self.notify.notified().await
    }

    fn acknowledged(&self) -> u64 {
        read_acknowledged(&self.dir)
    }

    /// Events not yet acknowledged nor shipped by this process, at most `max`, and the offset the log
    /// may be acknowledged up to once they are stored: before the first attempt still running.
    pub fn pending(&self, max: usize) -> Result<(Vec<AuditEvent>, u64), OutboxError> {
        let path = self.dir.join("audit.log");
        let acked = self.acknowledged();
        let mut file = File::open(&path).map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        let acked = if acked > len { 0 } else { acked };
        file.seek(SeekFrom::Start(acked)).map_err(io(&path))?;
        let mut text = Vec::new();
        BufReader::new(file).read_to_end(&mut text).map_err(io(&path))?;
        let (records, _) = read_records(&text, 0);
        let ended = ended_ids(&records);
        let shipped = self.shipped.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut events = Vec::new();
        let mut safe = acked;
        let mut running = false;
        for (end, r) in &records {
            match r {
                Record::Start { id, .. } if !ended.contains(id.as_str()) => running = true,
                Record::End(e) => {
                    if events.len() == max {
                        break;
                    }
                    if !shipped.contains(&e.id) {
                        events.push(e.clone());
                    }
                }
                Record::Start { .. } => {}
            }
            if !running {
                safe = acked + end;
            }
        }
        Ok((events, safe))
    }

    /// The control plane stored `ids`; the log is acknowledged up to `offset` (from [`Outbox::pending`]).
    pub async fn acknowledge(&self, ids: &[String], offset: u64) -> Result<(), OutboxError> {
        {
            let mut shipped = self.shipped.lock().unwrap_or_else(|e| e.into_inner());
            shipped.extend(ids.iter().cloned());
        }
        if offset <= self.acknowledged() {
            return Ok(());
        }
        write_synced(&self.dir.join("audit.acked"), offset.to_string().as_bytes())?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Command::Compact { len: offset, done: tx })
            .map_err(|_| OutboxError::Stopped)?;
        if rx.await.unwrap_or(false) {
            self.shipped.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        Ok(())
    }

    /// How many events wait to be shipped.
    pub fn backlog(&self) -> usize {
        self.pending(usize::MAX).map(|(e, _)| e.len()).unwrap_or(0)
    }
}

/// Ids of the attempts that have their `end` record.
fn ended_ids(records: &[(u64, Record)]) -> HashSet<&str> {
    records
        .iter()
        .filter_map(|(_, r)| match r {
            Record::End(e) => Some(e.id.as_str()),
            _ => None,
        })
        .collect()
}

fn read_acknowledged(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("audit.acked")).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Parses complete lines; each record comes with the offset (relative to `text`) just past its line.
fn read_records(text: &[u8], skip: u64) -> (Vec<(u64, Record)>, u64) {
    let mut records = Vec::new();
    let mut offset = 0u64;
    for line in text.split_inclusive(|b| *b == b'\n') {
        offset += line.len() as u64;
        if offset <= skip || !line.ends_with(b"\n") {
            continue;
        }
        match serde_json::from_slice::<Record>(&line[..line.len() - 1]) {
            Ok(r) => records.push((offset, r)),
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable audit outbox record"),
        }
    }
    (records, offset)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), OutboxError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// Writes records in arrival order; one sync covers every writer waiting at that moment.
fn writer_loop(mut file: File, acked: PathBuf, rx: mpsc::Receiver<Command>, notify: Arc<tokio::sync::Notify>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut waiting = Vec::new();
        let mut wrote = false;
        let mut needs_sync = false;
        let mut failure: Option<String> = None;
        for command in batch {
            match command {
                Command::Write { line, sync, done } => {
                    if let Err(e) = file.write_all(&line) {
                        failure = Some(e.to_string());
                    }
                    needs_sync |= sync;
                    wrote = true;
                    waiting.extend(done);
                }
                Command::Compact { len, done } => {
                    // The offset is reset first: a crash in between re-ships (harmless), never skips.
                    let current = file.metadata().map(|m| m.len()).unwrap_or(0);
                    let compacted = current == len && len > 0 && write_synced(&acked, b"0").is_ok() && file.set_len(0).is_ok();
                    if compacted {
                        let _ = file.sync_all();
                    }
                    let _ = done.send(compacted);
                }
            }
        }
        if needs_sync && let Err(e) = file.sync_data() {
            failure = Some(e.to_string());
        }
        for done in waiting {
            let _ = done.send(failure.clone().map_or(Ok(()), Err));
        }
        if wrote {
            notify.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            id: id.into(),
            tenant: "acme".into(),
            principal: "alice".into(),
            sql: "SELECT 1".into(),
            tables: vec![],
            api_requests: 0,
            rows: 1,
            bytes: 8,
            duration_ms: 1.0,
            outcome: "ok".into(),
            error: None,
            started_at: 0,
            ..Default::default()
        }
    }

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("omnisql-outbox-{}", uuid::Uuid::new_v4().simple()))
    }

    #[tokio::test]
    async fn events_survive_a_restart_until_acknowledged() {
        let d = dir();
        let outbox = Outbox::open(&d).unwrap();
        for id in ["a", "b", "c"] {
            outbox.started(id, "acme", "alice", "SELECT 1", 0);
            outbox.finished(event(id)).await.unwrap();
        }
        let (events, offset) = outbox.pending(2).unwrap();
        assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        outbox.acknowledge(&["a".into(), "b".into()], offset).await.unwrap();
        drop(outbox);
        let reopened = Outbox::open(&d).unwrap();
        let (events, offset) = reopened.pending(10).unwrap();
        assert_eq!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["c"]);
        reopened.acknowledge(&["c".into()], offset).await.unwrap();
        assert_eq!(std::fs::metadata(d.join("audit.log")).unwrap().len(), 0, "fully shipped logs are truncated");
        let _ = std::fs::remove_dir_all(d);
    }

    #[tokio::test]
    async fn an_attempt_without_an_end_becomes_interrupted_and_a_torn_line_is_dropped() {
        let d = dir();
        let outbox = Outbox::open(&d).unwrap();
        outbox.started("done", "acme", "alice", "SELECT 1", 0);
        outbox.finished(event("done")).await.unwrap();
        outbox.started("running", "acme", "alice", "SELECT 2", 5);
        // The acknowledged offset stops before the running attempt.
        let (events, offset) = outbox.pending(10).unwrap();
        assert_eq!(events.len(), 1);
        outbox.acknowledge(&["done".into()], offset).await.unwrap();
        outbox.finished(event("flushed")).await.unwrap();
        drop(outbox);
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(d.join("audit.log")).unwrap();
        f.write_all(br#"{"kind":"end","id":"tor"#).unwrap();
        drop(f);
        let reopened = Outbox::open(&d).unwrap();
        let (events, _) = reopened.pending(10).unwrap();
        let got: Vec<_> = events.iter().map(|e| (e.id.as_str(), e.outcome.as_str())).collect();
        assert_eq!(got, [("flushed", "ok"), ("running", "interrupted")]);
        let _ = std::fs::remove_dir_all(d);
    }
}
