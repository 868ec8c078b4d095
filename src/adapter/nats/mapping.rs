//! Envelope <-> NATS message (payload and headers).
//!
//! | envelope | NATS |
//! |---|---|
//! | body | payload (bytes) |
//! | key | header `bridge-key`; a key that is not header text in `bridge-key-base64` |
//! | headers | headers of the same name, repeated names as repeated values in order; binary values base64, listed in `bridge-binary-headers`; text that a header cannot carry as written (line breaks, leading or trailing spaces) base64, listed in `bridge-base64-text-headers` |
//! | correlation id, reply-to, content type | headers `correlation-id`, `reply-to`, `content-type` |
//! | message id | header `Nats-Msg-Id` (JetStream's duplicate window removes resends) |
//! | timestamp | header `bridge-timestamp-ms`; else the time the stream stored it |
//! | origin | endpoint, stream sequence (offset), delivery count |
//!
//! The client keeps headers in a map, so names come back sorted (each name's values in
//! their order). A header name NATS cannot carry (empty, a space, a control or non-ASCII
//! character, `:`) is refused: a permanent error, so the message reaches the dead letter.
//! An application header named like an envelope header is not written when the message
//! has that field, so it can never shadow the field.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::message::{HeaderValue, Headers, Message, NameSet, reserved};

pub const CORRELATION_ID: &str = "correlation-id";
pub const REPLY_TO: &str = "reply-to";
pub const CONTENT_TYPE: &str = "content-type";
/// JetStream's own message id header.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
const ENCODED_KEY: &str = "bridge-key-base64";
/// Names of text headers sent base64 because a header cannot carry their values as
/// written (comma-separated, as `bridge-binary-headers`).
pub const BASE64_TEXT_HEADERS: &str = "bridge-base64-text-headers";

/// A message ready to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub payload: Bytes,
    /// As the client sends them; a name may repeat.
    pub headers: async_nats::HeaderMap,
}

/// Appends one header, or says why the client cannot carry it (names and values were
/// checked before, so this is a safety net, never a panic).
fn append(headers: &mut async_nats::HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let header: async_nats::HeaderName = name
        .parse()
        .map_err(|_| format!("header name `{name}` cannot be a NATS header name"))?;
    let value: async_nats::HeaderValue = value
        .parse()
        .map_err(|_| format!("header `{name}` cannot hold its value"))?;
    headers.append(header, value);
    Ok(())
}

/// Whether NATS carries `name` as a header name: printable ASCII without `:`.
pub fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// Whether a header carries `text` as written: the client trims values it receives and
/// a line break would end the header.
fn carries_as_written(text: &str) -> bool {
    !text.contains(['\r', '\n']) && text.trim() == text
}

