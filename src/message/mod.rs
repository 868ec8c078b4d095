//! The canonical message envelope that travels through the router.
//!
//! Every adapter maps its native message to a [`Message`] and back; the mapping for each
//! system is documented in `docs/mapping.md`. The envelope never assumes a body is UTF-8,
//! keeps headers in their original order (duplicates allowed) with text or binary values, and
//! carries a read-only [`Origin`] that only the receiving source can set.

mod headers;
pub mod json;
pub mod limits;
pub mod reserved;

use std::time::SystemTime;

use bytes::Bytes;

pub use headers::{HeaderValue, Headers, NameSet};
#[cfg(test)]
pub use headers::{assert_linear, comparisons};

/// One message as the router sees it, independent of any broker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// The payload, never assumed to be UTF-8.
    pub body: Bytes,
    /// Application headers in their original order.
    pub headers: Headers,
    /// Partitioning / ordering key (Kafka key, SQS message group, Pub/Sub ordering key).
    pub key: Option<Bytes>,
    /// Correlation id that ties a reply to its request.
    pub correlation_id: Option<String>,
    /// Address a replier should answer to.
    pub reply_to: Option<String>,
    /// Identifier that stays stable across redeliveries where the source system has one.
    pub message_id: Option<String>,
    /// MIME type of the body, when known.
    pub content_type: Option<String>,
    /// When the message was created or first published.
    pub timestamp: Option<SystemTime>,
    origin: Option<Origin>,
    /// The identity a route's deduplication step gave this message, for sinks that
    /// deduplicate themselves (SQS and SNS FIFO `MessageDeduplicationId`).
    dedup_identity: Option<String>,
}

/// Where a received message came from. Set by the source, read-only afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The endpoint address the message was received from, e.g. `kafka:orders`.
    pub endpoint: String,
    /// Kafka partition.
    pub partition: Option<i32>,
    /// Kafka offset or another position in an ordered log.
    pub offset: Option<i64>,
    /// How many times the broker has delivered this message (SQS receive count,
    /// Pub/Sub delivery attempt, at least 2 for a redelivered AMQP message).
    pub receive_count: Option<u32>,
    /// The broker's own identifier for this delivery when it differs from the message id
    /// (SQS MessageId, Pub/Sub message id).
    pub broker_message_id: Option<String>,
    /// What else the system delivered with the message, by name (RabbitMQ `exchange` and
    /// `routing_key`, Kafka `topic`, Pub/Sub `ordering_key`, NATS `subject`, ...). Each
    /// adapter declares the names it sets (docs/mapping.md#delivery-fields).
    pub fields: Vec<(&'static str, OriginValue)>,
}

/// The value of a delivery field of an [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginValue {
    /// Text; shared, because most are the same for every message of a source.
    Text(std::sync::Arc<str>),
    Int(i64),
    Bool(bool),
}

impl OriginValue {
    pub fn text(text: &str) -> OriginValue {
        OriginValue::Text(text.into())
    }

    /// The value as a header value would carry it.
    pub fn to_text(&self) -> String {
        match self {
            OriginValue::Text(text) => text.to_string(),
            OriginValue::Int(n) => n.to_string(),
            OriginValue::Bool(b) => b.to_string(),
        }
    }
}

impl Origin {
    /// Every field with a value, by its name under `origin.` in expressions: the endpoint,
    /// the common fields, then the system's own.
    pub fn variables(&self) -> Vec<(&'static str, OriginValue)> {
        let mut out = vec![("endpoint", OriginValue::text(&self.endpoint))];
        if let Some(partition) = self.partition {
            out.push(("partition", OriginValue::Int(partition.into())));
        }
        if let Some(offset) = self.offset {
            out.push(("offset", OriginValue::Int(offset)));
        }
        if let Some(count) = self.receive_count {
            out.push(("receive_count", OriginValue::Int(count.into())));
        }
        if let Some(id) = &self.broker_message_id {
            out.push(("broker_message_id", OriginValue::text(id)));
        }
        out.extend(self.fields.iter().cloned());
        out
    }

