//! Row filters, column masks, hidden columns and refused tables from a tenant's Rego policies, on
//! every path a query reads a table by, checked against the sandbox world itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::record_batch::RecordBatch;
use omnisql_engine::config::{ApiKeyConfig, PolicyConfig, PrincipalConfig};
use omnisql_engine::settings::QuerySettings;
use omnisql_engine::{Caller, Engine, EngineOptions, testing};
use omnisql_sandbox::{Sandbox, SandboxConfig};

/// Sales sees GitHub and Salesforce but not Slack; of accounts only US ones and not their revenue; of
/// contacts only a masked email. Admins see everything. Everyone else nothing.
pub const POLICY: &str = include_str!("../../../docs/policies/sales-access.rego");

const SELLER: &str = "seller-token-0123456789";
const ADMIN: &str = "admin-token-0123456789ab";
const NOBODY: &str = "nobody-token-0123456789";

fn engine_with(sb: &Sandbox, rego: &str) -> Arc<Engine> {
    let connections = sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    let mut tenant = testing::single_tenant("acme", "tester", TOKEN, connections);
    tenant.api_keys = vec![
        ApiKeyConfig::with_token("sam", SELLER),
        ApiKeyConfig::with_token("ada", ADMIN),
        ApiKeyConfig::with_token("nick", NOBODY),
    ];
    tenant.principals = vec![
        PrincipalConfig { id: "sam".into(), groups: vec!["sales".into()], ..Default::default() },
        PrincipalConfig { id: "ada".into(), groups: vec!["admins".into()], ..Default::default() },
    ];
    tenant.policies = vec![PolicyConfig { name: "access".into(), version: 2, rego: rego.into() }];
    let config = testing::config(vec![tenant]);
    Arc::new(
        Engine::new(
            &config,
            EngineOptions { cache_bytes: None, connectors: omnisql_connectors::all(), ..EngineOptions::default() },
        )
        .unwrap(),
    )
}

fn who(principal: &str) -> Caller {
    Caller::new("acme", principal)
}

async fn rows(engine: &Engine, principal: &str, sql: &str) -> Vec<RecordBatch> {
    engine.query(&who(principal), sql).await.unwrap_or_else(|e| panic!("{principal}: {sql}: {e}")).0
}

fn count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let c =
            datafusion::arrow::compute::cast(b.column_by_name(column).unwrap(), &datafusion::arrow::datatypes::DataType::Utf8)
                .unwrap();
        let c = c.as_string::<i32>();
        out.extend((0..c.len()).map(|i| if c.is_null(i) { "NULL".to_string() } else { c.value(i).to_string() }));
    }
    out
}

fn us_accounts(sb: &Sandbox) -> usize {
    sb.world.accounts.iter().filter(|a| a.country == "USA").count()
}

