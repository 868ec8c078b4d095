//! Envelope <-> Kafka record.
//!
//! | envelope | Kafka |
//! |---|---|
//! | body | value (a null value becomes an empty body) |
//! | key | key |
//! | headers | headers, in order; values are bytes |
//! | correlation id, reply-to, message id, content type | headers named by `header_names` (default `correlation-id`, `reply-to`, `message-id`, `content-type`) |
//! | timestamp | record timestamp (milliseconds) |
//! | origin | topic, partition, offset |
//!
//! Kafka header values are untyped bytes: on the way in, a value that is valid UTF-8 becomes
//! text and anything else binary. A binary value that happens to be valid UTF-8 is listed in
//! the `bridge-binary-headers` header on the way out so it comes back binary. A null header
//! value becomes empty text.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use super::config::HeaderNames;
use crate::message::{HeaderValue, Headers, Message, NameSet, Origin, OriginValue, reserved};

/// The parts of a record to produce, borrowed from the message where possible.
pub struct Outgoing {
    pub headers: OwnedHeaders,
    pub timestamp_ms: Option<i64>,
    /// Write a null value (a tombstone) instead of the empty body.
    pub null_value: bool,
}

fn millis(time: SystemTime) -> Option<i64> {
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// Headers and timestamp for producing `message`.
pub fn outgoing(message: &Message, names: &HeaderNames) -> Outgoing {
    let extra = [
        (&names.correlation_id, &message.correlation_id),
        (&names.reply_to, &message.reply_to),
        (&names.message_id, &message.message_id),
        (&names.content_type, &message.content_type),
    ];
    let mut headers = OwnedHeaders::new_with_capacity(message.headers.len() + 5);
    let mut ambiguous = Vec::new();
    // An envelope field replaces application headers of its name: written after them, it
    // would be read back as the header's value (the first one wins).
    let replaced: NameSet = extra
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| name.as_str())
        .collect();
    for (name, value) in message.headers.iter() {
        if name == reserved::BINARY_HEADERS
            || name == reserved::TOMBSTONE
            || replaced.contains(name)
        {
            continue;
        }
        if let HeaderValue::Binary(bytes) = value
            && std::str::from_utf8(bytes).is_ok()
        {
            ambiguous.push(name);
        }
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    for (name, value) in extra {
        if let Some(value) = value {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
    }
    if !ambiguous.is_empty() {
        let list = reserved::join_names(ambiguous);
        headers = headers.insert(Header {
            key: reserved::BINARY_HEADERS,
            value: Some(list.as_bytes()),
        });
    }
    Outgoing {
        headers,
        timestamp_ms: message.timestamp.and_then(millis),
        null_value: is_tombstone(message),
    }
}

/// Whether `message` stands for a null value: marked by `bridge-tombstone: true` and still
/// without a body (a transform that wrote one made it a message again).
pub fn is_tombstone(message: &Message) -> bool {
    message.body.is_empty() && message.headers.get_text(reserved::TOMBSTONE) == Some("true")
}

/// Reads the record's headers: envelope fields into `message`, the rest into `headers`,
/// and the names listed as binary into `binary_names`.
fn read_headers<M: rdkafka::Message>(
    record: &M,
    names: &HeaderNames,
    message: &mut Message,
    headers: &mut Headers,
    binary_names: &mut Vec<String>,
) {
    if let Some(record_headers) = record.headers() {
        for header in record_headers.iter() {
            let bytes = header.value.unwrap_or_default();
            let text = std::str::from_utf8(bytes).ok();
            let field = match header.key {
                k if k == names.correlation_id => Some(&mut message.correlation_id),
                k if k == names.reply_to => Some(&mut message.reply_to),
                k if k == names.message_id => Some(&mut message.message_id),
                k if k == names.content_type => Some(&mut message.content_type),
                _ => None,
            };
            match (field, text) {
                (Some(field), Some(text)) if field.is_none() => *field = Some(text.to_owned()),
                _ if header.key == reserved::BINARY_HEADERS && text.is_some() => {
                    binary_names.extend(reserved::split_names(text.unwrap_or_default()));
                }
                _ => headers.push(header.key, HeaderValue::from_untyped(bytes)),
            }
        }
    }
}

/// The envelope of a consumed record.
pub fn incoming<M: rdkafka::Message>(record: &M, endpoint: &str, names: &HeaderNames) -> Message {
    let mut message = Message::new(Bytes::copy_from_slice(record.payload().unwrap_or_default()));
    message.key = record.key().map(Bytes::copy_from_slice);
    message.timestamp = match record.timestamp() {
        Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) if ms >= 0 => {
            Some(UNIX_EPOCH + Duration::from_millis(ms as u64))
        }
        _ => None,
    };
    let mut headers = Headers::new();
    let mut binary_names = Vec::new();
    // rdkafka panics on a header name that is not UTF-8 (any producer but Java's can write
    // one). Such a record is read without its headers, and says so, rather than crashing
    // the source again each time the record is read.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_headers(record, names, &mut message, &mut headers, &mut binary_names)
    }));
    if read.is_err() {
        tracing::warn!(
            endpoint,
            "a Kafka record has a header name that is not UTF-8; its headers are left out"
        );
        headers = Headers::new();
        binary_names.clear();
        (
            message.correlation_id,
            message.reply_to,
            message.message_id,
            message.content_type,
        ) = (None, None, None, None);
        headers.push(
            reserved::KAFKA_HEADERS_UNREADABLE,
            "a header name is not UTF-8; the record's headers are left out",
        );
    }
    if !binary_names.is_empty() {
        let binary: NameSet = binary_names.iter().map(String::as_str).collect();
        headers = headers
            .into_iter()
            .map(|(name, value)| match value {
                HeaderValue::Text(text) if binary.contains(&name) => {
                    (name, HeaderValue::Binary(text.into()))
                }
                other => (name, other),
            })
            .collect();
    }
    if record.payload().is_none() {
        headers.remove(reserved::TOMBSTONE);
        headers.push(reserved::TOMBSTONE, HeaderValue::Text("true".to_owned()));
    }
    message.headers = headers;
    // The two timestamp types are shared, not allocated for every record.
    static CREATE_TIME: LazyLock<Arc<str>> = LazyLock::new(|| "create_time".into());
    static LOG_APPEND_TIME: LazyLock<Arc<str>> = LazyLock::new(|| "log_append_time".into());
    let mut fields = Vec::with_capacity(3);
    fields.push(("topic", OriginValue::text(record.topic())));
    let typed = match record.timestamp() {
        Timestamp::CreateTime(ms) => Some((ms, &CREATE_TIME)),
        Timestamp::LogAppendTime(ms) => Some((ms, &LOG_APPEND_TIME)),
        Timestamp::NotAvailable => None,
    };
    if let Some((ms, kind)) = typed {
        fields.push(("timestamp", OriginValue::Int(ms)));
        fields.push(("timestamp_type", OriginValue::Text(Arc::clone(kind))));
    }
    message.with_origin(Origin {
        endpoint: endpoint.to_owned(),
        partition: Some(record.partition()),
        offset: Some(record.offset()),
        fields,
        ..Origin::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn through_kafka(message: &Message) -> Message {
        let names = HeaderNames::default();
        let out = outgoing(message, &names);
        let record = OwnedMessage::new(
            (!out.null_value).then(|| message.body.to_vec()),
            message.key.as_ref().map(|k| k.to_vec()),
            "t".into(),
            Timestamp::CreateTime(out.timestamp_ms.unwrap_or(-1)),
            0,
            7,
            Some(out.headers),
        );
        incoming(&record, "kafka:t", &names)
    }

    #[test]
    fn a_tombstone_is_read_as_marked_and_written_null_again() {
        let names = HeaderNames::default();
        let record = OwnedMessage::new(
            None,
            Some(b"k".to_vec()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            1,
            None,
        );
        let read = incoming(&record, "kafka:t", &names);
        assert!(read.body.is_empty());
        assert_eq!(read.headers.get_text(reserved::TOMBSTONE), Some("true"));
        assert!(is_tombstone(&read));
        let out = outgoing(&read, &names);
        assert!(out.null_value);
        assert_eq!(
            out.headers.count(),
            0,
            "the marker is not written as a header"
        );
        let again = through_kafka(&read);
        assert!(is_tombstone(&again), "null stays null from Kafka to Kafka");
        // A transform that wrote a body made it a message again.
        let mut filled = read.clone();
        filled.body = Bytes::from_static(b"{}");
        assert!(!outgoing(&filled, &names).null_value);
    }

    #[test]
    fn envelope_fields_and_header_types_survive_a_round_trip() {
        let mut message = Message::new(vec![0u8, 1, 2]);
        message.key = Some(Bytes::from_static(b"k"));
        message.headers.push("text", "v");
        message.headers.push("utf8-binary", vec![b'o', b'k']);
        message.headers.push("binary", vec![0xffu8]);
        message.correlation_id = Some("c".into());
        message.reply_to = Some("kafka:replies".into());
        message.message_id = Some("m".into());
        message.content_type = Some("application/json".into());
        message.timestamp = Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let back = through_kafka(&message);
        assert_eq!(back.without_origin(), message);
        assert_eq!(back.origin().unwrap().offset, Some(7));
    }

    #[test]
    fn an_envelope_field_replaces_an_application_header_of_its_name() {
        let mut message = Message::new("x");
        message.headers.push("correlation-id", "forged");
        message.headers.push("app", "1");
        message.correlation_id = Some("real".into());
        let back = through_kafka(&message);
        assert_eq!(back.correlation_id.as_deref(), Some("real"));
        assert_eq!(back.headers.len(), 1);
        assert_eq!(back.headers.get_text("app"), Some("1"));
    }

    #[test]
    fn headers_are_mapped_in_linear_time() {
        crate::message::assert_linear("Kafka headers both ways", |n| {
            let mut message = Message::new("x");
            for i in 0..n {
                // Binary values that are valid UTF-8: every name goes to the binary list.
                message.headers.push(format!("h{i}"), vec![b'o', b'k']);
            }
            through_kafka(&message);
        });
    }
}

/// Bounded property tests: every message reads back as produced, any record is read
/// without panicking (timestamps of any i64 included), and a record read and produced
/// again reads back the same.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::Config;
    use rdkafka::Message as _;
    use rdkafka::message::OwnedMessage;

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

    fn through_kafka(message: &Message, names: &HeaderNames) -> Message {
        let out = outgoing(message, names);
        let record = OwnedMessage::new(
            (!out.null_value).then(|| message.body.to_vec()),
            message.key.as_ref().map(|key| key.to_vec()),
            "t".into(),
            out.timestamp_ms
                .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
            0,
            7,
            Some(out.headers),
        );
        incoming(&record, "kafka:t", names)
    }

    /// A header of a record as a producer writes it: a name and a value or null.
    type RecordHeader = (String, Option<Vec<u8>>);

    fn owned_record(
        payload: Option<Vec<u8>>,
        key: Option<Vec<u8>>,
        headers: &[RecordHeader],
        timestamp: Timestamp,
        partition: i32,
        offset: i64,
    ) -> OwnedMessage {
        let headers = headers
            .iter()
            .fold(OwnedHeaders::new(), |built, (name, value)| {
                built.insert(Header {
                    key: name.as_str(),
                    value: value.as_deref(),
                })
            });
        OwnedMessage::new(
            payload,
            key,
            "t".into(),
            timestamp,
            partition,
            offset,
            Some(headers),
        )
    }

    /// Ordinary header names, the router's, and odd ones.
    const NAMES: &[&str] = &[
        "type",
        "tag",
        "traceparent",
        "bridge-hops",
        "a b",
        "",
        "é",
        "Correlation-Id",
    ];

    /// Header names that are none of the envelope's (a header named like one reads back
    /// as the field, docs/adapters/kafka.md "Lossy cases") and hold no NUL: librdkafka
    /// gives names back as C strings, cut at the first NUL.
    fn header_name() -> impl Strategy<Value = String> {
        let names = HeaderNames::default();
        prop_oneof![
            3 => prop::sample::select(NAMES).prop_map(str::to_owned),
            2 => "[^\\x00]{0,12}",
        ]
        .prop_filter("an envelope header name", move |name| {
            ![
                &names.correlation_id,
                &names.reply_to,
                &names.message_id,
                &names.content_type,
            ]
            .contains(&name)
                && name != reserved::BINARY_HEADERS
        })
    }

    fn header_value() -> impl Strategy<Value = HeaderValue> {
        prop_oneof![
            3 => ".{0,16}".prop_map(HeaderValue::Text),
            2 => prop::collection::vec(any::<u8>(), 0..16).prop_map(HeaderValue::from),
            1 => ".{0,8}".prop_map(|text| HeaderValue::Binary(Bytes::from(text))),
        ]
    }

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            ".{0,16}".prop_map(Bytes::from),
            prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from),
        ]
    }

    /// Any time from 1970 on that a u64 of milliseconds holds (some past what an i64 of
    /// milliseconds holds, some with nanoseconds Kafka drops), and times before 1970.
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
            prop::option::of(".{0,16}"),
            prop::option::of(".{0,16}"),
            prop::option::of(".{0,16}"),
            prop::option::of(".{0,16}"),
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

    /// A name with a text value and a binary value that reads as UTF-8: all its values
    /// come back binary (docs/adapters/kafka.md, "Lossy cases").
    fn mixes_text_and_utf8_binary(message: &Message) -> bool {
        message.headers.iter().any(|(name, value)| {
            matches!(value, HeaderValue::Binary(bytes) if std::str::from_utf8(bytes).is_ok())
                && message
                    .headers
                    .iter()
                    .any(|(other, value)| other == name && value.as_text().is_some())
        })
    }

    /// Until `an_unnamed_binary_header_stays_binary` passes: a binary value that reads as
    /// UTF-8 under the empty name.
    fn unnamed_utf8_binary(message: &Message) -> bool {
        message.headers.iter().any(|(name, value)| {
            name.is_empty()
                && matches!(value, HeaderValue::Binary(bytes) if std::str::from_utf8(bytes).is_ok())
        })
    }

    /// A header named like an envelope field whose value reads as UTF-8, left by a record
    /// that had several: produced again, it comes before the field and takes its place
    /// (docs/adapters/kafka.md, "Lossy cases").
    fn envelope_name_left_as_header(message: &Message, names: &HeaderNames) -> bool {
        let envelope = [
            &names.correlation_id,
            &names.reply_to,
            &names.message_id,
            &names.content_type,
        ];
        message.headers.iter().any(|(name, value)| {
            envelope.iter().any(|field| field.as_str() == name)
                && std::str::from_utf8(value.as_bytes()).is_ok()
        })
    }

    /// Record header names: the envelope's, the binary list, ordinary ones, any (no NUL).
    const RECORD_NAMES: &[&str] = &[
        "correlation-id",
        "reply-to",
        "message-id",
        "content-type",
        reserved::BINARY_HEADERS,
        "a",
        "b",
        "",
    ];

    fn record_header() -> impl Strategy<Value = RecordHeader> {
        let name = prop_oneof![
            3 => prop::sample::select(RECORD_NAMES).prop_map(str::to_owned),
            1 => "[^\\x00]{0,12}",
        ];
        let value = prop_oneof![
            3 => ".{0,12}".prop_map(String::into_bytes),
            1 => "(a|b|,|%2C|%25){0,4}".prop_map(String::into_bytes),
            2 => prop::collection::vec(any::<u8>(), 0..12),
        ];
        (name, prop::option::of(value))
    }

    /// Milliseconds at the edges: the first and last i64, just before and at 1970.
    const EDGE_MILLIS: &[i64] = &[i64::MIN, -1, 0, 1, i64::MAX];

    fn any_millis() -> impl Strategy<Value = i64> {
        prop_oneof![3 => any::<i64>(), 1 => prop::sample::select(EDGE_MILLIS)]
    }

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        prop_oneof![
            1 => Just(Timestamp::NotAvailable),
            2 => any_millis().prop_map(Timestamp::CreateTime),
            1 => any_millis().prop_map(Timestamp::LogAppendTime),
        ]
    }

    /// The value as text, when it is UTF-8 (a null value reads as empty text).
    fn utf8(value: Option<&[u8]>) -> Option<&str> {
        std::str::from_utf8(value.unwrap_or_default()).ok()
    }

    /// Whether the header is a binary list the source reads (one that is not UTF-8 is not).
    fn is_binary_list((name, value): &RecordHeader) -> bool {
        name == reserved::BINARY_HEADERS && utf8(value.as_deref()).is_some()
    }

    fn payload() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16))
    }

    proptest! {
        #![proptest_config(bounded(256))]

        /// Every message reads back as produced: body, key, headers in order with their
        /// types, envelope fields, the timestamp to the millisecond (none before 1970 or
        /// past an i64 of milliseconds).
        #[test]
        fn every_message_reads_back_as_produced(message in message()) {
            prop_assume!(!mixes_text_and_utf8_binary(&message));
            prop_assume!(!unnamed_utf8_binary(&message));
            let back = through_kafka(&message, &HeaderNames::default());
            let origin = back.origin().cloned().unwrap_or_default();
            prop_assert_eq!((origin.partition, origin.offset), (Some(0), Some(7)));
            let mut expected = message.clone();
            expected.timestamp = message.timestamp.and_then(|time| {
                let ms = i64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
                Some(UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))
            });
            prop_assert_eq!(back.without_origin(), expected);
        }

        /// Any record is read without panicking: payload, key, partition and offset as
        /// they came, a timestamp for any non-negative time, each envelope field from the
        /// first of its headers that is UTF-8, every other header but the binary list kept
        /// in order, binary exactly when not UTF-8 or listed.
        #[test]
        fn any_record_is_read(
            payload in payload(),
            key in prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
            headers in prop::collection::vec(record_header(), 0..10),
            timestamp in timestamp(),
            partition in any::<i32>(),
            offset in any::<i64>(),
        ) {
            let names = HeaderNames::default();
            let record = owned_record(payload.clone(), key.clone(), &headers, timestamp, partition, offset);
            prop_assert_eq!(record.headers().map(|written| written.count()), Some(headers.len()));
            let message = incoming(&record, "kafka:t", &names);
            prop_assert_eq!(&message.body[..], payload.as_deref().unwrap_or_default());
            prop_assert_eq!(message.key.as_deref(), key.as_deref());
            let expected_time = match timestamp {
                Timestamp::CreateTime(ms) | Timestamp::LogAppendTime(ms) => u64::try_from(ms)
                    .ok()
                    .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                Timestamp::NotAvailable => None,
            };
            prop_assert_eq!(message.timestamp, expected_time);
            let origin = message.origin().cloned().unwrap_or_default();
            prop_assert_eq!((origin.partition, origin.offset), (Some(partition), Some(offset)));

            let fields = [
                (&names.correlation_id, &message.correlation_id),
                (&names.reply_to, &message.reply_to),
                (&names.message_id, &message.message_id),
                (&names.content_type, &message.content_type),
            ];
            let mut taken = Vec::new();
            for (name, field) in fields {
                let first = headers
                    .iter()
                    .position(|(header, value)| header == name && utf8(value.as_deref()).is_some());
                prop_assert_eq!(field.as_deref(), first.and_then(|at| utf8(headers[at].1.as_deref())));
                taken.extend(first);
            }
            let mut kept: Vec<(&str, &[u8])> = headers
                .iter()
                .enumerate()
                .filter(|&(at, header)| !taken.contains(&at) && !is_binary_list(header))
                .map(|(_, (name, value))| (name.as_str(), value.as_deref().unwrap_or_default()))
                .collect();
            // A null value is marked, after every other header (docs/mapping.md).
            if payload.is_none() {
                kept.retain(|(name, _)| *name != reserved::TOMBSTONE);
                kept.push((reserved::TOMBSTONE, b"true"));
            }
            let read: Vec<(&str, &[u8])> =
                message.headers.iter().map(|(name, value)| (name, value.as_bytes())).collect();
            prop_assert_eq!(read, kept);
            let listed: Vec<String> = headers
                .iter()
                .filter(|header| is_binary_list(header))
                .filter_map(|(_, value)| utf8(value.as_deref()))
                .flat_map(reserved::split_names)
                .collect();
            for (name, value) in message.headers.iter() {
                if payload.is_none() && name == reserved::TOMBSTONE {
                    continue;
                }
                let binary = std::str::from_utf8(value.as_bytes()).is_err()
                    || listed.iter().any(|entry| entry == name);
                prop_assert_eq!(matches!(value, HeaderValue::Binary(_)), binary, "{}", name);
            }
        }

        /// A record read and produced again reads back the same, but for headers named like
        /// an envelope field the message has: the field replaces them (docs/mapping.md).
        #[test]
        fn a_record_read_and_produced_again_reads_back_the_same(
            payload in payload(),
            headers in prop::collection::vec(record_header(), 0..10),
            timestamp in timestamp(),
        ) {
            let names = HeaderNames::default();
            let record = owned_record(payload, None, &headers, timestamp, 0, 0);
            let message = incoming(&record, "kafka:t", &names).without_origin();
            prop_assume!(!envelope_name_left_as_header(&message, &names));
            // A list that is not UTF-8 is no list; it is dropped (docs/mapping.md).
            prop_assume!(message.headers.get(reserved::BINARY_HEADERS).is_none());
            let mut expected = message.clone();
            let fields = [
                (&names.correlation_id, &message.correlation_id),
                (&names.reply_to, &message.reply_to),
                (&names.message_id, &message.message_id),
                (&names.content_type, &message.content_type),
            ];
            for (name, value) in fields {
                if value.is_some() {
                    expected.headers.remove(name);
                }
            }
            prop_assert_eq!(through_kafka(&message, &names).without_origin(), expected);
        }
    }

    /// Regression: rdkafka reads header names with `CStr::to_str(..).unwrap()`, so a
    /// record with a header name that is not UTF-8 (any producer but the Java client can
    /// write one) panicked the source; the record came back after every restart.
    #[test]
    fn a_header_name_that_is_not_utf8_does_not_panic() {
        let headers = OwnedHeaders::new().insert(Header {
            key: "ok",
            value: Some("v"),
        });
        let name = b"caf\xe9";
        let value = b"v";
        // SAFETY: the address of `as_borrowed` is that of the native headers (rdkafka
        // borrows them this way itself), and librdkafka copies the name and value.
        let added = unsafe {
            rdkafka::bindings::rd_kafka_header_add(
                std::ptr::from_ref(headers.as_borrowed()).cast_mut().cast(),
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(
            added,
            rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
        );
        let record = OwnedMessage::new(
            Some(b"x".to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            0,
            0,
            Some(headers),
        );
        let message = incoming(&record, "kafka:t", &HeaderNames::default());
        assert_eq!(message.body, "x");
    }

    /// Regression: the binary list cannot name the empty name (an empty entry is skipped
    /// when the list is read), so a binary value that reads as UTF-8 under the empty name,
    /// which AMQP tables and Kafka allow, came back as text.
    #[test]
    fn an_unnamed_binary_header_stays_binary() {
        let mut message = Message::new("x");
        message.headers.push("", b"ok".to_vec());
        let back = through_kafka(&message, &HeaderNames::default()).without_origin();
        assert_eq!(back.headers, message.headers);
    }
}
