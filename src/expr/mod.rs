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

mod condition;
mod template;

pub use condition::Condition;
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