#[tokio::test]
async fn a_row_filter_a_mask_and_a_hidden_column_hold_on_every_query_shape() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, POLICY);
    let us = us_accounts(&sb);
    assert!(us > 0 && us < sb.world.accounts.len(), "the world has US and other accounts");

    // Plain select, count, CTE, subquery, UNION, join: each sees only US accounts.
    let shapes = [
        ("select", "SELECT id FROM salesforce.account"),
        ("cte", "WITH a AS (SELECT id FROM salesforce.account) SELECT id FROM a"),
        ("subquery", "SELECT id FROM (SELECT id, billing_country FROM salesforce.account) t"),
        ("in subquery", "SELECT id FROM salesforce.contact WHERE account_id IN (SELECT id FROM salesforce.account)"),
        ("union", "SELECT id FROM salesforce.account UNION ALL SELECT id FROM salesforce.account WHERE false"),
    ];
    for (shape, sql) in shapes {
        let got = rows(&engine, "sam", sql).await;
        if shape == "in subquery" {
            let contacts_of_us = sb.world.contacts.iter().filter(|c| sb.world.accounts[c.account].country == "USA").count();
            assert_eq!(count(&got), contacts_of_us, "{shape}");
        } else {
            assert_eq!(count(&got), us, "{shape}: {sql}");
        }
    }
    let counted = rows(&engine, "sam", "SELECT count(*) AS n FROM salesforce.account").await;
    assert_eq!(strings(&counted, "n"), [us.to_string()]);
    let countries = rows(&engine, "sam", "SELECT DISTINCT billing_country FROM salesforce.account").await;
    assert_eq!(strings(&countries, "billing_country"), ["USA"]);
    // A user filter that asks for other rows finds none.
    let other = rows(&engine, "sam", "SELECT id FROM salesforce.account WHERE billing_country <> 'USA'").await;
    assert_eq!(count(&other), 0);

    // The hidden column does not exist for the seller; the admin has it.
    let e = engine.query(&who("sam"), "SELECT annual_revenue FROM salesforce.account").await.unwrap_err().to_string();
    assert!(e.contains("annual_revenue"), "{e}");
    let star = rows(&engine, "sam", "SELECT * FROM salesforce.account LIMIT 3").await;
    assert!(star[0].schema().column_with_name("annual_revenue").is_none());
    assert_eq!(count(&rows(&engine, "ada", "SELECT annual_revenue FROM salesforce.account").await), sb.world.accounts.len());

    // Masked everywhere: projection, ORDER BY, GROUP BY, joins on the value, functions over it.
    let emails = strings(&rows(&engine, "sam", "SELECT email FROM salesforce.contact ORDER BY email").await, "email");
    assert_eq!(emails.len(), sb.world.contacts.len());
    assert!(emails.iter().all(|e| e.starts_with("***") && e.len() == 7), "{emails:?}");
    let raw: Vec<&str> = sb.world.contacts.iter().map(|c| c.email.as_str()).collect();
    for sql in [
        "SELECT upper(email) AS e FROM salesforce.contact",
        "SELECT email AS e FROM salesforce.contact GROUP BY email",
        "SELECT max(email) AS e FROM salesforce.contact",
        "SELECT c.email AS e FROM salesforce.contact c JOIN github.users u ON u.email = c.email",
    ] {
        let got = strings(&rows(&engine, "sam", sql).await, "e");
        assert!(got.iter().all(|v| !raw.iter().any(|r| v.eq_ignore_ascii_case(r))), "{sql} leaked: {got:?}");
    }
    let joined =
        rows(&engine, "sam", "SELECT count(*) AS n FROM salesforce.contact c JOIN github.users u ON u.email = c.email").await;
    assert_eq!(strings(&joined, "n"), ["0"], "a join sees the masked value, which matches no real address");
    // A filter on the real value finds nothing: it compares with the masked one.
    let probe = format!("SELECT id FROM salesforce.contact WHERE email = '{}'", sb.world.contacts[0].email);
    assert_eq!(count(&rows(&engine, "sam", &probe).await), 0);
    // The admin sees real addresses.
    let real = strings(&rows(&engine, "ada", "SELECT email FROM salesforce.contact").await, "email");
    assert!(real.iter().all(|e| raw.contains(&e.as_str())));
}

#[tokio::test]
async fn expressions_that_fail_on_hidden_data_cannot_reveal_it() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, POLICY);
    // Divides by zero only on a row the row filter removes: the policy runs first, so no error.
    let sql = "SELECT id FROM salesforce.account WHERE 1 / (CASE WHEN billing_country <> 'USA' THEN 0 ELSE 1 END) = 1";
    assert_eq!(count(&rows(&engine, "sam", sql).await), us_accounts(&sb));
    // A cast that fails on the value echoes the masked value, never the real one.
    let e = engine.query(&who("sam"), "SELECT CAST(email AS INT) FROM salesforce.contact").await.unwrap_err().to_string();
    assert!(!sb.world.contacts.iter().any(|c| e.contains(&c.email)), "{e}");
    assert!(e.contains("***"), "the error shows the masked value: {e}");
}

