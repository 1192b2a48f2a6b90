#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The store conformance suite: every check runs against SQLite and against a real PostgreSQL server.

use std::collections::BTreeMap;

use omnisql_control_plane::model::*;
use omnisql_control_plane::store::{IdempotentResponse, NewConnection, SqlStore, Store, StoreError};
use omnisql_control_plane::testing::PostgresServer;

fn tenant(id: &str, region: &str) -> Tenant {
    Tenant {
        id: TenantId(id.into()),
        name: format!("{id} Inc."),
        region: region.into(),
        key_id: "local".into(),
        weight: 1.0,
        statement_timeout_seconds: None,
        max_concurrent_queries: None,
        created_at: now_ms(),
        oidc: None,
        opa: None,
    }
}

fn principal(t: &str, id: &str, role: Role) -> Principal {
    Principal {
        tenant_id: TenantId(t.into()),
        id: id.into(),
        kind: PrincipalKind::User,
        role,
        created_at: now_ms(),
        regions: vec![],
        groups: vec![],
        attributes: BTreeMap::new(),
    }
}

fn key(t: &str, id: &str, principal: &str, sha: &str, expires_at: Option<i64>) -> ApiKey {
    ApiKey {
        tenant_id: TenantId(t.into()),
        id: id.into(),
        principal_id: principal.into(),
        prefix: "omk_abc".into(),
        sha256: sha.into(),
        created_at: now_ms(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    }
}

fn connector() -> ConnectorVersion {
    ConnectorVersion {
        name: "github".into(),
        version: "1.0.0".into(),
        parameters: vec![ParameterSpec { name: "token".into(), description: "PAT".into(), required: true, secret: true }],
        tables: vec![TableSchema {
            name: "issues".into(),
            columns: vec![ColumnSchema { name: "number".into(), data_type: "Int64".into() }],
        }],
        created_at: now_ms(),
    }
}

fn connection(name: &str) -> NewConnection {
    NewConnection {
        name: name.into(),
        connector: "github".into(),
        version: "1.0.0".into(),
        options: BTreeMap::from([("orgs".to_string(), "acme".to_string())]),
        sealed_options: BTreeMap::from([("token".to_string(), "sealed:v1:abc".to_string())]),
        cache_ttl_seconds: Some(30),
        requests_per_second: Some(5.0),
        quota_share: None,
    }
}

fn event(tenant: &str, id: &str, principal: &str, outcome: &str, started_at: i64, tables: &[&str]) -> NewAuditEvent {
    NewAuditEvent {
        id: id.into(),
        tenant_id: TenantId(tenant.into()),
        principal: principal.into(),
        sql: format!("SELECT /* {id} */ 1"),
        tables: tables.iter().map(|t| t.to_string()).collect(),
        api_requests: 3,
        rows: 10,
        bytes: 100,
        duration_ms: 12.5,
        outcome: outcome.into(),
        error: (outcome != "ok").then(|| "boom".into()),
        started_at,
        data_plane: "dp-1".into(),
        policy_revision: None,
        api_requests_by_app: [("GitHub".to_string(), 2), ("Slack".to_string(), 1)].into(),
        cache_hits: 4,
    }
}

async fn tenants_are_created_listed_paged_and_deleted(s: &dyn Store) {
    for id in ["t-a", "t-b", "t-c"] {
        s.create_tenant(&tenant(id, "eu")).await.unwrap();
    }
    assert!(matches!(s.create_tenant(&tenant("t-a", "eu")).await, Err(StoreError::Conflict(_))));
    assert_eq!(s.get_tenant(&TenantId("t-b".into())).await.unwrap().name, "t-b Inc.");
    let first = s.list_tenants(&PageRequest::first(2)).await.unwrap();
    assert_eq!(first.items.iter().map(|t| t.id.0.as_str()).collect::<Vec<_>>(), ["t-a", "t-b"]);
    let second = s.list_tenants(&PageRequest { after: first.next.clone(), limit: 2 }).await.unwrap();
    assert_eq!(second.items.iter().map(|t| t.id.0.as_str()).collect::<Vec<_>>(), ["t-c"]);
    assert!(second.next.is_none());
    s.delete_tenant(&TenantId("t-c".into())).await.unwrap();
    assert!(matches!(s.get_tenant(&TenantId("t-c".into())).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.delete_tenant(&TenantId("t-c".into())).await, Err(StoreError::NotFound(_))));
}

async fn api_keys_authenticate_until_revoked_or_expired(s: &dyn Store) {
    s.create_tenant(&tenant("k-a", "eu")).await.unwrap();
    s.create_tenant(&tenant("k-b", "eu")).await.unwrap();
    s.create_principal(&principal("k-a", "alice", Role::TenantAdmin)).await.unwrap();
    assert!(matches!(s.create_principal(&principal("k-a", "alice", Role::TenantAdmin)).await, Err(StoreError::Conflict(_))));
    let now = now_ms();
    s.create_api_key(&key("k-a", "key1", "alice", "hash-1", None)).await.unwrap();
    s.create_api_key(&key("k-a", "key2", "alice", "hash-2", Some(now - 1))).await.unwrap();
    // A key for a principal of another tenant is refused.
    assert!(matches!(s.create_api_key(&key("k-b", "key3", "alice", "hash-3", None)).await, Err(StoreError::NotFound(_))));

    let (k, p) = s.authenticate("hash-1", now).await.unwrap().unwrap();
    assert_eq!((k.tenant_id.0.as_str(), p.id.as_str(), p.role), ("k-a", "alice", Role::TenantAdmin));
    assert!(s.authenticate("hash-2", now).await.unwrap().is_none(), "an expired key must not authenticate");
    assert!(s.authenticate("no-such-hash", now).await.unwrap().is_none());
    let listed = s.list_api_keys(&TenantId("k-a".into()), &PageRequest::first(10)).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert!(listed.items[0].last_used_at.is_some(), "authentication records last use");

    let revoked = s.revoke_api_key(&TenantId("k-a".into()), "key1", now).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(now));
    assert!(s.authenticate("hash-1", now).await.unwrap().is_none(), "a revoked key must not authenticate");
    // Another tenant cannot see or revoke the key.
    assert!(matches!(s.revoke_api_key(&TenantId("k-b".into()), "key2", now).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.get_principal(&TenantId("k-b".into()), "alice").await, Err(StoreError::NotFound(_))));
    assert!(s.list_api_keys(&TenantId("k-b".into()), &PageRequest::first(10)).await.unwrap().items.is_empty());

    s.delete_principal(&TenantId("k-a".into()), "alice").await.unwrap();
    assert!(s.list_api_keys(&TenantId("k-a".into()), &PageRequest::first(10)).await.unwrap().items.is_empty());
}

