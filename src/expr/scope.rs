//! The variables of one message as conditions and templates read them, each computed at
//! most once per message however many expressions a route evaluates.
//!
//! A route with a `when`, a dedup key and several sinks with their own conditions, paths
//! and keys evaluates many expressions per message. Without a shared scope each would
//! parse the body again and rebuild the header map; with one, the body is parsed once
//! (and only if some expression reads `body`), and each engine's view of the headers and
//! the body is built once and shared (both engines' values are reference-counted, so
//! handing them to another expression is a pointer copy). An error (a body that is not
//! JSON) is kept too, so every expression that reads the body gets the same error.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use super::{EvalError, body_json};
use crate::message::{HeaderValue, Message, OriginValue};

/// One message and what expressions have derived from it so far.
pub struct Scope<'m> {
    message: &'m Message,
    json: OnceLock<Result<serde_json::Value, EvalError>>,
    jinja_headers: OnceLock<minijinja::Value>,
    jinja_body: OnceLock<Result<minijinja::Value, EvalError>>,
    cel_headers: OnceLock<cel::Value>,
    cel_body: OnceLock<Result<cel::Value, EvalError>>,
    jinja_origin: OnceLock<minijinja::Value>,
    cel_origin: OnceLock<cel::Value>,
}

impl<'m> Scope<'m> {
    pub fn new(message: &'m Message) -> Scope<'m> {
        Scope {
            message,
            json: OnceLock::new(),
            jinja_headers: OnceLock::new(),
            jinja_body: OnceLock::new(),
            cel_headers: OnceLock::new(),
            cel_body: OnceLock::new(),
            jinja_origin: OnceLock::new(),
            cel_origin: OnceLock::new(),
        }
    }

    pub fn message(&self) -> &'m Message {
        self.message
    }

    /// The body parsed as JSON; parsed on the first call only.
    fn json(&self) -> Result<&serde_json::Value, EvalError> {
        self.json
            .get_or_init(|| body_json(&self.message.body))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Each header name with its first value (a later duplicate is overwritten by an
    /// earlier one), converted by `text` or `bytes`.
    fn first_values<V>(
        &self,
        text: impl Fn(&str) -> V,
        bytes: impl Fn(&[u8]) -> V,
    ) -> impl Iterator<Item = (&str, V)> {
        self.message.headers.iter().rev().map(move |(name, value)| {
            let value = match value {
                HeaderValue::Text(t) => text(t),
                HeaderValue::Binary(b) => bytes(b),
            };
            (name, value)
        })
    }

    /// `headers` for templates: name to text (or bytes), the first value of duplicates.
    pub fn jinja_headers(&self) -> minijinja::Value {
        self.jinja_headers
            .get_or_init(|| {
                let headers: BTreeMap<&str, minijinja::Value> = self
                    .first_values(
                        |t: &str| minijinja::Value::from(t),
                        |b: &[u8]| minijinja::Value::from_bytes(b.to_vec()),
                    )
                    .collect();
                minijinja::Value::from(headers)
            })
            .clone()
    }

    /// `body` for templates.
    pub fn jinja_body(&self) -> Result<minijinja::Value, EvalError> {
        self.jinja_body
            .get_or_init(|| {
                self.json()
                    .map(|json| minijinja::Value::from(minijinja::value::Serde(json)))
            })
            .clone()
    }

    /// `headers` for conditions, as for templates.
    pub fn cel_headers(&self) -> cel::Value {
        self.cel_headers
            .get_or_init(|| {
                let headers: HashMap<String, cel::Value> = self
                    .first_values(
                        |t: &str| cel::Value::from(t),
                        |b: &[u8]| cel::Value::from(b.to_vec()),
                    )
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect();
                cel::Value::from(headers)
            })
            .clone()
    }

    /// `body` for conditions.
    pub fn cel_body(&self) -> Result<cel::Value, EvalError> {
        self.cel_body
            .get_or_init(|| {
                let json = self.json()?.clone();
                cel::to_value(json).map_err(|e| EvalError::Failed(e.to_string()))
            })
            .clone()
    }

    /// `origin` for templates: every field the source set (none for a message that did
    /// not come from a source).
    pub fn jinja_origin(&self) -> minijinja::Value {
        self.jinja_origin
            .get_or_init(|| {
                let Some(origin) = self.message.origin() else {
                    return minijinja::Value::from(());
                };
                let fields: BTreeMap<&str, minijinja::Value> = origin
                    .variables()
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            OriginValue::Text(t) => minijinja::Value::from(&*t),
                            OriginValue::Int(n) => minijinja::Value::from(n),
                            OriginValue::Bool(b) => minijinja::Value::from(b),
                        };
                        (name, value)
                    })
                    .collect();
                minijinja::Value::from(fields)
            })
            .clone()
    }

    /// `origin` for conditions, as for templates (an empty map without a source).
    pub fn cel_origin(&self) -> cel::Value {
        self.cel_origin
            .get_or_init(|| {
                let fields: HashMap<String, cel::Value> = self
                    .message
                    .origin()
                    .map(|o| o.variables())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            OriginValue::Text(t) => cel::Value::from(t.to_string()),
                            OriginValue::Int(n) => cel::Value::Int(n),
                            OriginValue::Bool(b) => cel::Value::Bool(b),
                        };
                        (name.to_owned(), value)
                    })
                    .collect();
                cel::Value::from(fields)
            })
            .clone()
    }

    /// Whether the body has been parsed (for tests of the parse-once promise).
    #[cfg(test)]
    pub fn parsed_body(&self) -> bool {
        self.json.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{Condition, Template};

    #[test]
    fn the_body_is_parsed_once_for_every_expression_and_only_when_read() {
        let message = Message::new(r#"{"region": "eu", "amount": 12}"#);
        let scope = Scope::new(&message);
        let by_header = Condition::compile("size(headers) == 0").unwrap();
        assert!(by_header.matches_in(&scope).unwrap());
        assert!(!scope.parsed_body(), "nothing read the body yet");
        let when = Condition::compile("body.amount > 10").unwrap();
        let path = Template::compile("orders-{{ body.region }}").unwrap();
        assert!(when.matches_in(&scope).unwrap());
        assert_eq!(path.render_in(&scope).unwrap(), "orders-eu");
        assert!(scope.parsed_body());
        let first = scope.json().unwrap() as *const serde_json::Value;
        assert!(when.matches_in(&scope).unwrap());
        assert_eq!(path.render_in(&scope).unwrap(), "orders-eu");
        assert_eq!(scope.json().unwrap() as *const _, first, "parsed once");
    }

    #[test]
    fn a_body_that_is_not_json_fails_every_reader_alike() {
        let message = Message::new("not json");
        let scope = Scope::new(&message);
        let when = Condition::compile("body.x == 1").unwrap();
        let path = Template::compile("{{ body.x }}").unwrap();
        assert!(matches!(
            when.matches_in(&scope),
            Err(EvalError::BodyNotJson(_))
        ));
        assert!(matches!(
            path.render_in(&scope),
            Err(EvalError::BodyNotJson(_))
        ));
    }
}
