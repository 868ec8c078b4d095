//! Templates for keys and destinations, written in Jinja (via `minijinja`), e.g.
//! `orders-{{ headers.region }}` or `{{ body.customer.id }}`.
//!
//! Undefined values are errors (strict mode), never an empty string: a destination that
//! cannot be rendered fails the message permanently so it reaches the dead letter instead
//! of an unintended topic. A text without `{{` or `{%` is constant and costs nothing to
//! render.
//!
//! Compiling refuses what would fail every rendering: syntax errors, unknown variables, and
//! filters or tests the environment does not have (minijinja itself looks those up only
//! when rendering).
//!
//! A template comes from the trusted routes file but runs on untrusted data, so one
//! rendering is bounded: at most [`FUEL`] instructions (a loop over a list inside a loop
//! over the same list stops there instead of running in time squared), minijinja's own
//! recursion limit and its cap on repeated strings and ranges.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use minijinja::{Environment, ErrorKind, State, UndefinedBehavior, Value};

use super::jinja::{self, BUILTIN_FILTERS, BUILTIN_TESTS};
use super::scope::Scope;
use super::{EvalError, VARIABLES, body_text, unknown_name};
use crate::message::Message;

const NAME: &str = "template";

/// The most instructions one rendering may run: far more than a key or a destination
/// needs, far less than a loop nested in a loop over a large message.
pub const FUEL: u64 = 100_000;

/// A compiled template, or a constant text.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    compiled: Option<Arc<Compiled>>,
}

struct Compiled {
    environment: Environment<'static>,
    reads_headers: bool,
    reads_body: bool,
    reads_body_text: bool,
    reads_origin: bool,
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

/// True when `text` contains template syntax.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

fn optional_text(value: &Option<String>) -> Value {
    value.as_deref().map_or(Value::from(()), Value::from)
}

fn bytes_or_text(bytes: &[u8]) -> Value {
    match std::str::from_utf8(bytes) {
        Ok(text) => Value::from(text),
        Err(_) => Value::from_bytes(bytes.to_vec()),
    }
}

/// Writes a value like minijinja's own formatter, refusing one that holds `/` or `:`.
fn one_name_formatter(
    out: &mut minijinja::Output<'_>,
    state: &mut State<'_, '_>,
    value: &Value,
) -> Result<(), minijinja::Error> {
    let text = value.to_string();
    if text.contains(['/', ':']) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "the value `{}` holds `/` or `:`, which would change the shape of the destination; set `path_values: any` on the sink to allow it",
                crate::printable::escape(&text)
            ),
        ));
    }
    minijinja::escape_formatter(out, state, value)
}

/// Whether the environment behind `state` has the filter. minijinja offers no lookup, so the
/// filter is applied to nothing: an unknown one fails as unknown, a known one for the value
/// it is missing, before its body runs (every filter takes the value it filters).
fn has_filter(state: &mut State, name: &str) -> bool {
    match state.apply_filter(name, &[]) {
        Err(error) => error.kind() != ErrorKind::UnknownFilter,
        Ok(_) => true,
    }
}

/// Whether the environment behind `state` has the test, asked as [`has_filter`] asks.
fn has_test(state: &mut State, name: &str) -> bool {
    match state.perform_test(name, &[]) {
        Err(error) => error.kind() != ErrorKind::UnknownTest,
        Ok(_) => true,
    }
}

/// Asks the environment behind a [`State`] whether it has a filter, or a test.
type Lookup = fn(&mut State, &str) -> bool;

/// Refuses a filter or test of `source` that the environment behind `state` lacks, naming
/// the built-in one it most likely meant.
fn check_filters_and_tests(source: &str, state: &mut State) -> Result<(), String> {
    let used = jinja::names(source);
    let kinds: [(&str, &BTreeSet<String>, &[&str], Lookup); 2] = [
        ("filter", &used.filters, BUILTIN_FILTERS, has_filter),
        ("test", &used.tests, BUILTIN_TESTS, has_test),
    ];
    for (kind, names, builtins, has) in kinds {
        if let Some(name) = names.iter().find(|name| !has(state, name)) {
            let known: Vec<&str> = builtins.iter().copied().filter(|b| has(state, b)).collect();
            return Err(unknown_name(kind, name, "template", known));
        }
    }
    Ok(())
}

