//! Reading a section of the routes file with serde past its errors: each error is recorded
//! with its YAML path, the offending field is removed (or a scalar of the wrong kind is
//! coerced where the text is unambiguous) and the section is read again, so that one pass
//! reports every bad field of a section rather than the first.

use serde_json::Value;
use serde_path_to_error::Segment;

use super::Builder;
use crate::config::yaml::child;

/// The value at `segments`, if there is one.
fn value_at<'v>(value: &'v mut Value, segments: &[Segment]) -> Option<&'v mut Value> {
    let mut node = value;
    for segment in segments {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => map.get_mut(key)?,
            (Segment::Seq { index }, Value::Array(items)) => items.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Fixes a scalar of the wrong kind where the text is unambiguous: `"10"` where a number
/// is expected (a `${VAR}` always gives text) and `10` or `true` where text is expected
/// (librdkafka options, queue attributes). Returns whether it changed anything.
fn coerce_at(value: &mut Value, segments: &[Segment], message: &str) -> bool {
    let Some(node) = value_at(value, segments) else {
        return false;
    };
    let wants_text = message.contains("expected a string");
    match node {
        Value::String(text) if message.starts_with("invalid type: string") && !wants_text => {
            let typed = if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else if let Ok(n) = text.parse::<u64>() {
                Value::from(n)
            } else if let Some(n) = text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(n)
            } else if let Ok(b) = text.parse::<bool>() {
                Value::Bool(b)
            } else {
                return false;
            };
            *node = typed;
            true
        }
        Value::Number(_) | Value::Bool(_) if wants_text => {
            *node = Value::String(node.to_string());
            true
        }
        _ => false,
    }
}

/// Removes the value at `segments` from `value`; false when there is nothing to remove.
fn remove_at(value: &mut Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Object(map)) => map.remove(key).is_some(),
        (Segment::Seq { index }, Value::Array(items)) if *index < items.len() => {
            items.remove(*index);
            true
        }
        _ => false,
    }
}

impl Builder<'_> {
    /// Deserializes with `parse`, and after each error removes the offending field and
    /// tries again, so that one pass reports every bad field of a section, not the first.
    pub(super) fn parse_with<T>(
        &mut self,
        path: &str,
        value: &Value,
        parse: impl Fn(Value) -> Result<T, serde_path_to_error::Error<serde_json::Error>>,
    ) -> Option<T> {
        const MAX_ERRORS_PER_SECTION: usize = 20;
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_SECTION {
            let error = match parse(value.clone()) {
                // The section goes on being checked without the removed fields; their errors
                // are recorded, so the file is refused all the same.
                Ok(parsed) => return Some(parsed),
                Err(error) => error,
            };
            let segments: Vec<Segment> = error.path().iter().cloned().collect();
            let inner = error.path().to_string();
            let at = if inner == "." {
                path.to_owned()
            } else if inner.starts_with('[') {
                format!("{path}{inner}")
            } else {
                child(path, &inner)
            };
            let message = error.into_inner().to_string();
            if coerce_at(&mut value, &segments, &message) {
                continue;
            }
            let consequence = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split('`').next())
                .is_some_and(|field| removed.iter().any(|r| r == &child(&at, field)));
            if !consequence {
                self.error(&at, crate::config::wording::in_yaml_terms(&message));
            }
            if segments.is_empty() || !remove_at(&mut value, &segments) {
                return None;
            }
            removed.push(at);
        }
        None
    }
}
