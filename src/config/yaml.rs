//! Reads YAML text into a JSON value while remembering the line of every node.
//!
//! The routes file is parsed with `saphyr` (a YAML 1.2 parser that keeps positions); each
//! node's YAML path (`routes[0].to[1].endpoint`) is mapped to where it was written so that
//! every later error, from serde or from validation, can name its line. String values are
//! interpolated here (see [`super::interpolate`]), after parsing, so an environment
//! variable can never change the file's structure.
//!
//! Work per file is bounded before any tree is built: the parser's events are first read
//! as a stream, refusing aliases (`*name`, which would let a few bytes expand into a huge
//! tree) and nesting deeper than [`MAX_DEPTH`] (which would exhaust the stack). What all
//! `${...}` of a file produce together is capped by [`MAX_INTERPOLATED_BYTES`].

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use saphyr_parser::{Event, Parser, ScanError, Span};
use serde_json::{Map, Number, Value};

use super::ConfigError;
use super::interpolate::{
    Environment, MAX_INTERPOLATED_BYTES, OVER_BUDGET, Substitution, interpolate_within,
};

/// The deepest nesting of mappings and lists a routes file may use; real files use about
/// ten levels.
pub const MAX_DEPTH: usize = 32;

/// A position in the routes file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The parsed file: its value, where each path was written, and which values came from
/// `${...}` interpolation.
#[derive(Debug, Default)]
pub struct Document {
    pub root: Value,
    locations: HashMap<String, Location>,
    /// The substitutions made in the string at each path.
    substitutions: Vec<(String, Substitution)>,
}

