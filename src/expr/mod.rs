//! Expressions over messages: CEL conditions (`when`) and Jinja templates (keys and
//! destinations).
//!
//! Both see the same variables, described once in docs/configuration.md:
//! `headers` (map of name to text, or bytes for binary values; first value of duplicates),
//! `key` (text, bytes, or null), `body` (the body parsed as JSON; read only when the
//! expression uses it), `body_text` (the body as UTF-8 text), `correlation_id`,
//! `reply_to`, `message_id`, `content_type` (text or null) and `origin` (`endpoint`,
//! `partition`, `offset`, `receive_count`). Reading `body` from a body that is not JSON,
//! or `body_text` from one that is not UTF-8, is an evaluation error: the router treats it
//! as a permanent failure and dead-letters the message instead of dropping it.
//!
//! Everything an expression names is checked when it is compiled, so that a routes file
//! with a typo is refused by `bridge validate` rather than failing each message: variables,
//! and the filters and tests of templates and the functions of conditions, against what
//! the environment that evaluates them provides.

mod condition;
mod jinja;
mod scope;
mod template;

pub use condition::Condition;
pub use scope::Scope;
pub use template::Template;

/// The variables an expression may use.
pub const VARIABLES: [&str; 9] = [
    "headers",
    "key",
    "body",
    "body_text",
    "correlation_id",
    "reply_to",
    "message_id",
    "content_type",
    "origin",
];

/// Why an expression could not be evaluated for one message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("the body is not JSON ({0}) but the expression reads `body`")]
    BodyNotJson(String),
    #[error("the body is not UTF-8 text but the expression reads `body_text`")]
    BodyNotText,
    #[error("{0}")]
    Failed(String),
}

/// Parses the body as JSON, for expressions that read `body`.
pub(crate) fn body_json(body: &[u8]) -> Result<serde_json::Value, EvalError> {
    serde_json::from_slice(body).map_err(|e| EvalError::BodyNotJson(e.to_string()))
}

/// The body as text, for expressions that read `body_text`.
pub(crate) fn body_text(body: &[u8]) -> Result<&str, EvalError> {
    std::str::from_utf8(body).map_err(|_| EvalError::BodyNotText)
}

/// Describes a name an expression uses but its environment does not provide, with the known
/// name it most likely meant, e.g. ``unknown filter `uper` in template; did you mean `upper`?``.
pub(crate) fn unknown_name<'a>(
    kind: &str,
    name: &str,
    place: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> String {
    match closest(name, known) {
        Some(meant) => format!("unknown {kind} `{name}` in {place}; did you mean `{meant}`?"),
        None => format!("unknown {kind} `{name}` in {place}"),
    }
}

/// The candidate fewest edits away from `name`, when it is close enough to be a typo of it
/// (one edit for short names, two from six characters on).
fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let allowed = (name.chars().count() / 3).clamp(1, 2);
    candidates
        .into_iter()
        .map(|candidate| (strsim::levenshtein(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= allowed)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_a_close_name() {
        assert_eq!(
            unknown_name("filter", "uper", "template", ["lower", "upper"]),
            "unknown filter `uper` in template; did you mean `upper`?"
        );
        assert_eq!(
            unknown_name("function", "nosuchfn", "condition", ["size", "contains"]),
            "unknown function `nosuchfn` in condition"
        );
    }
}
