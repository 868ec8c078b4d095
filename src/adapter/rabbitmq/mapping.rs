//! Envelope <-> AMQP 0-9-1 message.
//!
//! | envelope | AMQP |
//! |---|---|
//! | body | body |
//! | headers | `headers` table: text as long strings, binary as byte arrays |
//! | key | header `bridge-key` (AMQP messages have no key) |
//! | correlation id, reply-to, message id, content type | the properties of the same names |
//! | timestamp | `timestamp` (seconds); milliseconds kept in `bridge-timestamp-ms` |
//! | priority, expiration, content encoding, delivery mode, type, app id, cluster id | headers `bridge-amqp-priority`, `bridge-amqp-expiration`, ... and back |
//! | user id | header `bridge-amqp-user-id`; kept as a header when publishing, because RabbitMQ refuses a user id other than the connection's |
//! | origin | queue, redelivered flag or `x-delivery-count` as receive count |
//!
//! AMQP header tables are maps: headers come back ordered by name. A name that occurs
//! several times is sent as one array of its values, marked `Repeated`, and split again on
//! the way in, so no value is lost.
//!
//! Header values of other AMQP types (integers, booleans, decimals, timestamps, nested
//! tables and arrays such as `x-death`) become text: scalars in their natural form, tables
//! and arrays as typed JSON; the original type of each is recorded in `bridge-amqp-types`
//! (a JSON object of name to type) so a RabbitMQ sink restores them exactly. A sink
//! publishes persistent messages (delivery mode 2) unless the message says otherwise.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};

use crate::message::{HeaderValue, Headers, Message, Origin, reserved};

pub const TYPES: &str = "bridge-amqp-types";
/// Type tag of a header name that occurred several times.
const REPEATED: &str = "Repeated";
const PRIORITY: &str = "bridge-amqp-priority";
const EXPIRATION: &str = "bridge-amqp-expiration";
const CONTENT_ENCODING: &str = "bridge-amqp-content-encoding";
const DELIVERY_MODE: &str = "bridge-amqp-delivery-mode";
const TYPE: &str = "bridge-amqp-type";
const USER_ID: &str = "bridge-amqp-user-id";
const APP_ID: &str = "bridge-amqp-app-id";
const CLUSTER_ID: &str = "bridge-amqp-cluster-id";
const PERSISTENT: u8 = 2;

/// A header value as text plus the AMQP type to restore, for non-string values.
fn typed_to_text(value: &AMQPValue) -> Option<(String, &'static str)> {
    Some(match value {
        AMQPValue::Boolean(v) => (v.to_string(), "Boolean"),
        AMQPValue::ShortShortInt(v) => (v.to_string(), "ShortShortInt"),
        AMQPValue::ShortShortUInt(v) => (v.to_string(), "ShortShortUInt"),
        AMQPValue::ShortInt(v) => (v.to_string(), "ShortInt"),
        AMQPValue::ShortUInt(v) => (v.to_string(), "ShortUInt"),
        AMQPValue::LongInt(v) => (v.to_string(), "LongInt"),
        AMQPValue::LongUInt(v) => (v.to_string(), "LongUInt"),
        AMQPValue::LongLongInt(v) => (v.to_string(), "LongLongInt"),
        AMQPValue::Float(v) => (v.to_string(), "Float"),
        AMQPValue::Double(v) => (v.to_string(), "Double"),
        AMQPValue::Timestamp(v) => (v.to_string(), "Timestamp"),
        AMQPValue::Void => (String::new(), "Void"),
        AMQPValue::ShortString(v) => (v.as_str().to_owned(), "ShortString"),
        AMQPValue::DecimalValue(_) | AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) => {
            let json = match value {
                AMQPValue::FieldTable(table) => serde_json::to_string(table),
                AMQPValue::FieldArray(array) => serde_json::to_string(array),
                other => serde_json::to_string(other),
            };
            let kind = match value {
                AMQPValue::FieldTable(_) => "FieldTable",
                AMQPValue::FieldArray(_) => "FieldArray",
                _ => "DecimalValue",
            };
            (json.ok()?, kind)
        }
        AMQPValue::LongString(_) | AMQPValue::ByteArray(_) => return None,
    })
}

