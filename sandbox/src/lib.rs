//! Faithful local GitHub, Salesforce, Slack, Jira, Stripe and HubSpot servers over one coherent seeded
//! world.
//!
//! [`Sandbox::start`] binds an HTTP server on loopback per app, all serving the same
//! [`World`]. Every request passes through [`harness`]: it is counted (`GET /_sandbox/stats`), delayed by
//! the latency model and, if configured, answered by an injected fault; then the app checks the
//! credentials and the quota the way the real service does, and serves the world.

#![recursion_limit = "256"]
// Handlers return ready HTTP responses as their error values, as axum handlers do.
#![allow(clippy::result_large_err)]

pub mod github;
mod github_graphql;
pub mod harness;
pub mod hubspot;
pub mod jira;
pub mod salesforce;
pub mod slack;
pub mod soql;
pub mod stripe;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use harness::{Faults, Latency, Settings};
pub use world::World;

/// Credentials the sandbox accepts. Anything else is rejected the way the real API rejects it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub github_token: String,
    pub salesforce_client_id: String,
    pub salesforce_client_secret: String,
    pub salesforce_refresh_token: String,
    pub slack_token: String,
    #[serde(default = "defaults::jira_token")]
    pub jira_token: String,
    #[serde(default = "defaults::stripe_key")]
    pub stripe_key: String,
    #[serde(default = "defaults::hubspot_token")]
    pub hubspot_token: String,
}

mod defaults {
    pub fn jira_token() -> String {
        "jira-sandbox-oauth-token".into()
    }
    pub fn stripe_key() -> String {
        "sk_test_sandbox0000000000000000".into()
    }
    pub fn hubspot_token() -> String {
        "pat-na1-00000000-0000-4000-8000-sandbox00000".into()
    }
}

impl Default for Credentials {
    fn default() -> Self {
        Credentials {
            github_token: "ghp_sandboxDemoToken0000000000000000000".into(),
            salesforce_client_id: "sandbox-client-id".into(),
            salesforce_client_secret: "sandbox-client-secret".into(),
            salesforce_refresh_token: "sandbox-refresh-token".into(),
            slack_token: "xoxb-sandbox-demo-token".into(),
            jira_token: defaults::jira_token(),
            stripe_key: defaults::stripe_key(),
            hubspot_token: defaults::hubspot_token(),
        }
    }
}

/// Request allowances, as the real services count them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Quotas {
    /// GitHub core requests per hour per token (5,000 for a user token).
    pub github_per_hour: u64,
    /// GitHub search requests per minute.
    pub github_search_per_minute: u64,
    /// GitHub's secondary limits: points per minute per endpoint (a GET is one point) and requests in
    /// flight at once.
    pub github_points_per_minute: u64,
    /// GitHub's secondary limit on the GraphQL endpoint: points per minute (a query is one point).
    pub github_graphql_points_per_minute: u64,
    pub github_max_concurrent: usize,
    /// Salesforce requests per rolling 24 hours per org.
    pub salesforce_per_day: u64,
    /// Multiplier on Slack's per-method tiers (Tier 2 = 20/min, Tier 3 = 50/min at 1.0).
    pub slack_tier_multiplier: f64,
    /// Jira requests per minute per token (Jira Cloud's cost budget, counted as one per request).
    #[serde(default = "Quotas::jira_default")]
    pub jira_per_minute: u64,
    /// Stripe read requests per second in test mode.
    #[serde(default = "Quotas::stripe_default")]
    pub stripe_per_second: u64,
    /// HubSpot requests per ten seconds per private app (Pro and Enterprise accounts).
    #[serde(default = "Quotas::hubspot_default")]
    pub hubspot_per_ten_seconds: u64,
}

impl Default for Quotas {
    /// The real services' numbers.
    fn default() -> Self {
        Quotas {
            github_per_hour: 5_000,
            github_search_per_minute: 30,
            github_points_per_minute: 900,
            github_graphql_points_per_minute: 2_000,
            github_max_concurrent: 100,
            salesforce_per_day: 100_000,
            slack_tier_multiplier: 1.0,
            jira_per_minute: Quotas::jira_default(),
            stripe_per_second: Quotas::stripe_default(),
            hubspot_per_ten_seconds: Quotas::hubspot_default(),
        }
    }
}