/// Encodes `message`, or says why NATS cannot carry it.
pub fn encode(message: &Message) -> Result<Outgoing, String> {
    let mut headers = async_nats::HeaderMap::new();
    // The names written for envelope fields, which no application header may shadow.
    let mut envelope = NameSet::new();
    let fields = [
        (CORRELATION_ID, &message.correlation_id),
        (REPLY_TO, &message.reply_to),
        (MESSAGE_ID, &message.message_id),
        (CONTENT_TYPE, &message.content_type),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            if !carries_as_written(value) {
                return Err(format!(
                    "the {name} holds a line break or leading or trailing spaces, which a NATS header cannot carry"
                ));
            }
            append(&mut headers, name, value)?;
            envelope.insert(name);
        }
    }
    if let Some(key) = &message.key {
        match std::str::from_utf8(key) {
            Ok(text) if carries_as_written(text) => {
                append(&mut headers, reserved::KEY, text)?;
                envelope.insert(reserved::KEY);
            }
            _ => {
                append(&mut headers, ENCODED_KEY, &BASE64.encode(key))?;
                envelope.insert(ENCODED_KEY);
            }
        }
    }
    if let Some(ms) = message
        .timestamp
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        append(
            &mut headers,
            reserved::TIMESTAMP_MS,
            &ms.as_millis().to_string(),
        )?;
        envelope.insert(reserved::TIMESTAMP_MS);
    }
    // First the names whose values must be encoded (any value of the name), then the
    // headers in their order: two passes, each linear.
    let mut binary = NameSet::new();
    let mut base64_text = NameSet::new();
    for (name, value) in message.headers.iter() {
        if !valid_header_name(name) {
            return Err(format!(
                "header name `{name}` cannot be a NATS header name (printable ASCII without `:`)"
            ));
        }
        match value {
            HeaderValue::Binary(_) => {
                binary.insert(name);
            }
            HeaderValue::Text(text) if !carries_as_written(text) => {
                base64_text.insert(name);
            }
            HeaderValue::Text(_) => {}
        }
    }
    let mut binary_names: Vec<&str> = Vec::new();
    let mut base64_names: Vec<&str> = Vec::new();
    let mut listed = NameSet::new();
    for (name, value) in message.headers.iter() {
        let own_list = name == reserved::BINARY_HEADERS || name == BASE64_TEXT_HEADERS;
        if envelope.contains(name) || own_list {
            continue;
        }
        if binary.contains(name) || base64_text.contains(name) {
            if listed.insert(name) {
                if binary.contains(name) {
                    binary_names.push(name);
                } else {
                    base64_names.push(name);
                }
            }
            append(&mut headers, name, &BASE64.encode(value.as_bytes()))?;
        } else {
            append(&mut headers, name, value.as_text().unwrap_or_default())?;
        }
    }
    if !binary_names.is_empty() {
        append(
            &mut headers,
            reserved::BINARY_HEADERS,
            &reserved::join_names(binary_names),
        )?;
    }
    if !base64_names.is_empty() {
        append(
            &mut headers,
            BASE64_TEXT_HEADERS,
            &reserved::join_names(base64_names),
        )?;
    }
    Ok(Outgoing {
        payload: message.body.clone(),
        headers,
    })
}

/// Decodes a received payload and headers (no origin); `stored` is when the stream stored
/// the message, the timestamp of a message without `bridge-timestamp-ms`.
pub fn decode(
    payload: Bytes,
    mut received: Vec<(&str, &str)>,
    stored: Option<SystemTime>,
) -> Message {
    let mut message = Message::new(payload);
    // Stable: the values of one name keep their order.
    received.sort_by(|a, b| a.0.cmp(b.0));
    let list = |name: &str| -> Vec<String> {
        received
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| reserved::split_names(v))
            .collect()
    };
    let binary_names = list(reserved::BINARY_HEADERS);
    let base64_names = list(BASE64_TEXT_HEADERS);
    let binary: NameSet = binary_names.iter().map(String::as_str).collect();
    let base64_text: NameSet = base64_names.iter().map(String::as_str).collect();
    let mut out = Headers::new();
    for (name, value) in received.iter().copied() {
        match name {
            CORRELATION_ID => message.correlation_id = Some(value.to_owned()),
            REPLY_TO => message.reply_to = Some(value.to_owned()),
            MESSAGE_ID => message.message_id = Some(value.to_owned()),
            CONTENT_TYPE => message.content_type = Some(value.to_owned()),
            n if n == reserved::KEY => {
                message.key = Some(Bytes::copy_from_slice(value.as_bytes()));
            }
            ENCODED_KEY => match BASE64.decode(value) {
                Ok(key) => message.key = Some(Bytes::from(key)),
                Err(_) => out.push(name, value),
            },
            n if n == reserved::TIMESTAMP_MS => match value.parse::<u64>() {
                Ok(ms) => message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(ms)),
                Err(_) => out.push(name, value),
            },
            n if n == reserved::BINARY_HEADERS || n == BASE64_TEXT_HEADERS => {}
            _ if binary.contains(name) => match BASE64.decode(value) {
                Ok(bytes) => out.push(name, HeaderValue::Binary(Bytes::from(bytes))),
                Err(_) => out.push(name, value),
            },
            _ if base64_text.contains(name) => {
                match BASE64.decode(value).ok().map(String::from_utf8) {
                    Some(Ok(text)) => out.push(name, text),
                    _ => out.push(name, value),
                }
            }
            _ => out.push(name, value),
        }
    }
    if message.timestamp.is_none() {
        message.timestamp = stored;
    }
    message.headers = out;
    message
}

