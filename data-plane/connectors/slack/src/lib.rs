//! The Slack Web API as the `slack` schema: `channels` (conversations.list), `users` (users.list) and
//! `messages` (conversations.history, one history per channel). The tables — requests, cursor pages,
//! columns, filter pushdown, rate-limit tiers — are declared in `slack.toml`; this file keeps what is
//! code: Slack reports failures as HTTP 200 with `ok: false`, which the dialect reads (`invalid_auth`,
//! `token_revoked`, … are credential errors; `ratelimited` honours `Retry-After`).

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use omnisql_connector::governor::BucketSpec;
use omnisql_connector::http::classify_common;
use omnisql_connector::spec::ConnectorSpec;
use omnisql_connector::spec_connector::{SpecConnector, base_url};
use omnisql_connector::{
    ApiClient, BearerToken, Connector, ConnectorContext, ConnectorError, ConnectorFactory, Dialect, ParameterSpec, Parameters,
    Result, Verdict,
};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

const APP: &str = "Slack";

/// Version 1's tables (`slack.toml`).
fn spec_v1() -> Result<&'static ConnectorSpec> {
    static SPEC: OnceLock<std::result::Result<ConnectorSpec, String>> = OnceLock::new();
    ConnectorSpec::built_in(&SPEC, "slack", include_str!("../slack.toml"))
}

/// Version 2's tables (`slack-2.toml`: `messages.user_id` renamed `author_id`, `team_id` added).
fn spec_v2() -> Result<&'static ConnectorSpec> {
    static SPEC: OnceLock<std::result::Result<ConnectorSpec, String>> = OnceLock::new();
    ConnectorSpec::built_in(&SPEC, "slack", include_str!("../slack-2.toml"))
}

static PARAMETERS: &[ParameterSpec] = &[
    ParameterSpec::optional("base_url", "Slack Web API base URL", Some("https://slack.com")),
    ParameterSpec::secret("token", "bot (xoxb-) or user (xoxp-) token"),
];

/// One version of the Slack connector; both run side by side, each connection pinning one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackFactory {
    V1,
    V2,
}

impl SlackFactory {
    fn tables(self) -> Result<&'static ConnectorSpec> {
        match self {
            SlackFactory::V1 => spec_v1(),
            SlackFactory::V2 => spec_v2(),
        }
    }
}

#[async_trait]
impl ConnectorFactory for SlackFactory {
    fn name(&self) -> &'static str {
        "slack"
    }
    fn version(&self) -> &'static str {
        match self {
            SlackFactory::V1 => "1.0.0",
            SlackFactory::V2 => "2.0.0",
        }
    }
    fn parameters(&self) -> &'static [ParameterSpec] {
        PARAMETERS
    }
    fn spec(&self) -> Result<Option<&'static ConnectorSpec>> {
        self.tables().map(Some)
    }
    async fn create(&self, params: Parameters, ctx: ConnectorContext) -> Result<Arc<dyn Connector>> {
        let base = base_url(self.name(), &params)?;
        let token = params.require(self.name(), "token")?.to_string();
        let spec = self.tables()?;
        let client = ApiClient::new(&ctx, Arc::new(SlackDialect(spec)), Arc::new(BearerToken(token)), HeaderMap::new())?;
        Ok(Arc::new(SpecConnector::new(spec, Arc::new(client), &base, ctx.scan)))
    }
}

#[derive(Debug)]
struct SlackDialect(&'static ConnectorSpec);

impl Dialect for SlackDialect {
    fn app(&self) -> &'static str {
        APP
    }
    /// One bucket per method, at its tier's calls per minute (from the spec). Slack sends no
    /// remaining-count headers, so the model is trusted and a 429's `Retry-After` corrects it.
    fn bucket(&self, url: &str) -> Option<BucketSpec> {
        self.0.bucket(url)
    }
    /// Slack limits calls per minute per method, not concurrency; a few at once is plenty.
    fn default_concurrency(&self) -> usize {
        8
    }
    fn classify(&self, connection: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if !status.is_success() {
            return classify_common(APP, connection, status, headers, format!("HTTP {status}"));
        }
        // A body that does not parse is left to the client, which retries it as garbled.
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Verdict::Ok;
        };
        if v.get("ok").and_then(Value::as_bool) != Some(false) {
            return Verdict::Ok;
        }
        let error = v.get("error").and_then(Value::as_str).unwrap_or("unknown_error").to_string();
        let connection = connection.to_string();
        match error.as_str() {
            "invalid_auth" | "not_authed" | "token_revoked" | "token_expired" | "account_inactive" => {
                Verdict::Fail(ConnectorError::Unauthorized { app: APP, connection, status: 200, message: error })
            }
            "missing_scope" | "not_allowed_token_type" | "no_permission" => {
                let needed = v.get("needed").and_then(Value::as_str).unwrap_or("?");
                Verdict::Fail(ConnectorError::Forbidden {
                    app: APP,
                    connection,
                    status: 200,
                    message: format!("{error} (needs scope {needed})"),
                })
            }
            "ratelimited" => Verdict::Retry { after: omnisql_connector::http::retry_after(headers), reason: error },
            "internal_error" | "fatal_error" | "service_unavailable" | "request_timeout" => {
                Verdict::Retry { after: None, reason: error }
            }
            _ => Verdict::Fail(ConnectorError::Upstream { app: APP, connection, status: 200, message: error }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_versions_spec_parses_names_its_version_and_declares_the_three_tables() {
        for f in [SlackFactory::V1, SlackFactory::V2] {
            let spec = f.tables().unwrap();
            assert_eq!(spec.version, f.version());
            assert_eq!(spec.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["channels", "users", "messages"]);
            let bucket = spec.bucket("https://slack.com/api/conversations.history?channel=C1").unwrap();
            assert_eq!((bucket.name.as_str(), bucket.capacity), ("slack:conversations.history", 50.0));
        }
        let columns = |f: SlackFactory| {
            f.tables().unwrap().table("messages").unwrap().columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
        };
        assert!(columns(SlackFactory::V1).contains(&"user_id".to_string()));
        assert!(
            columns(SlackFactory::V2).contains(&"author_id".to_string())
                && !columns(SlackFactory::V2).contains(&"user_id".to_string())
        );
    }
}
