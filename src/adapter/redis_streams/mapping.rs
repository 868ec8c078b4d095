//! Envelope <-> the fields of a stream entry, both ways, in order and linear in the headers.
//!
//! | envelope | entry field |
//! |---|---|
//! | body | `body` (bytes; always written) |
//! | key | `key` (bytes) |
//! | message id, correlation id, reply-to, content type | `message-id`, `correlation-id`, `reply-to`, `content-type` |
//! | timestamp | `timestamp-ms` (milliseconds); else the time in the entry id |
//! | text header NAME | `h:NAME` (repeated names repeat, in order) |
//! | binary header NAME | `b:NAME` |
//! | origin | endpoint, entry id (broker message id), delivery count |
//!
//! An entry written by another program has fields of its own: each field that is none of
//! the above becomes a header of that name (text when it is UTF-8, else binary), and the
//! body is empty unless a `body` field exists. Field names that are not UTF-8 are read
//! with their invalid bytes replaced.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::message::{HeaderValue, Message};

pub const BODY: &str = "body";
pub const KEY: &str = "key";
pub const MESSAGE_ID: &str = "message-id";
pub const CORRELATION_ID: &str = "correlation-id";
pub const REPLY_TO: &str = "reply-to";
pub const CONTENT_TYPE: &str = "content-type";
pub const TIMESTAMP_MS: &str = "timestamp-ms";
const TEXT_HEADER: &str = "h:";
const BINARY_HEADER: &str = "b:";

/// The fields of an entry, in order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The entry fields for `message`.
pub fn encode(message: &Message) -> Fields {
    let mut fields: Fields = Vec::with_capacity(message.headers.len() + 4);
    fields.push((BODY.into(), message.body.to_vec()));
    if let Some(key) = &message.key {
        fields.push((KEY.into(), key.to_vec()));
    }
    for (name, value) in [
        (MESSAGE_ID, &message.message_id),
        (CORRELATION_ID, &message.correlation_id),
        (REPLY_TO, &message.reply_to),
        (CONTENT_TYPE, &message.content_type),
    ] {
        if let Some(value) = value {
            fields.push((name.into(), value.as_bytes().to_vec()));
        }
    }
    if let Some(ms) = message
        .timestamp
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        fields.push((TIMESTAMP_MS.into(), ms.as_millis().to_string().into_bytes()));
    }
    for (name, value) in message.headers.iter() {
        let (prefix, bytes) = match value {
            HeaderValue::Text(text) => (TEXT_HEADER, text.as_bytes()),
            HeaderValue::Binary(bytes) => (BINARY_HEADER, bytes.as_ref()),
        };
        let mut field = Vec::with_capacity(prefix.len() + name.len());
        field.extend_from_slice(prefix.as_bytes());
        field.extend_from_slice(name.as_bytes());
        fields.push((field, bytes.to_vec()));
    }
    fields
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The message an entry holds; `id` is the entry id (`MS-SEQ`), whose time stands in for a
/// missing timestamp.
pub fn decode(id: &str, fields: Fields) -> Message {
    let mut message = Message::new(Bytes::new());
    for (name, value) in fields {
        match name.as_slice() {
            b"body" => message.body = Bytes::from(value),
            b"key" => message.key = Some(Bytes::from(value)),
            b"message-id" => message.message_id = Some(text(value)),
            b"correlation-id" => message.correlation_id = Some(text(value)),
            b"reply-to" => message.reply_to = Some(text(value)),
            b"content-type" => message.content_type = Some(text(value)),
            b"timestamp-ms" => {
                message.timestamp = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
            }
            _ => {
                if let Some(header) = name.strip_prefix(TEXT_HEADER.as_bytes()) {
                    let header = text(header.to_vec());
                    match String::from_utf8(value) {
                        Ok(value) => message.headers.push(header, value),
                        Err(e) => message.headers.push(header, e.into_bytes()),
                    }
                } else if let Some(header) = name.strip_prefix(BINARY_HEADER.as_bytes()) {
                    message.headers.push(text(header.to_vec()), value);
                } else {
                    // A field of another program's entry.
                    match String::from_utf8(value) {
                        Ok(value) => message.headers.push(text(name), value),
                        Err(e) => message.headers.push(text(name), e.into_bytes()),
                    }
                }
            }
        }
    }
    if message.timestamp.is_none() {
        message.timestamp = entry_time(id);
    }
    message
}

/// The time in an entry id (`MS-SEQ`).
pub fn entry_time(id: &str) -> Option<SystemTime> {
    let ms: u64 = id.split('-').next()?.parse().ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_comes_back_in_order() {
        let mut message = Message::new(vec![0u8, 0xff, b'x']);
        message.key = Some(Bytes::from_static(b"k\xff"));
        message.message_id = Some("m-1".into());
        message.correlation_id = Some("c".into());
        message.reply_to = Some("replies".into());
        message.content_type = Some("text/plain".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        message.headers.push("b", "2");
        message.headers.push("a", vec![1u8, 0xfe]);
        message.headers.push("b", "1");
        message.headers.push("h:tricky", "x");
        message.headers.push("", "empty name");
        let back = decode("1-0", encode(&message));
        assert_eq!(back, message);
    }

    #[test]
    fn another_programs_fields_become_headers() {
        let fields: Fields = vec![
            (b"order".to_vec(), b"42".to_vec()),
            (b"blob".to_vec(), vec![0xff]),
        ];
        let message = decode("1700000000000-3", fields);
        assert!(message.body.is_empty());
        assert_eq!(message.headers.get_text("order"), Some("42"));
        assert!(matches!(
            message.headers.get("blob"),
            Some(HeaderValue::Binary(_))
        ));
        assert_eq!(message.timestamp, entry_time("1700000000000-3"));
    }
}
