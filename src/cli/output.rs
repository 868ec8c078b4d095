//! How `tail` and `send` print: a readable block per message by default, or the stable
//! JSON form of [`crate::message::json`] with `--json`.

use std::fmt::Write;

use crate::adapter::Receipt;
use crate::message::{HeaderValue, Message, json};

/// Bytes as text when they are UTF-8, else as hex with a note.
fn readable_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
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
        title.push(origin.endpoint.clone());
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
            let _ = writeln!(out, "{name}: {value}");
        }
    }
    for (name, value) in message.headers.iter() {
        let shown = match value {
            HeaderValue::Text(text) => text.clone(),
            HeaderValue::Binary(bytes) => format!("{} [binary]", readable_bytes(bytes)),
        };
        let _ = writeln!(out, "  {name}: {shown}");
    }
    let _ = writeln!(out, "{}", readable_bytes(&message.body));
    out
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