/// The AMQP value of text that was recorded with `kind`; `None` when it no longer parses.
fn text_to_typed(text: &str, kind: &str) -> Option<AMQPValue> {
    Some(match kind {
        "Boolean" => AMQPValue::Boolean(text.parse().ok()?),
        "ShortShortInt" => AMQPValue::ShortShortInt(text.parse().ok()?),
        "ShortShortUInt" => AMQPValue::ShortShortUInt(text.parse().ok()?),
        "ShortInt" => AMQPValue::ShortInt(text.parse().ok()?),
        "ShortUInt" => AMQPValue::ShortUInt(text.parse().ok()?),
        "LongInt" => AMQPValue::LongInt(text.parse().ok()?),
        "LongUInt" => AMQPValue::LongUInt(text.parse().ok()?),
        "LongLongInt" => AMQPValue::LongLongInt(text.parse().ok()?),
        "Float" => AMQPValue::Float(text.parse().ok()?),
        "Double" => AMQPValue::Double(text.parse().ok()?),
        "Timestamp" => AMQPValue::Timestamp(text.parse().ok()?),
        "Void" => AMQPValue::Void,
        "ShortString" => AMQPValue::ShortString(ShortString::from(text)),
        "FieldTable" => AMQPValue::FieldTable(serde_json::from_str::<FieldTable>(text).ok()?),
        "FieldArray" => AMQPValue::FieldArray(serde_json::from_str::<FieldArray>(text).ok()?),
        "DecimalValue" => serde_json::from_str::<AMQPValue>(text).ok()?,
        "LongString" => AMQPValue::LongString(LongString::from(text.as_bytes().to_vec())),
        _ => return None,
    })
}

fn text(value: &Option<ShortString>) -> Option<String> {
    value.as_ref().map(|v| v.as_str().to_owned())
}

