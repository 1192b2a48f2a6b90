//! `omnisql admin`: the admin REST API from the command line. Each command is one API call; the
//! answer is printed as JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The control plane's admin API.
    #[arg(long, env = "OMNISQL_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key (a platform operator's, or a tenant admin's for its own tenant).
    #[arg(long, env = "OMNISQL_ADMIN_KEY", hide_env_values = true)]
    key: String,
    #[command(subcommand)]
    command: AdminCommand,
}

/// What a tenant may use on a data plane; absent: the data plane's defaults.
#[derive(Debug, clap::Args)]
struct TenantLimits {
    /// Share of contended rate limits relative to other tenants (default 1).
    #[arg(long)]
    weight: Option<f64>,
    /// Longest one of the tenant's statements may run, in seconds.
    #[arg(long)]
    statement_timeout_seconds: Option<i64>,
    /// Statements the tenant may run at once on one data plane; more queue.
    #[arg(long)]
    max_concurrent_queries: Option<i64>,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Create a tenant, optionally with its first admin (whose API key is printed once).
    CreateTenant {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        region: String,
        #[arg(long)]
        admin: Option<String>,
        /// The tenant's KMS key (id or ARN).
        #[arg(long)]
        key_id: Option<String>,
        #[command(flatten)]
        limits: TenantLimits,
    },
    /// Change a tenant's name, weight or limits; data planes apply them at once.
    UpdateTenant {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        limits: TenantLimits,
    },
    ListTenants,
    DeleteTenant {
        id: String,
    },
    /// Create a user or service account.
    CreatePrincipal {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        /// tenant_admin or tenant_member; in the platform tenant, platform_operator or data_plane_operator.
        #[arg(long, default_value = "tenant_member")]
        role: String,
        /// user or service_account.
        #[arg(long, default_value = "user")]
        kind: String,
        /// A data_plane_operator's regions (repeat the flag for several).
        #[arg(long = "region")]
        regions: Vec<String>,
        /// A group policies can match (repeat for several).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// An attribute policies can match, NAME=VALUE (repeat for several).
        #[arg(long = "attribute", value_parser = parse_option)]
        attributes: Vec<(String, String)>,
    },
    /// Replace a principal's groups and/or attributes (the tenant's data planes apply them at once).
    UpdatePrincipal {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        id: String,
        /// The principal's groups from now on (repeat; `--no-groups` clears them).
        #[arg(long = "group", conflicts_with = "no_groups")]
        groups: Vec<String>,
        #[arg(long)]
        no_groups: bool,
        /// Its attributes from now on, NAME=VALUE (repeat; `--no-attributes` clears them).
        #[arg(long = "attribute", value_parser = parse_option, conflicts_with = "no_attributes")]
        attributes: Vec<(String, String)>,
        #[arg(long)]
        no_attributes: bool,
    },
    /// What a principal sees of a table under the tenant's policies, and why.
    #[command(alias = "explain-policy")]
    ExplainAccess {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        principal: String,
        /// connection.table, e.g. salesforce.account
        #[arg(long)]
        table: String,
    },
    /// Trust an OIDC issuer: its tokens sign the tenant's principals in (Flight SQL: any principal the
    /// claims name, with the token's groups; admin API: existing principals).
    SetOidc {
        #[arg(long)]
        tenant: String,
        /// The tokens' `iss`, e.g. https://login.example.com/realms/acme
        #[arg(long)]
        issuer: String,
        /// The `aud` the tokens must name.
        #[arg(long)]
        audience: String,
        /// The claim naming the principal.
        #[arg(long, default_value = "sub")]
        principal_claim: String,
        /// The claim listing the principal's groups.
        #[arg(long, default_value = "groups")]
        groups_claim: String,
    },
    /// The OIDC issuer the tenant trusts.
    ShowOidc {
        #[arg(long)]
        tenant: String,
    },
    /// Stop trusting the tenant's OIDC issuer.
    RemoveOidc {
        #[arg(long)]
        tenant: String,
    },
    /// Have the tenant's own OPA server decide its policies (data planes must allow its URL).
    SetOpa {
        #[arg(long)]
        tenant: String,
        /// e.g. http://opa.policy.svc:8181
        #[arg(long)]
        url: String,
        /// The rule answering the batch.
        #[arg(long, default_value = "omnisql/batch")]
        path: String,
        /// How long one request may take before the query is refused.
        #[arg(long, default_value_t = 500)]
        timeout_ms: u64,
        /// How long decisions are reused, in seconds (at least 1).
        #[arg(long, default_value_t = 60)]
        cache_seconds: u64,
    },
    /// The OPA server that decides the tenant's policies.
    ShowOpa {
        #[arg(long)]
        tenant: String,
    },
    /// Go back to the tenant's stored Rego policies.
    RemoveOpa {
        #[arg(long)]
        tenant: String,
    },
    /// Create an API key (printed once).
    CreateKey {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        principal: String,
        #[arg(long)]
        expires_in_seconds: Option<u64>,
    },
    ListKeys {
        #[arg(long)]
        tenant: String,
    },
    RevokeKey {
        #[arg(long)]
        tenant: String,
        /// The key's id (from list-keys).
        #[arg(long)]
        id: String,
    },
    /// Create a connection; secret options are sealed by the control plane.
    CreateConnection {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        connector: String,
        #[arg(long)]
        version: Option<String>,
        /// NAME=VALUE, repeated.
        #[arg(long = "option", value_parser = parse_option)]
        options: Vec<(String, String)>,
    },
    ListConnections {
        #[arg(long)]
        tenant: String,
    },
    DeleteConnection {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// Have a data plane of the tenant's region read one row through the connection, and print what it found.
    TestConnection {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// Move a connection to another version of its connector, after that version's smoke tests pass.
    UpgradeConnection {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
    },
    /// Store a new version of a Rego policy from a file.
    PutPolicy {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// A one-time token for enrolling a data plane of a region.
    EnrollmentToken {
        #[arg(long)]
        region: String,
    },
    ListDataPlanes,
    /// Remove a data plane: its credential stops working.
    DeleteDataPlane {
        id: String,
    },
    ListConnectors,
    /// Search the audit trail.
    Audit {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        principal: Option<String>,
        #[arg(long)]
        table: Option<String>,
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Check the tenant's audit hash chain.
    VerifyAudit {
        #[arg(long)]
        tenant: String,
    },
}

fn parse_option(s: &str) -> Result<(String, String), String> {
    s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot reach the admin API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("the admin API answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A minimal admin API client, also used by `omnisql dev` to set up its demo tenant.
pub struct AdminClient {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl AdminClient {
    pub fn new(url: &str, key: &str) -> AdminClient {
        AdminClient { http: reqwest::Client::new(), url: url.trim_end_matches('/').to_string(), key: key.to_string() }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, AdminError> {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| AdminError::Unreachable { url: self.url.clone(), message: e.to_string() })?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let mut message = body["error"]["message"].as_str().unwrap_or(&text).to_string();
        for f in body["error"]["fields"].as_array().into_iter().flatten() {
            message.push_str(&format!("\n  {}: {}", f["field"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or("")));
        }
        Err(AdminError::Refused { status: status.as_u16(), message })
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, AdminError> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

pub async fn run(args: AdminArgs) -> Result<(), AdminError> {
    use reqwest::Method;
    let c = AdminClient::new(&args.url, &args.key);
    let answer = match args.command {
        AdminCommand::CreateTenant { id, name, region, admin, key_id, limits } => {
            let body = json!({"id": id, "name": name, "region": region, "admin": admin, "key_id": key_id,
                "weight": limits.weight, "statement_timeout_seconds": limits.statement_timeout_seconds,
                "max_concurrent_queries": limits.max_concurrent_queries});
            c.post("/v1/tenants", body).await?
        }
        AdminCommand::UpdateTenant { id, name, limits } => {
            let body = json!({"name": name, "weight": limits.weight,
                "statement_timeout_seconds": limits.statement_timeout_seconds,
                "max_concurrent_queries": limits.max_concurrent_queries});
            c.call(Method::PATCH, &format!("/v1/tenants/{id}"), Some(body)).await?
        }
        AdminCommand::ListTenants => c.call(Method::GET, "/v1/tenants?limit=500", None).await?,
        AdminCommand::DeleteTenant { id } => c.call(Method::DELETE, &format!("/v1/tenants/{id}"), None).await?,
        AdminCommand::CreatePrincipal { tenant, id, role, kind, regions, groups, attributes } => {
            let attributes: std::collections::BTreeMap<_, _> = attributes.into_iter().collect();
            let body =
                json!({"id": id, "role": role, "kind": kind, "regions": regions, "groups": groups, "attributes": attributes});
            c.post(&format!("/v1/tenants/{tenant}/principals"), body).await?
        }
        AdminCommand::UpdatePrincipal { tenant, id, groups, no_groups, attributes, no_attributes } => {
            let mut body = serde_json::Map::new();
            if no_groups || !groups.is_empty() {
                body.insert("groups".into(), json!(groups));
            }
            if no_attributes || !attributes.is_empty() {
                body.insert("attributes".into(), json!(attributes.into_iter().collect::<std::collections::BTreeMap<_, _>>()));
            }
            c.call(Method::PATCH, &format!("/v1/tenants/{tenant}/principals/{id}"), Some(serde_json::Value::Object(body))).await?
        }
        AdminCommand::ExplainAccess { tenant, principal, table } => {
            let table: String = url::form_urlencoded::byte_serialize(table.as_bytes()).collect();
            c.call(Method::GET, &format!("/v1/tenants/{tenant}/principals/{principal}/access?table={table}"), None).await?
        }
        AdminCommand::SetOidc { tenant, issuer, audience, principal_claim, groups_claim } => {
            let body =
                json!({"issuer": issuer, "audience": audience, "principal_claim": principal_claim, "groups_claim": groups_claim});
            c.call(Method::PUT, &format!("/v1/tenants/{tenant}/oidc"), Some(body)).await?
        }
        AdminCommand::ShowOidc { tenant } => c.call(Method::GET, &format!("/v1/tenants/{tenant}/oidc"), None).await?,
        AdminCommand::RemoveOidc { tenant } => c.call(Method::DELETE, &format!("/v1/tenants/{tenant}/oidc"), None).await?,
        AdminCommand::SetOpa { tenant, url, path, timeout_ms, cache_seconds } => {
            let body = json!({"url": url, "path": path, "timeout_ms": timeout_ms, "cache_seconds": cache_seconds});
            c.call(Method::PUT, &format!("/v1/tenants/{tenant}/opa"), Some(body)).await?
        }
        AdminCommand::ShowOpa { tenant } => c.call(Method::GET, &format!("/v1/tenants/{tenant}/opa"), None).await?,
        AdminCommand::RemoveOpa { tenant } => c.call(Method::DELETE, &format!("/v1/tenants/{tenant}/opa"), None).await?,
        AdminCommand::CreateKey { tenant, principal, expires_in_seconds } => {
            let body = json!({"principal": principal, "expires_in_seconds": expires_in_seconds});
            c.post(&format!("/v1/tenants/{tenant}/api-keys"), body).await?
        }
        AdminCommand::ListKeys { tenant } => {
            c.call(Method::GET, &format!("/v1/tenants/{tenant}/api-keys?limit=500"), None).await?
        }
        AdminCommand::RevokeKey { tenant, id } => {
            c.call(Method::DELETE, &format!("/v1/tenants/{tenant}/api-keys/{id}"), None).await?
        }
        AdminCommand::CreateConnection { tenant, name, connector, version, options } => {
            let options: BTreeMap<String, String> = options.into_iter().collect();
            let body = json!({"name": name, "connector": connector, "version": version, "options": options});
            c.post(&format!("/v1/tenants/{tenant}/connections"), body).await?
        }
        AdminCommand::ListConnections { tenant } => {
            c.call(Method::GET, &format!("/v1/tenants/{tenant}/connections?limit=500"), None).await?
        }
        AdminCommand::DeleteConnection { tenant, name } => {
            c.call(Method::DELETE, &format!("/v1/tenants/{tenant}/connections/{name}"), None).await?
        }
        AdminCommand::TestConnection { tenant, name } => {
            c.call(Method::POST, &format!("/v1/tenants/{tenant}/connections/{name}/test"), None).await?
        }
        AdminCommand::UpgradeConnection { tenant, name, version } => {
            c.post(&format!("/v1/tenants/{tenant}/connections/{name}/upgrade"), json!({"version": version})).await?
        }
        AdminCommand::PutPolicy { tenant, name, file } => {
            let rego =
                std::fs::read_to_string(&file).map_err(|source| AdminError::Read { path: file.display().to_string(), source })?;
            c.call(Method::PUT, &format!("/v1/tenants/{tenant}/policies/{name}"), Some(json!({"rego": rego}))).await?
        }
        AdminCommand::EnrollmentToken { region } => c.post("/v1/enrollment-tokens", json!({"region": region})).await?,
        AdminCommand::ListDataPlanes => c.call(Method::GET, "/v1/data-planes", None).await?,
        AdminCommand::DeleteDataPlane { id } => c.call(Method::DELETE, &format!("/v1/data-planes/{id}"), None).await?,
        AdminCommand::ListConnectors => c.call(Method::GET, "/v1/connectors", None).await?,
        AdminCommand::Audit { tenant, principal, table, outcome, limit } => {
            let mut query = vec![];
            for (k, v) in
                [("principal", principal), ("table", table), ("outcome", outcome), ("limit", limit.map(|l| l.to_string()))]
            {
                if let Some(v) = v {
                    query.push(format!("{k}={}", url_encode(&v)));
                }
            }
            c.call(Method::GET, &format!("/v1/tenants/{tenant}/audit?{}", query.join("&")), None).await?
        }
        AdminCommand::VerifyAudit { tenant } => c.call(Method::GET, &format!("/v1/tenants/{tenant}/audit/verify"), None).await?,
    };
    if !answer.is_null() {
        println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