async fn connections_pin_catalog_versions_and_stay_in_their_tenant(s: &dyn Store) {
    s.upsert_connector(&connector()).await.unwrap();
    let listed = s.list_connectors().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tables[0].columns[0].name, "number");
    s.create_tenant(&tenant("c-a", "eu")).await.unwrap();
    s.create_tenant(&tenant("c-b", "eu")).await.unwrap();
    let a = TenantId("c-a".into());
    let b = TenantId("c-b".into());
    let c = s.create_connection(&a, &connection("gh"), now_ms()).await.unwrap();
    assert_eq!(c.sealed_options["token"], "sealed:v1:abc");
    assert_eq!((c.cache_ttl_seconds, c.requests_per_second), (Some(30), Some(5.0)));
    assert!(matches!(s.create_connection(&a, &connection("gh"), now_ms()).await, Err(StoreError::Conflict(_))));
    let mut unknown = connection("gh2");
    unknown.version = "9.9.9".into();
    assert!(s.create_connection(&a, &unknown, now_ms()).await.is_err(), "a connection must pin a catalog version");
    s.create_connection(&b, &connection("gh"), now_ms()).await.unwrap();
    assert_eq!(s.list_connections(&a, &PageRequest::first(10)).await.unwrap().items.len(), 1);
    // An upgrade pins another catalog version of the connector, in that tenant only.
    let mut next = connector();
    next.version = "2.0.0".into();
    s.upsert_connector(&next).await.unwrap();
    let revision = s.revision().await.unwrap();
    let moved = s.set_connection_version(&a, "gh", "2.0.0", now_ms() + 1).await.unwrap();
    assert_eq!(moved.version, "2.0.0");
    assert!(moved.updated_at > c.updated_at);
    assert!(s.revision().await.unwrap() > revision, "data planes hear of the upgrade");
    assert_eq!(s.get_connection(&b, "gh").await.unwrap().version, c.version, "another tenant's `gh` stays");
    assert!(s.set_connection_version(&a, "gh", "9.9.9", now_ms()).await.is_err(), "only catalog versions");
    assert!(matches!(s.set_connection_version(&a, "nope", "2.0.0", now_ms()).await, Err(StoreError::NotFound(_))));
    s.delete_connection(&a, "gh").await.unwrap();
    assert!(matches!(s.get_connection(&a, "gh").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.get_connection(&b, "gh").await.unwrap().tenant_id, b);
}

