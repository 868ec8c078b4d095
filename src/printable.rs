//! Text that came from a message (or a broker), made safe to print on a terminal or in a
//! log line.
//!
//! Control characters (newlines, escape sequences, C1 controls) are written as escapes
//! such as `\n` and `\u{1b}`, so a message cannot start a forged log line, move the
//! cursor, change colours or retitle a terminal. Unicode's direction overrides are
//! escaped too, so text cannot be shown in an order other than the one it has.
//! Everything else, including non-ASCII letters, is kept as it is.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether `c` must not reach a terminal or a log line as it is.
fn needs_escape(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with control characters escaped; borrowed when there are none (the usual case).
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            escape("order 7 — ünïcode"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn controls_and_direction_overrides_are_escaped() {
        assert_eq!(
            escape("a\nb\r\x1b[2J\u{7}\u{9b}\u{202e}z"),
            "a\\nb\\r\\u{1b}[2J\\u{7}\\u{9b}\\u{202e}z"
        );
    }
}
