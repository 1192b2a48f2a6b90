//! Golden files per connector: for each query, the scans `EXPLAIN` shows (the requests planned), the
//! upstream requests the query then made (per endpoint, from the sandbox's counters) and its rows, compared
//! with `data-plane/connectors/<connector>/golden/<case>.txt`. A change to a connector or its spec shows
//! up as a diff of these files. `OMNISQL_UPDATE_GOLDEN=1 cargo test --workspace --test golden` rewrites
//! them; review the diff before committing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;

use common::*;
use omnisql_sandbox::{Sandbox, SandboxConfig, World};
use serde_json::Value;

/// `(connector, case, sql)`; values picked from the seeded world so the queries find rows.
fn cases(w: &World) -> Vec<(&'static str, &'static str, String)> {
    let channel = &w.channels[1].id;
    let author = &w.github_users[w.issues[3].author].login;
    let committer = &w.employees[w.commits[0].author].email;
    let assignee =
        omnisql_sandbox::jira::account_id(w.jira_issues.iter().find_map(|i| i.assignee).expect("an assigned Jira issue"));
    let billing = &w.stripe_customers[0].email;
    vec![
        ("slack", "channels_by_name", "SELECT id, name, num_members FROM slack.channels ORDER BY name LIMIT 5".into()),
        ("slack", "users_of_a_domain", "SELECT id, email FROM slack.users WHERE email LIKE '%@acme.dev' ORDER BY id LIMIT 5".into()),
        ("slack", "messages_of_one_channel", format!("SELECT ts, user_id FROM slack.messages WHERE channel_id = '{channel}' ORDER BY ts LIMIT 5")),
        (
            "slack",
            "messages_of_two_channels_since",
            format!("SELECT channel_id, ts FROM slack.messages WHERE channel_id IN ('{channel}', 'C000NOPE') AND posted_at > TIMESTAMP '2025-06-01T00:00:00Z' ORDER BY ts LIMIT 5"),
        ),
        ("slack", "first_messages_of_a_channel", format!("SELECT ts FROM slack.messages WHERE channel_id = '{channel}' LIMIT 3")),
        ("github", "open_issues_of_a_repo", "SELECT number, title FROM github.issues WHERE repo_full_name = 'acme/api' AND state = 'open' ORDER BY number LIMIT 5".into()),
        ("github", "issues_by_author", format!("SELECT repo_full_name, number FROM github.issues WHERE repo_full_name = 'acme/api' AND user_login = '{author}' ORDER BY number")),
        ("github", "unassigned_closed_issues", "SELECT repo_full_name, number FROM github.issues WHERE assignee_login IS NULL AND state = 'closed' ORDER BY 1, 2 LIMIT 5".into()),
        ("github", "users_by_login", format!("SELECT login, email FROM github.users WHERE login IN ('{author}', 'nobody-here') ORDER BY login")),
        ("github", "commits_of_an_author_since", format!("SELECT sha FROM github.commits WHERE author_email = '{committer}' AND committed_at >= TIMESTAMP '2024-06-01T00:00:00Z' ORDER BY sha LIMIT 5")),
        ("github", "closed_pulls_into_main", "SELECT repo_full_name, number FROM github.pulls WHERE base_ref = 'main' AND state = 'closed' ORDER BY 1, 2 LIMIT 5".into()),
        ("salesforce", "large_accounts", "SELECT name, annual_revenue FROM salesforce.account WHERE annual_revenue > 100000000 ORDER BY name LIMIT 5".into()),
        ("salesforce", "won_opportunities", "SELECT name, amount FROM salesforce.opportunity WHERE is_won = true AND amount >= 100000 ORDER BY name, amount LIMIT 5".into()),
        ("salesforce", "accounts_by_industry", "SELECT industry, count(*) AS n FROM salesforce.account GROUP BY industry ORDER BY industry".into()),
        ("jira", "projects", "SELECT key, name, lead_name FROM jira.projects ORDER BY key".into()),
        ("jira", "open_customer_issues_of_a_project", "SELECT key, status, customer_domain FROM jira.issues WHERE project_key = 'API' AND status IN ('To Do', 'In Progress') AND customer_domain IS NOT NULL ORDER BY key LIMIT 5".into()),
        ("jira", "issues_assigned_to_someone", format!("SELECT key, summary FROM jira.issues WHERE assignee_account_id = '{assignee}' ORDER BY key LIMIT 5")),
        ("jira", "users_by_email", "SELECT account_id, display_name FROM jira.users WHERE email LIKE 'a%' ORDER BY account_id".into()),
        ("stripe", "customer_by_email", format!("SELECT id, name, delinquent FROM stripe.customers WHERE email = '{billing}'")),
        ("stripe", "open_invoices", "SELECT number, customer_email, amount_due FROM stripe.invoices WHERE status = 'open' ORDER BY number LIMIT 5".into()),
        ("stripe", "invoices_since", "SELECT count(*) AS n, sum(amount_paid) AS paid FROM stripe.invoices WHERE created >= TIMESTAMP '2025-01-01T00:00:00Z'".into()),
        ("hubspot", "prospects", "SELECT name, domain, lifecycle_stage FROM hubspot.companies WHERE lifecycle_stage <> 'customer' ORDER BY name LIMIT 5".into()),
        ("hubspot", "contacts_with_companies", "SELECT c.email, co.domain FROM hubspot.contacts c JOIN hubspot.companies co ON c.company_id = co.id ORDER BY c.email LIMIT 5".into()),
    ]
}

