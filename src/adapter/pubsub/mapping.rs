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

use crate::message::{HeaderValue, Headers, Message, NameSet, reserved};

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
    // More attributes than Pub/Sub takes is refused before any other work.
    if attributes.len() + message.headers.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes; Pub/Sub allows {MAX_ATTRIBUTES}",
            attributes.len() + message.headers.len()
        ));
    }
    let mut binary = Vec::new();
    let envelope: Vec<String> = attributes.iter().map(|(n, _)| n.clone()).collect();
    let mut names: NameSet = envelope.iter().map(String::as_str).collect();
    for (name, value) in message.headers.iter() {
        if !names.insert(name) {
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
    let binary_names: Vec<String> = attributes
        .get(reserved::BINARY_HEADERS)
        .map(|list| reserved::split_names(list))
        .unwrap_or_default();
    let binary: NameSet = binary_names.iter().map(String::as_str).collect();
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
    fn headers_are_mapped_in_linear_time() {
        crate::message::assert_linear("Pub/Sub attributes both ways", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                message.headers.push(format!("h{i}"), "v");
            }
            assert!(
                encode(&message).is_err(),
                "more than Pub/Sub's 100 attributes"
            );
            let attributes: HashMap<String, String> = (0..n)
                .map(|i| (format!("h{i}"), BASE64.encode("v")))
                .chain([(
                    reserved::BINARY_HEADERS.to_owned(),
                    reserved::join_names(
                        (0..n)
                            .map(|i| format!("h{i}"))
                            .collect::<Vec<_>>()
                            .iter()
                            .map(String::as_str),
                    ),
                )])
                .collect();
            decode(Bytes::new(), &attributes, "", None);
        });
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

/// Bounded property tests: every message reads back as published or is refused for a limit
/// it really breaks, and any attributes decode without panicking, `bridge-timestamp-ms`
/// with any text included, to a message that is published again unchanged.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
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

    fn through_pubsub(message: &Message) -> Result<Message, String> {
        let out = encode(message)?;
        let attributes: HashMap<String, String> = out.attributes.into_iter().collect();
        Ok(decode(out.data, &attributes, &out.ordering_key, None))
    }

    /// Names the encoder writes itself: a header named like one reads back as the field or
    /// is lost (docs/mapping.md, "What is lossy").
    fn is_encoder_name(name: &str) -> bool {
        [
            CORRELATION_ID,
            REPLY_TO,
            MESSAGE_ID,
            CONTENT_TYPE,
            ENCODED_KEY,
            reserved::TIMESTAMP_MS,
            reserved::BINARY_HEADERS,
        ]
        .contains(&name)
    }

    /// Ordinary names, the router's, and ones Pub/Sub refuses.
    const NAMES: &[&str] = &[
        "type",
        "tag",
        "traceparent",
        "bridge-hops",
        "a b",
        "é",
        "",
        "goog",
        "googclient_schemaname",
        "Correlation-Id",
    ];

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(NAMES).prop_map(str::to_owned),
            2 => ".{0,12}",
            1 => "[a-z]{255,258}",
        ]
        .prop_filter("a name the encoder writes", |name| !is_encoder_name(name))
    }

    /// Values around the 1024 bytes Pub/Sub allows: text, and binary whose base64 is
    /// 1024 bytes (768 bytes) or more.
    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            6 => ".{0,16}".prop_map(HeaderValue::Text),
            4 => prop::collection::vec(any::<u8>(), 0..16).prop_map(HeaderValue::from),
            1 => "[a-z]{1023,1025}".prop_map(HeaderValue::Text),
            1 => prop::collection::vec(any::<u8>(), 767..770).prop_map(HeaderValue::from),
        ]
    }

    /// A few headers, repeats possible, or about the 100 attributes Pub/Sub allows.
    fn headers() -> impl Strategy<Value = Headers> {
        prop_oneof![
            6 => prop::collection::vec((header_name(), header_value()), 0..8)
                .prop_map(|pairs| pairs.into_iter().collect::<Headers>()),
            1 => (94..102usize).prop_map(|count| {
                (0..count).map(|n| (format!("h{n}"), HeaderValue::from("v"))).collect::<Headers>()
            }),
        ]
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            ".{0,16}".prop_map(Bytes::from),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from),
        ]
    }

    /// Ordering keys, keys over their 1024 bytes, empty keys and keys that are not text.
    fn key() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            3 => bytes(),
            1 => "[a-z]{1024,1025}".prop_map(Bytes::from),
            1 => prop::collection::vec(any::<u8>(), 767..770).prop_map(Bytes::from),
        ]
    }

    fn field() -> impl Strategy<Value = String> {
        prop_oneof![6 => ".{0,16}", 1 => "[a-z]{1024,1025}"]
    }

    /// Any time from 1970 on that a u64 of milliseconds holds (some with nanoseconds the
    /// encoding drops), and times before 1970, which it does not write.
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
            headers(),
            prop::option::of(key()),
            prop::option::of(field()),
            prop::option::of(field()),
            prop::option::of(field()),
            prop::option::of(field()),
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
                    message.headers = headers;
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

    /// A message as it reads back: headers ordered by name, the timestamp to the
    /// millisecond (none before 1970), an empty key as no key (docs/mapping.md).
    fn as_read_back(message: &Message) -> Message {
        let mut expected = crate::message::sorted_to_the_millisecond(message);
        expected.key = message.key.clone().filter(|key| !key.is_empty());
        expected
    }

    /// Whether `message` breaks one of Pub/Sub's limits, worked out from the limits
    /// alone: the attributes it needs (names and values), their count, names and sizes.
    fn breaks_a_limit(message: &Message) -> bool {
        let mut attributes: Vec<(&str, String)> = Vec::new();
        let fields = [
            (CORRELATION_ID, &message.correlation_id),
            (REPLY_TO, &message.reply_to),
            (MESSAGE_ID, &message.message_id),
            (CONTENT_TYPE, &message.content_type),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                attributes.push((name, value.clone()));
            }
        }
        if let Some(key) = &message.key
            && (std::str::from_utf8(key).is_err() || key.len() > MAX_ORDERING_KEY)
        {
            attributes.push((ENCODED_KEY, BASE64.encode(key)));
        }
        if message.timestamp.is_some_and(|time| time >= UNIX_EPOCH) {
            attributes.push((reserved::TIMESTAMP_MS, "0".to_owned()));
        }
        let mut binary = Vec::new();
        for (name, value) in message.headers.iter() {
            let value = match value {
                HeaderValue::Text(text) => text.clone(),
                HeaderValue::Binary(bytes) => {
                    binary.push(name);
                    BASE64.encode(bytes)
                }
            };
            attributes.push((name, value));
        }
        if !binary.is_empty() {
            attributes.push((reserved::BINARY_HEADERS, reserved::join_names(binary)));
        }
        let mut names: Vec<&str> = attributes.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        names.len() < attributes.len()
            || attributes.len() > MAX_ATTRIBUTES
            || attributes.iter().any(|(name, value)| {
                name.is_empty()
                    || name.len() > MAX_ATTRIBUTE_NAME
                    || name.starts_with("goog")
                    || value.len() > MAX_ATTRIBUTE_VALUE
            })
    }

    /// Attribute names: the encoder's own, ones a binary list names, and any.
    const ATTRIBUTE_NAMES: &[&str] = &[
        CORRELATION_ID,
        REPLY_TO,
        MESSAGE_ID,
        CONTENT_TYPE,
        ENCODED_KEY,
        reserved::TIMESTAMP_MS,
        reserved::BINARY_HEADERS,
        "a",
        "b",
        "googclient_schemaname",
    ];

    /// Attribute values: numbers good and bad, base64, binary lists, anything.
    const ATTRIBUTE_TEXT: &[&str] = &[
        "",
        "a",
        "a,b",
        "%2C",
        "-1",
        "1e3",
        " 7",
        "18446744073709551615",
        "18446744073709551616",
    ];

    fn attributes() -> impl Strategy<Value = HashMap<String, String>> {
        let name = prop_oneof![
            3 => prop::sample::select(ATTRIBUTE_NAMES).prop_map(str::to_owned),
            1 => ".{0,12}",
        ];
        let value = prop_oneof![
            2 => ".{0,16}",
            1 => any::<u64>().prop_map(|n| n.to_string()),
            1 => "[A-Za-z0-9+/]{0,8}={0,2}",
            1 => prop::sample::select(ATTRIBUTE_TEXT).prop_map(str::to_owned),
        ];
        prop::collection::hash_map(name, value, 0..10)
    }

    proptest! {
        #![proptest_config(bounded(256))]

        /// A message that keeps to Pub/Sub's limits reads back as published, and what is
        /// published keeps to them; any other is refused with a reason.
        #[test]
        fn every_message_reads_back_or_is_refused_for_a_limit_it_breaks(message in message()) {
            match encode(&message) {
                Err(reason) => {
                    prop_assert!(breaks_a_limit(&message), "refused: {reason}");
                    prop_assert!(!reason.trim().is_empty());
                }
                Ok(out) => {
                    prop_assert!(!breaks_a_limit(&message), "accepted: {:?}", out.attributes);
                    prop_assert!(out.ordering_key.len() <= MAX_ORDERING_KEY);
                    let attributes: HashMap<String, String> = out.attributes.iter().cloned().collect();
                    prop_assert_eq!(attributes.len(), out.attributes.len(), "an attribute name twice");
                    let back = decode(out.data, &attributes, &out.ordering_key, None);
                    prop_assert_eq!(back, as_read_back(&message));
                }
            }
        }

        /// Any attributes decode without panicking: the envelope's become its fields, a
        /// `bridge-timestamp-ms` that is a number of milliseconds the timestamp (else the
        /// publish time), and every other attribute a header, ordered by name.
        #[test]
        fn any_attributes_decode(
            data in prop::collection::vec(any::<u8>(), 0..16),
            attributes in attributes(),
            ordering_key in prop_oneof![Just(String::new()), ".{1,8}"],
            publish_time in prop::option::of(time()),
        ) {
            let message = decode(Bytes::from(data.clone()), &attributes, &ordering_key, publish_time);
            prop_assert_eq!(&message.body[..], &data[..]);
            prop_assert_eq!(message.correlation_id.as_ref(), attributes.get(CORRELATION_ID));
            prop_assert_eq!(message.reply_to.as_ref(), attributes.get(REPLY_TO));
            prop_assert_eq!(message.message_id.as_ref(), attributes.get(MESSAGE_ID));
            prop_assert_eq!(message.content_type.as_ref(), attributes.get(CONTENT_TYPE));
            let ms = attributes.get(reserved::TIMESTAMP_MS).and_then(|ms| ms.parse::<u64>().ok());
            let timestamp = ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)).or(publish_time);
            prop_assert_eq!(message.timestamp, timestamp);
            let encoded_key = attributes.get(ENCODED_KEY).and_then(|key| BASE64.decode(key).ok());
            let key = if ordering_key.is_empty() {
                encoded_key.clone().map(Bytes::from)
            } else {
                Some(Bytes::from(ordering_key.clone()))
            };
            prop_assert_eq!(&message.key, &key);
            let names: Vec<&str> = message.headers.iter().map(|(name, _)| name).collect();
            prop_assert!(names.is_sorted(), "{names:?}");
            for name in attributes.keys() {
                let field = [CORRELATION_ID, REPLY_TO, MESSAGE_ID, CONTENT_TYPE, reserved::BINARY_HEADERS]
                    .contains(&name.as_str())
                    || (name == ENCODED_KEY && encoded_key.is_some())
                    || (name == reserved::TIMESTAMP_MS && ms.is_some());
                prop_assert_eq!(message.headers.get(name).is_some(), !field, "{}", name);
            }
        }

        /// What any attributes decode to is published again unchanged, or refused for a
        /// limit it breaks (a received `goog` attribute, say).
        #[test]
        fn what_any_attributes_decode_to_is_published_again_unchanged(
            attributes in attributes(),
            ordering_key in prop_oneof![Just(String::new()), ".{1,8}"],
            publish_time in prop::option::of(time()),
        ) {
            let message = decode(Bytes::from_static(b"x"), &attributes, &ordering_key, publish_time);
            match through_pubsub(&message) {
                Ok(back) => prop_assert_eq!(as_read_back(&back), as_read_back(&message)),
                Err(reason) => prop_assert!(breaks_a_limit(&message), "refused: {reason}"),
            }
        }
    }
}