/// The envelope of a consumed AMQP delivery.
pub fn incoming(delivery: &Delivery, endpoint: &str) -> Message {
    let properties = &delivery.properties;
    let mut message = Message::new(Bytes::copy_from_slice(&delivery.data));
    message.correlation_id = text(properties.correlation_id());
    message.reply_to = text(properties.reply_to());
    message.message_id = text(properties.message_id());
    message.content_type = text(properties.content_type());
    let mut headers = Headers::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut delivery_count = None;
    let mut timestamp_ms = None;
    let recorded: BTreeMap<String, String> = properties
        .headers()
        .as_ref()
        .and_then(|table| table.inner().get(TYPES))
        .and_then(|value| serde_json::from_slice(amqp_bytes(value)).ok())
        .unwrap_or_default();
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            let name = name.as_str();
            if name == TYPES {
                continue;
            }
            if recorded.get(name).is_some_and(|kind| kind == REPEATED)
                && let AMQPValue::FieldArray(values) = value
            {
                for item in values.as_slice() {
                    let value = match item {
                        AMQPValue::ByteArray(bytes) => {
                            HeaderValue::Binary(Bytes::copy_from_slice(bytes.as_slice()))
                        }
                        other => HeaderValue::from_untyped(amqp_bytes(other)),
                    };
                    headers.push(name, value);
                }
                continue;
            }
            if name == reserved::KEY {
                message.key = Some(Bytes::copy_from_slice(amqp_bytes(value)));
                continue;
            }
            if name == reserved::TIMESTAMP_MS {
                timestamp_ms = std::str::from_utf8(amqp_bytes(value))
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok());
                continue;
            }
            if name == "x-delivery-count" {
                delivery_count = match value {
                    AMQPValue::LongInt(n) => u32::try_from(*n).ok(),
                    AMQPValue::LongLongInt(n) => u32::try_from(*n).ok(),
                    _ => None,
                };
            }
            let header = match value {
                AMQPValue::LongString(bytes) => HeaderValue::from_untyped(bytes.as_bytes()),
                AMQPValue::ByteArray(bytes) => {
                    HeaderValue::Binary(Bytes::copy_from_slice(bytes.as_slice()))
                }
                other => match typed_to_text(other) {
                    Some((text, kind)) => {
                        types.insert(name.to_owned(), kind.to_owned());
                        HeaderValue::Text(text)
                    }
                    None => continue,
                },
            };
            if let (AMQPValue::LongString(_), HeaderValue::Binary(_)) = (value, &header) {
                types.insert(name.to_owned(), "LongString".into());
            }
            headers.push(name, header);
        }
    }
    let extras = [
        (PRIORITY, properties.priority().map(|v| v.to_string())),
        (EXPIRATION, text(properties.expiration())),
        (CONTENT_ENCODING, text(properties.content_encoding())),
        (
            DELIVERY_MODE,
            properties
                .delivery_mode()
                .filter(|m| *m != PERSISTENT)
                .map(|v| v.to_string()),
        ),
        (TYPE, text(properties.kind())),
        (USER_ID, text(properties.user_id())),
        (APP_ID, text(properties.app_id())),
        (CLUSTER_ID, text(properties.cluster_id())),
    ];
    for (name, value) in extras {
        if let Some(value) = value {
            headers.push(name, HeaderValue::Text(value));
        }
    }
    if !types.is_empty() {
        let json = serde_json::to_string(&types).expect("a map of strings serializes");
        headers.push(TYPES, HeaderValue::Text(json));
    }
    message.headers = headers;
    message.timestamp = match (properties.timestamp(), timestamp_ms) {
        (Some(seconds), Some(ms)) if ms / 1000 == *seconds => {
            Some(UNIX_EPOCH + Duration::from_millis(ms))
        }
        (Some(seconds), _) => Some(UNIX_EPOCH + Duration::from_secs(*seconds)),
        (None, _) => None,
    };
    let receive_count = delivery_count
        .map(|n| n + 1)
        .unwrap_or(if delivery.redelivered { 2 } else { 1 });
    message.with_origin(Origin {
        endpoint: endpoint.to_owned(),
        receive_count: Some(receive_count),
        ..Origin::default()
    })
}

fn amqp_bytes(value: &AMQPValue) -> &[u8] {
    match value {
        AMQPValue::LongString(s) => s.as_bytes(),
        AMQPValue::ByteArray(b) => b.as_slice(),
        AMQPValue::ShortString(s) => s.as_str().as_bytes(),
        _ => &[],
    }
}

/// The default AMQP form of a header value.
fn plain(value: &HeaderValue) -> AMQPValue {
    match value {
        HeaderValue::Text(text) => {
            AMQPValue::LongString(LongString::from(text.as_bytes().to_vec()))
        }
        HeaderValue::Binary(bytes) => AMQPValue::ByteArray(ByteArray::from(bytes.to_vec())),
    }
}

fn short(value: &str) -> ShortString {
    ShortString::from(value)
}

/// AMQP "short strings" hold at most 255 bytes.
const SHORT_STRING_MAX: usize = 255;

/// Refuses a message whose properties or header names do not fit AMQP short strings
/// (a permanent error: the same message would always fail).
pub fn check_short_strings(message: &Message) -> Result<(), String> {
    let fields = [
        ("correlation id", message.correlation_id.as_deref()),
        ("reply-to", message.reply_to.as_deref()),
        ("message id", message.message_id.as_deref()),
        ("content type", message.content_type.as_deref()),
    ];
    let promoted = [EXPIRATION, CONTENT_ENCODING, TYPE, APP_ID, CLUSTER_ID]
        .map(|name| (name, message.headers.get_text(name)));
    for (what, value) in fields.into_iter().chain(promoted) {
        if let Some(value) = value
            && value.len() > SHORT_STRING_MAX
        {
            return Err(format!(
                "the {what} is {} bytes; AMQP allows at most {SHORT_STRING_MAX}",
                value.len()
            ));
        }
    }
    if let Some((name, _)) = message
        .headers
        .iter()
        .find(|(name, _)| name.len() > SHORT_STRING_MAX)
    {
        return Err(format!(
            "header name `{}...` is longer than {SHORT_STRING_MAX} bytes",
            name.chars().take(32).collect::<String>()
        ));
    }
    Ok(())
}

