//! Puts serde's type errors in the words of a routes file's author.
//!
//! serde names the Rust type it wanted ("expected usize", "expected struct DedupModel");
//! the author wrote YAML, so those names are replaced by YAML ones ("a whole number",
//! "a mapping"). Everything else in the message (the value found, field names) is kept.

/// serde's names of expected types, and what the author reads instead.
const EXPECTED: [(&str, &str); 14] = [
    ("expected usize", "expected a whole number, 0 or more"),
    ("expected u64", "expected a whole number, 0 or more"),
    ("expected u32", "expected a whole number, 0 or more"),
    ("expected u16", "expected a whole number from 0 to 65535"),
    ("expected u8", "expected a whole number from 0 to 255"),
    ("expected i64", "expected a whole number"),
    ("expected i32", "expected a whole number"),
    ("expected f64", "expected a number"),
    ("expected f32", "expected a number"),
    ("expected a sequence", "expected a list"),
    ("expected a map", "expected a mapping"),
    ("invalid type: sequence", "invalid type: a list"),
    ("invalid type: map", "invalid type: a mapping"),
    (
        "invalid type: unit value",
        "invalid type: null (nothing written)",
    ),
];

/// `message` with Rust type names replaced by YAML words.
pub fn in_yaml_terms(message: &str) -> String {
    let mut text = message.to_owned();
    for (rust, yaml) in EXPECTED {
        if let Some(at) = text.find(rust) {
            let end = at + rust.len();
            // Only whole words: "expected u8" must not rewrite "expected u80".
            if !text[end..].starts_with(|c: char| c.is_alphanumeric() || c == '_') {
                text.replace_range(at..end, yaml);
            }
        }
    }
    // "expected struct RetryModel" / "expected enum Ordering": a mapping, or one of a set.
    for (rust, yaml) in [
        ("expected struct ", "expected a mapping"),
        ("expected enum ", "expected one of the documented values"),
    ] {
        if let Some(at) = text.find(rust) {
            let name_end = text[at + rust.len()..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(text.len(), |n| at + rust.len() + n);
            text.replace_range(at..name_end, yaml);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::in_yaml_terms;

    #[test]
    fn rust_type_names_become_yaml_words() {
        assert_eq!(
            in_yaml_terms(r#"invalid type: string "many", expected usize"#),
            r#"invalid type: string "many", expected a whole number, 0 or more"#
        );
        assert_eq!(
            in_yaml_terms(r#"invalid type: string "yes", expected struct DedupModel"#),
            r#"invalid type: string "yes", expected a mapping"#
        );
        assert_eq!(
            in_yaml_terms("invalid value: integer `-1`, expected u32"),
            "invalid value: integer `-1`, expected a whole number, 0 or more"
        );
        assert_eq!(
            in_yaml_terms("invalid type: sequence, expected a string"),
            "invalid type: a list, expected a string"
        );
        assert_eq!(
            in_yaml_terms("invalid type: map, expected a sequence"),
            "invalid type: a mapping, expected a list"
        );
        assert_eq!(
            in_yaml_terms("invalid type: unit value, expected a string"),
            "invalid type: null (nothing written), expected a string"
        );
    }

    #[test]
    fn other_messages_are_kept() {
        for message in [
            "unknown field `settings`, expected one of `name`, `from`",
            "`2` has no unit; write e.g. `2s` or `2ms`",
            "expected u80 things",
        ] {
            assert_eq!(in_yaml_terms(message), message);
        }
    }
}
