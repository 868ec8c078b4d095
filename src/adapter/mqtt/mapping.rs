//! Envelope <-> MQTT message, both ways, linear in the headers.
//!
//! MQTT 5 (properties of the PUBLISH packet):
//!
//! | envelope | MQTT 5 |
//! |---|---|
//! | body | payload |
//! | headers | user properties in order (repeated names repeat); binary values base64, listed in `bridge-binary-headers` |
//! | correlation id | correlation data (bytes; data that is not UTF-8 also kept exactly in `bridge-mqtt-correlation-data`) |
//! | reply-to | response topic |
//! | content type | content type |
//! | header `mqtt-message-expiry` (seconds) | message expiry interval (what is left of it on receipt) |
//! | key | user property `bridge-key` (`bridge-key-base64` when not UTF-8) |
//! | message id | user property `bridge-message-id` |
//! | timestamp | user property `bridge-timestamp-ms`; else the time of receipt |
//!
//! MQTT 3.1.1 carries a payload and nothing else. A message that is only a body (and a
//! timestamp, which is not kept) is published as its body. Anything else is refused with
//! a permanent error, unless the connection says `pack: true`: then the message is
//! published as bridge's JSON message form (`crate::message::json`), and sources of a
//! `pack: true` connection read a payload in that form back into the message. A body that
//! itself reads as that form is packed too, so the rule is reversible. The loop guard's
//! `bridge-hops` header is dropped on MQTT 3.1.1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;

use crate::message::{HeaderValue, Headers, Message, NameSet, json, reserved};

pub const MESSAGE_ID: &str = "bridge-message-id";
const ENCODED_KEY: &str = "bridge-key-base64";
/// The exact bytes of correlation data that is not UTF-8.
pub const CORRELATION_DATA: &str = "bridge-mqtt-correlation-data";
/// The message expiry interval in seconds, as a header of the envelope.
pub const MESSAGE_EXPIRY: &str = "mqtt-message-expiry";

/// The payload and MQTT 5 properties for `message`.
pub fn encode_v5(message: &Message) -> (Bytes, PublishProperties) {
    let mut properties = PublishProperties::default();
    let mut user = Vec::with_capacity(message.headers.len() + 3);
    let mut envelope = NameSet::new();
    if let Some(key) = &message.key {
        match std::str::from_utf8(key) {
            Ok(text) => user.push((reserved::KEY.to_owned(), text.to_owned())),
            Err(_) => user.push((ENCODED_KEY.to_owned(), BASE64.encode(key))),
        }
        envelope.insert(reserved::KEY);
        envelope.insert(ENCODED_KEY);
    }
    if let Some(id) = &message.message_id {
        user.push((MESSAGE_ID.to_owned(), id.clone()));
        envelope.insert(MESSAGE_ID);
    }
    if let Some(ms) = message
        .timestamp
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        user.push((
            reserved::TIMESTAMP_MS.to_owned(),
            ms.as_millis().to_string(),
        ));
        envelope.insert(reserved::TIMESTAMP_MS);
    }
    if let Some(correlation_id) = &message.correlation_id {
        // Exact bytes that arrived as correlation data and are not UTF-8 go back as such.
        let exact = message
            .headers
            .get(CORRELATION_DATA)
            .filter(|bytes| String::from_utf8_lossy(bytes.as_bytes()) == correlation_id.as_str())
            .map(|bytes| Bytes::copy_from_slice(bytes.as_bytes()));
        properties.correlation_data =
            Some(exact.unwrap_or_else(|| Bytes::copy_from_slice(correlation_id.as_bytes())));
    }
    properties.response_topic = message.reply_to.clone();
    properties.content_type = message.content_type.clone();
    let mut binary = Vec::new();
    for (name, value) in message.headers.iter() {
        if envelope.contains(name) || name == reserved::BINARY_HEADERS || name == CORRELATION_DATA {
            continue;
        }
        if name == MESSAGE_EXPIRY
            && let Some(seconds) = value.as_text().and_then(|s| s.trim().parse().ok())
        {
            properties.message_expiry_interval = Some(seconds);
            continue;
        }
        match value {
            HeaderValue::Text(text) => user.push((name.to_owned(), text.clone())),
            HeaderValue::Binary(bytes) => {
                binary.push(name);
                user.push((name.to_owned(), BASE64.encode(bytes)));
            }
        }
    }
    if !binary.is_empty() {
        let mut listed = NameSet::new();
        binary.retain(|name| listed.insert(name));
        user.push((
            reserved::BINARY_HEADERS.to_owned(),
            reserved::join_names(binary),
        ));
    }
    properties.user_properties = user;
    (message.body.clone(), properties)
}

