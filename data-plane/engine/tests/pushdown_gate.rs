//! The correctness gate: every query gives the same result with pushdown on and off, over the same
//! sandbox world, and pushdown never costs more upstream requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use omnisql_sandbox::SandboxConfig;

/// Runs every query both ways; returns the upstream requests with and without pushdown.
async fn gate(queries: &[String]) -> (u64, u64) {
    let sb = sandbox(SandboxConfig::default()).await;
    let pushed = engine(&sb, true);
    let naive = engine(&sb, false);
    let mut total = (0u64, 0u64);
    for sql in queries {
        let (with, rows, with_requests) = run(&pushed, sql).await;
        let (without, _, without_requests) = run(&naive, sql).await;
        assert_eq!(with, without, "results differ with pushdown for: {sql}");
        assert!(
            with_requests <= without_requests,
            "pushdown made more requests ({with_requests} > {without_requests}) for: {sql}"
        );
        println!("{rows:>5} rows  {with_requests:>4} vs {without_requests:>4} requests  {sql}");
        total.0 += with_requests;
        total.1 += without_requests;
    }
    total
}

#[tokio::test]
async fn github_results_are_identical_with_and_without_pushdown() {
    let w = omnisql_sandbox::World::generate(42, 1);
    let author = &w.github_users[w.issues[3].author].login;
    let assignee = w.issues.iter().find_map(|i| i.assignee).map(|a| w.github_users[a].login.clone()).unwrap();
    let committer = &w.employees[w.commits[0].author].email;
    let queries = vec![
        "SELECT repo_full_name, number, state FROM github.issues WHERE state = 'open' ORDER BY repo_full_name, number"
            .to_string(),
        format!(
            "SELECT repo_full_name, number FROM github.issues WHERE repo_full_name = 'acme/api' AND user_login = '{author}' ORDER BY number"
        ),
        format!(
            "SELECT repo_full_name, number FROM github.issues WHERE assignee_login = '{assignee}' AND state IN ('open', 'closed') ORDER BY 1, 2"
        ),
        "SELECT repo_full_name, number FROM github.issues WHERE assignee_login IS NULL AND state = 'closed' ORDER BY 1, 2".into(),
        "SELECT repo_full_name, number, labels FROM github.issues WHERE array_has(labels, 'bug') ORDER BY 1, 2".into(),
        "SELECT repo_full_name, number FROM github.issues WHERE updated_at >= TIMESTAMP '2025-01-01T00:00:00Z' ORDER BY 1, 2"
            .into(),
        "SELECT repo_full_name, number FROM github.issues WHERE updated_at > TIMESTAMP '2025-01-01T00:00:00.5Z' ORDER BY 1, 2"
            .into(),
        "SELECT count(*) FROM github.issues WHERE repo_full_name = 'ACME/API'".into(),
        "SELECT count(*) FROM (SELECT number FROM github.issues WHERE state = 'open' LIMIT 7)".into(),
        "SELECT repo_full_name, number, base_ref FROM github.pulls WHERE base_ref = 'main' AND state = 'closed' ORDER BY 1, 2"
            .into(),
        format!(
            "SELECT sha FROM github.commits WHERE author_email = '{committer}' AND committed_at >= TIMESTAMP '2024-06-01T00:00:00Z' ORDER BY sha"
        ),
        "SELECT sha FROM github.commits WHERE committed_at <= TIMESTAMP '2024-03-01T00:00:00Z' ORDER BY sha".into(),
        format!("SELECT login, email FROM github.users WHERE login IN ('{author}', 'nobody-here') ORDER BY login"),
        "SELECT full_name, private FROM github.repos WHERE full_name IN ('acme/api', 'acme/nope') ORDER BY full_name".into(),
        "SELECT full_name FROM github.repos ORDER BY full_name".into(),
    ];
    let (with, without) = gate(&queries).await;
    // Users' details come 100 to a GraphQL query either way, so what pushdown saves here is listing.
    assert!(with < without, "pushdown saved no GitHub requests ({with} vs {without})");
}