async fn policies_are_versioned(s: &dyn Store) {
    s.create_tenant(&tenant("p-a", "eu")).await.unwrap();
    let a = TenantId("p-a".into());
    assert_eq!(s.put_policy(&a, "rows", "package a\nallow := true", now_ms()).await.unwrap().version, 1);
    assert_eq!(s.put_policy(&a, "rows", "package a\nallow := false", now_ms()).await.unwrap().version, 2);
    s.put_policy(&a, "columns", "package b", now_ms()).await.unwrap();
    let latest = s.list_policies(&a).await.unwrap();
    assert_eq!(latest.iter().map(|p| (p.name.as_str(), p.version)).collect::<Vec<_>>(), [("columns", 1), ("rows", 2)]);
    assert_eq!(s.policy_versions(&a, "rows").await.unwrap().len(), 2);
    assert!(matches!(s.policy_versions(&a, "nope").await, Err(StoreError::NotFound(_))));
    let before = s.revision().await.unwrap();
    s.delete_policy(&a, "rows").await.unwrap();
    assert!(s.revision().await.unwrap() > before, "data planes hear of the deletion");
    assert_eq!(s.list_policies(&a).await.unwrap().iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["columns"]);
    assert!(matches!(s.delete_policy(&a, "rows").await, Err(StoreError::NotFound(_))));
}

async fn idempotency_keys_replay_per_tenant(s: &dyn Store) {
    s.create_tenant(&tenant("i-a", "eu")).await.unwrap();
    let a = TenantId("i-a".into());
    let r = IdempotentResponse { request_hash: "h".into(), status: 201, body: "{}".into() };
    s.save_idempotent_response(&a, "k1", &r, now_ms()).await.unwrap();
    assert_eq!(s.idempotent_response(&a, "k1").await.unwrap(), Some(r));
    assert_eq!(s.idempotent_response(&TenantId("i-b".into()), "k1").await.unwrap(), None);
}

/// A data plane about to enroll (its region comes from the token).
fn data_plane(id: &str, credential_sha256: &str, now: i64) -> DataPlane {
    DataPlane {
        id: id.into(),
        region: String::new(),
        hostname: "host".into(),
        version: "0.1.0".into(),
        enrolled_at: now,
        last_heartbeat_at: None,
        acked_revision: 0,
        latest_revision: 0,
        audit_pending: 0,
        enrolled_by: None,
        credential_sha256: credential_sha256.into(),
    }
}

