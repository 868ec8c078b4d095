//! Dead letters: the original message plus headers that say why and where it failed.
//!
//! The context headers (names in [`crate::message::reserved`]) name the route, the failing
//! sink, the last error, its class, the number of attempts, the first and last failure
//! times and the source coordinates (endpoint, partition, offset, receive count, broker
//! message id). Everything else of the original message is kept unchanged.

use std::time::SystemTime;

use crate::adapter::ErrorClass;
use crate::message::json::format_time;
use crate::message::{HeaderValue, Message, reserved};

/// Why one sink (or the route itself) could not take a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The sink address as rendered, or `route` for failures before any sink.
    pub sink: String,
    pub error: String,
    pub class: ErrorClass,
    pub attempts: u32,
    pub first: SystemTime,
    pub last: SystemTime,
}

impl Failure {
    /// A failure of the route itself (loop guard, condition), refused at once.
    pub fn of_route(error: impl Into<String>) -> Failure {
        let now = SystemTime::now();
        Failure {
            sink: "route".into(),
            error: error.into(),
            class: ErrorClass::Permanent,
            attempts: 1,
            first: now,
            last: now,
        }
    }
}

/// Longest error text kept in a dead letter, so it fits every system's header limits
/// (Pub/Sub: 1024 bytes per attribute value).
const MAX_ERROR_BYTES: usize = 900;

fn bounded(error: &str) -> String {
    if error.len() <= MAX_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_BYTES;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &error[..end])
}

/// The dead letter for `original` that failed on `failure` in `route`.
pub fn build(route: &str, original: &Message, failure: &Failure) -> Message {
    let mut letter = original.without_origin();
    // A dead letter is a message of its own: a FIFO dead-letter queue must not drop it as
    // a copy of another route's message with the same identity.
    letter.set_dedup_identity(None);
    let text = |value: String| HeaderValue::Text(value);
    let headers = &mut letter.headers;
    headers.set(reserved::DLQ_ROUTE, text(route.to_owned()));
    headers.set(reserved::DLQ_SINK, text(failure.sink.clone()));
    headers.set(reserved::DLQ_ERROR, text(bounded(&failure.error)));
    headers.set(
        reserved::DLQ_ERROR_CLASS,
        text(failure.class.as_str().to_owned()),
    );
    headers.set(reserved::DLQ_ATTEMPTS, text(failure.attempts.to_string()));
    headers.set(
        reserved::DLQ_FIRST_FAILURE,
        text(format_time(failure.first)),
    );
    headers.set(reserved::DLQ_LAST_FAILURE, text(format_time(failure.last)));
    if let Some(origin) = original.origin() {
        headers.set(reserved::DLQ_SOURCE, text(origin.endpoint.clone()));
        if let Some(partition) = origin.partition {
            headers.set(reserved::DLQ_SOURCE_PARTITION, text(partition.to_string()));
        }
        if let Some(offset) = origin.offset {
            headers.set(reserved::DLQ_SOURCE_OFFSET, text(offset.to_string()));
        }
        if let Some(count) = origin.receive_count {
            headers.set(reserved::DLQ_SOURCE_RECEIVE_COUNT, text(count.to_string()));
        }
        if let Some(id) = &origin.broker_message_id {
            headers.set(reserved::DLQ_SOURCE_MESSAGE_ID, text(id.clone()));
        }
    }
    letter
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    #[test]
    fn carries_context_and_keeps_the_original() {
        let mut original = Message::new("payload");
        original.headers.push("app", "1");
        original.key = Some("k".into());
        original.set_dedup_identity(Some("r1/order-7".into()));
        let original = original.with_origin(Origin {
            endpoint: "kafka:orders".into(),
            partition: Some(2),
            offset: Some(41),
            ..Origin::default()
        });
        let failure = Failure {
            sink: "rabbit:queue/x".into(),
            error: "too large".into(),
            class: ErrorClass::Permanent,
            attempts: 1,
            first: SystemTime::UNIX_EPOCH,
            last: SystemTime::UNIX_EPOCH,
        };
        let letter = build("r1", &original, &failure);
        assert_eq!(letter.body, "payload");
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        assert!(letter.origin().is_none());
        assert_eq!(
            letter.dedup_identity(),
            None,
            "a dead letter is a message of its own"
        );
        let get = |name| letter.headers.get_text(name).unwrap().to_owned();
        assert_eq!(get("app"), "1");
        assert_eq!(get(reserved::DLQ_ROUTE), "r1");
        assert_eq!(get(reserved::DLQ_SINK), "rabbit:queue/x");
        assert_eq!(get(reserved::DLQ_ERROR_CLASS), "permanent");
        assert_eq!(get(reserved::DLQ_SOURCE), "kafka:orders");
        assert_eq!(get(reserved::DLQ_SOURCE_PARTITION), "2");
        assert_eq!(get(reserved::DLQ_SOURCE_OFFSET), "41");
        assert_eq!(get(reserved::DLQ_FIRST_FAILURE), "1970-01-01T00:00:00.000Z");
    }
}
