use std::time::Duration;

/// Everything a connector can fail with. Messages name the connection and say what to do; the
/// underlying error is kept as the source, never pasted into the message.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("connector `{connector}` needs parameter `{parameter}`")]
    MissingParameter { connector: String, parameter: String },

    #[error("connector `{connector}` parameter `{parameter}` is invalid: {reason}")]
    InvalidParameter { connector: String, parameter: String, reason: String },

    #[error("connector `{connector}` does not take parameter `{parameter}` (it takes: {accepted})")]
    UnknownParameter { connector: String, parameter: String, accepted: String },

    #[error(
        "{app} rejected the credentials of connection `{connection}` ({status}: {message}); update the connection's credentials"
    )]
    Unauthorized { app: &'static str, connection: String, status: u16, message: String },

    #[error("{app} refused a request of connection `{connection}` ({status}: {message})")]
    Forbidden { app: &'static str, connection: String, status: u16, message: String },

    #[error("{app} quota of connection `{connection}` is exhausted ({message}); it resets in {}s, try again then", reset_in.as_secs())]
    QuotaExhausted { app: &'static str, connection: String, message: String, reset_in: Duration },

    #[error("{app} answered {status} for connection `{connection}`: {message}")]
    Upstream { app: &'static str, connection: String, status: u16, message: String },

    #[error(
        "{app} kept failing for connection `{connection}` after {attempts} attempts (last: {last}); the service may be degraded, retry later"
    )]
    RetriesExhausted { app: &'static str, connection: String, attempts: u32, last: String },

    #[error("{app} sent a response that is not valid JSON for connection `{connection}` ({url})")]
    Malformed {
        app: &'static str,
        connection: String,
        url: String,
        #[source]
        source: serde_json::Error,
    },

    #[error("cannot reach {app} for connection `{connection}` at {url}")]
    Transport {
        app: &'static str,
        connection: String,
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error(
        "the query ran out of time waiting for {app} (connection `{connection}`); raise the query timeout or narrow the query"
    )]
    DeadlineExceeded { app: &'static str, connection: String },

    #[error("table `{table}` needs a filter on `{column}` (for example `WHERE {column} = '…'`)")]
    RequiredFilter { table: String, column: String },

    #[error("{app} response for connection `{connection}` lacks `{field}`")]
    UnexpectedShape { app: &'static str, connection: String, field: String },

    #[error(
        "the query needs more than its budget of {budget} upstream requests{} (SET omnisql.request_budget); narrow it or raise the budget",
        match (needed, table) {
            (Some(n), Some(t)) => format!(" (its scan of {t} alone needs at least {n}: one per value it looks up)"),
            _ => String::new(),
        }
    )]
    BudgetExceeded { budget: u64, needed: Option<u64>, table: Option<String> },

    #[error("{app} cannot take this request of connection `{connection}`: {message}")]
    RequestTooLarge { app: &'static str, connection: String, message: String },

    #[error("connector `{connector}`'s built-in table spec is invalid: {message}")]
    InvalidSpec { connector: String, message: String },

    #[error(transparent)]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
}

pub type Result<T, E = ConnectorError> = std::result::Result<T, E>;

impl From<ConnectorError> for datafusion::error::DataFusionError {
    fn from(e: ConnectorError) -> Self {
        datafusion::error::DataFusionError::External(Box::new(e))
    }
}
