//! The `DataPlane` custom resource (`omnisql.io/v1alpha1`): what a platform engineer writes to run
//! OmniSQL data planes in their cluster, and the status the operator reports back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Data planes of one region, run as a StatefulSet: each replica keeps its identity and audit outbox on
/// a volume of its own and enrols with the control plane once.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "omnisql.io", version = "v1alpha1", kind = "DataPlane", namespaced)]
#[kube(status = "DataPlaneStatus", shortname = "odp")]
#[kube(printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#)]
#[kube(printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#)]
#[kube(printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#)]
#[kube(printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#)]
#[kube(printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneSpec {
    /// The control plane's region these data planes serve (tenants homed there are sent to them).
    pub region: String,
    /// Data planes to run; each enrols once and keeps its identity across restarts.
    #[serde(default = "one")]
    pub replicas: i32,
    /// The OmniSQL version to run: the image tag, and what each data plane reports.
    pub version: String,
    /// The image, without its tag.
    #[serde(default = "default_image")]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    pub control_plane: ControlPlaneSpec,
    #[serde(default)]
    pub kms: KmsSpec,
    /// Memory for cached API answers, in MiB (0 turns the cache off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_mib: Option<u32>,
    /// Memory for kept query results, in MiB (0 turns them off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_cache_mib: Option<u32>,
    /// Memory for running queries, all tenants together (e.g. `2GiB`); default 60% of the container's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Redis for rate-limit windows shared by every replica (`redis://…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// OPA servers tenants may have decide their policies (URL prefixes, e.g. `http://opa.policy:8181/`);
    /// a tenant naming another is refused every table. Their ports are opened to `egress.platformCidrs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opa_urls: Vec<String>,
    #[serde(default)]
    pub flight_sql: ListenerSpec,
    /// Also serve the Postgres wire protocol (psql, psycopg, pgJDBC, BI tools) on this port, e.g.
    /// `{port: 5432}`; over TLS with `flightSql.tlsSecret`'s certificate when one is given (and then only
    /// over TLS). Off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSpec>,
    #[serde(default)]
    pub storage: StorageSpec,
    /// Where the data planes may connect besides the control plane, the KMS and Redis: the SaaS APIs.
    #[serde(default)]
    pub egress: EgressSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
}

fn one() -> i32 {
    1
}

