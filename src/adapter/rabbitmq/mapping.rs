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

use crate::message::{HeaderValue, Headers, Message, Origin, OriginValue, reserved};

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

/// The AMQP value of text that was recorded with `kind`; `None` when it no longer parses
/// or holds something lapin cannot write (the type record comes from whoever sent the
/// message, so it is not trusted).
fn text_to_typed(text: &str, kind: &str) -> Option<AMQPValue> {
    parse_typed(text, kind).filter(writable)
}

/// Whether lapin writes `value` as valid AMQP: no short string inside a table or array
/// (lapin's type id for them is not AMQP's) and no table key over 255 bytes.
fn writable(value: &AMQPValue) -> bool {
    match value {
        AMQPValue::ShortString(_) => false,
        AMQPValue::FieldTable(table) => table
            .inner()
            .iter()
            .all(|(key, value)| key.as_str().len() <= SHORT_STRING_MAX && writable(value)),
        AMQPValue::FieldArray(array) => array.as_slice().iter().all(writable),
        _ => true,
    }
}

fn parse_typed(text: &str, kind: &str) -> Option<AMQPValue> {
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
        // Tables carry short strings as long ones (RabbitMQ does too): lapin would write
        // a short string in a table with a type id that is no AMQP type.
        "ShortString" => AMQPValue::LongString(LongString::from(text.as_bytes().to_vec())),
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

/// The value of `bridge-timestamp-ms`: a long-long-int as bridge writes it, or the
/// decimal text that bridge wrote before (and that other writers may use).
fn milliseconds(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::LongLongInt(ms) => u64::try_from(*ms).ok(),
        AMQPValue::LongUInt(ms) => Some(u64::from(*ms)),
        AMQPValue::LongInt(ms) => u64::try_from(*ms).ok(),
        other => std::str::from_utf8(amqp_bytes(other))
            .ok()
            .and_then(|text| text.parse::<u64>().ok()),
    }
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
                timestamp_ms = milliseconds(value);
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
        // Any 64-bit number of seconds can arrive; one past what the clock holds is dropped.
        (Some(seconds), _) => UNIX_EPOCH.checked_add(Duration::from_secs(*seconds)),
        (None, _) => None,
    };
    let receive_count = delivery_count
        .map(|n| n.saturating_add(1))
        .unwrap_or(if delivery.redelivered { 2 } else { 1 });
    message.with_origin(Origin {
        endpoint: endpoint.to_owned(),
        receive_count: Some(receive_count),
        fields: vec![
            ("exchange", OriginValue::text(delivery.exchange.as_str())),
            (
                "routing_key",
                OriginValue::text(delivery.routing_key.as_str()),
            ),
            ("redelivered", OriginValue::Bool(delivery.redelivered)),
        ],
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
            // Only what fits a short string is promoted (check_short_strings refuses the
            // first one that does not); a longer repeat stays a table header.
            (EXPIRATION, Some(v)) if v.len() <= SHORT_STRING_MAX => {
                properties = properties.with_expiration(short(v));
                continue;
            }
            (CONTENT_ENCODING, Some(v)) if v.len() <= SHORT_STRING_MAX => {
                properties = properties.with_content_encoding(short(v));
                continue;
            }
            (DELIVERY_MODE, Some(v)) if v.parse::<u8>().is_ok() => {
                properties = properties.with_delivery_mode(v.parse().unwrap_or(PERSISTENT));
                continue;
            }
            (TYPE, Some(v)) if v.len() <= SHORT_STRING_MAX => {
                properties = properties.with_type(short(v));
                continue;
            }
            (APP_ID, Some(v)) if v.len() <= SHORT_STRING_MAX => {
                properties = properties.with_app_id(short(v));
                continue;
            }
            (CLUSTER_ID, Some(v)) if v.len() <= SHORT_STRING_MAX => {
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
        // A long-long-int, not text: RabbitMQ 3.10 keeps a queued message's decoded
        // headers, and a long string there made it spend 10 to 15 us more per message
        // with a deep queue, an integer nothing measurable (docs/performance.md). Text
        // only past what a long-long-int holds (some 292 million years).
        if since.subsec_millis() != 0 {
            let ms = since.as_millis();
            let value = match i64::try_from(ms) {
                Ok(ms) => AMQPValue::LongLongInt(ms),
                Err(_) => AMQPValue::LongString(LongString::from(ms.to_string().into_bytes())),
            };
            table.insert(short(reserved::TIMESTAMP_MS), value);
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
    fn headers_are_mapped_in_linear_time() {
        crate::message::assert_linear("AMQP headers both ways", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                message
                    .headers
                    .push(format!("h{}", i % (n / 2)), vec![0xffu8]);
            }
            through_amqp(&message);
        });
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
    fn milliseconds_are_written_as_an_integer_and_read_in_either_form() {
        let mut message = Message::new("x");
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let properties = outgoing(&message);
        let table = properties.headers().clone().unwrap_or_default();
        assert_eq!(
            table.inner().get(reserved::TIMESTAMP_MS),
            Some(&AMQPValue::LongLongInt(1_700_000_000_123))
        );
        assert_eq!(*properties.timestamp(), Some(1_700_000_000));
        // What bridge wrote before: the milliseconds as text.
        let mut older = FieldTable::default();
        older.insert(
            reserved::TIMESTAMP_MS.into(),
            AMQPValue::LongString("1700000000123".into()),
        );
        let mut delivery = Delivery::mock(1, "".into(), "q".into(), false, b"x".to_vec());
        delivery.properties = BasicProperties::default()
            .with_timestamp(1_700_000_000)
            .with_headers(older);
        let read = incoming(&delivery, "rabbit:queue/q");
        assert_eq!(read.timestamp, message.timestamp);
        assert!(read.headers.get(reserved::TIMESTAMP_MS).is_none());
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

/// Bounded property tests: every message that fits AMQP's short strings reads back as
/// published, the rest is refused with a reason, any delivery is read without panicking,
/// and a delivery read and published again keeps its headers table and properties.
#[cfg(test)]
mod fuzz {
    use super::*;
    use lapin::types::DecimalValue;
    use proptest::num::{f32 as f32s, f64 as f64s};
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use std::panic::AssertUnwindSafe;
    use std::time::SystemTime;

    /// `cases` cases, or `PROPTEST_CASES` for a soak. Nothing is persisted: a failure is
    /// fixed and pinned as a `#[test]`.
    fn bounded(cases: u32) -> Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases);
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        }
    }

    fn delivery(properties: BasicProperties, redelivered: bool, body: &[u8]) -> Delivery {
        let mut delivery = Delivery::mock(1, "".into(), "q".into(), redelivered, body.to_vec());
        delivery.properties = properties;
        delivery
    }

    fn through_amqp(message: &Message) -> Message {
        incoming(
            &delivery(outgoing(message), false, &message.body),
            "rabbit:queue/q",
        )
    }

    /// Names this mapping gives a meaning of its own (the reserved `bridge-amqp-*`,
    /// `bridge-key` and `bridge-timestamp-ms`, docs/adapters/rabbitmq.md).
    fn is_mapping_name(name: &str) -> bool {
        name.starts_with("bridge-amqp-") || name == reserved::KEY || name == reserved::TIMESTAMP_MS
    }

    /// Header names: ordinary ones, ones RabbitMQ sets, the router's, any text, and names
    /// around the 255 bytes of a short string.
    const NAMES: &[&str] = &[
        "type",
        "tag",
        "x-death",
        "x-delivery-count",
        "x-first-death-reason",
        "traceparent",
        "bridge-hops",
        "a b",
        "",
        "é",
    ];

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(NAMES).prop_map(str::to_owned),
            2 => ".{0,12}",
            1 => "[a-z]{254,257}",
            1 => "é{127,128}",
        ]
        .prop_filter("a name of the mapping's own", |name| !is_mapping_name(name))
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            3 => ".{0,16}".prop_map(HeaderValue::Text),
            2 => prop::collection::vec(any::<u8>(), 0..16).prop_map(HeaderValue::from),
            1 => ".{0,8}".prop_map(|text| HeaderValue::Binary(Bytes::from(text))),
        ]
    }

    /// Property values: mostly short, some around the 255 bytes AMQP allows.
    fn property_text() -> impl Strategy<Value = String> {
        prop_oneof![6 => ".{0,16}", 1 => "[a-z]{254,257}", 1 => "é{127,128}"]
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            ".{0,16}".prop_map(Bytes::from),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from),
        ]
    }

    /// Any time from 1970 on that a u64 of milliseconds holds (some with nanoseconds AMQP
    /// drops), and times before 1970, which it does not write.
    fn time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            3 => any::<u64>().prop_map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            1 => (any::<u32>(), 0..1_000_000_000u32)
                .prop_map(|(seconds, nanos)| UNIX_EPOCH + Duration::new(seconds.into(), nanos)),
            1 => (1..=u64::from(u32::MAX)).prop_map(|seconds| UNIX_EPOCH - Duration::from_secs(seconds)),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            bytes(),
            prop::collection::vec((header_name(), header_value()), 0..8),
            prop::option::of(bytes()),
            prop::option::of(property_text()),
            prop::option::of(property_text()),
            prop::option::of(property_text()),
            prop::option::of(property_text()),
            prop::option::of(time()),
        )
            .prop_map(
                |(
                    body,
                    headers,
                    key,
                    correlation_id,
                    reply_to,
                    message_id,
                    content_type,
                    timestamp,
                )| {
                    let mut message = Message::new(body);
                    message.headers = headers.into_iter().collect();
                    message.key = key;
                    message.correlation_id = correlation_id;
                    message.reply_to = reply_to;
                    message.message_id = message_id;
                    message.content_type = content_type;
                    message.timestamp = timestamp;
                    message
                },
            )
    }

    /// A message as it reads back: headers ordered by name (those of one name in their
    /// order), the timestamp to the millisecond, none before 1970.
    fn as_read_back(message: &Message) -> Message {
        crate::message::sorted_to_the_millisecond(message)
    }

    fn table(entries: BTreeMap<String, AMQPValue>) -> FieldTable {
        entries
            .into_iter()
            .map(|(name, value)| (ShortString::from(name), value))
            .collect::<BTreeMap<_, _>>()
            .into()
    }

    /// Scalars of every type a RabbitMQ client delivers: all but lapin's internal
    /// `ShortString`, which no broker sends.
    fn scalar(float: BoxedStrategy<f32>, double: BoxedStrategy<f64>) -> BoxedStrategy<AMQPValue> {
        // Booleans, integers and timestamps.
        let integral = prop_oneof![
            any::<bool>().prop_map(AMQPValue::Boolean),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<u64>().prop_map(AMQPValue::Timestamp),
        ];
        let others = prop_oneof![
            float.prop_map(AMQPValue::Float),
            double.prop_map(AMQPValue::Double),
            (any::<u8>(), any::<u32>())
                .prop_map(|(scale, value)| AMQPValue::DecimalValue(DecimalValue { scale, value })),
            ".{0,16}".prop_map(|text| AMQPValue::LongString(LongString::from(text))),
            prop::collection::vec(any::<u8>(), 0..16)
                .prop_map(|bytes| AMQPValue::LongString(LongString::from(bytes))),
            prop::collection::vec(any::<u8>(), 0..16)
                .prop_map(|bytes| AMQPValue::ByteArray(ByteArray::from(bytes))),
            Just(AMQPValue::Void),
        ];
        prop_oneof![integral, others].boxed()
    }

    /// Arrays and tables of `inner` values, as `x-death` nests them.
    fn container(inner: BoxedStrategy<AMQPValue>) -> impl Strategy<Value = AMQPValue> {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|values| AMQPValue::FieldArray(FieldArray::from(values))),
            prop::collection::btree_map("[a-z-]{1,8}", inner, 0..4)
                .prop_map(|entries| AMQPValue::FieldTable(table(entries))),
        ]
    }

    /// Floats that equal themselves (no NaN), infinities included.
    fn float() -> BoxedStrategy<f32> {
        (f32s::POSITIVE
            | f32s::NEGATIVE
            | f32s::NORMAL
            | f32s::SUBNORMAL
            | f32s::ZERO
            | f32s::INFINITE)
            .boxed()
    }

    fn double() -> BoxedStrategy<f64> {
        (f64s::POSITIVE
            | f64s::NEGATIVE
            | f64s::NORMAL
            | f64s::SUBNORMAL
            | f64s::ZERO
            | f64s::INFINITE)
            .boxed()
    }

    /// A header value as RabbitMQ delivers it, tables and arrays nested two levels deep.
    /// With `exact`, floats compare equal to themselves, and those inside tables and arrays
    /// are halves, which JSON gives back exactly (until `nested_doubles_are_restored_exactly`
    /// passes); otherwise any float, NaN included.
    fn amqp_value(exact: bool) -> BoxedStrategy<AMQPValue> {
        let (top_float, top_double, nested_float, nested_double) = if exact {
            (
                float(),
                double(),
                (-4096i16..4096).prop_map(|n| f32::from(n) / 2.0).boxed(),
                (-4096i16..4096).prop_map(|n| f64::from(n) / 2.0).boxed(),
            )
        } else {
            (
                any::<f32>().boxed(),
                any::<f64>().boxed(),
                any::<f32>().boxed(),
                any::<f64>().boxed(),
            )
        };
        let nested = scalar(nested_float, nested_double).prop_recursive(2, 16, 4, container);
        prop_oneof![3 => scalar(top_float, top_double), 1 => container(nested.boxed())].boxed()
    }

    fn short_string() -> impl Strategy<Value = ShortString> {
        prop_oneof![6 => ".{0,16}", 1 => "[a-z]{255}"].prop_map(ShortString::from)
    }

    /// The edges of what the clock holds: i64::MAX seconds and one more.
    const EDGE_SECONDS: &[u64] = &[0, u64::MAX / 2, u64::MAX / 2 + 1, u64::MAX];

    /// Timestamps in seconds: any u64, and the edges of what the clock holds.
    fn seconds() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => any::<u64>(),
            2 => 1_600_000_000..1_800_000_000u64,
            1 => prop::sample::select(EDGE_SECONDS),
        ]
    }

    /// Properties with every field set or not, and the headers table `headers` gives.
    fn properties(
        headers: impl Strategy<Value = FieldTable>,
    ) -> impl Strategy<Value = BasicProperties> {
        (
            prop::option::of(headers),
            prop::array::uniform10(prop::option::of(short_string())),
            prop::option::of(any::<u8>()),
            prop::option::of(any::<u8>()),
            prop::option::of(seconds()),
        )
            .prop_map(|(headers, texts, delivery_mode, priority, timestamp)| {
                let [
                    content_type,
                    content_encoding,
                    correlation_id,
                    reply_to,
                    expiration,
                    message_id,
                    kind,
                    user_id,
                    app_id,
                    cluster_id,
                ] = texts;
                let mut properties = BasicProperties::default();
                if let Some(headers) = headers {
                    properties = properties.with_headers(headers);
                }
                if let Some(value) = content_type {
                    properties = properties.with_content_type(value);
                }
                if let Some(value) = content_encoding {
                    properties = properties.with_content_encoding(value);
                }
                if let Some(value) = correlation_id {
                    properties = properties.with_correlation_id(value);
                }
                if let Some(value) = reply_to {
                    properties = properties.with_reply_to(value);
                }
                if let Some(value) = expiration {
                    properties = properties.with_expiration(value);
                }
                if let Some(value) = message_id {
                    properties = properties.with_message_id(value);
                }
                if let Some(value) = kind {
                    properties = properties.with_type(value);
                }
                if let Some(value) = user_id {
                    properties = properties.with_user_id(value);
                }
                if let Some(value) = app_id {
                    properties = properties.with_app_id(value);
                }
                if let Some(value) = cluster_id {
                    properties = properties.with_cluster_id(value);
                }
                if let Some(value) = delivery_mode {
                    properties = properties.with_delivery_mode(value);
                }
                if let Some(value) = priority {
                    properties = properties.with_priority(value);
                }
                if let Some(value) = timestamp {
                    properties = properties.with_timestamp(value);
                }
                properties
            })
    }

    /// Table names: the mapping's own, RabbitMQ's, ordinary ones, and any.
    const TABLE_NAMES: &[&str] = &[
        "a",
        "x-death",
        "x-delivery-count",
        "bridge-hops",
        TYPES,
        PRIORITY,
        DELIVERY_MODE,
        USER_ID,
        reserved::KEY,
        reserved::TIMESTAMP_MS,
    ];

    /// Text of the mapping's own headers: type records, numbers, milliseconds.
    const BRIDGE_TEXT: &[&str] = &[
        r#"{"a":"Repeated"}"#,
        r#"{"x-death":"Repeated","a":"LongInt"}"#,
        r#"{"a":"ShortString"}"#,
        "not json",
        "7",
        "1700000000123",
        "-1",
        "",
    ];

    /// Delivery counts around the edges of a u32 receive count (u32::MAX itself is left to
    /// `the_largest_delivery_count_does_not_overflow_the_receive_count`).
    const DELIVERY_COUNTS: &[i64] = &[-1, 0, 1, 4_294_967_294, 4_294_967_296];

    /// Any table a sender may write, the mapping's own names and values included.
    fn any_table() -> impl Strategy<Value = FieldTable> {
        let name = prop_oneof![
            2 => prop::sample::select(TABLE_NAMES).prop_map(str::to_owned),
            1 => ".{0,12}",
        ];
        let value = prop_oneof![
            4 => amqp_value(false),
            1 => prop::sample::select(BRIDGE_TEXT)
                .prop_map(|text| AMQPValue::LongString(LongString::from(text))),
            1 => prop::sample::select(DELIVERY_COUNTS).prop_map(AMQPValue::LongLongInt),
        ];
        prop::collection::btree_map(name, value, 0..8).prop_map(table)
    }

    /// Tables as a RabbitMQ client delivers them, without the mapping's own names.
    fn delivered_table() -> impl Strategy<Value = FieldTable> {
        let name = prop_oneof![
            2 => prop::sample::select(NAMES).prop_map(str::to_owned),
            1 => ".{0,12}",
        ]
        .prop_filter("a name of the mapping's own", |name| {
            !name.starts_with("bridge-")
        });
        prop::collection::btree_map(name, amqp_value(true), 0..8).prop_map(table)
    }

    /// Until `the_largest_delivery_count_does_not_overflow_the_receive_count` passes.
    fn counts_u32_max_deliveries(properties: &BasicProperties) -> bool {
        properties.headers().as_ref().is_some_and(|table| {
            matches!(
                table.inner().get("x-delivery-count"),
                Some(AMQPValue::LongLongInt(n)) if *n == i64::from(u32::MAX)
            )
        })
    }

    proptest! {
        #![proptest_config(bounded(256))]

        /// A message whose properties and header names fit AMQP's short strings reads back
        /// as published; any other is refused with a reason.
        #[test]
        fn what_fits_short_strings_reads_back_and_the_rest_is_refused(message in message()) {
            let too_long = [
                &message.correlation_id,
                &message.reply_to,
                &message.message_id,
                &message.content_type,
            ]
            .into_iter()
            .flatten()
            .any(|value| value.len() > SHORT_STRING_MAX)
                || message.headers.iter().any(|(name, _)| name.len() > SHORT_STRING_MAX);
            match check_short_strings(&message) {
                Err(reason) => {
                    prop_assert!(too_long, "refused: {reason}");
                    prop_assert!(!reason.trim().is_empty());
                }
                Ok(()) => {
                    prop_assert!(!too_long, "accepted with a value over {SHORT_STRING_MAX} bytes");
                    let back = through_amqp(&message);
                    prop_assert_eq!(back.origin().and_then(|origin| origin.receive_count), Some(1));
                    prop_assert_eq!(as_read_back(&back.without_origin()), as_read_back(&message));
                }
            }
        }

        /// Any delivery is read without panicking: the body and properties as they came,
        /// a timestamp of the property's seconds (none when the clock cannot hold them),
        /// every table entry but the mapping's own as a header, a receive count of 1 or more.
        #[test]
        fn any_delivery_is_read(
            properties in properties(any_table()),
            redelivered in any::<bool>(),
            body in prop::collection::vec(any::<u8>(), 0..16),
        ) {
            prop_assume!(!counts_u32_max_deliveries(&properties));
            let message = incoming(&delivery(properties.clone(), redelivered, &body), "rabbit:queue/q");
            prop_assert_eq!(&message.body[..], &body[..]);
            prop_assert_eq!(&message.correlation_id, &text(properties.correlation_id()));
            prop_assert_eq!(&message.reply_to, &text(properties.reply_to()));
            prop_assert_eq!(&message.message_id, &text(properties.message_id()));
            prop_assert_eq!(&message.content_type, &text(properties.content_type()));
            match (*properties.timestamp(), message.timestamp) {
                (Some(seconds), Some(time)) => prop_assert_eq!(
                    time.duration_since(UNIX_EPOCH).ok().map(|since| since.as_secs()),
                    Some(seconds)
                ),
                (Some(seconds), None) => prop_assert!(
                    UNIX_EPOCH.checked_add(Duration::from_secs(seconds)).is_none(),
                    "{seconds} s dropped"
                ),
                (None, time) => prop_assert_eq!(time, None),
            }
            let receive_count = message.origin().and_then(|origin| origin.receive_count);
            prop_assert!(receive_count.is_some_and(|count| count >= 1), "{receive_count:?}");
            let table = properties.headers().clone().unwrap_or_default();
            for (name, value) in table.inner() {
                let name = name.as_str();
                let own = [TYPES, reserved::KEY, reserved::TIMESTAMP_MS].contains(&name);
                // A `Repeated` array may hold no value at all.
                if !own && !matches!(value, AMQPValue::FieldArray(_)) {
                    prop_assert!(message.headers.get(name).is_some(), "{name} lost");
                }
            }
        }

        /// A delivery read and published again keeps its headers table (typed values,
        /// binary long strings, nested tables and arrays) and its properties, but for the
        /// documented exceptions: the user id stays a header, no delivery mode becomes 2.
        #[test]
        fn a_delivery_read_and_published_again_keeps_its_table_and_properties(
            properties in properties(delivered_table()),
            redelivered in any::<bool>(),
        ) {
            prop_assume!(!counts_u32_max_deliveries(&properties));
            let message = incoming(&delivery(properties.clone(), redelivered, b"x"), "rabbit:queue/q");
            let republished = outgoing(&message);
            let mut expected = properties.headers().clone().unwrap_or_default();
            if let Some(user_id) = properties.user_id() {
                expected.insert(
                    short(USER_ID),
                    AMQPValue::LongString(LongString::from(user_id.as_str())),
                );
            }
            prop_assert_eq!(republished.headers().clone().unwrap_or_default(), expected);
            prop_assert_eq!(republished.content_type(), properties.content_type());
            prop_assert_eq!(republished.content_encoding(), properties.content_encoding());
            prop_assert_eq!(republished.correlation_id(), properties.correlation_id());
            prop_assert_eq!(republished.reply_to(), properties.reply_to());
            prop_assert_eq!(republished.expiration(), properties.expiration());
            prop_assert_eq!(republished.message_id(), properties.message_id());
            prop_assert_eq!(republished.kind(), properties.kind());
            prop_assert_eq!(republished.app_id(), properties.app_id());
            prop_assert_eq!(republished.cluster_id(), properties.cluster_id());
            prop_assert_eq!(republished.priority(), properties.priority());
            prop_assert_eq!(
                *republished.delivery_mode(),
                Some(properties.delivery_mode().unwrap_or(PERSISTENT))
            );
            let fits_the_clock =
                |seconds: &u64| UNIX_EPOCH.checked_add(Duration::from_secs(*seconds)).is_some();
            prop_assert_eq!(*republished.timestamp(), properties.timestamp().filter(fits_the_clock));
            prop_assert_eq!(republished.user_id(), &None);
        }
    }

    /// Regression: `check_short_strings` read only the first header of each promoted name,
    /// while `outgoing` promotes every one; and a type record asking for `ShortString`
    /// made one of any length. Either way an over-long short string panicked the sink.
    #[test]
    fn whatever_check_short_strings_accepts_publishes_without_panicking() {
        let long = "x".repeat(SHORT_STRING_MAX + 1);
        let mut cases = Vec::new();
        for name in [EXPIRATION, CONTENT_ENCODING, TYPE, APP_ID, CLUSTER_ID] {
            let mut second = Message::new("x");
            second.headers.push(name, "1");
            second.headers.push(name, long.as_str());
            cases.push(second);
            let mut after_binary = Message::new("x");
            after_binary.headers.push(name, vec![1u8]);
            after_binary.headers.push(name, long.as_str());
            cases.push(after_binary);
        }
        let mut typed = Message::new("x");
        typed.headers.push("h", long.as_str());
        typed.headers.push(TYPES, r#"{"h":"ShortString"}"#);
        cases.push(typed);
        for message in cases {
            let accepted = check_short_strings(&message).is_ok();
            let published = std::panic::catch_unwind(AssertUnwindSafe(|| outgoing(&message)));
            assert!(
                !accepted || published.is_ok(),
                "accepted, then panicked: {:?}",
                message.headers
            );
        }
    }

    /// Whether `value` holds something lapin cannot write for RabbitMQ: its internal
    /// `ShortString` (written with the type id `_`, which is no AMQP type), or a table key
    /// over the 255 bytes of a short string (a debug assertion in lapin, a wrong length byte
    /// in a release build).
    fn unwritable(value: &AMQPValue) -> bool {
        match value {
            AMQPValue::ShortString(_) => true,
            AMQPValue::FieldArray(values) => values.as_slice().iter().any(unwritable),
            AMQPValue::FieldTable(table) => table
                .inner()
                .iter()
                .any(|(key, value)| key.as_str().len() > SHORT_STRING_MAX || unwritable(value)),
            _ => false,
        }
    }

    /// Regression: a type record (an ordinary header any producer upstream can set) was
    /// trusted: `ShortString`, asked for directly or inside JSON, was restored as lapin's
    /// internal type, and a table from JSON kept keys too long for a short string.
    #[test]
    fn a_type_record_never_restores_a_value_lapin_cannot_write() {
        let long_key = "k".repeat(SHORT_STRING_MAX + 1);
        let mut message = Message::new("x");
        message.headers.push("plain", "v");
        message
            .headers
            .push("nested", r#"{"k":{"ShortString":"v"}}"#);
        message.headers.push("decimal", r#"{"ShortString":"v"}"#);
        message.headers.push(
            "long-key",
            format!(r#"{{"{long_key}":{{"Boolean":true}}}}"#),
        );
        message.headers.push(
            TYPES,
            r#"{"plain":"ShortString","nested":"FieldTable","decimal":"DecimalValue","long-key":"FieldTable"}"#,
        );
        let table = outgoing(&message).headers().clone().unwrap_or_default();
        for (name, value) in table.inner() {
            assert!(!unwritable(value), "{name}: {value:?}");
        }
    }

    /// Regression: an `x-delivery-count` of u32::MAX overflowed the receive count (a panic
    /// in a debug build, a receive count of 0 in a release build).
    #[test]
    fn the_largest_delivery_count_does_not_overflow_the_receive_count() {
        let mut table = FieldTable::default();
        table.insert(
            "x-delivery-count".into(),
            AMQPValue::LongLongInt(u32::MAX.into()),
        );
        let properties = BasicProperties::default().with_headers(table);
        let message = incoming(&delivery(properties, false, b"x"), "rabbit:queue/q");
        assert_eq!(
            message.origin().and_then(|origin| origin.receive_count),
            Some(u32::MAX)
        );
    }

    /// Regression: serde_json reads some doubles one unit in the last place off unless its
    /// `float_roundtrip` feature is on, so a double inside a table or array (restored from
    /// JSON) changed on the way through: 0.09144338512092887 came back 0.09144338512092888.
    #[test]
    fn nested_doubles_are_restored_exactly() {
        let mut inner = FieldTable::default();
        let doubles = [0.09144338512092887, 1.5777777777770001, 117.63331139400017];
        for (at, value) in doubles.into_iter().enumerate() {
            inner.insert(format!("d{at}").into(), AMQPValue::Double(value));
        }
        let mut table = FieldTable::default();
        table.insert("measurements".into(), AMQPValue::FieldTable(inner));
        let properties = BasicProperties::default().with_headers(table.clone());
        let message = incoming(&delivery(properties, false, b"x"), "rabbit:queue/q");
        assert_eq!(outgoing(&message).headers().as_ref(), Some(&table));
    }
}