#[tokio::test]
async fn salesforce_results_are_identical_with_and_without_pushdown() {
    let queries: Vec<String> = [
        "SELECT name, annual_revenue FROM salesforce.account WHERE annual_revenue > 100000000 ORDER BY name",
        "SELECT name FROM salesforce.account WHERE industry IN ('Energy', 'Retail') OR number_of_employees < 1000 ORDER BY name",
        "SELECT name FROM salesforce.account WHERE name LIKE 'G%' ORDER BY name",
        "SELECT name FROM salesforce.account WHERE name ILIKE 'g%' ORDER BY name",
        "SELECT name FROM salesforce.account WHERE name = 'globex corp' ORDER BY name",
        "SELECT name FROM salesforce.account WHERE annual_revenue IS NULL ORDER BY name",
        "SELECT name FROM salesforce.account WHERE industry <> 'Energy' ORDER BY name",
        "SELECT name FROM salesforce.account WHERE NOT (annual_revenue > 50000000) ORDER BY name",
        "SELECT name FROM salesforce.account WHERE industry NOT IN ('Energy', 'Finance') ORDER BY name",
        "SELECT name, amount FROM salesforce.opportunity WHERE is_won = true AND amount >= 100000 ORDER BY name, amount",
        "SELECT name, close_date FROM salesforce.opportunity WHERE close_date < DATE '2025-01-01' ORDER BY name, close_date",
        "SELECT email FROM salesforce.contact WHERE email LIKE '%globex%' ORDER BY email",
        "SELECT count(*) FROM (SELECT id FROM salesforce.contact WHERE account_id IS NOT NULL LIMIT 10)",
        "SELECT name, amount__c FROM salesforce.renewal__c WHERE amount__c > 100000 ORDER BY name",
        "SELECT id FROM salesforce.contact WHERE created_date >= TIMESTAMP '2024-03-01T00:00:00Z' ORDER BY id",
        "SELECT industry, count(*) AS n, sum(annual_revenue) AS revenue FROM salesforce.account GROUP BY industry ORDER BY industry",
        "SELECT name, annual_revenue FROM salesforce.account ORDER BY annual_revenue DESC NULLS LAST LIMIT 3",
        "SELECT name, amount FROM salesforce.opportunity WHERE amount > 10000 ORDER BY amount, close_date LIMIT 4",
        "SELECT name, annual_revenue FROM salesforce.account WHERE name LIKE '%o%' ORDER BY annual_revenue NULLS FIRST LIMIT 2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Salesforce answers these in one request either way; pushdown shrinks what comes back instead.
    gate(&queries).await;
}

#[tokio::test]
async fn slack_results_are_identical_with_and_without_pushdown() {
    let w = omnisql_sandbox::World::generate(42, 1);
    let channel = &w.channels[1].id;
    let ts_a = &w.messages[10].ts;
    let ts_b = &w.messages[30].ts;
    let queries = vec![
        format!("SELECT channel_id, ts, text FROM slack.messages WHERE channel_id = '{channel}' ORDER BY ts"),
        format!("SELECT channel_id, ts FROM slack.messages WHERE ts >= '{ts_a}' AND ts < '{ts_b}' ORDER BY channel_id, ts"),
        format!(
            "SELECT channel_id, ts FROM slack.messages WHERE channel_id IN ('{channel}', 'C000NOPE') AND ts > '{ts_a}' ORDER BY ts"
        ),
        "SELECT channel_id, ts FROM slack.messages WHERE posted_at > TIMESTAMP '2025-06-01T00:00:00Z' ORDER BY channel_id, ts"
            .into(),
        "SELECT id, email FROM slack.users WHERE email LIKE '%@acme.dev' ORDER BY id".into(),
        "SELECT name FROM slack.channels ORDER BY name".into(),
        format!("SELECT count(*) FROM (SELECT ts FROM slack.messages WHERE channel_id = '{channel}' LIMIT 5)"),
    ];
    let (with, without) = gate(&queries).await;
    assert!(with < without, "pushdown saved no Slack requests ({with} vs {without})");
}

/// Three GitHub users who are also Salesforce contacts (same email), as a quoted SQL list.
fn customer_logins(w: &omnisql_sandbox::World) -> String {
    let customers: Vec<String> = w
        .github_users
        .iter()
        .filter(|u| u.email.as_ref().is_some_and(|e| w.contacts.iter().any(|c| &c.email == e)))
        .map(|u| format!("'{}'", u.login))
        .take(3)
        .collect();
    assert_eq!(customers.len(), 3, "the world has GitHub users who are Salesforce contacts");
    customers.join(", ")
}

/// A hash join's build-side keys reach the probe side's API (SOQL `IN`, GitHub users by login): the same
/// rows as without pushdown, and far fewer requests.
#[tokio::test]
async fn join_keys_reach_the_probe_side_api_with_identical_results() {
    let w = omnisql_sandbox::World::generate(42, 1);
    let logins = customer_logins(&w);
    let queries = vec![
        // Users by login (pushed), then their contacts.
        format!(
            "SELECT gu.login, c.id FROM github.users gu JOIN salesforce.contact c ON c.email = gu.email WHERE gu.login IN ({logins}) ORDER BY 1, 2"
        ),
        // Probe: GitHub users, keyed by the logins of one repository's open issues.
        "SELECT i.number, gu.login, gu.email FROM github.issues i JOIN github.users gu ON gu.login = i.user_login \
         WHERE i.repo_full_name = 'acme/api' AND i.state = 'open' ORDER BY 1"
            .to_string(),
    ];
    let sb = sandbox(SandboxConfig::default()).await;
    let pushed = engine(&sb, true);
    for sql in &queries {
        let (_, rows, _) = run(&pushed, sql).await;
        assert!(rows > 0, "the gate compares non-empty results: {sql}");
        let (plan, _, _) = run(&pushed, &format!("EXPLAIN ANALYZE {sql}")).await;
        println!("{plan}");
        // GitHub users are keyed by the issues' authors: one request for all the keys. (Contacts are
        // read whole: one SOQL page either way, so keys are not worth waiting for.)
        if sql.contains("github.issues") {
            assert!(plan.contains("join_keyed_requests=1,"), "{plan}");
        }
    }
    let (with, without) = gate(&queries).await;
    assert!(with < without, "join keys should save requests here ({with} vs {without})");

    // An empty build side: the probe side is not waited for.
    let started = std::time::Instant::now();
    let sql = "SELECT c.id FROM github.users gu JOIN salesforce.contact c ON c.email = gu.email WHERE gu.login = 'nobody-here'";
    let (_, rows, _) = run(&pushed, sql).await;
    assert_eq!(rows, 0);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// The README's join: the same rows with join keys as without pushdown, in fewer requests (GitHub users are
/// fetched by the issue authors' logins instead of listed and fetched one by one).
#[tokio::test]
async fn the_readme_join_keeps_its_rows_with_fewer_requests() {
    let sql = "SELECT i.repo_full_name, i.number, c.email, su.real_name FROM github.issues i
        JOIN github.users gu ON gu.login = i.user_login JOIN salesforce.contact c ON c.email = gu.email
        JOIN salesforce.account a ON a.id = c.account_id JOIN salesforce.\"user\" u ON u.id = a.owner_id
        JOIN slack.users su ON su.email = u.email
        WHERE i.state = 'open' AND NOT i.is_pull_request ORDER BY 1, 2, 3, 4";
    let (with, without) = gate(&[sql.to_string()]).await;
    assert!(with < without, "{with} vs {without}");
}

/// Milliseconds of the first `join_wait=…` metric in an `EXPLAIN ANALYZE` text.
fn join_wait_ms(plan: &str) -> f64 {
    let at = plan.find("join_wait=").unwrap_or_else(|| panic!("no join_wait in {plan}")) + "join_wait=".len();
    let text: String = plan[at..].chars().take_while(|c| !matches!(c, ',' | ']' | ' ')).collect();
    let (number, unit): (String, String) = text.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let factor = match unit.as_str() {
        "ns" => 1e-6,
        "µs" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        other => panic!("unit {other} in {text}"),
    };
    number.parse::<f64>().unwrap() * factor
}

/// Salesforce answers slowly and its objects are the build sides (small, known sizes): GitHub users are
/// still keyed by the issue authors as soon as the issues are in, not after Salesforce has answered —
/// the inner join under the Salesforce joins is read at once (`EagerExec`), and the apps are called side
/// by side.
#[tokio::test]
async fn join_keys_do_not_wait_for_another_apps_build_side() {
    let slow = omnisql_sandbox::Latency { fixed_ms: 1500, jitter_pct: 0.0 };
    let mut config = SandboxConfig::default();
    config.salesforce.latency = slow;
    let sb = sandbox(config).await;
    let pushed = engine(&sb, true);
    let sql = "SELECT i.number, c.email FROM github.issues i JOIN github.users gu ON gu.login = i.user_login
        JOIN salesforce.contact c ON c.email = gu.email JOIN salesforce.account a ON a.id = c.account_id
        WHERE i.state = 'open'";
    // The first run teaches Salesforce its objects' sizes, which makes them the build sides.
    let (_, rows, _) = run(&pushed, sql).await;
    assert!(rows > 0);
    let (plan, _, _) = run(&pushed, &format!("EXPLAIN ANALYZE {sql}")).await;
    let wait = join_wait_ms(&plan);
    assert!(wait < 1000.0, "GitHub users waited {wait} ms for keys: Salesforce's 1,500 ms came first\n{plan}");
    assert!(plan.contains("mode=CollectLeft") && plan.contains("EagerExec"), "{plan}");
}

/// Salesforce learns an object's size from an unfiltered query; once it spans several pages, a join's keys
/// are worth waiting for, and one keyed query replaces the chain of pages — same rows.
#[tokio::test]
async fn salesforce_waits_for_join_keys_once_an_object_is_known_to_be_large() {
    let sb = sandbox(SandboxConfig { scale: 60, ..SandboxConfig::default() }).await;
    assert!(sb.world.contacts.len() > 2000, "{} contacts", sb.world.contacts.len());
    let sql = format!(
        "SELECT gu.login, c.id FROM github.users gu JOIN salesforce.contact c ON c.email = gu.email WHERE gu.login IN ({}) ORDER BY 1, 2",
        customer_logins(&sb.world)
    );
    let pushed = engine(&sb, true);
    let (first, rows, first_requests) = run(&pushed, &sql).await;
    let (second, _, second_requests) = run(&pushed, &sql).await;
    assert_eq!((first, rows), (second, 3));
    println!("{first_requests} requests before the size is known, {second_requests} after");
    assert!(second_requests < first_requests, "{second_requests} < {first_requests}");
}

/// Join order follows the connectors' row estimates: written with the large side first, the join still
/// builds from the few users (their logins are pinned) once Salesforce has said how many contacts there
/// are, and the users' emails reach SOQL — the same rows and requests as the query written the other way.
#[tokio::test]
async fn the_side_with_fewer_rows_builds_whatever_the_order_written() {
    let sb = sandbox(SandboxConfig { scale: 60, ..SandboxConfig::default() }).await;
    let logins = customer_logins(&sb.world);
    let small_first = format!(
        "SELECT gu.login, c.id FROM github.users gu JOIN salesforce.contact c ON c.email = gu.email WHERE gu.login IN ({logins}) ORDER BY 1, 2"
    );
    let large_first = format!(
        "SELECT gu.login, c.id FROM salesforce.contact c JOIN github.users gu ON c.email = gu.email WHERE gu.login IN ({logins}) ORDER BY 1, 2"
    );
    let pushed = engine(&sb, true);
    // The first run learns the size of the contact object (an unfiltered scan reads every page).
    let (unknown, rows, unknown_requests) = run(&pushed, &large_first).await;
    assert_eq!(rows, 3);
    let (known, _, known_requests) = run(&pushed, &large_first).await;
    let (reference, _, reference_requests) = run(&pushed, &small_first).await;
    assert_eq!((&known, &unknown), (&reference, &reference));
    let (plan, _, _) = run(&pushed, &format!("EXPLAIN {large_first}")).await;
    println!(
        "{unknown_requests} requests before the size is known, {known_requests} after, {reference_requests} written small side first\n{plan}"
    );
    // Built from the users; the contact scan is the probe side, keyed by their emails.
    let users = plan.find("table=github.users").unwrap();
    let contacts = plan.find("table=salesforce.contact").unwrap();
    assert!(users < contacts && plan[contacts..].lines().next().unwrap().contains("join_keys=dynamic"), "{plan}");
    assert!(known_requests < unknown_requests && known_requests == reference_requests);
}
