//! Ordered message headers with text or binary values.
//!
//! Order is preserved and duplicate names are allowed because AMQP tables, Kafka headers and
//! HTTP-like systems differ here; lookups return the first match. Names are compared
//! case-sensitively: systems that fold case document it in their mapping.

use bytes::Bytes;

/// A header value: text where the source system said text, bytes otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HeaderValue {
    Text(String),
    Binary(Bytes),
}

impl HeaderValue {
    /// The value as text, if it is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            HeaderValue::Text(text) => Some(text),
            HeaderValue::Binary(_) => None,
        }
    }

    /// The raw bytes of the value (UTF-8 bytes for text).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            HeaderValue::Text(text) => text.as_bytes(),
            HeaderValue::Binary(bytes) => bytes,
        }
    }

    /// Text if the bytes are valid UTF-8, binary otherwise. Used by systems whose header
    /// values are untyped bytes (Kafka).
    pub fn from_untyped(bytes: &[u8]) -> HeaderValue {
        match std::str::from_utf8(bytes) {
            Ok(text) => HeaderValue::Text(text.to_owned()),
            Err(_) => HeaderValue::Binary(Bytes::copy_from_slice(bytes)),
        }
    }
}

impl From<&str> for HeaderValue {
    fn from(value: &str) -> Self {
        HeaderValue::Text(value.to_owned())
    }
}

impl From<String> for HeaderValue {
    fn from(value: String) -> Self {
        HeaderValue::Text(value)
    }
}

impl From<Vec<u8>> for HeaderValue {
    fn from(value: Vec<u8>) -> Self {
        HeaderValue::Binary(Bytes::from(value))
    }
}

/// Headers in their original order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, HeaderValue)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header, keeping any existing header of the same name.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<HeaderValue>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every header called `name` by one with `value`, at the position of the first.
    pub fn set(&mut self, name: &str, value: HeaderValue) {
        match self.0.iter().position(|(n, _)| n == name) {
            Some(first) => {
                self.0[first].1 = value;
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    let keep = index <= first || n != name;
                    index += 1;
                    keep
                });
            }
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// The first value of the header called `name`.
    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// The first value of `name` if it is text.
    pub fn get_text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(HeaderValue::as_text)
    }

    /// Removes every header called `name` and returns the first removed value.
    pub fn remove(&mut self, name: &str) -> Option<HeaderValue> {
        let first = self.0.iter().position(|(n, _)| n == name)?;
        let value = self.0.remove(first).1;
        self.0.retain(|(n, _)| n != name);
        Some(value)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &HeaderValue)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<HeaderValue>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

impl IntoIterator for Headers {
    type Item = (String, HeaderValue);
    type IntoIter = std::vec::IntoIter<(String, HeaderValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_all_duplicates_at_the_first_position() {
        let mut headers: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        headers.set("a", "x".into());
        let names: Vec<_> = headers
            .iter()
            .map(|(n, v)| (n, v.as_text().unwrap()))
            .collect();
        assert_eq!(names, vec![("a", "x"), ("b", "2")]);
    }

    #[test]
    fn untyped_values_become_text_only_when_utf8() {
        assert_eq!(
            HeaderValue::from_untyped(b"ok"),
            HeaderValue::Text("ok".into())
        );
        assert!(matches!(
            HeaderValue::from_untyped(&[0xff, 0]),
            HeaderValue::Binary(_)
        ));
    }

    #[test]
    fn remove_returns_first_and_drops_all() {
        let mut headers: Headers = [("a", "1"), ("a", "2")].into_iter().collect();
        assert_eq!(headers.remove("a"), Some(HeaderValue::Text("1".into())));
        assert!(headers.is_empty());
    }
}