#[tokio::test]
async fn refused_tables_are_neither_listed_nor_readable_and_explain_shows_the_policy() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, POLICY);
    let e = engine.query(&who("sam"), "SELECT * FROM slack.users").await.unwrap_err();
    let denial = omnisql_engine::policy_error(&e).expect("a policy refusal");
    assert_eq!(denial.table(), "slack.users");
    assert!(e.to_string().contains("access denied") && e.to_string().contains("access@2"), "{e}");
    // Nobody (no group) reads nothing, not even through a join.
    let e = engine.query(&who("nick"), "SELECT count(*) FROM github.repos").await.unwrap_err();
    assert!(omnisql_engine::policy_error(&e).is_some(), "{e}");

    let listed = rows(
        &engine,
        "sam",
        "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'",
    )
    .await;
    let schemas = strings(&listed, "table_schema");
    assert!(!schemas.iter().any(|s| s == "slack") && schemas.iter().any(|s| s == "salesforce"), "{schemas:?}");
    let columns = rows(&engine, "sam", "SELECT column_name FROM information_schema.columns WHERE table_name = 'account'").await;
    let columns = strings(&columns, "column_name");
    assert!(columns.contains(&"billing_country".to_string()) && !columns.contains(&"annual_revenue".to_string()));

    let plan = rows(&engine, "sam", "EXPLAIN SELECT email FROM salesforce.contact").await;
    let text = pretty(&plan);
    assert!(text.contains("***") && text.contains("right(email"), "EXPLAIN shows the mask: {text}");
    let plan = pretty(&rows(&engine, "sam", "EXPLAIN SELECT id FROM salesforce.account").await);
    assert!(plan.contains("billing_country") && plan.contains("USA"), "EXPLAIN shows the row filter: {plan}");
    let analyzed = pretty(&rows(&engine, "sam", "EXPLAIN ANALYZE SELECT email FROM salesforce.contact").await);
    assert!(!sb.world.contacts.iter().any(|c| analyzed.contains(&c.email)), "{analyzed}");
    // With a row filter the API cannot apply, the rows before it are nowhere: only what the policy let
    // through.
    let unpushable = engine_with(&sb, &POLICY.replace("billing_country = 'USA'", "lower(billing_country) = 'usa'"));
    let analyzed = pretty(&rows(&unpushable, "sam", "EXPLAIN ANALYZE SELECT id FROM salesforce.account").await);
    let all = sb.world.accounts.len();
    assert!(analyzed.contains(&format!("output_rows={}", us_accounts(&sb))), "{analyzed}");
    assert!(!analyzed.contains(&format!("output_rows={all}")), "the unfiltered count shows: {analyzed}");
}

#[tokio::test]
async fn prepared_statements_with_parameters_are_filtered_too() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, POLICY);
    let other = sb.world.accounts.iter().find(|a| a.country != "USA").unwrap();
    let params = datafusion::common::ParamValues::List(vec![datafusion::common::ScalarValue::from(other.id.as_str()).into()]);
    let mut settings = QuerySettings::default();
    let q = engine
        .plan(&who("sam"), "SELECT id FROM salesforce.account WHERE id = $1", Some(params), &mut settings)
        .await
        .unwrap()
        .unwrap();
    let batches = datafusion::physical_plan::common::collect(engine.execute(q).await.unwrap()).await.unwrap();
    assert_eq!(count(&batches), 0, "a non-US account by id is not there for the seller");
}

#[tokio::test]
async fn a_policy_that_cannot_be_evaluated_refuses_every_table_with_its_reason() {
    let sb = sandbox(SandboxConfig::default()).await;
    let broken = engine_with(&sb, "package omnisql\nallow if {");
    let e = broken.query(&who("ada"), "SELECT id FROM github.repos").await.unwrap_err().to_string();
    assert!(e.contains("does not compile") && e.contains("access denied"), "{e}");
    let bad_sql = POLICY.replace("billing_country = 'USA'", "billing_country = = 'US'");
    let e = engine_with(&sb, &bad_sql).query(&who("sam"), "SELECT id FROM salesforce.account").await.unwrap_err().to_string();
    assert!(e.contains("row filter") && e.contains("access denied"), "{e}");
    let subquery = POLICY.replace("billing_country = 'USA'", "id IN (SELECT 1)");
    let e = engine_with(&sb, &subquery).query(&who("sam"), "SELECT id FROM salesforce.account").await.unwrap_err().to_string();
    assert!(e.contains("subqueries"), "{e}");
}

#[tokio::test]
async fn the_policy_is_a_barrier_no_user_filter_crosses_yet_filters_still_reach_the_api() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine_with(&sb, POLICY);
    let plan = pretty(&rows(&engine, "sam", "EXPLAIN SELECT id FROM salesforce.account WHERE industry = 'Retail' LIMIT 5").await);
    let line = |needle: &str| plan.lines().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle} in {plan}"));
    // The user's filter is evaluated above the policy, never merged into it.
    assert!(line("FilterExec: industry") < line("PolicyExec: row_filter=billing_country"), "{plan}");
    assert!(!plan.lines().any(|l| l.contains("FilterExec") && l.contains("billing_country")), "{plan}");
    // Both the user's filter (it cannot fail) and the row filter are sent to the API.
    assert!(plan.contains("WHERE Industry = 'Retail' AND BillingCountry = 'USA'"), "{plan}");
    // A filter on a masked column stays above the policy and is not sent to the API.
    let plan = pretty(&rows(&engine, "sam", "EXPLAIN SELECT id FROM salesforce.contact WHERE email LIKE '%.com'").await);
    assert!(!plan.contains("Email LIKE"), "{plan}");
}
