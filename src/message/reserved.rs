//! Names of the headers that bridge itself reads or writes. All start with `bridge-` so they
//! never collide with application headers; `docs/mapping.md` lists what each one means.

/// Prefix shared by every reserved header.
pub const PREFIX: &str = "bridge-";
/// How many times bridge has forwarded this message; the loop guard reads it.
pub const HOPS: &str = "bridge-hops";

/// The message key, on systems that have no key of their own (RabbitMQ).
pub const KEY: &str = "bridge-key";
/// The timestamp in milliseconds, on systems whose timestamp is coarser (AMQP: seconds).
pub const TIMESTAMP_MS: &str = "bridge-timestamp-ms";

/// `true` on a message that stands for a null value (a Kafka tombstone); its body is empty.
/// Set by the Kafka source and carried as a header by every other system, so that a
/// Kafka sink writes a null value again.
pub const TOMBSTONE: &str = "bridge-tombstone";

/// Route whose delivery failed (dead letters only).
pub const DLQ_ROUTE: &str = "bridge-dlq-route";
/// Sink endpoint that refused the message, or `route` when the route itself refused it.
pub const DLQ_SINK: &str = "bridge-dlq-sink";
/// Last error message.
pub const DLQ_ERROR: &str = "bridge-dlq-error";
/// `permanent` (refused at once) or `transient` (retries exhausted).
pub const DLQ_ERROR_CLASS: &str = "bridge-dlq-error-class";
/// Number of delivery attempts made to the failing sink.
pub const DLQ_ATTEMPTS: &str = "bridge-dlq-attempts";
/// RFC 3339 time of the first failure.
pub const DLQ_FIRST_FAILURE: &str = "bridge-dlq-first-failure";
/// RFC 3339 time of the last failure.
pub const DLQ_LAST_FAILURE: &str = "bridge-dlq-last-failure";
/// Endpoint the message was received from.
pub const DLQ_SOURCE: &str = "bridge-dlq-source";
/// Source partition, when the source has partitions.
pub const DLQ_SOURCE_PARTITION: &str = "bridge-dlq-source-partition";
/// Source offset, when the source is a log.
pub const DLQ_SOURCE_OFFSET: &str = "bridge-dlq-source-offset";
/// How many times the source broker had delivered the message.
pub const DLQ_SOURCE_RECEIVE_COUNT: &str = "bridge-dlq-source-receive-count";
/// The source broker's own id for the message.
pub const DLQ_SOURCE_MESSAGE_ID: &str = "bridge-dlq-source-message-id";

/// True for names in the reserved `bridge-` namespace.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Names of headers whose values are binary although they read as UTF-8, written by sinks
/// on systems whose header values are untyped bytes (Kafka) so the next source restores
/// the type. Comma-separated; `%` and `,` inside names are written `%25` and `%2C`.
pub const BINARY_HEADERS: &str = "bridge-binary-headers";

/// Set by the Kafka source on a record whose headers could not be read (a header name that
/// is not UTF-8): the record is forwarded without them rather than left unreadable.
pub const KAFKA_HEADERS_UNREADABLE: &str = "bridge-kafka-headers-unreadable";

/// How the empty header name is written in [`BINARY_HEADERS`] (an empty entry is skipped).
const EMPTY_NAME: &str = "%00";

/// Joins header names for [`BINARY_HEADERS`].
pub fn join_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|name| match name {
            "" => EMPTY_NAME.to_owned(),
            name => name.replace('%', "%25").replace(',', "%2C"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits a [`BINARY_HEADERS`] value back into names.
pub fn split_names(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            EMPTY_NAME => String::new(),
            name => name.replace("%2C", ",").replace("%25", "%"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_lists_round_trip_names_with_commas_and_percents() {
        let names = ["a", "b,c", "100%"];
        let joined = join_names(names);
        assert_eq!(split_names(&joined), names);
    }
}