fn golden_path(connector: &str, case: &str) -> PathBuf {
    // This crate is data-plane/engine; the connectors are its siblings.
    let data_plane = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("data-plane/").to_path_buf();
    data_plane.join("connectors").join(connector).join("golden").join(format!("{case}.txt"))
}

/// Zeroes every app's request counters.
async fn reset_requests(sb: &Sandbox) {
    let http = reqwest::Client::new();
    for (_, base) in sb.urls() {
        http.post(format!("{base}/_sandbox/stats/reset")).send().await.unwrap().error_for_status().unwrap();
    }
}

/// Each app's requests per endpoint since the last reset.
async fn requests_since_reset(sb: &Sandbox) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut lines = Vec::new();
    for (app, base) in sb.urls() {
        let stats: Value = http.get(format!("{base}/_sandbox/stats")).send().await.unwrap().json().await.unwrap();
        for (endpoint, n) in stats["endpoints"].as_object().unwrap() {
            lines.push(format!("{app} {endpoint} ×{n}"));
        }
    }
    lines
}

#[tokio::test]
async fn each_connectors_plans_requests_and_rows_match_its_golden_files() {
    let sb = sandbox(SandboxConfig::default()).await;
    let update = std::env::var_os("OMNISQL_UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for (connector, case, sql) in cases(&sb.world) {
        // A fresh engine per case: no answer, token or schema carried over from another case.
        let engine = engine(&sb, true);
        let (plan, _, _) = run(&engine, &format!("EXPLAIN {sql}")).await;
        let scans: Vec<String> =
            plan.lines().filter_map(|l| l.find("ApiScanExec").map(|i| l[i..].trim_end_matches(['|', ' ']).to_string())).collect();
        reset_requests(&sb).await;
        let (rows, count, _) = run(&engine, &sql).await;
        let requests = requests_since_reset(&sb).await;
        assert!(count > 0, "{connector}/{case} finds no rows: pick values the world has");
        let text = format!(
            "-- {connector}/{case}: `OMNISQL_UPDATE_GOLDEN=1 cargo test --workspace --test golden` rewrites this file\n\
             -- sql\n{sql}\n-- scans (EXPLAIN)\n{}\n-- upstream requests\n{}\n-- rows ({count})\n{rows}\n",
            scans.join("\n"),
            requests.join("\n")
        );
        let path = golden_path(connector, case);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).unwrap_or_default() != text {
            stale.push(format!(
                "{}\n--- expected\n{}\n--- got\n{text}",
                path.display(),
                std::fs::read_to_string(&path).unwrap_or_default()
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (OMNISQL_UPDATE_GOLDEN=1 rewrites them; review the diff):\n{}",
        stale.join("\n\n")
    );
}
