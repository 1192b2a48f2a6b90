//! Federated SQL over the sandbox: joins across the three apps find the rows the world holds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use omnisql_sandbox::SandboxConfig;

#[tokio::test]
async fn issue_count_matches_the_world_over_the_organisation_list_or_each_repository() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let (out, _, requests) = run(&engine, "SELECT count(*) AS n FROM github.issues").await;
    assert!(out.contains(&format!("| {} |", sb.world.issues.len())), "{out}");
    // The organisation's issue list, 100 a page: no repository list, no request per repository.
    assert_eq!(requests, sb.world.issues.len().div_ceil(100) as u64, "{requests} requests");
    // `creator` is a parameter of a repository's list only: the organisation's list is filtered here.
    let w = &sb.world;
    let author = &w.github_users[w.issues[0].author].login;
    let (out, _, requests) =
        run(&engine, &format!("SELECT count(*) AS n FROM github.issues WHERE user_login = '{author}'")).await;
    let expected = w.issues.iter().filter(|i| w.github_users[i.author].login == *author).count();
    assert!(expected > 0 && out.contains(&format!("| {expected} |")), "{out}");
    assert_eq!(requests, w.issues.len().div_ceil(100) as u64, "{requests} requests");
    // Pinned repositories are read one by one, with `creator`.
    let repos: Vec<String> = w.repos.iter().map(|r| format!("'{}'", r.full_name())).collect();
    let sql = format!(
        "SELECT count(*) AS n FROM github.issues WHERE user_login = '{author}' AND repo_full_name IN ({})",
        repos.join(", ")
    );
    let (out, _, requests) = run(&engine, &sql).await;
    assert!(out.contains(&format!("| {expected} |")), "{out}");
    assert_eq!(requests, w.repos.len() as u64, "{requests} requests");
}

#[tokio::test]
async fn three_app_join_on_email_finds_the_customers_behind_open_issues() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let sql = "
        SELECT i.repo_full_name, i.number, c.email AS customer, a.name AS account, su.real_name AS owner
        FROM github.issues i
        JOIN github.users gu ON gu.login = i.user_login
        JOIN salesforce.contact c ON c.email = gu.email
        JOIN salesforce.account a ON a.id = c.account_id
        JOIN salesforce.\"user\" u ON u.id = a.owner_id
        JOIN slack.users su ON su.email = u.email
        WHERE i.state = 'open' AND NOT i.is_pull_request
        ORDER BY i.repo_full_name, i.number";
    let (batches, _) = engine.query(&caller(), sql).await.unwrap();
    let got: usize = batches.iter().map(|b| b.num_rows()).sum();

    let w = &sb.world;
    let contact_by_email: HashMap<&str, usize> = w.contacts.iter().enumerate().map(|(i, c)| (c.email.as_str(), i)).collect();
    let mut expected = BTreeSet::new();
    for i in w.issues.iter().filter(|i| i.open && !i.is_pull) {
        if let Some(email) = &w.github_users[i.author].email
            && let Some(&c) = contact_by_email.get(email.as_str())
        {
            expected.insert((w.repos[i.repo].full_name(), i.number, w.contacts[c].email.clone()));
        }
    }
    assert!(!expected.is_empty(), "the world has customer-reported open issues");
    assert_eq!(got, expected.len(), "{}", pretty(&batches));
    let text = pretty(&batches);
    let (repo, number, email) = expected.iter().next().unwrap();
    assert!(text.contains(email) && text.contains(repo) && text.contains(&format!("| {number} ")), "{text}");
}

#[tokio::test]
async fn outside_contributors_find_no_salesforce_contact() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let sql = "SELECT gu.login FROM github.users gu LEFT JOIN salesforce.contact c ON c.email = gu.email
               WHERE c.id IS NULL AND gu.login LIKE '%-dev%' ORDER BY gu.login";
    let (_, rows, _) = run(&engine, sql).await;
    let outsiders = sb.world.github_users.iter().filter(|u| u.login.contains("-dev")).count();
    assert_eq!(rows, outsiders);
}

#[tokio::test]
async fn slack_messages_mention_issues_that_exist() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let sql = "
        SELECT m.channel_id, m.ts, i.number
        FROM slack.messages m
        JOIN github.issues i ON m.text LIKE concat('%', i.repo_full_name, '#', CAST(i.number AS VARCHAR), ' %')
        WHERE m.text LIKE '%acme/%#%'";
    let (_, rows, _) = run(&engine, sql).await;
    let mentions = sb.world.messages.iter().filter(|m| m.text.contains("acme/") && m.text.contains('#')).count();
    assert_eq!(rows, mentions);
}

#[tokio::test]
async fn explain_shows_the_api_requests_each_scan_makes() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let (out, _, requests) = run(
        &engine,
        "EXPLAIN SELECT title FROM github.issues WHERE repo_full_name = 'acme/api' AND state = 'open' AND user_login = 'ada-acme'",
    )
    .await;
    assert!(out.contains("GET /repos/acme/api/issues?per_page=100&state=open&creator=ada-acme"), "{out}");
    let (out, _, _) = run(&engine, "EXPLAIN SELECT name FROM salesforce.account WHERE annual_revenue > 1000000 LIMIT 5").await;
    assert!(out.contains("SELECT Name FROM Account WHERE AnnualRevenue > 1000000 LIMIT 5"), "{out}");
    let (out, _, _) = run(&engine, "EXPLAIN SELECT name FROM salesforce.account ORDER BY annual_revenue DESC LIMIT 3").await;
    assert!(out.contains("FROM Account ORDER BY AnnualRevenue DESC NULLS FIRST LIMIT 3"), "{out}");
    assert!(!out.contains("SortExec"), "the API sorts, the engine does not: {out}");
    assert_eq!(requests, 0, "EXPLAIN plans without fetching rows");
}

