//! How `tail` and `send` print: a readable block per message by default, or the stable
//! JSON form of [`crate::message::json`] with `--json`.
//!
//! The readable block never passes a control character from a message to the terminal:
//! fields and headers are printed on one line each with every control character escaped
//! ([`crate::printable`]); the body keeps its line breaks and tabs, and nothing else.

use std::fmt::Write;

use crate::adapter::Receipt;
use crate::message::{HeaderValue, Message, json};
use crate::printable::escape;

/// Bytes as one line of text when they are UTF-8, else as hex with a note.
fn readable_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => escape(text).into_owned(),
        Err(_) => {
            let shown: String = bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
            let more = if bytes.len() > 64 { "…" } else { "" };
            format!("0x{shown}{more} ({} bytes, not UTF-8)", bytes.len())
        }
    }
}

/// A readable block for one message.
pub fn readable(message: &Message) -> String {
    let mut out = String::new();
    let mut title = vec![];
    if let Some(origin) = message.origin() {
        title.push(escape(&origin.endpoint).into_owned());
        if let Some(p) = origin.partition {
            title.push(format!("partition {p}"));
        }
        if let Some(o) = origin.offset {
            title.push(format!("offset {o}"));
        }
        if let Some(c) = origin.receive_count.filter(|c| *c > 1) {
            title.push(format!("delivery {c}"));
        }
    }
    if let Some(time) = message.timestamp {
        title.push(json::format_time(time));
    }
    let _ = writeln!(out, "── {}", title.join(" · "));
    let fields = [
        ("key", message.key.as_deref().map(readable_bytes)),
        ("correlation-id", message.correlation_id.clone()),
        ("reply-to", message.reply_to.clone()),
        ("message-id", message.message_id.clone()),
        ("content-type", message.content_type.clone()),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            let _ = writeln!(out, "{name}: {}", escape(&value));
        }
    }
    for (name, value) in message.headers.iter() {
        let shown = match value {
            HeaderValue::Text(text) => escape(text).into_owned(),
            HeaderValue::Binary(bytes) => format!("{} [binary]", readable_bytes(bytes)),
        };
        let _ = writeln!(out, "  {}: {shown}", escape(name));
    }
    let _ = writeln!(out, "{}", readable_body(&message.body));
    out
}

/// The body as text with its lines kept and every other control character escaped, or as
/// hex when it is not UTF-8.
fn readable_body(bytes: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return readable_bytes(bytes);
    };
    text.split('\n')
        .map(|line| {
            line.split('\t')
                .map(|part| escape(part).into_owned())
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A line for one confirmed send.
pub fn receipt(endpoint: &str, number: u64, receipt: &Receipt, as_json: bool) -> String {
    if as_json {
        serde_json::json!({
            "endpoint": endpoint,
            "number": number,
            "partition": receipt.partition,
            "offset": receipt.offset,
            "message_id": receipt.message_id,
            "sequence_number": receipt.sequence_number,
        })
        .to_string()
    } else {
        format!("{endpoint} #{number}: {receipt}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_cannot_drive_the_terminal() {
        let mut message = Message::new("line one\n\tline two\x1b]0;owned\x07\r");
        message.headers.push("x\x1b[31m", "v\nforged: yes");
        message.correlation_id = Some("c\x1b[2J".into());
        let shown = readable(&message);
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07') && !shown.contains('\r'),
            "{shown:?}"
        );
        assert!(
            shown.contains("  x\\u{1b}[31m: v\\nforged: yes\n"),
            "{shown:?}"
        );
        assert!(shown.contains("correlation-id: c\\u{1b}[2J\n"), "{shown:?}");
        assert!(
            shown.contains("line one\n\tline two\\u{1b}]0;owned\\u{7}\\r"),
            "{shown:?}"
        );
    }
}
