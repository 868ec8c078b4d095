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

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rdkafka::Timestamp;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use super::config::HeaderNames;
use crate::message::{HeaderValue, Headers, Message, Origin, reserved};

/// The parts of a record to produce, borrowed from the message where possible.
pub struct Outgoing {
    pub headers: OwnedHeaders,
    pub timestamp_ms: Option<i64>,
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
    for (name, value) in message.headers.iter() {
        if name == reserved::BINARY_HEADERS {
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
    if !binary_names.is_empty() {
        headers = headers
            .into_iter()
            .map(|(name, value)| match value {
                HeaderValue::Text(text) if binary_names.contains(&name) => {
                    (name, HeaderValue::Binary(text.into()))
                }
                other => (name, other),
            })
            .collect();
    }
    message.headers = headers;
    message.with_origin(Origin {
        endpoint: endpoint.to_owned(),
        partition: Some(record.partition()),
        offset: Some(record.offset()),
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
            Some(message.body.to_vec()),
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
}
