//! Envelope <-> Pub/Sub message.
//!
//! | envelope | Pub/Sub |
//! |---|---|
//! | body | data (bytes) |
//! | key | ordering key (text up to 1024 bytes); other keys in attribute `bridge-key-base64` |
//! | headers | attributes of the same name; binary values base64-encoded and listed in `bridge-binary-headers` |
//! | correlation id, reply-to, message id, content type | attributes `correlation-id`, `reply-to`, `message-id`, `content-type` |
//! | timestamp | attribute `bridge-timestamp-ms`; else the publish time |
//! | origin | subscription, delivery attempt (with a dead-letter policy), Pub/Sub message id |
//!
//! Attributes are a map of strings, so headers come back ordered by name. A message whose
//! header names repeat, or that breaks one of Pub/Sub's limits (100 attributes, names up
//! to 256 bytes, values up to 1024 bytes, 10 MB in all), is refused before sending: a
//! permanent error, so it reaches the dead letter instead of being cut down.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::message::{HeaderValue, Headers, Message, reserved};

pub const CORRELATION_ID: &str = "correlation-id";
pub const REPLY_TO: &str = "reply-to";
pub const MESSAGE_ID: &str = "message-id";
pub const CONTENT_TYPE: &str = "content-type";
const ENCODED_KEY: &str = "bridge-key-base64";

/// Pub/Sub's limits on a published message.
pub const MAX_ATTRIBUTES: usize = 100;
pub const MAX_ATTRIBUTE_NAME: usize = 256;
pub const MAX_ATTRIBUTE_VALUE: usize = 1024;
pub const MAX_ORDERING_KEY: usize = 1024;
pub const MAX_MESSAGE_BYTES: usize = 10_000_000;

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub data: Bytes,
    pub attributes: Vec<(String, String)>,
    pub ordering_key: String,
}

/// Encodes `message`, or says which Pub/Sub limit it breaks.
pub fn encode(message: &Message) -> Result<Outgoing, String> {
    let mut attributes: Vec<(String, String)> = Vec::new();
    let fields = [
        (CORRELATION_ID, &message.correlation_id),
        (REPLY_TO, &message.reply_to),
        (MESSAGE_ID, &message.message_id),
        (CONTENT_TYPE, &message.content_type),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            attributes.push((name.to_owned(), value.clone()));
        }
    }
    let ordering_key = match message.key.as_deref().map(std::str::from_utf8) {
        Some(Ok(key)) if key.len() <= MAX_ORDERING_KEY => key.to_owned(),
        Some(_) => {
            attributes.push((
                ENCODED_KEY.into(),
                BASE64.encode(message.key.as_deref().unwrap_or_default()),
            ));
            String::new()
        }
        None => String::new(),
    };
    if let Some(ms) = message
        .timestamp
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        attributes.push((reserved::TIMESTAMP_MS.into(), ms.as_millis().to_string()));
    }
    let mut binary = Vec::new();
    for (name, value) in message.headers.iter() {
        if attributes.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "header `{name}` occurs twice or shadows an envelope field; Pub/Sub attributes are a map"
            ));
        }
        let text = match value {
            HeaderValue::Text(text) => text.clone(),
            HeaderValue::Binary(bytes) => {
                binary.push(name);
                BASE64.encode(bytes)
            }
        };
        attributes.push((name.to_owned(), text));
    }
    if !binary.is_empty() {
        attributes.push((
            reserved::BINARY_HEADERS.into(),
            reserved::join_names(binary),
        ));
    }
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes; Pub/Sub allows {MAX_ATTRIBUTES}",
            attributes.len()
        ));
    }
    for (name, value) in &attributes {
        if name.is_empty() || name.len() > MAX_ATTRIBUTE_NAME || name.starts_with("goog") {
            return Err(format!(
                "attribute name `{name}` is not allowed by Pub/Sub (1-256 bytes, no `goog` prefix)"
            ));
        }
        if value.len() > MAX_ATTRIBUTE_VALUE {
            return Err(format!(
                "attribute `{name}` is {} bytes; Pub/Sub allows {MAX_ATTRIBUTE_VALUE}",
                value.len()
            ));
        }
    }
    let size = message.body.len()
        + ordering_key.len()
        + attributes
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(format!(
            "message is {size} bytes; Pub/Sub allows {MAX_MESSAGE_BYTES}"
        ));
    }
    Ok(Outgoing {
        data: message.body.clone(),
        attributes,
        ordering_key,
    })
}

