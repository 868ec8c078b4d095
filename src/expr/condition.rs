//! `when` conditions, written in CEL (the Common Expression Language, via the `cel` crate).
//!
//! A condition must evaluate to a boolean. A missing map key (an absent header or JSON
//! field) makes the condition false rather than an error, so `headers.type == "order"`
//! simply does not match a message without a `type` header; every other evaluation error
//! is reported to the caller.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, ExecutionError, Program, Value};

use super::{EvalError, VARIABLES, body_json, body_text};
use crate::message::{HeaderValue, Message};

/// A compiled `when` condition.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    reads_body: bool,
    reads_body_text: bool,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

fn optional_text(value: &Option<String>) -> Value {
    value.as_deref().map_or(Value::Null, Value::from)
}

fn bytes_or_text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => Value::from(bytes.to_vec()),
    }
}

/// Collects the variables `expr` reads that no comprehension (`all`, `exists`, `map`, ...)
/// binds, so `headers.exists(h, h == "x")` reads `headers` but not `h`.
fn free_variables(expr: &Expr, bound: &mut Vec<String>, free: &mut BTreeSet<String>) {
    match expr {
        Expr::Unspecified | Expr::Literal(_) => {}
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                free.insert(name.clone());
            }
        }
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                free_variables(&target.expr, bound, free);
            }
            for arg in &call.args {
                free_variables(&arg.expr, bound, free);
            }
        }
        Expr::Comprehension(comprehension) => {
            free_variables(&comprehension.iter_range.expr, bound, free);
            free_variables(&comprehension.accu_init.expr, bound, free);
            let before = bound.len();
            bound.push(comprehension.iter_var.clone());
            bound.extend(comprehension.iter_var2.clone());
            bound.push(comprehension.accu_var.clone());
            for part in [
                &comprehension.loop_cond,
                &comprehension.loop_step,
                &comprehension.result,
            ] {
                free_variables(&part.expr, bound, free);
            }
            bound.truncate(before);
        }
        Expr::List(list) => {
            for element in &list.elements {
                free_variables(&element.expr, bound, free);
            }
        }
        Expr::Select(select) => free_variables(&select.operand.expr, bound, free),
        Expr::Map(map) => entries(map.entries.iter().map(|e| &e.expr), bound, free),
        Expr::Struct(structure) => entries(structure.entries.iter().map(|e| &e.expr), bound, free),
    }
}

fn entries<'a>(
    items: impl Iterator<Item = &'a EntryExpr>,
    bound: &mut Vec<String>,
    free: &mut BTreeSet<String>,
) {
    for entry in items {
        match entry {
            EntryExpr::StructField(field) => free_variables(&field.value.expr, bound, free),
            EntryExpr::MapEntry(pair) => {
                free_variables(&pair.key.expr, bound, free);
                free_variables(&pair.value.expr, bound, free);
            }
        }
    }
}

