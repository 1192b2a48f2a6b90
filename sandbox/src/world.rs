//! One deterministic SaaS world, generated from a seed and a scale factor.
//!
//! Our company, Acme, sells to customer companies. Customers are Salesforce accounts with contacts and
//! opportunities; some contacts are also GitHub users (same email) who open issues and pull requests in
//! Acme's repositories. Acme's employees are Slack users, GitHub users (maintainers, assignees) and
//! Salesforce users (account owners), with one email across the three, and they mention issues in Slack
//! (`acme/api#123`). Some GitHub authors are nobody's contact, so some joins find no match.

use chrono::{DateTime, Duration, TimeZone, Utc};

/// The GitHub organisation that owns every repository of the world.
pub const ORG: &str = "acme";
/// The email domain of Acme's employees.
pub const EMPLOYEE_DOMAIN: &str = "acme.dev";

/// Deterministic pseudo-random numbers (SplitMix64): the same seed gives the same world on every
/// platform and every version of our dependencies.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn range(&mut self, lo: u64, hi_inclusive: u64) -> u64 {
        lo + self.below(hi_inclusive - lo + 1)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug, Clone)]
pub struct Employee {
    pub first: String,
    pub last: String,
    pub email: String,
    pub github_login: String,
    pub github_id: i64,
    pub slack_id: String,
    pub salesforce_id: String,
    pub title: String,
}

