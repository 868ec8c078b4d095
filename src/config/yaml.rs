//! Reads YAML text into a JSON value while remembering the line of every node.
//!
//! The routes file is parsed once with `saphyr` (a YAML 1.2 parser that keeps positions);
//! each node's YAML path (`routes[0].to[1].endpoint`) is mapped to where it was written so
//! that every later error, from serde or from validation, can name its line. String values
//! are interpolated here (see [`super::interpolate`]), after parsing, so an environment
//! variable can never change the file's structure.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use super::ConfigError;
use super::interpolate::{Environment, interpolate};

/// A position in the routes file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The parsed file: its value and where each path was written.
#[derive(Debug, Default)]
pub struct Document {
    pub root: Value,
    locations: HashMap<String, Location>,
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
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

struct Converter<'e> {
    env: &'e dyn Environment,
    locations: HashMap<String, Location>,
    errors: Vec<ConfigError>,
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
                Scalar::String(text) => match interpolate(text, self.env) {
                    Ok(text) => Value::String(text),
                    Err(message) => {
                        self.fail(path, at, message);
                        Value::String(text.to_string())
                    }
                },
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
            YamlData::Alias(_) => {
                self.fail(
                    path,
                    at,
                    "YAML aliases (*name) are not supported; repeat the value".into(),
                );
                Value::Null
            }
            YamlData::BadValue | YamlData::Representation(..) => {
                self.fail(path, at, "this value cannot be read".into());
                Value::Null
            }
        }
    }
}

/// Parses `text`. A YAML syntax error is returned alone (nothing after it can be trusted);
/// interpolation errors are collected and returned with the document.
pub fn parse(
    text: &str,
    env: &dyn Environment,
) -> Result<(Document, Vec<ConfigError>), ConfigError> {
    let documents = MarkedYaml::load_from_str(text).map_err(|e| ConfigError {
        path: String::new(),
        line: Some(e.marker().line()),
        column: Some(e.marker().col() + 1),
        message: format!("YAML syntax error: {}", e.info()),
    })?;
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
    };
    let root = documents
        .first()
        .map_or(Value::Null, |document| converter.convert(document, ""));
    Ok((
        Document {
            root,
            locations: converter.locations,
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
    fn interpolation_errors_are_collected_with_their_path() {
        let (_, errors) = parse("a: ${X}\nb: ${Y}\n", &no_env).unwrap();
        let paths: Vec<_> = errors.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(paths, vec![("a", Some(1)), ("b", Some(2))]);
    }
}