impl Template {
    /// Compiles `source`, refusing syntax errors, unknown variables and unknown filters and
    /// tests.
    pub fn compile(source: &str) -> Result<Template, String> {
        Self::compile_with(source, false)
    }

    /// Compiles the path of a templated endpoint. With `one_name_per_value`, each value the
    /// template writes (`{{ ... }}`) must be one name of the path: one holding `/` or `:`
    /// fails the rendering, so a message cannot pick a partition, an exchange's routing key
    /// or a queue URL that the template's shape does not name.
    pub fn compile_path(source: &str, one_name_per_value: bool) -> Result<Template, String> {
        Self::compile_with(source, one_name_per_value)
    }

    fn compile_with(source: &str, one_name_per_value: bool) -> Result<Template, String> {
        if !is_template(source) {
            return Ok(Template {
                source: source.into(),
                compiled: None,
            });
        }
        let mut environment = Environment::new();
        environment.set_undefined_behavior(UndefinedBehavior::Strict);
        environment.set_fuel(Some(FUEL));
        if one_name_per_value {
            environment.set_formatter(one_name_formatter);
        }
        environment
            .add_template_owned(NAME, source.to_owned())
            .map_err(|e| format!("invalid template: {e}"))?;
        let template = environment.get_template(NAME).map_err(|e| e.to_string())?;
        let variables = template.undeclared_variables(false);
        let mut unknown: Vec<&String> = variables
            .iter()
            .filter(|v| !VARIABLES.contains(&v.as_str()))
            .collect();
        unknown.sort_unstable();
        if let Some(name) = unknown.first() {
            return Err(format!(
                "unknown variable `{name}` in template; known: {}",
                VARIABLES.join(", ")
            ));
        }
        check_filters_and_tests(source, &mut template.new_state())?;
        Ok(Template {
            source: source.into(),
            compiled: Some(Arc::new(Compiled {
                environment,
                reads_headers: variables.contains("headers"),
                reads_body: variables.contains("body"),
                reads_body_text: variables.contains("body_text"),
                reads_origin: variables.contains("origin"),
            })),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the text depends on the message.
    pub fn is_constant(&self) -> bool {
        self.compiled.is_none()
    }

    /// Renders the template for `message` alone; a route rendering several expressions for
    /// one message shares a [`Scope`] with [`render_in`](Self::render_in).
    pub fn render(&self, message: &Message) -> Result<String, EvalError> {
        self.render_in(&Scope::new(message))
    }

    /// Renders the template for the message of `scope`.
    pub fn render_in(&self, scope: &Scope<'_>) -> Result<String, EvalError> {
        let Some(compiled) = &self.compiled else {
            return Ok(self.source.to_string());
        };
        let message = scope.message();
        let headers = if compiled.reads_headers {
            scope.jinja_headers()
        } else {
            Value::from(())
        };
        let body = if compiled.reads_body {
            scope.jinja_body()?
        } else {
            Value::from(())
        };
        let text = if compiled.reads_body_text {
            Value::from(body_text(&message.body)?)
        } else {
            Value::from(())
        };
        let origin = if compiled.reads_origin {
            scope.jinja_origin()
        } else {
            Value::from(())
        };
        let context = minijinja::context! {
            headers => headers,
            key => message.key.as_deref().map_or(Value::from(()), bytes_or_text),
            body => body,
            body_text => text,
            correlation_id => optional_text(&message.correlation_id),
            reply_to => optional_text(&message.reply_to),
            message_id => optional_text(&message.message_id),
            content_type => optional_text(&message.content_type),
            origin => origin,
        };
        let template = compiled
            .environment
            .get_template(NAME)
            .map_err(|e| EvalError::Failed(e.to_string()))?;
        template
            .render(context)
            .map_err(|e| EvalError::Failed(format!("template `{}`: {e}", self.source)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        let mut message = Message::new(r#"{"customer": {"id": "c-9"}}"#);
        message.headers.push("region", "eu");
        message
    }

    #[test]
    fn renders_headers_and_body_fields() {
        let template =
            Template::compile("orders-{{ headers.region }}-{{ body.customer.id }}").unwrap();
        assert_eq!(template.render(&message()).unwrap(), "orders-eu-c-9");
    }

    #[test]
    fn undefined_value_is_an_error_not_an_empty_string() {
        let template = Template::compile("orders-{{ headers.missing }}").unwrap();
        assert!(template.render(&message()).is_err());
    }

    #[test]
    fn a_loop_in_a_loop_over_a_large_message_runs_out_of_fuel() {
        let items: Vec<String> = (0..2_000).map(|i| i.to_string()).collect();
        let message = Message::new(format!("{{\"items\": [{}]}}", items.join(",")));
        let single = Template::compile("{% for a in body.items %}{% endfor %}x").unwrap();
        assert_eq!(single.render(&message).unwrap(), "x");
        let nested = Template::compile(
            "{% for a in body.items %}{% for b in body.items %}{% endfor %}{% endfor %}x",
        )
        .unwrap();
        let error = nested.render(&message).unwrap_err().to_string();
        assert!(error.contains("fuel"), "{error}");
    }

    #[test]
    fn a_path_value_cannot_add_a_separator_unless_allowed() {
        let mut message = message();
        message.headers.set("region", "eu/0".into());
        let plain = Template::compile_path("orders-{{ headers.region }}", true).unwrap();
        let error = plain.render(&message).unwrap_err().to_string();
        assert!(error.contains("path_values: any"), "{error}");
        message.headers.set("region", "https://elsewhere".into());
        assert!(plain.render(&message).is_err());
        let literal = Template::compile_path("exchange/ev/{{ body.customer.id }}", true).unwrap();
        assert_eq!(literal.render(&message).unwrap(), "exchange/ev/c-9");
        let free = Template::compile_path("orders-{{ headers.region }}", false).unwrap();
        assert_eq!(free.render(&message).unwrap(), "orders-https://elsewhere");
    }

    #[test]
    fn constant_text_is_returned_as_is() {
        let template = Template::compile("orders").unwrap();
        assert!(template.is_constant());
        assert_eq!(
            template.render(&Message::new("not json")).unwrap(),
            "orders"
        );
    }

    #[test]
    fn unknown_variables_are_refused() {
        assert!(
            Template::compile("{{ header.x }}")
                .unwrap_err()
                .contains("header")
        );
    }

    #[test]
    fn builtin_filters_and_tests_are_known() {
        let template = Template::compile(
            "{% if headers.region is defined and body is not none %}\
             {{ headers.region | upper | trim }}-{{ body.customer.id | default('x') }}\
             {% endif %}",
        )
        .unwrap();
        assert_eq!(template.render(&message()).unwrap(), "EU-c-9");
    }

    #[test]
    fn unknown_filters_and_tests_are_refused_with_the_one_meant() {
        for (source, error) in [
            (
                "{{ body | nosuchfilter }}",
                "unknown filter `nosuchfilter` in template",
            ),
            (
                "{% filter uper %}{{ key }}{% endfilter %}",
                "unknown filter `uper` in template; did you mean `upper`?",
            ),
            (
                "{% if key is nosuchtest %}x{% endif %}",
                "unknown test `nosuchtest` in template",
            ),
            (
                "{{ 'a' if key is not defind else 'b' }}",
                "unknown test `defind` in template; did you mean `defined`?",
            ),
        ] {
            assert_eq!(Template::compile(source).unwrap_err(), error, "{source}");
        }
    }
}