impl Employee {
    pub fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub kind: &'static str,
    pub industry: &'static str,
    pub annual_revenue: Option<f64>,
    pub employees: Option<i64>,
    pub city: &'static str,
    pub country: &'static str,
    pub owner: usize,
    pub tier: &'static str,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Contact {
    pub id: String,
    pub account: usize,
    pub first: String,
    pub last: String,
    pub email: String,
    pub title: &'static str,
    pub created: DateTime<Utc>,
    /// Index into `World::github_users` when this contact also has a GitHub account.
    pub github_user: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct Opportunity {
    pub id: String,
    pub account: usize,
    pub name: String,
    pub amount: f64,
    pub stage: &'static str,
    pub probability: f64,
    pub close_date: chrono::NaiveDate,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Renewal {
    pub id: String,
    pub name: String,
    pub account: usize,
    pub amount: f64,
    pub date: chrono::NaiveDate,
    pub created: DateTime<Utc>,
}

/// A GitHub user: an employee, a customer contact, or an outside contributor.
#[derive(Debug, Clone)]
pub struct GithubUser {
    pub id: i64,
    pub login: String,
    pub name: String,
    pub email: Option<String>,
    pub company: Option<String>,
    pub created: DateTime<Utc>,
    pub employee: bool,
}

#[derive(Debug, Clone)]
pub struct Repo {
    pub id: i64,
    pub name: String,
    pub description: &'static str,
    pub language: &'static str,
    pub private: bool,
    pub created: DateTime<Utc>,
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{ORG}/{}", self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub id: i64,
    pub repo: usize,
    pub number: i64,
    pub title: String,
    pub body: String,
    pub open: bool,
    pub author: usize,
    pub assignee: Option<usize>,
    pub labels: Vec<&'static str>,
    pub comments: i64,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub closed: Option<DateTime<Utc>>,
    pub is_pull: bool,
    pub merged: bool,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub sha: String,
    pub repo: usize,
    pub author: usize,
    pub message: String,
    pub date: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub purpose: &'static str,
    pub created: DateTime<Utc>,
    pub creator: usize,
    pub archived: bool,
}

#[derive(Debug, Clone)]
pub struct Message {
    pub channel: usize,
    pub ts: String,
    pub user: usize,
    pub text: String,
    pub thread_ts: Option<String>,
}

/// A Jira project: one per repository, keyed by its name in capitals.
#[derive(Debug, Clone)]
pub struct JiraProject {
    pub id: i64,
    pub key: String,
    pub name: String,
    pub lead: usize,
}

/// A Jira issue that tracks a GitHub issue (its URL in the "GitHub issue" field) for a customer.
#[derive(Debug, Clone)]
pub struct JiraIssue {
    pub id: i64,
    pub key: String,
    pub project: usize,
    pub summary: String,
    pub issue_type: &'static str,
    pub status: &'static str,
    pub priority: &'static str,
    pub reporter: usize,
    pub assignee: Option<usize>,
    pub labels: Vec<&'static str>,
    /// Index into `World::issues`.
    pub github_issue: usize,
    /// Index into `World::accounts`: the customer who raised it, when one did.
    pub account: Option<usize>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A Stripe customer: each Salesforce account's billing contact, plus self-serve sign-ups.
#[derive(Debug, Clone)]
pub struct StripeCustomer {
    pub id: String,
    pub email: String,
    pub name: String,
    pub account: Option<usize>,
    pub created: DateTime<Utc>,
    pub delinquent: bool,
}

#[derive(Debug, Clone)]
pub struct StripeInvoice {
    pub id: String,
    pub number: String,
    pub customer: usize,
    pub status: &'static str,
    /// In cents, as Stripe counts.
    pub amount_due: i64,
    pub amount_paid: i64,
    pub created: DateTime<Utc>,
    pub due: DateTime<Utc>,
}

/// A HubSpot company: every Salesforce account (same domain), plus prospects marketing has not handed
/// over yet.
#[derive(Debug, Clone)]
pub struct HubspotCompany {
    pub id: String,
    pub name: String,
    pub domain: String,
    pub industry: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub employees: Option<i64>,
    pub lifecycle: &'static str,
    pub created: DateTime<Utc>,
}

/// A HubSpot contact: every Salesforce contact (same email), plus leads of the prospects.
#[derive(Debug, Clone)]
pub struct HubspotContact {
    pub id: String,
    pub email: String,
    pub first: String,
    pub last: String,
    pub job_title: &'static str,
    pub company: usize,
    pub lifecycle: &'static str,
    pub created: DateTime<Utc>,
}

/// Everything the sandbox apps serve. Collections are in the order the APIs list them.
#[derive(Debug, Clone)]
pub struct World {
    pub seed: u64,
    pub scale: u32,
    pub employees: Vec<Employee>,
    pub accounts: Vec<Account>,
    pub contacts: Vec<Contact>,
    pub opportunities: Vec<Opportunity>,
    pub renewals: Vec<Renewal>,
    pub github_users: Vec<GithubUser>,
    pub repos: Vec<Repo>,
    pub issues: Vec<Issue>,
    pub commits: Vec<Commit>,
    pub channels: Vec<Channel>,
    pub messages: Vec<Message>,
    pub jira_projects: Vec<JiraProject>,
    pub jira_issues: Vec<JiraIssue>,
    pub stripe_customers: Vec<StripeCustomer>,
    pub stripe_invoices: Vec<StripeInvoice>,
    pub hubspot_companies: Vec<HubspotCompany>,
    pub hubspot_contacts: Vec<HubspotContact>,
}

const FIRST: &[&str] = &[
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "Alan",
    "Radia",
    "Edsger",
    "Sophie",
    "Donald",
    "Katherine",
    "John",
    "Hedy",
    "Tim",
    "Shafi",
    "Leslie",
    "Anita",
    "Niklaus",
    "Joan",
    "Bjarne",
    "Mary",
    "Guido",
    "Adele",
    "Yukihiro",
    "Lynn",
    "Rob",
    "Carol",
];
const LAST: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "Turing",
    "Perlman",
    "Dijkstra",
    "Wilson",
    "Knuth",
    "Johnson",
    "McCarthy",
    "Lamarr",
    "Berners",
    "Goldwasser",
    "Lamport",
    "Borg",
    "Wirth",
    "Clarke",
    "Stroustrup",
    "Keller",
    "Rossum",
    "Goldberg",
    "Matsumoto",
    "Conway",
    "Pike",
    "Shaw",
];
const COMPANIES: &[&str] = &[
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Vandelay",
    "Massive",
    "Gringotts",
    "Oscorp",
    "Aperture",
    "Monarch",
    "Virtucon",
    "Dunder",
    "Pied",
    "Nakatomi",
];
const SUFFIXES: &[&str] = &["Corp", "Inc", "Labs", "Systems", "Group", "Industries"];
const INDUSTRIES: &[&str] = &["Technology", "Finance", "Healthcare", "Retail", "Manufacturing", "Energy"];
const CITIES: &[(&str, &str)] = &[
    ("San Francisco", "USA"),
    ("New York", "USA"),
    ("London", "UK"),
    ("Berlin", "Germany"),
    ("Paris", "France"),
    ("Tokyo", "Japan"),
    ("Toronto", "Canada"),
    ("Sydney", "Australia"),
];
const STAGES: &[(&str, f64)] = &[
    ("Prospecting", 10.0),
    ("Qualification", 20.0),
    ("Needs Analysis", 30.0),
    ("Proposal/Price Quote", 60.0),
    ("Negotiation/Review", 80.0),
    ("Closed Won", 100.0),
    ("Closed Lost", 0.0),
];
const REPOS: &[(&str, &str, &str)] = &[
    ("api", "The Acme public API server", "Rust"),
    ("web", "The Acme web app", "TypeScript"),
    ("sdk", "Client libraries for the Acme API", "Python"),
    ("cli", "The acme command line tool", "Go"),
];
const LABELS: &[&str] = &["bug", "enhancement", "customer", "p1", "docs", "question", "performance"];
const TOPICS: &[&str] = &[
    "timeout when exporting reports",
    "login fails with SSO",
    "rate limit too strict on bulk endpoint",
    "dashboard renders blank on Safari",
    "webhook retries duplicate events",
    "pagination skips records",
    "CSV import rejects unicode names",
    "memory leak in long-running sync",
    "add audit log export",
    "support custom fields in filters",
    "slow search on large accounts",
    "typo in API reference",
];
const CHANNELS: &[(&str, &str)] = &[
    ("general", "Company-wide announcements"),
    ("support", "Customer escalations"),
    ("engineering", "Engineering discussion"),
    ("sales", "Deals and pipeline"),
    ("incidents", "Production incidents"),
    ("random", "Everything else"),
];
const TITLES: &[&str] = &["CTO", "VP Engineering", "Developer", "IT Manager", "Procurement", "Analyst"];

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn hex(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(len);
    s
}

/// A Slack-style id: prefix and 10 upper-case base-36 characters.
fn slack_id(prefix: char, n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut v = n.wrapping_mul(2_654_435_761).wrapping_add(0x1F2E_3D4C);
    let mut out = vec![b'0'; 10];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(v % 36) as usize];
        v /= 36;
    }
    format!("{prefix}{}", String::from_utf8_lossy(&out))
}

