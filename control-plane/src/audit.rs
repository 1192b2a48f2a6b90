//! The audit chain: each tenant's events form a hash chain, `hash = SHA-256(previous hash ‖ event)`,
//! over a canonical encoding of everything the event says. Changing, removing or reordering a stored
//! event breaks every later hash, which [`verify`] finds.

use sha2::{Digest, Sha256};

use crate::keys::hex;
use crate::model::{AuditEvent, NewAuditEvent};

/// The hash before a tenant's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain hash of `event` at position `seq` after `previous`.
pub fn chain_hash(previous: &str, seq: i64, event: &NewAuditEvent) -> String {
    // JSON of a fixed-order array: unambiguous field boundaries, stable across versions (fields added
    // later are appended only when present, so earlier events keep their hashes).
    let mut canonical = serde_json::json!([
        seq,
        event.id,
        event.tenant_id.as_str(),
        event.principal,
        event.sql,
        event.tables,
        event.api_requests,
        event.rows,
        event.bytes,
        event.duration_ms,
        event.outcome,
        event.error,
        event.started_at,
        event.data_plane,
    ]);
    if let (Some(revision), Some(fields)) = (&event.policy_revision, canonical.as_array_mut()) {
        fields.push(serde_json::json!(revision));
    }
    let mut h = Sha256::new();
    h.update(previous.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex(&h.finalize())
}

/// Checks a tenant's events in chain order: `Err(seq)` names the first event that does not chain.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a AuditEvent>) -> Result<(i64, String), i64> {
    let mut previous = GENESIS.to_string();
    let mut expected_seq = 1;
    for e in events {
        if e.seq != expected_seq || chain_hash(&previous, e.seq, &e.event) != e.hash {
            return Err(expected_seq);
        }
        previous = e.hash.clone();
        expected_seq += 1;
    }
    Ok((expected_seq - 1, previous))
}
