//! `${...}` interpolation in routes-file strings.
//!
//! - `${VAR}`: the environment variable `VAR`; an error when it is unset.
//! - `${VAR:-default}`: `VAR` when set and not empty, else `default` (as in POSIX shells).
//! - `${file:PATH}`: the contents of the file at `PATH` with one trailing newline removed,
//!   for secrets mounted as files (Kubernetes secrets, Docker secrets). A file larger than
//!   [`MAX_FILE_BYTES`] is refused without being read further, so a path such as
//!   `/dev/zero` cannot exhaust memory.
//! - `$$` is a literal `$`.
//!
//! Interpolation runs on each string value after YAML parsing, so a value can never
//! change the structure of the file, and errors keep the value's YAML path and line. Each
//! substitution is returned with the reference it came from, so that validation errors
//! can name the variable instead of quoting its value (which may be a secret).

/// Where variables come from; tests pass their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<F: Fn(&str) -> Option<String>> Environment for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The largest file `${file:PATH}` reads: 1 MiB, far more than any secret or key.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The most text all `${...}` references of one file may produce together (16 MiB).
pub const MAX_INTERPOLATED_BYTES: usize = 16 << 20;

/// The error once the references of a file produce more than [`MAX_INTERPOLATED_BYTES`].
pub const OVER_BUDGET: &str = "the file's ${...} references produce more than 16 MiB of text";

/// One `${...}` replaced in a value: what was written and what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Substitution {
    /// The reference as written, e.g. `${DB_PASSWORD}` or `${file:/run/secrets/key}`.
    pub reference: String,
    /// What it was replaced by.
    pub value: String,
}

/// A string after interpolation, with the substitutions made in it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Interpolated {
    pub text: String,
    pub substitutions: Vec<Substitution>,
}

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a secret file, refusing one larger than [`MAX_FILE_BYTES`].
fn read_secret_file(path: &str) -> Result<String, String> {
    super::read_capped(std::path::Path::new(path), MAX_FILE_BYTES).map_err(|error| match error {
        super::ReadError::Io(e) => format!("cannot read secret file `{path}`: {e}"),
        super::ReadError::TooLarge => format!(
            "secret file `{path}` is larger than {} KiB; point ${{file:...}} at a file holding only the secret",
            MAX_FILE_BYTES / 1024
        ),
        super::ReadError::NotUtf8 => format!("secret file `{path}` is not UTF-8 text"),
    })
}

fn resolve(expression: &str, env: &dyn Environment) -> Result<String, String> {
    if let Some(path) = expression.strip_prefix("file:") {
        let contents = read_secret_file(path)?;
        let trimmed = contents
            .strip_suffix("\r\n")
            .or_else(|| contents.strip_suffix('\n'))
            .unwrap_or(&contents);
        return Ok(trimmed.to_owned());
    }
    let (name, default) = match expression.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expression, None),
    };
    if !valid_variable_name(name) {
        return Err(format!(
            "`${{{expression}}}` is not a variable reference; use ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}}"
        ));
    }
    match (env.var(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_owned()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_owned()),
        (None, None) => Err(format!(
            "environment variable `{name}` is not set; set it or write ${{{name}:-default}}"
        )),
    }
}

/// Replaces every `${...}` in `text`, failing as soon as the substitutions add up to more
/// than `budget` bytes (so that one value with thousands of references to a large file
/// is stopped at the budget, not expanded whole first).
pub fn interpolate_within(
    text: &str,
    env: &dyn Environment,
    budget: usize,
) -> Result<Interpolated, String> {
    if !text.contains('$') {
        return Ok(Interpolated {
            text: text.to_owned(),
            substitutions: Vec::new(),
        });
    }
    let mut out = Interpolated {
        text: String::with_capacity(text.len()),
        substitutions: Vec::new(),
    };
    let mut substituted = 0usize;
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.text.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            // The text itself is not quoted: it may hold a secret written in the file.
            let end = body
                .find('}')
                .ok_or("unterminated `${`: close it with `}`, or write `$$` for a `$`")?;
            let value = resolve(&body[..end], env)?;
            substituted += value.len();
            if substituted > budget {
                return Err(OVER_BUDGET.to_owned());
            }
            out.text.push_str(&value);
            out.substitutions.push(Substitution {
                reference: format!("${{{}}}", &body[..end]),
                value,
            });
            rest = &body[end + 1..];
        } else {
            out.text.push('$');
            rest = after;
        }
    }
    out.text.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("broker".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn interpolate(text: &str, env: &dyn Environment) -> Result<Interpolated, String> {
        interpolate_within(text, env, usize::MAX)
    }

    fn text(source: &str) -> Result<String, String> {
        interpolate(source, &env).map(|i| i.text)
    }

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(text("${HOST}:${PORT:-9092}").unwrap(), "broker:9092");
        assert_eq!(text("${EMPTY:-x}").unwrap(), "x");
    }

    #[test]
    fn each_substitution_is_recorded_with_its_reference() {
        let done = interpolate("${HOST}:${PORT:-9092}", &env).unwrap();
        let pairs: Vec<_> = done
            .substitutions
            .iter()
            .map(|s| (s.reference.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(pairs, [("${HOST}", "broker"), ("${PORT:-9092}", "9092")]);
    }

    #[test]
    fn unset_variable_without_default_names_it() {
        let err = text("${NOPE}").unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(text("a$$b $x").unwrap(), "a$b $x");
    }

    #[test]
    fn reads_secret_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(
            text(&format!("${{file:{}}}", path.display())).unwrap(),
            "s3cret"
        );
    }

    #[test]
    fn a_file_that_never_ends_is_refused_after_the_cap() {
        let err = text("${file:/dev/zero}").unwrap_err();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
    }

    #[test]
    fn many_references_in_one_value_stop_at_the_budget() {
        let big = |name: &str| (name == "BIG").then(|| "x".repeat(1 << 20));
        let text = "${BIG}".repeat(100_000);
        assert_eq!(
            interpolate_within(&text, &big, MAX_INTERPOLATED_BYTES).unwrap_err(),
            OVER_BUDGET
        );
    }

    #[test]
    fn an_unterminated_reference_is_an_error_that_does_not_quote_the_text() {
        let err = text("amqp://admin:Pa55word@h/${VHOST").unwrap_err();
        assert!(err.contains("unterminated"), "{err}");
        assert!(!err.contains("Pa55word"), "{err}");
    }
}