impl Quotas {
    /// Allowances large enough that interactive use, tests and benchmarks never meet them, for
    /// `omnisql dev`: the demo should show queries, not waiting.
    pub fn generous() -> Self {
        Quotas {
            github_per_hour: 10_000_000,
            github_search_per_minute: 100_000,
            github_points_per_minute: 100_000_000,
            github_graphql_points_per_minute: 100_000_000,
            github_max_concurrent: 100_000,
            salesforce_per_day: 100_000_000,
            slack_tier_multiplier: 10_000.0,
            jira_per_minute: 100_000_000,
            stripe_per_second: 100_000_000,
            hubspot_per_ten_seconds: 100_000_000,
        }
    }

    fn jira_default() -> u64 {
        600
    }
    fn stripe_default() -> u64 {
        25
    }
    fn hubspot_default() -> u64 {
        190
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxConfig {
    pub seed: u64,
    pub scale: u32,
    pub credentials: Credentials,
    pub quotas: Quotas,
    pub github: Settings,
    pub salesforce: Settings,
    pub slack: Settings,
    #[serde(default)]
    pub jira: Settings,
    #[serde(default)]
    pub stripe: Settings,
    #[serde(default)]
    pub hubspot: Settings,
    /// Lifetime of Salesforce access tokens; expired ones answer `INVALID_SESSION_ID`.
    pub salesforce_token_ttl_secs: u64,
    /// Address to bind; port 0 picks free ports.
    pub host: String,
    pub github_port: u16,
    pub salesforce_port: u16,
    pub slack_port: u16,
    #[serde(default)]
    pub jira_port: u16,
    #[serde(default)]
    pub stripe_port: u16,
    #[serde(default)]
    pub hubspot_port: u16,
}

impl SandboxConfig {
    /// The benchmark's default latency model: GitHub 100 ms, Salesforce 150 ms, Slack 80 ms, Jira 120 ms,
    /// Stripe 60 ms, HubSpot 90 ms, ±20%.
    pub fn with_default_latency(mut self) -> Self {
        self.github.latency = Latency { fixed_ms: 100, jitter_pct: 20.0 };
        self.salesforce.latency = Latency { fixed_ms: 150, jitter_pct: 20.0 };
        self.slack.latency = Latency { fixed_ms: 80, jitter_pct: 20.0 };
        self.jira.latency = Latency { fixed_ms: 120, jitter_pct: 20.0 };
        self.stripe.latency = Latency { fixed_ms: 60, jitter_pct: 20.0 };
        self.hubspot.latency = Latency { fixed_ms: 90, jitter_pct: 20.0 };
        self
    }

    /// The same latency on every app.
    pub fn with_latency(mut self, latency: Latency) -> Self {
        for app in [&mut self.github, &mut self.salesforce, &mut self.slack, &mut self.jira, &mut self.stripe, &mut self.hubspot]
        {
            app.latency = latency;
        }
        self
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 42,
            scale: 1,
            credentials: Credentials::default(),
            quotas: Quotas::default(),
            github: Settings::default(),
            salesforce: Settings::default(),
            slack: Settings::default(),
            jira: Settings::default(),
            stripe: Settings::default(),
            hubspot: Settings::default(),
            salesforce_token_ttl_secs: 3600,
            host: "127.0.0.1".into(),
            github_port: 0,
            salesforce_port: 0,
            slack_port: 0,
            jira_port: 0,
            stripe_port: 0,
            hubspot_port: 0,
        }
    }
}

/// The running servers. Dropping it stops them.
#[derive(Debug)]
pub struct Sandbox {
    pub github_url: String,
    pub salesforce_url: String,
    pub slack_url: String,
    pub jira_url: String,
    pub stripe_url: String,
    pub hubspot_url: String,
    pub world: Arc<World>,
    pub credentials: Credentials,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl Sandbox {
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let world = Arc::new(World::generate(config.seed, config.scale));
        let (gh_addr, gh) = bind(&config.host, config.github_port).await?;
        let (sf_addr, sf) = bind(&config.host, config.salesforce_port).await?;
        let (sl_addr, sl) = bind(&config.host, config.slack_port).await?;
        let github_url = format!("http://{gh_addr}");
        let salesforce_url = format!("http://{sf_addr}");
        let slack_url = format!("http://{sl_addr}");

        let github = github::router(github::GithubState::new(world.clone(), &config, github_url.clone()));
        let salesforce = salesforce::router(salesforce::SalesforceState::new(world.clone(), &config, salesforce_url.clone()));
        let slack = slack::router(slack::SlackState::new(world.clone(), &config));
        let (jira_url, jira) =
            app(&config.host, config.jira_port, |url| jira::router(jira::JiraState::new(world.clone(), &config, url))).await?;
        let (stripe_url, stripe) =
            app(&config.host, config.stripe_port, |_| stripe::router(stripe::StripeState::new(world.clone(), &config))).await?;
        let (hubspot_url, hubspot) = app(&config.host, config.hubspot_port, |url| {
            hubspot::router(hubspot::HubspotState::new(world.clone(), &config, url))
        })
        .await?;
        let tasks = vec![serve(gh, github), serve(sf, salesforce), serve(sl, slack), jira, stripe, hubspot];
        tracing::info!(%github_url, %salesforce_url, %slack_url, %jira_url, %stripe_url, %hubspot_url, "sandbox listening");
        Ok(Sandbox {
            github_url,
            salesforce_url,
            slack_url,
            jira_url,
            stripe_url,
            hubspot_url,
            world,
            credentials: config.credentials,
            tasks,
        })
    }
}

/// How a connection reaches one sandbox app: connector name and its options.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxConnection {
    pub name: &'static str,
    pub connector: &'static str,
    pub options: std::collections::BTreeMap<String, String>,
}