async fn data_planes_enroll_once_and_receive_their_regions_changes(s: &dyn Store) {
    let now = now_ms();
    s.create_enrollment_token("tok-hash", "us", "operator", now, now + 60_000).await.unwrap();
    let dp = data_plane("dp-1", "cred-hash", now);
    let enrolled = s.enroll("tok-hash", dp.clone()).await.unwrap();
    assert_eq!((enrolled.region.as_str(), enrolled.enrolled_by.as_deref()), ("us", Some("operator")), "who minted the token");
    let mut again = dp.clone();
    again.id = "dp-2".into();
    again.credential_sha256 = "cred-2".into();
    assert!(matches!(s.enroll("tok-hash", again).await, Err(StoreError::NotFound(_))), "enrollment tokens are one-time");
    assert_eq!(s.data_plane_by_credential("cred-hash").await.unwrap().unwrap().id, "dp-1");
    s.heartbeat("dp-1", "0.2.0", 7, 12, now).await.unwrap();
    let listed = s.list_data_planes().await.unwrap();
    assert_eq!((listed[0].version.as_str(), listed[0].acked_revision, listed[0].last_heartbeat_at), ("0.2.0", 7, Some(now)));
    assert_eq!(listed[0].audit_pending, 12);
    assert_eq!(listed[0].enrolled_by.as_deref(), Some("operator"));
    s.delete_data_plane("dp-1").await.unwrap();
    assert!(s.data_plane_by_credential("cred-hash").await.unwrap().is_none(), "a removed data plane's credential is dead");
    assert!(matches!(s.delete_data_plane("dp-1").await, Err(StoreError::NotFound(_))));

    // Region changes: a US tenant appears for US data planes only, with its active keys and connections.
    s.upsert_connector(&connector()).await.unwrap();
    s.create_tenant(&tenant("r-us", "us")).await.unwrap();
    s.create_tenant(&tenant("r-eu", "eu")).await.unwrap();
    let us = TenantId("r-us".into());
    s.create_principal(&principal("r-us", "bob", Role::TenantMember)).await.unwrap();
    s.create_api_key(&key("r-us", "k1", "bob", "r-hash-1", None)).await.unwrap();
    s.create_api_key(&key("r-us", "k2", "bob", "r-hash-2", None)).await.unwrap();
    s.create_connection(&us, &connection("gh"), now).await.unwrap();
    let all = s.region_changes("us", 0).await.unwrap();
    assert_eq!(all.tenants.iter().map(|t| t.tenant.id.0.as_str()).collect::<Vec<_>>(), ["r-us"]);
    assert_eq!(all.tenants[0].api_keys.len(), 2);
    assert_eq!(all.tenants[0].connections.len(), 1);
    assert_eq!(all.revision, s.revision().await.unwrap());
    assert!(s.region_changes("us", all.revision).await.unwrap().tenants.is_empty());

    // Key use reported by a US data plane is recorded; an EU data plane cannot touch US keys.
    s.record_key_uses("eu", &[("r-hash-2".into(), now - 5)]).await.unwrap();
    s.record_key_uses("us", &[("r-hash-1".into(), now - 10)]).await.unwrap();
    let keys = s.list_api_keys(&us, &PageRequest::first(10)).await.unwrap().items;
    assert_eq!(keys.iter().map(|k| k.last_used_at).collect::<Vec<_>>(), [Some(now - 10), None]);

    // New limits reach the region's data planes as a change of the tenant.
    let mut limited = s.get_tenant(&us).await.unwrap();
    limited.statement_timeout_seconds = Some(30);
    limited.max_concurrent_queries = Some(4);
    s.update_tenant(&limited).await.unwrap();
    let changed = s.region_changes("us", all.revision).await.unwrap();
    assert_eq!(changed.tenants[0].tenant.statement_timeout_seconds, Some(30));
    assert_eq!(changed.tenants[0].tenant.max_concurrent_queries, Some(4));
    assert_eq!(s.get_tenant(&us).await.unwrap(), limited);
    let mut gone = tenant("r-none", "us");
    gone.weight = 2.0;
    assert!(matches!(s.update_tenant(&gone).await, Err(StoreError::NotFound(_))));

    s.revoke_api_key(&us, "k1", now).await.unwrap();
    let after = s.region_changes("us", changed.revision).await.unwrap();
    assert!(after.revision > changed.revision);
    assert_eq!(after.tenants[0].api_keys.iter().map(|(k, _)| k.id.as_str()).collect::<Vec<_>>(), ["k2"]);
    s.delete_tenant(&us).await.unwrap();
    let removed = s.region_changes("us", after.revision).await.unwrap();
    assert_eq!(removed.removed, [us]);
    assert!(removed.tenants.is_empty());
}