fn default_image() -> String {
    "ghcr.io/omnisql/omnisql".into()
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ControlPlaneSpec {
    /// The control plane's data-plane gRPC URL, e.g. `https://cp.omnisql.example:7070`.
    pub url: String,
    /// The control plane's admin API, where the operator obtains enrolment tokens.
    pub admin_url: String,
    /// PEM certificates to trust for an `https://` control plane whose certificate is not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// The Secret (in this namespace) holding the operator's API key for the control plane, under `apiKey`.
    pub credentials_secret: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsSpec {
    /// `aws-kms` (AWS KMS or a KMS-compatible endpoint) or `local` (a key file on each replica's volume).
    #[serde(default = "default_kms")]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, passed to the data planes as
    /// environment; without it the pods use their service account's cloud identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

fn default_kms() -> String {
    "aws-kms".into()
}

impl Default for KmsSpec {
    fn default() -> Self {
        KmsSpec { provider: default_kms(), endpoint: None, region: None, credentials_secret: None }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListenerSpec {
    #[serde(default = "default_flight_port")]
    pub port: i32,
    /// A `kubernetes.io/tls` Secret in the DataPlane's namespace (keys `tls.crt`, `tls.key`): Flight SQL
    /// is then served over TLS (`grpc+tls://`) with it. A renewed certificate (cert-manager writes the
    /// Secret again) is served to new connections within seconds, without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresSpec {
    #[serde(default = "default_postgres_port")]
    pub port: i32,
}

fn default_postgres_port() -> i32 {
    5432
}

fn default_flight_port() -> i32 {
    50051
}

impl Default for ListenerSpec {
    fn default() -> Self {
        ListenerSpec { port: default_flight_port(), tls_secret: None }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Each replica's volume: identity, last configuration, audit outbox, spill files.
    #[serde(default = "default_storage_size")]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec { size: default_storage_size(), storage_class_name: None }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// Address blocks the SaaS APIs are reached through (a NAT or proxy range, or `0.0.0.0/0`), on 443.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_cidrs: Vec<String>,
    /// Address blocks of the control plane, the KMS and Redis, when they are outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_cidrs: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPlaneStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One replica as the control plane knows it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<i64>,
}

/// What is wrong with a spec, each problem in words a user can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid DataPlane spec: {}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

impl DataPlaneSpec {
    /// Checks what the API server's schema cannot: a bad spec becomes a `Degraded` condition, not a
    /// crash loop or half-applied objects.
    pub fn validate(&self) -> Result<(), InvalidSpec> {
        let mut problems = Vec::new();
        if !is_dns_label(&self.region) {
            problems.push(format!("region {:?} must be a DNS label (lowercase letters, digits, '-')", self.region));
        }
        if !(0..=100).contains(&self.replicas) {
            problems.push(format!("replicas must be between 0 and 100, not {}", self.replicas));
        }
        if self.version.is_empty() || self.version.contains(['/', ':', '@', ' ']) {
            problems.push(format!("version {:?} must be an image tag such as 0.1.0", self.version));
        }
        if self.image.is_empty()
            || self.image.contains(['@', ' '])
            || self.image.rsplit('/').next().is_some_and(|last| last.contains(':'))
        {
            problems.push(format!("image {:?} must be a repository without a tag (the tag is `version`)", self.image));
        }
        for (field, url) in
            [("controlPlane.url", &self.control_plane.url), ("controlPlane.adminUrl", &self.control_plane.admin_url)]
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(format!("{field} {url:?} must be an http:// or https:// URL"));
            }
        }
        if self.control_plane.credentials_secret.is_empty() {
            problems.push("controlPlane.credentialsSecret must name a Secret with the operator's API key".into());
        }
        if !matches!(self.kms.provider.as_str(), "aws-kms" | "local") {
            problems.push(format!("kms.provider {:?} must be aws-kms or local", self.kms.provider));
        }
        if !(1..=65535).contains(&self.flight_sql.port) {
            problems.push(format!("flightSql.port {} is not a port", self.flight_sql.port));
        }
        if let Some(pg) = &self.postgres
            && (!(1..=65535).contains(&pg.port) || pg.port == self.flight_sql.port)
        {
            problems.push(format!("postgres.port {} is not a port apart from flightSql.port", pg.port));
        }
        if let Some(name) = &self.flight_sql.tls_secret
            && !(name.len() <= 253 && name.split('.').all(is_dns_label))
        {
            problems.push(format!("flightSql.tlsSecret {name:?} must be the name of a Secret"));
        }
        if let Some(limit) = &self.memory_limit {
            if parse_size(limit).is_none() {
                problems.push(format!("memoryLimit {limit:?} must be a size such as 512MiB or 2GiB"));
            }
        }
        for cidr in self.egress.api_cidrs.iter().chain(&self.egress.platform_cidrs) {
            if !is_cidr(cidr) {
                problems.push(format!("egress: {cidr:?} is not an address block such as 10.0.0.0/8"));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(InvalidSpec(problems)) }
    }

    /// The image and tag the pods run.
    pub fn image_ref(&self) -> String {
        format!("{}:{}", self.image, self.version)
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else { return false };
    match (addr.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

/// `512MiB`, `2GiB`, `1G`, or bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "Ki" => 1 << 10,
        "MiB" | "Mi" => 1 << 20,
        "GiB" | "Gi" => 1 << 30,
        "KB" | "K" => 1_000,
        "MB" | "M" => 1_000_000,
        "GB" | "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> DataPlaneSpec {
        serde_json::from_value(serde_json::json!({
            "region": "eu-west",
            "replicas": 2,
            "version": "0.1.0",
            "controlPlane": {"url": "https://cp.example:7070", "adminUrl": "https://cp.example", "credentialsSecret": "omnisql-operator"},
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_fill_what_a_minimal_spec_leaves_out() {
        let s = spec();
        assert_eq!(s.image_ref(), "ghcr.io/omnisql/omnisql:0.1.0");
        assert_eq!((s.flight_sql.port, s.kms.provider.as_str(), s.storage.size.as_str()), (50051, "aws-kms", "1Gi"));
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn every_problem_of_a_bad_spec_is_named() {
        let mut s = spec();
        s.region = "EU West".into();
        s.replicas = -1;
        s.version = "latest:1".into();
        s.control_plane.url = "cp.example:7070".into();
        s.kms.provider = "vault".into();
        s.memory_limit = Some("lots".into());
        s.egress.api_cidrs = vec!["10.0.0.0/33".into()];
        s.flight_sql.tls_secret = Some("Flight SQL cert".into());
        let InvalidSpec(problems) = s.validate().unwrap_err();
        assert_eq!(problems.len(), 8, "{problems:#?}");
        assert!(problems.iter().any(|p| p.contains("flightSql.tlsSecret")), "{problems:#?}");
        assert!(problems[0].contains("region"), "{problems:#?}");
    }
}
