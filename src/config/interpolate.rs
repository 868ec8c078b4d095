//! `${...}` interpolation in routes-file strings.
//!
//! - `${VAR}`: the environment variable `VAR`; an error when it is unset.
//! - `${VAR:-default}`: `VAR` when set and not empty, else `default` (as in POSIX shells).
//! - `${file:PATH}`: the contents of the file at `PATH` with one trailing newline removed,
//!   for secrets mounted as files (Kubernetes secrets, Docker secrets).
//! - `$$` is a literal `$`.
//!
//! Interpolation runs on each string value after YAML parsing, so a value can never
//! change the structure of the file, and errors keep the value's YAML path and line.

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

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn resolve(expression: &str, env: &dyn Environment) -> Result<String, String> {
    if let Some(path) = expression.strip_prefix("file:") {
        let contents = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read secret file `{path}`: {e}"))?;
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

/// Replaces every `${...}` in `text`.
pub fn interpolate(text: &str, env: &dyn Environment) -> Result<String, String> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{text}`"))?;
            out.push_str(&resolve(&body[..end], env)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
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

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(
            interpolate("${HOST}:${PORT:-9092}", &env).unwrap(),
            "broker:9092"
        );
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
    }

    #[test]
    fn unset_variable_without_default_names_it() {
        let err = interpolate("${NOPE}", &env).unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(interpolate("a$$b $x", &env).unwrap(), "a$b $x");
    }

    #[test]
    fn reads_secret_files_without_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let text = format!("${{file:{}}}", path.display());
        assert_eq!(interpolate(&text, &env).unwrap(), "s3cret");
    }

    #[test]
    fn unterminated_reference_is_an_error() {
        assert!(interpolate("${HOST", &env).is_err());
    }
}
