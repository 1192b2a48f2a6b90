//! External decisions: the tenant's own OPA server answers, in one request per query, what a principal
//! sees of every table the query reads (`data.omnisql.batch`, see `docs/policies/opa-batch.rego`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

/// Largest answer read from an OPA server.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// A tenant's own OPA server (usually beside its data planes): data planes ask it, in one request per
/// query, what each principal sees (`POST {url}/v1/data/{path}`; see docs/policies.md) instead of
/// evaluating the tenant's Rego policies themselves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = OpaServer))]
#[serde(deny_unknown_fields)]
pub struct OpaConfig {
    /// The server, e.g. `http://opa.policy.svc:8181`; the data plane's operator must allow it.
    pub url: String,
    /// The rule answering the batch (default `omnisql/batch`: `POST {url}/v1/data/omnisql/batch`).
    #[serde(default = "default_path")]
    pub path: String,
    /// How long one request may take before the query is refused (default 500 ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long decisions are reused, in seconds (default 60, at least 1: a Flight SQL query is planned
    /// twice, for GetFlightInfo and DoGet, and asks once).
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
}

fn default_path() -> String {
    "omnisql/batch".into()
}

fn default_timeout_ms() -> u64 {
    500
}

fn default_cache_seconds() -> u64 {
    60
}

impl OpaConfig {
    pub fn new(url: &str) -> OpaConfig {
        OpaConfig {
            url: url.into(),
            path: default_path(),
            timeout_ms: default_timeout_ms(),
            cache_seconds: default_cache_seconds(),
        }
    }

    /// The document the batch is asked of.
    pub fn endpoint(&self) -> String {
        format!("{}/v1/data/{}", self.url.trim_end_matches('/'), self.path.trim_matches('/'))
    }

    /// `opa:<url>/<path>`: what audit events record as the policy revision.
    pub fn revision(&self) -> String {
        format!("opa:{}", self.endpoint())
    }
}

/// One OPA server, asked over one shared client.
#[derive(Debug)]
pub(crate) struct Opa {
    pub config: OpaConfig,
    http: reqwest::Client,
    requests: AtomicU64,
}

impl Opa {
    pub fn new(config: OpaConfig, http: reqwest::Client) -> Opa {
        Opa { config, http, requests: AtomicU64::new(0) }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Asks for the decisions on `tables` (each `{"table": …, "columns": […]}`) for `context`; one answer
    /// per table, in order.
    pub async fn batch(&self, context: Json, tables: Vec<Json>) -> Result<Vec<Json>, String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let count = tables.len();
        let body = json!({"input": {"context": context, "action": {"operation": "OmniSQLBatch", "tables": tables}}});
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1));
        let url = self.config.endpoint();
        let ask = async {
            let mut response = self.http.post(&url).json(&body).send().await.map_err(|e| format!("cannot reach it: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("it answered {}", response.status()));
            }
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| format!("its answer broke off: {e}"))? {
                answer.extend_from_slice(&chunk);
                if answer.len() > MAX_ANSWER_BYTES {
                    return Err(format!("its answer is larger than {MAX_ANSWER_BYTES} bytes"));
                }
            }
            serde_json::from_slice::<Json>(&answer).map_err(|e| format!("its answer is not JSON: {e}"))
        };
        let answer = tokio::time::timeout(timeout, ask)
            .await
            .map_err(|_| format!("it did not answer within {} ms", timeout.as_millis()))??;
        match answer.get("result") {
            Some(Json::Array(decisions)) if decisions.len() == count => Ok(decisions.clone()),
            Some(Json::Array(decisions)) => Err(format!("it answered {} decisions for {count} tables", decisions.len())),
            Some(other) => Err(format!("`{}` is not a list of decisions: {other}", self.config.path)),
            None => {
                Err(format!("`{}` is undefined: is docs/policies/opa-batch.rego loaded beside the policies?", self.config.path))
            }
        }
    }
}