impl World {
    /// Builds the world. `scale` 1 is small enough for tests (a few hundred issues); 500 gives 100k issues.
    pub fn generate(seed: u64, scale: u32) -> World {
        let scale = scale.max(1);
        let mut rng = Rng::new(seed);
        let base = base_time();
        let mut github_users = Vec::new();
        let mut next_gh_id = 1000_i64;

        // Employees: one person, one email, in all three apps.
        let n_employees = 16 + 4 * (scale as usize).min(50);
        let mut employees = Vec::with_capacity(n_employees);
        for i in 0..n_employees {
            let first = FIRST[i % FIRST.len()].to_string();
            let last = LAST[(i * 7 + i / FIRST.len()) % LAST.len()].to_string();
            let suffix = if i >= FIRST.len() { format!("{}", i / FIRST.len()) } else { String::new() };
            let local = format!("{}.{}{}", first.to_lowercase(), last.to_lowercase(), suffix);
            let email = format!("{local}@{EMPLOYEE_DOMAIN}");
            let login = format!("{}{}-acme", first.to_lowercase(), suffix);
            next_gh_id += 1;
            github_users.push(GithubUser {
                id: next_gh_id,
                login: login.clone(),
                name: format!("{first} {last}"),
                email: Some(email.clone()),
                company: Some("@acme".into()),
                created: base - Duration::days(rng.range(200, 2000) as i64),
                employee: true,
            });
            employees.push(Employee {
                title: if i % 3 == 0 { "Account Executive" } else { "Engineer" }.to_string(),
                first,
                last,
                email,
                github_login: login,
                github_id: next_gh_id,
                slack_id: slack_id('U', i as u64 + 1),
                salesforce_id: format!("005{:015}", i + 1),
            });
        }
        let sales: Vec<usize> = (0..n_employees).filter(|i| i % 3 == 0).collect();
        let engineers: Vec<usize> = (0..n_employees).filter(|i| i % 3 != 0).collect();

        // Customers.
        let n_accounts = 12 * scale as usize;
        let mut accounts = Vec::with_capacity(n_accounts);
        let mut contacts = Vec::new();
        let mut opportunities = Vec::new();
        let mut renewals = Vec::new();
        for a in 0..n_accounts {
            let base_name = COMPANIES[a % COMPANIES.len()];
            let round = a / COMPANIES.len();
            let suffix = SUFFIXES[(a + round) % SUFFIXES.len()];
            let name = if round == 0 { format!("{base_name} {suffix}") } else { format!("{base_name} {suffix} {}", round + 1) };
            let domain = if round == 0 {
                format!("{}.com", base_name.to_lowercase())
            } else {
                format!("{}{}.com", base_name.to_lowercase(), round + 1)
            };
            let (city, country) = *rng.pick(CITIES);
            let revenue = if rng.chance(0.9) { Some(rng.range(1, 500) as f64 * 1_000_000.0) } else { None };
            accounts.push(Account {
                id: format!("001{:015}", a + 1),
                name: name.clone(),
                domain: domain.clone(),
                kind: if rng.chance(0.8) { "Customer - Direct" } else { "Customer - Channel" },
                industry: INDUSTRIES[rng.below(INDUSTRIES.len() as u64) as usize],
                annual_revenue: revenue,
                employees: if rng.chance(0.9) { Some(rng.range(10, 50_000) as i64) } else { None },
                city,
                country,
                owner: *rng.pick(&sales),
                tier: ["Gold", "Silver", "Bronze"][rng.below(3) as usize],
                created: base - Duration::days(rng.range(30, 900) as i64),
            });
            let n_contacts = rng.range(2, 5) as usize;
            for c in 0..n_contacts {
                let first = rng.pick(FIRST).to_string();
                let last = rng.pick(LAST).to_string();
                let email = format!("{}.{}{}@{domain}", first.to_lowercase(), last.to_lowercase(), c);
                // About half of the contacts use GitHub with the same email.
                let github_user = if rng.chance(0.5) {
                    next_gh_id += 1;
                    github_users.push(GithubUser {
                        id: next_gh_id,
                        login: format!("{}{}-{}", first.to_lowercase(), c, domain.trim_end_matches(".com")),
                        name: format!("{first} {last}"),
                        email: Some(email.clone()),
                        company: Some(name.clone()),
                        created: base - Duration::days(rng.range(100, 3000) as i64),
                        employee: false,
                    });
                    Some(github_users.len() - 1)
                } else {
                    None
                };
                contacts.push(Contact {
                    id: format!("003{:015}", contacts.len() + 1),
                    account: a,
                    first,
                    last,
                    email,
                    title: TITLES[rng.below(TITLES.len() as u64) as usize],
                    created: base + Duration::days(rng.range(0, 300) as i64),
                    github_user,
                });
            }
            let n_opps = rng.range(1, 3) as usize;
            for o in 0..n_opps {
                let (stage, probability) = *rng.pick(STAGES);
                opportunities.push(Opportunity {
                    id: format!("006{:015}", opportunities.len() + 1),
                    account: a,
                    name: format!("{name} - {}", ["Expansion", "Renewal", "New Business"][o % 3]),
                    amount: rng.range(5, 900) as f64 * 1_000.0,
                    stage,
                    probability,
                    close_date: (base + Duration::days(rng.range(0, 700) as i64)).date_naive(),
                    created: base + Duration::days(rng.range(0, 400) as i64),
                });
            }
            if rng.chance(0.4) {
                renewals.push(Renewal {
                    id: format!("a01{:015}", renewals.len() + 1),
                    name: format!("R-{:05}", renewals.len() + 1),
                    account: a,
                    amount: rng.range(10, 400) as f64 * 1_000.0,
                    date: (base + Duration::days(rng.range(200, 800) as i64)).date_naive(),
                    created: base + Duration::days(rng.range(0, 200) as i64),
                });
            }
        }

        // Outside contributors: GitHub users who are nobody's contact (their joins find nothing).
        let n_outsiders = 10 + 2 * scale as usize;
        for o in 0..n_outsiders {
            let first = rng.pick(FIRST).to_string();
            next_gh_id += 1;
            github_users.push(GithubUser {
                id: next_gh_id,
                login: format!("{}-dev{o}", first.to_lowercase()),
                name: format!("{first} {}", rng.pick(LAST)),
                email: if rng.chance(0.6) { Some(format!("{}{o}@example.org", first.to_lowercase())) } else { None },
                company: None,
                created: base - Duration::days(rng.range(10, 3000) as i64),
                employee: false,
            });
        }
        let customer_users: Vec<usize> = contacts.iter().filter_map(|c| c.github_user).collect();
        let outsiders: Vec<usize> = (github_users.len() - n_outsiders..github_users.len()).collect();

        let repos: Vec<Repo> = REPOS
            .iter()
            .enumerate()
            .map(|(i, (name, description, language))| Repo {
                id: 5000 + i as i64,
                name: name.to_string(),
                description,
                language,
                private: i == 3,
                created: base - Duration::days(700 + 50 * i as i64),
            })
            .collect();

        // Issues and pull requests share one number sequence per repository.
        let per_repo = 50 * scale as usize;
        let mut issues = Vec::with_capacity(per_repo * repos.len());
        let mut next_issue_id = 100_000_i64;
        for (r, _) in repos.iter().enumerate() {
            for n in 1..=per_repo {
                let is_pull = rng.chance(0.25);
                let author = if is_pull {
                    github_user_of(&employees, &github_users, *rng.pick(&engineers))
                } else if rng.chance(0.6) && !customer_users.is_empty() {
                    *rng.pick(&customer_users)
                } else if rng.chance(0.5) {
                    *rng.pick(&outsiders)
                } else {
                    github_user_of(&employees, &github_users, *rng.pick(&engineers))
                };
                let created = base + Duration::minutes(rng.range(0, 60 * 24 * 600) as i64);
                let open = rng.chance(0.45);
                let updated = created + Duration::minutes(rng.range(1, 60 * 24 * 60) as i64);
                let closed = if open { None } else { Some(updated) };
                let mut labels = Vec::new();
                for l in LABELS {
                    if rng.chance(0.18) {
                        labels.push(*l);
                    }
                }
                let topic = rng.pick(TOPICS);
                next_issue_id += 1;
                issues.push(Issue {
                    id: next_issue_id,
                    repo: r,
                    number: n as i64,
                    title: if is_pull { format!("Fix: {topic}") } else { topic.to_string() },
                    body: format!("Reported via {}: {topic}.", if is_pull { "code review" } else { "support" }),
                    open,
                    author,
                    assignee: if rng.chance(0.6) {
                        Some(github_user_of(&employees, &github_users, *rng.pick(&engineers)))
                    } else {
                        None
                    },
                    labels,
                    comments: rng.range(0, 25) as i64,
                    created,
                    updated,
                    closed,
                    is_pull,
                    merged: is_pull && !open && rng.chance(0.8),
                });
            }
        }

        let per_repo_commits = 30 * scale as usize;
        let mut commits = Vec::with_capacity(per_repo_commits * repos.len());
        for (r, _) in repos.iter().enumerate() {
            for _ in 0..per_repo_commits {
                let author = *rng.pick(&engineers);
                commits.push(Commit {
                    sha: hex(&mut rng, 40),
                    repo: r,
                    author,
                    message: format!("Fix {}", rng.pick(TOPICS)),
                    date: base + Duration::minutes(rng.range(0, 60 * 24 * 600) as i64),
                });
            }
        }
        // Newest first, as GitHub lists commits.
        commits.sort_by_key(|c| std::cmp::Reverse(c.date));

        let channels: Vec<Channel> = CHANNELS
            .iter()
            .enumerate()
            .map(|(i, (name, purpose))| Channel {
                id: slack_id('C', 100 + i as u64),
                name: name.to_string(),
                purpose,
                created: base - Duration::days(800 - i as i64),
                creator: 0,
                archived: false,
            })
            .collect();

        // Messages: employees talk; in support and engineering they mention issues by number.
        let per_channel = 40 * scale as usize;
        let mut messages = Vec::with_capacity(per_channel * channels.len());
        let start = base.timestamp() as u64;
        for (c, ch) in channels.iter().enumerate() {
            let mut t = start + rng.range(0, 3600);
            let mut last_root: Option<String> = None;
            for m in 0..per_channel {
                t += rng.range(60, 60 * 60 * 24 * 600 / per_channel.max(1) as u64 * 2);
                let ts = format!("{t}.{:06}", (c * 1000 + m % 1000) as u64);
                let user = rng.below(employees.len() as u64) as usize;
                let mentions = matches!(ch.name.as_str(), "support" | "engineering" | "incidents");
                let text = if mentions && rng.chance(0.6) && !issues.is_empty() {
                    let issue = &issues[rng.below(issues.len() as u64) as usize];
                    format!(
                        "{} {}#{} ({})",
                        ["Customer escalation on", "Can someone look at", "Fixed in", "Still seeing"][rng.below(4) as usize],
                        repos[issue.repo].full_name(),
                        issue.number,
                        issue.title
                    )
                } else {
                    format!("{} {}", ["Morning all:", "Heads up:", "FYI", "Reminder:"][rng.below(4) as usize], rng.pick(TOPICS))
                };
                let thread_ts = match &last_root {
                    Some(root) if rng.chance(0.2) => Some(root.clone()),
                    _ => None,
                };
                if thread_ts.is_none() {
                    last_root = Some(ts.clone());
                }
                messages.push(Message { channel: c, ts, user, text, thread_ts });
            }
        }

        let mut world = World {
            seed,
            scale,
            employees,
            accounts,
            contacts,
            opportunities,
            renewals,
            github_users,
            repos,
            issues,
            commits,
            channels,
            messages,
            jira_projects: Vec::new(),
            jira_issues: Vec::new(),
            stripe_customers: Vec::new(),
            stripe_invoices: Vec::new(),
            hubspot_companies: Vec::new(),
            hubspot_contacts: Vec::new(),
        };
        world.add_jira_stripe_hubspot();
        world
    }