impl Sandbox {
    /// Every app's name and base URL.
    pub fn urls(&self) -> [(&'static str, &str); 6] {
        [
            ("GitHub", &self.github_url),
            ("Salesforce", &self.salesforce_url),
            ("Slack", &self.slack_url),
            ("Jira", &self.jira_url),
            ("Stripe", &self.stripe_url),
            ("HubSpot", &self.hubspot_url),
        ]
    }

    /// Connection options for every app, with the credentials the sandbox accepts.
    pub fn connections(&self) -> Vec<SandboxConnection> {
        let c = &self.credentials;
        let opts = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        vec![
            SandboxConnection {
                name: "github",
                connector: "github",
                options: opts(&[("base_url", &self.github_url), ("token", &c.github_token), ("orgs", world::ORG)]),
            },
            SandboxConnection {
                name: "salesforce",
                connector: "salesforce",
                options: opts(&[
                    ("login_url", &self.salesforce_url),
                    ("client_id", &c.salesforce_client_id),
                    ("client_secret", &c.salesforce_client_secret),
                ]),
            },
            SandboxConnection {
                name: "slack",
                connector: "slack",
                options: opts(&[("base_url", &self.slack_url), ("token", &c.slack_token)]),
            },
            SandboxConnection {
                name: "jira",
                connector: "jira",
                options: opts(&[("base_url", &self.jira_url), ("token", &c.jira_token)]),
            },
            SandboxConnection {
                name: "stripe",
                connector: "stripe",
                options: opts(&[("base_url", &self.stripe_url), ("token", &c.stripe_key)]),
            },
            SandboxConnection {
                name: "hubspot",
                connector: "hubspot",
                options: opts(&[("base_url", &self.hubspot_url), ("token", &c.hubspot_token)]),
            },
        ]
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bind(host: &str, port: u16) -> Result<(SocketAddr, TcpListener), SandboxError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr).await.map_err(|source| SandboxError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr().map_err(|source| SandboxError::Bind { addr, source })?;
    Ok((local, listener))
}

/// Binds one app's server and starts it: its base URL and task.
async fn app(host: &str, port: u16, router: impl FnOnce(&str) -> axum::Router) -> Result<(String, JoinHandle<()>), SandboxError> {
    let (addr, listener) = bind(host, port).await?;
    let url = format!("http://{addr}");
    let task = serve(listener, router(&url));
    Ok((url, task))
}

fn serve(listener: TcpListener, router: axum::Router) -> JoinHandle<()> {
    use axum::serve::ListenerExt;
    // Answer without Nagle's delay, as the real services' front ends do.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "sandbox server stopped");
        }
    })
}
