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
    let usage = !event.api_requests_by_app.is_empty() || event.cache_hits != 0;
    if let Some(fields) = canonical.as_array_mut() {
        if event.policy_revision.is_some() || usage {
            fields.push(serde_json::json!(event.policy_revision));
        }
        if usage {
            fields.push(serde_json::json!({"api_requests_by_app": event.api_requests_by_app, "cache_hits": event.cache_hits}));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TenantId;

    fn event() -> NewAuditEvent {
        NewAuditEvent {
            id: "q-1".into(),
            tenant_id: TenantId("acme".into()),
            principal: "ann".into(),
            sql: "SELECT 1".into(),
            tables: vec!["github.issues".into()],
            api_requests: 3,
            rows: 10,
            bytes: 100,
            duration_ms: 12.5,
            outcome: "ok".into(),
            error: None,
            started_at: 1_700_000_000_000,
            data_plane: "dp-1".into(),
            policy_revision: None,
            api_requests_by_app: Default::default(),
            cache_hits: 0,
        }
    }

    /// Hashes of events stored before a field was added stay as they were (pinned values), so their
    /// chains still verify; a field added since changes the hash only when present.
    #[test]
    fn fields_added_later_keep_earlier_events_hashes() {
        assert_eq!(chain_hash(GENESIS, 1, &event()), "c2f56dba2c9a8ed2af5b686a7bcfb2e8e7f02e79673d9ce1df3879cde7ba60db");
        let revised = NewAuditEvent { policy_revision: Some("p@1".into()), ..event() };
        assert_eq!(chain_hash(GENESIS, 1, &revised), "137eeefcc34d32f7571bfb62aea89bfcf0be48386c5e1cad9fef0cc4fedb8bc0");
        let with_usage = NewAuditEvent { cache_hits: 2, ..event() };
        let other_usage = NewAuditEvent { api_requests_by_app: [("GitHub".to_string(), 3)].into(), ..event() };
        let hashes =
            [chain_hash(GENESIS, 1, &event()), chain_hash(GENESIS, 1, &with_usage), chain_hash(GENESIS, 1, &other_usage)];
        assert!(hashes[0] != hashes[1] && hashes[1] != hashes[2] && hashes[0] != hashes[2], "{hashes:?}");
    }
}
