//! Logging, metrics and the HTTP port for health and Prometheus.
//!
//! Logging: `tracing` to standard error, as text or JSON lines.
//!
//! The level comes from `--log-level`, else `BRIDGE_LOG` (an `EnvFilter` directive such as
//! `info,bridge::router=debug`), else the command's default; an invalid one is reported
//! and the default used. Message bodies are never logged above `trace`: lapin's log of
//! returned messages (which holds their bodies) is off whatever the filter says.
//!
//! What reaches standard error is safe whatever a message carries: in text lines, field
//! values have their control characters escaped ([`crate::printable`]), so a message
//! cannot forge a log line or drive a terminal (JSON lines are escaped by JSON itself);
//! and every line goes through [`crate::secret::scrub`], so no secret read by this process
//! is printed, even by a client library logging at `trace`.

pub mod http;
pub mod metrics;

use std::io::Write;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// lapin logs returned (unroutable) messages with their bodies at WARN; bridge reports
/// them itself as permanent errors, without the body.
const RETURNED_MESSAGES_OFF: &str = "lapin::returned_messages=off";

/// The filter for `directive`, or for `default_level` when it is empty or invalid (with
/// the reason), always with lapin's log of returned messages off.
fn filter(directive: Option<&str>, default_level: &str) -> (EnvFilter, Option<String>) {
    let wanted = directive.map(str::trim).filter(|d| !d.is_empty());
    let (filter, problem) = match wanted.map(EnvFilter::try_new) {
        Some(Ok(filter)) => (filter, None),
        Some(Err(error)) => (
            EnvFilter::new(default_level),
            Some(format!(
                "the log filter `{}` is invalid ({error}); logging at `{default_level}`",
                crate::printable::escape(wanted.unwrap_or_default())
            )),
        ),
        None => (EnvFilter::new(default_level), None),
    };
    let off = RETURNED_MESSAGES_OFF
        .parse()
        .expect("a constant directive parses");
    (filter.add_directive(off), problem)
}

/// Standard error, with every remembered secret hidden. The formatter hands over one whole
/// line per write, so a secret is never split between two writes.
struct ScrubbedStderr;

impl Write for ScrubbedStderr {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buffer);
        std::io::stderr().write_all(crate::secret::scrub(&text).as_bytes())?;
        Ok(buffer.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How text lines write fields: as tracing-subscriber's default does, with every value's
/// control characters escaped (names are the code's own).
fn text_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let name = field.name();
        if name.starts_with("log.") {
            return Ok(());
        }
        let text = format!("{value:?}");
        let text = crate::printable::escape(&text);
        match name {
            "message" => write!(writer, "{text}"),
            name => write!(writer, "{}={text}", name.trim_start_matches("r#")),
        }
    })
    .delimited(" ")
}

/// Installs the global subscriber; `default_level` applies when nothing else is given.
pub fn init_logging(format: LogFormat, level: Option<&str>, default_level: &str) {
    let directive = level
        .map(str::to_owned)
        .or_else(|| std::env::var("BRIDGE_LOG").ok());
    let (filter, problem) = filter(directive.as_deref(), default_level);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| ScrubbedStderr);
    let _ = match format {
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn an_invalid_filter_falls_back_and_keeps_returned_messages_off() {
        for wanted in [
            "info,lapin=warning",
            "bridge=verbose",
            "=debug",
            "info,h2=of",
        ] {
            let (filter, problem) = filter(Some(wanted), "warn");
            let shown = filter.to_string();
            assert!(
                shown.contains("lapin::returned_messages=off"),
                "{wanted}: {shown}"
            );
            assert!(shown.contains("warn"), "{wanted}: {shown}");
            assert!(problem.is_some_and(|p| p.contains("invalid")), "{wanted}");
        }
    }

    #[test]
    fn a_valid_filter_cannot_switch_returned_messages_back_on() {
        let (filter, problem) = filter(Some("trace,lapin::returned_messages=trace"), "warn");
        assert!(problem.is_none());
        let shown = filter.to_string();
        assert!(shown.contains("lapin::returned_messages=off"), "{shown}");
        assert!(!shown.contains("lapin::returned_messages=trace"), "{shown}");
    }

    #[test]
    fn a_message_cannot_forge_a_text_log_line() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Captured(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Captured {
            fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buffer);
                Ok(buffer.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(super::text_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let hostile = "x\n2026-01-01T00:00:00Z  INFO bridge: all good\u{1b}[2J";
            tracing::warn!(error = %hostile, sink = hostile, "cannot deliver {hostile}");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text:?}");
        assert!(text.contains("error=x\\n2026"), "{text}");
    }

    #[test]
    fn an_empty_filter_means_the_default_level() {
        let (filter, problem) = filter(Some("  "), "info");
        assert!(problem.is_none());
        assert!(filter.to_string().contains("info"));
    }
}
