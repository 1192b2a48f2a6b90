//! A minimal Flight SQL client for OmniSQL's own tools (`omnisql sql`, `omnisql bench`): connect with a
//! bearer token, run a statement, collect its batches.

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {0}: expected e.g. http://127.0.0.1:50051")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}; is the data plane running (`omnisql dev`)?")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The server's status, as `Code: message`.
    #[error("{0}")]
    Query(String),
}

impl From<FlightError> for ClientError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Tonic(s) => ClientError::Query(format!("{:?}: {}", s.code(), s.message())),
            other => ClientError::Query(other.to_string()),
        }
    }
}

/// Connects to `endpoint` (`http://…` or `grpc://…`) with `token` as the bearer API key.
pub async fn connect(endpoint: &str, token: &str) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    let url = endpoint.replace("grpc+tcp://", "http://").replace("grpc://", "http://");
    let channel = Endpoint::from_shared(url)
        .map_err(|_| ClientError::Endpoint(endpoint.into()))?
        .connect()
        .await
        .map_err(|source| ClientError::Connect { endpoint: endpoint.into(), source })?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("authorization", format!("Bearer {token}"));
    Ok(client)
}

/// Runs one statement and returns its batches.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, ClientError> {
    let info = client.execute(sql.to_string(), None).await?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else { continue };
        let stream = client.do_get(ticket).await?;
        let mut part: Vec<RecordBatch> = stream.try_collect().await?;
        batches.append(&mut part);
    }
    Ok(batches)
}
