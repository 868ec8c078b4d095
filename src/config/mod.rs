//! The routes file: reading, interpolation and validation into a runnable [`Plan`].
//!
//! Loading never stops at the first mistake: YAML is parsed once with positions, every
//! section is checked, and all errors come back together, each with its YAML path and
//! line, before anything connects. The same check backs `bridge validate` and
//! `bridge run`.

mod interpolate;
mod loops;
pub mod model;
mod plan;
mod wording;
mod yaml;

use std::fmt;
use std::path::Path;

pub use interpolate::{Environment, ProcessEnvironment};
pub use model::{Ordering, RetryPolicy, Select, Settings};
pub use plan::{
    DedupPlan, Plan, RatePlan, ReplyPlan, RoutePlan, SinkPlan, SourcePlan, check_listen,
};

/// One problem in a routes file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// YAML path, e.g. `routes[1].to[0].endpoint` (empty for the whole file).
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
            f.write_str(" ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one routes file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    /// The file's name as given by the user.
    pub file: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        writeln!(
            f,
            "{}: {count} error{} in the routes file:",
            self.file,
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            let separator = if error.line.is_some() { ":" } else { ": " };
            writeln!(f, "  {}{separator}{error}", self.file)?;
        }
        Ok(())
    }
}

/// The largest routes file read: 1 MiB, about a hundred times a file of a hundred routes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a file the configuration names could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// Larger than the cap; nothing past it was read.
    TooLarge,
    NotUtf8,
}

/// Reads a text file of at most `max` bytes, never reading past the cap (a path such as
/// `/dev/zero` is refused, not read until memory runs out).
pub(crate) fn read_capped(path: &Path, max: u64) -> Result<String, ReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// Reads the text of a routes file, refusing one larger than [`MAX_FILE_BYTES`].
fn read_routes_file(path: &Path) -> Result<String, String> {
    read_capped(path, MAX_FILE_BYTES).map_err(|error| match error {
        ReadError::Io(e) => format!("cannot read the routes file: {e}"),
        ReadError::TooLarge => format!(
            "the routes file is larger than {} KiB",
            MAX_FILE_BYTES / 1024
        ),
        ReadError::NotUtf8 => "the routes file is not UTF-8 text".to_owned(),
    })
}

/// Reads a YAML document other than a routes file (the cases of `bridge test`), with the
/// routes file's limits on its shape and `${...}` interpolation.
pub fn read_yaml(text: &str, env: &dyn Environment) -> Result<serde_json::Value, ConfigError> {
    let (document, errors) = yaml::parse(text, env)?;
    match errors.into_iter().next() {
        Some(error) => Err(error),
        None => Ok(document.root),
    }
}

/// Reads and validates the routes file at `path`.
pub fn load_file(path: &Path, env: &dyn Environment) -> Result<Plan, ConfigErrors> {
    let file = path.display().to_string();
    let text = read_routes_file(path).map_err(|message| ConfigErrors {
        file: file.clone(),
        errors: vec![ConfigError {
            path: String::new(),
            line: None,
            column: None,
            message,
        }],
    })?;
    load_str(&text, &file, env)
}

/// Reads and validates routes-file text; `file` names it in errors.
pub fn load_str(text: &str, file: &str, env: &dyn Environment) -> Result<Plan, ConfigErrors> {
    let fail = |errors: Vec<ConfigError>| ConfigErrors {
        file: file.to_owned(),
        errors,
    };
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(vec![ConfigError {
            path: String::new(),
            line: None,
            column: None,
            message: format!(
                "the routes file is larger than {} KiB",
                MAX_FILE_BYTES / 1024
            ),
        }]));
    }
    let (document, mut errors) = yaml::parse(text, env).map_err(|e| fail(vec![e]))?;
    match plan::build(&document) {
        Ok(plan) if errors.is_empty() => Ok(plan),
        Ok(_) => {
            document.scrub(&mut errors);
            Err(fail(errors))
        }
        Err(more) => {
            // A value whose interpolation failed is reported once, not again as invalid.
            let interpolated: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            errors.extend(more.into_iter().filter(|e| !interpolated.contains(&e.path)));
            errors.sort_by_key(|e| (e.line.unwrap_or(0), e.column.unwrap_or(0)));
            errors.dedup();
            document.scrub(&mut errors);
            Err(fail(errors))
        }
    }
}
