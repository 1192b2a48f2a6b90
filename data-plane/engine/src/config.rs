//! The data plane's configuration file: tenants, their API keys and their connections.
//!
//! ```toml
//! [[tenants]]
//! id = "demo"
//!
//! [[tenants.api_keys]]
//! principal = "alice"
//! token = "…"              # or sha256 = "<hex>" (what the control plane sends)
//!
//! [[tenants.connections]]
//! name = "github"          # the SQL schema
//! connector = "github"
//! version = "1.0.0"        # optional pin
//! options = { token = "…", orgs = "acme" }
//!
//! [[tenants.principals]]   # optional: groups and attributes for policies
//! id = "alice"
//! groups = ["sales"]
//! attributes = { region = "emea" }
//!
//! [[tenants.policies]]     # optional: Rego, package `omnisql` (see docs/policies.md)
//! name = "rows"
//! rego = """…"""
//!
//! [tenants.opa]            # optional: decisions from the tenant's OPA server instead of `policies`
//! url = "http://opa.policy.svc:8181"   # the data plane's operator must allow it (--opa-allow-url)
//!
//! [tenants.oidc]           # optional: sign in with the tenant's identity provider's JWTs
//! issuer = "https://login.example.com/realms/acme"
//! audience = "omnisql"
//! principal_claim = "email"  # default `sub`
//! groups_claim = "groups"    # default `groups`
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use omnisql_oidc::Trust as OidcConfig;
pub use omnisql_policy::{OpaConfig, PolicyConfig, PrincipalConfig};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
    /// Share of contended rate limits relative to other tenants (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Longest any of the tenant's statements may run, in seconds (default: the data plane's). Users
    /// may lower it for their session with `SET omnisql.statement_timeout`, never raise it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement_timeout_seconds: Option<u64>,
    /// Statements of the tenant that run at once on this data plane; later ones queue (default: the
    /// data plane's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_queries: Option<u32>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    #[serde(default)]
    pub connections: Vec<ConnectionConfig>,
    /// Who the keys belong to, for policies: groups and attributes. A key's principal missing here is a
    /// user with no groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<PrincipalConfig>,
    /// Rego modules (package `omnisql`) deciding which tables, rows and columns each principal sees. No
    /// policies: every principal reads every table of the tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyConfig>,
    /// The tenant's OPA server, which then decides instead of `policies` (one batched request per query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opa: Option<OpaConfig>,
    /// An OIDC issuer whose JWTs sign principals in, besides API keys: the token's claims name the
    /// principal and its groups (added to the groups configured above for that principal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcConfig>,
}

/// An API key: the key itself (configuration files), or only its SHA-256 (from the control plane).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Hex SHA-256 of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Unix seconds after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl ApiKeyConfig {
    pub fn with_token(principal: &str, token: &str) -> ApiKeyConfig {
        ApiKeyConfig { principal: principal.into(), token: Some(token.into()), sha256: None, expires_at: None }
    }

    /// The key's hash, whichever form it was given in.
    pub fn hash(&self) -> Option<String> {
        match (&self.token, &self.sha256) {
            (Some(t), _) => Some(sha256_hex(t)),
            (None, Some(h)) => Some(h.to_ascii_lowercase()),
            (None, None) => None,
        }
    }
}

/// Hex SHA-256: API keys are compared by hash, so the data plane needs only hashes.
pub fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl std::fmt::Debug for ApiKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig").field("principal", &self.principal).field("token", &"<redacted>").finish()
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    pub name: String,
    pub connector: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// How long this connection's API answers count as fresh (seconds; default 60). Queries ask for
    /// fresher data with `SET omnisql.max_staleness`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl_seconds: Option<u64>,
    /// The connection's own request rate limit, on top of the API's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// The largest share (0..1) of the API's quota this tenant's connection may use, e.g. 0.3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_share: Option<f64>,
}

impl ConnectionConfig {
    /// A fingerprint of everything that identifies the connection's credentials.
    pub fn credential_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.connector.hash(&mut h);
        self.options.hash(&mut h);
        h.finish()
    }
}

impl std::fmt::Debug for ConnectionConfig {
    /// Options may hold secrets; only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("version", &self.version)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML for OmniSQL: {message}")]
    Parse { path: String, message: String },
    #[error("configuration is invalid: {0}")]
    Invalid(String),
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        let config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.display().to_string(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Names are SQL identifiers, unique where they must be; tokens are long and unique.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ident = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && !s.starts_with(|c: char| c.is_ascii_digit())
        };
        let mut tokens = std::collections::HashSet::new();
        let mut tenants = std::collections::HashSet::new();
        for t in &self.tenants {
            if t.id.is_empty() || !tenants.insert(&t.id) {
                return Err(ConfigError::Invalid(format!("tenant id `{}` is empty or repeated", t.id)));
            }
            for k in &t.api_keys {
                match (&k.token, &k.sha256) {
                    (Some(token), None) if token.len() < 16 => {
                        return Err(ConfigError::Invalid(format!(
                            "tenant `{}`: API key of `{}` is shorter than 16 characters",
                            t.id, k.principal
                        )));
                    }
                    (None, Some(h)) if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) => {
                        return Err(ConfigError::Invalid(format!(
                            "tenant `{}`: API key hash of `{}` is not 64 hex digits",
                            t.id, k.principal
                        )));
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "tenant `{}`: API key of `{}` needs exactly one of `token` and `sha256`",
                            t.id, k.principal
                        )));
                    }
                }
                if !tokens.insert(k.hash()) {
                    return Err(ConfigError::Invalid(format!("tenant `{}`: an API key is used twice", t.id)));
                }
            }
            let mut names = std::collections::HashSet::new();
            for c in &t.connections {
                if !ident(&c.name) || matches!(c.name.as_str(), "information_schema" | "omnisql" | "public") {
                    return Err(ConfigError::Invalid(format!(
                        "tenant `{}`: connection name `{}` must be a lower-case SQL identifier (a-z, 0-9, _) other than information_schema, omnisql and public",
                        t.id, c.name
                    )));
                }
                if c.quota_share.is_some_and(|s| !(s > 0.0 && s <= 1.0)) {
                    return Err(ConfigError::Invalid(format!(
                        "tenant `{}`: connection `{}`: quota_share must be in (0, 1]",
                        t.id, c.name
                    )));
                }
                if !names.insert(&c.name) {
                    return Err(ConfigError::Invalid(format!("tenant `{}`: connection `{}` is defined twice", t.id, c.name)));
                }
            }
        }
        Ok(())
    }
}