    /// The value of the system's own field `name`, if set.
    pub fn field(&self, name: &str) -> Option<&OriginValue> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl Message {
    /// A message with the given body and nothing else.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Message {
            body: body.into(),
            ..Message::default()
        }
    }

    /// Where this message was received from, if it came from a source.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// Attaches the origin. Only sources call this, once, when they receive a message.
    pub fn with_origin(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The identity the route's deduplication step gave this message, if any.
    pub fn dedup_identity(&self) -> Option<&str> {
        self.dedup_identity.as_deref()
    }

    /// Records the route's deduplication identity (`None`: the route has none). Only the
    /// router calls this.
    pub fn set_dedup_identity(&mut self, identity: Option<String>) {
        self.dedup_identity = identity;
    }

    /// A copy of this message with the origin removed, as sent to a sink.
    pub fn without_origin(&self) -> Self {
        Message {
            origin: None,
            ..self.clone()
        }
    }

    /// The key as text when it is valid UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The number of bridge hops recorded in the reserved hop header (0 when absent or
    /// unreadable).
    pub fn hops(&self) -> u32 {
        self.headers
            .get_text(reserved::HOPS)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records one more bridge hop as `counting` asks.
    pub fn count_hop(&mut self, counting: HopCounting) {
        let counts = match counting {
            HopCounting::Always => true,
            HopCounting::WhenPresent => self.headers.get(reserved::HOPS).is_some(),
            HopCounting::Never => false,
        };
        if counts {
            self.increment_hops();
        }
    }

    /// Records one more bridge hop.
    pub fn increment_hops(&mut self) {
        let next = self.hops().saturating_add(1);
        self.headers
            .set(reserved::HOPS, HeaderValue::Text(next.to_string()));
    }

    /// The trace id of a W3C `traceparent` header (`00-TRACEID-SPANID-FLAGS`), for log
    /// lines. The header itself travels unchanged, like any other.
    pub fn trace_id(&self) -> Option<&str> {
        let traceparent = self.headers.get_text("traceparent")?;
        let mut fields = traceparent.trim().split('-');
        let (_version, trace_id) = (fields.next()?, fields.next()?);
        let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
        valid.then_some(trace_id)
    }
}

/// What a route does with the `bridge-hops` header of what it sends (`routes[].count_hops`,
/// resolved against the routes file: docs/guarantees.md#loop-guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopCounting {
    /// Adds one to every message (starting from 0 when it has none).
    Always,
    /// Adds one to a message that carries a count; adds no header to one that does not.
    WhenPresent,
    /// Sends the received count, if any, unchanged.
    Never,
}

/// For tests of the broker mappings: `message` as brokers give it back in general, its
/// headers ordered by name (those of one name in their order) and its timestamp cut to
/// the millisecond (none before 1970).
#[cfg(test)]
pub(crate) fn sorted_to_the_millisecond(message: &Message) -> Message {
    use std::time::{Duration, UNIX_EPOCH};
    let mut expected = message.clone();
    let mut headers: Vec<_> = message.headers.clone().into_iter().collect();
    headers.sort_by(|a, b| a.0.cmp(&b.0));
    expected.headers = headers.into_iter().collect();
    expected.timestamp = message.timestamp.and_then(|time| {
        let ms = u64::try_from(time.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
        Some(UNIX_EPOCH + Duration::from_millis(ms))
    });
    expected
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn trace_id_comes_from_a_valid_traceparent_only() {
        let mut message = Message::new("x");
        assert_eq!(message.trace_id(), None);
        message.headers.push(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        assert_eq!(message.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        let mut broken = Message::new("x");
        broken.headers.push("traceparent", "00-not-a-trace-01");
        assert_eq!(broken.trace_id(), None);
    }
}
