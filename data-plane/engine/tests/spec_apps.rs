//! Jira, Stripe and HubSpot — connectors that are their spec files alone — against the sandbox: every
//! page of each table (offset, after-last-id and cursor pages), filters sent as JQL clauses and Stripe
//! parameters, the apps' own errors for a bad token, their rate limits waited out, and one question
//! across all six apps answered as the seeded world says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use omnisql_sandbox::{Quotas, Sandbox, SandboxConfig};
use serde_json::Value;

async fn requests(base: &str) -> Value {
    reqwest::get(format!("{base}/_sandbox/stats")).await.unwrap().json().await.unwrap()
}

async fn reset(sb: &Sandbox) {
    let http = reqwest::Client::new();
    for (_, base) in sb.urls() {
        http.post(format!("{base}/_sandbox/stats/reset")).send().await.unwrap();
    }
}

#[tokio::test]
async fn every_page_of_each_table_is_read_with_the_apps_own_paging() {
    let sb = sandbox(SandboxConfig { scale: 20, ..Default::default() }).await;
    let w = sb.world.clone();
    let e = engine(&sb, true);
    let cases = [
        // (sql, rows the world has, endpoint, base, requests: pages of 100)
        ("SELECT id FROM jira.issues", w.jira_issues.len(), "GET /rest/api/3/search", &sb.jira_url),
        ("SELECT id FROM stripe.invoices", w.stripe_invoices.len(), "GET /v1/invoices", &sb.stripe_url),
        ("SELECT id FROM stripe.customers", w.stripe_customers.len(), "GET /v1/customers", &sb.stripe_url),
        ("SELECT id FROM hubspot.contacts", w.hubspot_contacts.len(), "GET /crm/v3/objects/contacts", &sb.hubspot_url),
        ("SELECT id FROM hubspot.companies", w.hubspot_companies.len(), "GET /crm/v3/objects/companies", &sb.hubspot_url),
    ];
    for (sql, expected, endpoint, base) in cases {
        assert!(expected > 100, "{sql}: the world at scale 20 has more than one page ({expected} rows)");
        reset(&sb).await;
        let (_, rows, _) = run(&e, sql).await;
        assert_eq!(rows, expected, "{sql}");
        let stats = requests(base).await;
        // A page per 100 rows; offset pages stop at `total`, cursor pages where no next cursor is given.
        assert_eq!(stats["endpoints"][endpoint].as_u64(), Some(expected.div_ceil(100) as u64), "{sql}: {stats}");
    }
    // Distinct ids: no page read twice, none skipped.
    let (_, rows, _) = run(&e, "SELECT DISTINCT id FROM stripe.invoices").await;
    assert_eq!(rows, w.stripe_invoices.len());
}