impl Condition {
    /// Compiles `source`, refusing syntax errors and unknown variables.
    pub fn compile(source: &str) -> Result<Condition, String> {
        let program =
            Program::compile(source).map_err(|e| format!("invalid CEL expression: {e}"))?;
        let mut free = BTreeSet::new();
        free_variables(&program.expression().expr, &mut Vec::new(), &mut free);
        if let Some(name) = free.iter().find(|v| !VARIABLES.contains(&v.as_str())) {
            return Err(format!(
                "unknown variable `{name}` in condition; known: {}",
                VARIABLES.join(", ")
            ));
        }
        let reads_body = free.contains("body");
        let reads_body_text = free.contains("body_text");
        Ok(Condition {
            source: source.into(),
            program: Arc::new(program),
            reads_body,
            reads_body_text,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition for `message`.
    pub fn matches(&self, message: &Message) -> Result<bool, EvalError> {
        let mut context = Context::default();
        let headers: HashMap<String, Value> = message
            .headers
            .iter()
            .rev()
            .map(|(name, value)| {
                let value = match value {
                    HeaderValue::Text(text) => Value::from(text.as_str()),
                    HeaderValue::Binary(bytes) => Value::from(bytes.to_vec()),
                };
                (name.to_owned(), value)
            })
            .collect();
        context.add_variable_from_value("headers", headers);
        context.add_variable_from_value(
            "key",
            message.key.as_deref().map_or(Value::Null, bytes_or_text),
        );
        context.add_variable_from_value("correlation_id", optional_text(&message.correlation_id));
        context.add_variable_from_value("reply_to", optional_text(&message.reply_to));
        context.add_variable_from_value("message_id", optional_text(&message.message_id));
        context.add_variable_from_value("content_type", optional_text(&message.content_type));
        let origin: HashMap<String, Value> = match message.origin() {
            Some(origin) => [
                ("endpoint", Value::from(origin.endpoint.as_str())),
                (
                    "partition",
                    origin
                        .partition
                        .map_or(Value::Null, |p| Value::Int(p.into())),
                ),
                ("offset", origin.offset.map_or(Value::Null, Value::Int)),
                (
                    "receive_count",
                    origin
                        .receive_count
                        .map_or(Value::Null, |c| Value::Int(c.into())),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            None => HashMap::new(),
        };
        context.add_variable_from_value("origin", origin);
        if self.reads_body {
            let json = body_json(&message.body)?;
            let value = cel::to_value(json).map_err(|e| EvalError::Failed(e.to_string()))?;
            context.add_variable_from_value("body", value);
        }
        if self.reads_body_text {
            context.add_variable_from_value("body_text", body_text(&message.body)?);
        }
        match self.program.execute(&context) {
            Ok(Value::Bool(matched)) => Ok(matched),
            Ok(other) => Err(EvalError::Failed(format!(
                "condition `{}` returned {other:?}, not true or false",
                self.source
            ))),
            Err(ExecutionError::NoSuchKey(_)) => Ok(false),
            Err(error) => Err(EvalError::Failed(format!(
                "condition `{}`: {error}",
                self.source
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        let mut message = Message::new(body.to_owned());
        message.headers.push("type", "order");
        message.key = Some("k-1".into());
        message
    }

    #[test]
    fn reads_headers_key_and_json_body() {
        let condition =
            Condition::compile(r#"headers.type == "order" && key == "k-1" && body.amount > 10"#)
                .unwrap();
        assert!(condition.matches(&message(r#"{"amount": 12}"#)).unwrap());
        assert!(!condition.matches(&message(r#"{"amount": 3}"#)).unwrap());
    }

    #[test]
    fn missing_header_or_field_does_not_match() {
        let condition =
            Condition::compile(r#"headers.region == "eu" || body.missing == 1"#).unwrap();
        assert!(!condition.matches(&message("{}")).unwrap());
    }

    #[test]
    fn body_that_is_not_json_is_an_error_only_when_read() {
        let reads = Condition::compile("body.amount > 1").unwrap();
        assert!(matches!(
            reads.matches(&message("nope")),
            Err(EvalError::BodyNotJson(_))
        ));
        let ignores = Condition::compile(r#"headers.type == "order""#).unwrap();
        assert!(ignores.matches(&message("nope")).unwrap());
    }

    #[test]
    fn unknown_variables_and_syntax_errors_are_refused() {
        assert!(
            Condition::compile("hedaers.type == 'x'")
                .unwrap_err()
                .contains("hedaers")
        );
        assert!(Condition::compile("headers.type ==").is_err());
    }

    #[test]
    fn comprehension_variables_are_not_unknown() {
        let condition = Condition::compile(r#"headers.exists(h, h == "type")"#).unwrap();
        assert!(condition.matches(&message("{}")).unwrap());
    }

    #[test]
    fn non_boolean_result_is_an_error() {
        let condition = Condition::compile("key").unwrap();
        assert!(condition.matches(&message("{}")).is_err());
    }
}
