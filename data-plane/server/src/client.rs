//! A minimal Flight SQL client for OmniSQL's own tools (`omnisql sql`, `omnisql bench`): connect with a
//! bearer token, run a statement, collect its batches.

use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {0}: expected e.g. grpc://127.0.0.1:50051 or grpc+tls://omnisql.example.com:50051")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}; is the data plane running (`omnisql dev`)?")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error(
        "the certificate of {endpoint} is not trusted ({reason}); pass the CA that signed it with --ca-file, or check the host name"
    )]
    Untrusted { endpoint: String, reason: String },
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

/// Connects to `endpoint` (`grpc://…`/`http://…`, or `grpc+tls://…`/`https://…` over TLS) with `token` as
/// the bearer API key.
pub async fn connect(endpoint: &str, token: &str) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    connect_trusting(endpoint, token, None).await
}

/// [`connect`], trusting the certificates in `ca_pem` (PEM) besides the public roots for a TLS endpoint:
/// a data plane whose certificate comes from a private CA.
pub async fn connect_trusting(
    endpoint: &str,
    token: &str,
    ca_pem: Option<&[u8]>,
) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    let url = endpoint.replace("grpc+tcp://", "http://").replace("grpc+tls://", "https://").replace("grpc://", "http://");
    let mut channel = Endpoint::from_shared(url.clone()).map_err(|_| ClientError::Endpoint(endpoint.into()))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        channel = channel.tls_config(tls).map_err(|_| ClientError::Endpoint(endpoint.into()))?;
    }
    let channel = channel.connect().await.map_err(|source| {
        // rustls says why a certificate was refused deep in the source chain.
        let mut cause: Option<&dyn std::error::Error> = Some(&source);
        while let Some(e) = cause {
            let text = e.to_string();
            if text.contains("invalid peer certificate") {
                let reason = text.rsplit("invalid peer certificate: ").next().unwrap_or(&text).to_string();
                return ClientError::Untrusted { endpoint: endpoint.into(), reason };
            }
            cause = e.source();
        }
        ClientError::Connect { endpoint: endpoint.into(), source }
    })?;
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