/// Properties (with the headers table) for publishing `message`.
pub fn outgoing(message: &Message) -> BasicProperties {
    let types: BTreeMap<String, String> = message
        .headers
        .get_text(TYPES)
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default();
    let mut table = FieldTable::default();
    let mut grouped: BTreeMap<&str, Vec<AMQPValue>> = BTreeMap::new();
    let mut repeated = Vec::new();
    let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    for (name, value) in message.headers.iter() {
        let text = value.as_text();
        match (name, text) {
            (TYPES, _) => continue,
            (PRIORITY, Some(v)) if v.parse::<u8>().is_ok() => {
                properties = properties.with_priority(v.parse().unwrap_or_default());
                continue;
            }
            (EXPIRATION, Some(v)) => {
                properties = properties.with_expiration(short(v));
                continue;
            }
            (CONTENT_ENCODING, Some(v)) => {
                properties = properties.with_content_encoding(short(v));
                continue;
            }
            (DELIVERY_MODE, Some(v)) if v.parse::<u8>().is_ok() => {
                properties = properties.with_delivery_mode(v.parse().unwrap_or(PERSISTENT));
                continue;
            }
            (TYPE, Some(v)) => {
                properties = properties.with_type(short(v));
                continue;
            }
            (APP_ID, Some(v)) => {
                properties = properties.with_app_id(short(v));
                continue;
            }
            (CLUSTER_ID, Some(v)) => {
                properties = properties.with_cluster_id(short(v));
                continue;
            }
            _ => {}
        }
        let restored = types.get(name).and_then(|kind| match value {
            HeaderValue::Text(text) => text_to_typed(text, kind),
            HeaderValue::Binary(bytes) if kind == "LongString" => {
                Some(AMQPValue::LongString(LongString::from(bytes.to_vec())))
            }
            HeaderValue::Binary(_) => None,
        });
        grouped
            .entry(name)
            .or_default()
            .push(restored.unwrap_or_else(|| plain(value)));
    }
    for (name, mut values) in grouped {
        let value = if values.len() == 1 {
            values.pop().expect("one value")
        } else {
            repeated.push(name);
            AMQPValue::FieldArray(FieldArray::from(values))
        };
        table.insert(short(name), value);
    }
    if !repeated.is_empty() {
        let marks: BTreeMap<&str, &str> =
            repeated.into_iter().map(|name| (name, REPEATED)).collect();
        let json = serde_json::to_string(&marks).expect("a map of strings serializes");
        table.insert(
            short(TYPES),
            AMQPValue::LongString(LongString::from(json.into_bytes())),
        );
    }
    if let Some(key) = &message.key {
        let value = match std::str::from_utf8(key) {
            Ok(text) => AMQPValue::LongString(LongString::from(text.as_bytes().to_vec())),
            Err(_) => AMQPValue::ByteArray(ByteArray::from(key.to_vec())),
        };
        table.insert(short(reserved::KEY), value);
    }
    if let Some(time) = message.timestamp
        && let Ok(since) = time.duration_since(UNIX_EPOCH)
    {
        properties = properties.with_timestamp(since.as_secs());
        if since.subsec_millis() != 0 {
            let ms = since.as_millis().to_string();
            table.insert(
                short(reserved::TIMESTAMP_MS),
                AMQPValue::LongString(LongString::from(ms.into_bytes())),
            );
        }
    }
    if let Some(v) = &message.correlation_id {
        properties = properties.with_correlation_id(short(v));
    }
    if let Some(v) = &message.reply_to {
        properties = properties.with_reply_to(short(v));
    }
    if let Some(v) = &message.message_id {
        properties = properties.with_message_id(short(v));
    }
    if let Some(v) = &message.content_type {
        properties = properties.with_content_type(short(v));
    }
    properties.with_headers(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through_amqp(message: &Message) -> Message {
        let properties = outgoing(message);
        let mut delivery = Delivery::mock(1, "".into(), "q".into(), false, message.body.to_vec());
        delivery.properties = properties;
        incoming(&delivery, "rabbit:queue/q")
    }

    /// AMQP tables order headers by name.
    fn sorted_headers(mut message: Message) -> Message {
        let mut headers: Vec<_> = message.headers.clone().into_iter().collect();
        headers.sort_by(|a, b| a.0.cmp(&b.0));
        message.headers = headers.into_iter().collect();
        message
    }

    #[test]
    fn repeated_header_names_keep_every_value() {
        let mut message = Message::new("x");
        message.headers.push("tag", "a");
        message.headers.push("other", "o");
        message.headers.push("tag", vec![0xffu8]);
        let back = through_amqp(&message).without_origin();
        let tags: Vec<_> = back
            .headers
            .iter()
            .filter(|(n, _)| *n == "tag")
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(
            tags,
            vec![
                HeaderValue::Text("a".into()),
                HeaderValue::Binary(vec![0xffu8].into())
            ]
        );
        assert_eq!(back.headers.get_text("other"), Some("o"));
        assert!(back.headers.get(TYPES).is_none());
    }

    #[test]
    fn envelope_survives_a_round_trip() {
        let mut message = Message::new(vec![0u8, 255]);
        message.key = Some(Bytes::from_static(b"k-1"));
        message.headers.push("text", "v");
        message.headers.push("binary", vec![1u8, 2]);
        message.correlation_id = Some("c".into());
        message.reply_to = Some("replies".into());
        message.message_id = Some("m".into());
        message.content_type = Some("application/octet-stream".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let back = through_amqp(&message);
        assert_eq!(back.without_origin(), sorted_headers(message));
        assert_eq!(back.origin().unwrap().receive_count, Some(1));
    }

    #[test]
    fn typed_header_values_and_properties_are_restored_exactly() {
        let mut table = FieldTable::default();
        table.insert("retries".into(), AMQPValue::LongInt(3));
        table.insert("flag".into(), AMQPValue::Boolean(true));
        let mut inner = FieldTable::default();
        inner.insert("count".into(), AMQPValue::LongLongInt(1));
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(inner)])),
        );
        let properties = BasicProperties::default()
            .with_headers(table.clone())
            .with_priority(7)
            .with_expiration("6000".into())
            .with_app_id("shop".into())
            .with_delivery_mode(PERSISTENT);
        let mut delivery = Delivery::mock(1, "".into(), "q".into(), true, b"x".to_vec());
        delivery.properties = properties.clone();
        let message = incoming(&delivery, "rabbit:queue/q");
        assert_eq!(message.headers.get_text("retries"), Some("3"));
        assert_eq!(message.headers.get_text(PRIORITY), Some("7"));
        assert_eq!(message.origin().unwrap().receive_count, Some(2));
        let republished = outgoing(&message);
        assert_eq!(republished.headers().as_ref().unwrap(), &table);
        assert_eq!(republished.priority(), &Some(7));
        assert_eq!(republished.expiration(), properties.expiration());
        assert_eq!(republished.app_id(), properties.app_id());
    }
}

#[cfg(test)]
mod short_string_tests {
    use super::*;

    #[test]
    fn long_properties_and_header_names_are_refused_without_panicking() {
        let mut message = Message::new("x");
        message.headers.push("é".repeat(200), "v");
        assert!(
            check_short_strings(&message)
                .unwrap_err()
                .contains("longer than 255")
        );
        let mut message = Message::new("x");
        message.correlation_id = Some("c".repeat(256));
        assert!(
            check_short_strings(&message)
                .unwrap_err()
                .contains("correlation id")
        );
        assert!(check_short_strings(&Message::new("x")).is_ok());
    }
}