    /// Jira, Stripe and HubSpot over the same people and companies, from a random stream of their own
    /// so that the first three apps' data stays what it was.
    fn add_jira_stripe_hubspot(&mut self) {
        let mut rng = Rng::new(self.seed ^ 0x0A11_5EED_0000_0003);
        let base = base_time();
        let engineers: Vec<usize> = (0..self.employees.len()).filter(|i| i % 3 != 0).collect();

        // Jira: a project per repository; about a third of the GitHub issues (not pull requests) tracked.
        self.jira_projects = self
            .repos
            .iter()
            .enumerate()
            .map(|(i, r)| JiraProject {
                id: 10_000 + i as i64,
                key: r.name.to_uppercase(),
                name: format!("Acme {}", r.name.to_uppercase()),
                lead: engineers[i % engineers.len()],
            })
            .collect();
        let email_account: std::collections::HashMap<&str, usize> =
            self.contacts.iter().map(|c| (c.email.as_str(), c.account)).collect();
        let mut per_project = vec![0usize; self.jira_projects.len()];
        for (gi, issue) in self.issues.iter().enumerate() {
            if issue.is_pull || !rng.chance(0.35) {
                continue;
            }
            per_project[issue.repo] += 1;
            let project = &self.jira_projects[issue.repo];
            let account = self.github_users[issue.author].email.as_deref().and_then(|e| email_account.get(e).copied());
            let status = if issue.open { ["To Do", "In Progress"][rng.below(2) as usize] } else { "Done" };
            let mut labels = Vec::new();
            if account.is_some() {
                labels.push("customer");
            }
            if issue.labels.contains(&"bug") {
                labels.push("bug");
            }
            self.jira_issues.push(JiraIssue {
                id: 20_000 + self.jira_issues.len() as i64,
                key: format!("{}-{}", project.key, per_project[issue.repo]),
                project: issue.repo,
                summary: issue.title.clone(),
                issue_type: if issue.labels.contains(&"bug") { "Bug" } else { ["Task", "Story"][rng.below(2) as usize] },
                status,
                priority: ["Highest", "High", "Medium", "Low"][rng.below(4) as usize],
                reporter: *rng.pick(&engineers),
                assignee: if rng.chance(0.7) { Some(*rng.pick(&engineers)) } else { None },
                labels,
                github_issue: gi,
                account,
                created: issue.created + Duration::minutes(rng.range(5, 60 * 24) as i64),
                updated: issue.updated + Duration::minutes(rng.range(0, 60) as i64),
            });
        }

        // Stripe: the first contact of each account is its billing contact; some sign-ups have no account.
        for (a, account) in self.accounts.iter().enumerate() {
            let Some(billing) = self.contacts.iter().find(|c| c.account == a) else { continue };
            self.stripe_customers.push(StripeCustomer {
                id: format!("cus_{}", &hex(&mut rng, 14)),
                email: billing.email.clone(),
                name: account.name.clone(),
                account: Some(a),
                created: account.created + Duration::days(rng.range(1, 60) as i64),
                delinquent: false,
            });
        }
        let n_signups = 6 * self.scale as usize;
        for i in 0..n_signups {
            let first = rng.pick(FIRST).to_lowercase();
            self.stripe_customers.push(StripeCustomer {
                id: format!("cus_{}", &hex(&mut rng, 14)),
                email: format!("{first}{i}@selfserve.example"),
                name: format!("{} (self-serve)", rng.pick(FIRST)),
                account: None,
                created: base + Duration::days(rng.range(0, 500) as i64),
                delinquent: false,
            });
        }
        for c in 0..self.stripe_customers.len() {
            let months = rng.range(2, 8) as i64;
            let monthly = rng.range(5, 200) as i64 * 10_000;
            for m in 0..months {
                let created = self.stripe_customers[c].created + Duration::days(30 * (m + 1));
                let last = m == months - 1;
                let status = if !last {
                    if rng.chance(0.05) { "void" } else { "paid" }
                } else {
                    ["paid", "open", "open", "uncollectible"][rng.below(4) as usize]
                };
                if status == "uncollectible" {
                    self.stripe_customers[c].delinquent = true;
                }
                let n = self.stripe_invoices.len() + 1;
                self.stripe_invoices.push(StripeInvoice {
                    id: format!("in_{}", &hex(&mut rng, 14)),
                    number: format!("ACME-{n:05}"),
                    customer: c,
                    status,
                    amount_due: monthly,
                    amount_paid: if status == "paid" { monthly } else { 0 },
                    created,
                    due: created + Duration::days(30),
                });
            }
        }
        // HubSpot: every account's company and contacts, plus prospects with leads.
        for (a, account) in self.accounts.iter().enumerate() {
            self.hubspot_companies.push(HubspotCompany {
                id: (9_000_000_000 + a as i64 * 7).to_string(),
                name: account.name.clone(),
                domain: account.domain.clone(),
                industry: account.industry,
                city: account.city,
                country: account.country,
                employees: account.employees,
                lifecycle: "customer",
                created: account.created - Duration::days(rng.range(10, 200) as i64),
            });
            for c in self.contacts.iter().filter(|c| c.account == a) {
                self.hubspot_contacts.push(HubspotContact {
                    id: (5_000_000 + self.hubspot_contacts.len() as i64 * 3).to_string(),
                    email: c.email.clone(),
                    first: c.first.clone(),
                    last: c.last.clone(),
                    job_title: c.title,
                    company: self.hubspot_companies.len() - 1,
                    lifecycle: "customer",
                    created: c.created - Duration::days(rng.range(10, 200) as i64),
                });
            }
        }
        let n_prospects = 4 * self.scale as usize;
        for p in 0..n_prospects {
            let name =
                format!("{} Ventures{}", rng.pick(COMPANIES), if p >= COMPANIES.len() { format!(" {p}") } else { String::new() });
            let domain = format!("{}.io", name.to_lowercase().replace(' ', ""));
            let (city, country) = *rng.pick(CITIES);
            self.hubspot_companies.push(HubspotCompany {
                id: (9_100_000_000 + p as i64 * 7).to_string(),
                name,
                domain: domain.clone(),
                industry: INDUSTRIES[rng.below(INDUSTRIES.len() as u64) as usize],
                city,
                country,
                employees: Some(rng.range(5, 500) as i64),
                lifecycle: ["lead", "marketingqualifiedlead", "salesqualifiedlead"][rng.below(3) as usize],
                created: base + Duration::days(rng.range(100, 600) as i64),
            });
            for l in 0..rng.range(1, 3) {
                let (first, last) = (rng.pick(FIRST).to_string(), rng.pick(LAST).to_string());
                self.hubspot_contacts.push(HubspotContact {
                    id: (5_000_000 + self.hubspot_contacts.len() as i64 * 3).to_string(),
                    email: format!("{}.{}{l}@{domain}", first.to_lowercase(), last.to_lowercase()),
                    first,
                    last,
                    job_title: TITLES[rng.below(TITLES.len() as u64) as usize],
                    company: self.hubspot_companies.len() - 1,
                    lifecycle: "lead",
                    created: base + Duration::days(rng.range(100, 600) as i64),
                });
            }
        }
    }