/// Decodes received data, attributes and ordering key (no origin).
pub fn decode(
    data: Bytes,
    attributes: &HashMap<String, String>,
    ordering_key: &str,
    publish_time: Option<std::time::SystemTime>,
) -> Message {
    let mut message = Message::new(data);
    let mut sorted: Vec<(&String, &String)> = attributes.iter().collect();
    sorted.sort();
    let binary: Vec<String> = attributes
        .get(reserved::BINARY_HEADERS)
        .map(|list| reserved::split_names(list))
        .unwrap_or_default();
    let mut headers = Headers::new();
    for (name, value) in sorted {
        match name.as_str() {
            CORRELATION_ID => message.correlation_id = Some(value.clone()),
            REPLY_TO => message.reply_to = Some(value.clone()),
            MESSAGE_ID => message.message_id = Some(value.clone()),
            CONTENT_TYPE => message.content_type = Some(value.clone()),
            ENCODED_KEY => match BASE64.decode(value) {
                Ok(key) => message.key = Some(Bytes::from(key)),
                Err(_) => headers.push(name.clone(), value.clone()),
            },
            n if n == reserved::TIMESTAMP_MS => match value.parse::<u64>() {
                Ok(ms) => message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(ms)),
                Err(_) => headers.push(name.clone(), value.clone()),
            },
            n if n == reserved::BINARY_HEADERS => {}
            _ if binary.contains(name) => match BASE64.decode(value) {
                Ok(bytes) => headers.push(name.clone(), HeaderValue::Binary(Bytes::from(bytes))),
                Err(_) => headers.push(name.clone(), value.clone()),
            },
            _ => headers.push(name.clone(), value.clone()),
        }
    }
    if !ordering_key.is_empty() {
        message.key = Some(Bytes::copy_from_slice(ordering_key.as_bytes()));
    }
    if message.timestamp.is_none() {
        message.timestamp = publish_time;
    }
    message.headers = headers;
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_pubsub(message: &Message) -> Message {
        let out = encode(message).unwrap();
        let attributes: HashMap<String, String> = out.attributes.into_iter().collect();
        decode(out.data, &attributes, &out.ordering_key, None)
    }

    #[test]
    fn envelope_survives_a_round_trip_with_headers_sorted() {
        let mut message = Message::new(vec![0u8, 255]);
        message.key = Some("k".into());
        message.headers.push("z-text", "v");
        message.headers.push("a-bin", vec![b'o', b'k']);
        message.correlation_id = Some("c".into());
        message.reply_to = Some("gcp:topic/replies".into());
        message.message_id = Some("m".into());
        message.content_type = Some("application/json".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let back = through_pubsub(&message);
        let names: Vec<&str> = back.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["a-bin", "z-text"]);
        assert_eq!(
            back.headers.get("a-bin"),
            Some(&HeaderValue::Binary("ok".into()))
        );
        assert_eq!(
            (back.key, back.correlation_id, back.timestamp),
            (message.key, message.correlation_id, message.timestamp)
        );
    }

    #[test]
    fn keys_that_cannot_be_ordering_keys_travel_as_an_attribute() {
        let mut message = Message::new("x");
        message.key = Some(vec![0xffu8, 0].into());
        let out = encode(&message).unwrap();
        assert!(out.ordering_key.is_empty());
        assert_eq!(through_pubsub(&message).key, message.key);
    }

    #[test]
    fn limits_are_refused_before_sending() {
        let mut long = Message::new("x");
        long.headers
            .push("big", "v".repeat(MAX_ATTRIBUTE_VALUE + 1));
        assert!(encode(&long).unwrap_err().contains("1024"));
        let mut twice = Message::new("x");
        twice.headers.push("a", "1");
        twice.headers.push("a", "2");
        assert!(encode(&twice).unwrap_err().contains("twice"));
        let mut many = Message::new("x");
        for n in 0..101 {
            many.headers.push(format!("h{n}"), "v");
        }
        assert!(encode(&many).is_err());
    }
}
