//! `omnisql sql`: a Flight SQL client that prints tables.

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::dev::DEV_TOKEN;

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Flight SQL endpoint.
    #[arg(long, env = "OMNISQL_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    endpoint: String,
    /// API key (the `omnisql dev` demo key by default).
    #[arg(long, env = "OMNISQL_TOKEN", default_value = DEV_TOKEN, hide_default_value = true)]
    token: String,
    /// The query; without one, an interactive prompt.
    query: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {endpoint}; is the data plane running (`omnisql dev`)?")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("invalid endpoint {0}: expected e.g. http://127.0.0.1:50051")]
    Endpoint(String),
    #[error("{0}")]
    Query(String),
}

fn describe(e: arrow_flight::error::FlightError) -> ClientError {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => ClientError::Query(format!("{:?}: {}", s.code(), s.message())),
        other => ClientError::Query(other.to_string()),
    }
}

async fn connect(args: &SqlArgs) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    let endpoint = args.endpoint.replace("grpc://", "http://").replace("grpc+tcp://", "http://");
    let channel = Endpoint::from_shared(endpoint.clone())
        .map_err(|_| ClientError::Endpoint(args.endpoint.clone()))?
        .connect()
        .await
        .map_err(|source| ClientError::Connect { endpoint: args.endpoint.clone(), source })?;
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_header("authorization", format!("Bearer {}", args.token));
    Ok(client)
}

/// Runs one query and returns its batches.
pub async fn query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, ClientError> {
    let info = client.execute(sql.to_string(), None).await.map_err(describe)?;
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let Some(ticket) = endpoint.ticket else {
            continue;
        };
        let stream = client.do_get(ticket).await.map_err(describe)?;
        let mut part: Vec<RecordBatch> = stream.try_collect().await.map_err(describe)?;
        batches.append(&mut part);
    }
    Ok(batches)
}

fn print(batches: &[RecordBatch], elapsed: std::time::Duration) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match pretty_format_batches(batches) {
        Ok(table) if rows > 0 => println!("{table}"),
        _ => {}
    }
    println!("{rows} row{} in {:.3}s", if rows == 1 { "" } else { "s" }, elapsed.as_secs_f64());
}

pub async fn run(args: SqlArgs) -> Result<(), ClientError> {
    let mut client = connect(&args).await?;
    if let Some(sql) = &args.query {
        let started = std::time::Instant::now();
        let batches = query(&mut client, sql).await?;
        print(&batches, started.elapsed());
        return Ok(());
    }
    interactive(&mut client).await
}

async fn interactive(client: &mut FlightSqlServiceClient<Channel>) -> Result<(), ClientError> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().map_err(|e| ClientError::Query(e.to_string()))?;
    let history = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".omnisql_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!("OmniSQL: end statements with `;`, `\\q` quits.");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() { "omnisql> " } else { "     ..> " };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
                    break;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if trimmed.ends_with(';') {
                    let sql = buffer.trim().trim_end_matches(';').to_string();
                    buffer.clear();
                    let _ = editor.add_history_entry(sql.as_str());
                    let started = std::time::Instant::now();
                    match query(client, &sql).await {
                        Ok(batches) => print(&batches, started.elapsed()),
                        Err(e) => eprintln!("error: {e}"),
                    }
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(ClientError::Query(e.to_string())),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(())
}