async fn audit_events_are_stored_once_chained_searchable_and_verified(s: &dyn Store) {
    s.create_tenant(&tenant("a-a", "eu")).await.unwrap();
    s.create_tenant(&tenant("a-b", "eu")).await.unwrap();
    let a = TenantId("a-a".into());
    let events = vec![
        event("a-a", "e1", "alice", "ok", 1_000, &["github.issues"]),
        event("a-a", "e2", "bob", "error", 2_000, &["slack.messages", "github.issues"]),
        event("a-b", "e3", "carol", "ok", 3_000, &["github.issues"]),
        event("a-a", "e4", "alice", "denied", 4_000, &[]),
    ];
    let stored = s.append_audit(&events, now_ms()).await.unwrap();
    assert_eq!(stored.len(), 4);
    // Shipped again (at-least-once): acknowledged, not stored twice.
    let again = s.append_audit(&events[..2], now_ms()).await.unwrap();
    assert_eq!(again, ["e1", "e2"]);
    let all = s.search_audit(&a, &AuditFilter::default(), &PageRequest::first(100)).await.unwrap();
    assert_eq!(all.items.iter().map(|e| (e.event.id.as_str(), e.seq)).collect::<Vec<_>>(), [("e1", 1), ("e2", 2), ("e4", 3)]);

    let a_ref = &a;
    let search = |f: AuditFilter| async move {
        s.search_audit(a_ref, &f, &PageRequest::first(100))
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|e| e.event.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(search(AuditFilter { principal: Some("alice".into()), ..Default::default() }).await, ["e1", "e4"]);
    assert_eq!(search(AuditFilter { outcome: Some("error".into()), ..Default::default() }).await, ["e2"]);
    assert_eq!(search(AuditFilter { table: Some("slack.messages".into()), ..Default::default() }).await, ["e2"]);
    assert_eq!(search(AuditFilter { table: Some("github.issue".into()), ..Default::default() }).await, Vec::<String>::new());
    assert_eq!(search(AuditFilter { from: Some(1_500), to: Some(4_000), ..Default::default() }).await, ["e2"]);
    let page = s.search_audit(&a, &AuditFilter::default(), &PageRequest::first(2)).await.unwrap();
    assert_eq!(page.next.as_deref(), Some("2"));
    let rest = s.search_audit(&a, &AuditFilter::default(), &PageRequest { after: page.next, limit: 2 }).await.unwrap();
    assert_eq!(rest.items.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(), ["e4"]);

    let v = s.verify_audit(&a).await.unwrap();
    assert!(v.valid && v.events == 3, "{v:?}");
    assert!(s.verify_audit(&TenantId("a-b".into())).await.unwrap().valid);
    usage_is_rolled_up_per_minute_as_events_are_stored(s).await;
}

/// Usage per minute follows the stored events: a resent event counts once, each tenant sees its own.
async fn usage_is_rolled_up_per_minute_as_events_are_stored(s: &dyn Store) {
    let (a, b) = (TenantId("a-a".into()), TenantId("a-b".into()));
    // e1, e2 and e4 above started in minute 0; two more batches land in minute 0 and minute 2.
    let mut slow = event("a-a", "u1", "alice", "ok", 59_999, &[]);
    slow.duration_ms = 800.0;
    s.append_audit(&[slow.clone(), event("a-a", "u2", "alice", "ok", 150_000, &[])], now_ms()).await.unwrap();
    s.append_audit(&[slow], now_ms()).await.unwrap();
    let minutes = s.usage(&a, 0, 180_000).await.unwrap();
    let summary: Vec<_> = minutes.iter().map(|m| (m.minute, m.queries, m.not_ok, m.api_requests, m.cache_hits)).collect();
    assert_eq!(summary, [(0, 4, 2, 12, 16), (120_000, 1, 0, 3, 4)]);
    assert_eq!(minutes[0].api_requests_by_app, [("GitHub".to_string(), 8), ("Slack".to_string(), 4)].into());
    let (p50, p95) = (minutes[0].p50_ms.unwrap(), minutes[0].p95_ms.unwrap());
    assert!((10.0..=15.0).contains(&p50) && (750.0..=1000.0).contains(&p95), "{p50} {p95}");
    // `from` is rounded down to its minute; `to` is exclusive.
    assert_eq!(s.usage(&a, 130_000, 180_000).await.unwrap().len(), 1);
    assert_eq!(s.usage(&a, 0, 120_000).await.unwrap().len(), 1);
    assert_eq!(s.usage(&b, 0, 180_000).await.unwrap().iter().map(|m| m.queries).sum::<i64>(), 1);
}

async fn tampering_with_the_audit_trail_is_detected(s: &SqlStore) {
    s.create_tenant(&tenant("x-a", "eu")).await.unwrap();
    let a = TenantId("x-a".into());
    let events: Vec<_> = (1..=5).map(|i| event("x-a", &format!("x{i}"), "alice", "ok", i * 1000, &[])).collect();
    s.append_audit(&events, now_ms()).await.unwrap();
    assert!(s.verify_audit(&a).await.unwrap().valid);
    s.execute_unchecked("x-a", "UPDATE audit_events SET rows = 999 WHERE id = 'x3'").await.unwrap();
    let v = s.verify_audit(&a).await.unwrap();
    assert_eq!((v.valid, v.first_broken_seq), (false, Some(3)));
    s.execute_unchecked("x-a", "UPDATE audit_events SET rows = 10 WHERE id = 'x3'").await.unwrap();
    assert!(s.verify_audit(&a).await.unwrap().valid);
    // Dropping the newest event is caught by the chain head.
    s.execute_unchecked("x-a", "DELETE FROM audit_events WHERE id = 'x5'").await.unwrap();
    let v = s.verify_audit(&a).await.unwrap();
    assert_eq!((v.valid, v.first_broken_seq), (false, Some(5)));
}

async fn run_suite(store: &SqlStore) {
    tenants_are_created_listed_paged_and_deleted(store).await;
    api_keys_authenticate_until_revoked_or_expired(store).await;
    connections_pin_catalog_versions_and_stay_in_their_tenant(store).await;
    policies_are_versioned(store).await;
    idempotency_keys_replay_per_tenant(store).await;
    data_planes_enroll_once_and_receive_their_regions_changes(store).await;
    audit_events_are_stored_once_chained_searchable_and_verified(store).await;
    tampering_with_the_audit_trail_is_detected(store).await;
    principals_carry_groups_and_attributes_and_events_their_policy_revision(store).await;
    connection_tests_go_to_one_data_plane_of_the_region_and_rate_limits_stay_in_their_tenant(store).await;
}

async fn connection_tests_go_to_one_data_plane_of_the_region_and_rate_limits_stay_in_their_tenant(s: &SqlStore) {
    let now = now_ms();
    s.create_tenant(&tenant("ct-a", "ct")).await.unwrap();
    s.create_tenant(&tenant("ct-b", "ct")).await.unwrap();
    let (a, b) = (TenantId("ct-a".into()), TenantId("ct-b".into()));
    let test = ConnectionTest {
        id: "ct-1".into(),
        connection: "gh".into(),
        requested_by: "ann".into(),
        requested_at: now,
        data_plane: None,
        finished_at: None,
        result: None,
    };
    s.create_connection_test(&a, "ct", &test).await.unwrap();
    let old = ConnectionTest { id: "ct-old".into(), requested_at: now - 120_000, ..test.clone() };
    s.create_connection_test(&a, "ct", &old).await.unwrap();
    // Another region's data planes, and tests the admin stopped waiting for, get nothing.
    assert!(s.claim_connection_tests("elsewhere", "dp-x", now - 30_000, now).await.unwrap().is_empty());
    let claimed = s.claim_connection_tests("ct", "dp-1", now - 30_000, now).await.unwrap();
    assert_eq!(claimed.iter().map(|(t, c)| (t.0.as_str(), c.id.as_str())).collect::<Vec<_>>(), [("ct-a", "ct-1")]);
    assert!(s.claim_connection_tests("ct", "dp-2", now - 30_000, now).await.unwrap().is_empty(), "a test goes to one data plane");
    let result = ConnectionTestResult {
        ok: true,
        tables: 3,
        table: Some("issues".into()),
        rows: 1,
        api_requests: 2,
        duration_ms: 40.5,
        error: None,
    };
    assert!(s.finish_connection_test("dp-2", "ct-1", &result, now).await.is_err(), "only the data plane that took it reports");
    s.finish_connection_test("dp-1", "ct-1", &result, now + 5).await.unwrap();
    assert!(s.finish_connection_test("dp-1", "ct-1", &result, now + 6).await.is_err(), "a result is final");
    let done = s.get_connection_test(&a, "ct-1").await.unwrap();
    assert_eq!((done.data_plane.as_deref(), done.finished_at, done.result), (Some("dp-1"), Some(now + 5), Some(result)));
    assert!(
        matches!(s.get_connection_test(&b, "ct-1").await, Err(StoreError::NotFound(_))),
        "another tenant's test is not found"
    );

    let report = |connection: &str, available: f64| RateLimitReport {
        data_plane: "dp-1".into(),
        connection: connection.into(),
        bucket: "core".into(),
        capacity: 5000.0,
        window_seconds: 3600.0,
        available,
        waiting: 0,
        paused_for_seconds: None,
        reported_at: now,
    };
    s.replace_rate_limits("dp-1", &[(a.clone(), report("gh", 4990.0)), (b.clone(), report("gh_b", 12.0))]).await.unwrap();
    // Reports of a data plane that is not enrolled are not shown; an enrolled one's are, per tenant.
    assert!(s.rate_limits(&a).await.unwrap().is_empty());
    s.create_enrollment_token("ct-tok", "ct", "operator", now, now + 60_000).await.unwrap();
    let dp = data_plane("dp-1", "ct-cred", now);
    s.enroll("ct-tok", dp).await.unwrap();
    assert_eq!(s.rate_limits(&a).await.unwrap(), [report("gh", 4990.0)]);
    assert_eq!(s.rate_limits(&b).await.unwrap(), [report("gh_b", 12.0)]);
    // The next heartbeat replaces the last; removing the data plane removes its reports.
    s.replace_rate_limits("dp-1", &[(a.clone(), report("gh", 10.0))]).await.unwrap();
    assert_eq!(s.rate_limits(&a).await.unwrap(), [report("gh", 10.0)]);
    assert!(s.rate_limits(&b).await.unwrap().is_empty());
    s.delete_data_plane("dp-1").await.unwrap();
    assert!(s.rate_limits(&a).await.unwrap().is_empty());
}

async fn principals_carry_groups_and_attributes_and_events_their_policy_revision(s: &SqlStore) {
    s.create_tenant(&tenant("g-a", "gr")).await.unwrap();
    let t = TenantId("g-a".into());
    let mut p = principal("g-a", "sam", Role::TenantMember);
    p.groups = vec!["sales".into(), "emea".into()];
    p.attributes = BTreeMap::from([("region".to_string(), "emea".to_string())]);
    s.create_principal(&p).await.unwrap();
    assert_eq!(s.get_principal(&t, "sam").await.unwrap(), p);
    s.create_api_key(&key("g-a", "k-sam", "sam", "sam-hash", None)).await.unwrap();
    let (_, authenticated) = s.authenticate("sam-hash", now_ms()).await.unwrap().unwrap();
    assert_eq!((authenticated.groups.clone(), authenticated.attributes.clone()), (p.groups.clone(), p.attributes.clone()));

    let before = s.region_changes("gr", 0).await.unwrap().revision;
    let update = PrincipalUpdate { groups: Some(vec!["support".into()]), attributes: None };
    let updated = s.update_principal(&t, "sam", &update).await.unwrap();
    assert_eq!(
        (updated.groups.as_slice(), updated.attributes.get("region").map(String::as_str)),
        (&["support".to_string()][..], Some("emea"))
    );
    let changes = s.region_changes("gr", before).await.unwrap();
    assert!(changes.revision > before, "a changed principal is a new configuration");
    let snapshot = changes.tenants.iter().find(|c| c.tenant.id == t).expect("the tenant changed");
    assert_eq!(snapshot.api_keys[0].1.groups, ["support"]);
    assert!(matches!(s.update_principal(&t, "nobody", &update).await, Err(StoreError::NotFound(_))));

    let mut e = event("g-a", "g1", "sam", "denied", 1_000, &["slack.users"]);
    e.policy_revision = Some("access@2".into());
    s.append_audit(&[e, event("g-a", "g2", "sam", "ok", 2_000, &[])], now_ms()).await.unwrap();
    let stored = s.search_audit(&t, &AuditFilter::default(), &PageRequest::first(10)).await.unwrap().items;
    assert_eq!(stored[0].event.policy_revision.as_deref(), Some("access@2"));
    assert_eq!(stored[1].event.policy_revision, None);
    assert!(s.verify_audit(&t).await.unwrap().valid);
    s.execute_unchecked("g-a", "UPDATE audit_events SET policy_revision = 'access@1' WHERE id = 'g1'").await.unwrap();
    assert!(!s.verify_audit(&t).await.unwrap().valid, "the policy revision is part of the chain");
}

#[tokio::test]
async fn sqlite_backend_passes_the_conformance_suite() {
    let dir = std::env::temp_dir().join(format!("omnisql-store-{}", uuid::Uuid::new_v4().simple()));
    let store = SqlStore::connect(&format!("sqlite://{}/control.db", dir.display())).await.unwrap();
    assert_eq!(store.backend(), "sqlite");
    run_suite(&store).await;
    // Migrations are applied once: connecting again to the same file works and keeps the data.
    drop(store);
    let again = SqlStore::connect(&format!("sqlite://{}/control.db", dir.display())).await.unwrap();
    assert!(again.get_tenant(&TenantId("t-a".into())).await.is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn postgres_backend_passes_the_conformance_suite() {
    let pg = PostgresServer::start().await.unwrap();
    let store = SqlStore::connect(&pg.url).await.unwrap();
    assert_eq!(store.backend(), "postgres");
    run_suite(&store).await;
}

#[tokio::test]
async fn postgres_row_level_security_hides_other_tenants_rows_from_unscoped_queries() {
    use sqlx::{Connection, Executor, Row};
    let pg = PostgresServer::start().await.unwrap();
    let store = SqlStore::connect(&pg.url).await.unwrap();
    store.upsert_connector(&connector()).await.unwrap();
    for t in ["rls-a", "rls-b"] {
        store.create_tenant(&tenant(t, "eu")).await.unwrap();
        store.create_connection(&TenantId(t.into()), &connection("gh"), now_ms()).await.unwrap();
    }
    // The application role, without the store's WHERE clauses: only the scoped tenant's rows.
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let count = |rows: Vec<sqlx::postgres::PgRow>| rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>();
    let unscoped = conn.fetch_all("SELECT tenant_id FROM connections").await.unwrap();
    assert!(unscoped.is_empty(), "no scope must see nothing");
    conn.execute("SET omnisql.tenant = 'rls-a'").await.unwrap();
    assert_eq!(count(conn.fetch_all("SELECT tenant_id FROM connections").await.unwrap()), ["rls-a"]);
    let insert = conn
        .execute("INSERT INTO policies (tenant_id, name, version, rego, created_at) VALUES ('rls-b', 'p', 1, 'package x', 0)")
        .await;
    assert!(insert.is_err(), "writing another tenant's row must fail");
    // The superuser sees both: the rows exist, RLS hid them.
    let mut admin = sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{}/omnisql", pg.port)).await.unwrap();
    assert_eq!(admin.fetch_all("SELECT tenant_id FROM connections").await.unwrap().len(), 2);
}
