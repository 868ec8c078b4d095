//! `when` conditions, written in CEL (the Common Expression Language, via the `cel` crate).
//!
//! A condition must evaluate to a boolean. A missing map key (an absent header or JSON
//! field) makes the condition false rather than an error, so `headers.type == "order"`
//! simply does not match a message without a `type` header; every other evaluation error
//! is reported to the caller.
//!
//! Compiling refuses what would fail every evaluation: syntax errors, unknown variables, and
//! calls to functions the evaluation context does not provide (the `cel` crate itself looks
//! those up only when evaluating).
//!
//! A condition comes from the trusted routes file but runs on untrusted data, so its cost
//! must stay linear in the message. The `cel` crate has no budget of its own, so
//! comprehensions (`all`, `exists`, `exists_one`, `map`, `filter`) are limited instead: one
//! may not hold another, and its body may read only its own variables and literals, not the
//! message (`body.items.exists(a, a in body.other)` would scan `body.other` once per item
//! of `body.items`, the square of the message).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use std::collections::BTreeSet;

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, ExecutionError, Program, Value};

use super::scope::Scope;
use super::{EvalError, VARIABLES, body_text, unknown_name};
use crate::message::Message;

/// A compiled `when` condition.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    program: Arc<Program>,
    reads_headers: bool,
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

/// Functions of CEL's standard library, to suggest the one a typo meant. Only a suggestion:
/// whether a function exists is asked of the evaluation context, see [`provides`].
const STANDARD_FUNCTIONS: &[&str] = &[
    "bytes",
    "contains",
    "double",
    "duration",
    "dyn",
    "endsWith",
    "int",
    "matches",
    "max",
    "min",
    "size",
    "startsWith",
    "string",
    "timestamp",
    "type",
    "uint",
];

/// The sub-expressions of `expr`, for walks that treat every kind of node alike.
fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Unspecified | Expr::Literal(_) | Expr::Ident(_) => Vec::new(),
        Expr::Call(call) => call
            .target
            .iter()
            .map(|target| &target.expr)
            .chain(call.args.iter().map(|arg| &arg.expr))
            .collect(),
        Expr::Comprehension(comprehension) => vec![
            &comprehension.iter_range.expr,
            &comprehension.accu_init.expr,
            &comprehension.loop_cond.expr,
            &comprehension.loop_step.expr,
            &comprehension.result.expr,
        ],
        Expr::List(list) => list.elements.iter().map(|element| &element.expr).collect(),
        Expr::Select(select) => vec![&select.operand.expr],
        Expr::Map(map) => entries(map.entries.iter().map(|e| &e.expr)),
        Expr::Struct(structure) => entries(structure.entries.iter().map(|e| &e.expr)),
    }
}

/// The keys and values of a map literal, or the field values of a struct literal.
fn entries<'a>(items: impl Iterator<Item = &'a EntryExpr>) -> Vec<&'a Expr> {
    let mut out = Vec::new();
    for entry in items {
        match entry {
            EntryExpr::StructField(field) => out.push(&field.value.expr),
            EntryExpr::MapEntry(pair) => {
                out.push(&pair.key.expr);
                out.push(&pair.value.expr);
            }
        }
    }
    out
}

