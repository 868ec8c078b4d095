//! The `bridge` command line: argument types, dispatch, and exit codes.
//!
//! Exit codes: 0 success; 1 runtime failure (a broker unreachable for send/tail, a route
//! failed, the drain timed out); 2 usage or configuration error (bad arguments, an invalid
//! routes file, an unknown connection). This module and its children are the only code
//! that prints to standard output.

mod connections;
mod dlq;
mod explain;
mod output;
mod redrive;
mod request;
mod run;
mod send;
mod tail;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::ConfigErrors;
use crate::telemetry::LogFormat;

/// Move messages faithfully between SQS, SNS, Kafka, RabbitMQ and Pub/Sub.
#[derive(Debug, Parser)]
#[command(name = "bridge", version, about, long_about = None)]
pub struct Cli {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BRIDGE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log level or filter directive (e.g. `debug`, `info,bridge::router=debug`);
    /// defaults to `BRIDGE_LOG`, else `info` for run and `warn` otherwise.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every route of a routes file until SIGTERM or SIGINT, then drain.
    Run(RunArgs),
    /// Check a routes file without connecting to anything; lists every error.
    Validate(ValidateArgs),
    /// Send messages to an endpoint and print the broker's receipt for each.
    Send(SendArgs),
    /// Print messages arriving at an endpoint, without disturbing them where possible.
    Tail(TailArgs),
    /// Send one request and print its correlated reply.
    Request(RequestArgs),
    /// Show what a route does with one message, without connecting to anything.
    Explain(ExplainArgs),
    /// Run a file of `explain` cases with expected results; exit 1 on a mismatch.
    Test(TestArgs),
    /// Look at the dead letters at an endpoint.
    Dlq(DlqArgs),
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count the dead letters by route, failing sink, error class and error text.
    Stats(DlqReadArgs),
    /// Print the dead letters, their dead-letter context first.
    Show(DlqReadArgs),
    /// Send dead letters back to where they were received (or --to), as they were.
    Redrive(DlqRedriveArgs),
}

/// Which dead letters a `dlq` command acts on; every given criterion must hold.
#[derive(Debug, Args)]
pub struct DlqSelectionArgs {
    /// Only dead letters of this route (`bridge-dlq-route`).
    #[arg(long)]
    pub route: Option<String>,
    /// Only dead letters refused by this sink, as the dead letter names it
    /// (`bridge-dlq-sink`: an endpoint, or `route` when the route itself refused).
    #[arg(long)]
    pub sink: Option<String>,
    /// Only dead letters of this error class: `permanent` or `transient`.
    #[arg(long, value_parser = ["permanent", "transient"])]
    pub error_class: Option<String>,
    /// Only dead letters for which this CEL condition holds (the variables of `when`; the
    /// context is in `headers["bridge-dlq-..."]`).
    #[arg(long)]
    pub filter: Option<String>,
    /// Only dead letters whose last failure is older than this (e.g. `1h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Only dead letters whose last failure is newer than this (e.g. `30m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub newer_than: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct DlqRedriveArgs {
    #[command(flatten)]
    pub read: DlqReadArgs,
    /// Send every selected dead letter here (CONNECTION:PATH) instead of the source each
    /// one records in `bridge-dlq-source`.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: Option<String>,
    /// Print what would move and where, and change nothing (a peek, as `show` reads).
    #[arg(long)]
    pub dry_run: bool,
    /// At most this many messages per second.
    #[arg(long, value_name = "PER_SECOND")]
    pub rate: Option<std::num::NonZeroU32>,
    /// The consumer group (Kafka) or durable consumer (NATS) that takes the dead letters
    /// and keeps the redrive's progress, so that a rerun continues where it stopped.
    #[arg(long, default_value = crate::adapter::DEAD_LETTER_READER)]
    pub group: String,
}