#[tokio::test]
async fn search_issues_requires_its_query_and_answers_it() {
    let sb = sandbox(SandboxConfig::default()).await;
    let w = &sb.world;
    for pushdown in [true, false] {
        let engine = engine(&sb, pushdown);
        let e = engine.query(&caller(), "SELECT number FROM github.search_issues").await.unwrap_err().to_string();
        assert!(e.contains("table `github.search_issues` needs a filter on `query`"), "{e}");
        let (out, rows, _) = run(
            &engine,
            "SELECT repo_full_name, number FROM github.search_issues WHERE query = 'repo:acme/api is:issue state:open'",
        )
        .await;
        let expected = w.issues.iter().filter(|i| i.repo == 0 && i.open && !i.is_pull).count();
        assert_eq!(rows, expected, "{out}");
        assert!(out.contains("acme/api"));
    }
}

#[tokio::test]
async fn a_search_beyond_githubs_1000_results_fails_instead_of_truncating() {
    let sb = sandbox(SandboxConfig { scale: 6, ..Default::default() }).await;
    let engine = engine(&sb, true);
    let e = engine
        .query(&caller(), "SELECT count(*) FROM github.search_issues WHERE query = 'org:acme'")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("GitHub returns at most 1,000"), "{e}");
    let (_, rows, _) = run(&engine, "SELECT number FROM github.search_issues WHERE query = 'org:acme' LIMIT 150").await;
    assert_eq!(rows, 150);
}

#[tokio::test]
async fn a_salesforce_in_list_too_long_for_one_request_is_split_and_stays_exact() {
    let sb = sandbox(SandboxConfig::default()).await;
    let engine = engine(&sb, true);
    let mut names: Vec<String> = (0..5_000).map(|i| format!("No Such Account {i:05}")).collect();
    names.extend(sb.world.accounts.iter().map(|a| a.name.clone()));
    let list = names.iter().map(|n| format!("'{}'", n.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
    let (batches, requests) = engine
        .query(&caller(), &format!("SELECT count(*) AS n FROM salesforce.account WHERE name IN ({list})"))
        .await
        .unwrap_or_else(|e| panic!("{}", e.to_string().chars().rev().take(300).collect::<String>()));
    let out = pretty(&batches);
    assert!(out.contains(&format!("| {} |", sb.world.accounts.len())), "{out}");
    assert!(requests >= 8, "5,000 names fit in no fewer than 8 requests of 15 KB, got {requests}");
    // Ordered and limited, the split scan answers as the short query does.
    let real = sb.world.accounts.iter().map(|a| format!("'{}'", a.name.replace('\'', "''"))).collect::<Vec<_>>().join(", ");
    let ordered =
        |list: &str| format!("SELECT name FROM salesforce.account WHERE name IN ({list}) ORDER BY annual_revenue, name LIMIT 3");
    let (short, _, _) = run(&engine, &ordered(&real)).await;
    let (long, _) = engine.query(&caller(), &ordered(&list)).await.unwrap_or_else(|e| panic!("{}", e.to_string().len()));
    assert_eq!(pretty(&long), short);
    assert_eq!(short.matches("\n| ").count(), 4, "{short}");
}

#[tokio::test]
async fn a_fresh_engine_lists_every_connections_tables_in_information_schema() {
    let sb = sandbox(SandboxConfig::default()).await;
    // Nothing has queried a table yet, so no connector exists until the catalog is asked for.
    let engine = engine(&sb, true);
    let (out, _, _) = run(
        &engine,
        "SELECT table_schema, count(*) AS n FROM information_schema.tables \
         WHERE table_schema IN ('github', 'salesforce', 'slack') GROUP BY table_schema ORDER BY table_schema",
    )
    .await;
    for schema in ["github", "salesforce", "slack"] {
        assert!(out.contains(&format!("| {schema} ")), "{schema} is missing:\n{out}");
    }
    let (out, _, _) = run(&engine, "SHOW COLUMNS FROM slack.channels").await;
    assert!(out.contains("| name "), "{out}");
    let (_, rows, _) = run(&engine, "SHOW TABLES").await;
    assert!(rows > 10, "{rows} tables");
}

/// What a data plane does at start: every connection logged in and every Salesforce object described,
/// concurrently; the first query then sends only its own request, and describes nothing again.
#[tokio::test]
async fn warmed_tables_spare_the_first_query_its_logins_and_describes() {
    let mut config = SandboxConfig::default();
    config.salesforce.latency = omnisql_sandbox::Latency { fixed_ms: 300, jitter_pct: 0.0 };
    let sb = sandbox(config).await;
    let engine = engine(&sb, true);
    let describes = || async {
        let stats: serde_json::Value =
            reqwest::get(format!("{}/_sandbox/stats", sb.salesforce_url)).await.unwrap().json().await.unwrap();
        stats["endpoints"]["GET /services/data/{version}/sobjects/{name}/describe"].as_u64().unwrap_or(0)
    };
    let started = std::time::Instant::now();
    let failed = engine.warm_tables(&caller().tenant).await;
    assert!(failed.is_empty(), "{failed:?}");
    let objects = describes().await;
    assert!(objects >= 3, "every object described: {objects}");
    // Login, then the objects side by side: far less than one describe after another.
    assert!(started.elapsed() < std::time::Duration::from_millis(300 * (1 + objects)), "{:?}", started.elapsed());
    let (_, rows, requests) =
        run(&engine, "SELECT a.name, u.email FROM salesforce.account a JOIN salesforce.\"user\" u ON u.id = a.owner_id").await;
    assert!(rows > 0);
    assert_eq!(requests, 2, "one SOQL query per object, nothing else");
    assert_eq!(describes().await, objects, "no object described twice");
}
