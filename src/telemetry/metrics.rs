//! The metrics bridge exports, in one place: names, labels and the handles a route keeps.
//!
//! Per route (`route` label) and, where it applies, per sink (`sink`, as configured:
//! `CONNECTION:PATH-TEMPLATE`, so rendered paths do not multiply series) or source
//! endpoint (`endpoint`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `bridge_messages_received_total{route,endpoint}` | counter | deliveries taken from the source |
//! | `bridge_messages_filtered_total{route}` | counter | acknowledged without forwarding (`when`) |
//! | `bridge_messages_deduplicated_total{route}` | counter | acknowledged without forwarding (`dedup`: identity already delivered) |
//! | `bridge_messages_sent_total{route,sink}` | counter | sends the broker confirmed |
//! | `bridge_send_failures_total{route,sink,class}` | counter | attempts that failed (`transient`/`permanent`) |
//! | `bridge_retries_total{route,sink}` | counter | attempts after the first |
//! | `bridge_dead_letters_total{route}` | counter | dead letters confirmed |
//! | `bridge_messages_rejected_total{route}` | counter | handed to the source broker's own reject (route without `dead_letter`) |
//! | `bridge_source_retries_total{route}` | counter | deliveries handed back to the source (dead letter failed) |
//! | `bridge_messages_in_flight{route}` | gauge | deliveries not settled yet |
//! | `bridge_processing_seconds{route}` | histogram | from receipt to settlement |
//! | `bridge_replies_relayed_total{route}` | counter | replies sent back to requesters |
//! | `bridge_replies_refused_total{route,reason}` | counter | replies not relayed (`late`, `invalid`, `not_allowed`: the requester's reply address is outside `reply.allow`) |
//! | `bridge_messages_over_limit_total{route}` | counter | messages over a limit of `limits` (dead-lettered or rejected) |
//! | `bridge_throttle_wait_seconds{route,limit}` | histogram | time a message waited for a rate limit (`limit`: `route`, or the sink); its `_sum` is the time spent throttled |
//! | `bridge_open_sinks` | gauge | sinks open for rendered endpoints and reply addresses (at most `settings.limits.max_open_sinks`) |
//! | `bridge_source_backlog_messages{route,endpoint}` | gauge | messages waiting at the source: Kafka consumer lag, RabbitMQ ready messages, SQS visible + in flight |
//!
//! Without an installed recorder (library use, tests) every call is a no-op.

use std::sync::Arc;
use std::time::Instant;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

pub const RECEIVED: &str = "bridge_messages_received_total";
pub const FILTERED: &str = "bridge_messages_filtered_total";
pub const DEDUPLICATED: &str = "bridge_messages_deduplicated_total";
pub const SENT: &str = "bridge_messages_sent_total";
pub const SEND_FAILURES: &str = "bridge_send_failures_total";
pub const RETRIES: &str = "bridge_retries_total";
pub const DEAD_LETTERS: &str = "bridge_dead_letters_total";
pub const REJECTED: &str = "bridge_messages_rejected_total";
pub const SOURCE_RETRIES: &str = "bridge_source_retries_total";
pub const IN_FLIGHT: &str = "bridge_messages_in_flight";
pub const PROCESSING: &str = "bridge_processing_seconds";
pub const REPLIES_RELAYED: &str = "bridge_replies_relayed_total";
pub const REPLIES_REFUSED: &str = "bridge_replies_refused_total";
pub const BACKLOG: &str = "bridge_source_backlog_messages";
pub const OVER_LIMIT: &str = "bridge_messages_over_limit_total";
pub const OPEN_SINKS: &str = "bridge_open_sinks";
pub const THROTTLE_WAIT: &str = "bridge_throttle_wait_seconds";

/// Buckets of the processing-time histogram, in seconds.
pub const PROCESSING_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
];

/// The per-route handles, registered once so the hot path does not build labels.
#[derive(Clone)]
pub struct RouteMetrics {
    route: String,
    pub received: Counter,
    pub filtered: Counter,
    pub deduplicated: Counter,
    pub dead_letters: Counter,
    pub rejected: Counter,
    pub source_retries: Counter,
    pub in_flight: Gauge,
    pub processing: Histogram,
    pub replies_relayed: Counter,
    pub over_limit: Counter,
}

impl RouteMetrics {
    pub fn new(route: &str, source: &str) -> RouteMetrics {
        let route_label = route.to_owned();
        RouteMetrics {
            route: route.to_owned(),
            received: counter!(RECEIVED, "route" => route_label.clone(), "endpoint" => source.to_owned()),
            filtered: counter!(FILTERED, "route" => route_label.clone()),
            deduplicated: counter!(DEDUPLICATED, "route" => route_label.clone()),
            dead_letters: counter!(DEAD_LETTERS, "route" => route_label.clone()),
            rejected: counter!(REJECTED, "route" => route_label.clone()),
            source_retries: counter!(SOURCE_RETRIES, "route" => route_label.clone()),
            in_flight: gauge!(IN_FLIGHT, "route" => route_label.clone()),
            processing: histogram!(PROCESSING, "route" => route_label.clone()),
            replies_relayed: counter!(REPLIES_RELAYED, "route" => route_label.clone()),
            over_limit: counter!(OVER_LIMIT, "route" => route_label),
        }
    }

    /// The handles of one sink, registered once when the route starts: the hot path then
    /// neither formats the label nor looks the series up for every message.
    pub fn sink(&self, label: &str) -> SinkMetrics {
        SinkMetrics {
            label: label.into(),
            sent: counter!(SENT, "route" => self.route.clone(), "sink" => label.to_owned()),
            retried: counter!(RETRIES, "route" => self.route.clone(), "sink" => label.to_owned()),
        }
    }

    /// The waits of a rate limit: the route's own (`limit` = `route`) or a sink's.
    pub fn throttled(&self, limit: &str) -> Histogram {
        histogram!(THROTTLE_WAIT, "route" => self.route.clone(), "limit" => limit.to_owned())
    }

    pub fn failed(&self, sink: &str, class: &'static str) {
        counter!(SEND_FAILURES, "route" => self.route.clone(), "sink" => sink.to_owned(), "class" => class).increment(1);
    }

    pub fn reply_refused(&self, reason: &'static str) {
        counter!(REPLIES_REFUSED, "route" => self.route.clone(), "reason" => reason).increment(1);
    }

    /// Marks a delivery as taken; the returned guard ends it (gauge and histogram).
    pub fn start(&self) -> InFlight {
        self.received.increment(1);
        self.in_flight.increment(1.0);
        InFlight {
            metrics: self.clone(),
            since: Instant::now(),
        }
    }
}

/// The counters of one configured sink of a route (see [`RouteMetrics::sink`]).
#[derive(Clone)]
pub struct SinkMetrics {
    /// The sink as configured: `CONNECTION:PATH-TEMPLATE`.
    pub label: Arc<str>,
    pub sent: Counter,
    pub retried: Counter,
}

/// One delivery being processed; dropping it records its settlement.
pub struct InFlight {
    metrics: RouteMetrics,
    since: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.decrement(1.0);
        self.metrics
            .processing
            .record(self.since.elapsed().as_secs_f64());
    }
}

/// The gauge of sinks open for rendered endpoints and reply addresses.
pub fn open_sinks() -> Gauge {
    gauge!(OPEN_SINKS)
}

/// Records the backlog of a route's source.
pub fn backlog(route: &str, endpoint: &str, messages: u64) {
    gauge!(BACKLOG, "route" => route.to_owned(), "endpoint" => endpoint.to_owned())
        .set(messages as f64);
}
