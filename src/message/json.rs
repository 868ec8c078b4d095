//! The stable JSON form of a message: one object per line, used by the `stdout` sink, the
//! `stdin` source in `json` mode and `bridge tail --json`.
//!
//! Text stays readable and bytes stay exact: a body, key or header value that is valid UTF-8
//! is written as a string (`body`, `key`, `text`), anything else as base64 (`body_base64`,
//! `key_base64`, `base64`). Decoding accepts exactly what encoding produces, so the form is
//! reversible; `origin` is informational and ignored on input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{HeaderValue, Headers, Message, Origin, OriginValue};

#[derive(Debug, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct JsonMessage {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(default)]
    headers: Vec<JsonHeader>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<JsonOrigin>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHeader {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

/// The `origin` of a JSON message, as written.
#[derive(Debug, Serialize, Deserialize)]
pub struct JsonOrigin {
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receive_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_message_id: Option<String>,
    /// The system's own delivery fields, beside the common ones.
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// Why a JSON line could not be turned into a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a JSON message object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("field `{field}` is not valid base64: {source}")]
    Base64 {
        field: &'static str,
        source: base64::DecodeError,
    },
    #[error("`{0}` and `{0}_base64` are both set; give one")]
    Both(&'static str),
    #[error("header `{0}` needs exactly one of `text` or `base64`")]
    HeaderValue(String),
    #[error("timestamp `{0}` is not RFC 3339")]
    Timestamp(String),
}

fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

fn decode_base64(field: &'static str, value: &str) -> Result<Bytes, DecodeError> {
    BASE64
        .decode(value)
        .map(Bytes::from)
        .map_err(|source| DecodeError::Base64 { field, source })
}

fn bytes_field(
    field: &'static str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Bytes>, DecodeError> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(DecodeError::Both(field)),
        (Some(text), None) => Ok(Some(Bytes::from(text))),
        (None, Some(encoded)) => decode_base64(field, &encoded).map(Some),
        (None, None) => Ok(None),
    }
}

/// Formats a time as RFC 3339 with milliseconds, in UTC. RFC 3339 holds the years 1970 to
/// 9999 only, so a time outside them (a broker can carry any number) is written as the
/// nearest of the two bounds rather than failing.
pub fn format_time(time: SystemTime) -> String {
    let latest = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    humantime::format_rfc3339_millis(time.clamp(UNIX_EPOCH, latest)).to_string()
}

/// Encodes a message as one line of JSON (without the trailing newline).
pub fn encode(message: &Message) -> String {
    let (body, body_base64) = text_or_base64(&message.body);
    let (key, key_base64) = match &message.key {
        Some(key) => text_or_base64(key),
        None => (None, None),
    };
    let headers = message
        .headers
        .iter()
        .map(|(name, value)| match value {
            HeaderValue::Text(text) => JsonHeader {
                name: name.to_owned(),
                text: Some(text.clone()),
                base64: None,
            },
            HeaderValue::Binary(bytes) => JsonHeader {
                name: name.to_owned(),
                text: None,
                base64: Some(BASE64.encode(bytes)),
            },
        })
        .collect();
    let origin = message.origin().map(|o: &Origin| JsonOrigin {
        endpoint: o.endpoint.clone(),
        partition: o.partition,
        offset: o.offset,
        receive_count: o.receive_count,
        broker_message_id: o.broker_message_id.clone(),
        fields: o
            .fields
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    OriginValue::Text(text) => serde_json::Value::from(&**text),
                    OriginValue::Int(n) => serde_json::Value::from(*n),
                    OriginValue::Bool(b) => serde_json::Value::from(*b),
                };
                ((*name).to_owned(), value)
            })
            .collect(),
    });
    let json = JsonMessage {
        body,
        body_base64,
        key,
        key_base64,
        headers,
        correlation_id: message.correlation_id.clone(),
        reply_to: message.reply_to.clone(),
        message_id: message.message_id.clone(),
        content_type: message.content_type.clone(),
        timestamp: message.timestamp.map(format_time),
        origin,
    };
    serde_json::to_string(&json).expect("a JSON message always serializes")
}

/// Decodes one JSON line produced by [`encode`] (the `origin` field is ignored).
pub fn decode(line: &str) -> Result<Message, DecodeError> {
    let json: JsonMessage = serde_json::from_str(line)?;
    message_of(json)
}

/// Decodes a JSON message with its `origin` as written, for the commands that replay a
/// received message (`explain`, `test`); the caller checks the origin's fields against
/// the source's system.
pub fn decode_received(text: &str) -> Result<(Message, Option<JsonOrigin>), DecodeError> {
    let mut json: JsonMessage = serde_json::from_str(text)?;
    let origin = json.origin.take();
    Ok((message_of(json)?, origin))
}

fn message_of(json: JsonMessage) -> Result<Message, DecodeError> {
    let body = bytes_field("body", json.body, json.body_base64)?.unwrap_or_default();
    let key = bytes_field("key", json.key, json.key_base64)?;
    let mut headers = Headers::new();
    for header in json.headers {
        let value = match (header.text, header.base64) {
            (Some(text), None) => HeaderValue::Text(text),
            (None, Some(encoded)) => HeaderValue::Binary(decode_base64("headers", &encoded)?),
            _ => return Err(DecodeError::HeaderValue(header.name)),
        };
        headers.push(header.name, value);
    }
    let timestamp = match json.timestamp {
        Some(text) => {
            Some(humantime::parse_rfc3339_weak(&text).map_err(|_| DecodeError::Timestamp(text))?)
        }
        None => None,
    };
    Ok(Message {
        body,
        headers,
        key,
        correlation_id: json.correlation_id,
        reply_to: json.reply_to,
        message_id: json.message_id,
        content_type: json.content_type,
        timestamp,
        origin: None,
        dedup_identity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn binary_and_text_fields_round_trip() {
        let mut message = Message::new(vec![0u8, 159, 146, 150]);
        message.key = Some(Bytes::from_static(b"order-1"));
        message.headers.push("text", "v");
        message.headers.push("bin", vec![0xffu8, 0]);
        message.correlation_id = Some("c-1".into());
        message.reply_to = Some("rabbit:queue/replies".into());
        message.message_id = Some("m-1".into());
        message.content_type = Some("application/octet-stream".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let line = encode(&message);
        assert!(line.contains("\"body_base64\""));
        assert_eq!(decode(&line).unwrap(), message);
    }

    #[test]
    fn utf8_body_is_written_as_text() {
        let line = encode(&Message::new("héllo"));
        assert_eq!(line, r#"{"body":"héllo","headers":[]}"#);
    }

    #[test]
    fn header_with_both_encodings_is_refused() {
        let err = decode(r#"{"headers":[{"name":"a","text":"x","base64":"eA=="}]}"#).unwrap_err();
        assert!(err.to_string().contains("header `a`"), "{err}");
    }
}