impl Document {
    /// Where `path` was written; for a path that does not exist, its nearest existing parent.
    pub fn locate(&self, path: &str) -> Option<Location> {
        let mut path = path;
        loop {
            if let Some(location) = self.locations.get(path) {
                return Some(*location);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// An error at `path`, with its line.
    pub fn error(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let location = self.locate(path);
        ConfigError {
            path: path.to_owned(),
            line: location.map(|l| l.line),
            column: location.map(|l| l.column),
            message: message.into(),
        }
    }

    /// Rewrites each error so that it never quotes a value that came from `${...}`: the
    /// value is replaced by the reference it came from (`${DB_PASSWORD}`), which names the
    /// variable or file instead. An error about the value's own field (or a field inside
    /// it) loses every occurrence; any other error loses occurrences of values long enough
    /// not to be ordinary words.
    pub fn scrub(&self, errors: &mut [ConfigError]) {
        for error in errors {
            let mut hidden: Vec<Hidden<'_>> = Vec::new();
            for (path, substitution) in &self.substitutions {
                let value = &substitution.value;
                let own = is_within(&error.path, path);
                if value.is_empty() || (!own && value.len() < MIN_UNRELATED_BYTES) {
                    continue;
                }
                for form in forms(value) {
                    hidden.push(Hidden {
                        form,
                        reference: &substitution.reference,
                        alone_only: value.len() < MIN_UNRELATED_BYTES,
                    });
                }
            }
            if !hidden.is_empty() {
                error.message = replace_all(&error.message, &hidden);
            }
        }
    }
}

/// Whether `path` is `outer` or lies inside it.
fn is_within(path: &str, outer: &str) -> bool {
    path == outer
        || path
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with(['.', '[']))
}

/// Values shorter than this are hidden only in errors about their own field, and only where
/// they stand alone: elsewhere a short value (`1`, `on`) would match ordinary words.
const MIN_UNRELATED_BYTES: usize = 6;

/// A text to replace in an error: a form of an interpolated value, and its reference.
struct Hidden<'a> {
    form: String,
    reference: &'a str,
    /// Replace only where it stands alone, not inside a longer word or number.
    alone_only: bool,
}

/// The forms a value may take in an error: as written, as serde quotes it (escaped), and
/// as a URL redacted for printing.
fn forms(value: &str) -> Vec<String> {
    let escaped = format!("{value:?}");
    let escaped = escaped[1..escaped.len() - 1].to_owned();
    let mut forms = vec![value.to_owned()];
    for form in [escaped, crate::secret::redact_url(value)] {
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// `text` with every occurrence of a hidden form replaced by its reference, in one pass
/// (the longest form first where several start at one place), so that a reference put in
/// is never rewritten by a later value.
fn replace_all(text: &str, hidden: &[Hidden<'_>]) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while at < text.len() {
        let rest = &text[at..];
        let found = hidden
            .iter()
            .filter(|h| !h.form.is_empty() && rest.starts_with(h.form.as_str()))
            .filter(|h| {
                !h.alone_only
                    || (!text[..at].chars().next_back().is_some_and(is_word)
                        && !rest[h.form.len()..].chars().next().is_some_and(is_word))
            })
            .max_by_key(|h| h.form.len());
        match found {
            Some(h) => {
                out.push_str(h.reference);
                at += h.form.len();
            }
            None => {
                let c = rest.chars().next().expect("not at the end");
                out.push(c);
                at += c.len_utf8();
            }
        }
    }
    out
}

/// Joins a map key onto a YAML path.
pub fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Joins a sequence index onto a YAML path.
pub fn index(path: &str, at: usize) -> String {
    format!("{path}[{at}]")
}

fn location(node: &MarkedYaml<'_>) -> Location {
    Location {
        // saphyr marks the scalar of a tagged node on the first line as line 0.
        line: node.span.start.line().max(1),
        column: node.span.start.col() + 1,
    }
}

struct Converter<'e> {
    env: &'e dyn Environment,
    locations: HashMap<String, Location>,
    errors: Vec<ConfigError>,
    substitutions: Vec<(String, Substitution)>,
    /// What interpolation has produced so far, against [`MAX_INTERPOLATED_BYTES`].
    interpolated_bytes: usize,
}

impl Converter<'_> {
    fn fail(&mut self, path: &str, at: Location, message: String) {
        self.errors.push(ConfigError {
            path: path.to_owned(),
            line: Some(at.line),
            column: Some(at.column),
            message,
        });
    }

    fn key_text(node: &MarkedYaml<'_>) -> Option<String> {
        match &node.data {
            YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
            YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
            YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
            _ => None,
        }
    }

    fn interpolate(&mut self, text: &str, path: &str, at: Location) -> Value {
        if self.interpolated_bytes > MAX_INTERPOLATED_BYTES {
            // Already reported once; the rest of the file is read without substitutions.
            return Value::String(text.to_owned());
        }
        let budget = MAX_INTERPOLATED_BYTES - self.interpolated_bytes;
        match interpolate_within(text, self.env, budget) {
            Ok(done) => {
                self.interpolated_bytes += done
                    .substitutions
                    .iter()
                    .map(|s| s.value.len())
                    .sum::<usize>();
                // What `${file:...}` reads is a mounted secret by convention: no log shows it.
                for substitution in &done.substitutions {
                    if substitution.reference.starts_with("${file:") {
                        crate::secret::remember(&substitution.value);
                    }
                }
                self.substitutions
                    .extend(done.substitutions.into_iter().map(|s| (path.to_owned(), s)));
                Value::String(done.text)
            }
            Err(message) => {
                if message == OVER_BUDGET {
                    self.interpolated_bytes = MAX_INTERPOLATED_BYTES + 1;
                }
                self.fail(path, at, message);
                Value::String(text.to_owned())
            }
        }
    }

    fn convert(&mut self, node: &MarkedYaml<'_>, path: &str) -> Value {
        let at = location(node);
        self.locations.entry(path.to_owned()).or_insert(at);
        match &node.data {
            YamlData::Value(scalar) => match scalar {
                Scalar::Null => Value::Null,
                Scalar::Boolean(b) => Value::Bool(*b),
                Scalar::Integer(i) => Value::Number((*i).into()),
                Scalar::FloatingPoint(f) => {
                    Number::from_f64(f.into_inner()).map_or(Value::Null, Value::Number)
                }
                Scalar::String(text) => self.interpolate(text, path, at),
            },
            YamlData::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(item, &index(path, i)))
                    .collect(),
            ),
            YamlData::Mapping(entries) => {
                let mut map = Map::new();
                for (key, value) in entries.iter() {
                    let Some(name) = Self::key_text(key) else {
                        self.fail(
                            path,
                            location(key),
                            "mapping keys must be plain text".into(),
                        );
                        continue;
                    };
                    let key_path = child(path, &name);
                    self.locations.insert(key_path.clone(), location(key));
                    let value = self.convert(value, &key_path);
                    map.insert(name, value);
                }
                Value::Object(map)
            }
            YamlData::Tagged(_, inner) => self.convert(inner, path),
            // Refused by `check_shape` before the tree is built.
            YamlData::Alias(_) => {
                self.fail(path, at, ALIASES_REFUSED.into());
                Value::Null
            }
            YamlData::BadValue | YamlData::Representation(..) => {
                self.fail(path, at, "this value cannot be read".into());
                Value::Null
            }
        }
    }
}

const ALIASES_REFUSED: &str = "YAML aliases (*name) are not supported; repeat the value";

fn too_deep() -> String {
    format!("lists and mappings are nested more than {MAX_DEPTH} levels deep")
}

