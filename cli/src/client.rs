//! `omnisql sql`: a Flight SQL client that prints tables.

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use tonic::transport::Channel;

use crate::dev::DEV_TOKEN;

#[derive(Debug, clap::Args)]
pub struct SqlArgs {
    /// Flight SQL endpoint: `grpc://host:port`, or `grpc+tls://host:port` over TLS.
    #[arg(long, env = "OMNISQL_ENDPOINT", default_value = "grpc://127.0.0.1:50051")]
    endpoint: String,
    /// PEM certificates to trust for a `grpc+tls://` endpoint besides the public roots (a private CA).
    #[arg(long, env = "OMNISQL_CA_FILE")]
    ca_file: Option<std::path::PathBuf>,
    /// API key (the `omnisql dev` demo key by default).
    #[arg(long, env = "OMNISQL_TOKEN", default_value = DEV_TOKEN, hide_default_value = true)]
    token: String,
    /// The query; without one, an interactive prompt.
    query: Option<String>,
}

pub use omnisql_data_plane::client::{ClientError, query};

async fn connect(args: &SqlArgs) -> Result<FlightSqlServiceClient<Channel>, ClientError> {
    let ca = match &args.ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| ClientError::Query(format!("cannot read {}: {e}", path.display())))?),
        None => None,
    };
    omnisql_data_plane::client::connect_trusting(&args.endpoint, &args.token, ca.as_deref()).await
}

fn print(batches: &[RecordBatch], elapsed: std::time::Duration) {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match pretty_format_batches(batches) {
        Ok(table) if rows > 0 => println!("{table}"),
        _ => {}
    }
    println!("{rows} row{} in {:.3}s", if rows == 1 { "" } else { "s" }, elapsed.as_secs_f64());
}

/// `sql`'s result, or `None` when Ctrl-C came first: the request is dropped, which stops the query on the
/// data plane (its stream ends, and with it the plan and its upstream requests).
async fn query_until_ctrl_c(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Option<Result<Vec<RecordBatch>, ClientError>> {
    tokio::select! {
        result = query(client, sql) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    }
}

pub async fn run(args: SqlArgs) -> Result<(), ClientError> {
    let mut client = connect(&args).await?;
    if let Some(sql) = &args.query {
        let started = std::time::Instant::now();
        let Some(batches) = query_until_ctrl_c(&mut client, sql).await else {
            return Err(ClientError::Query("cancelled (Ctrl-C): the query was stopped".into()));
        };
        print(&batches?, started.elapsed());
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
                    match query_until_ctrl_c(client, &sql).await {
                        Some(Ok(batches)) => print(&batches, started.elapsed()),
                        Some(Err(e)) => eprintln!("error: {e}"),
                        None => eprintln!("cancelled: the query was stopped"),
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