#[tokio::test]
async fn filters_become_jql_clauses_and_stripe_parameters_and_answers_stay_exact() {
    let sb = sandbox(SandboxConfig { scale: 5, ..Default::default() }).await;
    let w = sb.world.clone();
    let e = engine(&sb, true);

    // JQL compares case-insensitively; the engine checks again, so `'api'` finds nothing in SQL.
    let api = w.jira_issues.iter().filter(|i| w.jira_projects[i.project].key == "API").count();
    let (_, rows, _) = run(&e, "SELECT key FROM jira.issues WHERE project_key = 'API'").await;
    assert_eq!(rows, api);
    let (_, rows, _) = run(&e, "SELECT key FROM jira.issues WHERE project_key = 'api'").await;
    assert_eq!(rows, 0, "SQL's `=` is case-sensitive even where JQL's is not");

    // A value that would end the JQL string stays inside it.
    let (_, rows, _) = run(&e, r#"SELECT key FROM jira.issues WHERE project_key = 'API" OR project = "WEB'"#).await;
    assert_eq!(rows, 0);

    let (plan, _, _) =
        run(&e, "EXPLAIN SELECT key FROM jira.issues WHERE project_key IN ('API', 'WEB') AND status = 'Done'").await;
    assert!(plan.contains("jql=project+IN+%28%22API%22%2C+%22WEB%22%29+AND+status+%3D+%22Done%22"), "{plan}");

    // Stripe: one request for one customer's invoices; the rows are that customer's.
    let customer = &w.stripe_customers[3];
    let theirs = w.stripe_invoices.iter().filter(|i| w.stripe_customers[i.customer].id == customer.id).count();
    reset(&sb).await;
    let (_, rows, _) = run(&e, &format!("SELECT id FROM stripe.invoices WHERE customer_id = '{}'", customer.id)).await;
    assert_eq!(rows, theirs);
    assert_eq!(requests(&sb.stripe_url).await["total"].as_u64(), Some(1));

    // A status Stripe does not know is not sent (Stripe would refuse it): no rows, no error.
    let (plan, _, _) = run(&e, "EXPLAIN SELECT id FROM stripe.invoices WHERE status = 'overdue'").await;
    assert!(!plan.contains("status=overdue"), "{plan}");
    let (_, rows, _) = run(&e, "SELECT id FROM stripe.invoices WHERE status = 'overdue'").await;
    assert_eq!(rows, 0);

    // Strict bounds on whole seconds: Stripe gets inclusive ones, the engine drops the boundary row.
    let at = w.stripe_invoices[0].created.timestamp();
    let strictly_after = w.stripe_invoices.iter().filter(|i| i.created.timestamp() > at).count();
    let (_, rows, _) = run(&e, &format!("SELECT id FROM stripe.invoices WHERE created > to_timestamp({at})")).await;
    assert_eq!(rows, strictly_after);
}

#[tokio::test]
async fn a_bad_token_gets_each_apps_own_refusal_and_says_what_to_do() {
    let sb = sandbox(SandboxConfig::default()).await;
    let mut connections: Vec<_> =
        sb.connections().into_iter().map(|c| (c.name.to_string(), c.connector.to_string(), c.options)).collect();
    for (_, _, options) in &mut connections {
        options.insert("token".into(), "wrong-token".into());
    }
    let config =
        omnisql_engine::testing::config(vec![omnisql_engine::testing::single_tenant("acme", "tester", TOKEN, connections)]);
    let options =
        omnisql_engine::EngineOptions { cache_bytes: None, connectors: omnisql_connectors::all(), ..Default::default() };
    let e = omnisql_engine::Engine::new(&config, options).unwrap();
    for (table, says) in [
        ("jira.projects", "Client must be authenticated"),
        ("stripe.customers", "Invalid API Key provided"),
        ("hubspot.companies", "Authentication credentials not found"),
    ] {
        let err = e.query(&caller(), &format!("SELECT * FROM {table}")).await.unwrap_err().to_string();
        assert!(err.contains("rejected the credentials") && err.contains(says), "{table}: {err}");
        assert!(err.contains("update the connection's credentials"), "{table}: {err}");
    }
}

#[tokio::test]
async fn rate_limits_are_waited_out_and_every_row_still_arrives() {
    // Stripe allows one read a second here and HubSpot one request per ten seconds: fewer than the pages.
    let quotas = Quotas { stripe_per_second: 1, hubspot_per_ten_seconds: 1, ..Quotas::default() };
    let sb = sandbox(SandboxConfig { scale: 3, quotas, ..Default::default() }).await;
    let w = sb.world.clone();
    let e = engine(&sb, true);

    let pages = w.stripe_invoices.len().div_ceil(100) as u64;
    assert!(pages >= 3, "{pages} pages");
    let (_, rows, _) = run(&e, "SELECT id FROM stripe.invoices").await;
    assert_eq!(rows, w.stripe_invoices.len());
    let sent = requests(&sb.stripe_url).await["total"].as_u64().unwrap();
    assert!(
        sent > pages,
        "Stripe answered 429 (no Retry-After) and the pages were asked again: {sent} requests for {pages} pages"
    );

    // HubSpot reports its window in headers: after the first answer the client waits for the window
    // instead of asking again and again.
    let pages = w.hubspot_contacts.len().div_ceil(100) as u64;
    assert!(pages >= 2, "{pages} pages");
    let started = std::time::Instant::now();
    let (_, rows, _) = run(&e, "SELECT id FROM hubspot.contacts").await;
    assert_eq!(rows, w.hubspot_contacts.len());
    let sent = requests(&sb.hubspot_url).await["total"].as_u64().unwrap();
    assert!(sent <= pages + 1, "the remaining-count header stopped the client: {sent} requests for {pages} pages");
    assert!(started.elapsed() >= std::time::Duration::from_secs(9), "the second page waited for the window");
}

#[tokio::test]
async fn one_question_across_six_apps_matches_the_world() {
    let sb = sandbox(SandboxConfig::default()).await;
    let w = sb.world.clone();
    let e = engine(&sb, true);
    let sql = "
        SELECT a.name AS account, inv.number AS invoice, j.key AS jira_issue, g.html_url AS github_issue, hc.lifecycle_stage
        FROM stripe.invoices inv
        JOIN stripe.customers sc   ON sc.id = inv.customer_id
        JOIN salesforce.account a  ON a.id = sc.salesforce_account_id
        JOIN hubspot.companies hc  ON 'https://www.' || hc.domain = a.website
        JOIN jira.issues j         ON j.customer_domain = hc.domain
        JOIN github.issues g       ON g.html_url = j.github_url
        WHERE inv.status = 'open' AND j.status <> 'Done'
        ORDER BY account, invoice, jira_issue";
    let (batches, _) = e.query(&caller(), sql).await.unwrap();
    let got: BTreeSet<(String, String, String)> = batches
        .iter()
        .flat_map(|b| {
            let col = |i: usize| b.column(i).as_any().downcast_ref::<datafusion::arrow::array::StringArray>().unwrap().clone();
            let (a, inv, j) = (col(0), col(1), col(2));
            (0..b.num_rows()).map(move |r| (a.value(r).to_string(), inv.value(r).to_string(), j.value(r).to_string()))
        })
        .collect();

    let mut expected = BTreeSet::new();
    for inv in w.stripe_invoices.iter().filter(|i| i.status == "open") {
        let Some(account) = w.stripe_customers[inv.customer].account else { continue };
        for j in w.jira_issues.iter().filter(|j| j.account == Some(account) && j.status != "Done") {
            expected.insert((w.accounts[account].name.clone(), inv.number.clone(), j.key.clone()));
        }
    }
    assert!(!expected.is_empty(), "the seeded world has open invoices of customers with open Jira issues");
    assert_eq!(got, expected);
}