    pub fn github_user_by_login(&self, login: &str) -> Option<&GithubUser> {
        self.github_users.iter().find(|u| u.login.eq_ignore_ascii_case(login))
    }

    pub fn employee_github_user(&self, employee: usize) -> usize {
        github_user_of(&self.employees, &self.github_users, employee)
    }
}

fn github_user_of(employees: &[Employee], users: &[GithubUser], employee: usize) -> usize {
    let id = employees[employee].github_id;
    users.iter().position(|u| u.id == id).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_world_and_another_seed_does_not() {
        let a = World::generate(7, 1);
        let b = World::generate(7, 1);
        let c = World::generate(8, 1);
        assert_eq!(a.issues.len(), b.issues.len());
        assert_eq!(a.issues[17].title, b.issues[17].title);
        assert_eq!(a.messages[33].text, b.messages[33].text);
        assert_ne!(a.issues.iter().map(|i| i.author).collect::<Vec<_>>(), c.issues.iter().map(|i| i.author).collect::<Vec<_>>());
    }

    #[test]
    fn joins_on_email_find_matches_and_misses() {
        let w = World::generate(42, 1);
        let contact_emails: std::collections::HashSet<&str> = w.contacts.iter().map(|c| c.email.as_str()).collect();
        let authors_with_contact = w
            .issues
            .iter()
            .filter(|i| w.github_users[i.author].email.as_deref().is_some_and(|e| contact_emails.contains(e)))
            .count();
        assert!(authors_with_contact > 10, "some issue authors are customer contacts");
        assert!(authors_with_contact < w.issues.len(), "and some are not");
        assert!(w.messages.iter().any(|m| m.text.contains("acme/api#")));
    }

    #[test]
    fn large_scale_reaches_100k_issues() {
        let w = World::generate(1, 500);
        assert!(w.issues.len() >= 100_000, "{} issues", w.issues.len());
    }
}
