//! Bad upstream behaviour gets retried or a clear error, never a silent wrong answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use omnisql_engine::{Engine, EngineOptions, testing};
use omnisql_sandbox::{Faults, Quotas, Sandbox, SandboxConfig, Settings};

async fn set_faults(url: &str, faults: Faults) {
    let settings = Settings { faults, ..Default::default() };
    let resp = reqwest::Client::new().post(format!("{url}/_sandbox/settings")).json(&settings).send().await.unwrap();
    assert!(resp.status().is_success());
}

fn quick_engine(sb: &Sandbox, timeout: Duration) -> Engine {
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let config = testing::config(vec![testing::single_tenant("acme", "tester", TOKEN, connections)]);
    let mut options = EngineOptions { query_timeout: timeout, connectors: omnisql_connectors::all(), ..Default::default() };
    options.http.base_backoff = Duration::from_millis(5);
    Engine::new(&config, options).unwrap()
}

async fn error_of(engine: &Engine, sql: &str) -> String {
    match engine.query(&caller(), sql).await {
        Ok((batches, _)) => panic!("expected an error, got {}", pretty(&batches)),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn transient_faults_are_retried_and_the_answer_is_still_exact() {
    let sb = sandbox(SandboxConfig::default()).await;
    let faults = Faults {
        server_error_rate: 0.15,
        rate_limit_rate: 0.1,
        retry_after_secs: 0,
        malformed_rate: 0.1,
        truncated_rate: 0.1,
        slow_body_ms: 0,
        reset_rate: 0.1,
    };
    let w = &sb.world;
    let queries = [
        ("SELECT count(*) AS n FROM github.issues", w.issues.len()),
        ("SELECT count(*) AS n FROM salesforce.contact", w.contacts.len()),
        ("SELECT count(*) AS n FROM slack.messages", w.messages.len()),
    ];
    // Requests the three need without faults (an engine of its own, so nothing is cached for the next).
    let mut clean = 0;
    for (sql, _) in queries {
        clean += run(&quick_engine(&sb, Duration::from_secs(60)), sql).await.2;
    }
    for url in [&sb.github_url, &sb.salesforce_url, &sb.slack_url] {
        set_faults(url, faults).await;
    }
    let engine = quick_engine(&sb, Duration::from_secs(60));
    let mut faulty = 0;
    for (sql, expected) in queries {
        let (out, _, requests) = run(&engine, sql).await;
        assert!(out.contains(&format!("| {expected} |")), "{sql}: {out}");
        faulty += requests;
    }
    assert!(faulty > clean, "faults should have cost retries ({faulty} requests, {clean} without faults)");
}

#[tokio::test]
async fn a_service_that_keeps_failing_gives_an_error_naming_it() {
    let sb = sandbox(SandboxConfig::default()).await;
    set_faults(&sb.slack_url, Faults { server_error_rate: 1.0, ..Default::default() }).await;
    let engine = quick_engine(&sb, Duration::from_secs(30));
    let e = error_of(&engine, "SELECT * FROM slack.channels").await;
    assert!(e.contains("Slack kept failing for connection `slack` after 5 attempts"), "{e}");
}

#[tokio::test]
async fn an_exhausted_github_quota_fails_the_query_with_the_reset_time() {
    // The organisation's issues are two pages: the quota has room for one.
    let sb = sandbox(SandboxConfig { quotas: Quotas { github_per_hour: 1, ..Quotas::default() }, ..Default::default() }).await;
    let engine = quick_engine(&sb, Duration::from_secs(30));
    let e = error_of(&engine, "SELECT count(*) FROM github.issues").await;
    assert!(e.contains("GitHub quota of connection `github` is exhausted"), "{e}");
    assert!(e.contains("resets in"), "{e}");
}

#[tokio::test]
async fn a_slack_rate_limit_longer_than_the_deadline_fails_with_a_timeout_error() {
    let sb = sandbox(SandboxConfig { quotas: Quotas { slack_tier_multiplier: 0.02, ..Quotas::default() }, ..Default::default() })
        .await;
    let engine = quick_engine(&sb, Duration::from_secs(3));
    let e = error_of(&engine, "SELECT count(*) FROM slack.messages").await;
    assert!(e.contains("ran out of time waiting for Slack"), "{e}");
}

#[tokio::test]
async fn wrong_credentials_name_the_app_and_the_connection() {
    let sb = sandbox(SandboxConfig::default()).await;
    let mut connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    for (_, _, options) in connections.iter_mut() {
        for key in ["token", "client_secret"] {
            if let Some(v) = options.get_mut(key) {
                *v = "wrong-secret-value".into();
            }
        }
    }
    let config = testing::config(vec![testing::single_tenant("acme", "tester", TOKEN, connections)]);
    let engine =
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap();
    let e = error_of(&engine, "SELECT * FROM slack.users").await;
    assert!(e.contains("Slack rejected the credentials of connection `slack` (200: invalid_auth)"), "{e}");
    let e = error_of(&engine, "SELECT * FROM github.repos").await;
    assert!(e.contains("GitHub rejected the credentials of connection `github` (401: Bad credentials)"), "{e}");
    let e = error_of(&engine, "SELECT * FROM salesforce.account").await;
    assert!(e.contains("Salesforce rejected the credentials of connection `salesforce`"), "{e}");
    assert!(!e.contains("wrong-secret-value"), "secrets never appear in errors: {e}");
}

#[tokio::test]
async fn an_expired_salesforce_session_is_renewed_once_and_the_query_succeeds() {
    let sb = sandbox(SandboxConfig { salesforce_token_ttl_secs: 1, ..Default::default() }).await;
    let engine = engine(&sb, true);
    let (first, _, _) = run(&engine, "SELECT count(*) AS n FROM salesforce.account").await;
    // Let the session expire; the next query meets INVALID_SESSION_ID and must log in again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (second, _, _) = run(&engine, "SELECT count(*) AS n FROM salesforce.account").await;
    assert_eq!(first, second);
    let stats: serde_json::Value =
        reqwest::get(format!("{}/_sandbox/stats", sb.salesforce_url)).await.unwrap().json().await.unwrap();
    assert_eq!(stats["endpoints"]["POST /services/oauth2/token"], 2, "{stats}");
}

#[tokio::test]
async fn a_query_deadline_stops_a_slow_scan_with_a_clear_error() {
    let sb = sandbox(SandboxConfig::default()).await;
    set_faults(&sb.github_url, Faults { slow_body_ms: 2000, ..Default::default() }).await;
    let engine = quick_engine(&sb, Duration::from_millis(800));
    let started = std::time::Instant::now();
    let e = error_of(&engine, "SELECT count(*) FROM github.issues").await;
    assert!(e.contains("ran out of time waiting for GitHub"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline was not kept: {:?}", started.elapsed());
}

#[tokio::test]
async fn tenants_see_only_their_own_connections() {
    let sb = sandbox(SandboxConfig::default()).await;
    let all: Vec<_> = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let github_only = all.iter().filter(|c| c.0 == "github").cloned().collect();
    let config = testing::config(vec![
        testing::single_tenant("acme", "tester", TOKEN, all),
        testing::single_tenant("other", "someone", "other-token-0123456789", github_only),
    ]);
    let engine =
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap();
    let other = engine.authenticate("other-token-0123456789").unwrap();
    assert_eq!(other.tenant.0, "other");
    let e = engine.query(&other, "SELECT * FROM salesforce.account").await.unwrap_err().to_string();
    assert!(e.contains("salesforce.account") && e.contains("not found"), "{e}");
    let e = engine.query(&other, "SELECT * FROM omnisql.slack.users").await.unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
    assert!(engine.authenticate("other-token-012345678").is_none(), "a prefix of a key is no key");
}

#[tokio::test]
async fn the_salesforce_refresh_token_flow_is_used_when_configured() {
    let sb = sandbox(SandboxConfig::default()).await;
    let with_refresh = |token: &str| {
        let mut connections: Vec<_> =
            sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
        for (name, _, options) in connections.iter_mut() {
            if name == "salesforce" {
                options.insert("refresh_token".into(), token.into());
            }
        }
        let config = testing::config(vec![testing::single_tenant("acme", "tester", TOKEN, connections)]);
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap()
    };
    let good = with_refresh(&sb.credentials.salesforce_refresh_token);
    let (out, _, _) = run(&good, "SELECT count(*) AS n FROM salesforce.account").await;
    assert!(out.contains(&format!("| {} |", sb.world.accounts.len())), "{out}");
    let bad = with_refresh("revoked-refresh-token");
    let e = error_of(&bad, "SELECT count(*) FROM salesforce.account").await;
    assert!(e.contains("invalid_grant"), "{e}");
    assert!(!e.contains("revoked-refresh-token"), "secrets never appear in errors: {e}");
}

#[test]
fn keys_given_by_hash_work_until_they_expire_and_a_new_configuration_replaces_them() {
    use omnisql_engine::Config;
    use omnisql_engine::config::{ApiKeyConfig, TenantConfig, sha256_hex};
    let key = |principal: &str, token: &str, expires_at: Option<i64>| ApiKeyConfig {
        principal: principal.into(),
        token: None,
        sha256: Some(sha256_hex(token)),
        expires_at,
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let tenant = |keys| TenantConfig { id: "acme".into(), api_keys: keys, ..testing::single_tenant("acme", "", "", vec![]) };
    let config = Config {
        tenants: vec![tenant(vec![key("ann", "ann-key-0123456789", None), key("old", "old-key-0123456789", Some(now - 1))])],
    };
    let engine =
        Engine::new(&config, EngineOptions { connectors: omnisql_connectors::all(), ..EngineOptions::default() }).unwrap();
    assert_eq!(engine.authenticate("ann-key-0123456789").unwrap().principal, "ann");
    assert!(engine.authenticate("old-key-0123456789").is_none(), "an expired key is refused");
    assert_eq!(engine.take_key_uses().len(), 1, "only the accepted key counts as used");

    // The control plane revokes ann's key and adds bob's: the next lookup sees the new configuration.
    engine.apply(&Config { tenants: vec![tenant(vec![key("bob", "bob-key-0123456789", None)])] }).unwrap();
    assert!(engine.authenticate("ann-key-0123456789").is_none());
    assert_eq!(engine.authenticate("bob-key-0123456789").unwrap().principal, "bob");
    // An invalid configuration changes nothing.
    let bad = Config {
        tenants: vec![tenant(vec![ApiKeyConfig {
            principal: "x".into(),
            token: None,
            sha256: Some("zz".into()),
            expires_at: None,
        }])],
    };
    assert!(engine.apply(&bad).is_err());
    assert!(engine.authenticate("bob-key-0123456789").is_some());
}