/// Collects the variables `expr` reads that no comprehension (`all`, `exists`, `map`, ...)
/// binds, so `headers.exists(h, h == "x")` reads `headers` but not `h`.
fn free_variables(expr: &Expr, bound: &mut Vec<String>, free: &mut BTreeSet<String>) {
    match expr {
        Expr::Ident(name) => {
            if !name.starts_with('@') && !bound.contains(name) {
                free.insert(name.clone());
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
        _ => {
            for child in children(expr) {
                free_variables(child, bound, free);
            }
        }
    }
}

/// Refuses a comprehension whose cost could grow with the square of the message: one inside
/// another, or one whose body reads a message variable (each step could then scan the
/// message again).
fn check_nesting(expr: &Expr, inside_comprehension: bool) -> Result<(), String> {
    if let Expr::Comprehension(comprehension) = expr {
        if inside_comprehension {
            return Err("comprehensions (all, exists, exists_one, map, filter) cannot be nested in a condition: their cost would grow with the square of the message".into());
        }
        check_nesting(&comprehension.iter_range.expr, false)?;
        check_nesting(&comprehension.accu_init.expr, false)?;
        let mut bound = vec![
            comprehension.iter_var.clone(),
            comprehension.accu_var.clone(),
        ];
        bound.extend(comprehension.iter_var2.clone());
        for part in [
            &comprehension.loop_cond,
            &comprehension.loop_step,
            &comprehension.result,
        ] {
            check_nesting(&part.expr, true)?;
            let mut free = BTreeSet::new();
            free_variables(&part.expr, &mut bound.clone(), &mut free);
            if let Some(name) = free.iter().find(|v| VARIABLES.contains(&v.as_str())) {
                return Err(format!(
                    "a comprehension (all, exists, exists_one, map, filter) may read only its own variables, not `{name}`: reading the message in each step would cost the square of the message"
                ));
            }
        }
        return Ok(());
    }
    children(expr)
        .into_iter()
        .try_for_each(|child| check_nesting(child, inside_comprehension))
}

/// Collects the functions `expr` calls, as functions (`size(x)`, `false`) or methods
/// (`x.startsWith(y)`, `true`). Operators are calls too, named `_==_`, `!_`, `@in` and the
/// like: they belong to the language, and no function can be spelled so.
fn called_functions<'a>(expr: &'a Expr, called: &mut BTreeSet<(&'a str, bool)>) {
    if let Expr::Call(call) = expr
        && !call.func_name.starts_with('@')
        && call
            .func_name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
    {
        called.insert((&call.func_name, call.target.is_some()));
    }
    for child in children(expr) {
        called_functions(child, called);
    }
}

/// The context conditions are evaluated in, before the message's variables are added: the
/// `cel` crate's functions, and any that bridge registers (none so far). Compiling checks
/// the functions of a condition against this same context.
fn base_context() -> Context<'static, 'static> {
    Context::default()
}

/// Whether the evaluation context provides the function `name`, called as a method or
/// not, or `None` when that cannot be told. The crate offers no lookup, so the function is
/// called with no arguments (on a number, as a method): an unknown name fails as an
/// undeclared reference to itself, a known function for its missing arguments or the
/// wrong receiver, before its body runs (the standard functions all take some).
fn provides(name: &str, as_method: bool) -> Option<bool> {
    let call = if as_method {
        format!("0.{name}()")
    } else {
        format!("{name}()")
    };
    let probe = Program::compile(&call).ok()?;
    match probe.execute(&base_context()) {
        Err(ExecutionError::UndeclaredReference(missing)) if missing.as_str() == name => {
            Some(false)
        }
        _ => Some(true),
    }
}

/// Refuses a call of `expr` to a function the evaluation context lacks, naming the standard
/// one it most likely meant.
fn check_functions(expr: &Expr) -> Result<(), String> {
    let mut called = BTreeSet::new();
    called_functions(expr, &mut called);
    match called
        .into_iter()
        .find(|(name, as_method)| provides(name, *as_method) == Some(false))
    {
        Some((name, as_method)) => {
            let known: Vec<&str> = STANDARD_FUNCTIONS
                .iter()
                .copied()
                .filter(|f| provides(f, as_method) == Some(true))
                .collect();
            Err(unknown_name("function", name, "condition", known))
        }
        None => Ok(()),
    }
}

impl Condition {
    /// Compiles `source`, refusing syntax errors, unknown variables and unknown functions.
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
        check_functions(&program.expression().expr)?;
        check_nesting(&program.expression().expr, false)?;
        Ok(Condition {
            source: source.into(),
            program: Arc::new(program),
            reads_headers: free.contains("headers"),
            reads_body: free.contains("body"),
            reads_body_text: free.contains("body_text"),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition for `message` alone; a route evaluating several
    /// expressions for one message shares a [`Scope`] with [`matches_in`](Self::matches_in).
    pub fn matches(&self, message: &Message) -> Result<bool, EvalError> {
        self.matches_in(&Scope::new(message))
    }

    /// Evaluates the condition for the message of `scope`.
    pub fn matches_in(&self, scope: &Scope<'_>) -> Result<bool, EvalError> {
        let message = scope.message();
        let mut context = base_context();
        if self.reads_headers {
            context.add_variable_from_value("headers", scope.cel_headers());
        } else {
            context.add_variable_from_value("headers", HashMap::<String, Value>::new());
        }
        context.add_variable_from_value(
            "key",
            message.key.as_deref().map_or(Value::Null, bytes_or_text),
        );
        context.add_variable_from_value("correlation_id", optional_text(&message.correlation_id));
        context.add_variable_from_value("reply_to", optional_text(&message.reply_to));
        context.add_variable_from_value("message_id", optional_text(&message.message_id));
        context.add_variable_from_value("content_type", optional_text(&message.content_type));
        context.add_variable_from_value("origin", scope.cel_origin());
        if self.reads_body {
            context.add_variable_from_value("body", scope.cel_body()?);
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
    fn standard_functions_and_macros_are_known() {
        for source in [
            r#"headers.type.startsWith("or") && headers.type.endsWith("er")"#,
            r#"headers.type.contains("rd") && size(key) == 3 && string(key) == "k-1""#,
            "int(body.amount) > 1 && uint(body.amount) > 1u && double(body.amount) > 1.0",
            r#"has(body.amount) && headers.exists(h, h == "type") && headers.all(h, size(h) > 0)"#,
            "[1, 2].map(x, x * 2).filter(x, x > 2).exists_one(x, x == 4)",
        ] {
            if let Err(error) = Condition::compile(source) {
                panic!("{source}: {error}");
            }
        }
    }

    #[test]
    fn unknown_functions_are_refused_with_the_one_meant() {
        assert_eq!(
            Condition::compile("nosuchfn(body) == 1").unwrap_err(),
            "unknown function `nosuchfn` in condition"
        );
        assert_eq!(
            Condition::compile(r#"headers.type.startswith("o")"#).unwrap_err(),
            "unknown function `startswith` in condition; did you mean `startsWith`?"
        );
    }

    #[test]
    fn nested_comprehensions_are_refused() {
        let error =
            Condition::compile("body.items.all(a, body.items.exists(b, a == b))").unwrap_err();
        assert!(error.contains("cannot be nested"), "{error}");
        assert!(
            Condition::compile("body.items.all(a, a > 0) && body.items.exists(b, b == 2)").is_ok()
        );
        for quadratic in [
            "body.items.exists(a, a in body.items)",
            "body.items.exists(a, a == body.items)",
            "body.items.exists(a, body_text.contains(string(a)))",
            "headers.exists(h, headers[h] == key)",
        ] {
            let error = Condition::compile(quadratic).unwrap_err();
            assert!(
                error.contains("only its own variables"),
                "{quadratic}: {error}"
            );
        }
    }

    #[test]
    fn non_boolean_result_is_an_error() {
        let condition = Condition::compile("key").unwrap();
        assert!(condition.matches(&message("{}")).is_err());
    }
}