#[derive(Debug, Args)]
pub struct DlqReadArgs {
    /// The dead-letter endpoint, as CONNECTION:PATH (what a route's `dead_letter` names).
    pub endpoint: String,
    /// Print JSON (`stats` and `redrive`: one summary object; `show` and `redrive
    /// --dry-run`: one object per dead letter).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many selected dead letters.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long without a dead letter.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// Allow a read that disturbs the broker's state where no undisturbed read exists
    /// (as for `tail`).
    #[arg(long)]
    pub disturb: bool,
    #[command(flatten)]
    pub selection: DlqSelectionArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

impl Command {
    /// The log level used when none is given.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Run(_) => "info",
            _ => "warn",
        }
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The routes file.
    pub file: PathBuf,
    /// Where to serve /metrics, /healthz and /readyz: `HOST:PORT` or `off` [default:
    /// `settings.http.listen`, else 127.0.0.1:9464].
    #[arg(long, env = "BRIDGE_HTTP_LISTEN", value_name = "HOST:PORT")]
    pub http_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The routes file.
    pub file: PathBuf,
    /// The route that receives the message.
    #[arg(long)]
    pub route: String,
    /// The message in the JSON form of `tail --json`, `origin` included (`-` reads
    /// standard input).
    pub message: PathBuf,
    /// Print the explanation as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The routes file.
    pub file: PathBuf,
    /// The cases: a YAML list of `{name, route, message, expect}` (docs/cli.md#test).
    pub cases: PathBuf,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The routes file.
    pub file: PathBuf,
}

/// Where `send` and `tail` find connections.
#[derive(Debug, Args, Clone)]
pub struct ConnectionArgs {
    /// Routes file whose connections to use [default: routes.yaml when present].
    #[arg(long, short = 'c', env = "BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Connect with this URL instead of a routes file, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`
    /// or `kafka://127.0.0.1:9092`; the endpoint's connection name is then free.
    #[arg(long)]
    pub url: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send, as CONNECTION:PATH (e.g. `kafka:orders`, `rabbit:queue/orders`).
    pub endpoint: String,
    /// Message body; `-` reads standard input. With --count, `{n}` is replaced by the
    /// message's number (1, 2, ...).
    pub body: Option<String>,
    /// Read the body from this file.
    #[arg(long, conflicts_with = "body")]
    pub file: Option<PathBuf>,
    /// A header `NAME=VALUE` (repeatable, order kept).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Message key (Kafka key, SQS FIFO group, Pub/Sub ordering key).
    #[arg(long)]
    pub key: Option<String>,
    #[arg(long)]
    pub correlation_id: Option<String>,
    #[arg(long)]
    pub reply_to: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    #[arg(long)]
    pub content_type: Option<String>,
    /// How many messages to send.
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    /// Print one JSON object per receipt.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// Where to send the request, as CONNECTION:PATH.
    pub endpoint: String,
    /// Request body; `-` reads standard input.
    pub body: Option<String>,
    /// Where the reply arrives, as CONNECTION:PATH (read while waiting).
    #[arg(long)]
    pub reply_from: String,
    /// The reply-to written in the request [default: the queue or topic of --reply-from].
    #[arg(long)]
    pub reply_to: Option<String>,
    /// How long to wait for the reply.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// A header `NAME=VALUE` (repeatable, order kept).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub key: Option<String>,
    /// Correlation id of the request [default: a new unique one].
    #[arg(long)]
    pub correlation_id: Option<String>,
    #[arg(long)]
    pub content_type: Option<String>,
    /// Print the reply as one JSON envelope.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// What to read, as CONNECTION:PATH.
    pub endpoint: String,
    /// Print one JSON envelope per line (the stable format of docs/cli.md).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Keep waiting for new messages until interrupted; without it, stop after
    /// --idle without a message.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Without --follow, stop after this long without a message.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub idle: std::time::Duration,
    /// Start from the oldest retained message (Kafka) instead of new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Allow a read that disturbs the broker's state where no undisturbed read exists
    /// (RabbitMQ queue peek: redelivered flags; SQS: receive counts and visibility).
    #[arg(long)]
    pub disturb: bool,
    /// Only print messages for which this CEL condition holds (same variables as `when`).
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// A failed command, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or an unknown connection: exit 2.
    #[error("{0:#}")]
    Usage(anyhow::Error),
    /// An invalid routes file: exit 2.
    #[error("{0}")]
    Config(ConfigErrors),
    /// Something failed while running: exit 1.
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

impl CliError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) | CliError::Config(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::from(1),
        }
    }
}

/// Runs the parsed command.
pub async fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Run(args) => run::run(args).await,
        Command::Validate(args) => validate::validate(args),
        Command::Explain(args) => explain::explain(args),
        Command::Test(args) => explain::test(args),
        Command::Dlq(args) => dlq::dlq(args).await,
        Command::Send(args) => send::send(args).await,
        Command::Tail(args) => tail::tail(args).await,
        Command::Request(args) => request::request(args).await,
    }
}
