//! The one place where errors become gRPC statuses. Messages say what happened and what to do;
//! internals go to the log with an id the user can quote.

use datafusion::error::DataFusionError;
use omnisql_connector::ConnectorError;
use tonic::{Code, Status};

/// The metadata key naming the table a policy refused (the audit event names it too).
const DENIED_TABLE: &str = "x-omnisql-denied-table";

pub fn from_datafusion(e: &DataFusionError) -> Status {
    if let Some(c) = omnisql_engine::connector_error(e) {
        return from_connector(c);
    }
    if let Some(p) = omnisql_engine::policy_error(e) {
        let mut status = Status::permission_denied(p.to_string());
        if let Ok(table) = p.table().parse() {
            status.metadata_mut().insert(DENIED_TABLE, table);
        }
        return status;
    }
    if let Some(stopped) = omnisql_engine::contain::stopped(e) {
        use omnisql_engine::contain::Stopped;
        let code = match stopped {
            Stopped::Timeout(_) => Code::DeadlineExceeded,
            Stopped::Queued(_) => Code::ResourceExhausted,
            Stopped::Panicked(_) => Code::Internal,
        };
        return Status::new(code, stopped.to_string());
    }
    match e.find_root() {
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(format!("invalid query: {}", strip_backtrace(e.find_root())))
        }
        DataFusionError::NotImplemented(m) => Status::unimplemented(format!("not supported: {m}")),
        // The pools and bounded functions say which limit was met and what to do.
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(m.clone()),
        DataFusionError::Execution(m) => Status::invalid_argument(format!("query failed: {m}")),
        DataFusionError::ArrowError(a, _) => Status::invalid_argument(format!("query failed: {a}")),
        other => internal(other),
    }
}

fn strip_backtrace(e: &DataFusionError) -> String {
    e.to_string().split("\n\nbacktrace").next().unwrap_or_default().to_string()
}

pub fn from_connector(e: &ConnectorError) -> Status {
    let code = match e {
        ConnectorError::MissingParameter { .. }
        | ConnectorError::InvalidParameter { .. }
        | ConnectorError::UnknownParameter { .. } => Code::FailedPrecondition,
        ConnectorError::Unauthorized { .. } | ConnectorError::Forbidden { .. } => Code::FailedPrecondition,
        ConnectorError::QuotaExhausted { .. } => Code::ResourceExhausted,
        ConnectorError::Upstream { status, .. } if *status >= 500 => Code::Unavailable,
        ConnectorError::Upstream { status: 404, .. } => Code::NotFound,
        ConnectorError::Upstream { .. } => Code::FailedPrecondition,
        ConnectorError::RetriesExhausted { .. } | ConnectorError::Transport { .. } | ConnectorError::Malformed { .. } => {
            Code::Unavailable
        }
        ConnectorError::UnexpectedShape { .. } => Code::Unavailable,
        ConnectorError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        ConnectorError::RequiredFilter { .. } | ConnectorError::RequestTooLarge { .. } => Code::InvalidArgument,
        ConnectorError::BudgetExceeded { .. } => Code::ResourceExhausted,
        ConnectorError::Arrow(_) | ConnectorError::InvalidSpec { .. } => return internal(e),
    };
    Status::new(code, e.to_string())
}

/// An error the user cannot act on: logged in full, reported by id.
pub fn internal(e: &dyn std::error::Error) -> Status {
    let id = uuid::Uuid::new_v4();
    tracing::error!(error_id = %id, error = %e, "internal error");
    Status::internal(format!("internal error {id}; the data plane log has the details"))
}

/// The table a policy refused, if `status` is such a refusal.
pub fn denied_table(status: &Status) -> Option<String> {
    if status.code() != Code::PermissionDenied {
        return None;
    }
    status.metadata().get(DENIED_TABLE).and_then(|v| v.to_str().ok()).map(str::to_string)
}
