//! Ordered message headers with text or binary values.
//!
//! Order is preserved and duplicate names are allowed because AMQP tables, Kafka headers and
//! HTTP-like systems differ here; lookups return the first match. Names are compared
//! case-sensitively: systems that fold case document it in their mapping.
//!
//! Handling one message's headers costs linear time: a lookup of one name scans once, and
//! code that checks many names against many headers (the mappings) builds a [`NameSet`]
//! once instead of scanning per name. Unit tests count the name comparisons both make and
//! the headers walked ([`comparisons`]), so that a quadratic loop shows up as a count, not
//! a timing. Name lookups go through these types for that reason.

use std::collections::HashSet;

use bytes::Bytes;

#[cfg(test)]
thread_local! {
    static COMPARISONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Name comparisons (scans of [`Headers`] and probes of [`NameSet`]) and headers walked
/// ([`Headers::iter`]) on this thread so far; unit tests read it to check that header
/// handling is linear.
#[cfg(test)]
pub fn comparisons() -> u64 {
    COMPARISONS.with(std::cell::Cell::get)
}

#[inline]
fn counted(steps: u64) {
    #[cfg(test)]
    COMPARISONS.with(|count| count.set(count.get() + steps));
    let _ = steps;
}

/// Checks that `run(n)`, which handles a message of `n` headers, makes about as many name
/// comparisons per header for 10,000 headers as for 1,000 (at most twice as many): linear,
/// where a loop inside a loop would make ten times as many.
#[cfg(test)]
pub fn assert_linear(what: &str, mut run: impl FnMut(usize)) {
    let mut per_header = |n: usize| {
        let before = comparisons();
        run(n);
        (comparisons() - before) as f64 / n as f64
    };
    let small = per_header(1_000);
    let large = per_header(10_000);
    assert!(
        large <= 2.0 * small.max(1.0),
        "{what}: {small:.1} name comparisons per header with 1,000 headers, {large:.1} with 10,000"
    );
}

/// Compares two header names, counted in tests.
#[inline]
fn same_name(a: &str, b: &str) -> bool {
    counted(1);
    a == b
}

/// A set of header names for checking many names in linear time (one hash probe each).
#[derive(Debug, Default)]
pub struct NameSet<'a>(HashSet<&'a str>);

impl<'a> NameSet<'a> {
    pub fn new() -> Self {
        NameSet(HashSet::new())
    }

    /// Adds `name`; false when it was there already.
    pub fn insert(&mut self, name: &'a str) -> bool {
        counted(1);
        self.0.insert(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        counted(1);
        self.0.contains(name)
    }
}

impl<'a> FromIterator<&'a str> for NameSet<'a> {
    fn from_iter<I: IntoIterator<Item = &'a str>>(names: I) -> Self {
        let mut set = NameSet::new();
        for name in names {
            set.insert(name);
        }
        set
    }
}

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
        match self.0.iter().position(|(n, _)| same_name(n, name)) {
            Some(first) => {
                self.0[first].1 = value;
                let mut index = 0;
                self.0.retain(|(n, _)| {
                    let keep = index <= first || !same_name(n, name);
                    index += 1;
                    keep
                });
            }
            None => self.0.push((name.to_owned(), value)),
        }
    }

    /// The first value of the header called `name`.
    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.0
            .iter()
            .find(|(n, _)| same_name(n, name))
            .map(|(_, v)| v)
    }

    /// The first value of `name` if it is text.
    pub fn get_text(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(HeaderValue::as_text)
    }

    /// Removes every header called `name` and returns the first removed value.
    pub fn remove(&mut self, name: &str) -> Option<HeaderValue> {
        let mut first = None;
        self.0.retain_mut(|(n, v)| {
            if !same_name(n, name) {
                return true;
            }
            if first.is_none() {
                first = Some(std::mem::replace(v, HeaderValue::Text(String::new())));
            }
            false
        });
        first
    }

    /// The headers in order; each one visited is counted in tests, so that a walk over
    /// every header for each header shows up in [`assert_linear`].
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &HeaderValue)> {
        self.0.iter().map(|(n, v)| {
            counted(1);
            (n.as_str(), v)
        })
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Keeps the headers for which `keep(name)` holds, in order.
    pub fn retain_names(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(n, _)| keep(n));
    }

    /// Gives every header called `from` the name `to`, each where it stands.
    pub fn rename(&mut self, from: &str, to: &str) {
        for (name, _) in &mut self.0 {
            if same_name(name, from) {
                to.clone_into(name);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod linear {
    use super::*;

    fn many(n: usize) -> Headers {
        (0..n)
            .map(|i| (format!("h{i}"), HeaderValue::from("v")))
            .collect()
    }

    #[test]
    fn set_and_remove_scan_once() {
        assert_linear("Headers::set", |n| many(n).set("h0", "x".into()));
        assert_linear("Headers::remove", |n| {
            many(n).remove("h1");
        });
    }

    #[test]
    fn a_quadratic_loop_is_caught() {
        let result = std::panic::catch_unwind(|| {
            assert_linear("a lookup per header", |n| {
                let headers = many(n);
                for (name, _) in headers.iter() {
                    let _ = headers.get(name);
                }
            })
        });
        assert!(result.is_err(), "the check must be able to fail");
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
