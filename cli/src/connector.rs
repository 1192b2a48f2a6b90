//! `omnisql connector draft`: a draft table spec from a published OpenAPI document, optionally compared
//! with a curated spec (how far the draft is from what ships).

use std::path::PathBuf;

use omnisql_connector::draft;
use omnisql_connector::spec::ConnectorSpec;

#[derive(Debug, clap::Subcommand)]
pub enum ConnectorCommand {
    /// Write a draft spec (TOML) for list operations of an OpenAPI (3.x) or Swagger (2.0) document.
    Draft(DraftArgs),
}

#[derive(Debug, clap::Args)]
pub struct DraftArgs {
    /// The OpenAPI document (JSON).
    #[arg(long)]
    openapi: PathBuf,
    /// A list operation, e.g. `GET /conversations.history`; repeat for more tables.
    #[arg(long = "operation", required = true)]
    operations: Vec<String>,
    /// The connector's name in the draft.
    #[arg(long, default_value = "draft")]
    name: String,
    /// Print how the draft differs from this curated spec (to standard error).
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Write the draft here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum DraftError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {message}")]
    NotJson { path: String, message: String },
    #[error("{0}")]
    Draft(String),
}

fn read(path: &PathBuf) -> Result<String, DraftError> {
    std::fs::read_to_string(path).map_err(|source| DraftError::Read { path: path.display().to_string(), source })
}

pub fn run(command: ConnectorCommand) -> Result<(), crate::CliError> {
    let ConnectorCommand::Draft(args) = command;
    let text = read(&args.openapi)?;
    let document: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| DraftError::NotJson { path: args.openapi.display().to_string(), message: e.to_string() })?;
    let spec = draft::draft(&document, &args.name, &args.operations).map_err(DraftError::Draft)?;
    if let Some(curated) = &args.compare {
        let curated = ConnectorSpec::parse(&read(curated)?).map_err(DraftError::Draft)?;
        let drafted = ConnectorSpec::parse(&spec).map_err(DraftError::Draft)?;
        eprint!("{}", draft::compare(&drafted, &curated));
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, &spec).map_err(|source| crate::CliError::Write { path: path.display().to_string(), source })?
        }
        None => print!("{spec}"),
    }
    Ok(())
}
