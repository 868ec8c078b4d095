//! Logging, metrics and the HTTP port for health and Prometheus.
//!
//! Logging: `tracing` to standard error, as text or JSON lines.
//!
//! The level comes from `--log-level`, else `BRIDGE_LOG` (an `EnvFilter` directive such as
//! `info,bridge::router=debug`), else the command's default. Message bodies are never
//! logged above `trace`.

pub mod http;
pub mod metrics;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber; `default_level` applies when nothing else is given.
pub fn init_logging(format: LogFormat, level: Option<&str>, default_level: &str) {
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var("BRIDGE_LOG").ok())
        .unwrap_or_else(|| default_level.to_owned());
    // lapin logs returned (unroutable) messages with their bodies at WARN; bridge reports
    // them itself as permanent errors, without the body.
    let directive = format!("{directive},lapin::returned_messages=off");
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