fn syntax_error(error: &ScanError) -> ConfigError {
    // The scanner reads ahead of the events and stops deep flow nesting (`[[[[...`) itself.
    let message = match error.info() {
        "recursion limit exceeded" => too_deep(),
        info => format!("YAML syntax error: {info}"),
    };
    ConfigError {
        path: String::new(),
        line: Some(error.marker().line()),
        column: Some(error.marker().col() + 1),
        message,
    }
}

fn error_at(span: Span, message: String) -> ConfigError {
    ConfigError {
        path: String::new(),
        line: Some(span.start.line()),
        column: Some(span.start.col() + 1),
        message,
    }
}

/// Reads the parser's events as a stream, without building anything, and refuses what
/// would make building the tree costly: an alias, or nesting deeper than [`MAX_DEPTH`].
fn check_shape(text: &str) -> Result<(), ConfigError> {
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| syntax_error(&e))?;
        match event {
            Event::Alias(_) => return Err(error_at(span, ALIASES_REFUSED.into())),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(error_at(span, too_deep()));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses `text`. A YAML syntax error is returned alone (nothing after it can be trusted);
/// interpolation errors are collected and returned with the document.
pub fn parse(
    text: &str,
    env: &dyn Environment,
) -> Result<(Document, Vec<ConfigError>), ConfigError> {
    check_shape(text)?;
    let documents = MarkedYaml::load_from_str(text).map_err(|e| syntax_error(&e))?;
    if documents.len() > 1 {
        return Err(ConfigError {
            path: String::new(),
            line: Some(documents[1].span.start.line()),
            column: None,
            message: "the routes file must hold one YAML document, not several".into(),
        });
    }
    let mut converter = Converter {
        env,
        locations: HashMap::new(),
        errors: Vec::new(),
        substitutions: Vec::new(),
        interpolated_bytes: 0,
    };
    let root = documents
        .first()
        .map_or(Value::Null, |document| converter.convert(document, ""));
    Ok((
        Document {
            root,
            locations: converter.locations,
            substitutions: converter.substitutions,
        },
        converter.errors,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn records_lines_of_nested_keys_and_items() {
        let text = "routes:\n  - name: a\n    to:\n      - kafka:x\n      - kafka:y\n";
        let (document, errors) = parse(text, &no_env).unwrap();
        assert!(errors.is_empty());
        assert_eq!(document.locate("routes[0].name").unwrap().line, 2);
        assert_eq!(document.locate("routes[0].to[1]").unwrap().line, 5);
        assert_eq!(document.locate("routes[0].to[1].missing").unwrap().line, 5);
    }

    #[test]
    fn syntax_error_has_a_line() {
        let err = parse("a: [1, 2\nb: 3\n", &no_env).unwrap_err();
        assert!(err.line.is_some());
    }

    #[test]
    fn a_small_alias_is_refused_with_its_line() {
        let err = parse("a: &x 1\nb: *x\n", &no_env).unwrap_err();
        assert_eq!(err.line, Some(2));
        assert!(err.message.contains("aliases"), "{}", err.message);
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_before_building() {
        let fine = "a: ".to_owned() + &"[".repeat(MAX_DEPTH - 1) + &"]".repeat(MAX_DEPTH - 1);
        assert!(parse(&fine, &no_env).is_ok());
        let block = "- ".repeat(100_000) + "x\n";
        let err = parse(&block, &no_env).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
        let flow = "[".repeat(100_000);
        let err = parse(&flow, &no_env).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
    }

    #[test]
    fn errors_name_the_variable_instead_of_quoting_its_value() {
        let env = |name: &str| (name == "PW").then(|| "hunter2-secret".to_owned());
        let (document, _) = parse("a:\n  url: x://u:${PW}@h\n  port: ${P:-1}\n", &env).unwrap();
        let mut errors = vec![
            document.error("a.url", "`x://u:hunter2-secret@h` is not a URL"),
            document.error("a", "whole connection: \"hunter2-secret\""),
            document.error("a.port", "`1` is not 1024 or more"),
            document.error("b", "1 thing"),
        ];
        document.scrub(&mut errors);
        let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "`x://u:${PW}@h` is not a URL",
                "whole connection: \"${PW}\"",
                "`${P:-1}` is not 1024 or more",
                "1 thing",
            ]
        );
    }

    #[test]
    fn interpolation_errors_are_collected_with_their_path() {
        let (_, errors) = parse("a: ${X}\nb: ${Y}\n", &no_env).unwrap();
        let paths: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(paths, vec![("a", Some(1)), ("b", Some(2))]);
    }
}
