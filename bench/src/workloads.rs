//! The workloads. Names are stable so results compare across versions.

use omnisql_sandbox::World;

/// The sandbox apps, for the physical-limit model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum App {
    Github,
    Salesforce,
    Slack,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub description: &'static str,
    pub sql: String,
    /// The fewest sequential round trips each app needs for one answer, with unlimited concurrency and
    /// warm sessions. The physical limit is the slowest app's chain.
    pub min_round_trips: Vec<(App, u32)>,
    /// `true` when pushdown can shrink this query's upstream traffic (the 10× target applies).
    pub selective: bool,
}

/// The README's join: open issues by customers, their account, and the account owner in Slack.
pub const JOIN_3: &str = "SELECT i.repo_full_name, i.number, c.email AS customer, su.real_name AS owner
FROM github.issues i
JOIN github.users gu ON gu.login = i.user_login
JOIN salesforce.contact c ON c.email = gu.email
JOIN salesforce.account a ON a.id = c.account_id
JOIN salesforce.\"user\" u ON u.id = a.owner_id
JOIN slack.users su ON su.email = u.email
WHERE i.state = 'open' AND NOT i.is_pull_request";

pub fn all(world: &World) -> Vec<Workload> {
    let account = &world.accounts[world.accounts.len() / 2].id;
    let issue = &world.issues[world.issues.len() / 3];
    let author = &world.github_users[issue.author].login;
    let repo = world.repos[issue.repo].full_name();
    vec![
        Workload {
            name: "point_lookup",
            description: "one Salesforce account by id",
            sql: format!("SELECT name, industry, annual_revenue FROM salesforce.account WHERE id = '{account}'"),
            min_round_trips: vec![(App::Salesforce, 1)],
            selective: true,
        },
        Workload {
            name: "selective_filter",
            description: "one author's issues in one GitHub repository",
            sql: format!(
                "SELECT number, title, state FROM github.issues WHERE repo_full_name = '{repo}' AND user_login = '{author}' AND state = 'open'"
            ),
            min_round_trips: vec![(App::Github, 1)],
            selective: true,
        },
        Workload {
            name: "salesforce_aggregate",
            description: "open pipeline by stage",
            sql: "SELECT stage_name, count(*) AS deals, sum(amount) AS pipeline FROM salesforce.opportunity WHERE is_closed = false GROUP BY stage_name ORDER BY pipeline DESC".into(),
            min_round_trips: vec![(App::Salesforce, 1)],
            selective: true,
        },
        Workload {
            name: "join_3_sources",
            description: "GitHub × Salesforce × Slack on email",
            sql: JOIN_3.into(),
            // GitHub: the open issues, then their authors' details (REST lists no emails).
            min_round_trips: vec![(App::Github, 2), (App::Salesforce, 1), (App::Slack, 1)],
            selective: false,
        },
        Workload {
            name: "complex_4_source",
            description: "adds open opportunities and Slack messages mentioning each issue",
            sql: "SELECT i.repo_full_name, i.number, a.name AS account, sum(o.amount) AS pipeline, count(DISTINCT m.ts) AS mentions
FROM github.issues i
JOIN github.users gu ON gu.login = i.user_login
JOIN salesforce.contact c ON c.email = gu.email
JOIN salesforce.account a ON a.id = c.account_id
JOIN salesforce.opportunity o ON o.account_id = a.id AND o.is_closed = false
LEFT JOIN slack.messages m ON m.text LIKE concat('%', i.repo_full_name, '#', CAST(i.number AS VARCHAR), ' %')
WHERE i.state = 'open'
GROUP BY i.repo_full_name, i.number, a.name
ORDER BY pipeline DESC, i.repo_full_name, i.number
LIMIT 20"
                .into(),
            // Slack: channel list, then each channel's history.
            min_round_trips: vec![(App::Github, 2), (App::Salesforce, 1), (App::Slack, 2)],
            selective: false,
        },
    ]
}

/// Light queries for the sustained multi-tenant mix.
pub fn mix(world: &World) -> Vec<String> {
    let mut out = Vec::new();
    for (i, a) in world.accounts.iter().take(8).enumerate() {
        out.push(format!("SELECT name, annual_revenue FROM salesforce.account WHERE id = '{}'", a.id));
        let issue = &world.issues[(i * 37) % world.issues.len()];
        out.push(format!(
            "SELECT number, title FROM github.issues WHERE repo_full_name = '{}' AND user_login = '{}' AND state = 'open'",
            world.repos[issue.repo].full_name(),
            world.github_users[issue.author].login
        ));
    }
    out
}

/// What a hostile tenant sends in the noisy-neighbour workload: each is refused at once or stopped at a
/// limit (memory, statement timeout, statement size), never answered.
pub fn bombs() -> Vec<String> {
    vec![
        "SELECT repeat('x', 2000000000)".into(),
        "SELECT array_agg(v) FROM generate_series(1, 300000000) t(v)".into(),
        "SELECT count(*) FROM generate_series(1, 5000000000)".into(),
        "SELECT count(*) FROM github.issues a, github.issues b, github.issues c, github.issues d".into(),
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r".into(),
        "SELECT v FROM generate_series(1, 100000000) t(v) ORDER BY v DESC".into(),
        vec!["SELECT 1"; 3000].join(" UNION ALL "),
        "COPY (SELECT 1) TO '/tmp/omnisql-bench-bomb.csv'".into(),
    ]
}