/// The message of a received MQTT 5 payload and properties (no origin).
pub fn decode_v5(payload: Bytes, properties: Option<PublishProperties>) -> Message {
    let mut message = Message::new(payload);
    let Some(properties) = properties else {
        message.timestamp = Some(SystemTime::now());
        return message;
    };
    let binary: Vec<String> = properties
        .user_properties
        .iter()
        .filter(|(name, _)| name == reserved::BINARY_HEADERS)
        .flat_map(|(_, value)| reserved::split_names(value))
        .collect();
    let binary: NameSet = binary.iter().map(String::as_str).collect();
    let mut headers = Headers::new();
    for (name, value) in properties.user_properties {
        match name.as_str() {
            n if n == reserved::KEY => message.key = Some(Bytes::from(value.into_bytes())),
            ENCODED_KEY => match BASE64.decode(&value) {
                Ok(key) => message.key = Some(Bytes::from(key)),
                Err(_) => headers.push(name, value),
            },
            MESSAGE_ID => message.message_id = Some(value),
            n if n == reserved::TIMESTAMP_MS => match value.parse::<u64>() {
                Ok(ms) => message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(ms)),
                Err(_) => headers.push(name, value),
            },
            n if n == reserved::BINARY_HEADERS => {}
            n if binary.contains(n) => match BASE64.decode(&value) {
                Ok(bytes) => headers.push(name, HeaderValue::Binary(Bytes::from(bytes))),
                Err(_) => headers.push(name, value),
            },
            _ => headers.push(name, value),
        }
    }
    if let Some(data) = properties.correlation_data {
        match String::from_utf8(data.to_vec()) {
            Ok(text) => message.correlation_id = Some(text),
            Err(e) => {
                message.correlation_id = Some(String::from_utf8_lossy(e.as_bytes()).into_owned());
                headers.push(CORRELATION_DATA, HeaderValue::Binary(data));
            }
        }
    }
    if let Some(seconds) = properties.message_expiry_interval {
        headers.push(MESSAGE_EXPIRY, seconds.to_string());
    }
    message.reply_to = properties.response_topic;
    message.content_type = properties.content_type;
    message.headers = headers;
    if message.timestamp.is_none() {
        message.timestamp = Some(SystemTime::now());
    }
    message
}

/// What a 3.1.1 payload cannot hold of `message`, by name (empty: the body alone will do).
fn beyond_the_body(message: &Message) -> Vec<&'static str> {
    let mut extra = Vec::new();
    if message
        .headers
        .iter()
        .any(|(name, _)| name != reserved::HOPS)
    {
        extra.push("headers");
    }
    for (present, what) in [
        (message.key.is_some(), "a key"),
        (message.correlation_id.is_some(), "a correlation id"),
        (message.reply_to.is_some(), "a reply-to"),
        (message.message_id.is_some(), "a message id"),
        (message.content_type.is_some(), "a content type"),
    ] {
        if present {
            extra.push(what);
        }
    }
    extra
}

/// Whether `payload` reads as bridge's JSON message form.
fn is_packed(payload: &[u8]) -> bool {
    payload.first() == Some(&b'{')
        && std::str::from_utf8(payload).is_ok_and(|text| json::decode(text).is_ok())
}