/// The received headers as name and value pairs, each name's values in order.
pub fn header_pairs(map: &async_nats::HeaderMap) -> Vec<(&str, &str)> {
    map.iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |value| (name.as_ref(), value.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_nats(message: &Message) -> Message {
        let out = encode(message).unwrap();
        decode(out.payload, header_pairs(&out.headers), None)
    }

    fn sorted(headers: &Headers) -> Vec<(String, HeaderValue)> {
        let mut all: Vec<(String, HeaderValue)> = headers
            .iter()
            .map(|(n, v)| (n.to_owned(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    #[test]
    fn the_whole_envelope_comes_back() {
        let mut message = Message::new(vec![0u8, 0xff, 1]);
        message.key = Some(Bytes::from_static(b"order-1"));
        message.headers.push("tenant", "acme");
        message.headers.push("tag", "a");
        message.headers.push("tag", "b");
        message.headers.push("blob", vec![0xffu8, 0, 1]);
        message.headers.push("multi-line", "one\r\ntwo ");
        message.correlation_id = Some("corr".into());
        message.reply_to = Some("replies.orders".into());
        message.message_id = Some("id-1".into());
        message.content_type = Some("application/json".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_790_000_000_321));
        let back = through_nats(&message);
        assert_eq!(back.body, message.body);
        assert_eq!(back.key, message.key);
        assert_eq!(sorted(&back.headers), sorted(&message.headers));
        assert_eq!(back.correlation_id, message.correlation_id);
        assert_eq!(back.reply_to, message.reply_to);
        assert_eq!(back.message_id, message.message_id);
        assert_eq!(back.content_type, message.content_type);
        assert_eq!(back.timestamp, message.timestamp);
    }

    #[test]
    fn a_key_that_is_not_header_text_travels_base64() {
        let mut message = Message::new("x");
        message.key = Some(Bytes::from_static(&[0xff, b'\n']));
        let out = encode(&message).unwrap();
        assert!(out.headers.get(ENCODED_KEY).is_some());
        assert_eq!(through_nats(&message).key, message.key);
    }

    #[test]
    fn names_nats_cannot_carry_are_refused_never_panicking() {
        for name in ["with space", "colon:name", "", "caf\u{e9}", "tab\t"] {
            let mut message = Message::new("x");
            message.headers.push(name, "v");
            assert!(encode(&message).is_err(), "{name:?}");
        }
    }

    #[test]
    fn an_application_header_never_shadows_an_envelope_field() {
        let mut message = Message::new("x");
        message.message_id = Some("real".into());
        message.headers.push(MESSAGE_ID, "forged");
        let out = encode(&message).unwrap();
        let ids: Vec<&str> = out
            .headers
            .get_all(MESSAGE_ID)
            .map(|v| v.as_str())
            .collect();
        assert_eq!(ids, ["real"]);
    }

    #[test]
    fn the_stored_time_stands_in_for_a_missing_timestamp() {
        let stored = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let message = decode(Bytes::from_static(b"x"), Vec::new(), Some(stored));
        assert_eq!(message.timestamp, Some(stored));
    }

    #[test]
    fn encoding_is_linear_in_headers() {
        crate::message::assert_linear("NATS encode and decode", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                message.headers.push(format!("h{i}"), vec![i as u8]);
            }
            let out = encode(&message).unwrap();
            decode(out.payload.clone(), header_pairs(&out.headers), None);
        });
    }
}