/// The MQTT 3.1.1 payload for `message`, or why it cannot be one.
pub fn encode_v311(message: &Message, pack: bool) -> Result<Bytes, String> {
    let extra = beyond_the_body(message);
    if extra.is_empty() && !(pack && is_packed(&message.body)) {
        return Ok(message.body.clone());
    }
    if !pack {
        return Err(format!(
            "MQTT 3.1.1 carries only a payload, and this message has {}: set `pack: true` on the connection (bridge's JSON form), remove them with a transform, or use `protocol: \"5\"`",
            extra.join(", ")
        ));
    }
    let mut packed = message.without_origin();
    packed.headers.remove(reserved::HOPS);
    Ok(Bytes::from(json::encode(&packed)))
}

/// The message of a received MQTT 3.1.1 payload (no origin).
pub fn decode_v311(payload: Bytes, pack: bool) -> Message {
    if pack
        && is_packed(&payload)
        && let Ok(message) = json::decode(std::str::from_utf8(&payload).unwrap_or_default())
    {
        return message;
    }
    let mut message = Message::new(payload);
    message.timestamp = Some(SystemTime::now());
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rich() -> Message {
        let mut message = Message::new(vec![0u8, 159, 146, 150]);
        message.key = Some(Bytes::from_static(b"k1"));
        message.headers.push("text", "value\nwith a line break");
        message.headers.push("binary", vec![0u8, 0xfe]);
        message.headers.push("text", "again");
        message.correlation_id = Some("corr".into());
        message.reply_to = Some("replies/1".into());
        message.message_id = Some("m-1".into());
        message.content_type = Some("application/octet-stream".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_750_000_000_250));
        message
    }

    #[test]
    fn v5_round_trip_keeps_everything() {
        let sent = rich();
        let (payload, properties) = encode_v5(&sent);
        let received = decode_v5(payload, Some(properties));
        assert_eq!(received, sent);
    }

    #[test]
    fn v5_binary_key_and_correlation_data_come_back_exactly() {
        let mut sent = Message::new("x");
        sent.key = Some(Bytes::from_static(&[0xff, 0]));
        sent.timestamp = Some(UNIX_EPOCH);
        let (payload, properties) = encode_v5(&sent);
        assert_eq!(decode_v5(payload, Some(properties)), sent);
        let properties = PublishProperties {
            correlation_data: Some(Bytes::from_static(&[0xff, 1])),
            ..PublishProperties::default()
        };
        let received = decode_v5(Bytes::new(), Some(properties));
        let (_, again) = encode_v5(&received);
        assert_eq!(again.correlation_data, Some(Bytes::from_static(&[0xff, 1])));
    }

    #[test]
    fn v5_expiry_travels_as_a_property() {
        let mut sent = Message::new("x");
        sent.headers.push(MESSAGE_EXPIRY, "60");
        let (_, properties) = encode_v5(&sent);
        assert_eq!(properties.message_expiry_interval, Some(60));
        assert!(properties.user_properties.is_empty());
    }

    #[test]
    fn v311_refuses_or_packs_what_a_payload_cannot_hold() {
        let sent = rich();
        let refusal = encode_v311(&sent, false).unwrap_err();
        assert!(refusal.contains("headers, a key"), "{refusal}");
        assert!(refusal.contains("pack: true"), "{refusal}");
        let packed = encode_v311(&sent, true).unwrap();
        assert_eq!(decode_v311(packed, true), sent);
        let mut plain = Message::new("just a body");
        plain.headers.push(reserved::HOPS, "1");
        assert_eq!(encode_v311(&plain, false).unwrap(), "just a body");
    }

    #[test]
    fn v311_a_body_that_looks_packed_is_packed_again() {
        let inner = Bytes::from(json::encode(&Message::new("inner")));
        let sent = Message::new(inner.clone());
        let payload = encode_v311(&sent, true).unwrap();
        assert_ne!(payload, inner);
        assert_eq!(decode_v311(payload, true).body, inner);
        // Without `pack`, a payload is only ever a body.
        assert_eq!(decode_v311(inner.clone(), false).body, inner);
    }

    #[test]
    fn mapping_is_linear_in_headers() {
        crate::message::assert_linear("the MQTT 5 mapping", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                message.headers.push(format!("h{i}"), vec![i as u8]);
            }
            let (payload, properties) = encode_v5(&message);
            decode_v5(payload, Some(properties));
        });
    }
}
